//! The console past one process, under load, with real uploaders: two console processes
//! (`e2e-rearview-console serve`, replicas) on one PostgreSQL database of the test kit's
//! cluster and one blob directory, behind a round-robin TCP balancer (as an operator's reverse
//! proxy), and [`DEVICES`] real uploaders, each with its own SQLite spool, streaming through it
//! while triggers are issued on both replicas. Each device stands in for its agent: for every
//! trigger the uploader hands it, it records a clip of two segments and says so.
//!
//! What must hold, when a replica is SIGKILLed mid-flow, when PostgreSQL restarts under load,
//! and when the bucket (a moto_server, in the third test) goes away while devices upload:
//! every trigger the database holds (whether or not its POST was answered) reaches its device
//! exactly once (by id) and is acknowledged; every segment is stored once, as one blob; every
//! trigger has exactly one clip, complete; every spool drains. While the database
//! or the bucket is down the replicas say so on `/healthz` and answer 503, and devices keep
//! their clips.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_testkit::console::{self as launcher, InitTokens, ServedConsole};
use rearview_testkit::postgres::Postgres;
use rearview_testkit::s3::S3Server;
use rearview_uploader::{Command, NewClip, TriggerDelivery, Uploader};
use serde_json::{json, Value};

use crate::console_support::backend::TestDb;
use crate::console_support::device_trust::sha;
use crate::support::*;

const DEVICES: usize = 200;
const EXE: &str = env!("CARGO_BIN_EXE_e2e-rearview-console");
/// Generous bounds for a loaded 2-core machine (not timing claims).
const SETTLE: Duration = Duration::from_secs(120);

/// The tenant served by two console processes on one database and one blob store (a
/// directory, or a bucket of a moto_server).
struct Replicas {
    dir: tempfile::TempDir,
    consoles: Vec<Option<ServedConsole>>,
    addrs: Vec<SocketAddr>,
    tokens: InitTokens,
    /// The bucket's listing URL when the blobs are in one.
    bucket: Option<String>,
}

impl Replicas {
    /// On `database` and a blob directory in the tenant's temp dir.
    fn start(database: &str) -> Replicas {
        Replicas::start_on(database, None)
    }

    /// On `database`, and `bucket` of `s3` when given.
    fn start_on(database: &str, s3: Option<(&S3Server, &str)>) -> Replicas {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (blobs, env, bucket) = match s3 {
            None => (format!("file://{}", dir.path().join("blobs").display()), Vec::new(), None),
            Some((server, bucket)) => (
                format!("s3://{bucket}/tenant-a?endpoint={}&region=us-east-1", server.endpoint()),
                server.env(),
                Some(format!("{}/{bucket}?list-type=2&prefix=tenant-a/", server.endpoint())),
            ),
        };
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let tokens = launcher::init_with(
            Path::new(EXE),
            &data,
            &["--database", database, "--blobs", &blobs],
            &env,
        )
        .unwrap();
        let second = launcher::replica_data_dir(&data, 1).unwrap();
        env.push(("RUST_LOG", "warn"));
        let mut consoles = Vec::new();
        let mut addrs = Vec::new();
        for d in [data, second] {
            let c = ServedConsole::start(Path::new(EXE), &d, &env).unwrap();
            addrs.push(c.url.trim_start_matches("http://").parse().unwrap());
            consoles.push(Some(c));
        }
        Replicas { dir, consoles, addrs, tokens, bucket }
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}", self.addrs[i])
    }

    fn admin(&self, i: usize) -> AdminClient {
        AdminClient::new(&self.url(i), &self.tokens.admin_token, None).unwrap()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn db(&self) -> TestDb {
        TestDb::of(&self.data())
    }

    /// The published blobs under the shared blob directory (DIR/<device>/<aa>/<sha256>), each
    /// checked to hold the bytes its name is the hash of: nothing partial is ever visible. The
    /// uploads in flight (`DIR/.incoming/*.part`) are not blobs; a replica killed mid-upload
    /// leaves its part file there.
    async fn blobs(&self) -> usize {
        match &self.bucket {
            Some(list) => {
                // moto answers a plain GET (no signature); up to 1000 keys, more than any test
                // here stores.
                let xml = reqwest::get(list).await.unwrap().text().await.unwrap();
                assert!(!xml.contains("<IsTruncated>true"), "{xml}");
                xml.matches("<Key>").count()
            }
            None => self.blob_files(),
        }
    }

    fn blob_files(&self) -> usize {
        fn walk(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name() != ".incoming")
                    .map(|e| {
                        let path = e.path();
                        if path.is_dir() {
                            return walk(&path);
                        }
                        let hash = sha(&std::fs::read(&path).unwrap());
                        assert_eq!(
                            e.file_name().to_string_lossy(),
                            hash,
                            "{path:?} is not its hash"
                        );
                        1
                    })
                    .sum()
            })
        }
        walk(&self.dir.path().join("blobs"))
    }
}

/// What the devices were handed: trigger id → (device index, how many times).
#[derive(Default)]
struct Handed {
    triggers: Mutex<HashMap<String, (usize, usize)>>,
    /// While set, devices hold the triggers they are handed and record their clips only when
    /// it is cleared (so clips can be made to upload while the database is down).
    hold: AtomicBool,
}

/// A device: its uploader (running: stream and send loops) and the agent stand-in that records
/// a clip for every trigger it is handed.
struct Device {
    _dir: tempfile::TempDir,
    uploader: Arc<Uploader>,
    id: String,
    _running: rearview_uploader::Running,
    agent: tokio::task::JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.agent.abort();
    }
}

/// Records the clip the agent would cut for `delivery`: the trigger's window, two segments
/// recorded just before the event; then tells the uploader it is recorded.
fn record(uploader: &Uploader, delivery: &TriggerDelivery) {
    let t = delivery.trigger().payload();
    let event = (t.event_at.unix_timestamp_nanos() / 1_000_000) as i64;
    let id = t.id.as_str().to_owned();
    let segs = segments(2, 4096, event - 2_000);
    let clip = NewClip {
        start_ms: event - 20_000,
        end_ms: event + 10_000,
        ..new_clip(&format!("clip-{id}"), Some(id.clone()), 2)
    };
    uploader.enqueue_chained(clip, segs.into_iter().map(|(s, _)| s).collect()).unwrap();
    delivery.recorded();
}

async fn start_device(k: usize, server: &str, token: &str, handed: Arc<Handed>) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let uploader = Uploader::open(uploader_config(server, dir.path())).unwrap();
    let id = uploader.enroll(token, &format!("host-{k}")).await.unwrap().device_id.clone();
    let mut commands = uploader.subscribe();
    let running = uploader.start().unwrap();
    let up = uploader.clone();
    let agent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(100), commands.recv()).await;
            if let Ok(Some(Command::Trigger(d))) = next {
                let id = d.trigger().payload().id.as_str().to_owned();
                handed.triggers.lock().unwrap().entry(id).or_insert((k, 0)).1 += 1;
                held.push(d);
            } else if let Ok(None) = next {
                return;
            }
            if !handed.hold.load(Ordering::SeqCst) {
                for d in held.drain(..) {
                    record(&up, &d);
                }
            }
        }
    });
    Device { _dir: dir, uploader, id, _running: running, agent }
}

/// Capture on, alice approved (specific activities), and `n` devices enrolled and streaming
/// through `balancer`, each holding the policy that names alice.
async fn fleet(r: &Replicas, balancer: &Balancer, handed: &Arc<Handed>, n: usize) -> Vec<Device> {
    let admin = r.admin(0);
    let approver = AdminClient::new(&r.url(1), &r.tokens.approver_token, None).unwrap();
    let _: Value =
        admin.put("/api/v1/policy/settings", &json!({"capture": {"enabled": true}})).await.unwrap();
    crate::console_support::approve(&admin, &approver, USER, "specific-activities").await;
    let server = balancer.url();
    let mut devices = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let tokens: Vec<String> = futures_util::future::join_all(chunk.iter().map(|_| async {
            let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
            t["token"].as_str().unwrap().to_owned()
        }))
        .await;
        let started = futures_util::future::join_all(
            chunk.iter().zip(&tokens).map(|(k, t)| start_device(*k, &server, t, handed.clone())),
        )
        .await;
        devices.extend(started);
    }
    let ups: Vec<Arc<Uploader>> = devices.iter().map(|d| d.uploader.clone()).collect();
    eventually("every device holds the policy naming alice", SETTLE, || {
        ups.iter().all(|u| u.policy().is_some_and(|p| !p.payload().users.is_empty()))
    })
    .await;
    devices
}

/// Issues one trigger for alice on device `device` through `admin` (one replica's): its id, or
/// why not.
async fn issue(admin: &AdminClient, device: &str) -> Result<String, String> {
    let t: Value = admin
        .post(
            "/api/v1/triggers",
            &json!({"user": USER, "event_time": rearview_uploader::now_ms(), "before": 20,
                    "after": 10, "reason": "usb copy", "device": device}),
        )
        .await
        .map_err(|e| e.to_string())?;
    t["trigger_ids"][0].as_str().map(str::to_owned).ok_or_else(|| format!("no trigger id: {t}"))
}

/// Issues one trigger per device, alternating replicas among those `alive` says are up, 8 at
/// a time; a POST that fails (its replica died under it) is issued again on the other. Every
/// id a replica answered.
async fn issue_round(r: &Replicas, devices: &[Device], alive: &[bool]) -> Vec<String> {
    let admins: Vec<AdminClient> = (0..r.addrs.len()).map(|i| r.admin(i)).collect();
    let mut answered = Vec::new();
    for chunk in devices.iter().enumerate().collect::<Vec<_>>().chunks(8) {
        let ids = futures_util::future::join_all(chunk.iter().map(|(k, d)| {
            let admins = &admins;
            async move {
                let mut last = String::new();
                for attempt in 0..20 {
                    let i = (k + attempt) % admins.len();
                    if !alive[i] {
                        continue;
                    }
                    match issue(&admins[i], &d.id).await {
                        Ok(id) => return id,
                        Err(e) => last = e,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("no replica issued a trigger for {}: {last}", d.id)
            }
        }))
        .await;
        answered.extend(ids);
    }
    answered
}

/// Everything settles and nothing is lost or repeated (see the module docs). `answered` are
/// the ids replicas answered (every one must be in the database).
async fn settled_exactly_once(
    r: &Replicas,
    devices: &[Device],
    handed: &Handed,
    answered: &[String],
) {
    let db = r.db();
    let triggers = db.texts("SELECT id FROM triggers ORDER BY id");
    let issued: HashSet<&String> = triggers.iter().collect();
    for id in answered {
        assert!(issued.contains(id), "trigger {id} was answered but is not in the database");
    }
    let ups: Vec<Arc<Uploader>> = devices.iter().map(|d| d.uploader.clone()).collect();
    let want = triggers.len();
    let state = || {
        let pending: u64 =
            ups.iter().map(|u| u.status().map_or(1, |s| s.spool.pending_clips)).sum();
        (
            handed.triggers.lock().unwrap().len(),
            pending,
            db.int("SELECT COUNT(*) FROM clips WHERE complete_ms IS NOT NULL"),
            db.int("SELECT COUNT(*) FROM triggers WHERE acked_ms IS NULL"),
        )
    };
    let end = tokio::time::Instant::now() + SETTLE;
    loop {
        let now = state();
        if now == (want, 0, want as i64, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "not settled within {SETTLE:?}: (handed, pending clips, complete clips, unacked) = \
             {now:?}, want ({want}, 0, {want}, 0)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let handed = handed.triggers.lock().unwrap().clone();
    let owner: HashMap<String, String> = db
        .texts("SELECT id || ' ' || device_id FROM triggers")
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    for id in &triggers {
        let (k, times) =
            handed.get(id).unwrap_or_else(|| panic!("trigger {id} never reached a device"));
        assert_eq!(*times, 1, "trigger {id} was handed to its device {times} times");
        assert_eq!(owner[id], devices[*k].id, "trigger {id} reached another device");
    }
    assert_eq!(handed.len(), triggers.len(), "a device was handed a trigger the database lacks");
    // One clip per trigger, complete; each segment stored once, as one blob.
    assert_eq!(db.int("SELECT COUNT(*) FROM clips"), want as i64, "a clip twice or lost");
    assert_eq!(
        db.int("SELECT COUNT(DISTINCT trigger_id) FROM clips WHERE complete_ms IS NOT NULL"),
        want as i64
    );
    let segments = db.int("SELECT COUNT(*) FROM segments");
    assert_eq!(segments, 2 * want as i64, "segments lost or stored twice");
    assert_eq!(db.int("SELECT COUNT(DISTINCT sha256) FROM segments"), segments);
    assert_eq!(r.blobs().await, segments as usize, "blobs and segment rows differ");
    for u in &ups {
        let s = u.status().unwrap().spool;
        assert_eq!((s.lost_clips, s.lost_segments, s.spooled_bytes), (0, 0, 0), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_200_devices_stream_loses_and_repeats_nothing() {
    let database = Postgres::shared().create_database();
    let mut r = Replicas::start(&database);
    let balancer = Balancer::start(r.addrs.clone()).await;
    let handed = Arc::new(Handed::default());
    let devices = fleet(&r, &balancer, &handed, DEVICES).await;
    // Half the streams are on each replica (the balancer alternates).
    let mut answered = issue_round(&r, &devices, &[true, true]).await;

    // Kill replica 0 while a second round is being issued on both and clips are uploading.
    let mut victim = r.consoles[0].take().unwrap();
    let kill = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SIGKILL, as a machine that dies: no shutdown, connections cut mid-request.
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
    };
    let (second, ()) = tokio::join!(issue_round(&r, &devices, &[true, true]), kill);
    answered.extend(second);
    // A third round after: replica 1 alone, the devices of replica 0 reconnected through the
    // balancer.
    answered.extend(issue_round(&r, &devices, &[false, true]).await);
    settled_exactly_once(&r, &devices, &handed, &answered).await;
}

/// Clips waiting in the devices' spools.
fn pending(devices: &[Device]) -> u64 {
    devices.iter().map(|d| d.uploader.status().unwrap().spool.pending_clips).sum()
}

/// What the outage tests share before the outage: `n` devices through a balancer, a first round
/// of triggers settled (every clip sent), and a second round handed to the devices and held
/// (their clips not recorded yet). The devices, what they were handed, the ids answered.
async fn a_round_held(
    r: &Replicas,
    balancer: &Balancer,
    n: usize,
) -> (Vec<Device>, Arc<Handed>, Vec<String>) {
    let handed = Arc::new(Handed::default());
    let devices = fleet(r, balancer, &handed, n).await;
    let mut answered = issue_round(r, &devices, &[true, true]).await;
    eventually("the first round's clips sent", SETTLE, || {
        handed.triggers.lock().unwrap().len() >= answered.len() && pending(&devices) == 0
    })
    .await;
    handed.hold.store(true, Ordering::SeqCst);
    answered.extend(issue_round(r, &devices, &[true, true]).await);
    eventually("the second round handed out", SETTLE, || {
        handed.triggers.lock().unwrap().len() >= answered.len()
    })
    .await;
    (devices, handed, answered)
}

/// With something gone (`missing` names it on `/healthz`): both replicas unhealthy; the held
/// clips are recorded and the devices try to send them; every one stays in its spool.
async fn unhealthy_and_kept(r: &Replicas, devices: &[Device], handed: &Handed, missing: &str) {
    for i in 0..2 {
        let h = reqwest::get(format!("{}/healthz", r.url(i))).await.unwrap();
        assert_eq!(h.status(), 503);
        assert!(h.text().await.unwrap().contains(missing));
    }
    handed.hold.store(false, Ordering::SeqCst);
    let n = devices.len() as u64;
    eventually("the held clips in the spools", SETTLE, || pending(devices) == n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pending(devices), n, "a clip left a spool ({missing})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_while_200_devices_stream_and_upload_loses_nothing() {
    let pg = Postgres::start().unwrap();
    let r = Replicas::start(&pg.create_database());
    let balancer = Balancer::start(r.addrs.clone()).await;
    let (devices, handed, mut answered) = a_round_held(&r, &balancer, DEVICES).await;

    pg.stop();
    let refused = issue(&r.admin(1), &devices[0].id).await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("503")), "{refused:?}");
    unhealthy_and_kept(&r, &devices, &handed, "database unreachable").await;

    pg.restart();
    for i in 0..2 {
        let url = format!("{}/healthz", r.url(i));
        let mut ok = false;
        for _ in 0..300 {
            if reqwest::get(&url).await.is_ok_and(|h| h.status() == 200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "replica {i} did not become healthy again");
    }
    answered.extend(issue_round(&r, &devices, &[true, true]).await);
    settled_exactly_once(&r, &devices, &handed, &answered).await;
}

/// The blob store goes away (the bucket's server stopped) while 50 devices hold clips to send:
/// both replicas say `bucket unreachable`, segment uploads answer 503, and every device keeps
/// its clip in its spool; once the bucket is back the spools drain, and nothing is lost or
/// stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_unreachable_while_devices_upload_keeps_their_clips_until_it_is_back() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("rv-replicas");
    let r = Replicas::start_on(&Postgres::shared().create_database(), Some((&s3, "rv-replicas")));
    let balancer = Balancer::start(r.addrs.clone()).await;
    let (devices, handed, answered) = a_round_held(&r, &balancer, 50).await;

    s3.pause();
    unhealthy_and_kept(&r, &devices, &handed, "bucket unreachable").await;

    s3.resume();
    settled_exactly_once(&r, &devices, &handed, &answered).await;
}
