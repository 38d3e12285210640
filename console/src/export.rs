//! `clip export`: opens a clip's sealed segments with the tenant's private key and writes
//!
//! ```text
//! OUT/manifest.json                the clip manifest (window, segments, missing ranges)
//! OUT/frames/<utc_ms>-m<monitor>.png   every decoded frame, RGB
//! OUT/frames.jsonl                 one line per frame: file, utc_ms, monitor, segment
//! OUT/events.jsonl                 one line per input/window event, in time order
//! ```
//!
//! This runs on the console host by an investigator (it reads `DATA/keys/sealing.key`); the
//! server process never opens segments. Plaintext exists only in memory and in `OUT`.

use std::io::Write;
use std::path::{Path, PathBuf};

use rearview_capture::seal::{open, SealBinding, SealedHeader};
use rearview_capture::segment::Segment;
use rearview_uploader::wire::ClipManifest;
use rusqlite::OptionalExtension;

use crate::error::ConsoleError;
use crate::store::Store;
use crate::tenant::load_sealing_key;

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

fn io(path: &Path) -> impl Fn(std::io::Error) -> ConsoleError + '_ {
    move |e| ConsoleError::Io(format!("{}: {e}", path.display()))
}

/// Exports clip `clip_id` of the tenant in `data` to `out` (created; must be empty if present).
pub fn export_clip(data: &Path, clip_id: &str, out: &Path) -> Result<ExportSummary, ConsoleError> {
    let store = Store::open(data)?;
    let tenant = store
        .meta_get("tenant_id")?
        .ok_or_else(|| ConsoleError::Config(format!("{} holds no tenant", data.display())))?;
    let row: Option<(String, String, Option<i64>)> = store
        .conn()
        .query_row(
            "SELECT device_id, manifest_json, complete_ms FROM clips WHERE id = ?1",
            [clip_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (device, json, complete_ms) = row.ok_or_else(|| {
        ConsoleError::Config(format!("no clip {clip_id}; 'clip list' shows them"))
    })?;
    let manifest: ClipManifest = serde_json::from_str(&json)
        .map_err(|e| ConsoleError::Database(format!("clip {clip_id} manifest: {e}")))?;
    let key = load_sealing_key(data)?;

    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(ConsoleError::Config(format!(
            "{} is not empty; export into a new directory",
            out.display()
        )));
    }
    let frames_dir = out.join("frames");
    std::fs::create_dir_all(&frames_dir).map_err(io(&frames_dir))?;
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )
    .map_err(io(out))?;

    let mut frame_lines = Vec::new();
    let mut events = Vec::new();
    let mut segments = 0;
    for seg in &manifest.segments {
        let path = store.blob_path(&device, &seg.sha256);
        let sealed = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(segment = ?seg.sha256, "segment not uploaded (yet); skipped");
                continue;
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let header = SealedHeader::parse(&sealed)
            .map_err(|e| ConsoleError::Keys(format!("segment {}: {e}", seg.sha256)))?;
        let binding =
            SealBinding { tenant: &tenant, device: &device, segment_id: header.segment_id };
        let plain = open(&key, &binding, &sealed)
            .map_err(|e| ConsoleError::Keys(format!("segment {}: {e}", seg.sha256)))?;
        let segment = Segment::parse(&plain)
            .map_err(|e| ConsoleError::Io(format!("segment {} does not parse: {e}", seg.sha256)))?;
        let monitor = segment.header().context.monitor.id;
        for frame in segment.decode_frames() {
            let frame =
                frame.map_err(|e| ConsoleError::Io(format!("segment {}: {e}", seg.sha256)))?;
            let utc_ms = frame.captured_at.utc_micros / 1000;
            let name = format!("{utc_ms:014}-m{monitor}.png");
            let mut rgb = Vec::with_capacity(frame.width as usize * frame.height as usize * 3);
            for y in 0..frame.height {
                for px in frame.row(y).chunks_exact(4) {
                    rgb.extend_from_slice(&[px[2], px[1], px[0]]);
                }
            }
            let file = frames_dir.join(&name);
            image::save_buffer(
                &file,
                &rgb,
                frame.width,
                frame.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| ConsoleError::Io(format!("{}: {e}", file.display())))?;
            frame_lines.push(serde_json::json!({
                "file": format!("frames/{name}"), "utc_ms": utc_ms, "monitor": monitor, "segment": seg.sha256,
            }));
        }
        for event in segment.events() {
            events.push(serde_json::to_value(event).map_err(|e| ConsoleError::Io(e.to_string()))?);
        }
        segments += 1;
    }
    frame_lines.sort_by_key(|l| l["utc_ms"].as_i64());
    write_lines(&out.join("frames.jsonl"), &frame_lines)?;
    events.sort_by_key(event_time);
    write_lines(&out.join("events.jsonl"), &events)?;
    Ok(ExportSummary {
        clip_id: clip_id.to_owned(),
        out: out.to_owned(),
        segments,
        frames: frame_lines.len(),
        events: events.len(),
        complete: complete_ms.is_some(),
    })
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
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io(path))?);
    for l in lines {
        writeln!(f, "{l}").map_err(io(path))?;
    }
    f.flush().map_err(io(path))
}
