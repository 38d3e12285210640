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
//!
//! # Who may decide
//!
//! Approving or rejecting takes a person who, in this order (the first rule broken answers):
//!
//! 1. holds the approver role (an active grant, [`crate::api::roles`]) — else 403;
//! 2. is not the requester's own account — else 403;
//! 3. held that role before the request was filed (grant confirmed before `requested_ms`),
//!    and was neither granted nor confirmed the role by the requester — else 403
//!    ([`separation`]);
//! 4. together with the request, passes [`rearview_config::validate_approval`], the rules the
//!    signer and the agent apply (approver ≠ requester in canonical form, so `Carol` cannot
//!    decide `carol`'s request) — else 400 naming the field.
//!
//! The decider's grant (granted_by/ms, confirmed_by/ms) is copied onto the record, and into the
//! signed bundle. Requests are checked with the same rules when filed (400 naming the field).
//!
//! # Records that cannot be signed
//!
//! An approved record an older console stored may break the rules. The signer checks every
//! record on its own ([`user_scope`]); one it refuses is left out of the bundle, flagged on the
//! record (`excluded`, listed by `GET /api/v1/approvals`, never in force again) and audited once
//! (`approval.exclude`), so it never holds up the bundle, and revocations still reach devices.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use rearview_config::{
    canonical_name, validate_approval, ApprovalRecord, CaptureMode, Principal, RoleGrant,
    UserScope, ValidationError,
};
use serde::{Deserialize, Serialize};

use crate::api::page::{Page, PageQuery};
use crate::api::roles::GrantState;
use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::approvals::NewApprovalRow;
use crate::store::{now_ms, Tx};
use crate::tenant::ms_to_time;

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
    /// How the decider came to hold the approver role, as of the decision.
    #[serde(default)]
    pub approver_grant: Option<ApproverGrant>,
    /// Why the signer leaves this record out of the bundle (it breaks a rule); such a record is
    /// never in force, whatever its state says.
    #[serde(default)]
    pub excluded: Option<String>,
    #[serde(default)]
    pub excluded_ms: Option<i64>,
}

/// The decider's approver grant, copied onto the approval when it is decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverGrant {
    pub granted_by: String,
    pub granted_ms: i64,
    pub confirmed_by: String,
    /// Since when the decider held the role: before `requested_ms`.
    pub confirmed_ms: i64,
}

/// Approvals in force now (approved, not revoked, not expired, not excluded), newest decision
/// first. A user may appear more than once (two approvals, or `Alice` and `alice`); the
/// bundle keeps the newest that can be signed.
pub fn in_force(tx: &Tx<'_>) -> Result<Vec<Approval>, ApiError> {
    Ok(tx.approvals_in_force(now_ms())?)
}

/// The bundle's users: for each user (canonical form) the newest approval in force that can be
/// signed, ordered by name; every record that cannot is flagged ([`exclude`]).
pub fn bundle_users(tx: &Tx<'_>) -> Result<Vec<UserScope>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let mut users = Vec::new();
    for a in in_force(tx)? {
        match user_scope(&a) {
            Ok(scope) => {
                if seen.insert(canonical_name(&a.user)) {
                    users.push(scope);
                }
            }
            Err(reason) => exclude(tx, &a, &reason)?,
        }
    }
    users.sort_by(|a, b| a.principal.as_str().cmp(b.principal.as_str()));
    Ok(users)
}

fn get(tx: &Tx<'_>, id: i64) -> Result<Approval, ApiError> {
    tx.approval(id)?.ok_or_else(|| ApiError::not_found(format!("no approval request {id}")))
}

/// A rule of [`validate_approval`] broken, in words that name the field.
fn describe(e: &ValidationError) -> String {
    match e {
        ValidationError::Field { .. } => e.to_string(),
        ValidationError::SelfApproval { .. } => format!("field approved_by: {e}"),
    }
}

/// The console-only part of "who may decide" (rule 3 of the module docs): the approver's grant,
/// as recorded, against the request. Used when deciding and again when signing.
pub fn separation(
    a: &Approval,
    approver: &str,
    grant: Option<&ApproverGrant>,
) -> Result<(), String> {
    let Some(g) = grant else {
        return Err(format!("there is no record of how {approver} came to hold the approver role"));
    };
    if g.confirmed_ms >= a.requested_ms {
        return Err(format!(
            "{approver} holds the approver role since {} and approval {} was requested at {}: \
             only someone who held the role before the request was filed may decide it",
            g.confirmed_ms, a.id, a.requested_ms
        ));
    }
    let requester = canonical_name(&a.requested_by);
    for (what, who) in [("granted", &g.granted_by), ("confirmed", &g.confirmed_by)] {
        if canonical_name(who) == requester {
            return Err(format!(
                "{approver} was {what} the approver role by {who}, who requested approval {}: \
                 an approver the requester made may not decide their requests",
                a.id
            ));
        }
    }
    Ok(())
}

/// What the signer puts into the bundle for an approval in force, or why it cannot: the record
/// must pass the rules the agent applies ([`UserScope::validate`]) and [`separation`].
pub fn user_scope(a: &Approval) -> Result<UserScope, String> {
    let name = |field: &str, s: &str| {
        Principal::new(s).map_err(|e| format!("field {field} is not a valid name: {}", e.why))
    };
    let (Some(decided_by), Some(decided_ms)) = (&a.decided_by, a.decided_ms) else {
        return Err("approved, but no record of who approved it or when".into());
    };
    let g = a.approver_grant.as_ref();
    let grant = match g {
        Some(g) => Some(RoleGrant {
            granted_by: name("approver_grant.granted_by", &g.granted_by)?,
            granted_at: ms_to_time(g.granted_ms),
            confirmed_by: name("approver_grant.confirmed_by", &g.confirmed_by)?,
            confirmed_at: ms_to_time(g.confirmed_ms),
        }),
        None => None,
    };
    let scope = UserScope {
        principal: name("user", &a.user)?,
        mode: if a.mode == "all-activities" {
            CaptureMode::AllActivities
        } else {
            CaptureMode::SpecificActivities
        },
        approval: rearview_config::Approval {
            requested_by: name("requested_by", &a.requested_by)?,
            approved_by: name("approved_by", decided_by)?,
            justification: a.justification.clone(),
            approved_at: ms_to_time(decided_ms),
            expires_at: ms_to_time(a.expires_ms),
            approver_grant: grant,
        },
    };
    scope.validate().map_err(|e| describe(&e))?;
    separation(a, decided_by, g)?;
    Ok(scope)
}

/// Flags `a` as left out of the bundle, and audits that once in the same transaction (a record
/// already flagged is left as it is).
pub fn exclude(tx: &Tx<'_>, a: &Approval, reason: &str) -> Result<(), ApiError> {
    if tx.exclude_approval(a.id, reason, now_ms())? {
        tracing::warn!(approval = a.id, user = %a.user, %reason, "approval left out of the policy bundle");
        tx.audit(
            "console",
            "approval.exclude",
            &format!("approval:{}", a.id),
            serde_json::json!({ "user": a.user, "reason": reason }),
        )?;
    }
    Ok(())
}

/// `POST /api/v1/approvals`. Admin only; the request is checked with the rules the signer and
/// the agent apply, so one they would refuse is never stored.
pub async fn request(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<NewApproval>,
) -> Result<Json<Approval>, ApiError> {
    person.require(&[Role::Admin])?;
    let user = req.user.trim();
    if !MODES.contains(&req.mode.as_str()) {
        return Err(ApiError::bad_request(format!(
            "mode {:?} unknown: use specific-activities or all-activities",
            req.mode
        )));
    }
    let record = ApprovalRecord {
        user,
        requested_by: &person.name,
        approved_by: None,
        justification: &req.justification,
        ..ApprovalRecord::default()
    };
    validate_approval(&record).map_err(|e| {
        ApiError::bad_request(format!("approval request refused: {}", describe(&e)))
    })?;
    if !(60..=366 * 86400).contains(&req.ttl_secs) {
        return Err(ApiError::bad_request("ttl_secs must be between 60 and 31622400 (366 days)"));
    }
    let user = user.to_owned();
    let file = move |tx: &Tx<'_>| {
        let now = tx.event_ms()?;
        let id = tx.insert_approval(&NewApprovalRow {
            user: &user,
            mode: &req.mode,
            justification: &req.justification,
            requested_by: &person.name,
            requested_ms: now,
            expires_ms: now + req.ttl_secs * 1000,
        })?;
        tx.audit(
            &person.actor(),
            "approval.request",
            &format!("approval:{id}"),
            serde_json::json!({ "user": user, "mode": req.mode, "justification": req.justification }),
        )?;
        get(tx, id)
    };
    state.store.write(file).await.map(Json)
}

/// The decider's active approver grant, as it is copied onto the approval.
fn approver_grant(tx: &Tx<'_>, person: &Person) -> Result<Option<ApproverGrant>, ApiError> {
    let g = tx.grant_of(person.id, Role::Approver)?;
    Ok(g.filter(|g| g.state == GrantState::Active).and_then(|g| {
        Some(ApproverGrant {
            granted_by: g.granted_by,
            granted_ms: g.granted_ms,
            confirmed_by: g.confirmed_by?,
            confirmed_ms: g.confirmed_ms?,
        })
    }))
}

/// Rules 2 to 4 of "Who may decide" for `person` deciding `approval`.
fn may_decide(
    approval: &Approval,
    person: &Person,
    grant: Option<&ApproverGrant>,
) -> Result<(), ApiError> {
    if approval.requested_by == person.name {
        return Err(ApiError::forbidden(format!(
            "{} requested approval {} and cannot also decide it: a different person with the approver role must",
            person.name, approval.id
        )));
    }
    separation(approval, &person.name, grant).map_err(ApiError::forbidden)?;
    let record = ApprovalRecord {
        user: &approval.user,
        requested_by: &approval.requested_by,
        approved_by: Some(&person.name),
        justification: &approval.justification,
        approver_granted_by: grant.map(|g| g.granted_by.as_str()),
        approver_confirmed_by: grant.map(|g| g.confirmed_by.as_str()),
    };
    validate_approval(&record).map_err(|e| {
        ApiError::bad_request(format!(
            "approval {} cannot be decided: {}",
            approval.id,
            describe(&e)
        ))
    })
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
    to: &'static str,
    comment: String,
) -> Result<Json<Approval>, ApiError> {
    let decided = state.store.write(move |tx| decide_in(tx, &person, id, to, &comment)).await?;
    state.hub.policy_changed();
    Ok(Json(decided))
}

/// [`decide`]'s checks and change, with its audit line and the new policy version, in `tx`.
fn decide_in(
    tx: &Tx<'_>,
    person: &Person,
    id: i64,
    to: &str,
    comment: &str,
) -> Result<Approval, ApiError> {
    let approval = get(tx, id)?;
    let mut grant = None;
    let allowed_from = match to {
        "approved" | "rejected" => {
            person.require(&[Role::Approver])?;
            grant = approver_grant(tx, person)?;
            may_decide(&approval, person, grant.as_ref())?;
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
    let changed = match (to, &grant) {
        ("revoked", _) => tx.revoke_approval(id, &person.name, now)?,
        (_, None) => {
            // may_decide refuses a decider without a grant; this only guards the invariant.
            return Err(ApiError::forbidden(format!("{} holds no approver grant", person.name)));
        }
        (_, Some(g)) => tx.decide_approval(id, to, &person.name, now, g)?,
    };
    if !changed {
        return Err(ApiError::conflict(format!(
            "approval {id} changed meanwhile or expired; reload it"
        )));
    }
    let mut details =
        serde_json::json!({ "user": approval.user, "mode": approval.mode, "comment": comment });
    if let Some(g) = &grant {
        // Who made the decider an approver, as of this decision.
        details["approver_grant"] = serde_json::json!(g);
    }
    let action = match to {
        "approved" => "approval.approve",
        "rejected" => "approval.reject",
        _ => "approval.revoke",
    };
    tx.audit(&person.actor(), action, &format!("approval:{id}"), details)?;
    tx.bump_policy_version()?;
    get(tx, id)
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
    let rows = state.store.read(move |tx| tx.approvals_page(page)).await?;
    Ok(Page::from_rows(rows, page))
}
