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
use serde::{Deserialize, Serialize};

use crate::api::page::{Page, PageQuery};
use crate::auth::{Device, Person, Role};
use crate::error::ApiError;
use crate::policy::{self, IndicatorRule};
use crate::state::AppState;
use crate::store::devices::{ActivityRow, HealthRow};
use crate::store::{now_ms, Tx};

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
    let row = move |tx: &Tx<'_>| {
        let h = HealthRow {
            health_json: &health,
            users_json: &users,
            policy_version: report.policy_version as i64,
            seen_ms: now_ms(),
        };
        tx.set_health(&device.id, &h)
    };
    state.store.write(row).await?;
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
    let limit = state.ingest.limits.indicator_triggers_per_minute;
    let taken = {
        let state = state.clone();
        let device = device.clone();
        state.clone().store.write(move |tx| take_activity(tx, &state, &device, &batch)).await?
    };
    if taken.rate_limited > 0 {
        tracing::warn!(device = ?device.id, count = taken.rate_limited, limit_per_minute = limit,
                       "indicators over the device's rate limit: no triggers for them");
    }
    policy::push_triggers(&state, taken.pushes);
    let results = taken.results;
    let accepted = results.iter().filter(|r| r.outcome != ActivityOutcome::Invalid).count();
    let triggers_issued = results.iter().flat_map(|r| r.trigger_ids.iter().cloned()).collect();
    Ok(Json(ActivityAck { accepted, triggers_issued, rate_limited: taken.rate_limited, results }))
}

/// What [`take_activity`] did with a batch.
struct Taken {
    results: Vec<ActivityResult>,
    /// Triggers to push once the transaction is committed.
    pushes: Vec<policy::TriggerPush>,
    rate_limited: usize,
}

/// Stores `batch` event by event in `tx`, issuing the triggers its rules ask for (each in a
/// savepoint: a refused trigger rolls back its alert, and only its alert).
fn take_activity(
    tx: &Tx<'_>,
    state: &AppState,
    device: &Device,
    batch: &ActivityBatch,
) -> Result<Taken, ApiError> {
    let rules = policy::rules(tx)?;
    let ctx = policy::TriggerContext::load(tx)?;
    let limit = state.ingest.limits.indicator_triggers_per_minute;
    let now = ctx.now;
    let mut taken = Taken {
        results: Vec::with_capacity(batch.events.len()),
        pushes: Vec::new(),
        rate_limited: 0,
    };
    let mut budget = limit.saturating_sub(tx.triggered_since(&device.id, now - 60_000)?);
    for e in &batch.events {
        if let Some(why) = event_refusal(e) {
            taken.results.push(ActivityResult {
                outcome: ActivityOutcome::Invalid,
                trigger_ids: vec![],
                reason: Some(why),
            });
            continue;
        }
        let activity_id = tx.insert_activity(&ActivityRow {
            device_id: &device.id,
            user: &e.user,
            kind: e.kind.as_str(),
            time_ms: e.time_ms.millis(),
            details_json: &e.details.to_string(),
            received_ms: now,
        })?;
        let mut result =
            ActivityResult { outcome: ActivityOutcome::Stored, trigger_ids: vec![], reason: None };
        if let Some(rule) = rules.iter().find(|r: &&IndicatorRule| r.kind == e.kind.as_str()) {
            if policy::approval_of(&ctx.in_force, &e.user).is_none() {
                tracing::info!(user = ?e.user, kind = ?e.kind, "indicator for a user without approval: no trigger");
                result.outcome = ActivityOutcome::NotApproved;
            } else if budget == 0 {
                result.outcome = ActivityOutcome::RateLimited;
                taken.rate_limited += 1;
            } else {
                let req = trigger_request(device, rule, e, activity_id);
                let actor = format!("rule:{}", rule.kind);
                match tx.savepoint(|sp| ctx.write(sp, &state.tenant, &actor, &req)) {
                    Ok(written) => {
                        budget -= 1;
                        result.outcome = ActivityOutcome::Triggered;
                        result.trigger_ids = written.issued.trigger_ids;
                        taken.pushes.extend(written.pushes);
                    }
                    Err(err) if err.status.is_client_error() => {
                        result.outcome = ActivityOutcome::TriggerRefused;
                        result.reason = Some(err.message);
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        tx.set_activity_outcome(activity_id, result.outcome)?;
        taken.results.push(result);
    }
    if taken.rate_limited > 0 {
        tx.audit(
            &format!("device:{}", device.id),
            "indicator.rate_limited",
            &format!("device:{}", device.id),
            serde_json::json!({ "count": taken.rate_limited, "limit_per_minute": limit }),
        )?;
    }
    Ok(taken)
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
        event_time: e.time_ms.millis(),
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
    let (current, mut rows) = state
        .store
        .read(move |tx| Ok::<_, ApiError>((tx.policy_version()?, tx.devices_page(page)?)))
        .await?;
    for (_, d) in &mut rows {
        d.connected = state.hub.is_connected(&d.id);
        d.current_policy_version = current;
    }
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
    let rows = state.store.read(move |tx| tx.activity_page(page)).await?;
    Ok(Page::from_rows(rows, page))
}

pub async fn ack_trigger(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let acked = {
        let id = id.clone();
        state.store.write(move |tx| tx.ack_trigger(&id, &device.id, now_ms())).await?
    };
    if !acked {
        return Err(ApiError::not_found(format!("no trigger {id} for this device")));
    }
    Ok(StatusCode::NO_CONTENT)
}
