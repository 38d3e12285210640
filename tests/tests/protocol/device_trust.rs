//! What the console must not take on a device's word, as the real uploader meets it: a refused
//! clip is set aside and the next sent; a clip answered 429 is kept (the raw-HTTP cases are in
//! `console/tests/device_trust.rs`; the console helpers are shared with them).

use std::sync::Arc;
use std::time::Duration;

use rearview_console::IngestLimits;
use rearview_uploader::{now_ms, NewClip, NewSegment, SegmentBytes, Uploader, UploaderConfig};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::console_support::device_trust::*;
use crate::support::EnqueueChained;

/// A real uploader enrolled with `c`, in its own state directory (keep it alive), and the same
/// device as raw HTTP sees it (its id, and its token from the uploader's identity file).
async fn uploader_device(c: &Console) -> (tempfile::TempDir, Arc<Uploader>, Device) {
    let t: Value = c.admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let up = Uploader::open(UploaderConfig::new(c.url.clone(), state.path())).unwrap();
    let identity = up.enroll(t["token"].as_str().unwrap(), "host").await.unwrap();
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("identity.json")).unwrap())
            .unwrap();
    let token = file["device_token"].as_str().unwrap().to_owned();
    let key = up.chain_signer().unwrap();
    let chains =
        crate::console_support::Enrolled::chains(key, &identity.tenant_id, &identity.device_id);
    let dev = Device {
        token,
        id: identity.device_id.clone(),
        chains: std::sync::Mutex::new(chains),
        sealing_public_key: identity.sealing_public_key.clone(),
    };
    (state, up, dev)
}

/// An all-activities clip of `user` for the spool: one segment, `bytes`, over `[at, at + 1 s)`.
fn spooled_clip(id: &str, user: &str, at: i64, bytes: Vec<u8>) -> (NewClip, Vec<NewSegment>) {
    let clip = NewClip {
        clip_id: id.into(),
        trigger_id: None,
        mode: rearview_protocol::CaptureMode::AllActivities,
        user: user.into(),
        start_ms: at,
        end_ms: at + 1000,
        missing: vec![],
        open: false,
        chain: vec![],
        absent: vec![],
    };
    (clip, vec![NewSegment { start_ms: at, end_ms: at + 1000, bytes: SegmentBytes::Bytes(bytes) }])
}

/// A clip the console refuses is set aside by the real uploader, and the clip after it is
/// still sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_sets_a_refused_clip_aside_and_sends_the_next() {
    let c = Console::start().await;
    c.approve("alice", "all-activities").await;
    let (_state, up, _) = uploader_device(&c).await;
    let now = now_ms();
    let (m1, s1) = spooled_clip("u-mallory", "mallory", now, bytes(7, 500));
    let (m2, s2) = spooled_clip("u-alice", "alice", now, bytes(8, 500));
    up.enqueue_chained(m1, s1).unwrap();
    up.enqueue_chained(m2, s2).unwrap();
    up.send_pending().await.unwrap();
    assert_eq!(up.clip_state("u-mallory").unwrap().map(|s| s.as_str()), Some("refused"));
    assert_eq!(up.clip_state("u-alice").unwrap().map(|s| s.as_str()), Some("sent"));
    c.server.shutdown().await.unwrap();
}

/// The uploader keeps a clip answered 429 (tries again later), it does not set it aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_keeps_a_clip_answered_429() {
    let c = Console::start_with(IngestLimits { uploads_per_device: 1, ..IngestLimits::default() })
        .await;
    c.approve("alice", "all-activities").await;
    let (_state, up, dev) = uploader_device(&c).await;
    let now = now_ms();
    // The device's one upload allowed is held mid-body, on a connection of its own.
    let held = bytes(50, 100_000);
    let m = one_segment("k-held", &dev, "alice", "all-activities", (now, now + 1000), &held);
    c.expect(&dev, &m, 200).await;
    let mut s = start_upload(&c.url, &dev, &sha(&held), held.len(), &held[..10]).await;
    rearview_testkit::eventually("the held upload in flight", Duration::from_secs(10), || {
        !incoming_files(&c).is_empty()
    })
    .await;
    let (clip, segs) = spooled_clip("k-next", "alice", now, bytes(51, 1000));
    up.enqueue_chained(clip, segs).unwrap();
    let err = up.send_pending().await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(up.clip_state("k-next").unwrap().map(|s| s.as_str()), Some("pending"));
    s.write_all(&held[10..]).await.unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().0, 200);
    up.send_pending().await.unwrap();
    assert_eq!(up.clip_state("k-next").unwrap().map(|s| s.as_str()), Some("sent"));
    c.server.shutdown().await.unwrap();
}
