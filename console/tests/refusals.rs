//! How the console answers when its database refuses a change: a rule of the database (a
//! UNIQUE or CHECK constraint, a trigger's `RAISE`) is a permanent refusal of this request,
//! 409 with the database's reason, and nothing is half done; a database that is merely busy is
//! a retryable 503. Real console on 127.0.0.1:0, real SQLite file; no uploader (these tests
//! enroll by hand).

use rearview_console::client::AdminClient;
use rearview_console::{Server, ServerConfig, ServerHandle};
use ring::signature::KeyPair;
use serde_json::{json, Value};

/// `init` in a temp directory, then `prepare` runs on the database file before `serve`.
async fn serve_with(prepare: &str) -> (tempfile::TempDir, ServerHandle, String) {
    let dir = tempfile::tempdir().unwrap();
    let out =
        rearview_console::init_with_approver(dir.path(), "tenant-a", "ivan", "approver").unwrap();
    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    db.execute_batch(prepare).unwrap();
    drop(db);
    let config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
    let server = Server::start(config).await.unwrap();
    (dir, server, out.admin_token)
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
    let (dir, server, admin_token) = serve_with(
        "CREATE TRIGGER closed BEFORE INSERT ON devices
         BEGIN SELECT RAISE(ABORT, 'enrollment is closed by the operator'); END;",
    )
    .await;
    let url = server.url();
    let admin = AdminClient::new(&url, &admin_token, None).unwrap();
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let token = t["token"].as_str().unwrap();

    let (status, body) = enroll(&url, token).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("enrollment is closed by the operator"), "{error}");

    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    let used: Option<i64> =
        db.query_row("SELECT used_ms FROM enrollment_tokens", [], |r| r.get(0)).unwrap();
    assert_eq!(used, None, "a refused enrollment must not use up the token");
    db.execute_batch("DROP TRIGGER closed;").unwrap();
    let (status, body) = enroll(&url, token).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["device_id"].as_str().unwrap().starts_with("dev-"));
}
