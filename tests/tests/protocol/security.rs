use std::time::Duration;

use rearview_config::time::OffsetDateTime;
use rearview_config::{
    sign_trigger, AlertId, DeviceId, IndicatorKind, Principal, SigningKey, TenantId, TriggerId,
    TriggerPayload, TriggerReason,
};
use rearview_protocol::{ClipManifest, ManifestSegment, TriggerMessage};
use rearview_uploader::{Command, UploadError, Uploader};
use serde_json::{json, Value};

use crate::support::*;

fn trigger_payload(tenant: &str, device: &str, id: &str) -> TriggerPayload {
    let now = OffsetDateTime::now_utc();
    TriggerPayload {
        id: TriggerId::new(id).unwrap(),
        tenant: TenantId::new(tenant).unwrap(),
        user: Principal::new(USER).unwrap(),
        device: Some(DeviceId::new(device).unwrap()),
        event_at: now,
        before_secs: 10,
        after_secs: 10,
        reason: TriggerReason { indicator: IndicatorKind::Manual, object: "x".into() },
        alert: AlertId::new("alert-1").unwrap(),
        issued_at: now,
        expires_at: now + rearview_config::time::Duration::hours(1),
    }
}

/// A console with `USER` approved and a device enrolled that holds its first policy; the
/// device's id.
async fn approved_device() -> (TestConsole, TestDevice, String) {
    let console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true}})).await;
    console.approve(USER, "specific-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let device_id = device.uploader.identity().unwrap().device_id.clone();
    device.uploader.sync_policy().await.unwrap().expect("first policy");
    (console, device, device_id)
}

fn acked(console: &TestConsole, trigger_id: &str) -> bool {
    rusqlite::Connection::open(console.data().join("console.db"))
        .unwrap()
        .query_row("SELECT acked_ms FROM triggers WHERE id = ?1", [trigger_id], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .unwrap()
        .is_some()
}

/// A verified trigger whose clip nobody records (the agent dropped it, or died holding it) is
/// neither acknowledged nor remembered as seen: the console still holds it for the next
/// connection, and when it comes again it is delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_is_acknowledged_only_once_its_clip_is_recorded() {
    let (console, device, device_id) = approved_device().await;
    let trigger_id = issue_for(&console, &device_id).await;
    let message = stored_trigger(&console, &trigger_id);

    let mut commands = device.uploader.subscribe();
    let dropper = tokio::spawn(async move {
        // Takes the trigger and loses it, as a recorder that crashed would.
        let c = commands.recv().await;
        assert!(matches!(c, Some(Command::Trigger(_))), "{c:?}");
        commands
    });
    let result = device.uploader.accept_trigger(&message).await;
    let mut commands = dropper.await.unwrap();
    assert!(result.is_err(), "a trigger nobody recorded was accepted");
    assert!(!acked(&console, &trigger_id), "acknowledged before its clip was recorded");

    // Sent again: not a replay; recorded this time, then acknowledged.
    let (accepted, delivered) = accept_recording(&device.uploader, &mut commands, &message).await;
    accepted.unwrap();
    assert!(delivered, "the trigger was not delivered again");
    assert!(acked(&console, &trigger_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_other_tenant_triggers_are_refused() {
    let (console, device, device_id) = approved_device().await;
    let mut commands = device.uploader.subscribe();

    // A genuine trigger, fetched the way the stream would deliver it.
    let trigger_id = issue_for(&console, &device_id).await;
    let genuine = stored_trigger(&console, &trigger_id);
    let (accepted, delivered) = accept_recording(&device.uploader, &mut commands, &genuine).await;
    accepted.unwrap();
    assert!(delivered, "the genuine trigger was not delivered");

    // Replayed: acknowledged again, but not acted on a second time.
    device.uploader.accept_trigger(&genuine).await.unwrap();
    assert!(commands.try_recv().is_err(), "a replayed trigger must not be delivered twice");

    // Forged: the payload altered after signing (another user, a longer window).
    let mut forged = genuine.clone();
    let payload = forged.signed["payload"].as_str().unwrap().to_owned();
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let text = String::from_utf8(engine.decode(payload).unwrap())
        .unwrap()
        .replace("\"before_secs\":5", "\"before_secs\":9");
    forged.signed["payload"] = json!(engine.encode(text));
    forged.trigger_id = "trg-forged".into();
    let err = device.uploader.accept_trigger(&forged).await.unwrap_err();
    assert!(matches!(err, UploadError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");

    // Signed by another tenant's key, naming another tenant.
    let other_key = SigningKey::generate().unwrap();
    let env =
        sign_trigger(&other_key, &trigger_payload("tenant-b", &device_id, "trg-other")).unwrap();
    let other = TriggerMessage {
        trigger_id: "trg-other".into(),
        signed: serde_json::to_value(&env).unwrap(),
    };
    let err = device.uploader.accept_trigger(&other).await.unwrap_err();
    assert!(matches!(err, UploadError::Rejected { .. }), "{err}");

    // Signed by another key but claiming our tenant: still refused (unknown key).
    let env =
        sign_trigger(&other_key, &trigger_payload("tenant-a", &device_id, "trg-other2")).unwrap();
    let other = TriggerMessage {
        trigger_id: "trg-other2".into(),
        signed: serde_json::to_value(&env).unwrap(),
    };
    let err = device.uploader.accept_trigger(&other).await.unwrap_err();
    assert!(err.to_string().contains("key"), "{err}");
    assert!(commands.try_recv().is_err(), "no refused trigger may reach the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_reused_enrollment_tokens_are_refused() {
    let console = TestConsole::start().await;
    let token = console.enrollment_token(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let up = Uploader::open(uploader_config(&console.url(), dir.path())).unwrap();
    let err = up.enroll(&token, "h").await.unwrap_err();
    assert!(matches!(err, UploadError::Refused { status: 410, .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!up.is_enrolled());

    let token = console.enrollment_token(600).await;
    up.enroll(&token, "h").await.unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let up2 = Uploader::open(uploader_config(&console.url(), dir2.path())).unwrap();
    let err = up2.enroll(&token, "h2").await.unwrap_err();
    assert!(matches!(err, UploadError::Refused { status: 410, .. }), "{err}");
    assert!(err.to_string().contains("already used"), "{err}");
    let err = up2.enroll("rve_0000", "h2").await.unwrap_err();
    assert!(matches!(err, UploadError::Refused { status: 401, .. }), "{err}");

    let devices: Vec<Value> = console.admin.get("/api/v1/devices").await.unwrap();
    assert_eq!(devices.len(), 1, "only the one good enrollment made a device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_cannot_touch_another_devices_clips() {
    let console = TestConsole::start().await;
    // Clips are taken only of approved users, recorded while approved.
    console.approve(USER, "all-activities").await;
    let a = TestDevice::enroll(&console, &console.url()).await;
    let b = TestDevice::enroll(&console, &console.url()).await;
    let a_id = a.uploader.identity().unwrap().device_id.clone();
    let segs = segments(2, 1000, rearview_uploader::now_ms());
    let hashes: Vec<String> = segs
        .iter()
        .map(|(_, b)| hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref()))
        .collect();
    a.uploader
        .enqueue_chained(new_clip("clip-a", None, 2), segs.iter().map(|(s, _)| s.clone()).collect())
        .unwrap();
    // Only the manifest and the first segment: the clip is incomplete.
    let news: Vec<_> = segs.iter().map(|(s, _)| s.clone()).collect();
    let a_chain = chain_entries(&a.uploader, USER, &news).unwrap();
    let manifest: ClipManifest = {
        let status = a.uploader.status().unwrap();
        assert_eq!(status.spool.pending_clips, 1);
        let t = segs[0].0.start_ms;
        ClipManifest {
            clip_id: "clip-a".into(),
            trigger_id: None,
            mode: rearview_protocol::CaptureMode::AllActivities,
            user: USER.into(),
            device_id: a_id.clone(),
            start_ms: t.into(),
            end_ms: (t + 1).into(),
            segments: hashes
                .iter()
                .map(|h| ManifestSegment {
                    sha256: h.clone(),
                    size: 1000,
                    start_ms: t.into(),
                    end_ms: (t + 1).into(),
                })
                .collect(),
            missing: vec![],
            open: false,
            chain: a_chain,
            absent: Vec::new(),
        }
    };
    let http = reqwest::Client::new();
    let token_a = device_token(&a);
    let token_b = device_token(&b);
    let put = |token: &str, path: String, body: Vec<u8>| {
        http.put(format!("{}{path}", console.url())).bearer_auth(token).body(body).send()
    };
    let r =
        put(&token_a, "/api/v1/device/clips/clip-a".into(), serde_json::to_vec(&manifest).unwrap())
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let r = put(&token_a, format!("/api/v1/device/segments/{}", hashes[0]), segs[0].1.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // B cannot read A's clip status, overwrite its manifest, or claim to be A.
    let r = http
        .get(format!("{}/api/v1/device/clips/clip-a", console.url()))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let mut as_b = manifest.clone();
    as_b.device_id = b.uploader.identity().unwrap().device_id.clone();
    let r = put(&token_b, "/api/v1/device/clips/clip-a".into(), serde_json::to_vec(&as_b).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "A's clip id is taken");
    assert!(!r.text().await.unwrap().contains(&a_id), "the answer does not name the owner");
    let r = put(
        &token_b,
        "/api/v1/device/clips/clip-b".into(),
        serde_json::to_vec(&ClipManifest { clip_id: "clip-b".into(), ..manifest.clone() }).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "B may not file a manifest in A's name");
    // B cannot complete A's clip by uploading A's missing segment.
    let r = put(&token_b, format!("/api/v1/device/segments/{}", hashes[1]), segs[1].1.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Nor learn whether A's segment exists: B's own manifest naming A's stored hash says missing.
    let probe = ClipManifest {
        clip_id: "clip-probe".into(),
        device_id: as_b.device_id.clone(),
        chain: chain_entries(&b.uploader, USER, &news).unwrap(),
        ..manifest.clone()
    };
    let r = put(
        &token_b,
        "/api/v1/device/clips/clip-probe".into(),
        serde_json::to_vec(&probe).unwrap(),
    )
    .await
    .unwrap();
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        status["missing"].as_array().unwrap().len(),
        2,
        "A's stored segment must look missing to B"
    );

    let clip = console.clip("clip-a").await;
    assert_eq!(clip["complete"], json!(false));
    assert_eq!(clip["device_id"], json!(a_id));
    assert_eq!(console.stored_segments().len(), 1);
    // No token, a person's token, or garbage: 401.
    for token in ["", console.admin_token.as_str(), "rvd_nope"] {
        let r = http
            .get(format!("{}/api/v1/device/clips/clip-a", console.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
    }
}

fn device_token(d: &TestDevice) -> String {
    let text = std::fs::read_to_string(d.dir.path().join("identity.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["device_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_cannot_approve_own_request_and_roles_are_enforced() {
    let console = TestConsole::start().await;
    // An admin who is also an approver still cannot approve what they requested.
    let both: Value = console
        .admin
        .post("/api/v1/people", &json!({"name": "boss", "roles": ["admin", "approver"]}))
        .await
        .unwrap();
    let boss = rearview_console::client::AdminClient::new(
        &console.url(),
        both["token"].as_str().unwrap(),
        None,
    )
    .unwrap();
    // Granting the approver role takes a second person: rita confirms it.
    let _: Value = console
        .approver
        .post(&format!("/api/v1/people/{}/roles/approver/confirm", both["id"]), &json!({}))
        .await
        .unwrap();
    let req: Value = boss
        .post(
            "/api/v1/approvals",
            &json!({"user": USER, "mode": "all-activities", "justification": "j"}),
        )
        .await
        .unwrap();
    let id = req["id"].as_i64().unwrap();
    let err = boss
        .post::<_, Value>(&format!("/api/v1/approvals/{id}/approve"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("different person"), "{}", err.message);
    // The plain admin is no approver.
    let err = console
        .admin
        .post::<_, Value>(&format!("/api/v1/approvals/{id}/approve"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    // An approver cannot create people or issue triggers.
    let err = console
        .approver
        .post::<_, Value>("/api/v1/people", &json!({"name": "x", "roles": ["admin"]}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    // Nothing approved, so no trigger for the user.
    let err = console
        .admin
        .post::<_, Value>(
            "/api/v1/triggers",
            &json!({"user": USER, "event_time": 0, "before": 1, "after": 1, "reason": "r"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 409);
    // The other approver can; afterwards it cannot be approved again.
    let ok: Value = console
        .approver
        .post(&format!("/api/v1/approvals/{id}/approve"), &json!({}))
        .await
        .unwrap();
    assert_eq!(ok["state"], json!("approved"));
    assert_eq!(ok["decided_by"], json!("rita"));
    let err = console
        .approver
        .post::<_, Value>(&format!("/api/v1/approvals/{id}/approve"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 409);
}

/// The signed bundle the console serves now, as the device would fetch it.
async fn current_policy(console: &TestConsole) -> rearview_protocol::PolicyMessage {
    let m: Value = console.admin.get("/api/v1/policy").await.unwrap();
    serde_json::from_value(m).unwrap()
}

/// The signed trigger the console stored for `trigger_id`, as its stream would deliver it.
fn stored_trigger(console: &TestConsole, trigger_id: &str) -> TriggerMessage {
    let signed: String = rusqlite::Connection::open(console.data().join("console.db"))
        .unwrap()
        .query_row("SELECT signed_json FROM triggers WHERE id = ?1", [trigger_id], |r| r.get(0))
        .unwrap();
    TriggerMessage { trigger_id: trigger_id.into(), signed: serde_json::from_str(&signed).unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_policies_are_refused_and_the_policy_in_force_stays() {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true}})).await;
    console.approve(USER, "specific-activities").await;
    let device = TestDevice::enroll(&console, &console.url()).await;
    let device_id = device.uploader.identity().unwrap().device_id.clone();
    let first = device.uploader.sync_policy().await.unwrap().expect("first policy");
    let v1 = first.version();
    let mut commands = device.uploader.subscribe();
    let in_force = |up: &Uploader| {
        let p = up.policy().expect("a policy in force");
        (p.version(), p.payload().users.len(), up.status().unwrap().policy_version)
    };
    assert_eq!(in_force(&device.uploader), (v1, 1, Some(v1)));

    // The genuine bundle with its payload altered: a higher version that names nobody.
    let genuine = current_policy(&console).await;
    let mut altered = genuine.clone();
    let mut payload: Value = serde_json::from_slice(
        &engine.decode(genuine.signed["payload"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    payload["version"] = json!(v1 + 1);
    payload["users"] = json!([]);
    altered.version = v1 + 1;
    altered.signed["payload"] = json!(engine.encode(serde_json::to_vec(&payload).unwrap()));

    // A well-formed bundle for this tenant signed with a key the device was never given.
    let other_key = SigningKey::generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let mut p = rearview_config::PolicyPayload::new(
        TenantId::new("tenant-a").unwrap(),
        v1 + 2,
        now,
        now + rearview_config::time::Duration::hours(1),
    );
    p.capture.enabled = true;
    let foreign = rearview_protocol::PolicyMessage {
        version: v1 + 2,
        signed: serde_json::to_value(rearview_config::sign_policy(&other_key, &p).unwrap())
            .unwrap(),
    };

    // A genuine signature by the tenant key, but made for a trigger: the domain tag differs.
    let issued: Value = console
        .admin
        .post("/api/v1/triggers", &json!({"user": USER, "event_time": rearview_uploader::now_ms(), "before": 5, "after": 5, "reason": "r", "device": device_id}))
        .await
        .unwrap();
    let trigger = stored_trigger(&console, issued["trigger_ids"][0].as_str().unwrap());
    let as_policy =
        rearview_protocol::PolicyMessage { version: v1 + 3, signed: trigger.signed.clone() };

    for (what, forged, reason) in [
        ("altered payload", altered, "signature does not verify"),
        ("other key", foreign, "which this device does not trust"),
        ("trigger signature", as_policy, "signature does not verify"),
    ] {
        let err = device.uploader.accept_policy(&forged).unwrap_err();
        assert!(matches!(err, UploadError::Rejected { .. }), "{what}: {err}");
        assert!(err.to_string().contains(reason), "{what}: {err}");
        assert_eq!(in_force(&device.uploader), (v1, 1, Some(v1)), "{what} changed the policy");
    }
    assert!(commands.try_recv().is_err(), "no forged policy may reach the agent");

    // The genuine bundle still verifies, and the next real one is taken: nothing was poisoned.
    assert!(device.uploader.accept_policy(&genuine).unwrap().is_none(), "same version: no news");
    console.settings(json!({"capture": {"enabled": true, "fps": 2}})).await;
    let next = device.uploader.sync_policy().await.unwrap().expect("the next policy");
    assert!(next.version() > v1);
    assert!(matches!(commands.try_recv(), Ok(Command::Policy(_))));
}

/// Issues a trigger for [`USER`] addressed to `device` alone; returns its id.
async fn issue_for(console: &TestConsole, device: &str) -> String {
    let body = json!({"user": USER, "event_time": rearview_uploader::now_ms(), "before": 5,
                      "after": 5, "reason": "r", "device": device});
    let issued: Value = console.admin.post("/api/v1/triggers", &body).await.unwrap();
    assert_eq!(issued["devices"], json!([device]));
    issued["trigger_ids"][0].as_str().unwrap().to_owned()
}

/// A trigger addressed to device B goes to B alone. A's stream is in order, so A's first
/// trigger being its own, with no refused push event before it, shows B's never came to A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_for_one_device_reaches_only_that_device() {
    let console = TestConsole::start().await;
    console.settings(json!({"capture": {"enabled": true}})).await;
    console.approve(USER, "specific-activities").await;
    let a = TestDevice::enroll(&console, &console.url()).await;
    let b = TestDevice::enroll(&console, &console.url()).await;
    let a_id = a.uploader.identity().unwrap().device_id.clone();
    let b_id = b.uploader.identity().unwrap().device_id.clone();
    let mut a_commands = a.uploader.subscribe();
    let mut b_commands = b.uploader.subscribe();
    let _a_running = a.uploader.start().unwrap();
    let _b_running = b.uploader.start().unwrap();
    for commands in [&mut a_commands, &mut b_commands] {
        next_command(
            commands,
            |c| matches!(c, Command::Policy(p) if !p.payload().users.is_empty()),
        )
        .await;
    }
    let for_b = issue_for(&console, &b_id).await;
    let Command::Trigger(t) =
        next_command(&mut b_commands, |c| matches!(c, Command::Trigger(_))).await
    else {
        unreachable!()
    };
    assert_eq!(t.payload().id.as_str(), for_b);
    assert_eq!(t.payload().device.as_ref().map(|d| d.as_str()), Some(b_id.as_str()));

    let for_a = issue_for(&console, &a_id).await;
    let Command::Trigger(t) =
        next_command(&mut a_commands, |c| matches!(c, Command::Trigger(_))).await
    else {
        unreachable!()
    };
    assert_eq!(t.payload().id.as_str(), for_a, "A's first trigger must be its own");
    assert_eq!(a.uploader.status().unwrap().last_error, None, "A was sent something it refused");

    // B's signed trigger handed to A directly: refused, not delivered, not acknowledged.
    let err = a.uploader.accept_trigger(&stored_trigger(&console, &for_b)).await.unwrap_err();
    assert!(matches!(err, UploadError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains(&format!("it is for device {b_id}, this is {a_id}")), "{err}");
    assert!(a_commands.try_recv().is_err());
    // B acknowledges once its clip is recorded (next_command recorded it), in its own time.
    eventually("B acknowledged its trigger", Duration::from_secs(10), || acked(&console, &for_b))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_enrolls_syncs_policy_and_uploads_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let out = rearview_console::init_with_approver(dir.path(), "tenant-a", "ivan", "rita").unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (certified.cert.pem(), certified.key_pair.serialize_pem());
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let server = rearview_console::Server::start(rearview_console::ServerConfig {
        tls: Some((cert_path.clone(), key_path)),
        ..rearview_console::ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(server.scheme, "https");
    let url = format!("https://localhost:{}", server.addr().port());
    let admin =
        rearview_console::client::AdminClient::new(&url, &out.admin_token, Some(&cert_path))
            .unwrap();
    let rita =
        rearview_console::client::AdminClient::new(&url, &out.approver_token, Some(&cert_path))
            .unwrap();
    let _: Value =
        admin.put("/api/v1/policy/settings", &json!({"capture": {"enabled": true}})).await.unwrap();
    let req: Value = admin
        .post(
            "/api/v1/approvals",
            &json!({"user": USER, "mode": "all-activities", "justification": "j"}),
        )
        .await
        .unwrap();
    let approval = req["id"].as_i64().unwrap();
    let _: Value =
        rita.post(&format!("/api/v1/approvals/{approval}/approve"), &json!({})).await.unwrap();
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let token = t["token"].as_str().unwrap();

    // Without trusting the certificate the device does not talk to the console at all, so the
    // token is not used up.
    let untrusting_dir = tempfile::tempdir().unwrap();
    let untrusting = Uploader::open(uploader_config(&url, untrusting_dir.path())).unwrap();
    let err = untrusting.enroll(token, "h").await.unwrap_err();
    assert!(matches!(err, UploadError::Unavailable(_)), "{err}");
    assert!(!untrusting.is_enrolled());

    let state = tempfile::tempdir().unwrap();
    let mut config = uploader_config(&url, state.path());
    config.ca_cert = Some(cert_path.clone());
    let up = Uploader::open(config).unwrap();
    let id = up.enroll(token, "h").await.unwrap();
    assert_eq!(id.tenant_id, "tenant-a");
    let policy = up.sync_policy().await.unwrap().expect("a first policy");
    assert_eq!(policy.payload().users[0].principal.as_str(), USER);

    // The push stream and uploads work over TLS too.
    let mut commands = up.subscribe();
    let _running = up.start().unwrap();
    let segs = segments(2, 10_000, rearview_uploader::now_ms() - 5_000);
    up.enqueue_chained(new_clip("tls-clip", None, 2), segs.into_iter().map(|(s, _)| s).collect())
        .unwrap();
    let probe = up.clone();
    eventually("clip sent over TLS", Duration::from_secs(20), || {
        probe.status().unwrap().spool.sent_clips == 1
    })
    .await;
    let clip: Value = admin.get("/api/v1/clips/tls-clip").await.unwrap();
    assert_eq!(clip["complete"], json!(true));
    let _: Value =
        rita.post(&format!("/api/v1/approvals/{approval}/revoke"), &json!({})).await.unwrap();
    let Command::Policy(p) = next_command(
        &mut commands,
        |c| matches!(c, Command::Policy(p) if p.payload().users.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert!(p.version() > policy.version());
    server.shutdown().await.unwrap();
}
