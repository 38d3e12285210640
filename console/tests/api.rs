//! The console on its own: bad uploads change nothing, transport rules, the CLI out of process,
//! and `clip export` of a really sealed clip.

use std::io::BufRead;
use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::{Server, ServerConfig};
use rearview_testkit::console::InitTokens;
use serde_json::{json, Value};

mod support;

use support::start;

/// alice approved for all activities (the console takes clips only of approved users,
/// recorded while approved).
async fn approve_alice(url: &str, admin: &AdminClient, approver_token: &str) {
    let approver = AdminClient::new(url, approver_token, None).unwrap();
    support::approve(admin, &approver, "alice", "all-activities").await;
}

#[tokio::test]
async fn malformed_oversized_mismatched_and_unauthenticated_uploads_change_nothing() {
    let (dir, server, out) = support::start_with("rita").await;
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let support::Enrolled { token: dev, id: device_id, key, tenant_id, .. } =
        support::enroll_keyed(&url, &admin).await;
    let mut chains = support::Enrolled::chains(key, &tenant_id, &device_id);
    // The console takes clips only of approved users, recorded while approved.
    approve_alice(&url, &admin, &out.approver_token).await;
    let t0 = support::now_ms();
    let http = reqwest::Client::new();
    let seg = vec![7u8; 1000];
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &seg).as_ref());
    let mut manifest = json!({
        "clip_id": "c1", "trigger_id": null, "mode": "all-activities", "user": "alice",
        "device_id": device_id, "start_ms": t0, "end_ms": t0 + 1000,
        "segments": [{"sha256": sha, "size": 1000, "start_ms": t0, "end_ms": t0 + 1000}], "missing": []
    });
    chains.sign_manifest(&mut manifest);
    let put = |path: String, body: Vec<u8>, token: Option<&str>| {
        let mut r = http.put(format!("{url}{path}")).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // Unauthenticated.
    let r = put("/api/v1/device/clips/c1".into(), serde_json::to_vec(&manifest).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Authorization"));
    // Malformed: not JSON, unknown field, bad hash name, id mismatch, bad mode.
    for (path, body) in [
        ("/api/v1/device/clips/c1", b"{not json".to_vec()),
        ("/api/v1/device/clips/c1", serde_json::to_vec(&json!({"extra": 1})).unwrap()),
        ("/api/v1/device/clips/c2", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let r = put(path.into(), body, Some(&dev)).await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    let mut bad = manifest.clone();
    bad["segments"][0]["sha256"] = json!("../../etc/passwd");
    assert_eq!(
        put("/api/v1/device/clips/c1".into(), serde_json::to_vec(&bad).unwrap(), Some(&dev))
            .await
            .unwrap()
            .status(),
        400
    );
    let mut bad = manifest.clone();
    bad["mode"] = json!("everything");
    assert_eq!(
        put("/api/v1/device/clips/c1".into(), serde_json::to_vec(&bad).unwrap(), Some(&dev))
            .await
            .unwrap()
            .status(),
        400
    );
    // Oversized manifest.
    let huge = vec![b' '; rearview_protocol::MAX_MANIFEST_BYTES + 10];
    assert_eq!(
        put("/api/v1/device/clips/c1".into(), huge, Some(&dev)).await.unwrap().status(),
        413
    );
    // A segment before any manifest names it.
    assert_eq!(
        put(format!("/api/v1/device/segments/{sha}"), seg.clone(), Some(&dev))
            .await
            .unwrap()
            .status(),
        409
    );

    let r =
        put("/api/v1/device/clips/c1".into(), serde_json::to_vec(&manifest).unwrap(), Some(&dev))
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["missing"], json!([sha]));
    // The same clip id with other content is refused; the same content is fine.
    let mut other = manifest.clone();
    other["end_ms"] = json!(t0 + 2000);
    assert_eq!(
        put("/api/v1/device/clips/c1".into(), serde_json::to_vec(&other).unwrap(), Some(&dev))
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        put("/api/v1/device/clips/c1".into(), serde_json::to_vec(&manifest).unwrap(), Some(&dev))
            .await
            .unwrap()
            .status(),
        200
    );
    // Bytes that do not hash to the name.
    let mut damaged = seg.clone();
    damaged[0] ^= 1;
    let r = put(format!("/api/v1/device/segments/{sha}"), damaged, Some(&dev)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("hash"));
    // Oversized segment (over 64 MiB).
    let big = vec![0u8; 64 * 1024 * 1024 + 1];
    assert_eq!(
        put(format!("/api/v1/device/segments/{sha}"), big, Some(&dev)).await.unwrap().status(),
        413
    );

    let clip: Value = admin.get("/api/v1/clips/c1").await.unwrap();
    assert_eq!(clip["complete"], json!(false));
    assert!(
        !server.store().blobs().exists(&device_id, &sha).await.unwrap(),
        "nothing may be stored by refused uploads"
    );
    assert!(!dir.path().join("blobs").join(&device_id).exists());

    // The right bytes complete it; a repeat is acknowledged as already stored.
    let ack: Value = put(format!("/api/v1/device/segments/{sha}"), seg.clone(), Some(&dev))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack["newly_stored"], json!(true));
    assert_eq!(ack["completed_clips"], json!(["c1"]));
    let ack: Value = put(format!("/api/v1/device/segments/{sha}"), seg, Some(&dev))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack["newly_stored"], json!(false));
    let clip: Value = admin.get("/api/v1/clips/c1").await.unwrap();
    assert_eq!(clip["complete"], json!(true));
    server.shutdown().await.unwrap();
}

/// A triggered clip is sent while its window runs: the device extends the open manifest with
/// each segment that closes, then closes it. Only additions are accepted, an open clip is never
/// complete, and a late re-send of an older version changes nothing.
#[tokio::test]
async fn open_clips_grow_then_close_and_only_then_complete() {
    let (_dir, server, out) = support::start_with("rita").await;
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let support::Enrolled { token: dev, id: device_id, key, tenant_id, .. } =
        support::enroll_keyed(&url, &admin).await;
    let chains = std::sync::Mutex::new(support::Enrolled::chains(key, &tenant_id, &device_id));
    approve_alice(&url, &admin, &out.approver_token).await;
    let t0 = support::now_ms();
    let http = reqwest::Client::new();
    let segs: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; 1000]).collect();
    let entries: Vec<Value> = segs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
            let start = t0 + i as i64 * 1000;
            json!({"sha256": sha, "size": 1000, "start_ms": start, "end_ms": start + 1000})
        })
        .collect();
    let manifest = |n: usize, open: bool| {
        let mut m = json!({
            "clip_id": "w1", "trigger_id": null, "mode": "all-activities", "user": "alice",
            "device_id": device_id, "start_ms": t0, "end_ms": t0 + 4000,
            "segments": entries[..n], "open": open,
            "missing": if open { json!([]) } else {
                json!([{"start_ms": t0 + 3000, "end_ms": t0 + 4000, "reason": "capture stopped"}])
            },
        });
        chains.lock().unwrap().sign_manifest(&mut m);
        m
    };
    let send_manifest = |m: Value| {
        http.put(format!("{url}/api/v1/device/clips/w1")).bearer_auth(&dev).json(&m).send()
    };
    let send_segment = |i: usize| {
        http.put(format!("{url}/api/v1/device/segments/{}", entries[i]["sha256"].as_str().unwrap()))
            .bearer_auth(&dev)
            .body(segs[i].clone())
            .send()
    };
    let sha = |i: usize| entries[i]["sha256"].clone();

    let r = send_manifest(manifest(1, true)).await.unwrap();
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        (status["complete"].clone(), status["missing"].clone()),
        (json!(false), json!([sha(0)]))
    );
    // Every named segment stored, but the window still runs: not complete.
    let ack: Value = send_segment(0).await.unwrap().json().await.unwrap();
    assert_eq!(ack["completed_clips"], json!([]));
    let clip: Value = admin.get("/api/v1/clips/w1").await.unwrap();
    assert_eq!(
        (clip["complete"].clone(), clip["manifest"]["open"].clone()),
        (json!(false), json!(true))
    );

    // Growing is fine; the answer names only what the console lacks.
    let status: Value = send_manifest(manifest(2, true)).await.unwrap().json().await.unwrap();
    assert_eq!(status["missing"], json!([sha(1)]));
    // Dropping a named segment, changing one, or changing the window is refused.
    let mut dropped = manifest(3, true);
    dropped["segments"].as_array_mut().unwrap().remove(0);
    let mut changed = manifest(3, true);
    changed["segments"][0]["end_ms"] = json!(t0 + 999);
    let mut moved = manifest(3, true);
    moved["end_ms"] = json!(t0 + 9000);
    for bad in [dropped, changed, moved] {
        let r = send_manifest(bad).await.unwrap();
        assert_eq!(r.status(), 409);
        assert!(r.text().await.unwrap().contains("open"));
    }
    let clip: Value = admin.get("/api/v1/clips/w1").await.unwrap();
    assert_eq!(clip["manifest"]["segments"].as_array().unwrap().len(), 2, "refusals changed it");
    send_segment(1).await.unwrap();

    // Closing names the last segment and the missing range.
    let status: Value = send_manifest(manifest(3, false)).await.unwrap().json().await.unwrap();
    assert_eq!(
        (status["complete"].clone(), status["missing"].clone()),
        (json!(false), json!([sha(2)]))
    );
    // A late re-send of an open version changes nothing; a closed clip cannot change.
    for older in [manifest(2, true), manifest(3, true)] {
        assert_eq!(send_manifest(older).await.unwrap().status(), 200);
    }
    let clip: Value = admin.get("/api/v1/clips/w1").await.unwrap();
    assert_eq!(clip["manifest"]["open"], Value::Null, "closed: {clip:#}");
    assert_eq!(clip["manifest"]["missing"][0]["reason"], "capture stopped");
    let mut fewer = manifest(3, false);
    fewer["segments"].as_array_mut().unwrap().pop();
    assert_eq!(send_manifest(fewer).await.unwrap().status(), 409);

    let ack: Value = send_segment(2).await.unwrap().json().await.unwrap();
    assert_eq!(ack["completed_clips"], json!(["w1"]));
    let clip: Value = admin.get("/api/v1/clips/w1").await.unwrap();
    assert_eq!(clip["complete"], json!(true));
    let audit: Vec<Value> = admin.get("/api/v1/audit").await.unwrap();
    let of_clip: Vec<&str> = audit
        .iter()
        .filter(|a| a["target"] == "clip:w1")
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(of_clip, ["clip.manifest", "clip.closed", "clip.complete"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn people_roles_and_audit() {
    let (_dir, server, token) = start().await;
    let url = server.url();
    let admin = AdminClient::new(&url, &token, None).unwrap();
    let inv: Value = admin
        .post("/api/v1/people", &json!({"name": "ingrid", "roles": ["investigator"]}))
        .await
        .unwrap();
    let inv = AdminClient::new(&url, inv["token"].as_str().unwrap(), None).unwrap();
    let _: Vec<Value> = inv.get("/api/v1/clips").await.unwrap();
    assert_eq!(
        inv.post::<_, Value>("/api/v1/enrollment-tokens", &json!({})).await.unwrap_err().status,
        403
    );
    assert_eq!(
        inv.put::<_, Value>("/api/v1/policy/settings", &json!({})).await.unwrap_err().status,
        403
    );
    assert_eq!(
        admin
            .post::<_, Value>("/api/v1/people", &json!({"name": "ingrid", "roles": ["admin"]}))
            .await
            .unwrap_err()
            .status,
        409
    );
    assert_eq!(
        admin
            .post::<_, Value>("/api/v1/people", &json!({"name": "x", "roles": ["root"]}))
            .await
            .unwrap_err()
            .status,
        422
    );
    // Settings are validated against the policy schema before they are kept.
    let err = admin
        .put::<_, Value>("/api/v1/policy/settings", &json!({"capture": {"fps": 0}}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 400);
    assert!(err.message.contains("fps"), "{}", err.message);
    let err =
        admin.put::<_, Value>("/api/v1/policy/settings", &json!({"bogus": {}})).await.unwrap_err();
    assert_eq!(err.status, 400);
    let v1: Value = admin.get("/api/v1/policy").await.unwrap();
    let _: Value = admin
        .put("/api/v1/policy/settings", &json!({"capture": {"enabled": true, "fps": 2}}))
        .await
        .unwrap();
    let v2: Value = admin.get("/api/v1/policy").await.unwrap();
    assert!(v2["version"].as_u64() > v1["version"].as_u64());
    let audit: Vec<Value> = admin.get("/api/v1/audit").await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a["action"].as_str().unwrap()).collect();
    // init: the admin and the first approver, each with their grant; then ingrid.
    assert_eq!(
        actions,
        [
            "person.create",
            "role.grant",
            "person.create",
            "role.grant",
            "tenant.create",
            "person.create",
            "role.grant",
            "policy.settings"
        ]
    );
    assert_eq!(audit[7]["actor"], json!("person:ivan"));
    assert!(audit.iter().all(|a| a["time_ms"].as_i64().unwrap() > 0));
    server.shutdown().await.unwrap();
}

/// The daily re-signing signs: a bundle signed over a day ago, with no device connected to ask
/// for the new one, is signed again under one new version — not raised again every second
/// until a device happens to ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_signed_over_a_day_ago_is_signed_again_once_with_no_device_asking() {
    let (dir, server, token) = start().await;
    let admin = AdminClient::new(&server.url(), &token, None).unwrap();
    let before: Value = admin.get("/api/v1/policy").await.unwrap();
    let db = support::backend::TestDb::of(dir.path());
    let day_ago = support::now_ms() - 25 * 3600 * 1000;
    db.exec(&format!("UPDATE meta SET value = '{day_ago}' WHERE key = 'policy_signed_ms'"));
    // The expiry tick runs every second: a few of them, with nobody asking for the bundle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let version = db.int("SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'policy_version'");
    assert_eq!(version, before["version"].as_i64().unwrap() + 1, "raised once, not every tick");
    let signed = db.int("SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'policy_signed_ms'");
    assert!(signed > support::now_ms() - 60_000, "the new version was not signed");
    let after: Value = admin.get("/api/v1/policy").await.unwrap();
    assert_eq!(after["version"].as_i64(), Some(version));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_http_only_on_loopback_and_tls_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = rearview_console::init(dir.path(), "tenant-a", "ivan").unwrap();
    let err = Server::start(ServerConfig::plain(dir.path(), "0.0.0.0:0".parse().unwrap()))
        .await
        .err()
        .expect("plain HTTP on all interfaces must be refused");
    assert!(err.to_string().contains("--insecure-http"), "{err}");

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = Server::start(ServerConfig {
        tls: Some((cert_path.clone(), key_path)),
        ..ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
    let url = format!("https://localhost:{}", server.addr().port());
    let admin = AdminClient::new(&url, &out.admin_token, Some(&cert_path)).unwrap();
    let people: Vec<Value> = admin.get("/api/v1/people").await.unwrap();
    assert_eq!(people.len(), 2, "the admin and the approver init made");
    // Without trusting the certificate, no connection.
    let untrusting = AdminClient::new(&url, &out.admin_token, None).unwrap();
    assert_eq!(untrusting.get::<Vec<Value>>("/api/v1/people").await.unwrap_err().status, 0);
    server.shutdown().await.unwrap();
}

/// An init that fails part way — here at a first approver's name the console refuses, which is
/// found only when the people are written, after the keys — leaves nothing of itself behind:
/// the same command with the name corrected works in the same directory, on the same database.
#[test]
fn an_init_that_fails_part_way_can_be_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let backends = support::backend::test_backends(dir.path());
    let long = "x".repeat(500);
    let err = rearview_console::init_on(dir.path(), &backends, "tenant-a", "ivan", &long)
        .expect_err("a 500-character name was taken");
    assert!(!err.to_string().contains("already holds"), "{err}");
    let out = rearview_console::init_on(dir.path(), &backends, "tenant-a", "ivan", "rita")
        .unwrap_or_else(|e| panic!("init again after a failed one: {e}"));
    assert_eq!(out.approver_name, "rita");
}

#[test]
fn key_files_are_private_and_init_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    rearview_console::init(dir.path(), "tenant-a", "ivan").unwrap();
    for f in ["signing.pk8", "sealing.key"] {
        let mode = std::fs::metadata(dir.path().join("keys").join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let keys: Vec<Vec<u8>> = ["signing.pk8", "sealing.key"]
        .iter()
        .map(|f| std::fs::read(dir.path().join("keys").join(f)).unwrap())
        .collect();
    let err = rearview_console::init(dir.path(), "tenant-a", "ivan").unwrap_err();
    assert!(err.to_string().contains("already holds a tenant"), "{err}");
    // The refused init removes nothing (a failed init cleans up only what it made itself).
    for (f, before) in ["signing.pk8", "sealing.key"].iter().zip(&keys) {
        let now = std::fs::read(dir.path().join("keys").join(f)).unwrap();
        assert_eq!(&now, before, "{f} changed or went");
    }
    assert!(dir.path().join("console.db").exists());
}

/// The binary as the demo uses it: init, serve on port 0 (address on stdout and in a file),
/// API subcommands with a token.
#[test]
fn cli_out_of_process() {
    let exe = env!("CARGO_BIN_EXE_rearview-console");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(exe).args(["init", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tokens = InitTokens::parse(&stdout).unwrap();
    let (token, approver) = (tokens.admin_token, tokens.approver_token);
    assert!(token.starts_with("rvp_") && approver.starts_with("rvp_"), "{stdout}");

    let mut serve = std::process::Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    assert_eq!(std::fs::read_to_string(data.join("console.url")).unwrap().trim(), url);

    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new(exe)
            .args(args)
            .env("REARVIEW_TOKEN", &token)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ingrid = run(&["person", "add", "--name", "ingrid", "--role", "investigator"]);
    let req = run(&["approval", "request", "--user", "alice", "--justification", "case 1"]);
    let id = req["id"].as_i64().unwrap().to_string();
    // A call beyond the caller's roles is refused with a clear message and a failing exit status.
    let out = std::process::Command::new(exe)
        .args(["person", "list"])
        .env("REARVIEW_TOKEN", ingrid["token"].as_str().unwrap())
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let out = std::process::Command::new(exe)
        .args(["approval", "approve", &id, "--data"])
        .arg(&data)
        .env("REARVIEW_TOKEN", &approver)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = run(&["enrollment-token", "create", "--ttl", "60"]);
    assert!(t["token"].as_str().unwrap().starts_with("rve_"));
    let clips = run(&["clip", "list"]);
    assert_eq!(clips, json!([]));

    // SIGTERM stops it and removes the address file.
    unsafe_free_kill(serve.id());
    let status = wait_timeout(&mut serve, Duration::from_secs(10));
    assert!(status, "serve did not stop on SIGTERM");
    assert!(!data.join("console.url").exists());
}

fn unsafe_free_kill(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

fn wait_timeout(child: &mut std::process::Child, t: Duration) -> bool {
    let deadline = std::time::Instant::now() + t;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    false
}
