//! Clip ingest (devices) and clip review (people).
//!
//! The manifest arrives first; segments follow, each accepted only when a manifest of the same
//! device names it and its bytes hash to its name. A manifest is immutable once stored, except
//! an *open* one (a window still running, see [`ClipManifest`]), which the device extends with
//! the segments that closed since and finally closes, and an incomplete one whose device lost
//! segments it had not sent yet: it names them missing instead (audited as
//! `clip.segments_lost`), and the clip completes without them. A clip is complete when it is
//! closed and every segment it names is stored for its device.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use rearview_uploader::wire::{ClipManifest, ClipStatus, SegmentAck, MAX_SEGMENT_BYTES};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::api::approvals::MODES;
use crate::auth::{Device, Person, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{is_sha256_hex, now_ms, sha256_hex};

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
    if !MODES.contains(&manifest.mode.as_str()) {
        return Err(ApiError::bad_request("mode must be specific-activities or all-activities"));
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

/// Names `manifest`'s segments as the clip's (already named ones are kept).
fn name_segments(tx: &rusqlite::Transaction<'_>, manifest: &ClipManifest) -> Result<(), ApiError> {
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO clip_segments (clip_id, sha256) VALUES (?1, ?2)")?;
    for s in &manifest.segments {
        insert.execute(params![manifest.clip_id, s.sha256])?;
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
    let mut change = ManifestChange::None;
    match existing {
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
            // of an older open version, but covers each dropped one with a missing range.
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
                change = ManifestChange::Lost { lost, closed: stored.open && !manifest.open };
            } else if stored == manifest || stored.supersedes(&manifest) {
                // A repeat, or a late re-send of an older open version: nothing changes.
            } else if stored.extended_by(&manifest) {
                tx.execute(
                    "UPDATE clips SET manifest_json = ?1 WHERE id = ?2",
                    params![manifest_json(&manifest)?, clip_id],
                )?;
                name_segments(&tx, &manifest)?;
                change = ManifestChange::Extended {
                    added: manifest.segments.len() - stored.segments.len(),
                    closed: !manifest.open,
                };
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
        None => {
            let alert_id: Option<i64> = match &manifest.trigger_id {
                Some(t) => {
                    let row: Option<(String, i64)> = tx
                        .query_row(
                            "SELECT device_id, alert_id FROM triggers WHERE id = ?1",
                            [t],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    match row {
                        Some((d, alert)) if d == device.id => Some(alert),
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "trigger {t} was not issued to this device"
                            )))
                        }
                    }
                }
                None => None,
            };
            tx.execute(
                "INSERT INTO clips (id, device_id, trigger_id, alert_id, user, mode, start_ms, end_ms, manifest_json, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    clip_id,
                    device.id,
                    manifest.trigger_id,
                    alert_id,
                    manifest.user,
                    manifest.mode,
                    manifest.start_ms,
                    manifest.end_ms,
                    manifest_json(&manifest)?,
                    now_ms()
                ],
            )?;
            name_segments(&tx, &manifest)?;
            change = ManifestChange::Created;
        }
    }
    let status = status(&tx, &device.id, &clip_id)?;
    tx.commit()?;
    drop(conn);
    let actor = format!("device:{}", device.id);
    let target = format!("clip:{clip_id}");
    match change {
        ManifestChange::None => {}
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

pub async fn put_segment(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(sha256): Path<String>,
    body: Bytes,
) -> Result<Json<SegmentAck>, ApiError> {
    if !is_sha256_hex(&sha256) {
        return Err(ApiError::bad_request("segment name must be lowercase hex SHA-256"));
    }
    let (named, stored) = {
        let conn = state.store.conn();
        let named: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM clip_segments cs JOIN clips c ON c.id = cs.clip_id
             WHERE cs.sha256 = ?1 AND c.device_id = ?2)",
            params![sha256, device.id],
            |r| r.get(0),
        )?;
        let stored: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM segments WHERE device_id = ?1 AND sha256 = ?2)",
            params![device.id, sha256],
            |r| r.get(0),
        )?;
        (named, stored)
    };
    if !named {
        return Err(ApiError::conflict(format!(
            "no clip manifest of this device names segment {sha256}: send the manifest first"
        )));
    }
    let bytes_sha = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || sha256_hex(&body))
            .await
            .map_err(|e| ApiError::from(crate::error::ConsoleError::Io(e.to_string())))?
    };
    if bytes_sha != sha256 {
        return Err(ApiError::bad_request(format!(
            "segment bytes hash to {bytes_sha}, not {sha256}: the upload was damaged, send it again"
        )));
    }
    let newly_stored = !stored;
    if newly_stored {
        let path = state.store.blob_path(&device.id, &sha256);
        let size = body.len();
        tokio::task::spawn_blocking(move || write_blob(&path, &body))
            .await
            .map_err(|e| ApiError::from(crate::error::ConsoleError::Io(e.to_string())))??;
        state.store.conn().execute(
            "INSERT OR IGNORE INTO segments (device_id, sha256, size, stored_ms) VALUES (?1, ?2, ?3, ?4)",
            params![device.id, sha256, size as i64, now_ms()],
        )?;
    }
    let conn = state.store.conn();
    let clips: Vec<String> = {
        let mut stmt = conn.prepare_cached(
            "SELECT c.id FROM clips c JOIN clip_segments cs ON cs.clip_id = c.id
             WHERE cs.sha256 = ?1 AND c.device_id = ?2 AND c.complete_ms IS NULL",
        )?;
        let rows = stmt
            .query_map(params![sha256, device.id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        rows
    };
    let mut completed_clips = Vec::new();
    for clip in clips {
        if status(&conn, &device.id, &clip)?.complete {
            completed_clips.push(clip);
        }
    }
    drop(conn);
    for clip in &completed_clips {
        state.store.audit(
            &format!("device:{}", device.id),
            "clip.complete",
            &format!("clip:{clip}"),
            serde_json::Value::Null,
        )?;
    }
    Ok(Json(SegmentAck { sha256, newly_stored, completed_clips }))
}

/// Writes a blob so that a crash leaves either nothing or all of it.
fn write_blob(path: &std::path::Path, bytes: &[u8]) -> Result<(), ApiError> {
    let io = |e: std::io::Error| {
        ApiError::from(crate::error::ConsoleError::Io(format!("{}: {e}", path.display())))
    };
    let dir = path.parent().ok_or_else(|| ApiError::bad_request("bad blob path"))?;
    crate::private::create_dir(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
        rand::random::<u64>()
    ));
    let mut f = crate::private::create_new_file(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

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

/// Every clip, oldest first (also used by the local `clip list`).
pub fn list_clips(state: &AppState) -> Result<Vec<ClipView>, ApiError> {
    let conn = state.store.conn();
    let mut stmt = conn.prepare(
        "SELECT id, device_id, user, mode, trigger_id, alert_id, start_ms, end_ms, created_ms, complete_ms, manifest_json
         FROM clips ORDER BY created_ms, id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let complete_ms: Option<i64> = r.get(9)?;
            let json: String = r.get(10)?;
            Ok((
                ClipView {
                    id: r.get(0)?,
                    device_id: r.get(1)?,
                    user: r.get(2)?,
                    mode: r.get(3)?,
                    trigger_id: r.get(4)?,
                    alert_id: r.get(5)?,
                    start_ms: r.get(6)?,
                    end_ms: r.get(7)?,
                    created_ms: r.get(8)?,
                    complete: complete_ms.is_some(),
                    complete_ms,
                    manifest: ClipManifest {
                        clip_id: String::new(),
                        trigger_id: None,
                        mode: String::new(),
                        user: String::new(),
                        device_id: String::new(),
                        start_ms: 0,
                        end_ms: 0,
                        segments: vec![],
                        missing: vec![],
                        open: false,
                    },
                },
                json,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(mut v, json)| {
            v.manifest = serde_json::from_str(&json).map_err(|e| {
                ApiError::from(crate::error::ConsoleError::Database(format!("clip {}: {e}", v.id)))
            })?;
            Ok(v)
        })
        .collect()
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<Vec<ClipView>>, ApiError> {
    person.require(&[Role::Investigator, Role::Admin])?;
    list_clips(&state).map(Json)
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Json<ClipView>, ApiError> {
    person.require(&[Role::Investigator, Role::Admin])?;
    list_clips(&state)?
        .into_iter()
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no clip {id}")))
}

/// Hashes named by clips whose blobs are present — used by export to refuse partial clips.
pub fn stored_segments(state: &AppState, device_id: &str) -> Result<HashSet<String>, ApiError> {
    let conn = state.store.conn();
    let mut stmt = conn.prepare("SELECT sha256 FROM segments WHERE device_id = ?1")?;
    let rows =
        stmt.query_map([device_id], |r| r.get(0))?.collect::<Result<HashSet<String>, _>>()?;
    Ok(rows)
}
