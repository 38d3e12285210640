//! Capture approvals through the HTTP API — rejected, expired before a decision, expired while
//! approved, revoked — each checked in the signed bundle devices get and in the audit log; and
//! `serve` run out of process, refusing plain HTTP off loopback unless told otherwise.
//!
//! Time passing is simulated by moving `expires_ms` in the console's own SQLite file
//! (`DATA/console.db`, table `approvals`) between API calls; nothing asserts a duration.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use rearview_console::client::AdminClient;
use rearview_console::ServerHandle;
use rearview_uploader::{Uploader, UploaderConfig};
use serde_json::{json, Value};

mod support;

const USER: &str = "alice";

/// A running console with its first admin (ivan) and two approvers: rita (made by `init`) and
/// vera (added by a second admin, olga, and confirmed by rita: an approver ivan made could not
/// decide ivan's requests).
struct Console {
    dir: tempfile::TempDir,
    server: ServerHandle,
    admin: AdminClient,
    rita: AdminClient,
    vera: AdminClient,
}

impl Console {
    async fn start() -> Console {
        let (dir, server, out) = support::start_with("rita").await;
        let admin = AdminClient::new(&server.url(), &out.admin_token, None).unwrap();
        let rita = AdminClient::new(&server.url(), &out.approver_token, None).unwrap();
        let olga = person(&server.url(), &admin, "olga", "admin").await;
        let v: Value = olga
            .post("/api/v1/people", &json!({"name": "vera", "roles": ["approver"]}))
            .await
            .unwrap();
        let _: Value = rita
            .post(&format!("/api/v1/people/{}/roles/approver/confirm", v["id"]), &json!({}))
            .await
            .unwrap();
        let vera = AdminClient::new(&server.url(), v["token"].as_str().unwrap(), None).unwrap();
        Console { dir, server, admin, rita, vera }
    }

    /// ivan asks for capture of [`USER`]; returns the approval id.
    async fn request(&self, ttl_secs: i64) -> i64 {
        let a: Value = self
            .admin
            .post(
                "/api/v1/approvals",
                &json!({"user": USER, "mode": "specific-activities",
                        "justification": "case 4711", "ttl_secs": ttl_secs}),
            )
            .await
            .unwrap();
        assert_eq!(a["state"], json!("pending"));
        a["id"].as_i64().unwrap()
    }

    /// ivan's request for a day, approved by rita; returns its id and the version of the bundle
    /// that names [`USER`].
    async fn approved(&self) -> (i64, u64) {
        let id = self.request(86400).await;
        let _: Value =
            self.rita.post(&format!("/api/v1/approvals/{id}/approve"), &json!({})).await.unwrap();
        let (version, users) = bundle(&self.admin).await;
        assert_eq!(users, [USER]);
        (id, version)
    }

    async fn approval(&self, id: i64) -> Value {
        let all: Vec<Value> = self.admin.get("/api/v1/approvals").await.unwrap();
        all.into_iter().find(|a| a["id"] == json!(id)).expect("approval listed")
    }

    /// Moves the approval's expiry in the database, standing in for the time it takes to get
    /// there (the console reads it from the database on every call and every tick).
    fn set_expiry(&self, id: i64, expires_ms: i64) {
        let db = rusqlite::Connection::open(self.dir.path().join("console.db")).unwrap();
        let changed = db
            .execute("UPDATE approvals SET expires_ms = ?1 WHERE id = ?2", [expires_ms, id])
            .unwrap();
        assert_eq!(changed, 1);
    }

    /// A device enrolled with the real uploader (no policy fetched yet).
    async fn device(&self) -> (tempfile::TempDir, std::sync::Arc<Uploader>) {
        let t: Value = self.admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let up = Uploader::open(UploaderConfig::new(self.server.url(), state.path())).unwrap();
        up.enroll(t["token"].as_str().unwrap(), "host").await.unwrap();
        (state, up)
    }
}

async fn person(url: &str, admin: &AdminClient, name: &str, role: &str) -> AdminClient {
    let p: Value =
        admin.post("/api/v1/people", &json!({"name": name, "roles": [role]})).await.unwrap();
    AdminClient::new(url, p["token"].as_str().unwrap(), None).unwrap()
}

/// The version of the bundle `GET /api/v1/policy` serves and the users its signed payload
/// names (read from the payload itself, not from the outer version field).
async fn bundle(admin: &AdminClient) -> (u64, Vec<String>) {
    let m: Value = admin.get("/api/v1/policy").await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(m["signed"]["payload"].as_str().unwrap())
        .unwrap();
    let payload: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(payload["version"], m["version"]);
    let users = payload["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["principal"].as_str().unwrap().to_owned())
        .collect();
    (payload["version"].as_u64().unwrap(), users)
}

/// Audit entries about approval `id`, as (actor, action, details).
async fn audit_of(admin: &AdminClient, id: i64) -> Vec<(String, String, Value)> {
    let audit: Vec<Value> = admin.get("/api/v1/audit").await.unwrap();
    audit
        .into_iter()
        .filter(|a| a["target"] == json!(format!("approval:{id}")))
        .map(|a| {
            (
                a["actor"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
                a["details"].clone(),
            )
        })
        .collect()
}

/// Issues a trigger for [`USER`]: the HTTP status and, when refused, the reason.
async fn trigger(admin: &AdminClient) -> (u16, String) {
    let body = json!({"user": USER, "event_time": rearview_uploader::now_ms(), "before": 5,
                      "after": 5, "reason": "r"});
    match admin.post::<_, Value>("/api/v1/triggers", &body).await {
        Ok(_) => (200, String::new()),
        Err(e) => (e.status, e.message),
    }
}

async fn assert_no_trigger_without_approval(admin: &AdminClient) {
    let (status, message) = trigger(admin).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("no capture approval in force"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_never_enters_the_bundle_and_cannot_be_approved_after() {
    let c = Console::start().await;
    let (_state, device) = c.device().await;
    let (v0, _) = bundle(&c.admin).await;
    let id = c.request(86400).await;

    let r: Value = c
        .rita
        .post(&format!("/api/v1/approvals/{id}/reject"), &json!({"comment": "not proportionate"}))
        .await
        .unwrap();
    assert_eq!((r["state"].clone(), r["decided_by"].clone()), (json!("rejected"), json!("rita")));
    let (v1, users) = bundle(&c.admin).await;
    assert!(v1 > v0, "a decision raises the version");
    assert!(users.is_empty(), "{users:?}");
    // The device's own verified copy does not name the user either.
    let p = device.sync_policy().await.unwrap().expect("a first policy");
    assert_eq!(p.version(), v1);
    assert!(p.payload().users.is_empty());

    let audit = audit_of(&c.admin, id).await;
    let actions: Vec<&str> = audit.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(actions, ["approval.request", "approval.reject"]);
    assert_eq!(audit[1].0, "person:rita");
    assert_eq!(audit[1].2["comment"], json!("not proportionate"));

    // Neither the other approver nor the one who rejected can turn it round, and it cannot be
    // rejected twice.
    for (who, action) in [(&c.vera, "approve"), (&c.rita, "approve"), (&c.vera, "reject")] {
        let err = who
            .post::<_, Value>(&format!("/api/v1/approvals/{id}/{action}"), &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.status, 409, "{action}: {}", err.message);
        assert!(err.message.contains("is rejected"), "{}", err.message);
    }
    assert_eq!(c.approval(id).await["state"], json!("rejected"));
    assert_eq!(bundle(&c.admin).await, (v1, vec![]), "refused decisions change nothing");
    assert_no_trigger_without_approval(&c.admin).await;
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_request_past_its_expiry_cannot_be_approved_and_is_listed_expired() {
    let c = Console::start().await;
    let id = c.request(60).await;
    // The request's minute has gone by without a decision.
    c.set_expiry(id, rearview_uploader::now_ms() - 1000);

    for action in ["approve", "reject"] {
        let err = c
            .rita
            .post::<_, Value>(&format!("/api/v1/approvals/{id}/{action}"), &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.status, 409, "{action}: {}", err.message);
        assert!(err.message.contains("expired"), "{}", err.message);
    }
    let a = c.approval(id).await;
    assert_eq!((a["state"].clone(), a["decided_by"].clone()), (json!("expired"), Value::Null));
    assert!(bundle(&c.admin).await.1.is_empty());
    let actions: Vec<String> =
        audit_of(&c.admin, id).await.into_iter().map(|(_, a, _)| a).collect();
    assert_eq!(actions, ["approval.request"]);
    c.server.shutdown().await.unwrap();
}

/// The console's 1 s ticker notices an approval reaching its expiry and publishes a bundle
/// without it; the device accepts that bundle (it refuses bundles carrying expired approvals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_approval_reaching_its_expiry_leaves_the_bundle_while_the_console_runs() {
    let c = Console::start().await;
    let (id, v1) = c.approved().await;
    let (_state, device) = c.device().await;
    let first = device.sync_policy().await.unwrap().expect("a first policy");
    assert_eq!(first.payload().users.len(), 1);

    // Due in 1.5 s instead of a day: the ticker compares expiries against its last tick, so the
    // new expiry must lie ahead of it.
    c.set_expiry(id, rearview_uploader::now_ms() + 1500);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (v2, users) = loop {
        let (v, users) = bundle(&c.admin).await;
        if v > v1 {
            break (v, users);
        }
        assert!(tokio::time::Instant::now() < deadline, "policy still at v{v1} after 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(users.is_empty(), "v{v2} still names {users:?}");
    assert_eq!(c.approval(id).await["state"], json!("expired"));
    let audit = audit_of(&c.admin, id).await;
    let last: Vec<(&str, &str)> =
        audit.iter().rev().take(1).map(|(w, a, _)| (w.as_str(), a.as_str())).collect();
    assert_eq!(last, [("console", "approval.expire")], "the expiry is in the audit log");
    let next = device.sync_policy().await.unwrap().expect("the newer policy");
    assert_eq!(next.version(), v2);
    assert!(next.payload().users.is_empty());
    assert_no_trigger_without_approval(&c.admin).await;
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_another_approver_leaves_the_bundle_and_the_audit_names_both() {
    let c = Console::start().await;
    let (id, v1) = c.approved().await;
    let (_state, _device) = c.device().await;
    assert_eq!(trigger(&c.admin).await.0, 200);

    // An investigator may not revoke; an approver other than the one who approved may.
    let inv = person(&c.server.url(), &c.admin, "ingrid", "investigator").await;
    let err = inv
        .post::<_, Value>(&format!("/api/v1/approvals/{id}/revoke"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    let r: Value = c
        .vera
        .post(&format!("/api/v1/approvals/{id}/revoke"), &json!({"comment": "case closed"}))
        .await
        .unwrap();
    assert_eq!(r["state"], json!("revoked"));
    // The record keeps who approved as well as who revoked.
    assert_eq!((r["decided_by"].clone(), r["revoked_by"].clone()), (json!("rita"), json!("vera")));
    assert!(r["revoked_ms"].as_i64() >= r["decided_ms"].as_i64());
    let (v2, users) = bundle(&c.admin).await;
    assert!(v2 > v1);
    assert!(users.is_empty(), "{users:?}");
    assert_no_trigger_without_approval(&c.admin).await;

    let audit = audit_of(&c.admin, id).await;
    let who: Vec<(&str, &str)> = audit.iter().map(|(w, a, _)| (w.as_str(), a.as_str())).collect();
    assert_eq!(
        who,
        [
            ("person:ivan", "approval.request"),
            ("person:rita", "approval.approve"),
            ("person:vera", "approval.revoke")
        ]
    );
    assert_eq!(audit[2].2["comment"], json!("case closed"));
    // Revoked is final.
    for action in ["approve", "revoke"] {
        let err = c
            .rita
            .post::<_, Value>(&format!("/api/v1/approvals/{id}/{action}"), &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.status, 409, "{action}");
    }
    assert_eq!(bundle(&c.admin).await.0, v2);
    c.server.shutdown().await.unwrap();
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn init(exe: &str, data: &Path) -> String {
    let out = std::process::Command::new(exe).args(["init", "--data"]).arg(data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    support::labelled_token(&String::from_utf8(out.stdout).unwrap(), "admin token (admin): ")
}

/// The server treats only loopback addresses (`IpAddr::is_loopback`) as safe for plain HTTP;
/// `0.0.0.0` (every interface) is not one.
#[test]
fn serve_refuses_plain_http_off_loopback_unless_insecure_http_is_given() {
    let exe = env!("CARGO_BIN_EXE_rearview-console");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = init(exe, &data);

    // Refused at start: it must exit by itself (a bounded wait, so a server that starts anyway
    // fails the test instead of hanging it).
    let mut refused = std::process::Command::new(exe)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while refused.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = refused.kill();
            let _ = refused.wait();
            panic!("serve kept running on 0.0.0.0 without TLS or --insecure-http");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = refused.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing plain HTTP on 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure-http"), "{stderr}");
    assert!(!data.join("console.url").exists());

    let mut serve = Child(
        std::process::Command::new(exe)
            .args(["serve", "--listen", "0.0.0.0:0", "--insecure-http", "--data"])
            .arg(&data)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(serve.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("serve started").to_owned();
    let port = url.strip_prefix("http://0.0.0.0:").expect("plain HTTP on every interface");
    // It answers the API (here through loopback, one of the interfaces it listens on).
    let out = std::process::Command::new(exe)
        .args(["person", "list", "--server", &format!("http://127.0.0.1:{port}")])
        .env("REARVIEW_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let people: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(people[0]["name"], json!("admin"));
}

/// A database made by a console before revocations kept the approver gains the new columns on
/// open, and its rows stay readable.
#[test]
fn an_older_database_gains_the_revocation_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE approvals (
            id INTEGER PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, justification TEXT NOT NULL,
            requested_by TEXT NOT NULL, requested_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
            state TEXT NOT NULL, decided_by TEXT, decided_ms INTEGER);
         INSERT INTO approvals VALUES (1, 'alice', 'specific-activities', 'case', 'ivan', 1, 2,
            'approved', 'rita', 1);",
    )
    .unwrap();
    drop(db);
    let store = rearview_console::store::Store::open(dir.path()).unwrap();
    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    let row: (String, Option<String>) = db
        .query_row("SELECT decided_by, revoked_by FROM approvals WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(row, ("rita".to_string(), None));
    drop(db);
    drop(store);
    // Opening again is a no-op.
    rearview_console::store::Store::open(dir.path()).unwrap();
}
