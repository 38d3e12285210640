//! People, enrollment tokens and the audit log (admin only).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::api::page::{Page, PageQuery};
use crate::auth::{new_token, Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{now_ms, sha256_hex};

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
    pub roles: Vec<Role>,
    /// The person's API token, shown this once.
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PersonView {
    pub id: i64,
    pub name: String,
    pub roles: String,
    pub created_ms: i64,
}

/// Creates a person and their token. Also used by `init` for the first admin.
pub fn create_person(
    state: &AppState,
    actor: &str,
    name: &str,
    roles: &[Role],
) -> Result<CreatedPerson, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_request("a person's name must be 1 to 128 characters"));
    }
    if roles.is_empty() {
        return Err(ApiError::bad_request("a person needs at least one role"));
    }
    let token = new_token("rvp");
    let id = {
        let conn = state.store.conn();
        let inserted = conn.execute(
            "INSERT INTO people (name, roles, token_sha256, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![name, Role::join(roles), sha256_hex(token.as_bytes()), now_ms()],
        )?;
        if inserted == 0 {
            return Err(ApiError::conflict(format!("a person named {name:?} already exists")));
        }
        conn.last_insert_rowid()
    };
    state.store.audit(
        actor,
        "person.create",
        name,
        serde_json::json!({ "roles": Role::join(roles) }),
    )?;
    Ok(CreatedPerson { id, name: name.to_owned(), roles: roles.to_vec(), token })
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<NewPerson>,
) -> Result<Json<CreatedPerson>, ApiError> {
    person.require(&[Role::Admin])?;
    create_person(&state, &person.actor(), &req.name, &req.roles).map(Json)
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<PersonView>>, ApiError> {
    person.require(&[Role::Admin])?;
    let conn = state.store.conn();
    let mut stmt = conn.prepare("SELECT id, name, roles, created_ms FROM people ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(PersonView {
                id: r.get(0)?,
                name: r.get(1)?,
                roles: r.get(2)?,
                created_ms: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(rows))
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
    state.store.conn().execute(
        "INSERT INTO enrollment_tokens (token_sha256, created_by, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![sha256_hex(token.as_bytes()), person.name, now, expires_ms],
    )?;
    state.store.audit(
        &person.actor(),
        "enrollment_token.create",
        &sha256_hex(token.as_bytes())[..12],
        serde_json::json!({ "expires_ms": expires_ms }),
    )?;
    Ok(Json(EnrollmentToken { token, expires_ms }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
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
    let conn = state.store.conn();
    let mut stmt = conn.prepare(
        "SELECT id, time_ms, actor, action, target, details_json FROM audit
         WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![page.after, page.sql_limit()], |r| {
            let details: String = r.get(5)?;
            Ok((
                r.get(0)?,
                AuditEntry {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, page))
}
