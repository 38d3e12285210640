//! With the tenant key: open every segment, check whose it says it is, decode every frame, and
//! compare the package's `open/` files (if any) with what was decoded.

use std::collections::HashMap;
use std::path::Path;

use rearview_capture::seal::{open, SealBinding, TenantSecretKey};
use rearview_capture::segment::{Segment, SegmentId};
use rearview_evidence::package as pkg;
use rearview_evidence::record::ClipRecord;
use rearview_evidence::sha256_hex;
use zeroize::Zeroizing;

use crate::{Files, Report};

/// What `open/frames.jsonl` says of one frame.
#[derive(serde::Deserialize)]
struct OpenFrame {
    segment: String,
    index: usize,
    kind: String,
    utc_micros: i64,
    bgrx_sha256: String,
    file: String,
}

/// What `open/events.jsonl` says of one event.
#[derive(serde::Deserialize)]
struct OpenEvent {
    segment: String,
    event: serde_json::Value,
}

/// The tenant secret key: 32 raw bytes, or 64 hex digits of text.
fn load_key(path: &Path) -> Result<TenantSecretKey, String> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?);
    let raw: Zeroizing<Vec<u8>> = if bytes.len() == 32 {
        bytes
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| "neither 32 bytes nor hex text")?;
        Zeroizing::new(hex::decode(text.trim()).map_err(|_| "neither 32 bytes nor 64 hex digits")?)
    };
    let arr: [u8; 32] = raw.as_slice().try_into().map_err(|_| "not a 32-byte key")?;
    Ok(TenantSecretKey::from_bytes(Zeroizing::new(arr)))
}

/// What opening the segments gave.
struct Opened {
    /// Keep what `open/` is compared with.
    compare: bool,
    frames: u64,
    events_read: u64,
    decoded: HashMap<(String, usize), Decoded>,
    events: Vec<(String, serde_json::Value)>,
}

/// One decoded frame's facts, for comparing with `open/frames.jsonl`.
struct Decoded {
    kind: char,
    utc_micros: i64,
    bgrx_sha256: String,
    rgb: Vec<u8>,
}

pub(crate) fn check(r: &mut Report, files: &Files<'_>, record: &ClipRecord, key_path: &Path) {
    let key = match load_key(key_path) {
        Ok(k) => k,
        Err(e) => return r.fail("frames", &key_path.display().to_string(), e),
    };
    // Hashing and converting every frame costs as much as decoding it: only when there is an
    // `open/` to compare with.
    let compare = files.dir.join(pkg::OPEN_FRAMES).is_file();
    let mut out =
        Opened { compare, frames: 0, events_read: 0, decoded: HashMap::new(), events: Vec::new() };
    for s in &record.segments {
        let path = pkg::segment_path(&s.id);
        if let Err(e) = open_one(files, record, &key, &s.id, &mut out) {
            return r.fail("frames", &path, e);
        }
    }
    let Opened { frames, events_read, decoded, events, .. } = out;
    r.frames_decoded = frames;
    r.pass(
        "frames",
        pkg::SEGMENTS,
        format!(
            "{} segments opened, {} frames decoded, {} events read",
            record.segments.len(),
            frames,
            events_read
        ),
    );
    if compare {
        compare_frames(r, files, &decoded);
        compare_events(r, files, &events);
    }
}

fn open_one(
    files: &Files<'_>,
    record: &ClipRecord,
    key: &TenantSecretKey,
    id: &str,
    out: &mut Opened,
) -> Result<(), String> {
    let sealed = files.read(&pkg::segment_path(id))?;
    let segment_id: SegmentId = id.parse().map_err(|_| format!("{id:?} is not a segment id"))?;
    let binding = SealBinding { tenant: &record.tenant, device: &record.device, segment_id };
    let plain = open(key, &binding, &sealed).map_err(|e| format!("does not open: {e}"))?;
    let seg = Segment::parse(&plain).map_err(|e| format!("opened, but not a segment: {e}"))?;
    let h = seg.header();
    let c = &h.context;
    for (field, got, want) in [
        ("tenant", &c.tenant, &record.tenant),
        ("device", &c.device, &record.device),
        ("user", &c.user, &record.user),
    ] {
        if got != want {
            return Err(format!("its header names {field} {got:?}, the clip's is {want:?}"));
        }
    }
    for (index, frame) in seg.decode_frames().enumerate() {
        let frame = frame.map_err(|e| format!("frame {index} does not decode: {e}"))?;
        out.frames += 1;
        if !out.compare {
            continue;
        }
        let record = &seg.frames()[index];
        let kind = match record.kind {
            rearview_capture::codec::PacketKind::Key => 'K',
            rearview_capture::codec::PacketKind::Delta => 'D',
            rearview_capture::codec::PacketKind::Same => 'S',
        };
        let bgrx = packed(&frame);
        let rgb = bgrx.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
        out.decoded.insert(
            (id.to_string(), index),
            Decoded { kind, utc_micros: record.at.utc_micros, bgrx_sha256: sha256_hex(&bgrx), rgb },
        );
    }
    out.events_read += seg.events().len() as u64;
    if out.compare {
        for e in seg.events() {
            let v = serde_json::to_value(e).map_err(|e| e.to_string())?;
            out.events.push((id.to_string(), v));
        }
    }
    Ok(())
}

fn compare_frames(r: &mut Report, files: &Files<'_>, decoded: &HashMap<(String, usize), Decoded>) {
    let listed: Vec<OpenFrame> = match crate::jsonl(files, pkg::OPEN_FRAMES) {
        Ok(l) => l,
        Err(e) => return r.fail("open frames", pkg::OPEN_FRAMES, e),
    };
    if listed.len() != decoded.len() {
        return r.fail(
            "open frames",
            pkg::OPEN_FRAMES,
            format!("lists {} frames, the segments hold {}", listed.len(), decoded.len()),
        );
    }
    for f in &listed {
        let Some(d) = decoded.get(&(f.segment.clone(), f.index)) else {
            return r.fail(
                "open frames",
                pkg::OPEN_FRAMES,
                format!("frame {}/{} is in no segment", f.segment, f.index),
            );
        };
        if f.bgrx_sha256 != d.bgrx_sha256
            || f.utc_micros != d.utc_micros
            || f.kind != d.kind.to_string()
        {
            return r.fail(
                "open frames",
                pkg::OPEN_FRAMES,
                format!("frame {}/{} differs from the decoded one", f.segment, f.index),
            );
        }
        match read_png(&files.dir.join(&f.file)) {
            Ok(rgb) if rgb == d.rgb => {}
            Ok(_) => {
                return r.fail(
                    "open frames",
                    &f.file,
                    "its pixels differ from the decoded frame".into(),
                )
            }
            Err(e) => return r.fail("open frames", &f.file, e),
        }
    }
    r.pass(
        "open frames",
        pkg::OPEN_FRAMES,
        format!("{} PNG frames equal the decoded ones", listed.len()),
    );
}

fn compare_events(r: &mut Report, files: &Files<'_>, decoded: &[(String, serde_json::Value)]) {
    let listed: Vec<OpenEvent> = match crate::jsonl(files, pkg::OPEN_EVENTS) {
        Ok(l) => l,
        Err(e) => return r.fail("open events", pkg::OPEN_EVENTS, e),
    };
    let same = listed.len() == decoded.len()
        && listed.iter().zip(decoded).all(|(l, (seg, ev))| l.segment == *seg && l.event == *ev);
    if same {
        r.pass(
            "open events",
            pkg::OPEN_EVENTS,
            format!("{} events equal the decoded ones", listed.len()),
        );
    } else {
        r.fail(
            "open events",
            pkg::OPEN_EVENTS,
            format!("{} events listed, {} decoded, or they differ", listed.len(), decoded.len()),
        );
    }
}

/// A frame's BGRX pixels with rows packed tight (`width * 4` bytes each, no stride padding):
/// what `bgrx_sha256` in `open/frames.jsonl` hashes.
fn packed(frame: &rearview_capture::Frame) -> Zeroizing<Vec<u8>> {
    let row = frame.width as usize * 4;
    let mut out = Zeroizing::new(Vec::with_capacity(row * frame.height as usize));
    for y in 0..frame.height as usize {
        out.extend_from_slice(&frame.data[y * frame.stride..y * frame.stride + row]);
    }
    out
}

/// An 8-bit RGB PNG's pixels.
fn read_png(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
    let size = reader.output_buffer_size().ok_or("PNG too large")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("not a PNG: {e}"))?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err("not an 8-bit RGB PNG".into());
    }
    buf.truncate(info.buffer_size());
    Ok(buf)
}
