//! The device's own storage failing under a pending clip: a spool file gone, a spool file that
//! cannot be read, the spool database failing, the disk full. Only the console refusing a clip
//! may set it aside; none of these does. A file that is gone becomes a missing range and the
//! rest of the clip completes; everything else keeps the clip, whole, until the fault clears.

use std::path::{Path, PathBuf};

use rearview_uploader::{NewClip, UploadError};
use serde_json::{json, Value};

use crate::support::*;

fn sha(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn spool_file(device: &TestDevice, bytes: &[u8]) -> PathBuf {
    device.dir.path().join("spool").join("segments").join(sha(bytes))
}

/// Files in the spool's segment directory (temporary ones included).
fn spool_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("spool").join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The hashes a console clip names, in order.
fn named(clip: &Value) -> Vec<String> {
    clip["manifest"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sha256"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends until the spool says `sent` clips are done; a failing pass is reported, not hidden.
async fn send_until_sent(device: &TestDevice, sent: u64) {
    for _ in 0..5 {
        match device.uploader.send_pending().await {
            Ok(()) if device.uploader.status().unwrap().spool.sent_clips >= sent => return,
            Ok(()) => {}
            Err(e) => panic!("send failed: {e}"),
        }
    }
    panic!("clip not sent: {:?}", device.uploader.status().unwrap());
}

/// A console and an enrolled device whose spool holds closed clip `clip_id` of three 20 kB
/// segments (their bytes returned, in time order), not sent yet.
async fn spooled_clip(clip_id: &str) -> (TestConsole, TestDevice, Vec<(i64, i64)>, Vec<Vec<u8>>) {
    let console = TestConsole::start().await;
    // The console takes clips only of a user approved for that mode (review finding 6).
    console.approve(USER, "all-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let segs = segments(3, 20_000, rearview_uploader::now_ms());
    let spans = segs.iter().map(|(s, _)| (s.start_ms, s.end_ms)).collect();
    let originals = segs.iter().map(|(_, b)| b.clone()).collect();
    device
        .uploader
        .enqueue_chained(new_clip(clip_id, None, 3), segs.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    (console, device, spans, originals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_spool_file_becomes_a_missing_range_and_the_rest_of_the_clip_completes() {
    let (console, device, spans, originals) = spooled_clip("clip-lost").await;
    let (lost_start, lost_end) = spans[1];
    std::fs::remove_file(spool_file(&device, &originals[1])).unwrap();

    send_until_sent(&device, 1).await;
    let clip = console.clip("clip-lost").await;
    assert_eq!(clip["complete"], json!(true), "{clip}");
    assert_eq!(named(&clip), vec![sha(&originals[0]), sha(&originals[2])], "{clip}");
    let missing = clip["manifest"]["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{clip}");
    assert_eq!(
        (missing[0]["start_ms"].as_i64(), missing[0]["end_ms"].as_i64()),
        (Some(lost_start), Some(lost_end))
    );
    let reason = missing[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("lost on the device") && reason.contains(&sha(&originals[1])),
        "{reason}"
    );
    let stored: Vec<String> = console.stored_segments().into_iter().map(|(_, s, _)| s).collect();
    let mut want = vec![sha(&originals[0]), sha(&originals[2])];
    want.sort();
    assert_eq!(stored, want);
    let status = device.uploader.status().unwrap();
    assert_eq!((status.refused_clips, status.spool.lost_files), (0, 1), "{status:?}");
    assert!(status.warnings.iter().any(|w| w.contains("lost on this device")), "{status:?}");
    let audit: Vec<Value> = console.admin.get("/api/v1/audit").await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "clip.segments_lost" && a["target"] == "clip:clip-lost"),
        "{audit:?}"
    );
}

/// An open clip whose console manifest already names a segment the device then loses: the
/// device names it missing, and the clip's close keeps naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_lost_from_an_open_clip_is_named_missing_by_its_close() {
    let console = TestConsole::start().await;
    // The console takes clips only of a user approved for that mode (review finding 6).
    console.approve(USER, "all-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let segs = segments(4, 20_000, rearview_uploader::now_ms());
    let originals: Vec<Vec<u8>> = segs.iter().map(|(_, b)| b.clone()).collect();
    let mut segs: Vec<_> = segs.into_iter().map(|(s, _)| s).collect();
    let last = segs.pop().unwrap();
    let open = NewClip { open: true, ..new_clip("clip-open", None, 4) };
    device.uploader.enqueue_chained(open.clone(), segs).unwrap();
    std::fs::remove_file(spool_file(&device, &originals[1])).unwrap();
    device.uploader.send_pending().await.unwrap();
    let clip = console.clip("clip-open").await;
    assert_eq!(clip["complete"], json!(false), "an open clip is never complete");
    assert_eq!(named(&clip), vec![sha(&originals[0]), sha(&originals[2])], "{clip}");

    // The window ends: the agent closes it with one more segment and its own missing ranges.
    let close = NewClip { open: false, ..open };
    device.uploader.enqueue_chained(close, vec![last]).unwrap();
    send_until_sent(&device, 1).await;
    let clip = console.clip("clip-open").await;
    assert_eq!(clip["complete"], json!(true), "{clip}");
    assert_eq!(
        named(&clip),
        vec![sha(&originals[0]), sha(&originals[2]), sha(&originals[3])],
        "{clip}"
    );
    let missing = clip["manifest"]["missing"].as_array().unwrap();
    assert!(
        missing.iter().any(|m| m["reason"].as_str().unwrap().contains(&sha(&originals[1]))),
        "the close still names the lost segment: {clip}"
    );
}

/// A spool file that is there but cannot be read (here: a directory where the file should
/// be, EISDIR) is not a lost file and not a refusal: the clip and every file stay, status
/// says why, and the clip uploads whole once the file reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_spool_file_keeps_the_clip_until_it_reads_again() {
    let (console, device, _, originals) = spooled_clip("clip-eio").await;
    let broken = spool_file(&device, &originals[1]);
    std::fs::remove_file(&broken).unwrap();
    std::fs::create_dir(&broken).unwrap();

    let err = device.uploader.send_pending().await.unwrap_err();
    assert!(err.is_local() && !err.sets_clip_aside(), "{err}");
    let status = device.uploader.status().unwrap();
    assert_eq!((status.spool.pending_clips, status.refused_clips), (1, 0), "{status:?}");
    assert!(status.warnings.iter().any(|w| w.contains("spool failed")), "{status:?}");
    let on_console: Vec<String> =
        console.stored_segments().into_iter().map(|(_, s, _)| s).collect();
    for bytes in &originals {
        assert!(
            on_console.contains(&sha(bytes)) || spool_file(&device, bytes).exists(),
            "segment {} is neither on the console nor in the spool",
            sha(bytes)
        );
    }
    assert_eq!(console.clip("clip-eio").await["complete"], json!(false));

    std::fs::remove_dir(&broken).unwrap();
    std::fs::write(&broken, &originals[1]).unwrap();
    send_until_sent(&device, 1).await;
    let clip = console.clip("clip-eio").await;
    assert_eq!(clip["complete"], json!(true), "{clip}");
    assert_eq!(named(&clip).len(), 3);
    assert_eq!(clip["manifest"]["missing"], json!([]));
    assert!(device.uploader.status().unwrap().warnings.is_empty());
}

/// The spool database failing mid-upload (a real SQLite error: a trigger in the spool's own
/// database makes marking a segment sent fail) deletes no file and keeps the clip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_database_error_deletes_no_file() {
    let (console, device, _, _) = spooled_clip("clip-db").await;
    let files = spool_files(device.dir.path());
    assert_eq!(files.len(), 3);
    let db = rusqlite::Connection::open(device.dir.path().join("spool").join("spool.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_sent BEFORE UPDATE OF sent ON segments
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();

    let err = device.uploader.send_pending().await.unwrap_err();
    assert!(matches!(err, UploadError::Database(_)), "{err}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    let status = device.uploader.status().unwrap();
    assert_eq!((status.spool.pending_clips, status.refused_clips), (1, 0), "{status:?}");
    assert_eq!(spool_files(device.dir.path()), files, "no spool file deleted");

    db.execute_batch("DROP TRIGGER fail_sent;").unwrap();
    send_until_sent(&device, 1).await;
    let clip = console.clip("clip-db").await;
    assert_eq!(clip["complete"], json!(true), "{clip}");
    assert_eq!(named(&clip).len(), 3);
}

/// Fills the filesystem of `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

/// The spool on a real, full filesystem: sending fails with a visible "disk full", every clip
/// and file stays, a new clip is refused without leaving a partial copy behind, and both
/// upload once there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_every_clip_and_they_upload_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let _mount = match rearview_testkit::tmpfs::Tmpfs::mount(tmp.path(), "8m") {
        Ok(m) => m,
        Err(reason) => {
            eprintln!(
                "SKIPPED a_full_disk_keeps_every_clip_and_they_upload_once_there_is_room: {reason}"
            );
            return;
        }
    };
    let console = TestConsole::start().await;
    // The console takes clips only of a user approved for that mode (review finding 6).
    console.approve(USER, "all-activities").await;
    let state = tmp.path().join("state");
    let uploader =
        rearview_uploader::Uploader::open(uploader_config(&console.url(), &state)).unwrap();
    uploader.enroll(&console.enrollment_token(600).await, "full-host").await.unwrap();
    let device = TestDevice { dir: tempfile::tempdir().unwrap(), uploader };
    let segs = segments(3, 200_000, rearview_uploader::now_ms());
    device
        .uploader
        .enqueue_chained(new_clip("clip-a", None, 3), segs.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    let files = spool_files(&state);

    let filler = fill(tmp.path());
    let err = device.uploader.send_pending().await.unwrap_err();
    assert!(err.is_local() && err.is_disk_full(), "{err}");
    let status = device.uploader.status().unwrap();
    assert_eq!((status.spool.pending_clips, status.refused_clips), (1, 0), "{status:?}");
    assert!(status.warnings.iter().any(|w| w.contains("disk is full")), "{status:?}");
    assert_eq!(spool_files(&state), files, "no spool file deleted");
    let more = segments(2, 200_000, rearview_uploader::now_ms());
    let next: Vec<_> = more.iter().map(|(s, _)| s.clone()).collect();
    let err =
        device.uploader.enqueue_chained(new_clip("clip-b", None, 2), next.clone()).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert_eq!(spool_files(&state), files, "a failed enqueue leaves no partial copy");

    std::fs::remove_file(filler).unwrap();
    device.uploader.enqueue_chained(new_clip("clip-b", None, 2), next).unwrap();
    send_until_sent(&device, 2).await;
    for id in ["clip-a", "clip-b"] {
        assert_eq!(console.clip(id).await["complete"], json!(true), "{id}");
    }
    assert!(device.uploader.status().unwrap().warnings.is_empty());
}

/// The console's side of giving up lost segments: a device may drop from an incomplete clip
/// only segments the console does not hold, each covered by a missing range, and a closed clip
/// gains nothing else that way; a complete clip cannot change at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lets_a_device_give_up_only_segments_it_does_not_hold() {
    use rearview_protocol::{ClipManifest, ManifestSegment, MissingRange};
    use rearview_uploader::client::{Client, ClientConfig};

    let console = TestConsole::start().await;
    // The console takes clips only of a user approved for that mode (review finding 6).
    console.approve(USER, "all-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let identity: Value =
        serde_json::from_slice(&std::fs::read(device.dir.path().join("identity.json")).unwrap())
            .unwrap();
    let client = Client::new(
        &ClientConfig::new(console.url()),
        Some(identity["device_token"].as_str().unwrap().to_owned()),
    )
    .unwrap();
    // Recorded now: the console takes clips only from within the user's approval.
    let t0 = rearview_uploader::now_ms();
    let segs = segments(4, 1000, t0);
    let parts: Vec<ManifestSegment> = segs
        .iter()
        .map(|(s, b)| ManifestSegment {
            sha256: sha(b),
            size: b.len() as u64,
            start_ms: s.start_ms.into(),
            end_ms: s.end_ms.into(),
        })
        .collect();
    // Segments 0..=2 are the clip's chain; each it does not name has the device's note.
    let news: Vec<_> = segs.iter().map(|(s, _)| s.clone()).collect();
    let chain = chain_entries(&device.uploader, USER, &news[..3]).unwrap();
    let signer = device.uploader.chain_signer().unwrap();
    let note = |i: usize| {
        let reason = "segment lost on the device";
        rearview_protocol::Absence::sign(&signer, &chain[i], "clip-rules", reason).unwrap()
    };
    let manifest = |segments: &[usize], missing: &[usize]| ClipManifest {
        clip_id: "clip-rules".into(),
        trigger_id: None,
        mode: rearview_protocol::CaptureMode::AllActivities,
        user: USER.into(),
        device_id: identity["device_id"].as_str().unwrap().into(),
        start_ms: t0.into(),
        end_ms: (t0 + 4000).into(),
        segments: segments.iter().map(|&i| parts[i].clone()).collect(),
        missing: missing
            .iter()
            .map(|&i| MissingRange {
                start_ms: parts[i].start_ms,
                end_ms: parts[i].end_ms,
                reason: "segment lost on the device".into(),
            })
            .collect(),
        open: false,
        chain: chain.clone(),
        absent: (0..3).filter(|i| !segments.contains(i)).map(note).collect(),
    };
    client.put_manifest(&manifest(&[0, 1, 2], &[])).await.unwrap();
    client.put_segment(&parts[0].sha256, segs[0].1.clone()).await.unwrap();

    let refused = [
        ("a held segment", manifest(&[1, 2], &[0])),
        ("without a missing range", manifest(&[0, 2], &[])),
        ("while adding a segment", manifest(&[0, 2, 3], &[1])),
    ];
    for (what, m) in refused {
        let err = client.put_manifest(&m).await.unwrap_err();
        assert!(matches!(err, UploadError::Refused { status: 409, .. }), "{what}: {err}");
    }
    let status = client.put_manifest(&manifest(&[0, 2], &[1])).await.unwrap();
    assert_eq!(status.missing, vec![parts[2].sha256.clone()]);
    let ack = client.put_segment(&parts[2].sha256, segs[2].1.clone()).await.unwrap();
    assert_eq!(ack.completed_clips, vec!["clip-rules".to_string()]);
    let err = client.put_manifest(&manifest(&[0], &[1, 2])).await.unwrap_err();
    assert!(matches!(err, UploadError::Refused { status: 409, .. }), "complete: {err}");
    let clip = console.clip("clip-rules").await;
    assert_eq!(named(&clip), vec![parts[0].sha256.clone(), parts[2].sha256.clone()]);
}
