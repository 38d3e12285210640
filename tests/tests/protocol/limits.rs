use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_upload_limit_warns_then_stops_and_keeps_the_rest() {
    let console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    console.approve("bob", "all-activities").await;
    console.settings(json!({"capture": {"enabled": true}, "limits": {"upload_bytes_per_user_per_day": 10_000}})).await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    device.uploader.sync_policy().await.unwrap().expect("policy");
    assert_eq!(device.uploader.status().unwrap().upload_limit_per_user_per_day, 10_000);

    // 9 200 bytes: sent, and a warning at ≥ 90 %.
    let a = segments(2, 4_600, rearview_uploader::now_ms());
    device
        .uploader
        .enqueue_chained(new_clip("clip-1", None, 2), a.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    device.uploader.send_pending().await.unwrap();
    let status = device.uploader.status().unwrap();
    assert_eq!(status.spool.sent_clips, 1);
    assert_eq!(status.bytes_today.get(USER), Some(&9_200));
    assert!(status.warnings.iter().any(|w| w.contains("90 %")), "{:?}", status.warnings);

    // The next 2 × 1 000 bytes would pass 100 %: the clip stays spooled, nothing is sent.
    let b = segments(2, 1_000, rearview_uploader::now_ms());
    device
        .uploader
        .enqueue_chained(new_clip("clip-2", None, 2), b.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    device.uploader.send_pending().await.unwrap();
    let status = device.uploader.status().unwrap();
    assert_eq!(status.spool.sent_clips, 1);
    assert_eq!(status.spool.pending_clips, 1);
    assert_eq!(status.spool.spooled_bytes, 2_000);
    assert_eq!(status.bytes_today.get(USER), Some(&9_200));
    assert_eq!(console.stored_segments().len(), 2);
    // Another user has a budget of their own.
    let c = segments(1, 3_000, rearview_uploader::now_ms());
    let mut clip = new_clip("clip-bob", None, 1);
    clip.user = "bob".into();
    device.uploader.enqueue_chained(clip, c.into_iter().map(|(s, _)| s).collect()).unwrap();
    device.uploader.send_pending().await.unwrap();
    let status = device.uploader.status().unwrap();
    assert_eq!(status.spool.sent_clips, 2);
    assert_eq!(status.spool.pending_clips, 1, "alice's clip still waits");

    // Raising the limit lets it through.
    console.settings(json!({"capture": {"enabled": true}, "limits": {"upload_bytes_per_user_per_day": 20_000}})).await;
    device.uploader.sync_policy().await.unwrap().expect("new policy");
    device.uploader.send_pending().await.unwrap();
    assert_eq!(device.uploader.status().unwrap().spool.sent_clips, 3);
    assert_eq!(console.clip("clip-2").await["complete"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_cache_overwrites_oldest_and_reports_the_loss() {
    let console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    console
        .settings(json!({"capture": {"enabled": true}, "limits": {"offline_cache": {"max_bytes": 2_500_000, "warn_percent": 90}}}))
        .await;
    let proxy = FaultProxy::start(console.addr).await;
    let device = TestDevice::enroll(&console, &proxy.url()).await;
    device.uploader.sync_policy().await.unwrap().expect("policy");
    proxy.set_mode(Mode::Fail);
    // Three clips of 1 MB each while the console is away: the first is overwritten.
    for i in 0..3 {
        let s = segments(1, 1_000_000, rearview_uploader::now_ms());
        let r = device
            .uploader
            .enqueue_chained(
                new_clip(&format!("clip-{i}"), None, 1),
                s.into_iter().map(|(s, _)| s).collect(),
            )
            .unwrap();
        if i == 2 {
            assert_eq!(r.dropped_clips, vec!["clip-0".to_string()]);
        }
    }
    let status = device.uploader.status().unwrap();
    assert_eq!(status.spool.pending_clips, 2);
    assert_eq!(status.spool.spooled_bytes, 2_000_000);
    assert_eq!(
        (status.spool.lost_clips, status.spool.lost_segments, status.spool.lost_bytes),
        (1, 1, 1_000_000)
    );
    assert!(status.warnings.iter().any(|w| w.contains("dropped")), "{:?}", status.warnings);
    // Back online: the two that remain arrive; the lost one never claims to.
    proxy.set_mode(Mode::Pass);
    device.uploader.send_pending().await.unwrap();
    assert_eq!(device.uploader.status().unwrap().spool.sent_clips, 2);
    let ids: Vec<String> =
        console.clips().await.iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec!["clip-1".to_string(), "clip-2".to_string()]);
    // The device tells each clip's fate (`rearview clips`), a lost one is not "sent".
    let state = |id: &str| device.uploader.clip_state(id).unwrap();
    assert_eq!(state("clip-0").map(|s| s.as_str()), Some("lost"));
    assert_eq!(state("clip-1").map(|s| s.as_str()), Some("sent"));
    assert_eq!(state("never-enqueued"), None);
}
