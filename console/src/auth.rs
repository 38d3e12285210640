//! Who is calling: people (API tokens with roles) and devices (device tokens).
//!
//! ```text
//! person token   rvp_<64 hex>     random 256 bits, shown once at creation
//! device token   rvd_<64 hex>     random 256 bits, shown once at enrollment
//! enrollment     rve_<64 hex>     one-time, expiring
//! ```
//!
//! Only SHA-256 of each token is stored, so a copy of the database authenticates nobody.
//!
//! A person's roles are their *active* grants (`role_grants`, see [`crate::api::roles`]): an
//! approver grant waiting for its confirmation gives nothing yet.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;

use crate::error::{ApiError, ConsoleError};
use crate::state::AppState;
use crate::store::{now_ms, sha256_hex, Store};

/// What a person may do. A person may hold several.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Authors policy, requests approvals, issues triggers, manages people and enrollment.
    Admin,
    /// Approves or rejects capture requests made by someone else.
    Approver,
    /// Lists and opens clips.
    Investigator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Investigator => "investigator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s.trim() {
            "admin" => Some(Role::Admin),
            "approver" => Some(Role::Approver),
            "investigator" => Some(Role::Investigator),
            _ => None,
        }
    }

    pub fn join(roles: &[Role]) -> String {
        roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// A new random token with the given prefix.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let value =
        value.to_str().map_err(|_| ApiError::unauthorized("Authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))
}

/// The stored hash of the bearer token, which must be of the kind `prefix` marks (`rvp_` for
/// people, `rvd_` for devices), so a device token never authenticates a person and vice versa.
fn bearer_token_hash(parts: &Parts, prefix: &str, needs: &str) -> Result<String, ApiError> {
    let token = bearer(parts)?;
    if !token.starts_with(prefix) {
        return Err(ApiError::unauthorized(format!("this endpoint needs {needs} ({prefix}…)")));
    }
    Ok(sha256_hex(token.as_bytes()))
}

/// An authenticated person.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub roles: Vec<Role>,
}

impl Person {
    /// Refuses with 403 unless the person holds one of `allowed`.
    pub fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        if self.roles.iter().any(|r| allowed.contains(r)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} (roles: {}) may not do this; it needs the role {}",
                self.name,
                Role::join(&self.roles),
                allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")
            )))
        }
    }

    /// The name the audit log records.
    pub fn actor(&self) -> String {
        format!("person:{}", self.name)
    }
}

impl FromRequestParts<Arc<AppState>> for Person {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let hash = bearer_token_hash(parts, "rvp_", "a person's API token")?;
        state
            .store
            .read(move |tx| tx.person_by_token_hash(&hash))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown API token"))
    }
}

/// The person whose API token (`rvp_…`) this is, by its stored hash, with their effective
/// (active) roles; `None` when nobody holds it. The local commands that act as a person
/// (`clip export`) check tokens with this, the same check the API makes.
pub fn person_by_token(store: &Store, token: &str) -> Result<Option<Person>, ConsoleError> {
    if !token.starts_with("rvp_") {
        return Ok(None);
    }
    let hash = sha256_hex(token.trim().as_bytes());
    store.read_now(|tx| tx.person_by_token_hash(&hash))
}

/// An authenticated device.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
}

impl FromRequestParts<Arc<AppState>> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let hash = bearer_token_hash(parts, "rvd_", "a device token")?;
        // A read first: an unknown token writes nothing, and a known device is marked seen at
        // most every SEEN_EVERY_MS (a write takes the one writer every replica shares).
        let now = now_ms();
        let known = state.store.read(move |tx| tx.device_by_token(&hash)).await?;
        let (id, last_seen) =
            known.ok_or_else(|| ApiError::unauthorized("unknown device token"))?;
        if now - last_seen >= crate::store::devices::SEEN_EVERY_MS {
            let seen = id.clone();
            state.store.write(move |tx| tx.mark_device_seen(&seen, now)).await?;
        }
        Ok(Device { id })
    }
}
