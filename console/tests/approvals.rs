//! Capture approvals through the HTTP API (what a device then verifies is in
//! `tests/tests/protocol/approvals.rs`) — rejected, expired before a decision, expired while
//! approved, revoked — each checked in the signed bundle devices get and in the audit log; and
//! `serve` run out of process, refusing plain HTTP off loopback unless told otherwise.
//!
//! Time passing is simulated by moving `expires_ms` in the console's own SQLite file
//! (`DATA/console.db`, table `approvals`) between API calls; nothing asserts a duration.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

mod support;

use support::approvals::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_request_past_its_expiry_cannot_be_approved_and_is_listed_expired() {
    let c = Console::start().await;
    let id = c.request(60).await;
    // The request's minute has gone by without a decision.
    c.set_expiry(id, support::now_ms() - 1000);

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

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn init(exe: &str, data: &Path) -> String {
    rearview_testkit::console::init(exe.as_ref(), data, &[]).unwrap().admin_token
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
