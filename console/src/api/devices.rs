//! Device health and activity (indicators) reported by devices, and their listings for people.
//!
//! An activity batch is taken event by event (see [`activity`]): what happened to each event
//! is answered per event and kept in `activity.outcome`, which is also what the per-device
//! indicator rate limit counts, so a device cannot turn forged indicators into an unbounded
//! number of alerts and signed triggers.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use rearview_protocol::{
    ActivityAck, ActivityBatch, ActivityEvent, ActivityOutcome, ActivityResult, HealthReport,
};
use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::api::page::{Page, PageQuery};
use crate::auth::{Device, Person, Role};
use crate::error::ApiError;
use crate::policy::{self, IndicatorRule};
use crate::state::AppState;
use crate::store::now_ms;

/// At most this many events per activity batch.
const MAX_ACTIVITY_BATCH: usize = 1000;

pub async fn health(
    State(state): State<Arc<AppState>>,
    device: Device,
    Json(report): Json<HealthReport>,
) -> Result<StatusCode, ApiError> {
    let health =
        serde_json::to_string(&report).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let users =
        serde_json::to_string(&report.users).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if health.len() > 256 * 1024 {
        return Err(ApiError::bad_request("health report larger than 256 KiB"));
    }
    state.store.conn().execute(
        "UPDATE devices SET health_json = ?1, users_json = ?2, policy_version = ?3, last_seen_ms = ?4 WHERE id = ?5",
        params![health, users, report.policy_version as i64, now_ms(), device.id],
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks one event; the reason when it cannot be stored.
fn event_refusal(e: &ActivityEvent) -> Option<String> {
    if e.user.is_empty() || e.user.len() > 256 {
        Some("user must be 1 to 256 bytes".into())
    } else if e.kind.as_str().is_empty() || e.kind.as_str().len() > 128 {
        Some("kind must be 1 to 128 bytes".into())
    } else {
        None
    }
}

/// Events of `device_id` received since `since_ms` that issued a trigger (the rate limit's
/// count; the database holds it, so it holds across restarts and replicas).
fn triggered_since(
    conn: &rusqlite::Connection,
    device_id: &str,
    since_ms: i64,
) -> Result<u32, ApiError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM activity WHERE device_id = ?1 AND received_ms > ?2 AND outcome = ?3",
        params![device_id, since_ms, ActivityOutcome::Triggered.as_str()],
        |r| r.get(0),
    )?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// `POST /api/v1/device/activity` (a device; trusts nothing of the batch but that the device
/// sent it). Events are taken one by one: an invalid one is refused alone, every other one is
/// stored, and one matching a rule issues a trigger when its user is approved, the trigger is
/// within the policy's bounds, and the device is under its indicator rate limit
/// (`IngestLimits::indicator_triggers_per_minute`). Events over the limit are counted in the
/// answer, in the device listing and in the audit log (`indicator.rate_limited`).
pub async fn activity(
    State(state): State<Arc<AppState>>,
    device: Device,
    Json(batch): Json<ActivityBatch>,
) -> Result<Json<ActivityAck>, ApiError> {
    if batch.events.len() > MAX_ACTIVITY_BATCH {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ACTIVITY_BATCH} events per batch"
        )));
    }
    let rules = policy::rules(&state)?;
    let ctx = policy::TriggerContext::load(&state)?;
    let limit = state.ingest.limits.indicator_triggers_per_minute;
    let now = ctx.now;
    let mut results = Vec::with_capacity(batch.events.len());
    let mut pushes = Vec::new();
    let mut rate_limited = 0usize;
    {
        let mut conn = state.store.conn();
        let mut tx = conn.transaction()?;
        let mut budget = limit.saturating_sub(triggered_since(&tx, &device.id, now - 60_000)?);
        for e in &batch.events {
            if let Some(why) = event_refusal(e) {
                results.push(ActivityResult {
                    outcome: ActivityOutcome::Invalid,
                    trigger_ids: vec![],
                    reason: Some(why),
                });
                continue;
            }
            tx.execute(
                "INSERT INTO activity (device_id, user, kind, time_ms, details_json, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![device.id, e.user, e.kind.as_str(), e.time_ms, e.details.to_string(), now],
            )?;
            let activity_id = tx.last_insert_rowid();
            let mut result = ActivityResult {
                outcome: ActivityOutcome::Stored,
                trigger_ids: vec![],
                reason: None,
            };
            if let Some(rule) = rules.iter().find(|r: &&IndicatorRule| r.kind == e.kind.as_str()) {
                if policy::approval_of(&ctx.in_force, &e.user).is_none() {
                    tracing::info!(user = ?e.user, kind = ?e.kind, "indicator for a user without approval: no trigger");
                    result.outcome = ActivityOutcome::NotApproved;
                } else if budget == 0 {
                    result.outcome = ActivityOutcome::RateLimited;
                    rate_limited += 1;
                } else {
                    let req = trigger_request(&device, rule, e, activity_id);
                    // A refused trigger rolls back its alert, and only its alert.
                    let sp = tx.savepoint()?;
                    match ctx.write(&sp, &state.tenant, &format!("rule:{}", rule.kind), &req) {
                        Ok(written) => {
                            sp.commit()?;
                            budget -= 1;
                            result.outcome = ActivityOutcome::Triggered;
                            result.trigger_ids = written.issued.trigger_ids;
                            pushes.extend(written.pushes);
                        }
                        Err(err) if err.status.is_client_error() => {
                            drop(sp);
                            result.outcome = ActivityOutcome::TriggerRefused;
                            result.reason = Some(err.message);
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            tx.execute(
                "UPDATE activity SET outcome = ?1 WHERE id = ?2",
                params![result.outcome.as_str(), activity_id],
            )?;
            results.push(result);
        }
        if rate_limited > 0 {
            crate::store::audit_in(
                &tx,
                &format!("device:{}", device.id),
                "indicator.rate_limited",
                &format!("device:{}", device.id),
                serde_json::json!({ "count": rate_limited, "limit_per_minute": limit }),
            )?;
        }
        tx.commit()?;
    }
    if rate_limited > 0 {
        tracing::warn!(device = ?device.id, count = rate_limited, limit_per_minute = limit,
                       "indicators over the device's rate limit: no triggers for them");
    }
    policy::push_triggers(&state, pushes);
    let accepted = results.iter().filter(|r| r.outcome != ActivityOutcome::Invalid).count();
    let triggers_issued = results.iter().flat_map(|r| r.trigger_ids.iter().cloned()).collect();
    Ok(Json(ActivityAck { accepted, triggers_issued, rate_limited, results }))
}

/// The trigger `rule` asks for around event `e` of `device`.
fn trigger_request(
    device: &Device,
    rule: &IndicatorRule,
    e: &ActivityEvent,
    activity_id: i64,
) -> policy::TriggerRequest {
    policy::TriggerRequest {
        user: e.user.clone(),
        event_time: e.time_ms,
        before: rule.before_secs,
        after: rule.after_secs,
        // The trigger's "object": the file (or whatever the indicator names).
        reason: ["file", "path", "object"]
            .iter()
            .find_map(|k| e.details.get(*k).and_then(|v| v.as_str()))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("activity {activity_id}")),
        device: Some(device.id.clone()),
        indicator: Some(e.kind.to_string()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: String,
    pub hostname: String,
    pub enrolled_ms: i64,
    pub last_seen_ms: i64,
    /// Policy version the device last reported running.
    pub policy_version: i64,
    /// Policy version the console currently issues.
    pub current_policy_version: u64,
    pub connected: bool,
    pub health: serde_json::Value,
    /// Indicator events of this device that were over its rate limit (issued nothing).
    #[serde(default)]
    pub indicators_over_limit: i64,
}

/// `GET /api/v1/devices` (admin, investigator): in enrollment order, in pages.
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<PageQuery>,
) -> Result<Page<DeviceView>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let page = q.parse()?;
    let current = state.store.policy_version()?;
    let conn = state.store.conn();
    let mut stmt = conn.prepare(
        "SELECT rowid, id, hostname, enrolled_ms, last_seen_ms, policy_version, health_json,
                (SELECT COUNT(*) FROM activity a WHERE a.device_id = devices.id AND a.outcome = ?3)
         FROM devices WHERE ?1 IS NULL OR rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(
            params![page.after, page.sql_limit(), ActivityOutcome::RateLimited.as_str()],
            |r| {
                let id: String = r.get(1)?;
                let health: String = r.get(6)?;
                Ok((
                    r.get(0)?,
                    DeviceView {
                        connected: state.hub.is_connected(&id),
                        id,
                        hostname: r.get(2)?,
                        enrolled_ms: r.get(3)?,
                        last_seen_ms: r.get(4)?,
                        policy_version: r.get(5)?,
                        current_policy_version: current,
                        health: serde_json::from_str(&health).unwrap_or(serde_json::Value::Null),
                        indicators_over_limit: r.get(7)?,
                    },
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, page))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ActivityView {
    pub id: i64,
    pub device_id: String,
    pub user: String,
    pub kind: String,
    pub time_ms: i64,
    pub details: serde_json::Value,
    /// What the console did with it (`stored`, `triggered`, `rate_limited`, …); absent for
    /// events older consoles received.
    #[serde(default)]
    pub outcome: Option<String>,
}

/// `GET /api/v1/activity` (admin, investigator): newest first, in pages.
pub async fn list_activity(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<PageQuery>,
) -> Result<Page<ActivityView>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let page = q.parse()?;
    let conn = state.store.conn();
    let mut stmt = conn.prepare(
        "SELECT id, device_id, user, kind, time_ms, details_json, outcome FROM activity
         WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![page.after, page.sql_limit()], |r| {
            let details: String = r.get(5)?;
            Ok((
                r.get(0)?,
                ActivityView {
                    id: r.get(0)?,
                    device_id: r.get(1)?,
                    user: r.get(2)?,
                    kind: r.get(3)?,
                    time_ms: r.get(4)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    outcome: r.get(6)?,
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, page))
}

pub async fn ack_trigger(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let changed = state.store.conn().execute(
        "UPDATE triggers SET acked_ms = COALESCE(acked_ms, ?1) WHERE id = ?2 AND device_id = ?3",
        params![now_ms(), id, device.id],
    )?;
    if changed == 0 {
        return Err(ApiError::not_found(format!("no trigger {id} for this device")));
    }
    Ok(StatusCode::NO_CONTENT)
}
