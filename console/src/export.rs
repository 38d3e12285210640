//! `clip export`: opens a clip's sealed segments with the tenant's private key and writes
//!
//! ```text
//! OUT/                             0700
//! OUT/manifest.json                the clip manifest (window, segments, missing ranges)
//! OUT/frames/                      0700
//! OUT/frames/<utc_ms>-m<monitor>-<segment 12 hex>-<index>.png   every decoded frame, RGB;
//!                                  the name sorts by time and is unique (two frames in one
//!                                  millisecond, or of two monitors, never share a file)
//! OUT/frames.jsonl                 one line per frame, in time order: file, utc_ms,
//!                                  utc_micros, mono_micros (CLOCK_MONOTONIC of the device),
//!                                  kind ("K" keyframe, "D" delta, "S" same as before),
//!                                  monitor, segment (SHA-256 of the sealed file), index (the
//!                                  frame's place in its segment)
//! OUT/events.jsonl                 one line per input/window event, in time order
//! ```
//!
//! every file 0600, whatever the umask: they are plaintext evidence.
//!
//! This runs on the console host by an investigator (it reads `DATA/keys/sealing.key`); the
//! server process never opens segments. Plaintext exists only in memory and in `OUT`.
//!
//! # Who may export, and the record of it
//!
//! The caller names themself with a person's API token (`--token` or `$REARVIEW_TOKEN`), which
//! is checked against the console's own database: the person must hold the investigator role.
//! Reading the key file takes access to the data directory anyway; the check makes an export
//! a named person's act and the audit log says so:
//!
//! ```text
//! clip.export.begin   person:<name>  clip:<id>  {out}                    before any plaintext is written
//! clip.export         person:<name>  clip:<id>  {out, segments, frames, events, complete}
//! clip.export.failed  person:<name>  clip:<id>  {out, error}             when it stopped half-way
//! ```
//!
//! An export whose first record cannot be written does not start. The first record also puts
//! `opened` in the clip's custody log (see [`crate::store::evidence`]), in the same
//! transaction.
//!
//! `clip export --evidence` ([`export_evidence`]) writes an evidence package instead: the sealed
//! segments as received with everything needed to check them offline.

use std::io::Write;
use std::path::{Path, PathBuf};

use rearview_capture::codec::PacketKind;
use rearview_capture::seal::{open, SealBinding, SealedHeader};
use rearview_capture::segment::Segment;
use rearview_protocol::ClipManifest;

use crate::auth::{person_by_token, Person, Role};
use crate::blobs::BlobLocation;
use crate::error::ConsoleError;
use crate::private;
use crate::store::Store;
use crate::tenant::load_sealing_key;

mod evidence;

pub use evidence::{export_evidence, export_evidence_with_blobs, EvidenceSummary};

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    pub clip_id: String,
    pub out: PathBuf,
    pub segments: usize,
    pub frames: usize,
    pub events: usize,
    pub complete: bool,
}

/// One audit line of the export (which changes nothing in the database but the log).
fn audit(
    store: &Store,
    actor: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ConsoleError> {
    store.write_now(|tx| tx.audit(actor, action, target, details))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ConsoleError + '_ {
    move |e| ConsoleError::io(path, e)
}

/// The person `token` names, if they may export clips (investigator role).
fn investigator(store: &Store, token: Option<&str>) -> Result<Person, ConsoleError> {
    let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        ConsoleError::Denied(
            "clip export needs an investigator's API token: --token or $REARVIEW_TOKEN".into(),
        )
    })?;
    let person = person_by_token(store, token)?.ok_or_else(|| {
        ConsoleError::Denied(
            "unknown API token: clip export needs the token of a person with the investigator role"
                .into(),
        )
    })?;
    if !person.roles.contains(&Role::Investigator) {
        return Err(ConsoleError::Denied(format!(
            "{} (roles: {}) may not export clips; it needs the role investigator",
            person.name,
            Role::join(&person.roles)
        )));
    }
    Ok(person)
}

/// Exports clip `clip_id` of the tenant in `data` to `out` (created; must be empty if present)
/// as the investigator whose API token is `token`; audited (see the module docs). The blobs are
/// in `data` ([`export_clip_with_blobs`] for elsewhere).
pub fn export_clip(
    data: &Path,
    token: Option<&str>,
    clip_id: &str,
    out: &Path,
) -> Result<ExportSummary, ConsoleError> {
    export_clip_with_blobs(data, &BlobLocation::Files(data.join("blobs")), token, clip_id, out)
}

/// [`export_clip`] with the segments read from `blobs` (`clip export --blobs`). Blocking: the
/// blob store's reads wait on this thread (see `crate::blobs`, "Threads").
pub fn export_clip_with_blobs(
    data: &Path,
    blobs: &BlobLocation,
    token: Option<&str>,
    clip_id: &str,
    out: &Path,
) -> Result<ExportSummary, ConsoleError> {
    let store = Store::open_with_blobs(data, blobs)?;
    let person = investigator(&store, token)?;
    let tenant = store
        .read_now(|tx| tx.meta_get("tenant_id"))?
        .ok_or_else(|| ConsoleError::Config(format!("{} holds no tenant", data.display())))?;
    let clip = store.read_now(|tx| tx.stored_clip(clip_id))?.ok_or_else(|| {
        ConsoleError::Config(format!("no clip {clip_id}; 'clip list' shows them"))
    })?;
    let (device, manifest, complete) = (clip.device_id, clip.manifest, clip.complete);
    let key = load_sealing_key(data)?;

    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(ConsoleError::Config(format!(
            "{} is not empty; export into a new directory",
            out.display()
        )));
    }
    let actor = person.actor();
    let target = format!("clip:{clip_id}");
    store.write_now(|tx| {
        let detail = format!("frames and events decoded into {}", out.display());
        let opened = crate::store::evidence::CustodyAction::Opened;
        tx.append_custody(clip_id, crate::store::now_ms(), &actor, opened, &detail)?;
        tx.audit(&actor, "clip.export.begin", &target, serde_json::json!({ "out": out }))
    })?;
    let opened = Opened { store: &store, tenant: &tenant, device: &device, key: &key };
    match opened.write(&manifest, out) {
        Ok(written) => {
            audit(
                &store,
                &actor,
                "clip.export",
                &target,
                serde_json::json!({
                    "out": out, "segments": written.segments, "frames": written.frames,
                    "events": written.events, "complete": complete,
                }),
            )?;
            Ok(ExportSummary {
                clip_id: clip_id.to_owned(),
                out: out.to_owned(),
                segments: written.segments,
                frames: written.frames,
                events: written.events,
                complete,
            })
        }
        Err(e) => {
            let details = serde_json::json!({ "out": out, "error": e.to_string() });
            if let Err(e) = audit(&store, &actor, "clip.export.failed", &target, details) {
                tracing::warn!(error = %e, "failed export not audited");
            }
            Err(e)
        }
    }
}

/// What a clip's segments are opened with.
struct Opened<'a> {
    store: &'a Store,
    tenant: &'a str,
    device: &'a str,
    key: &'a rearview_capture::seal::TenantSecretKey,
}

/// Counts of what [`Opened::write`] wrote.
struct Written {
    segments: usize,
    frames: usize,
    events: usize,
}

impl Opened<'_> {
    /// Decodes every stored segment of `manifest` into `out`.
    fn write(&self, manifest: &ClipManifest, out: &Path) -> Result<Written, ConsoleError> {
        let frames_dir = out.join("frames");
        private::create_dir(out).map_err(io(out))?;
        private::create_dir(&frames_dir).map_err(io(&frames_dir))?;
        let manifest_path = out.join("manifest.json");
        let text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        private::create_new_file(&manifest_path)
            .and_then(|mut f| f.write_all(&text))
            .map_err(io(&manifest_path))?;

        let mut frame_lines = Vec::new();
        let mut events = Vec::new();
        let mut segments = 0;
        for seg in &manifest.segments {
            let Some(sealed) = self.store.blobs().get_blocking(self.device, &seg.sha256)? else {
                tracing::warn!(segment = ?seg.sha256, "segment not uploaded (yet); skipped");
                continue;
            };
            let plain = open_sealed(self.key, self.tenant, self.device, &sealed)?;
            let segment = Segment::parse(&plain)
                .map_err(|e| ConsoleError::corrupt(format!("segment {}", seg.sha256), e))?;
            let monitor = segment.header().context.monitor.id;
            for (index, frame) in segment.decode_frames().enumerate() {
                let frame = frame
                    .map_err(|e| ConsoleError::corrupt(format!("segment {}", seg.sha256), e))?;
                let at = frame.captured_at;
                let name = frame_file_name(at.utc_micros, monitor, &seg.sha256, index);
                let kind = match segment.frames()[index].kind {
                    PacketKind::Key => "K",
                    PacketKind::Delta => "D",
                    PacketKind::Same => "S",
                };
                let mut rgb = Vec::with_capacity(frame.width as usize * frame.height as usize * 3);
                for y in 0..frame.height {
                    for px in frame.row(y).chunks_exact(4) {
                        rgb.extend_from_slice(&[px[2], px[1], px[0]]);
                    }
                }
                write_png(&frames_dir.join(&name), &rgb, frame.width, frame.height)?;
                frame_lines.push(serde_json::json!({
                    "file": format!("frames/{name}"), "utc_ms": at.utc_micros / 1000,
                    "utc_micros": at.utc_micros, "mono_micros": at.mono_micros, "kind": kind,
                    "monitor": monitor, "segment": seg.sha256, "index": index,
                }));
            }
            for event in segment.events() {
                events
                    .push(serde_json::to_value(event).map_err(|e| {
                        ConsoleError::corrupt(format!("segment {}", seg.sha256), e)
                    })?);
            }
            segments += 1;
        }
        frame_lines
            .sort_by_key(|l| (l["utc_micros"].as_i64(), l["file"].as_str().map(str::to_owned)));
        write_lines(&out.join("frames.jsonl"), &frame_lines)?;
        events.sort_by_key(event_time);
        write_lines(&out.join("events.jsonl"), &events)?;
        Ok(Written { segments, frames: frame_lines.len(), events: events.len() })
    }
}

/// Opens the sealed segment `sealed` of `device` in `tenant` with the tenant secret `key`: its
/// plaintext (wiped on drop), for [`Segment::parse`]. Errors name the segment by its SHA-256.
pub(crate) fn open_sealed(
    key: &rearview_capture::seal::TenantSecretKey,
    tenant: &str,
    device: &str,
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, ConsoleError> {
    let name = rearview_evidence::sha256_hex(sealed);
    let header = SealedHeader::parse(sealed)
        .map_err(|e| ConsoleError::Keys(format!("segment {name}: {e}")))?;
    let binding = SealBinding { tenant, device, segment_id: header.segment_id };
    open(key, &binding, sealed).map_err(|e| ConsoleError::Keys(format!("segment {name}: {e}")))
}

/// A frame's file name: its time first (names sort by time), then what makes it unique — the
/// monitor, the segment (first 12 hex digits of its SHA-256) and its place in the segment.
fn frame_file_name(utc_micros: i64, monitor: u32, segment_sha256: &str, index: usize) -> String {
    let utc_ms = utc_micros.div_euclid(1000);
    let segment = segment_sha256.get(..12).unwrap_or(segment_sha256);
    format!("{utc_ms:014}-m{monitor}-{segment}-{index:04}.png")
}

/// One frame as a PNG file of its own, 0600.
fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), ConsoleError> {
    let file = private::create_new_file(path).map_err(io(path))?;
    let mut w = std::io::BufWriter::new(file);
    image::write_buffer_with_format(
        &mut w,
        rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| ConsoleError::Io {
        what: format!("{}: png", path.display()),
        source: std::io::Error::other(e),
    })?;
    w.flush().map_err(io(path))
}

/// The UTC time of a serialised event, for ordering (events carry a `Timestamp`).
fn event_time(e: &serde_json::Value) -> i64 {
    e.get("at")
        .or_else(|| e.get("timestamp"))
        .and_then(|t| t.get("utc_micros"))
        .and_then(|v| v.as_i64())
        .unwrap_or(0)
}

fn write_lines(path: &Path, lines: &[serde_json::Value]) -> Result<(), ConsoleError> {
    let mut f = std::io::BufWriter::new(private::create_new_file(path).map_err(io(path))?);
    for l in lines {
        writeln!(f, "{l}").map_err(io(path))?;
    }
    f.flush().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::frame_file_name;

    /// Two frames in one millisecond, of one segment or of two monitors, never share a file
    /// (the old name, `<utc_ms>-m<monitor>.png`, had the second overwrite the first).
    #[test]
    fn frame_names_are_unique_and_sort_by_time() {
        let seg = "ab".repeat(32);
        let other = "cd".repeat(32);
        let names = [
            frame_file_name(1_700_000_000_000_100, 0, &seg, 0),
            frame_file_name(1_700_000_000_000_600, 0, &seg, 1),
            frame_file_name(1_700_000_000_000_600, 1, &other, 0),
            frame_file_name(1_700_000_000_001_000, 0, &seg, 2),
        ];
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted[3], names[3], "the later millisecond sorts last: {sorted:?}");
        assert!(names[0].starts_with("01700000000000-m0-abababababab-0000"), "{}", names[0]);
    }
}
