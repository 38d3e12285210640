//! Clip ingest from devices (people review clips through [`crate::api::clips`]).
//!
//! The manifest arrives first; segments follow, each accepted only when a manifest of the same
//! device names it and its bytes hash to its name. A manifest is immutable once stored, except
//! an *open* one (a window still running, see [`ClipManifest`]), which the device extends with
//! the segments that closed since and finally closes, and an incomplete one whose device lost
//! segments it had not sent yet: it names them missing instead (audited as
//! `clip.segments_lost`), and the clip completes without them. A clip is complete when it is
//! closed and every segment it names is stored for its device.
//!
//! Nothing a device claims is taken on its word: every new or extended manifest is checked
//! against the console's approvals and triggers ([`checks`]; refused with 409, which the
//! uploader takes as a refusal of that clip alone and sets it aside, and audited as
//! `clip.refused`), and segment bodies are streamed to disk under a per-device cap on uploads
//! in flight ([`upload`], [`IngestLimits`]).

pub mod checks;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::{ClipManifest, ClipStatus, MAX_SEGMENT_BYTES};
use rusqlite::{params, OptionalExtension};

use crate::auth::Device;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{is_sha256_hex, now_ms};

pub use upload::put_segment;

/// What one device may ask of the console at once, so no enrolled device can exhaust it.
/// Set per console (`serve` flags); the defaults suit a fleet of ordinary desktops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestLimits {
    /// Segment uploads one device may have in flight; more are answered 429 with Retry-After
    /// (the uploader sends one at a time, so only a misbehaving device meets this).
    pub uploads_per_device: usize,
    /// Indicator events per device per minute that may become alerts and triggers; the rest
    /// are stored as activity, counted and reported, and issue nothing.
    pub indicator_triggers_per_minute: u32,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits { uploads_per_device: 4, indicator_triggers_per_minute: 30 }
    }
}

impl IngestLimits {
    /// Refuses limits that would stop every device (the CLI and library callers alike).
    pub fn validate(&self) -> Result<(), String> {
        if self.uploads_per_device == 0 {
            return Err("uploads per device must be at least 1".into());
        }
        Ok(())
    }
}

/// The ingest side's share of the server state: its limits and the uploads in flight.
#[derive(Debug, Default)]
pub struct IngestState {
    pub limits: IngestLimits,
    /// One semaphore per device that has uploaded since the start, `uploads_per_device` wide.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl IngestState {
    pub fn new(limits: IngestLimits) -> IngestState {
        IngestState { limits, uploads: Mutex::default() }
    }

    /// A permit for one more upload of `device_id`, unless it has as many in flight as allowed.
    fn try_upload(&self, device_id: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(device_id.to_owned())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(self.limits.uploads_per_device))
                })
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// At most this many segments in one clip (a 1-hour window of 2-second segments on 4 monitors).
const MAX_CLIP_SEGMENTS: usize = 8192;

fn validate(manifest: &ClipManifest, clip_id: &str, device: &Device) -> Result<(), ApiError> {
    if manifest.clip_id != clip_id {
        return Err(ApiError::bad_request("clip_id in the body differs from the one in the path"));
    }
    if clip_id.is_empty()
        || clip_id.len() > 128
        || !clip_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request("clip_id must be 1 to 128 of [A-Za-z0-9_-]"));
    }
    if manifest.device_id != device.id {
        return Err(ApiError::forbidden(format!(
            "manifest names device {} but you are {}",
            manifest.device_id, device.id
        )));
    }
    if manifest.user.is_empty() || manifest.user.len() > 256 {
        return Err(ApiError::bad_request("user must be 1 to 256 characters"));
    }
    if manifest.start_ms > manifest.end_ms {
        return Err(ApiError::bad_request("start_ms is after end_ms"));
    }
    if manifest.segments.len() > MAX_CLIP_SEGMENTS {
        return Err(ApiError::bad_request(format!(
            "a clip names at most {MAX_CLIP_SEGMENTS} segments"
        )));
    }
    for s in &manifest.segments {
        if !is_sha256_hex(&s.sha256) {
            return Err(ApiError::bad_request(format!(
                "segment name {:?} is not lowercase hex SHA-256",
                s.sha256
            )));
        }
        if s.size == 0 || s.size > MAX_SEGMENT_BYTES as u64 {
            return Err(ApiError::bad_request(format!(
                "segment {} has size {} (1..={MAX_SEGMENT_BYTES})",
                s.sha256, s.size
            )));
        }
    }
    Ok(())
}

/// Hashes of `clip_id` (of `device_id`) not yet stored.
fn missing(
    conn: &rusqlite::Connection,
    device_id: &str,
    clip_id: &str,
) -> Result<Vec<String>, ApiError> {
    let mut stmt = conn.prepare_cached(
        "SELECT cs.sha256 FROM clip_segments cs
         LEFT JOIN segments s ON s.device_id = ?1 AND s.sha256 = cs.sha256
         WHERE cs.clip_id = ?2 AND s.sha256 IS NULL ORDER BY cs.sha256",
    )?;
    let rows = stmt
        .query_map(params![device_id, clip_id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

/// The clip's status; marks it complete (once) when it is closed and nothing is missing.
fn status(
    conn: &rusqlite::Connection,
    device_id: &str,
    clip_id: &str,
) -> Result<ClipStatus, ApiError> {
    let missing = missing(conn, device_id, clip_id)?;
    let open: bool = conn.query_row(
        "SELECT COALESCE(json_extract(manifest_json, '$.open'), 0) FROM clips WHERE id = ?1",
        [clip_id],
        |r| r.get(0),
    )?;
    let complete = missing.is_empty() && !open;
    if complete {
        conn.execute(
            "UPDATE clips SET complete_ms = ?1 WHERE id = ?2 AND complete_ms IS NULL",
            params![now_ms(), clip_id],
        )?;
    }
    Ok(ClipStatus { clip_id: clip_id.to_owned(), complete, missing })
}

/// Names `manifest`'s segments as the clip's, with their sizes (already named ones are kept).
fn name_segments(tx: &rusqlite::Transaction<'_>, manifest: &ClipManifest) -> Result<(), ApiError> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO clip_segments (clip_id, sha256, size) VALUES (?1, ?2, ?3)",
    )?;
    for s in &manifest.segments {
        insert.execute(params![manifest.clip_id, s.sha256, s.size as i64])?;
    }
    Ok(())
}

fn manifest_json(manifest: &ClipManifest) -> Result<String, ApiError> {
    serde_json::to_string(manifest).map_err(|e| ApiError::bad_request(format!("manifest: {e}")))
}

/// What a manifest request changed, for the audit log.
enum ManifestChange {
    None,
    Created,
    Extended {
        added: usize,
        closed: bool,
    },
    /// The device lost these segments before sending them; they are named missing now.
    Lost {
        lost: Vec<String>,
        closed: bool,
    },
    /// Nothing: [`checks::check_manifest`] refused it, and why.
    Refused(String),
}

/// The segments `next` gives up as lost on the device, when that is all (besides what an
/// open clip may do anyway) it changes about the incomplete `stored`; see
/// [`ClipManifest::gives_up_lost`]. `None`: not such a revision (a complete clip never is).
fn lost_on_device(
    tx: &rusqlite::Transaction<'_>,
    device_id: &str,
    stored: &ClipManifest,
    next: &ClipManifest,
    complete: bool,
) -> Result<Option<Vec<String>>, ApiError> {
    if complete {
        return Ok(None);
    }
    let kept: HashSet<&str> = next.segments.iter().map(|s| s.sha256.as_str()).collect();
    let dropped: Vec<String> = stored
        .segments
        .iter()
        .filter(|s| !kept.contains(s.sha256.as_str()))
        .map(|s| s.sha256.clone())
        .collect();
    let mut is_held = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM segments WHERE device_id = ?1 AND sha256 = ?2)",
    )?;
    let mut held = HashSet::new();
    for sha in &dropped {
        if is_held.query_row(params![device_id, sha], |r| r.get::<_, bool>(0))? {
            held.insert(sha.as_str());
        }
    }
    Ok(stored.gives_up_lost(next, |sha| held.contains(sha)).then_some(dropped))
}

/// `PUT /api/v1/device/clips/{clip_id}` (a device, about its own clips only): stores a new
/// manifest or extends an open one, after [`checks::check_manifest`]; trusts nothing in it.
pub async fn put_manifest(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(clip_id): Path<String>,
    body: Bytes,
) -> Result<Json<ClipStatus>, ApiError> {
    let manifest: ClipManifest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("manifest is not a valid clip manifest: {e}"))
    })?;
    validate(&manifest, &clip_id, &device)?;
    let bounds = crate::policy::bounds(&state)?;
    let now = now_ms();
    let check = |conn: &rusqlite::Connection| {
        checks::check_manifest(conn, &bounds, &device.id, &manifest, now)
    };
    let mut conn = state.store.conn();
    let tx = conn.transaction()?;
    let existing: Option<(String, String, bool)> = tx
        .query_row(
            "SELECT device_id, manifest_json, complete_ms IS NOT NULL FROM clips WHERE id = ?1",
            [&clip_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let was_complete = existing.as_ref().is_some_and(|(_, _, complete)| *complete);
    let change = match existing {
        // Clip ids are one namespace across devices. Taken by another device is a conflict of
        // this clip alone (the device sets it aside), not a refusal of the device (which would
        // hold up everything it has to send); the answer says nothing about the owner.
        Some((owner, ..)) if owner != device.id => {
            return Err(ApiError::conflict(format!(
                "clip id {clip_id} is already taken; a clip needs an id of its own"
            )));
        }
        Some((_, json, _)) => {
            let stored: ClipManifest = serde_json::from_str(&json).map_err(|e| {
                ApiError::from(crate::error::ConsoleError::Database(format!("clip {clip_id}: {e}")))
            })?;
            // Asked first: giving up lost segments names fewer of them, like a late re-send
            // of an older open version, but covers each dropped one with a missing range. It
            // changes nothing the checks judged (user, mode, trigger, window), so they are not
            // asked again.
            if let Some(lost) = lost_on_device(&tx, &device.id, &stored, &manifest, was_complete)? {
                tx.execute(
                    "UPDATE clips SET manifest_json = ?1 WHERE id = ?2",
                    params![manifest_json(&manifest)?, clip_id],
                )?;
                name_segments(&tx, &manifest)?;
                let mut unname = tx.prepare_cached(
                    "DELETE FROM clip_segments WHERE clip_id = ?1 AND sha256 = ?2",
                )?;
                for sha in &lost {
                    unname.execute(params![clip_id, sha])?;
                }
                ManifestChange::Lost { lost, closed: stored.open && !manifest.open }
            } else if stored == manifest || stored.supersedes(&manifest) {
                // A repeat, or a late re-send of an older open version: nothing changes.
                ManifestChange::None
            } else if stored.extended_by(&manifest) {
                match check(&tx)? {
                    checks::Verdict::Refused(why) => ManifestChange::Refused(why),
                    checks::Verdict::Accepted { .. } => {
                        tx.execute(
                            "UPDATE clips SET manifest_json = ?1 WHERE id = ?2",
                            params![manifest_json(&manifest)?, clip_id],
                        )?;
                        name_segments(&tx, &manifest)?;
                        ManifestChange::Extended {
                            added: manifest.segments.len() - stored.segments.len(),
                            closed: !manifest.open,
                        }
                    }
                }
            } else if stored.open {
                return Err(ApiError::conflict(format!(
                    "clip {clip_id} is open: an update may only add segments and close it, \
                     keeping its other fields and every segment already named"
                )));
            } else {
                return Err(ApiError::conflict(format!(
                    "clip {clip_id} already has a different manifest; a closed clip's manifest cannot change"
                )));
            }
        }
        None => match check(&tx)? {
            checks::Verdict::Refused(why) => ManifestChange::Refused(why),
            checks::Verdict::Accepted { alert_id } => {
                tx.execute(
                    "INSERT INTO clips (id, device_id, trigger_id, alert_id, user, mode, start_ms, end_ms, manifest_json, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        clip_id,
                        device.id,
                        manifest.trigger_id,
                        alert_id,
                        manifest.user,
                        capture_mode_name(manifest.mode),
                        manifest.start_ms,
                        manifest.end_ms,
                        manifest_json(&manifest)?,
                        now
                    ],
                )?;
                name_segments(&tx, &manifest)?;
                ManifestChange::Created
            }
        },
    };
    let actor = format!("device:{}", device.id);
    let target = format!("clip:{clip_id}");
    if let ManifestChange::Refused(why) = change {
        drop(tx);
        drop(conn);
        tracing::warn!(device = ?device.id, clip = ?clip_id, reason = ?why, "clip manifest refused");
        state.store.audit(
            &actor,
            "clip.refused",
            &target,
            serde_json::json!({ "reason": why, "user": manifest.user, "mode": manifest.mode,
                                "trigger": manifest.trigger_id }),
        )?;
        return Err(ApiError::conflict(format!("clip {clip_id} refused: {why}")));
    }
    let status = status(&tx, &device.id, &clip_id)?;
    tx.commit()?;
    drop(conn);
    match change {
        ManifestChange::None | ManifestChange::Refused(_) => {}
        ManifestChange::Created => state.store.audit(
            &actor,
            "clip.manifest",
            &target,
            serde_json::json!({ "user": manifest.user, "segments": manifest.segments.len(), "trigger": manifest.trigger_id, "open": manifest.open }),
        )?,
        // Segments added to an open clip are not audited one by one (one every few seconds);
        // its closing is, with the final count.
        ManifestChange::Extended { closed: false, .. } => {}
        ManifestChange::Lost { lost, closed } => state.store.audit(
            &actor,
            "clip.segments_lost",
            &target,
            serde_json::json!({ "lost": lost, "closed": closed, "segments": manifest.segments.len(), "missing_ranges": manifest.missing.len() }),
        )?,
        ManifestChange::Extended { added, closed: true } => state.store.audit(
            &actor,
            "clip.closed",
            &target,
            serde_json::json!({ "segments": manifest.segments.len(), "added": added, "missing_ranges": manifest.missing.len() }),
        )?,
    }
    if status.complete && !was_complete {
        state.store.audit(&actor, "clip.complete", &target, serde_json::Value::Null)?;
    }
    Ok(Json(status))
}

pub async fn get_status(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(clip_id): Path<String>,
) -> Result<Json<ClipStatus>, ApiError> {
    let conn = state.store.conn();
    let owner: Option<String> = conn
        .query_row("SELECT device_id FROM clips WHERE id = ?1", [&clip_id], |r| r.get(0))
        .optional()?;
    match owner {
        Some(o) if o == device.id => Ok(Json(status(&conn, &device.id, &clip_id)?)),
        // Same answer whether the clip is another device's or does not exist: a device learns
        // nothing about other devices' clips.
        _ => Err(ApiError::not_found(format!("no clip {clip_id} from this device"))),
    }
}

/// Removes uploads a stopped console left in flight (`serve` calls it before taking any).
pub fn clear_incoming(state: &AppState) {
    let dir = state.store.incoming_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        if let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(file = ?e.path(), error = ?err.to_string(), "stale upload not removed");
        }
    }
}
