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
use rearview_protocol::ClipManifest;
use serde::{Deserialize, Serialize};

use crate::api::page::{page_request, Page};
use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::clips::ClipFilter;

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
    let filter = ClipFilter { alert, trigger: q.trigger, user: q.user, device: q.device, complete };
    let rows = state.store.read(move |tx| tx.clips_page(page, &filter)).await?;
    Ok(Page::from_rows(rows, page))
}

/// `GET /api/v1/clips/{id}` (admin, investigator).
pub async fn get(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Json<ClipView>, ApiError> {
    person.require(&[Role::Investigator, Role::Admin])?;
    let found = {
        let id = id.clone();
        state.store.read(move |tx| tx.clip(&id)).await?
    };
    match found {
        Some(clip) => Ok(Json(clip)),
        None => Err(ApiError::not_found(format!("no clip {id}"))),
    }
}
