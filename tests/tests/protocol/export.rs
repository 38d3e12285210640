//! `clip export` opens really sealed segments (written by the recorder core, sealed to the
//! tenant key handed out at enrollment) and writes frames as PNG and events as JSON Lines.

use rearview_capture::seal::{seal, SealBinding, TenantPublicKey};
use rearview_capture::segment::{SegmentContext, SegmentWriter};
use rearview_capture::{Frame, InputEvent, InputKind, MonitorInfo, Timestamp};
use rearview_console::client::AdminClient;
use rearview_uploader::{NewClip, NewSegment, SegmentBytes, Uploader, UploaderConfig};
use serde_json::{json, Value};

use crate::console_support as support;
use crate::support::EnqueueChained;

fn frame(width: u32, height: u32, shade: u8, at_ms: i64) -> Frame {
    let mut f = Frame::black(
        width,
        height,
        Timestamp { utc_micros: at_ms * 1000, mono_micros: at_ms as u64 * 1000 },
    );
    for y in 0..height {
        for (x, px) in f.row_mut(y).chunks_exact_mut(4).enumerate() {
            // BGRX: a horizontal gradient in blue, the frame's shade in red.
            px.copy_from_slice(&[(x % 256) as u8, 0, shade, 0]);
        }
    }
    f
}

/// A console holding clip `clip-x`, and the people who may or may not export it.
struct Exportable {
    dir: tempfile::TempDir,
    /// First exported frame's time, Unix ms: alice is approved for all activities first, and
    /// the clip recorded after that, as the console requires.
    t0: i64,
    admin: String,
    approver: String,
    investigator: String,
}

/// A console holding clip `clip-x`: two segments of 3 frames each, recorded by the recorder
/// core, sealed to the tenant key handed out at enrollment and uploaded by the real uploader;
/// alice types "a" in the second. Besides the admin, an approver and an investigator (iris).
/// The server is stopped again (export runs on the data).
async fn console_with_a_sealed_clip() -> Exportable {
    let (dir, server, out) = support::start_with("rita").await;
    let admin_token = out.admin_token;
    let admin = AdminClient::new(&server.url(), &admin_token, None).unwrap();
    let person = |name: &'static str, role: &'static str| {
        let admin = &admin;
        async move {
            let p: Value = admin
                .post("/api/v1/people", &json!({"name": name, "roles": [role]}))
                .await
                .unwrap();
            p["token"].as_str().unwrap().to_owned()
        }
    };
    let investigator = person("iris", "investigator").await;
    let approver = out.approver_token;
    {
        let rita = AdminClient::new(&server.url(), &approver, None).unwrap();
        support::approve(&admin, &rita, "alice", "all-activities").await;
    }
    let t0 = rearview_uploader::now_ms();
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let up = Uploader::open(UploaderConfig::new(server.url(), state.path())).unwrap();
    let id = up.enroll(t["token"].as_str().unwrap(), "host").await.unwrap();
    let tenant_key: TenantPublicKey = id.sealing_public_key.parse().unwrap();

    // Two segments of 3 frames each, with typed text in the second.
    let mut segs = Vec::new();
    for s in 0..2 {
        let monitor = MonitorInfo {
            id: 0,
            name: "screen".into(),
            x: 0,
            y: 0,
            width: 64,
            height: 48,
            primary: true,
        };
        let mut w = SegmentWriter::new(SegmentContext {
            tenant: id.tenant_id.clone(),
            device: id.device_id.clone(),
            user: "alice".into(),
            session: "s1".into(),
            monitor,
        })
        .unwrap();
        for f in 0..3 {
            let at = t0 + (s * 3 + f) * 1000;
            w.push_frame(&frame(64, 48, (s * 3 + f) as u8 * 40, at)).unwrap();
        }
        if s == 1 {
            w.push_event(InputEvent {
                at: Timestamp { utc_micros: (t0 + 3500) * 1000, mono_micros: 0 },
                kind: InputKind::KeyPress { key: "a".into(), text: Some("a".into()) },
            })
            .unwrap();
        }
        let finished = w.finish().unwrap();
        let binding = SealBinding {
            tenant: &id.tenant_id,
            device: &id.device_id,
            segment_id: finished.header.id,
        };
        let sealed = seal(&tenant_key, &binding, &finished.plaintext).unwrap();
        segs.push(NewSegment {
            start_ms: t0 + s * 3000,
            end_ms: t0 + s * 3000 + 2000,
            bytes: SegmentBytes::Bytes(sealed),
        });
    }
    up.enqueue_chained(
        NewClip {
            clip_id: "clip-x".into(),
            trigger_id: None,
            mode: rearview_protocol::CaptureMode::AllActivities,
            user: "alice".into(),
            start_ms: t0,
            end_ms: t0 + 6000,
            missing: vec![],
            open: false,
            chain: vec![],
            absent: vec![],
        },
        segs,
    )
    .unwrap();
    up.send_pending().await.unwrap();
    assert_eq!(up.status().unwrap().spool.sent_clips, 1);
    server.shutdown().await.unwrap();
    Exportable { dir, t0, admin: admin_token, approver, investigator }
}

/// Runs `rearview-console clip export` under `umask`, with `token` in `$REARVIEW_TOKEN` when
/// given (and nothing else naming a token).
fn export_cli(
    data: &std::path::Path,
    id: &str,
    out: &std::path::Path,
    token: Option<&str>,
    umask: &str,
) -> std::process::Output {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_e2e-rearview-console"))
        .args(["clip", "export", id, "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .env_remove("REARVIEW_TOKEN");
    if let Some(t) = token {
        cmd.env("REARVIEW_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_opens_sealed_segments_into_png_and_jsonl() {
    let clip = console_with_a_sealed_clip().await;
    let (dir, iris) = (&clip.dir, Some(clip.investigator.as_str()));
    let t0 = clip.t0;
    let out = dir.path().join("export");
    let summary = rearview_console::export::export_clip(dir.path(), iris, "clip-x", &out).unwrap();
    assert_eq!((summary.segments, summary.frames, summary.events), (2, 6, 1));
    assert!(summary.complete);
    let frames: Vec<Value> = std::fs::read_to_string(out.join("frames.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 6);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["utc_ms"], json!(t0 + i as i64 * 1000));
        assert_eq!(f["utc_micros"], json!((t0 + i as i64 * 1000) * 1000));
        assert_eq!(f["mono_micros"], json!((t0 + i as i64 * 1000) * 1000));
        // Each segment starts with a keyframe; its place in the segment is named.
        assert_eq!(f["index"], json!(i % 3));
        assert_eq!(f["kind"] == "K", i % 3 == 0, "{f}");
        let png = image::open(out.join(f["file"].as_str().unwrap())).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (64, 48));
        // Lossless: red = the frame's shade, blue = x.
        assert_eq!(png.get_pixel(10, 5).0, [i as u8 * 40, 0, 10]);
        assert_eq!(png.get_pixel(63, 47).0, [i as u8 * 40, 0, 63]);
    }
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(event["kind"]["text"], json!("a"));
    // Exporting into a non-empty directory is refused rather than mixing clips.
    assert!(rearview_console::export::export_clip(dir.path(), iris, "clip-x", &out).is_err());
    assert!(rearview_console::export::export_clip(
        dir.path(),
        iris,
        "no-such-clip",
        &dir.path().join("e2")
    )
    .is_err());
}

/// The same, as an investigator runs it on the console host: the binary prints the summary as
/// JSON; an unknown clip is a clear error that writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_export_cli_writes_frames_and_events_and_names_an_unknown_clip() {
    let clip = console_with_a_sealed_clip().await;
    let dir = &clip.dir;
    let run = |id: &str, out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_e2e-rearview-console"))
            .args(["clip", "export", id, "--data"])
            .arg(dir.path())
            .arg("--out")
            .arg(out)
            .args(["--token", &clip.investigator])
            .env_remove("REARVIEW_TOKEN")
            .output()
            .unwrap()
    };
    let out = dir.path().join("export");
    let done = run("clip-x", &out);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let summary: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"clip_id": "clip-x", "out": out, "segments": 2, "frames": 6, "events": 1,
               "complete": true})
    );
    let mut pngs: Vec<String> = std::fs::read_dir(out.join("frames"))
        .unwrap()
        .map(|e| format!("frames/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    pngs.sort();
    let lines: Vec<Value> = std::fs::read_to_string(out.join("frames.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let named: Vec<&str> = lines.iter().map(|l| l["file"].as_str().unwrap()).collect();
    assert_eq!(named, pngs, "frames.jsonl names every PNG, in time order");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["clip_id"], json!("clip-x"));

    let elsewhere = dir.path().join("nothing");
    let failed = run("no-such-clip", &elsewhere);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("no clip no-such-clip") && stderr.contains("clip list"), "{stderr}");
    assert!(failed.stdout.is_empty());
    assert!(!elsewhere.exists(), "nothing written for an unknown clip");
}

/// Only an investigator may export (the token is checked against the console's database):
/// without a token, with an unknown one, as admin or as approver the export is refused and
/// writes nothing. An investigator's export is audited: who, which clip, where, how many
/// frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_export_needs_an_investigator_and_every_export_is_audited() {
    let clip = console_with_a_sealed_clip().await;
    let data = clip.dir.path();
    let refusals = [
        (None, "needs an investigator's API token"),
        (
            Some("rvp_0000000000000000000000000000000000000000000000000000000000000000"),
            "unknown API token",
        ),
        (Some(clip.admin.as_str()), "needs the role investigator"),
        (Some(clip.approver.as_str()), "needs the role investigator"),
    ];
    for (i, (token, says)) in refusals.into_iter().enumerate() {
        let out = data.join(format!("refused-{i}"));
        let done = export_cli(data, "clip-x", &out, token, "022");
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "export {i} with {token:?} was not refused");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!out.exists(), "a refused export wrote {}", out.display());
    }

    let out = data.join("by-iris");
    let done = export_cli(data, "clip-x", &out, Some(&clip.investigator), "022");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let conn = rusqlite::Connection::open(data.join("console.db")).unwrap();
    let exports: Vec<(String, String, String)> = conn
        .prepare("SELECT actor, target, details_json FROM audit WHERE action = 'clip.export'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(exports.len(), 1, "{exports:?}");
    let (actor, target, details) = &exports[0];
    assert_eq!((actor.as_str(), target.as_str()), ("person:iris", "clip:clip-x"));
    let details: Value = serde_json::from_str(details).unwrap();
    assert_eq!(details["out"], json!(out));
    assert_eq!(details["frames"], json!(6));
}

/// The export is plaintext evidence: its directories are 0700 and its files 0600 whatever
/// the umask of the investigator running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_export_is_private_whatever_the_umask() {
    let clip = console_with_a_sealed_clip().await;
    for umask in ["022", "000"] {
        let out = clip.dir.path().join(format!("umask-{umask}"));
        let done = export_cli(clip.dir.path(), "clip-x", &out, Some(&clip.investigator), umask);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        let mut files = 0;
        for dir in [out.clone(), out.join("frames")] {
            assert_eq!(mode(&dir), 0o700, "umask {umask}: {}", dir.display());
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    assert_eq!(mode(&path), 0o600, "umask {umask}: {}", path.display());
                    files += 1;
                }
            }
        }
        // manifest.json, frames.jsonl, events.jsonl and the 6 frames.
        assert_eq!(files, 9, "umask {umask}");
    }
}
