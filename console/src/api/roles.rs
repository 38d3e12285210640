//! Role grants: which roles a person holds, who gave each, and — for the approver role — the
//! second person who confirmed it (table `role_grants`, see [`crate::store`]).
//!
//! ```text
//! grant (an admin) ──► admin, investigator: active at once
//!                  └─► approver: pending ──confirm──► active
//!                        confirm: an active approver who is neither the granter nor the
//!                        grantee (names compared in canonical form)
//! ```
//!
//! A person's effective roles are their active grants; a pending approver grant gives nothing,
//! so an admin who makes an approver account cannot use it until somebody else vouches for it.
//! An active grant records since when the role is held (`confirmed_ms`); an approval can be
//! decided only by an approver whose grant was confirmed before the request was filed and was
//! neither granted nor confirmed by the requester (see [`crate::api::approvals`]).
//!
//! The first admin and the first approver (made by `init`) are granted, and the approver
//! confirmed, by [`INIT`]; grants carried over from a console before grants were recorded name
//! [`crate::store::LEGACY`]. Both names are reserved: no person may be called so.
//!
//! Every grant and confirmation is written to the audit log with the change itself, in one
//! transaction: `role.grant` (target: the grantee's name; details: role, state) and
//! `role.confirm` (details: role, granted_by, granted_ms).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use rearview_config::canonical_name;
use serde::{Deserialize, Serialize};

use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Tx;

/// The granter and confirmer of the roles `init` gives.
pub const INIT: &str = "console:init";

/// Whether a grant is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    /// Waiting for a second person (approver grants only); gives nothing yet.
    Pending,
    /// In force since `confirmed_ms`.
    Active,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Active => "active",
        }
    }
}

/// One role of one person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub person: String,
    pub role: Role,
    pub state: GrantState,
    /// The admin who granted it (or [`INIT`], [`crate::store::LEGACY`]).
    pub granted_by: String,
    pub granted_ms: i64,
    /// Who confirmed it: for approver grants a second person; for the other roles the granter.
    pub confirmed_by: Option<String>,
    /// Since when the role is held.
    pub confirmed_ms: Option<i64>,
}

/// Who grants, and whether the grant needs no second person because the console itself makes
/// it (`init`).
#[derive(Debug, Clone, Copy)]
pub struct Granter<'a> {
    /// Recorded as `granted_by` (a person's name, or [`INIT`]).
    pub name: &'a str,
    /// The audit log's actor (`person:<name>`, `console:init`).
    pub actor: &'a str,
    /// Approver grants active at once, confirmed by the granter: only for [`INIT`].
    pub confirms: bool,
}

/// Grants `role` to the person `(person_id, person_name)` inside the caller's transaction, with
/// its audit line: active at once, except an approver grant, which stays pending unless
/// `granter.confirms`. A second grant of the same role is 409.
pub fn grant_in(
    tx: &Tx<'_>,
    person_id: i64,
    person_name: &str,
    role: Role,
    granter: Granter<'_>,
    now: i64,
) -> Result<Grant, ApiError> {
    let state = if role == Role::Approver && !granter.confirms {
        GrantState::Pending
    } else {
        GrantState::Active
    };
    let (confirmed_by, confirmed_ms) = match state {
        GrantState::Active => (Some(granter.name.to_owned()), Some(now)),
        GrantState::Pending => (None, None),
    };
    let grant = Grant {
        person: person_name.to_owned(),
        role,
        state,
        granted_by: granter.name.to_owned(),
        granted_ms: now,
        confirmed_by,
        confirmed_ms,
    };
    if !tx.insert_grant(person_id, &grant)? {
        return Err(ApiError::conflict(format!(
            "{person_name} already holds or waits for the role {}",
            role.as_str()
        )));
    }
    tx.audit(
        granter.actor,
        "role.grant",
        person_name,
        serde_json::json!({ "role": role.as_str(), "state": state.as_str() }),
    )?;
    Ok(grant)
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role).ok_or_else(|| {
        ApiError::bad_request(format!("unknown role {role:?}: use admin, approver or investigator"))
    })
}

fn person_name(tx: &Tx<'_>, id: i64) -> Result<String, ApiError> {
    tx.person_name(id)?.ok_or_else(|| ApiError::not_found(format!("no person {id}")))
}

/// `POST /api/v1/people/{id}/roles/{role}`: grants a role to an existing person.
///
/// Who may call it: an admin. It trusts the caller's token (for who grants) and nothing in the
/// request but the path; an approver grant it makes is pending until confirmed (see
/// [`confirm`]). A role the person holds or waits for already is 409.
pub async fn grant(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((id, role)): Path<(i64, String)>,
) -> Result<Json<Grant>, ApiError> {
    person.require(&[Role::Admin])?;
    let role = parse_role(&role)?;
    let grant = state
        .store
        .write(move |tx| {
            let now = tx.event_ms()?;
            let name = person_name(tx, id)?;
            let actor = person.actor();
            let granter = Granter { name: &person.name, actor: &actor, confirms: false };
            grant_in(tx, id, &name, role, granter, now)
        })
        .await?;
    Ok(Json(grant))
}

/// `POST /api/v1/people/{id}/roles/approver/confirm`: the second person's confirmation of a
/// pending approver grant, which makes it active from now on.
///
/// Who may call it: an active approver who is neither the grantee nor the granter (names in
/// canonical form). Admins and investigators are refused (403), as are the grantee and the
/// granter; a grant already active is 409. It trusts the caller's token and the stored grant.
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((id, role)): Path<(i64, String)>,
) -> Result<Json<Grant>, ApiError> {
    person.require(&[Role::Approver])?;
    if parse_role(&role)? != Role::Approver {
        return Err(ApiError::bad_request(format!(
            "only approver grants wait for a confirmation; the role {role} is active when granted"
        )));
    }
    state.store.write(move |tx| confirm_in(tx, &person, id, tx.event_ms()?)).await.map(Json)
}

/// [`confirm`]'s checks and change, in one transaction with its audit line.
fn confirm_in(tx: &Tx<'_>, person: &Person, id: i64, now: i64) -> Result<Grant, ApiError> {
    let name = person_name(tx, id)?;
    let g = tx
        .grant_of(id, Role::Approver)?
        .ok_or_else(|| ApiError::not_found(format!("{name} has no approver grant to confirm")))?;
    if g.state == GrantState::Active {
        return Err(ApiError::conflict(format!("{name} is an approver already")));
    }
    let me = canonical_name(&person.name);
    if person.id == id || me == canonical_name(&name) {
        return Err(ApiError::forbidden(format!(
            "{} cannot confirm their own approver role: another approver must",
            person.name
        )));
    }
    if me == canonical_name(&g.granted_by) {
        return Err(ApiError::forbidden(format!(
            "{} granted {name} the approver role and cannot also confirm it: another approver must",
            person.name
        )));
    }
    if !tx.confirm_approver(id, &person.name, now)? {
        return Err(ApiError::conflict(format!("{name}'s grant changed meanwhile; reload it")));
    }
    tx.audit(
        &person.actor(),
        "role.confirm",
        &name,
        serde_json::json!({ "role": "approver", "granted_by": g.granted_by, "granted_ms": g.granted_ms }),
    )?;
    Ok(Grant {
        state: GrantState::Active,
        confirmed_by: Some(person.name.clone()),
        confirmed_ms: Some(now),
        ..g
    })
}
