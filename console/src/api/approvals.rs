//! Capture approvals: an admin requests, a *different* person with the approver role decides.
//!
//! ```text
//! pending ──approve──► approved ──revoke──► revoked
//!    │                    │
//!    ├──reject──► rejected └── expires_ms passes: no longer in force
//!    └── expires_ms passes undecided: cannot be approved any more
//! ```
//!
//! Every transition raises the policy version and pushes new bundles to connected devices.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::api::page::{Page, PageQuery};
use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::now_ms;

/// The capture modes of a policy.
pub const MODES: [&str; 2] = ["specific-activities", "all-activities"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApproval {
    /// Principal name of the user to capture.
    pub user: String,
    /// `specific-activities` or `all-activities`.
    pub mode: String,
    /// Why, in words; shown to the approver and kept in the bundle.
    pub justification: String,
    /// How long the approval (and the undecided request) lasts; default 30 days.
    #[serde(default = "default_ttl")]
    pub ttl_secs: i64,
}

fn default_ttl() -> i64 {
    30 * 86400
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub id: i64,
    pub user: String,
    pub mode: String,
    pub justification: String,
    pub requested_by: String,
    pub requested_ms: i64,
    pub expires_ms: i64,
    /// pending, approved, rejected, revoked, or expired (pending or approved past expires_ms).
    pub state: String,
    /// Who approved or rejected it, and when (kept when it is later revoked).
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoked_ms: Option<i64>,
}

const SELECT: &str = "SELECT id, user, mode, justification, requested_by, requested_ms, expires_ms,
    state, decided_by, decided_ms, revoked_by, revoked_ms FROM approvals";

fn row_to_approval(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
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
    };
    if (a.state == "pending" || a.state == "approved") && a.expires_ms <= now_ms() {
        a.state = "expired".into();
    }
    Ok(a)
}

/// Approvals in force now (approved, not revoked, not expired), newest first per user.
pub fn in_force(state: &AppState) -> Result<Vec<Approval>, ApiError> {
    let conn = state.store.conn();
    let mut stmt = conn.prepare(&format!(
        "{SELECT} WHERE state = 'approved' AND expires_ms > ?1 ORDER BY user, decided_ms DESC"
    ))?;
    let rows = stmt.query_map([now_ms()], row_to_approval)?.collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    Ok(rows.into_iter().filter(|a| seen.insert(a.user.clone())).collect())
}

fn get(state: &AppState, id: i64) -> Result<Approval, ApiError> {
    state
        .store
        .conn()
        .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row_to_approval)
        .optional()?
        .ok_or_else(|| ApiError::not_found(format!("no approval request {id}")))
}

pub async fn request(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<NewApproval>,
) -> Result<Json<Approval>, ApiError> {
    person.require(&[Role::Admin])?;
    let user = req.user.trim();
    if user.is_empty() || user.len() > 256 {
        return Err(ApiError::bad_request("user must be a principal name of 1 to 256 characters"));
    }
    if !MODES.contains(&req.mode.as_str()) {
        return Err(ApiError::bad_request(format!(
            "mode {:?} unknown: use specific-activities or all-activities",
            req.mode
        )));
    }
    if req.justification.trim().is_empty() {
        return Err(ApiError::bad_request("a justification is required"));
    }
    if !(60..=366 * 86400).contains(&req.ttl_secs) {
        return Err(ApiError::bad_request("ttl_secs must be between 60 and 31622400 (366 days)"));
    }
    let now = now_ms();
    let id = {
        let conn = state.store.conn();
        conn.execute(
            "INSERT INTO approvals (user, mode, justification, requested_by, requested_ms, expires_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
            params![user, req.mode, req.justification, person.name, now, now + req.ttl_secs * 1000],
        )?;
        conn.last_insert_rowid()
    };
    state.store.audit(
        &person.actor(),
        "approval.request",
        &format!("approval:{id}"),
        serde_json::json!({ "user": user, "mode": req.mode, "justification": req.justification }),
    )?;
    get(&state, id).map(Json)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Optional words kept in the audit log.
    #[serde(default)]
    pub comment: String,
}

async fn decide(
    state: Arc<AppState>,
    person: Person,
    id: i64,
    to: &str,
    comment: String,
) -> Result<Json<Approval>, ApiError> {
    let approval = get(&state, id)?;
    let allowed_from = match to {
        "approved" | "rejected" => {
            person.require(&[Role::Approver])?;
            if approval.requested_by == person.name {
                return Err(ApiError::forbidden(format!(
                    "{} requested approval {id} and cannot also decide it: a different person with the approver role must",
                    person.name
                )));
            }
            "pending"
        }
        _ => {
            person.require(&[Role::Admin, Role::Approver])?;
            "approved"
        }
    };
    if approval.state != allowed_from {
        return Err(ApiError::conflict(format!(
            "approval {id} is {}, so it cannot become {to}",
            approval.state
        )));
    }
    let now = now_ms();
    // A revocation keeps who approved: the record must still say who let capture happen.
    let changed = state.store.conn().execute(
        if to == "revoked" {
            "UPDATE approvals SET state = ?1, revoked_by = ?2, revoked_ms = ?3
             WHERE id = ?4 AND state = ?5 AND expires_ms > ?3"
        } else {
            "UPDATE approvals SET state = ?1, decided_by = ?2, decided_ms = ?3
             WHERE id = ?4 AND state = ?5 AND expires_ms > ?3"
        },
        params![to, person.name, now, id, allowed_from],
    )?;
    if changed != 1 {
        return Err(ApiError::conflict(format!(
            "approval {id} changed meanwhile or expired; reload it"
        )));
    }
    state.store.audit(
        &person.actor(),
        match to {
            "approved" => "approval.approve",
            "rejected" => "approval.reject",
            _ => "approval.revoke",
        },
        &format!("approval:{id}"),
        serde_json::json!({ "user": approval.user, "mode": approval.mode, "comment": comment }),
    )?;
    crate::policy::changed(&state)?;
    get(&state, id).map(Json)
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<i64>,
    body: Option<Json<Decision>>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, person, id, "approved", body.map(|b| b.0.comment).unwrap_or_default()).await
}

pub async fn reject(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<i64>,
    body: Option<Json<Decision>>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, person, id, "rejected", body.map(|b| b.0.comment).unwrap_or_default()).await
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<i64>,
    body: Option<Json<Decision>>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, person, id, "revoked", body.map(|b| b.0.comment).unwrap_or_default()).await
}

/// `GET /api/v1/approvals` (any role): oldest first, in pages (see [`crate::api::page`]).
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<PageQuery>,
) -> Result<Page<Approval>, ApiError> {
    person.require(&[Role::Admin, Role::Approver, Role::Investigator])?;
    let page = q.parse()?;
    let conn = state.store.conn();
    let mut stmt =
        conn.prepare(&format!("{SELECT} WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"))?;
    let rows = stmt
        .query_map(params![page.after, page.sql_limit()], |r| Ok((r.get(0)?, row_to_approval(r)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, page))
}
