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
//! against the console's approvals and triggers ([`checks`]) and its device-signed chain
//! against the enrolled device key and the entries accepted before ([`chain`]), and refused
//! with 409 otherwise (which the uploader takes as a refusal of that clip alone and sets it
//! aside), audited as `clip.refused` with the reason; segment bodies are streamed to disk under a per-device cap on uploads
//! in flight ([`upload`], [`IngestLimits`]).

pub mod chain;
pub mod checks;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::auth::Device;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::clips::{NewClip, StoredClip};
use crate::store::{is_sha256_hex, now_ms, Tx};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use rearview_protocol::{ClipManifest, ClipStatus, MAX_SEGMENT_BYTES};

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

/// The clip's status; marks it complete (once, audited as `clip.complete` in the same
/// transaction) when it is closed and nothing is missing.
fn status(tx: &Tx<'_>, device_id: &str, clip_id: &str) -> Result<ClipStatus, ApiError> {
    let missing = tx.missing_segments(device_id, clip_id)?;
    let complete = missing.is_empty() && !tx.clip_is_open(clip_id)?;
    if complete && tx.mark_complete(clip_id, now_ms())? {
        tx.audit(
            &format!("device:{device_id}"),
            "clip.complete",
            &format!("clip:{clip_id}"),
            serde_json::Value::Null,
        )?;
    }
    Ok(ClipStatus { clip_id: clip_id.to_owned(), complete, missing })
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
    tx: &Tx<'_>,
    device_id: &str,
    stored: &StoredClip,
    next: &ClipManifest,
) -> Result<Option<Vec<String>>, ApiError> {
    if stored.complete {
        return Ok(None);
    }
    let kept: HashSet<&str> = next.segments.iter().map(|s| s.sha256.as_str()).collect();
    let dropped: Vec<String> = stored
        .manifest
        .segments
        .iter()
        .filter(|s| !kept.contains(s.sha256.as_str()))
        .map(|s| s.sha256.clone())
        .collect();
    let mut held = HashSet::new();
    for sha in &dropped {
        if tx.segment_stored(device_id, sha)? {
            held.insert(sha.as_str());
        }
    }
    Ok(stored.manifest.gives_up_lost(next, |sha| held.contains(sha)).then_some(dropped))
}

/// `PUT /api/v1/device/clips/{clip_id}` (a device, about its own clips only): stores a new
/// manifest or extends an open one, after [`checks::check_manifest`]; trusts nothing in it.
/// The change, its audit lines and the clip's completion are one transaction.
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
    let now = now_ms();
    let taken = {
        let device = device.clone();
        let tenant = state.tenant.id.clone();
        state.store.write(move |tx| take_manifest(tx, &tenant, &device, &manifest, now)).await?
    };
    match taken {
        Ok(status) => Ok(Json(status)),
        Err(why) => {
            tracing::warn!(device = ?device.id, clip = ?clip_id, reason = ?why, "clip manifest refused");
            Err(ApiError::conflict(format!("clip {clip_id} refused: {why}")))
        }
    }
}

/// Judges and stores `manifest` in `tx`, with its audit lines: the clip's status, or why the
/// checks refused it (audited as `clip.refused`; nothing else changes then). A change that
/// is stored records its chain entries as accepted ([`chain::accept`]).
fn take_manifest(
    tx: &Tx<'_>,
    tenant: &str,
    device: &Device,
    manifest: &ClipManifest,
    now: i64,
) -> Result<Result<ClipStatus, String>, ApiError> {
    let clip_id = &manifest.clip_id;
    let bounds = crate::policy::bounds(tx)?;
    let stored = tx.stored_clip(clip_id)?;
    let earlier = stored.as_ref().map(|s| &s.manifest);
    let chained = || chain::refusal(tx, tenant, &device.id, manifest, earlier);
    let check = || match checks::check_manifest(tx, &bounds, &device.id, manifest, now)? {
        checks::Verdict::Accepted { alert_id } => Ok(match chained()? {
            Some(why) => checks::Verdict::Refused(why),
            None => checks::Verdict::Accepted { alert_id },
        }),
        refused => Ok(refused),
    };
    let change = match &stored {
        // Clip ids are one namespace across devices. Taken by another device is a conflict of
        // this clip alone (the device sets it aside), not a refusal of the device (which would
        // hold up everything it has to send); the answer says nothing about the owner.
        Some(stored) if stored.device_id != device.id => {
            return Err(ApiError::conflict(format!(
                "clip id {clip_id} is already taken; a clip needs an id of its own"
            )));
        }
        Some(stored) => revise(tx, &device.id, stored, manifest, check, chained)?,
        // Deleted on the console (retention, or a person): not made again from a late re-send;
        // the device sets it aside.
        None if tx.deleted_clip(clip_id)?.is_some() => {
            return Err(ApiError::conflict(format!(
                "clip {clip_id} was deleted on the console; it is not stored again"
            )));
        }
        None => match check()? {
            checks::Verdict::Refused(why) => ManifestChange::Refused(why),
            checks::Verdict::Accepted { alert_id } => {
                tx.insert_clip(&NewClip { manifest, alert_id, created_ms: now })?;
                ManifestChange::Created
            }
        },
    };
    let actor = format!("device:{}", device.id);
    let target = format!("clip:{clip_id}");
    if let ManifestChange::Refused(why) = change {
        tx.audit(
            &actor,
            "clip.refused",
            &target,
            serde_json::json!({ "reason": why, "user": manifest.user, "mode": manifest.mode,
                                "trigger": manifest.trigger_id }),
        )?;
        return Ok(Err(why));
    }
    if !matches!(change, ManifestChange::None) {
        chain::accept(tx, &device.id, manifest, now)?;
    }
    audit_change(tx, &actor, &target, manifest, change)?;
    Ok(Ok(status(tx, &device.id, clip_id)?))
}

/// What `manifest` does to the clip `stored` of `device_id` (stored in `tx`), or the conflict.
/// `check` judges an extension; `chained` the chain of a revision that gives up lost segments.
fn revise(
    tx: &Tx<'_>,
    device_id: &str,
    stored: &StoredClip,
    manifest: &ClipManifest,
    check: impl FnOnce() -> Result<checks::Verdict, ApiError>,
    chained: impl FnOnce() -> Result<Option<String>, ApiError>,
) -> Result<ManifestChange, ApiError> {
    let clip_id = &manifest.clip_id;
    let old = &stored.manifest;
    // Asked first: giving up lost segments names fewer of them, like a late re-send of an
    // older open version, but covers each dropped one with a missing range. It changes
    // nothing the checks judged (user, mode, trigger, window), so they are not asked again;
    // its chain is (the lost segments' entries now need absence notes).
    if let Some(lost) = lost_on_device(tx, device_id, stored, manifest)? {
        if let Some(why) = chained()? {
            return Ok(ManifestChange::Refused(why));
        }
        tx.update_manifest(manifest, &lost)?;
        return Ok(ManifestChange::Lost { lost, closed: old.open && !manifest.open });
    }
    if old == manifest || old.supersedes(manifest) {
        // A repeat, or a late re-send of an older open version: nothing changes.
        return Ok(ManifestChange::None);
    }
    if old.extended_by(manifest) {
        return Ok(match check()? {
            checks::Verdict::Refused(why) => ManifestChange::Refused(why),
            checks::Verdict::Accepted { .. } => {
                tx.update_manifest(manifest, &[])?;
                ManifestChange::Extended {
                    added: manifest.segments.len() - old.segments.len(),
                    closed: !manifest.open,
                }
            }
        });
    }
    Err(ApiError::conflict(if old.open {
        format!(
            "clip {clip_id} is open: an update may only add segments and close it, \
             keeping its other fields and every segment already named"
        )
    } else {
        format!(
            "clip {clip_id} already has a different manifest; a closed clip's manifest cannot change"
        )
    }))
}

/// The audit line of `change` (none for a repeat, nor for segments added to a clip still
/// open: one every few seconds; its closing is audited, with the final count).
fn audit_change(
    tx: &Tx<'_>,
    actor: &str,
    target: &str,
    manifest: &ClipManifest,
    change: ManifestChange,
) -> Result<(), ApiError> {
    let (action, details) = match change {
        ManifestChange::None
        | ManifestChange::Refused(_)
        | ManifestChange::Extended { closed: false, .. } => return Ok(()),
        ManifestChange::Created => (
            "clip.manifest",
            serde_json::json!({ "user": manifest.user, "segments": manifest.segments.len(), "trigger": manifest.trigger_id, "open": manifest.open }),
        ),
        ManifestChange::Lost { lost, closed } => (
            "clip.segments_lost",
            serde_json::json!({ "lost": lost, "closed": closed, "segments": manifest.segments.len(), "missing_ranges": manifest.missing.len() }),
        ),
        ManifestChange::Extended { added, closed: true } => (
            "clip.closed",
            serde_json::json!({ "segments": manifest.segments.len(), "added": added, "missing_ranges": manifest.missing.len() }),
        ),
    };
    Ok(tx.audit(actor, action, target, details)?)
}

pub async fn get_status(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(clip_id): Path<String>,
) -> Result<Json<ClipStatus>, ApiError> {
    let answer = move |tx: &Tx<'_>| match tx.clip_owner(&clip_id)? {
        Some(o) if o == device.id => status(tx, &device.id, &clip_id),
        // Same answer whether the clip is another device's or does not exist: a device learns
        // nothing about other devices' clips.
        _ => Err(ApiError::not_found(format!("no clip {clip_id} from this device"))),
    };
    state.store.write(answer).await.map(Json)
}

/// Removes uploads a stopped console left in flight (`serve` calls it before taking any).
pub fn clear_incoming(state: &AppState) {
    let dir = state.store.blobs().incoming_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        if let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(file = ?e.path(), error = ?err.to_string(), "stale upload not removed");
        }
    }
}
