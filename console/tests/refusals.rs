//! How the console answers when its database refuses a change: a rule of the database (a
//! UNIQUE or CHECK constraint, a trigger's `RAISE`) is a permanent refusal of this request,
//! 409 with the database's reason, and nothing is half done; a database that is merely busy is
//! a retryable 503. An audited change whose audit line cannot be written does not happen.
//! Real console on 127.0.0.1:0, on the test backend (a real SQLite file or PostgreSQL
//! database, `support::backend`); no uploader (these tests enroll by hand).

mod support;

use rearview_console::client::AdminClient;
use rearview_console::{InitOutput, Server, ServerConfig, ServerHandle};
use ring::signature::KeyPair;
use serde_json::{json, Value};
use support::backend::TestDb;

/// `init` in a temp directory and `serve`; the database beside the console, for the rules the
/// tests add to it.
async fn serve() -> (tempfile::TempDir, ServerHandle, InitOutput, TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let out = support::backend::init_tenant(dir.path(), "approver");
    let db = TestDb::of(dir.path());
    let config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
    let server = Server::start(config).await.unwrap();
    (dir, server, out, db)
}

/// From now on, the audit log refuses lines of `action` (a trigger that raises), as a full or
/// damaged log would.
fn refuse_audit(db: &TestDb, action: &str) {
    let name = format!("refuse_{}", action.replace('.', "_"));
    let message = format!("the audit log refuses {action}");
    db.refuse_inserts(&name, "audit", &format!("NEW.action = '{action}'"), &message);
}

/// Lets the audit log take lines of `action` again.
fn allow_audit(db: &TestDb, action: &str) {
    db.allow(&format!("refuse_{}", action.replace('.', "_")), "audit");
}

/// Asks to enroll a fresh key with enrollment token `token`; the status and the JSON answer.
async fn enroll(url: &str, token: &str) -> (u16, Value) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let pk = hex::encode(pair.public_key().as_ref());
    let proof =
        hex::encode(pair.sign(&rearview_protocol::enroll_proof_message(token, &pk)).as_ref());
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/enroll"))
        .json(&json!({"token": token, "public_key": pk, "proof": proof, "hostname": "h"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A database rule that refuses the change (here: an operator's trigger that closes
/// enrollment) is 409 with its reason, not a 503 "database down"; and the refused enrollment
/// does not use up the one-time token, which works once the rule is lifted.
#[tokio::test]
async fn a_change_the_database_refuses_is_409_with_the_reason_and_loses_nothing() {
    let (_dir, server, out, db) = serve().await;
    db.refuse_inserts("closed", "devices", "true", "enrollment is closed by the operator");
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let token = t["token"].as_str().unwrap();

    let (status, body) = enroll(&url, token).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("enrollment is closed by the operator"), "{error}");

    let used = db.text("SELECT used_ms FROM enrollment_tokens");
    assert_eq!(used, "", "a refused enrollment must not use up the token");
    db.allow("closed", "devices");
    let (status, body) = enroll(&url, token).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["device_id"].as_str().unwrap().starts_with("dev-"));
}

/// The status of a call that must fail, and its message.
async fn refused<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, rearview_console::client::ClientError>>,
) -> String {
    let e = call.await.expect_err("the change must be refused");
    assert!(e.status >= 400, "{e}");
    e.message
}

/// Each audited change whose audit line the log refuses is refused itself and leaves nothing
/// behind: no approval request, no decision (nor a new policy version), no settings, no
/// enrollment token, no device. The first two go through once the log takes lines again.
#[tokio::test]
async fn a_change_whose_audit_line_cannot_be_written_does_not_happen() {
    let (_dir, server, out, db) = serve().await;
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let approver = AdminClient::new(&url, &out.approver_token, None).unwrap();
    let request = json!({"user": "alice", "mode": "all-activities", "justification": "case 7"});

    refuse_audit(&db, "approval.request");
    let why = refused(admin.post::<_, Value>("/api/v1/approvals", &request)).await;
    assert!(why.contains("the audit log refuses approval.request"), "{why}");
    assert_eq!(db.int("SELECT COUNT(*) FROM approvals"), 0);
    allow_audit(&db, "approval.request");
    let a: Value = admin.post("/api/v1/approvals", &request).await.unwrap();
    let id = a["id"].as_i64().unwrap();

    refuse_audit(&db, "approval.approve");
    let version = db.text("SELECT value FROM meta WHERE key = 'policy_version'");
    let approve = format!("/api/v1/approvals/{id}/approve");
    let why = refused(approver.post::<_, Value>(&approve, &json!({}))).await;
    assert!(why.contains("the audit log refuses approval.approve"), "{why}");
    let state = db.text(&format!("SELECT state FROM approvals WHERE id = {id}"));
    assert_eq!(state, "pending");
    let after = db.text("SELECT value FROM meta WHERE key = 'policy_version'");
    assert_eq!(after, version, "a decision that did not happen raises no version");
    allow_audit(&db, "approval.approve");
    let a: Value = approver.post(&approve, &json!({})).await.unwrap();
    assert_eq!(a["state"], "approved");

    refuse_audit(&db, "policy.settings");
    let settings = json!({"capture": {"enabled": true}});
    let why = refused(admin.put::<_, Value>("/api/v1/policy/settings", &settings)).await;
    assert!(why.contains("the audit log refuses policy.settings"), "{why}");
    let stored = db.int("SELECT COUNT(*) FROM meta WHERE key = 'capture_settings'");
    assert_eq!(stored, 0, "settings whose audit line failed must not be applied");

    refuse_audit(&db, "enrollment_token.create");
    let why = refused(admin.post::<_, Value>("/api/v1/enrollment-tokens", &json!({}))).await;
    assert!(why.contains("the audit log refuses enrollment_token.create"), "{why}");
    assert_eq!(db.int("SELECT COUNT(*) FROM enrollment_tokens"), 0);
    allow_audit(&db, "enrollment_token.create");

    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    refuse_audit(&db, "device.enroll");
    let (status, body) = enroll(&url, t["token"].as_str().unwrap()).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("refuses device.enroll"), "{body}");
    assert_eq!(db.int("SELECT COUNT(*) FROM devices"), 0);
    let used = db.text("SELECT used_ms FROM enrollment_tokens");
    assert_eq!(used, "", "an enrollment that did not happen keeps its token");
}
