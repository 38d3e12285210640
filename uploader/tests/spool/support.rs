//! What the spool's model and crash tests share: a small pool of segments whose bytes, size and
//! name follow from a number, and manifests built from them. (Each test uses part of it.)
#![allow(dead_code)]

use rearview_protocol::{ClipManifest, ManifestSegment, UnixMillis};
use rearview_uploader::spool::SegmentBytes;

/// Segments in the pool.
pub const SEGMENTS: u8 = 12;

/// Segment `n`'s sealed bytes: 100..=500 bytes, a function of `n` alone.
pub fn segment_bytes(n: u8) -> Vec<u8> {
    vec![n; (usize::from(n) % 5 + 1) * 100]
}

/// Segment `n`'s name in the spool (the spool trusts the caller's hash; a distinct name each).
pub fn sha(n: u8) -> String {
    format!("{n:064x}")
}

/// A manifest for clip `clip` naming segments `segs` of the pool, open or closed.
pub fn manifest(clip: &str, segs: &[u8], open: bool) -> ClipManifest {
    let named = segs.iter().map(|&n| (sha(n), segment_bytes(n).len() as u64));
    manifest_naming(clip, named, open)
}

/// A manifest for clip `clip` naming segments given as (sha256, size), open or closed.
pub fn manifest_naming(
    clip: &str,
    segments: impl IntoIterator<Item = (String, u64)>,
    open: bool,
) -> ClipManifest {
    ClipManifest {
        clip_id: clip.to_string(),
        trigger_id: None,
        mode: rearview_protocol::CaptureMode::SpecificActivities,
        user: "alice@corp.example".into(),
        device_id: "dev-1".into(),
        start_ms: UnixMillis(0),
        end_ms: UnixMillis(1_000),
        segments: segments
            .into_iter()
            .map(|(sha256, size)| ManifestSegment {
                sha256,
                size,
                start_ms: UnixMillis(0),
                end_ms: UnixMillis(1),
            })
            .collect(),
        missing: Vec::new(),
        open,
        chain: Vec::new(),
        absent: Vec::new(),
    }
}

/// The `(sha256, bytes)` pairs the spool takes for `segs`.
pub fn named(segs: &[u8]) -> Vec<(String, SegmentBytes)> {
    segs.iter().map(|&n| (sha(n), SegmentBytes::Bytes(segment_bytes(n)))).collect()
}

/// Names of the files in the spool's `segments/` directory, sorted.
pub fn files_on_disk(spool_dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool_dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
