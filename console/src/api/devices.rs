//! Device health and activity (indicators) reported by devices, and their listings for people.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rearview_uploader::wire::{ActivityAck, ActivityBatch, HealthReport};
use rusqlite::params;
use serde::{Deserialize, Serialize};

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
    for e in &batch.events {
        if e.user.is_empty() || e.kind.is_empty() || e.user.len() > 256 || e.kind.len() > 128 {
            return Err(ApiError::bad_request("every event needs a user (≤256) and a kind (≤128)"));
        }
    }
    let now = now_ms();
    let mut ids = Vec::with_capacity(batch.events.len());
    {
        let mut conn = state.store.conn();
        let tx = conn.transaction()?;
        for e in &batch.events {
            tx.execute(
                "INSERT INTO activity (device_id, user, kind, time_ms, details_json, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![device.id, e.user, e.kind, e.time_ms, e.details.to_string(), now],
            )?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
    }
    let rules = policy::rules(&state)?;
    let mut triggers_issued = Vec::new();
    for (event, activity_id) in batch.events.iter().zip(ids) {
        let Some(rule) = rules.iter().find(|r: &&IndicatorRule| r.kind == event.kind) else {
            continue;
        };
        if !policy::has_approval(&state, &event.user)? {
            tracing::info!(user = %event.user, kind = %event.kind, "indicator for a user without approval: no trigger");
            continue;
        }
        let issued = policy::issue_trigger(
            &state,
            &format!("rule:{}", rule.kind),
            &policy::TriggerRequest {
                user: event.user.clone(),
                event_time: event.time_ms,
                before: rule.before_secs,
                after: rule.after_secs,
                // The trigger's "object": the file (or whatever the indicator names).
                reason: ["file", "path", "object"]
                    .iter()
                    .find_map(|k| event.details.get(*k).and_then(|v| v.as_str()))
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("activity {activity_id}")),
                device: Some(device.id.clone()),
                indicator: Some(event.kind.clone()),
            },
        )?;
        triggers_issued.extend(issued.trigger_ids);
    }
    Ok(Json(ActivityAck { accepted: batch.events.len(), triggers_issued }))
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
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let current = state.store.policy_version()?;
    let conn = state.store.conn();
    let mut stmt = conn.prepare(
        "SELECT id, hostname, enrolled_ms, last_seen_ms, policy_version, health_json FROM devices ORDER BY enrolled_ms",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let id: String = r.get(0)?;
            let health: String = r.get(5)?;
            Ok(DeviceView {
                connected: state.hub.is_connected(&id),
                id,
                hostname: r.get(1)?,
                enrolled_ms: r.get(2)?,
                last_seen_ms: r.get(3)?,
                policy_version: r.get(4)?,
                current_policy_version: current,
                health: serde_json::from_str(&health).unwrap_or(serde_json::Value::Null),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(rows))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ActivityView {
    pub id: i64,
    pub device_id: String,
    pub user: String,
    pub kind: String,
    pub time_ms: i64,
    pub details: serde_json::Value,
}

pub async fn list_activity(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<ActivityView>>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    let conn = state.store.conn();
    let mut stmt =
        conn.prepare("SELECT id, device_id, user, kind, time_ms, details_json FROM activity ORDER BY id DESC LIMIT 10000")?;
    let rows = stmt
        .query_map([], |r| {
            let details: String = r.get(5)?;
            Ok(ActivityView {
                id: r.get(0)?,
                device_id: r.get(1)?,
                user: r.get(2)?,
                kind: r.get(3)?,
                time_ms: r.get(4)?,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(rows))
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
