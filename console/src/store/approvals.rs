//! `approvals`: capture requests, their decisions and revocations, the decider's approver
//! grant as of the decision, and the flag the signer sets on a record it leaves out (see
//! [`crate::api::approvals`] for the rules).

use super::sql::{args, Row};
use super::{now_ms, Tx};
use crate::api::approvals::{Approval, ApproverGrant};
use crate::api::page::PageRequest;
use crate::error::ConsoleError;

const SELECT: &str =
    "SELECT id, user_name, mode, justification, requested_by, requested_ms, expires_ms,
    state, decided_by, decided_ms, revoked_by, revoked_ms, approver_granted_by,
    approver_granted_ms, approver_confirmed_by, approver_confirmed_ms, excluded_reason,
    excluded_ms FROM approvals";

/// A row of [`SELECT`]; a pending or approved record past its expiry reads as `expired`.
fn row_to_approval(r: &Row<'_>) -> Result<Approval, ConsoleError> {
    let grant = match (r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?) {
        (Some(granted_by), Some(granted_ms), Some(confirmed_by), Some(confirmed_ms)) => {
            Some(ApproverGrant { granted_by, granted_ms, confirmed_by, confirmed_ms })
        }
        _ => None,
    };
    let mut a = Approval {
        id: r.get(0)?,
        user: r.get(1)?,
        mode: r.get(2)?,
        justification: r.get(3)?,
        requested_by: r.get(4)?,
        requested_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        state: r.get(7)?,
        decided_by: r.get(8)?,
        decided_ms: r.get(9)?,
        revoked_by: r.get(10)?,
        revoked_ms: r.get(11)?,
        approver_grant: grant,
        excluded: r.get(16)?,
        excluded_ms: r.get(17)?,
    };
    if (a.state == "pending" || a.state == "approved") && a.expires_ms <= now_ms() {
        a.state = "expired".into();
    }
    Ok(a)
}

/// When an approval stopped covering capture: its revocation if that came before its expiry,
/// else its expiry (written as CASE: two-value MIN is SQLite's only).
pub(super) const ENDED_MS: &str = "(CASE WHEN revoked_ms IS NOT NULL AND revoked_ms < expires_ms \
                                   THEN revoked_ms ELSE expires_ms END)";

/// A new capture request as stored (pending).
pub struct NewApprovalRow<'a> {
    pub user: &'a str,
    pub mode: &'a str,
    pub justification: &'a str,
    pub requested_by: &'a str,
    pub requested_ms: i64,
    pub expires_ms: i64,
}

/// An approval's id, user and mode (what the expiry audit line names).
pub struct ApprovalName {
    pub id: i64,
    pub user: String,
    pub mode: String,
}

/// A user and mode some approval covered (what ingest matches a clip against).
pub struct ApprovedUser {
    pub user: String,
    pub mode: String,
}

impl Tx<'_> {
    /// Approvals in force at `now` (approved, not expired, not excluded), newest decision first.
    pub fn approvals_in_force(&self, now: i64) -> Result<Vec<Approval>, ConsoleError> {
        let sql = format!(
            "{SELECT} WHERE state = 'approved' AND expires_ms > ?1 AND excluded_reason IS NULL
             ORDER BY decided_ms DESC, id DESC"
        );
        self.rows(&sql, args![now], row_to_approval)
    }

    pub fn approval(&self, id: i64) -> Result<Option<Approval>, ConsoleError> {
        self.opt(&format!("{SELECT} WHERE id = ?1"), args![id], row_to_approval)
    }

    /// Files a pending request; its id.
    pub fn insert_approval(&self, a: &NewApprovalRow<'_>) -> Result<i64, ConsoleError> {
        self.one(
            "INSERT INTO approvals (user_name, mode, justification, requested_by, requested_ms, expires_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending') RETURNING id",
            args![a.user, a.mode, a.justification, a.requested_by, a.requested_ms, a.expires_ms],
            |r| r.get(0),
        )
    }

    /// Revokes approval `id` (still approved and unexpired at `now`), keeping who approved it;
    /// false when it was not so.
    pub fn revoke_approval(&self, id: i64, by: &str, now: i64) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "UPDATE approvals SET state = 'revoked', revoked_by = ?1, revoked_ms = ?2
             WHERE id = ?3 AND state = 'approved' AND expires_ms > ?2",
            args![by, now, id],
        )?;
        Ok(changed == 1)
    }

    /// Decides the pending, unexpired approval `id`: `to` is `approved` or `rejected`, by
    /// `by` at `now`, holding `grant`; false when it was not pending (or expired) any more.
    pub fn decide_approval(
        &self,
        id: i64,
        to: &str,
        by: &str,
        now: i64,
        grant: &ApproverGrant,
    ) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "UPDATE approvals SET state = ?1, decided_by = ?2, decided_ms = ?3,
                 approver_granted_by = ?5, approver_granted_ms = ?6, approver_confirmed_by = ?7,
                 approver_confirmed_ms = ?8
             WHERE id = ?4 AND state = 'pending' AND expires_ms > ?3",
            args![
                to,
                by,
                now,
                id,
                grant.granted_by,
                grant.granted_ms,
                grant.confirmed_by,
                grant.confirmed_ms
            ],
        )?;
        Ok(changed == 1)
    }

    /// Flags approval `id` as left out of the bundle; false when it was flagged already.
    pub fn exclude_approval(&self, id: i64, reason: &str, now: i64) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "UPDATE approvals SET excluded_reason = ?1, excluded_ms = ?2
             WHERE id = ?3 AND excluded_reason IS NULL",
            args![reason, now, id],
        )?;
        Ok(changed == 1)
    }

    /// A page of approvals, oldest first, each with its cursor (its id).
    pub fn approvals_page(&self, page: PageRequest) -> Result<Vec<(i64, Approval)>, ConsoleError> {
        let sql =
            format!("{SELECT} WHERE CAST(?1 AS BIGINT) IS NULL OR id > ?1 ORDER BY id LIMIT ?2");
        self.page_of(&sql, page, row_to_approval)
    }

    /// Approvals in force until an expiry in `(after, until]`.
    pub fn approvals_expiring(
        &self,
        after: i64,
        until: i64,
    ) -> Result<Vec<ApprovalName>, ConsoleError> {
        self.rows(
            "SELECT id, user_name, mode FROM approvals
             WHERE state = 'approved' AND expires_ms > ?1 AND expires_ms <= ?2 ORDER BY id",
            args![after, until],
            |r| Ok(ApprovalName { id: r.get(0)?, user: r.get(1)?, mode: r.get(2)? }),
        )
    }

    /// Users (and modes) of approvals decided by `decided_by` and neither revoked nor expired
    /// by `ended_after`.
    pub fn approved_between(
        &self,
        decided_by: i64,
        ended_after: i64,
    ) -> Result<Vec<ApprovedUser>, ConsoleError> {
        let sql = format!(
            "SELECT user_name, mode FROM approvals
             WHERE state IN ('approved', 'revoked') AND decided_ms IS NOT NULL
               AND decided_ms <= ?1 AND {ENDED_MS} > ?2 ORDER BY id"
        );
        self.rows(&sql, args![decided_by, ended_after], |r| {
            Ok(ApprovedUser { user: r.get(0)?, mode: r.get(1)? })
        })
    }
}
