//! The console when its database goes away: a private PostgreSQL cluster per test (the test
//! kit's, started and stopped for real), a real console on 127.0.0.1:0, devices as raw HTTP.
//!
//! What must hold: while the database is down `/healthz` is 503 naming it, and every device
//! call is a retryable 503 (with Retry-After), so devices keep their spool; nothing is half
//! written; once the database is back the console serves again by itself (no restart), the
//! same requests succeed, and replicas wake each other's streams again.

mod support;

use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::{Server, ServerConfig};
use rearview_testkit::postgres::Postgres;
use serde_json::{json, Value};
use support::device_trust::{bytes, enroll_at, one_segment, sha};
use support::now_ms;

async fn healthz(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(format!("{url}/healthz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// `PUT /api/v1/device/clips/{id}` of a minimal manifest: its status and Retry-After.
async fn put_manifest(url: &str, token: &str, manifest: &Value) -> (u16, Option<String>, Value) {
    let id = manifest["clip_id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .put(format!("{url}/api/v1/device/clips/{id}"))
        .bearer_auth(token)
        .json(manifest)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_makes_the_console_unhealthy_and_devices_retry_then_it_resumes() {
    let pg = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = support::backend::init_on_postgres(dir.path(), pg.create_database(), "rita");
    let server = Server::start(ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = server.url();
    let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
    let approver = AdminClient::new(&url, &out.approver_token, None).unwrap();
    support::approve(&admin, &approver, "alice", "all-activities").await;
    let dev = enroll_at(&url, &admin).await;
    assert_eq!(healthz(&url).await, (200, "ok".into()));
    // A clip recorded while alice is approved, and its one segment.
    let start = now_ms();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let segment = bytes(7, 4000);
    let manifest =
        one_segment("c-outage", &dev, "alice", "all-activities", (start, start + 1000), &segment);

    pg.stop();
    let (status, body) = healthz(&url).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database unreachable"), "{body}");
    let (status, retry, body) = put_manifest(&url, &dev.token, &manifest).await;
    assert_eq!(status, 503, "a device must be told to retry: {body}");
    assert!(retry.is_some(), "503 without Retry-After");
    let policy = reqwest::Client::new()
        .get(format!("{url}/api/v1/device/policy"))
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap();
    assert_eq!(policy.status(), 503);

    pg.restart();
    // No restart of the console: its pool drops the dead connections and makes new ones.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while healthz(&url).await.0 != 200 {
        assert!(tokio::time::Instant::now() < end, "the console did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = put_manifest(&url, &dev.token, &manifest).await;
    assert_eq!(status, 200, "the same manifest after the outage: {body}");
    let r = reqwest::Client::new()
        .put(format!("{url}/api/v1/device/segments/{}", sha(&segment)))
        .bearer_auth(&dev.token)
        .body(segment.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let clips: Vec<Value> = admin.get("/api/v1/clips").await.unwrap();
    assert_eq!(clips.len(), 1, "the outage left a clip half written or twice: {clips:?}");
    assert_eq!(clips[0]["complete"], json!(true), "{clips:?}");
    server.shutdown().await.unwrap();
}

/// A write in which the database refused a statement commits nothing, also when the code that
/// ran it dropped the error and went on: on PostgreSQL the refused statement ends the
/// transaction and its COMMIT silently rolls back what came before, on SQLite the rest would
/// commit without it; both must tell the caller instead. (Runs on the backend
/// `REARVIEW_TEST_STORE` names.)
#[test]
fn a_write_with_a_refused_statement_commits_nothing_even_when_its_error_was_dropped() {
    use rearview_console::error::ConsoleError;
    use rearview_console::store::Store;
    let dir = tempfile::tempdir().unwrap();
    support::backend::init_tenant(dir.path(), "rita");
    let db = support::backend::TestDb::of(dir.path());
    db.refuse_inserts("no_bad_key", "meta", "NEW.key = 'bad'", "refused by the test");
    let store = Store::open(dir.path()).unwrap();
    let wrote = store.write_now(|tx| {
        tx.meta_set("good", "1")?;
        // A bug: the error is dropped.
        let _ = tx.meta_set("bad", "1");
        Ok::<_, ConsoleError>(())
    });
    let err = wrote.expect_err("a write with a refused statement reported success");
    assert!(err.to_string().contains("refused"), "{err}");
    let good = store.read_now(|tx| tx.meta_get("good")).unwrap();
    assert_eq!(good, None, "half of a failed write was committed");
}

/// A stream that could not read the pending triggers when it opened (the database refused the
/// read: the table is renamed away meanwhile) reads them again by itself: the trigger arrives
/// on the same stream, with no reconnect and no wake-up from anyone. (Both backends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_read_failed_reads_again_by_itself() {
    let c = support::device_trust::Console::start().await;
    c.approve("alice", "specific-activities").await;
    let (token, device) = support::enroll(&c.url, &c.admin).await;
    let id = support::trigger_alice(&c.admin, &device).await;
    let db = c.db();
    db.exec("ALTER TABLE triggers RENAME TO triggers_away");
    let mut s = support::streams::stream(&c.url, &token).await;
    let early = s.triggers_within(Duration::from_secs(1)).await;
    assert!(early.is_empty(), "read a table that was not there: {early:?}");
    db.exec("ALTER TABLE triggers_away RENAME TO triggers");
    let seen = s.until_trigger(&id, Duration::from_secs(15)).await;
    assert_eq!(seen, [id]);
}
