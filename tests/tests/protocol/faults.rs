use std::collections::HashSet;
use std::time::Duration;

use rearview_uploader::{SegmentBytes, Uploader};
use serde_json::json;

use crate::support::*;

fn sha(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Every original segment is on the console exactly once, byte for byte, and the clip is complete.
async fn assert_complete_no_dup_no_loss(
    console: &TestConsole,
    clip_id: &str,
    originals: &[Vec<u8>],
) {
    let clip = console.clip(clip_id).await;
    assert_eq!(clip["complete"], json!(true), "{clip}");
    let stored = console.stored_segments();
    let names: HashSet<&String> = stored.iter().map(|(_, s, _)| s).collect();
    assert_eq!(names.len(), stored.len(), "a segment stored twice");
    assert_eq!(stored.len(), originals.len());
    assert_eq!(
        console.blob_files().len(),
        originals.len(),
        "stray blob files: {:?}",
        console.blob_files()
    );
    for bytes in originals {
        let h = sha(bytes);
        let (dev, _, _) = stored.iter().find(|(_, s, _)| *s == h).expect("segment lost");
        let blob =
            std::fs::read(console.data().join("blobs").join(dev).join(&h[..2]).join(&h)).unwrap();
        assert!(blob == *bytes, "segment {h} differs on the console");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_restarted_mid_upload() {
    let mut console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    let proxy = FaultProxy::start(console.addr).await;
    // ~1.6 MB/s through the proxy: 24 × 100 kB take a few seconds, time to pull the plug.
    proxy.throttle(10_000);
    let device = TestDevice::enroll(&console, &proxy.url()).await;
    let segs = segments(24, 100_000, rearview_uploader::now_ms());
    let originals: Vec<Vec<u8>> = segs.iter().map(|(_, b)| b.clone()).collect();
    device
        .uploader
        .enqueue_chained(new_clip("clip-r", None, 24), segs.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    let _running = device.uploader.start().unwrap();

    let data = console.data().to_owned();
    eventually("some segments stored", Duration::from_secs(30), || count_segments(&data) >= 3)
        .await;
    console.stop().await;
    let stored_before = count_segments(&data);
    assert!(
        stored_before < 24,
        "upload finished before the console stopped; the test proved nothing"
    );
    let up = device.uploader.clone();
    eventually("uploader notices", Duration::from_secs(20), || {
        !up.status().unwrap().server_reachable
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    console.restart().await;
    proxy.throttle(0);
    eventually("clip sent after restart", Duration::from_secs(60), || {
        up.status().unwrap().spool.sent_clips == 1
    })
    .await;
    assert_complete_no_dup_no_loss(&console, "clip-r", &originals).await;
}

fn count_segments(data: &std::path::Path) -> usize {
    let conn = rusqlite::Connection::open(data.join("console.db")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM segments", [], |r| r.get::<_, i64>(0)).unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_answering_5xx_then_hanging_then_recovering() {
    let console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    let proxy = FaultProxy::start(console.addr).await;
    let device = TestDevice::enroll(&console, &proxy.url()).await;
    let segs = segments(4, 20_000, rearview_uploader::now_ms());
    let originals: Vec<Vec<u8>> = segs.iter().map(|(_, b)| b.clone()).collect();

    proxy.set_mode(Mode::Fail);
    device
        .uploader
        .enqueue_chained(new_clip("clip-f", None, 4), segs.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    let err = device.uploader.send_pending().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(
        device.uploader.status().unwrap().spool.pending_clips,
        1,
        "a failed send keeps the clip"
    );

    proxy.set_mode(Mode::Hang);
    let err = device.uploader.send_pending().await.unwrap_err();
    assert!(err.is_retryable(), "a hanging console is a retryable failure: {err}");

    // The running loop keeps retrying with backoff through both faults and delivers once healed.
    proxy.set_mode(Mode::Fail);
    let _running = device.uploader.start().unwrap();
    let up = device.uploader.clone();
    eventually("failure recorded", Duration::from_secs(10), || {
        up.status().unwrap().last_error.is_some()
    })
    .await;
    proxy.set_mode(Mode::Hang);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set_mode(Mode::Pass);
    eventually("clip sent", Duration::from_secs(30), || up.status().unwrap().spool.sent_clips == 1)
        .await;
    assert_complete_no_dup_no_loss(&console, "clip-f", &originals).await;
    assert!(up.status().unwrap().server_reachable);
}

/// An answer cut short after its headers (a console dying mid-answer) or a whole answer that
/// is not JSON (a broken middlebox) is a failure to retry, never a refusal: the clip and its
/// files stay. A console that accepts the push stream's connection and never answers does not
/// hold the stream forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cut_short_or_garbled_keep_the_clip_and_a_silent_stream_is_retried() {
    let console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    let proxy = FaultProxy::start(console.addr).await;
    let device = TestDevice::enroll(&console, &proxy.url()).await;
    // A second device with nothing to send, whose only traffic is the push stream.
    let listener = TestDevice::enroll(&console, &proxy.url()).await;
    let segs = segments(3, 20_000, rearview_uploader::now_ms());
    let originals: Vec<Vec<u8>> = segs.iter().map(|(_, b)| b.clone()).collect();
    device
        .uploader
        .enqueue_chained(new_clip("clip-g", None, 3), segs.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    let spooled = device.uploader.status().unwrap().spool.spooled_bytes;
    for (mode, says) in [(Mode::CutBody, "unreachable"), (Mode::Garbage, "not the expected JSON")] {
        proxy.set_mode(mode);
        let err = device.uploader.send_pending().await.unwrap_err();
        assert!(err.to_string().contains(says), "{mode:?}: {err}");
        assert!(!err.sets_clip_aside(), "{mode:?}: {err}");
        let status = device.uploader.status().unwrap();
        assert_eq!((status.spool.pending_clips, status.refused_clips), (1, 0), "{mode:?}");
        assert_eq!(status.spool.spooled_bytes, spooled, "{mode:?}: spooled files kept");
    }

    // The push stream against a console that never answers: the opening times out (3 s in
    // these tests) and is tried again; once the console answers, the stream is up.
    proxy.set_mode(Mode::Hang);
    let _listening = listener.uploader.start().unwrap();
    let other = listener.uploader.clone();
    eventually("the silent stream opening reported", Duration::from_secs(20), || {
        other.status().unwrap().last_error.is_some_and(|e| e.contains("push stream: no answer"))
    })
    .await;
    proxy.set_mode(Mode::Pass);
    eventually("stream connected", Duration::from_secs(30), || {
        other.status().unwrap().stream_connected
    })
    .await;
    let _running = device.uploader.start().unwrap();
    let up = device.uploader.clone();
    eventually("clip sent", Duration::from_secs(30), || up.status().unwrap().spool.sent_clips == 1)
        .await;
    assert_complete_no_dup_no_loss(&console, "clip-g", &originals).await;
}

/// Not a test of its own: the body of the child process `uploader_killed_mid_upload` starts
/// and SIGKILLs. Does nothing unless that test set the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_uploader_process() {
    let (Ok(server), Ok(state)) =
        (std::env::var("REARVIEW_TEST_CHILD_SERVER"), std::env::var("REARVIEW_TEST_CHILD_STATE"))
    else {
        return;
    };
    let up = Uploader::open(uploader_config(&server, std::path::Path::new(&state))).unwrap();
    let _running = up.start().unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_killed_mid_upload() {
    let console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    let proxy = FaultProxy::start(console.addr).await;
    proxy.throttle(10_000);
    let state = tempfile::tempdir().unwrap();
    let originals: Vec<Vec<u8>>;
    {
        // Enroll and spool with this process, then hand the state directory to the child.
        let up = Uploader::open(uploader_config(&proxy.url(), state.path())).unwrap();
        let token = console.enrollment_token(600).await;
        up.enroll(&token, "child-host").await.unwrap();
        let segs = segments(24, 100_000, rearview_uploader::now_ms());
        originals = segs.iter().map(|(_, b)| b.clone()).collect();
        // One segment handed over as a file, as the ring would.
        let mut segs: Vec<_> = segs.into_iter().map(|(s, _)| s).collect();
        let file = state.path().join("ring-segment");
        std::fs::write(&file, &originals[0]).unwrap();
        segs[0].bytes = SegmentBytes::File(file);
        up.enqueue_chained(new_clip("clip-k", None, 24), segs).unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "faults::child_uploader_process", "--nocapture"])
        .env("REARVIEW_TEST_CHILD_SERVER", proxy.url())
        .env("REARVIEW_TEST_CHILD_STATE", state.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let data = console.data().to_owned();
    eventually("child uploaded some segments", Duration::from_secs(60), || {
        count_segments(&data) >= 3
    })
    .await;
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = count_segments(&data);
    assert!(stored < 24, "upload finished before the kill; the test proved nothing");
    assert_eq!(console.clip("clip-k").await["complete"], json!(false));

    proxy.throttle(0);
    let up = Uploader::open(uploader_config(&proxy.url(), state.path())).unwrap();
    assert_eq!(up.status().unwrap().spool.pending_clips, 1, "the spool survived the kill");
    up.send_pending().await.unwrap();
    assert_eq!(up.status().unwrap().spool.sent_clips, 1);
    assert_eq!(up.status().unwrap().spool.spooled_bytes, 0);
    assert_complete_no_dup_no_loss(&console, "clip-k", &originals).await;
}
