//! A real package (segments written by the segment writer, sealed to a tenant key, signed by a
//! device key, recorded by a console key) verifies; each kind of tampering fails the verifier
//! with its own check, naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use rearview_capture::seal::{seal, SealBinding, TenantSecretKey};
use rearview_capture::segment::{SegmentContext, SegmentWriter};
use rearview_capture::{Frame, InputEvent, InputKind, MonitorInfo, Timestamp};
use rearview_evidence::chain::{Absence, Appended, ChainHead, Entry, Gap, SegmentRef, Stream};
use rearview_evidence::package as pkg;
use rearview_evidence::record::{self, ClipRecord, EnrollmentRecord, ReceivedSegment, Window};
use rearview_evidence::{custody, sha256_hex, Signer};
use rearview_verify::{verify, Options, Report};

const TENANT: &str = "tenant-a";
const DEVICE: &str = "dev-1";
const USER: &str = "alice@corp.example";
const CLIP: &str = "clip-7";
const W: u32 = 64;
const H: u32 = 48;

fn at(i: u64) -> Timestamp {
    Timestamp { utc_micros: 1_800_000_000_000_000 + i as i64 * 500_000, mono_micros: i * 500_000 }
}

fn context(device: &str) -> SegmentContext {
    SegmentContext {
        tenant: TENANT.into(),
        device: device.into(),
        user: USER.into(),
        session: "c2".into(),
        monitor: MonitorInfo {
            id: 0,
            name: "Virtual-1".into(),
            x: 0,
            y: 0,
            width: W,
            height: H,
            primary: true,
        },
    }
}

/// Frames `first..first+n`: a block moving over a gradient.
fn sealed_segment(
    tenant: &TenantSecretKey,
    device: &str,
    first: u64,
    n: u64,
) -> (String, Vec<u8>, (i64, i64)) {
    let mut w = SegmentWriter::new(context(device)).unwrap();
    for i in first..first + n {
        let mut f = Frame::black(W, H, at(i));
        for y in 0..H {
            for x in 0..W {
                let p = &mut f.row_mut(y)[x as usize * 4..x as usize * 4 + 4];
                let inside = (x as u64).wrapping_sub(i * 3) < 10 && y > 5 && y < 20;
                p[0] = if inside { 220 } else { (x * 3) as u8 };
                p[1] = (y * 5) as u8;
                p[2] = (i * 13) as u8;
            }
        }
        w.push_frame(&f).unwrap();
    }
    w.push_event(InputEvent {
        at: at(first),
        kind: InputKind::KeyPress { key: "KeyA".into(), text: Some("a".into()) },
    })
    .unwrap();
    let id = w.id();
    let done = w.finish().unwrap();
    let binding = SealBinding { tenant: TENANT, device, segment_id: id };
    let sealed = seal(&tenant.public_key(), &binding, &done.plaintext).unwrap();
    (id.to_string(), sealed, (done.header.start.utc_micros, done.header.end.utc_micros))
}

/// Everything a package is made of, kept so a test can tamper and rewrite.
struct Parts {
    tenant: TenantSecretKey,
    device: Signer,
    console: Signer,
    segments: Vec<(String, Vec<u8>)>,
    chain: Vec<Entry>,
    absent: Vec<Absence>,
    record: ClipRecord,
    manifest: Vec<u8>,
    custody: String,
    custody_entries: u64,
    custody_head: [u8; 32],
}

fn stream() -> Stream {
    Stream {
        tenant: TENANT.into(),
        device: DEVICE.into(),
        user: USER.into(),
        session: "c2".into(),
        monitor: 0,
    }
}

/// Three segments of four frames, with a "locked" gap between the second and the third.
fn parts() -> Parts {
    let tenant = TenantSecretKey::generate().unwrap();
    let (device, _) = Signer::generate().unwrap();
    let (console, _) = Signer::generate().unwrap();
    let mut head = ChainHead::new().unwrap();
    let mut segments = Vec::new();
    let mut chain = Vec::new();
    for (k, first) in [0u64, 4, 20].into_iter().enumerate() {
        if k == 2 {
            let gap = (at(8).utc_micros, at(20).utc_micros);
            chain.push(
                head.append(
                    &device,
                    &stream(),
                    gap,
                    Appended::Gap(Gap { reason: "locked".into() }),
                )
                .unwrap(),
            );
        }
        let (id, sealed, span) = sealed_segment(&tenant, DEVICE, first, 4);
        let seg = SegmentRef { id: id.clone(), sha256: sha256_hex(&sealed) };
        chain.push(head.append(&device, &stream(), span, Appended::Segment(seg)).unwrap());
        segments.push((id, sealed));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "clip_id": CLIP, "trigger_id": "trig-1", "mode": "specific-activities", "user": USER,
        "device_id": DEVICE, "start_ms": at(0).utc_micros / 1000, "end_ms": at(24).utc_micros / 1000,
        "segments": segments.iter().map(|(id, b)| serde_json::json!({"id": id, "sha256": sha256_hex(b)})).collect::<Vec<_>>(),
        "missing": [],
    }))
    .unwrap();
    let record = ClipRecord {
        clip: CLIP.into(),
        tenant: TENANT.into(),
        device: DEVICE.into(),
        user: USER.into(),
        manifest_sha256: sha256_hex(&manifest),
        window: Window { from_utc_micros: at(0).utc_micros, to_utc_micros: at(24).utc_micros },
        trigger: None,
        approval: None,
        segments: segments
            .iter()
            .map(|(id, b)| ReceivedSegment {
                id: id.clone(),
                sha256: sha256_hex(b),
                received_utc: "2027-01-15T08:00:00Z".into(),
            })
            .collect(),
        missing: vec![],
        completed_utc: "2027-01-15T08:01:00Z".into(),
    };
    let mut parts = Parts {
        tenant,
        device,
        console,
        segments,
        chain,
        absent: vec![],
        record,
        manifest,
        custody: String::new(),
        custody_entries: 0,
        custody_head: custody::genesis(CLIP),
    };
    for action in ["received", "completed", "exported"] {
        custody_append(&mut parts, action);
    }
    parts
}

fn custody_append(p: &mut Parts, action: &str) {
    let last = p.custody_entries.checked_sub(1).map(|seq| (seq, p.custody_head));
    let (line, hash) =
        custody::next_line(CLIP, last, "2027-01-15T08:02:00Z", "ivan", action, "").unwrap();
    p.custody.push_str(&line);
    p.custody.push('\n');
    p.custody_entries += 1;
    p.custody_head = hash;
}

/// Writes the package, every file, and SHA256SUMS over them.
fn write(p: &Parts, dir: &Path) {
    let enrollment = serde_json::to_vec(&EnrollmentRecord {
        tenant: TENANT.into(),
        device: DEVICE.into(),
        device_public_key: p.device.public_key().to_base64(),
        enrolled_utc: "2027-01-01T00:00:00Z".into(),
        enrolled_by: "token of ivan".into(),
    })
    .unwrap();
    let clip_record = serde_json::to_vec_pretty(&p.record).unwrap();
    let sig =
        |kind, bytes: &[u8]| serde_json::to_vec(&record::sign(&p.console, kind, bytes)).unwrap();
    let custody_head =
        custody::sign_head(&p.console, CLIP, p.custody_entries, &p.custody_head).unwrap();
    let contents = pkg::Contents {
        clip: CLIP,
        manifest: &p.manifest,
        segments: &p.segments,
        chain: &p.chain,
        absent: &p.absent,
        enrollment_sig: &sig(pkg::ENROLLMENT_KIND, &enrollment),
        enrollment: &enrollment,
        console_key: &p.console.public_key(),
        clip_record_sig: &sig(pkg::CLIP_KIND, &clip_record),
        clip_record: &clip_record,
        custody: p.custody.as_bytes(),
        custody_head: &custody_head,
    };
    pkg::write(dir, &contents).unwrap();
}

/// Rewrites SHA256SUMS over what the folder holds now (what a careful forger does).
fn resum(dir: &Path) {
    pkg::write_sums(dir).unwrap();
}

fn key_file(p: &Parts, dir: &Path) -> PathBuf {
    let path = dir.join("tenant.key");
    std::fs::write(&path, p.tenant.expose_secret_bytes()).unwrap();
    path
}

fn run(dir: &Path, tenant_key: Option<PathBuf>) -> Report {
    verify(&Options { dir: dir.to_path_buf(), tenant_key, console_key: None })
}

/// The one failed check of a report, as (name, file).
fn failed(r: &Report) -> Vec<(&'static str, String)> {
    r.checks.iter().filter(|c| !c.ok).map(|c| (c.name, c.file.clone())).collect()
}

#[test]
fn a_whole_package_verifies_with_and_without_the_tenant_key() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pkg");
    write(&p, &pack);
    let r = run(&pack, None);
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.chains.len(), 1);
    assert_eq!(r.chains[0].gaps.len(), 1);
    let r = run(&pack, Some(key_file(&p, dir.path())));
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.frames_decoded, 12);
    let frames = r.checks.iter().find(|c| c.name == "frames").unwrap();
    assert!(frames.detail.contains("12 frames decoded, 3 events read"), "{}", r.text());

    // The binary says the same, and exits 0.
    let out = Command::new(env!("CARGO_BIN_EXE_rearview-verify")).arg(&pack).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("VERIFIED") && text.contains("gap") && text.contains("locked"), "{text}");
    assert!(text.contains(&p.console.public_key().fingerprint().to_string()), "{text}");
}

/// Flip one byte of each kind of file: caught by SHA256SUMS; and when the forger also rewrites
/// SHA256SUMS, by the check that owns that file.
#[test]
fn one_flipped_byte_in_each_kind_of_file_fails_its_own_check() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();
    let first_segment = pkg::segment_path(&p.segments[0].0);
    let cases: [(&str, &str); 9] = [
        (first_segment.as_str(), "segments"),
        (pkg::MANIFEST, "manifest"),
        (pkg::CHAIN, "chain"),
        (pkg::DEVICE, "enrollment"),
        (pkg::DEVICE_SIG, "enrollment"),
        (pkg::CLIP_RECORD, "clip record"),
        (pkg::CLIP_RECORD_SIG, "clip record"),
        (pkg::CUSTODY, "custody"),
        (pkg::CUSTODY_SIG, "custody"),
    ];
    for (i, (file, check)) in cases.iter().enumerate() {
        let pack = dir.path().join(format!("pkg{i}"));
        write(&p, &pack);
        let mut bytes = std::fs::read(pack.join(file)).unwrap();
        // A byte inside a value, not JSON punctuation: the middle of the file.
        let at = bytes.len() / 2;
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        std::fs::write(pack.join(file), &bytes).unwrap();
        let r = run(&pack, None);
        assert_eq!(failed(&r)[0], ("sums", file.to_string()), "{file}: {}", r.text());

        resum(&pack);
        let r = run(&pack, None);
        let f = failed(&r);
        assert!(!r.ok(), "{file} flipped and re-summed still verified: {}", r.text());
        assert_eq!(f[0].0, *check, "{file}: {}", r.text());
    }
}

#[test]
fn a_deleted_or_swapped_segment_fails_the_chain_or_the_record() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();

    // Delete the middle segment file (and its SHA256SUMS line).
    let pack = dir.path().join("deleted");
    write(&p, &pack);
    std::fs::remove_file(pack.join(pkg::segment_path(&p.segments[1].0))).unwrap();
    resum(&pack);
    let r = run(&pack, None);
    assert_eq!(failed(&r)[0], ("segments", pkg::segment_path(&p.segments[1].0)), "{}", r.text());

    // A forger who also re-signs a record (a console key they hold) without that segment still
    // meets the device's chain, which names it.
    let mut q = parts();
    q.record.segments.remove(1);
    q.segments.remove(1);
    let pack = dir.path().join("unrecorded");
    write(&q, &pack);
    let r = run(&pack, None);
    let chain = r.checks.iter().find(|c| c.name == "chain").unwrap();
    assert!(!chain.ok && chain.detail.contains("no device-signed absence note"), "{}", r.text());

    // Two segments swapped: each file under the other's name.
    let pack = dir.path().join("swapped");
    let mut q = parts();
    let (a, b) = (q.segments[0].1.clone(), q.segments[1].1.clone());
    q.segments[0].1 = b;
    q.segments[1].1 = a;
    write(&q, &pack);
    let r = run(&pack, None);
    assert_eq!(failed(&r)[0].0, "segments", "{}", r.text());
}

/// Someone who has only the tenant public key (every device has it) seals a segment under this
/// device's name and signs a chain entry with another device key.
#[test]
fn a_segment_from_another_device_key_fails_the_chain() {
    let mut p = parts();
    let (intruder, _) = Signer::generate().unwrap();
    let (id, sealed, span) = sealed_segment(&p.tenant, DEVICE, 4, 4);
    let mut head = ChainHead {
        chain: p.chain[1].chain.clone(),
        next_seq: 1,
        last_hash: p.chain[1].prev.clone(),
        last_to_utc_micros: None,
    };
    let seg = SegmentRef { id: id.clone(), sha256: sha256_hex(&sealed) };
    p.chain[1] = head.append(&intruder, &stream(), span, Appended::Segment(seg)).unwrap();
    p.segments[1] = (id.clone(), sealed.clone());
    p.record.segments[1] = ReceivedSegment {
        id,
        sha256: sha256_hex(&sealed),
        received_utc: "2027-01-15T08:00:00Z".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    write(&p, dir.path());
    let r = run(dir.path(), Some(key_file(&p, dir.path())));
    let chain = r.checks.iter().find(|c| c.name == "chain").unwrap();
    assert!(!chain.ok && chain.detail.contains("device signature does not verify"), "{}", r.text());
}

#[test]
fn an_edited_custody_log_and_a_replaced_console_key_fail() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("custody");
    write(&p, &pack);
    let log = std::fs::read_to_string(pack.join(pkg::CUSTODY)).unwrap();
    std::fs::write(pack.join(pkg::CUSTODY), log.replacen("\"received\"", "\"opened\"", 1)).unwrap();
    resum(&pack);
    let r = run(&pack, None);
    assert_eq!(failed(&r), vec![("custody", pkg::CUSTODY.to_string())], "{}", r.text());
    assert!(r.text().contains("an earlier entry was edited"), "{}", r.text());

    // Another console key in console.pub: no record verifies with it.
    let pack = dir.path().join("key");
    write(&p, &pack);
    let (other, _) = Signer::generate().unwrap();
    std::fs::write(pack.join(pkg::CONSOLE_KEY), other.public_key().to_base64()).unwrap();
    resum(&pack);
    let r = run(&pack, None);
    assert_eq!(failed(&r)[0], ("enrollment", pkg::DEVICE.to_string()), "{}", r.text());
    // Everything re-signed with the other key verifies internally; pinning the real console's
    // fingerprint, known out of band, is what refuses it.
    let mut q = parts();
    q.console = other;
    let pack = dir.path().join("resigned");
    write(&q, &pack);
    let pinned = p.console.public_key().fingerprint().to_string();
    let r = verify(&Options { dir: pack, tenant_key: None, console_key: Some(pinned) });
    assert_eq!(failed(&r), vec![("console key", pkg::CONSOLE_KEY.to_string())], "{}", r.text());
    assert!(r.text().contains("the console key was replaced"), "{}", r.text());
}

#[test]
fn an_unlisted_file_and_a_wrong_tenant_key_fail() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pkg");
    write(&p, &pack);
    std::fs::write(pack.join("segments").join("extra.rvsl"), b"x").unwrap();
    let r = run(&pack, None);
    assert!(failed(&r).contains(&("sums", "segments/extra.rvsl".to_string())), "{}", r.text());
    std::fs::remove_file(pack.join("segments").join("extra.rvsl")).unwrap();

    let wrong = TenantSecretKey::generate().unwrap();
    let key = dir.path().join("wrong.key");
    std::fs::write(&key, wrong.expose_secret_bytes()).unwrap();
    let r = run(&pack, Some(key));
    assert_eq!(failed(&r)[0].0, "frames", "{}", r.text());
}

/// Writes `open/` as `--open` does: every frame decoded to PNG, listed in frames.jsonl, and
/// the events; `paint` may alter one frame's RGB before it is written.
fn write_open(p: &Parts, dir: &Path, paint: impl Fn(&str, usize, &mut Vec<u8>)) {
    use rearview_capture::segment::Segment;
    std::fs::create_dir_all(dir.join("open/frames")).unwrap();
    let (mut frames, mut events) = (String::new(), String::new());
    for (id, sealed) in &p.segments {
        let binding =
            SealBinding { tenant: TENANT, device: DEVICE, segment_id: id.parse().unwrap() };
        let plain = rearview_capture::seal::open(&p.tenant, &binding, sealed).unwrap();
        let seg = Segment::parse(&plain).unwrap();
        for (index, frame) in seg.decode_frames().enumerate() {
            let frame = frame.unwrap();
            let mut bgrx = Vec::new();
            for y in 0..frame.height as usize {
                bgrx.extend_from_slice(
                    &frame.data[y * frame.stride..y * frame.stride + W as usize * 4],
                );
            }
            let mut rgb: Vec<u8> =
                bgrx.chunks_exact(4).flat_map(|px| [px[2], px[1], px[0]]).collect();
            paint(id, index, &mut rgb);
            let file = format!("open/frames/{id}-{index:05}.png");
            let out = std::fs::File::create(dir.join(&file)).unwrap();
            let mut enc = png::Encoder::new(out, W, H);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&rgb).unwrap();
            let kind = match seg.frames()[index].kind {
                rearview_capture::codec::PacketKind::Key => "K",
                rearview_capture::codec::PacketKind::Delta => "D",
                rearview_capture::codec::PacketKind::Same => "S",
            };
            let line = serde_json::json!({"segment": id, "index": index, "monitor": 0,
                "utc_micros": frame.captured_at.utc_micros, "mono_micros": frame.captured_at.mono_micros,
                "kind": kind, "width": W, "height": H, "bgrx_sha256": sha256_hex(&bgrx), "file": file});
            frames.push_str(&format!("{line}\n"));
        }
        for e in seg.events() {
            events.push_str(&format!("{}\n", serde_json::json!({"segment": id, "event": e})));
        }
    }
    std::fs::write(dir.join(pkg::OPEN_FRAMES), frames).unwrap();
    std::fs::write(dir.join(pkg::OPEN_EVENTS), events).unwrap();
    resum(dir);
}

#[test]
fn opened_frames_are_checked_pixel_for_pixel_against_the_sealed_segments() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&p, dir.path());
    let pack = dir.path().join("open");
    write(&p, &pack);
    write_open(&p, &pack, |_, _, _| {});
    let r = run(&pack, Some(key.clone()));
    assert!(r.ok(), "{}", r.text());
    assert!(r.checks.iter().any(|c| c.name == "open frames" && c.ok), "{}", r.text());

    // One pixel of one PNG repainted (and every sum redone): the decoded frame says otherwise.
    let pack = dir.path().join("painted");
    write(&p, &pack);
    let target = p.segments[1].0.clone();
    write_open(&p, &pack, |id, index, rgb| {
        if id == target && index == 2 {
            rgb[100] ^= 0xff;
        }
    });
    let r = run(&pack, Some(key));
    let file = format!("open/frames/{target}-00002.png");
    assert_eq!(failed(&r), vec![("open frames", file)], "{}", r.text());
}
