//! People, enrollment tokens and the audit log.
//!
//! A person's name is unique in canonical form ([`rearview_config::canonical_name`]: trimmed,
//! case-insensitive), so `Admin` cannot be created next to `admin`; it must be a valid
//! principal (no control characters) of at most 128 bytes, and not one of the names the
//! console itself records as a granter ([`roles::INIT`], [`crate::store::LEGACY`]). Roles are
//! grants ([`roles`]): creating a person with the approver role leaves that grant pending.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use rearview_config::{canonical_name, Principal};
use serde::{Deserialize, Serialize};

use crate::api::page::{Page, PageQuery};
use crate::api::roles::{self, Grant, GrantState, Granter};
use crate::auth::{new_token, Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
pub use crate::store::audit::AuditEntry;
use crate::store::people::NewPersonRow;
use crate::store::{now_ms, sha256_hex, Tx, LEGACY};

/// Longest person name, in bytes.
const MAX_NAME_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    pub name: String,
    /// e.g. `["approver"]`.
    pub roles: Vec<Role>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedPerson {
    pub id: i64,
    pub name: String,
    /// The roles in force now.
    pub roles: Vec<Role>,
    /// Roles granted but waiting for a second person's confirmation (the approver role).
    #[serde(default)]
    pub pending: Vec<Role>,
    /// The person's API token, shown this once.
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PersonView {
    pub id: i64,
    pub name: String,
    /// The roles in force, comma-separated (`approver,investigator`).
    pub roles: String,
    pub created_ms: i64,
    /// Every grant, active or pending, with who granted and confirmed it.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Checks a new person's name (see the module docs) and returns it trimmed.
fn person_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    let refuse = |why: String| ApiError::bad_request(format!("a person's name {why}"));
    if name.len() > MAX_NAME_LEN {
        return Err(refuse(format!("must be at most {MAX_NAME_LEN} bytes, is {}", name.len())));
    }
    Principal::new(name).map_err(|e| refuse(format!("{name:?} is not valid: {}", e.why)))?;
    let key = canonical_name(name);
    if key == LEGACY || key == roles::INIT {
        return Err(refuse(format!("{name:?} is reserved for the console's own records")));
    }
    Ok(name)
}

/// Creates a person, their token and their role grants, in `tx` with the audit lines, at
/// `now` (an [`crate::store::Store::event_ms`]). `granter` grants the roles (`init` passes one
/// that confirms its approver at once).
pub fn create_person(
    tx: &Tx<'_>,
    granter: Granter<'_>,
    name: &str,
    roles: &[Role],
    now: i64,
) -> Result<CreatedPerson, ApiError> {
    let name = person_name(name)?;
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(ApiError::bad_request("a person needs at least one role"));
    }
    let token = new_token("rvp");
    let key = canonical_name(name);
    if let Some(existing) = tx.person_with_name(name, &key)? {
        return Err(ApiError::conflict(format!(
            "a person named {existing:?} already exists; {name:?} is the same name in canonical form (case and spaces do not count)"
        )));
    }
    let id = tx.insert_person(&NewPersonRow {
        name,
        name_key: &key,
        token_sha256: &sha256_hex(token.as_bytes()),
        created_ms: now,
    })?;
    tx.audit(
        granter.actor,
        "person.create",
        name,
        serde_json::json!({ "roles": Role::join(&roles) }),
    )?;
    let mut active = Vec::new();
    let mut pending = Vec::new();
    for role in roles {
        let g = roles::grant_in(tx, id, name, role, granter, now)?;
        match g.state {
            GrantState::Active => active.push(role),
            GrantState::Pending => pending.push(role),
        }
    }
    Ok(CreatedPerson { id, name: name.to_owned(), roles: active, pending, token })
}

/// `POST /api/v1/people`. Admin only; an approver role asked for here is pending until another
/// approver confirms it (`POST /api/v1/people/{id}/roles/approver/confirm`).
pub async fn create(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<NewPerson>,
) -> Result<Json<CreatedPerson>, ApiError> {
    person.require(&[Role::Admin])?;
    let created = state
        .store
        .write(move |tx| {
            let now = tx.event_ms()?;
            let actor = person.actor();
            let granter = Granter { name: &person.name, actor: &actor, confirms: false };
            create_person(tx, granter, &req.name, &req.roles, now)
        })
        .await?;
    Ok(Json(created))
}

/// `GET /api/v1/people`: admins, and approvers (who must see pending grants to confirm them).
/// No tokens, only names, roles and grants.
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<PersonView>>, ApiError> {
    person.require(&[Role::Admin, Role::Approver])?;
    Ok(Json(state.store.read(|tx| tx.people()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// How long the token stays valid; default one hour, at most 30 days.
    #[serde(default = "default_enrollment_ttl")]
    pub ttl_secs: i64,
}

fn default_enrollment_ttl() -> i64 {
    3600
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Give this to one device; it works once.
    pub token: String,
    pub expires_ms: i64,
}

pub async fn create_enrollment_token(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<NewEnrollmentToken>,
) -> Result<Json<EnrollmentToken>, ApiError> {
    person.require(&[Role::Admin])?;
    if !(1..=30 * 86400).contains(&req.ttl_secs) {
        return Err(ApiError::bad_request("ttl_secs must be between 1 and 2592000 (30 days)"));
    }
    let token = new_token("rve");
    let now = now_ms();
    let expires_ms = now + req.ttl_secs * 1000;
    let hash = sha256_hex(token.as_bytes());
    state
        .store
        .write(move |tx| {
            tx.insert_enrollment_token(&hash, &person.name, now, expires_ms)?;
            tx.audit(
                &person.actor(),
                "enrollment_token.create",
                &hash[..12],
                serde_json::json!({ "expires_ms": expires_ms }),
            )
        })
        .await?;
    Ok(Json(EnrollmentToken { token, expires_ms }))
}

/// `GET /api/v1/audit` (admin, approver): oldest first, in pages (see [`crate::api::page`];
/// `after` is the entry id, as it was before pages had cursors).
pub async fn audit(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<PageQuery>,
) -> Result<Page<AuditEntry>, ApiError> {
    person.require(&[Role::Admin, Role::Approver])?;
    let page = q.parse()?;
    let rows: Vec<(i64, AuditEntry)> = state.store.read(move |tx| tx.audit_page(page)).await?;
    Ok(Page::from_rows(rows, page))
}
