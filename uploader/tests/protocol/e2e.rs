use rearview_uploader::wire::ActivityEvent;
use rearview_uploader::Command;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_policy_trigger_clip_complete() {
    let console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true, "fps": 1}})).await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let id = device.uploader.identity().unwrap();
    assert_eq!(id.tenant_id, "tenant-a");
    assert_eq!(id.sealing_public_key.len(), 64);

    let mut commands = device.uploader.subscribe();
    let _running = device.uploader.start().unwrap();
    // Capture is on but nobody is approved yet.
    let first = next_command(&mut commands, |c| matches!(c, Command::Policy(_))).await;
    let Command::Policy(p) = first else { unreachable!() };
    assert!(p.payload().capture.enabled);
    assert!(p.payload().users.is_empty());

    // Approval by a different person reaches the device as a new bundle with a higher version.
    console.approve(USER, "specific-activities").await;
    let Command::Policy(p2) = next_command(
        &mut commands,
        |c| matches!(c, Command::Policy(p) if !p.payload().users.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert!(p2.version() > p.version());
    let scope = &p2.payload().users[0];
    assert_eq!(scope.principal.as_str(), USER);
    assert_eq!(scope.approval.requested_by.as_str(), "ivan");
    assert_eq!(scope.approval.approved_by.as_str(), "rita");

    // A trigger reaches the connected device. (The event must fall within the approval: a
    // trigger for activity before the approval is refused by the device.)
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let now = rearview_uploader::now_ms();
    let issued: Value = console
        .admin
        .post("/api/v1/triggers", &json!({"user": USER, "event_time": now, "before": 20, "after": 10, "reason": "roadmap.docx"}))
        .await
        .unwrap();
    let trigger_id = issued["trigger_ids"][0].as_str().unwrap().to_owned();
    let Command::Trigger(t) =
        next_command(&mut commands, |c| matches!(c, Command::Trigger(_))).await
    else {
        unreachable!()
    };
    assert_eq!(t.payload().id.as_str(), trigger_id);
    assert_eq!(t.payload().user.as_str(), USER);
    assert_eq!((t.payload().before_secs, t.payload().after_secs), (20, 10));

    // The clip the agent would cut for it goes through the spool to the console.
    let segs = segments(3, 50_000, now - 25_000);
    let originals: Vec<Vec<u8>> = segs.iter().map(|(_, b)| b.clone()).collect();
    let enq = device
        .uploader
        .enqueue_clip(
            new_clip("clip-1", Some(trigger_id.clone()), 3),
            segs.into_iter().map(|(s, _)| s).collect(),
        )
        .unwrap();
    assert!(enq.new);
    let up = device.uploader.clone();
    eventually(20, "clip sent", || up.status().unwrap().spool.sent_clips == 1).await;

    let clip = console.clip("clip-1").await;
    assert_eq!(clip["complete"], json!(true));
    assert_eq!(clip["trigger_id"], json!(trigger_id));
    assert_eq!(clip["alert_id"], issued["alert_id"]);
    assert_eq!(clip["manifest"]["segments"].as_array().unwrap().len(), 3);
    // The console holds exactly the bytes that were spooled, each once.
    let stored = console.stored_segments();
    assert_eq!(stored.len(), 3);
    for bytes in &originals {
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        let (dev, _, size) = stored.iter().find(|(_, s, _)| *s == sha).expect("segment stored");
        assert_eq!(dev, &id.device_id);
        assert_eq!(*size as usize, bytes.len());
        let blob = std::fs::read(console.data().join("blobs").join(dev).join(&sha[..2]).join(&sha))
            .unwrap();
        assert_eq!(&blob, bytes);
    }
    // The alert lists the clip; the spool let go of the files.
    let alerts: Vec<Value> = console.admin.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts[0]["clips"], json!(["clip-1"]));
    let status = device.uploader.status().unwrap();
    assert_eq!(status.spool.spooled_bytes, 0);
    assert_eq!(status.spool.pending_clips, 0);
    // The same clip again is a no-op.
    assert!(!device.uploader.enqueue_clip(new_clip("clip-1", None, 0), vec![]).unwrap().new);

    // Health reaches the device list.
    device
        .uploader
        .report_health(rearview_uploader::wire::HealthReport {
            state: "capturing".into(),
            policy_version: p2.version(),
            users: vec![USER.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let devices: Vec<Value> = console.admin.get("/api/v1/devices").await.unwrap();
    assert_eq!(devices[0]["id"], json!(id.device_id));
    assert_eq!(devices[0]["policy_version"], json!(p2.version()));
    assert_eq!(devices[0]["health"]["state"], json!("capturing"));
    assert_eq!(devices[0]["connected"], json!(true));
    assert_eq!(devices[0]["health"]["details"]["uploader"]["spool"]["sent_clips"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicator_reaches_console_and_rule_issues_trigger() {
    let console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true}})).await;
    let _: Value = console
        .admin
        .put(
            "/api/v1/rules",
            &json!([{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10}]),
        )
        .await
        .unwrap();
    console.approve(USER, "specific-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let mut commands = device.uploader.subscribe();
    let _running = device.uploader.start().unwrap();
    next_command(
        &mut commands,
        |c| matches!(c, Command::Policy(p) if !p.payload().users.is_empty()),
    )
    .await;

    let now = rearview_uploader::now_ms();
    // An unapproved user's indicator is stored but issues nothing.
    let ack = device
        .uploader
        .report_activity(vec![
            ActivityEvent {
                user: "mallory".into(),
                kind: "removable_media_copy".into(),
                time_ms: now,
                details: json!({"file": "x.txt"}),
            },
            ActivityEvent {
                user: USER.into(),
                kind: "removable_media_copy".into(),
                time_ms: now,
                details: json!({"file": "roadmap.docx", "size": 12345, "destination": "/media/usb"}),
            },
        ])
        .await
        .unwrap();
    assert_eq!(ack.accepted, 2);
    assert_eq!(ack.triggers_issued.len(), 1);
    let Command::Trigger(t) =
        next_command(&mut commands, |c| matches!(c, Command::Trigger(_))).await
    else {
        unreachable!()
    };
    assert_eq!(t.payload().id.as_str(), ack.triggers_issued[0]);
    assert_eq!(t.payload().reason.object, "roadmap.docx");
    assert_eq!((t.payload().before_secs, t.payload().after_secs), (20, 10));
    let activity: Vec<Value> = console.admin.get("/api/v1/activity").await.unwrap();
    assert_eq!(activity.len(), 2);
    let alerts: Vec<Value> = console.admin.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["source"], json!("rule:removable_media_copy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_issued_while_offline_arrives_on_connect_and_revocation_is_pushed() {
    let console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true}})).await;
    console.approve(USER, "all-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    // Not connected yet: the trigger waits in the console.
    let issued: Value = console
        .admin
        .post("/api/v1/triggers", &json!({"user": USER, "event_time": rearview_uploader::now_ms(), "before": 5, "after": 5, "reason": "manual look"}))
        .await
        .unwrap();
    let mut commands = device.uploader.subscribe();
    let _running = device.uploader.start().unwrap();
    let Command::Trigger(t) =
        next_command(&mut commands, |c| matches!(c, Command::Trigger(_))).await
    else {
        unreachable!()
    };
    assert_eq!(t.payload().id.as_str(), issued["trigger_ids"][0].as_str().unwrap());

    // Revoking the approval pushes a bundle without the user.
    let approvals: Vec<Value> = console.admin.get("/api/v1/approvals").await.unwrap();
    let id = approvals[0]["id"].as_i64().unwrap();
    let _: Value =
        console.approver.post(&format!("/api/v1/approvals/{id}/revoke"), &json!({})).await.unwrap();
    next_command(
        &mut commands,
        |c| matches!(c, Command::Policy(p) if p.payload().users.is_empty()),
    )
    .await;
    let audit: Vec<Value> = console.admin.get("/api/v1/audit").await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a["action"].as_str().unwrap()).collect();
    for want in [
        "approval.request",
        "approval.approve",
        "device.enroll",
        "trigger.issue",
        "approval.revoke",
    ] {
        assert!(actions.contains(&want), "audit lacks {want}: {actions:?}");
    }
    let revoke = audit.iter().find(|a| a["action"] == json!("approval.revoke")).unwrap();
    assert_eq!(revoke["actor"], json!("person:rita"));
}
