use std::time::Duration;

use rearview_protocol::ActivityEvent;
use rearview_uploader::{Command, NewClip};
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

    // The clip the agent would cut for it goes through the spool to the console: the trigger's
    // window, segments the ring recorded since the approval.
    let segs = segments(3, 50_000, now - 5_000);
    let originals: Vec<Vec<u8>> = segs.iter().map(|(_, b)| b.clone()).collect();
    let enq = device
        .uploader
        .enqueue_chained(
            NewClip {
                start_ms: now - 20_000,
                end_ms: now + 10_000,
                ..new_clip("clip-1", Some(trigger_id.clone()), 3)
            },
            segs.into_iter().map(|(s, _)| s).collect(),
        )
        .unwrap();
    assert!(enq.new);
    let up = device.uploader.clone();
    eventually("clip sent", Duration::from_secs(20), || up.status().unwrap().spool.sent_clips == 1)
        .await;

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
    assert!(!device.uploader.enqueue_chained(new_clip("clip-1", None, 0), vec![]).unwrap().new);

    // Health reaches the device list.
    device
        .uploader
        .report_health(rearview_protocol::HealthReport {
            state: rearview_protocol::HealthState::Capturing,
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
                kind: rearview_protocol::IndicatorKind::RemovableMediaCopy.into(),
                time_ms: now.into(),
                details: json!({"file": "x.txt"}),
            },
            ActivityEvent {
                user: USER.into(),
                kind: rearview_protocol::IndicatorKind::RemovableMediaCopy.into(),
                time_ms: now.into(),
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

/// An approval that expires while the console is down: after the restart the console raises the
/// policy version, and the device gets a bundle without it (the stored bundle carries the
/// expired approval, which devices refuse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_expiring_while_the_console_is_down_leaves_the_policy_after_restart() {
    let mut console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true, "fps": 1}})).await;
    console.approve(USER, "specific-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let first = device.uploader.sync_policy().await.unwrap().expect("a first policy");
    assert_eq!(first.payload().users.len(), 1);
    console.stop().await;
    // The approval is due to expire in a second (moved close in its database), and the console
    // stays down until it has.
    let db = rusqlite::Connection::open(console.data().join("console.db")).unwrap();
    let due = rearview_uploader::now_ms() + 1000;
    let changed =
        db.execute("UPDATE approvals SET expires_ms = ?1 WHERE state = 'approved'", [due]).unwrap();
    assert_eq!(changed, 1);
    drop(db);
    while rearview_uploader::now_ms() <= due + 200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    console.restart().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let next = loop {
        match device.uploader.sync_policy().await {
            Ok(Some(p)) => break p,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "no newer policy: {other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert!(next.version() > first.version());
    assert!(next.payload().users.is_empty(), "the expired approval is gone");
}

/// A triggered clip leaves the device while its window runs: the open clip goes to the console
/// with the segments closed so far, grows as more close (also across an agent restart and a
/// console outage), and completes only once it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_clip_is_sent_as_segments_close_and_completes_when_closed() {
    let mut console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    console.settings(json!({"capture": {"enabled": true, "fps": 1}})).await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let running = device.uploader.start().unwrap();
    let segs = segments(3, 40_000, rearview_uploader::now_ms() - 5_000);
    let sha = |b: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    let hashes: Vec<String> = segs.iter().map(|(_, b)| sha(b)).collect();
    // One clip, sent three times: its window and ids never change.
    let base = new_clip("window", None, 3);
    let open = || NewClip { open: true, ..base.clone() };
    let upto = |n: usize| segs[..n].iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    let stored = |console: &TestConsole| {
        let mut s: Vec<String> = console.stored_segments().into_iter().map(|(_, h, _)| h).collect();
        s.sort();
        s
    };

    // The first segment reaches the console at once; the clip stays open and pending.
    let enq = device.uploader.enqueue_chained(open(), upto(1)).unwrap();
    assert!(enq.new && enq.state.as_str() == "pending");
    eventually("first segment stored", Duration::from_secs(20), || {
        console.stored_segments().len() == 1
    })
    .await;
    let clip = console.clip("window").await;
    assert_eq!(
        (clip["complete"].clone(), clip["manifest"]["open"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(device.uploader.clip_state("window").unwrap().map(|s| s.as_str()), Some("pending"));
    // What the console has stored leaves the spool at once, though the clip is still pending.
    let up = device.uploader.clone();
    eventually("the sent segment's file freed", Duration::from_secs(20), || {
        up.status().unwrap().spool.spooled_bytes == 0
    })
    .await;
    assert_eq!(std::fs::read_dir(device.dir.path().join("spool/segments")).unwrap().count(), 0);

    // The agent restarts; the next extension repeats the first segment (its record of what was
    // handed over was lost): it is named once and sent once.
    running.stop();
    let TestDevice { dir, uploader } = device;
    drop(uploader);
    let uploader =
        rearview_uploader::Uploader::open(uploader_config(&console.url(), dir.path())).unwrap();
    let running = uploader.start().unwrap();
    let enq = uploader.enqueue_chained(open(), upto(2)).unwrap();
    assert_eq!((enq.new, enq.added), (false, 1));
    eventually("second segment stored", Duration::from_secs(20), || {
        console.stored_segments().len() == 2
    })
    .await;
    let clip = console.clip("window").await;
    assert_eq!(clip["manifest"]["segments"].as_array().unwrap().len(), 2);
    assert_eq!(clip["complete"], json!(false));

    // The window ends while the console is down: the closed clip waits in the spool.
    console.stop().await;
    let mut closed = base.clone();
    closed.missing = vec![rearview_protocol::MissingRange {
        start_ms: (closed.end_ms - 500).into(),
        end_ms: closed.end_ms.into(),
        reason: "capture stopped".into(),
    }];
    let enq = uploader.enqueue_chained(closed.clone(), upto(3)).unwrap();
    assert_eq!((enq.new, enq.added, enq.state.as_str()), (false, 1, "pending"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(uploader.clip_state("window").unwrap().map(|s| s.as_str()), Some("pending"));
    console.restart().await;
    let up = uploader.clone();
    eventually("closed clip sent", Duration::from_secs(30), || {
        up.clip_state("window").unwrap().map(|s| s.as_str()) == Some("sent")
    })
    .await;
    let clip = console.clip("window").await;
    assert_eq!(clip["complete"], json!(true));
    assert_eq!(clip["manifest"]["open"], serde_json::Value::Null);
    assert_eq!(clip["manifest"]["missing"][0]["reason"], "capture stopped");
    let named: Vec<&str> = clip["manifest"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        hashes.iter().map(String::as_str).collect::<Vec<_>>(),
        "in time order, once each"
    );
    let mut want = hashes.clone();
    want.sort();
    assert_eq!(stored(&console), want, "each segment stored once");
    assert_eq!(uploader.status().unwrap().spool.spooled_bytes, 0);
    // Extending a sent clip changes nothing.
    let enq = uploader.enqueue_chained(open(), upto(3)).unwrap();
    assert_eq!((enq.new, enq.added, enq.state.as_str()), (false, 0, "sent"));
    running.stop();
}
