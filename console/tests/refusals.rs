//! How the console answers when its database refuses a change: a rule of the database (a
//! UNIQUE or CHECK constraint, a trigger's `RAISE`) is a permanent refusal of this request,
//! 409 with the database's reason, and nothing is half done; a database that is merely busy is
//! a retryable 503. An audited change whose audit line cannot be written does not happen.
//! Real console on 127.0.0.1:0, real SQLite file; no uploader (these tests enroll by hand).

use rearview_console::client::AdminClient;
use rearview_console::{InitOutput, Server, ServerConfig, ServerHandle};
use ring::signature::KeyPair;
use serde_json::{json, Value};

/// `init` in a temp directory, then `prepare` runs on the database file before `serve`.
async fn serve_with(prepare: &str) -> (tempfile::TempDir, ServerHandle, InitOutput) {
    let dir = tempfile::tempdir().unwrap();
    let out =
        rearview_console::init_with_approver(dir.path(), "tenant-a", "ivan", "approver").unwrap();
    sql(&dir, prepare);
    let config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
    let server = Server::start(config).await.unwrap();
    (dir, server, out)
}

/// Runs `batch` on the console's database file, beside the running console.
fn sql(dir: &tempfile::TempDir, batch: &str) {
    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    db.execute_batch(batch).unwrap();
}

/// One value `query` reads from the console's database file.
fn read<T: rusqlite::types::FromSql>(dir: &tempfile::TempDir, query: &str) -> T {
    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    db.query_row(query, [], |r| r.get(0)).unwrap()
}

/// From now on, the audit log refuses lines of `action` (a trigger that RAISEs), as a full or
/// damaged log would.
fn refuse_audit(dir: &tempfile::TempDir, action: &str) {
    sql(
        dir,
        &format!(
            "CREATE TRIGGER refuse_{name} BEFORE INSERT ON audit WHEN NEW.action = '{action}'
             BEGIN SELECT RAISE(ABORT, 'the audit log refuses {action}'); END;",
            name = action.replace('.', "_")
        ),
    );
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
    let (dir, server, out) = serve_with(
        "CREATE TRIGGER closed BEFORE INSERT ON devices
         BEGIN SELECT RAISE(ABORT, 'enrollment is closed by the operator'); END;",
    )
    .await;
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let token = t["token"].as_str().unwrap();

    let (status, body) = enroll(&url, token).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("enrollment is closed by the operator"), "{error}");

    let used: Option<i64> = read(&dir, "SELECT used_ms FROM enrollment_tokens");
    assert_eq!(used, None, "a refused enrollment must not use up the token");
    sql(&dir, "DROP TRIGGER closed;");
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
    let (dir, server, out) = serve_with("").await;
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let approver = AdminClient::new(&url, &out.approver_token, None).unwrap();
    let request = json!({"user": "alice", "mode": "all-activities", "justification": "case 7"});

    refuse_audit(&dir, "approval.request");
    let why = refused(admin.post::<_, Value>("/api/v1/approvals", &request)).await;
    assert!(why.contains("the audit log refuses approval.request"), "{why}");
    assert_eq!(read::<i64>(&dir, "SELECT COUNT(*) FROM approvals"), 0);
    sql(&dir, "DROP TRIGGER refuse_approval_request;");
    let a: Value = admin.post("/api/v1/approvals", &request).await.unwrap();
    let id = a["id"].as_i64().unwrap();

    refuse_audit(&dir, "approval.approve");
    let version: String = read(&dir, "SELECT value FROM meta WHERE key = 'policy_version'");
    let approve = format!("/api/v1/approvals/{id}/approve");
    let why = refused(approver.post::<_, Value>(&approve, &json!({}))).await;
    assert!(why.contains("the audit log refuses approval.approve"), "{why}");
    let state: String = read(&dir, &format!("SELECT state FROM approvals WHERE id = {id}"));
    assert_eq!(state, "pending");
    let after: String = read(&dir, "SELECT value FROM meta WHERE key = 'policy_version'");
    assert_eq!(after, version, "a decision that did not happen raises no version");
    sql(&dir, "DROP TRIGGER refuse_approval_approve;");
    let a: Value = approver.post(&approve, &json!({})).await.unwrap();
    assert_eq!(a["state"], "approved");

    refuse_audit(&dir, "policy.settings");
    let settings = json!({"capture": {"enabled": true}});
    let why = refused(admin.put::<_, Value>("/api/v1/policy/settings", &settings)).await;
    assert!(why.contains("the audit log refuses policy.settings"), "{why}");
    let stored: i64 = read(&dir, "SELECT COUNT(*) FROM meta WHERE key = 'capture_settings'");
    assert_eq!(stored, 0, "settings whose audit line failed must not be applied");

    refuse_audit(&dir, "enrollment_token.create");
    let why = refused(admin.post::<_, Value>("/api/v1/enrollment-tokens", &json!({}))).await;
    assert!(why.contains("the audit log refuses enrollment_token.create"), "{why}");
    assert_eq!(read::<i64>(&dir, "SELECT COUNT(*) FROM enrollment_tokens"), 0);
    sql(&dir, "DROP TRIGGER refuse_enrollment_token_create;");

    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    refuse_audit(&dir, "device.enroll");
    let (status, body) = enroll(&url, t["token"].as_str().unwrap()).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("refuses device.enroll"), "{body}");
    assert_eq!(read::<i64>(&dir, "SELECT COUNT(*) FROM devices"), 0);
    let used: Option<i64> = read(&dir, "SELECT used_ms FROM enrollment_tokens");
    assert_eq!(used, None, "an enrollment that did not happen keeps its token");
}
