//! Several console processes ("replicas") serving one tenant from one PostgreSQL database:
//! real servers on 127.0.0.1:0, each with its own store pool, replica listener and poller,
//! sharing a database of the test kit's private cluster and one data directory (the tenant's
//! keys, as every replica of a tenant holds them). Devices are raw HTTP clients here, so which
//! replica a device talks to is the test's choice.
//!
//! What must hold: a trigger issued on one replica reaches a device streaming from another,
//! once, also when the replicas' wake-ups are cut; a device that reconnects elsewhere gets
//! what is pending; policy versions rise across replicas and each names one bundle; approval
//! expiry runs once, and is taken over when its holder stops. The failure tests (a database
//! that stops under load) are in `console/tests/failures.rs`.

mod support;

use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::{InitOutput, Server, ServerConfig, ServerHandle};
use rearview_testkit::postgres::Postgres;
use serde_json::{json, Value};
use support::backend::TestDb;
use support::now_ms;
use support::streams::stream;

/// A tenant on a new PostgreSQL database, served by `n` replicas.
struct Fleet {
    dir: tempfile::TempDir,
    out: InitOutput,
    replicas: Vec<Option<ServerHandle>>,
}

impl Fleet {
    async fn start(n: usize) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let url = Postgres::shared().create_database();
        let out = support::backend::init_on_postgres(dir.path(), url, "rita");
        let mut replicas = Vec::new();
        for _ in 0..n {
            let config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
            replicas.push(Some(Server::start(config).await.unwrap()));
        }
        Fleet { dir, out, replicas }
    }

    fn url(&self, i: usize) -> String {
        self.replicas[i].as_ref().expect("replica stopped").url()
    }

    fn admin(&self, i: usize) -> AdminClient {
        AdminClient::new(&self.url(i), &self.out.admin_token, None).unwrap()
    }

    fn approver(&self, i: usize) -> AdminClient {
        AdminClient::new(&self.url(i), &self.out.approver_token, None).unwrap()
    }

    fn db(&self) -> TestDb {
        TestDb::of(self.dir.path())
    }

    async fn stop(&mut self, i: usize) {
        self.replicas[i].take().expect("replica stopped").shutdown().await.unwrap();
    }
}

/// Enrolls a device at replica `i` and reports alice as its user; the device's token and id.
async fn device(f: &Fleet, i: usize) -> (String, String) {
    let admin = f.admin(i);
    let (token, id) = support::enroll(&f.url(i), &admin).await;
    (token, id)
}

/// Issues a trigger for alice on device `device` at replica `i`; its id.
async fn trigger(f: &Fleet, i: usize, device: &str) -> String {
    support::trigger_alice(&f.admin(i), device).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_issued_on_one_replica_reaches_a_device_streaming_from_another_once() {
    let f = Fleet::start(2).await;
    support::approve(&f.admin(0), &f.approver(0), "alice", "specific-activities").await;
    let (token, id) = device(&f, 0).await;
    let mut on_b = stream(&f.url(1), &token).await;

    let first = trigger(&f, 0, &id).await;
    let seen = on_b.until_trigger(&first, Duration::from_secs(20)).await;
    assert_eq!(seen, std::slice::from_ref(&first));
    // And one issued on B itself, then one on A again: each arrives, none twice.
    let second = trigger(&f, 1, &id).await;
    let third = trigger(&f, 0, &id).await;
    on_b.until_trigger(&third, Duration::from_secs(20)).await;
    // The poller and the listener both wake the stream; it still sends each id once.
    let mut all = vec![first, second.clone(), third.clone()];
    all.extend(on_b.triggers_within(Duration::from_secs(5)).await);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "a trigger arrived twice: {all:?}");
    assert!(all.contains(&second));
}

/// The listeners' connections are cut (as a database failover or a network blip would) and a
/// trigger is issued meanwhile: it still arrives, from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_whose_wake_up_was_lost_still_arrives() {
    let f = Fleet::start(2).await;
    support::approve(&f.admin(0), &f.approver(0), "alice", "specific-activities").await;
    let (token, id) = device(&f, 0).await;
    let mut on_b = stream(&f.url(1), &token).await;
    // Settle: the stream has its policy, nothing else.
    assert!(on_b.triggers_within(Duration::from_secs(1)).await.is_empty());

    f.db().exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    );
    let lost = trigger(&f, 0, &id).await;
    on_b.until_trigger(&lost, Duration::from_secs(20)).await;
}

/// A device whose replica stopped reconnects to another and gets the trigger issued while it
/// was away: the database, not a notification, is what it is owed from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_reconnects_to_another_replica_gets_what_is_pending() {
    let mut f = Fleet::start(2).await;
    support::approve(&f.admin(0), &f.approver(0), "alice", "specific-activities").await;
    let (token, id) = device(&f, 0).await;
    let on_b = stream(&f.url(1), &token).await;
    f.stop(1).await;
    drop(on_b);
    let issued = trigger(&f, 0, &id).await;
    let mut on_a = stream(&f.url(0), &token).await;
    on_a.until_trigger(&issued, Duration::from_secs(20)).await;
}

/// Settings changed on both replicas at once: every change gets its own version, versions only
/// rise, and each version is one signed bundle whichever replica serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_versions_rise_across_replicas_and_each_is_one_bundle() {
    let f = Fleet::start(2).await;
    let (token, _) = device(&f, 0).await;
    let before = f.db().int("SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'policy_version'");
    let changes = (0..10).map(|n| {
        let admin = f.admin(n % 2);
        async move {
            let fps = 1 + (n % 3);
            let _: Value = admin
                .put("/api/v1/policy/settings", &json!({"capture": {"enabled": true, "fps": fps}}))
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(changes).await;
    let after = f.db().int("SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'policy_version'");
    assert_eq!(after, before + 10, "each change raises the version once");
    let audited = f.db().int("SELECT COUNT(*) FROM audit WHERE action = 'policy.settings'");
    assert_eq!(audited, 10);

    let fetch = |i: usize| {
        let (url, token) = (f.url(i), token.clone());
        async move {
            let r = reqwest::Client::new()
                .get(format!("{url}/api/v1/device/policy"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let (a, b) = tokio::join!(fetch(0), fetch(1));
    assert_eq!(a["version"], json!(after));
    assert_eq!(a, b, "two replicas served different bundles for one version");
}

/// Approval expiry runs on the replica holding the lease, once; when that replica stops,
/// another takes the lease over and handles the next expiry, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_runs_once_and_is_taken_over_when_its_holder_stops() {
    let mut f = Fleet::start(2).await;
    let ids: Vec<String> =
        f.replicas.iter().map(|r| r.as_ref().unwrap().replica_id().to_owned()).collect();
    let db = f.db();
    let holder = || {
        let h = db.text("SELECT holder FROM leases WHERE name = 'policy-expiry'");
        (!h.is_empty()).then_some(h)
    };
    let first = wait_for("an expiry lease holder", Duration::from_secs(20), &holder).await;
    let held_by = ids.iter().position(|i| *i == first).expect("held by one of the replicas");

    let expire_soon = |user: &str, in_ms: i64| {
        let (admin, approver, user) = (f.admin(0), f.approver(0), user.to_owned());
        async move {
            let id = support::approve(&admin, &approver, &user, "specific-activities").await;
            (id, now_ms() + in_ms)
        }
    };
    let (a1, due) = expire_soon("alice", 0).await;
    db.exec(&format!("UPDATE approvals SET expires_ms = {} WHERE id = {a1}", due + 1500));
    let db = &db;
    let expired = |id: i64| {
        move || {
            let n = db.int(&format!(
                "SELECT COUNT(*) FROM audit WHERE action = 'approval.expire' AND target = 'approval:{id}'"
            ));
            (n > 0).then_some(n)
        }
    };
    wait_for("the first expiry", Duration::from_secs(30), &expired(a1)).await;

    // The holder stops; the other replica takes the lease once it lapses, and handles the next.
    f.stop(held_by).await;
    let other = 1 - held_by;
    let (a2, due) = expire_soon_on(&f, other, "bob").await;
    db.exec(&format!("UPDATE approvals SET expires_ms = {} WHERE id = {a2}", due + 1500));
    wait_for("the second expiry", Duration::from_secs(40), &expired(a2)).await;
    assert_eq!(holder().as_deref(), Some(ids[other].as_str()), "the lease was not taken over");
    // Given time to be handled twice, each expiry is audited once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(expired(a1)(), Some(1));
    assert_eq!(expired(a2)(), Some(1));
}

/// An approval for `user` requested and approved at replica `i`; its id and the time now.
async fn expire_soon_on(f: &Fleet, i: usize, user: &str) -> (i64, i64) {
    let id = support::approve(&f.admin(i), &f.approver(i), user, "specific-activities").await;
    (id, now_ms())
}

/// Asks `f` (a blocking read of the database, on a thread of its own) until it gives `Some`.
async fn wait_for<T: Send>(what: &str, limit: Duration, f: &(impl Fn() -> Option<T> + Sync)) -> T {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = std::thread::scope(|s| s.spawn(f).join().unwrap()) {
            return v;
        }
        assert!(tokio::time::Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
