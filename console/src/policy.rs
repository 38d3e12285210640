//! What devices are told: the signed policy bundle (approvals in force + capture settings) and
//! signed triggers, and the console-side indicator rules that turn activity into triggers.
//!
//! The bundle is one document for the whole tenant (`devices: "all"`), signed once per version
//! and kept in `meta` (`policy_bundle`), so every device gets the very same bytes for a version
//! and a restart does not re-sign a version with other content. Its version is one counter for
//! the tenant, raised on every change (approval decided, revoked or expired, settings edited,
//! daily refresh before the bundle's own expiry), so versions only rise on every device.
//! Triggers are signed per device (the device id is inside the signature).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use rearview_uploader::wire::{PolicyMessage, TriggerMessage};
use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::api::approvals;
use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::push::Push;
use crate::state::AppState;
use crate::store::now_ms;

/// A console-side rule: activity of this kind from an approved user issues a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorRule {
    /// Activity kind, e.g. `file_copied_to_removable_media`.
    pub kind: String,
    pub before_secs: u32,
    pub after_secs: u32,
}

/// Until an admin sets rules: copies to removable media open a 5-minute-before / 1-minute-after
/// clip, the product's usual window.
pub fn default_rules() -> Vec<IndicatorRule> {
    vec![IndicatorRule { kind: "removable_media_copy".into(), before_secs: 300, after_secs: 60 }]
}

pub fn rules(state: &AppState) -> Result<Vec<IndicatorRule>, ApiError> {
    match state.store.meta_get("indicator_rules")? {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            ApiError::from(crate::error::ConsoleError::Database(format!("indicator_rules: {e}")))
        }),
        None => Ok(default_rules()),
    }
}

/// True when `user` has an approval in force now.
pub fn has_approval(state: &AppState, user: &str) -> Result<bool, ApiError> {
    Ok(approvals::in_force(state)?.iter().any(|a| a.user == user))
}

/// Policy changed: raise the version and tell every connected device.
pub fn changed(state: &AppState) -> Result<u64, ApiError> {
    let version = state.store.bump_policy_version()?;
    state.hub.policy_changed();
    Ok(version)
}

/// The current signed bundle (the same for every device).
pub fn bundle_for(state: &AppState, _device_id: &str) -> Result<PolicyMessage, ApiError> {
    let version = state.store.policy_version()?;
    let mut cache = state.policy_cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = cache.as_ref().filter(|m| m.version == version) {
        return Ok(m.clone());
    }
    let stored: Option<PolicyMessage> =
        state.store.meta_get("policy_bundle")?.and_then(|json| serde_json::from_str(&json).ok());
    let message = match stored.filter(|m| m.version == version) {
        Some(m) => m,
        None => {
            // A record the rules refuse is left out (and flagged), never allowed to hold up the
            // bundle: revocations and other users' approvals must still reach devices.
            let users = approvals::bundle_users(state)?;
            let settings = capture_settings(state)?;
            let signed = state.tenant.sign_policy(version, users, &settings)?;
            let m = PolicyMessage { version, signed };
            let json =
                serde_json::to_string(&m).map_err(|e| ApiError::bad_request(e.to_string()))?;
            state.store.meta_set("policy_bundle", &json)?;
            state.store.meta_set("policy_signed_ms", &now_ms().to_string())?;
            m
        }
    };
    *cache = Some(message.clone());
    Ok(message)
}

fn capture_settings(state: &AppState) -> Result<serde_json::Value, ApiError> {
    match state.store.meta_get("capture_settings")? {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            ApiError::from(crate::error::ConsoleError::Database(format!("capture_settings: {e}")))
        }),
        None => Ok(serde_json::json!({})),
    }
}

/// `POST /api/v1/triggers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Principal name of the user whose activity to capture.
    pub user: String,
    /// When the activity happened, Unix ms.
    pub event_time: i64,
    /// Seconds before `event_time` to include.
    pub before: u32,
    /// Seconds after `event_time` to include.
    pub after: u32,
    /// Why, in words.
    pub reason: String,
    /// Only this device; default: the devices where the user was seen, else every device.
    #[serde(default)]
    pub device: Option<String>,
    /// Indicator kind behind it (`removable_media_copy`, …); default `manual`.
    #[serde(default)]
    pub indicator: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub alert_id: i64,
    pub trigger_ids: Vec<String>,
    pub devices: Vec<String>,
}

/// Longest window a trigger may ask for on either side (the ring never holds more).
const MAX_WINDOW_SECS: u32 = rearview_config::MAX_WINDOW_SECS;

/// Signs and stores one trigger per target device, opens the alert, pushes.
pub fn issue_trigger(
    state: &AppState,
    actor: &str,
    req: &TriggerRequest,
) -> Result<Issued, ApiError> {
    if req.before > MAX_WINDOW_SECS || req.after > MAX_WINDOW_SECS {
        return Err(ApiError::bad_request(format!(
            "before and after are at most {MAX_WINDOW_SECS} s"
        )));
    }
    if req.reason.trim().is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    if !has_approval(state, &req.user)? {
        return Err(ApiError::conflict(format!(
            "user {} has no capture approval in force: an admin must request one and an approver approve it",
            req.user
        )));
    }
    let devices = target_devices(state, req)?;
    if devices.is_empty() {
        return Err(ApiError::conflict("no enrolled device to send the trigger to"));
    }
    let now = now_ms();
    // Valid until well after the window closes, so a device that was briefly offline still
    // acts on it; never forever, so an old trigger cannot be replayed later.
    let window_end = req.event_time.saturating_add(i64::from(req.after) * 1000);
    let expires_ms = window_end.max(now) + 15 * 60 * 1000;
    let alert_id = {
        let conn = state.store.conn();
        conn.execute(
            "INSERT INTO alerts (user, reason, source, created_by, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![req.user, req.reason, if actor.starts_with("rule:") { actor } else { "manual" }, actor, now],
        )?;
        conn.last_insert_rowid()
    };
    let mut trigger_ids = Vec::new();
    let mut messages = Vec::new();
    for device in &devices {
        let trigger_id = format!("trg-{}", hex::encode(rand::random::<[u8; 12]>()));
        let signed = state.tenant.sign_trigger(&trigger_id, alert_id, device, req, expires_ms)?;
        state.store.conn().execute(
            "INSERT INTO triggers (id, alert_id, device_id, user, event_time_ms, before_secs, after_secs, reason,
                                   issued_ms, expires_ms, signed_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                trigger_id,
                alert_id,
                device,
                req.user,
                req.event_time,
                req.before,
                req.after,
                req.reason,
                now,
                expires_ms,
                signed.to_string()
            ],
        )?;
        trigger_ids.push(trigger_id.clone());
        messages.push((device.clone(), TriggerMessage { trigger_id, signed }));
    }
    state.store.audit(
        actor,
        "trigger.issue",
        &format!("alert:{alert_id}"),
        serde_json::json!({ "user": req.user, "event_time": req.event_time, "before": req.before,
                            "after": req.after, "reason": req.reason, "triggers": trigger_ids }),
    )?;
    for (device, msg) in messages {
        state.hub.send(&device, Push::Trigger(msg));
    }
    Ok(Issued { alert_id, trigger_ids, devices })
}

fn target_devices(state: &AppState, req: &TriggerRequest) -> Result<Vec<String>, ApiError> {
    let conn = state.store.conn();
    if let Some(d) = &req.device {
        let exists: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)", [d], |r| {
                r.get(0)
            })?;
        return if exists {
            Ok(vec![d.clone()])
        } else {
            Err(ApiError::not_found(format!("no device {d}")))
        };
    }
    let mut stmt = conn.prepare("SELECT id, users_json FROM devices ORDER BY id")?;
    let all: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let seen: Vec<String> = all
        .iter()
        .filter(|(_, users)| {
            serde_json::from_str::<Vec<String>>(users)
                .map(|u| u.contains(&req.user))
                .unwrap_or(false)
        })
        .map(|(id, _)| id.clone())
        .collect();
    Ok(if seen.is_empty() { all.into_iter().map(|(id, _)| id).collect() } else { seen })
}

/// Triggers for `device_id` that it has not acknowledged and that have not expired.
pub fn pending_triggers(
    state: &AppState,
    device_id: &str,
) -> Result<Vec<TriggerMessage>, ApiError> {
    let conn = state.store.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT id, signed_json FROM triggers WHERE device_id = ?1 AND acked_ms IS NULL AND expires_ms > ?2 ORDER BY issued_ms",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map(params![device_id, now_ms()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(trigger_id, json)| {
            let signed = serde_json::from_str(&json).map_err(|e| {
                ApiError::from(crate::error::ConsoleError::Database(format!(
                    "trigger {trigger_id}: {e}"
                )))
            })?;
            Ok(TriggerMessage { trigger_id, signed })
        })
        .collect()
}

// ---- HTTP handlers ----

pub async fn post_trigger(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(req): Json<TriggerRequest>,
) -> Result<Json<Issued>, ApiError> {
    person.require(&[Role::Admin])?;
    issue_trigger(&state, &person.actor(), &req).map(Json)
}

pub async fn get_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<serde_json::Value>, ApiError> {
    person.require(&[Role::Admin, Role::Approver, Role::Investigator])?;
    capture_settings(&state).map(Json)
}

pub async fn put_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(settings): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    person.require(&[Role::Admin])?;
    state.tenant.validate_settings(&settings)?;
    state.store.meta_set("capture_settings", &settings.to_string())?;
    state.store.audit(&person.actor(), "policy.settings", "policy", settings.clone())?;
    changed(&state)?;
    Ok(Json(settings))
}

pub async fn get_rules(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<IndicatorRule>>, ApiError> {
    person.require(&[Role::Admin, Role::Approver, Role::Investigator])?;
    rules(&state).map(Json)
}

pub async fn put_rules(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(rules): Json<Vec<IndicatorRule>>,
) -> Result<Json<Vec<IndicatorRule>>, ApiError> {
    person.require(&[Role::Admin])?;
    if rules.iter().any(|r| {
        r.kind.is_empty() || r.before_secs > MAX_WINDOW_SECS || r.after_secs > MAX_WINDOW_SECS
    }) {
        return Err(ApiError::bad_request(format!(
            "every rule needs a kind and windows of at most {MAX_WINDOW_SECS} s"
        )));
    }
    let json = serde_json::to_string(&rules).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.store.meta_set("indicator_rules", &json)?;
    state.store.audit(&person.actor(), "policy.rules", "rules", serde_json::json!(rules))?;
    Ok(Json(rules))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AlertView {
    pub id: i64,
    pub user: String,
    pub reason: String,
    pub source: String,
    pub created_by: String,
    pub created_ms: i64,
    /// Clips attached to this alert (through its triggers).
    pub clips: Vec<String>,
}

pub async fn list_alerts(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let conn = state.store.conn();
    let mut stmt = conn.prepare(
        "SELECT id, user, reason, source, created_by, created_ms FROM alerts ORDER BY id",
    )?;
    let mut alerts: Vec<AlertView> = stmt
        .query_map([], |r| {
            Ok(AlertView {
                id: r.get(0)?,
                user: r.get(1)?,
                reason: r.get(2)?,
                source: r.get(3)?,
                created_by: r.get(4)?,
                created_ms: r.get(5)?,
                clips: vec![],
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut clips = conn.prepare("SELECT id FROM clips WHERE alert_id = ?1 ORDER BY created_ms")?;
    for a in &mut alerts {
        a.clips = clips.query_map([a.id], |r| r.get(0))?.collect::<Result<_, _>>()?;
    }
    Ok(Json(alerts))
}
