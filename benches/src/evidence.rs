//! `evidence`: what checking an evidence package costs (issue 13).
//!
//! A clip of `--minutes` (default 15) at 1 fps of 1920x1080 in 10 s segments, the ring bench's
//! synthetic desktop: encoded, sealed to a tenant key, each segment's chain entry signed by a
//! device key, recorded and countersigned by a console key, written as a package on the real
//! filesystem. Then `rearview_verify::verify` runs on it without the tenant key (sums,
//! signatures, chain, custody: the target is at most 1 s for 15 minutes) and with it (every
//! segment opened and every frame decoded: the target is at least 100 frames/s at 1080p).

use anyhow::Context;
use rearview_capture::seal::{seal, SealBinding, TenantSecretKey};
use rearview_capture::segment::SegmentWriter;
use rearview_evidence::chain::{Appended, ChainHead, SegmentRef, Stream};
use rearview_evidence::package as pkg;
use rearview_evidence::record::{self, ClipRecord, EnrollmentRecord, ReceivedSegment, Window};
use rearview_evidence::{custody, sha256_hex, Signer};
use serde_json::json;

use crate::ring::{bench_context, desktop, round3};

#[derive(clap::Args)]
pub struct EvidenceArgs {
    /// Length of the clip.
    #[arg(long, default_value_t = 15)]
    minutes: u64,
    /// Verification runs (the figures are the median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print one JSON object (the default prints the same, pretty).
    #[arg(long)]
    json: bool,
}

const TENANT: &str = "contoso";
const DEVICE: &str = "bench-device";
const USER: &str = "alice@contoso.example";
const CLIP: &str = "bench-clip";
const FRAMES_PER_SEGMENT: u64 = 10;

pub fn run(args: EvidenceArgs) -> anyhow::Result<()> {
    let (width, height) = (1920, 1080);
    let tenant = TenantSecretKey::generate()?;
    let (device, _) = Signer::generate()?;
    let (console, _) = Signer::generate()?;
    let dir = tempfile::tempdir().context("temp dir for the package")?;
    let pack = dir.path().join("package");
    let segments = args.minutes * 60 / FRAMES_PER_SEGMENT;
    let contents = build(&tenant, &device, &console, segments, (width, height))?;
    write(&pack, &contents, &device, &console)?;
    let package_bytes = du(&pack)?;
    let key = dir.path().join("tenant.key");
    std::fs::write(&key, tenant.expose_secret_bytes())?;

    let time = |tenant_key: Option<std::path::PathBuf>| -> anyhow::Result<f64> {
        let options = rearview_verify::Options { dir: pack.clone(), tenant_key, console_key: None };
        let mut times = Vec::new();
        for _ in 0..args.runs.max(1) {
            let start = std::time::Instant::now();
            let report = rearview_verify::verify(&options);
            times.push(start.elapsed().as_secs_f64());
            anyhow::ensure!(report.ok(), "the bench package did not verify:\n{}", report.text());
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };
    let without_key = time(None)?;
    let with_key = time(Some(key))?;
    let frames = segments * FRAMES_PER_SEGMENT;
    let report = json!({
        "bench": "evidence",
        "clip_minutes": args.minutes,
        "width": width,
        "height": height,
        "segments": segments,
        "frames": frames,
        "package_bytes": package_bytes,
        "results": [
            { "name": "verify_without_key", "seconds": round3(without_key), "target_seconds": 1.0 },
            { "name": "verify_with_key", "seconds": round3(with_key),
              "frames_per_s": round3(frames as f64 / with_key), "target_frames_per_s": 100.0 },
        ],
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// The sealed segments of the clip and their signed chain.
struct Built {
    segments: Vec<(String, Vec<u8>)>,
    chain: Vec<rearview_evidence::chain::Entry>,
    window: Window,
}

fn build(
    tenant: &TenantSecretKey,
    device: &Signer,
    _console: &Signer,
    segments: u64,
    (width, height): (u32, u32),
) -> anyhow::Result<Built> {
    // The ring bench's tenant, device and user (TENANT, DEVICE, USER here).
    let context = bench_context(width, height);
    let stream = Stream {
        tenant: TENANT.into(),
        device: DEVICE.into(),
        user: USER.into(),
        session: "c2".into(),
        monitor: 0,
    };
    let mut head = ChainHead::new()?;
    let mut out = Built {
        segments: Vec::new(),
        chain: Vec::new(),
        window: Window { from_utc_micros: i64::MAX, to_utc_micros: i64::MIN },
    };
    for k in 0..segments {
        let mut w = SegmentWriter::new(context.clone())?;
        for i in 0..FRAMES_PER_SEGMENT {
            let mut f = desktop(width, height, (k * FRAMES_PER_SEGMENT + i) as u32);
            f.captured_at.utc_micros =
                1_800_000_000_000_000 + ((k * FRAMES_PER_SEGMENT + i) * 1_000_000) as i64;
            f.captured_at.mono_micros = (k * FRAMES_PER_SEGMENT + i) * 1_000_000;
            w.push_frame(&f)?;
        }
        let id = w.id();
        let done = w.finish()?;
        let sealed = seal(
            &tenant.public_key(),
            &SealBinding { tenant: TENANT, device: DEVICE, segment_id: id },
            &done.plaintext,
        )?;
        let span = (done.header.start.utc_micros, done.header.end.utc_micros);
        out.window.from_utc_micros = out.window.from_utc_micros.min(span.0);
        out.window.to_utc_micros = out.window.to_utc_micros.max(span.1);
        let seg = SegmentRef { id: id.to_string(), sha256: sha256_hex(&sealed) };
        out.chain.push(head.append(device, &stream, span, Appended::Segment(seg))?);
        out.segments.push((id.to_string(), sealed));
    }
    Ok(out)
}

fn write(
    pack: &std::path::Path,
    built: &Built,
    device: &Signer,
    console: &Signer,
) -> anyhow::Result<()> {
    let manifest =
        serde_json::to_vec(&json!({"clip_id": CLIP, "device_id": DEVICE, "user": USER}))?;
    let record = ClipRecord {
        clip: CLIP.into(),
        tenant: TENANT.into(),
        device: DEVICE.into(),
        user: USER.into(),
        manifest_sha256: sha256_hex(&manifest),
        window: built.window,
        trigger: None,
        approval: None,
        segments: built
            .segments
            .iter()
            .map(|(id, b)| ReceivedSegment {
                id: id.clone(),
                sha256: sha256_hex(b),
                received_utc: "2027-01-15T08:00:00Z".into(),
            })
            .collect(),
        missing: vec![],
        completed_utc: "2027-01-15T08:16:00Z".into(),
    };
    let clip_record = serde_json::to_vec_pretty(&record)?;
    let enrollment = serde_json::to_vec(&EnrollmentRecord {
        tenant: TENANT.into(),
        device: DEVICE.into(),
        device_public_key: device.public_key().to_base64(),
        enrolled_utc: "2027-01-01T00:00:00Z".into(),
        enrolled_by: "bench".into(),
    })?;
    let (line, hash) =
        custody::next_line(CLIP, None, "2027-01-15T08:16:00Z", "bench", "completed", "")?;
    let head = custody::sign_head(console, CLIP, 1, &hash)?;
    let sig = |kind, bytes: &[u8]| serde_json::to_vec(&record::sign(console, kind, bytes));
    pkg::write(
        pack,
        &pkg::Contents {
            clip: CLIP,
            manifest: &manifest,
            segments: &built.segments,
            chain: &built.chain,
            absent: &[],
            enrollment_sig: &sig(pkg::ENROLLMENT_KIND, &enrollment)?,
            enrollment: &enrollment,
            console_key: &console.public_key(),
            clip_record_sig: &sig(pkg::CLIP_KIND, &clip_record)?,
            clip_record: &clip_record,
            custody: format!("{line}\n").as_bytes(),
            custody_head: &head,
        },
    )?;
    Ok(())
}

fn du(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        total += if e.file_type()?.is_dir() { du(&e.path())? } else { e.metadata()?.len() };
    }
    Ok(total)
}
