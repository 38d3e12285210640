//! Clip review (people): the clip listing, in pages and filtered, and one clip by id.
//!
//! ```text
//! GET /api/v1/clips?limit=&after=&alert=&trigger=&user=&device=&complete=   admin, investigator
//!     oldest first (cursor: the clip's rowid); user matches case-insensitively
//! GET /api/v1/clips/{id}                                                    admin, investigator
//! ```
//!
//! Both read only the rows they answer: one clip is one row, a page at most `limit` rows, so a
//! large or damaged clip elsewhere never weighs on (or breaks) another answer.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use rearview_protocol::{CaptureMode, ClipManifest};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::api::page::{page_request, Page};
use crate::auth::{Person, Role};
use crate::error::{ApiError, ConsoleError};
use crate::state::AppState;

/// A clip as people see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipView {
    pub id: String,
    pub device_id: String,
    pub user: String,
    pub mode: String,
    pub trigger_id: Option<String>,
    pub alert_id: Option<i64>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub created_ms: i64,
    pub complete: bool,
    pub complete_ms: Option<i64>,
    pub manifest: ClipManifest,
}

const COLUMNS: &str = "rowid, id, device_id, user, mode, trigger_id, alert_id, start_ms, end_ms, \
                       created_ms, complete_ms, manifest_json";

/// A row of [`COLUMNS`] as (cursor, clip, stored manifest text).
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, ClipView, String)> {
    let complete_ms: Option<i64> = r.get(10)?;
    Ok((
        r.get(0)?,
        ClipView {
            id: r.get(1)?,
            device_id: r.get(2)?,
            user: r.get(3)?,
            mode: r.get(4)?,
            trigger_id: r.get(5)?,
            alert_id: r.get(6)?,
            start_ms: r.get(7)?,
            end_ms: r.get(8)?,
            created_ms: r.get(9)?,
            complete: complete_ms.is_some(),
            complete_ms,
            manifest: ClipManifest {
                clip_id: String::new(),
                trigger_id: None,
                // A placeholder, as every field here: `with_manifest` puts the stored one.
                mode: CaptureMode::SpecificActivities,
                user: String::new(),
                device_id: String::new(),
                start_ms: 0,
                end_ms: 0,
                segments: vec![],
                missing: vec![],
                open: false,
            },
        },
        r.get(11)?,
    ))
}

fn with_manifest(
    (cursor, mut v, json): (i64, ClipView, String),
) -> Result<(i64, ClipView), ApiError> {
    v.manifest = serde_json::from_str(&json)
        .map_err(|e| ApiError::from(ConsoleError::Database(format!("clip {}: {e}", v.id))))?;
    Ok((cursor, v))
}

/// `GET /api/v1/clips` filters, as text (bad values get a message naming them).
#[derive(Debug, Default, Deserialize)]
pub struct ClipQuery {
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
    /// Only clips of this alert.
    #[serde(default)]
    pub alert: Option<String>,
    /// Only clips answering this trigger.
    #[serde(default)]
    pub trigger: Option<String>,
    /// Only clips of this user (case-insensitive, as principals compare).
    #[serde(default)]
    pub user: Option<String>,
    /// Only clips of this device.
    #[serde(default)]
    pub device: Option<String>,
    /// `true`: only complete clips; `false`: only incomplete ones.
    #[serde(default)]
    pub complete: Option<String>,
}

/// `GET /api/v1/clips` (admin, investigator).
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<ClipQuery>,
) -> Result<Page<ClipView>, ApiError> {
    person.require(&[Role::Investigator, Role::Admin])?;
    let page = page_request(q.limit.as_deref(), q.after.as_deref())?;
    let alert: Option<i64> = match q.alert.as_deref() {
        None => None,
        Some(a) => Some(a.trim().parse().map_err(|_| {
            ApiError::bad_request(format!("alert must be an alert id (a number), not {a:?}"))
        })?),
    };
    let complete: Option<bool> = match q.complete.as_deref().map(str::trim) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "complete must be true or false, not {other:?}"
            )))
        }
    };
    let conn = state.store.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM clips
         WHERE (?1 IS NULL OR rowid > ?1) AND (?2 IS NULL OR alert_id = ?2)
           AND (?3 IS NULL OR trigger_id = ?3) AND (?4 IS NULL OR user = ?4 COLLATE NOCASE)
           AND (?5 IS NULL OR device_id = ?5) AND (?6 IS NULL OR (complete_ms IS NOT NULL) = ?6)
         ORDER BY rowid LIMIT ?7"
    ))?;
    let rows = stmt
        .query_map(
            params![
                page.after,
                alert,
                q.trigger,
                q.user.as_deref().map(str::trim),
                q.device,
                complete,
                page.sql_limit()
            ],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let rows = rows.into_iter().map(with_manifest).collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, page))
}

/// `GET /api/v1/clips/{id}` (admin, investigator).
pub async fn get(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Json<ClipView>, ApiError> {
    person.require(&[Role::Investigator, Role::Admin])?;
    let found = state
        .store
        .conn()
        .query_row(&format!("SELECT {COLUMNS} FROM clips WHERE id = ?1"), [&id], row)
        .optional()?;
    match found {
        Some(found) => with_manifest(found).map(|(_, v)| Json(v)),
        None => Err(ApiError::not_found(format!("no clip {id}"))),
    }
}
