//! What the console must not take on a device's word (review findings 6, 7, 9 and 12): clip
//! manifests checked against approvals and triggers, indicator floods, segment bodies streamed
//! and capped, lists in pages, triggers devices would refuse, and log lines forged through
//! names a device sends.
//!
//! Devices are enrolled with raw HTTP (a key pair made here), so manifests and uploads can be
//! forged the way a hostile device would; uploads that must stay open mid-body are written on a
//! raw TCP socket.

use std::io::{BufRead, Read};
use std::sync::Arc;
use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::{IngestLimits, Server, ServerConfig, ServerHandle};
use rearview_uploader::{now_ms, NewClip, NewSegment, SegmentBytes, Uploader, UploaderConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

/// A console in a temp directory with its first admin (ivan) and an approver (rita).
struct Console {
    dir: tempfile::TempDir,
    server: ServerHandle,
    url: String,
    admin: AdminClient,
    admin_token: String,
    approver: AdminClient,
    http: reqwest::Client,
}

/// An enrolled device: its token and id.
struct Device {
    token: String,
    id: String,
}

impl Console {
    async fn start() -> Console {
        Console::start_with(IngestLimits::default()).await
    }

    async fn start_with(ingest: IngestLimits) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let out =
            rearview_console::init_with_approver(dir.path(), "tenant-a", "ivan", "rita").unwrap();
        let server = Server::start(ServerConfig {
            ingest,
            ..ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap())
        })
        .await
        .unwrap();
        let url = server.url();
        let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
        let approver = AdminClient::new(&url, &out.approver_token, None).unwrap();
        Console {
            dir,
            server,
            url,
            admin,
            admin_token: out.admin_token,
            approver,
            http: reqwest::Client::new(),
        }
    }

    /// A user's approval in force (see [`support::approve`]); its id.
    async fn approve(&self, user: &str, mode: &str) -> i64 {
        support::approve(&self.admin, &self.approver, user, mode).await
    }

    async fn settings(&self, settings: Value) {
        let _: Value = self.admin.put("/api/v1/policy/settings", &settings).await.unwrap();
    }

    async fn enroll(&self) -> Device {
        enroll_at(&self.url, &self.admin).await
    }

    /// `PUT /api/v1/device/clips/{id}`: the status and the JSON answer.
    async fn put_manifest(&self, dev: &Device, manifest: &Value) -> (u16, Value) {
        let id = manifest["clip_id"].as_str().unwrap();
        let r = self
            .http
            .put(format!("{}/api/v1/device/clips/{id}", self.url))
            .bearer_auth(&dev.token)
            .json(manifest)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends `manifest` as `dev`, asserts the answer's status is `want`; the answer.
    async fn expect(&self, dev: &Device, manifest: &Value, want: u16) -> Value {
        let (status, body) = self.put_manifest(dev, manifest).await;
        assert_eq!(status, want, "{}: {body}", manifest["clip_id"]);
        body
    }

    async fn put_segment(&self, dev: &Device, bytes: &[u8]) -> reqwest::Response {
        self.http
            .put(format!("{}/api/v1/device/segments/{}", self.url, sha(bytes)))
            .bearer_auth(&dev.token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn activity(&self, dev: &Device, events: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/device/activity", self.url))
            .bearer_auth(&dev.token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/v1/triggers` as the admin: the status and the answer (or the refusal).
    async fn trigger(&self, body: Value) -> (u16, String, Value) {
        match self.admin.post::<_, Value>("/api/v1/triggers", &body).await {
            Ok(v) => (200, String::new(), v),
            Err(e) => (e.status, e.message, Value::Null),
        }
    }

    async fn audit_actions(&self, target: &str) -> Vec<(String, Value)> {
        let audit: Vec<Value> = self.admin.get("/api/v1/audit?limit=1000").await.unwrap();
        audit
            .into_iter()
            .filter(|a| a["target"] == json!(target))
            .map(|a| (a["action"].as_str().unwrap().to_owned(), a["details"].clone()))
            .collect()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("console.db")).unwrap()
    }
}

/// Enrolls a device by hand (see [`support::enroll`]).
async fn enroll_at(url: &str, admin: &AdminClient) -> Device {
    let (token, id) = support::enroll(url, admin).await;
    Device { token, id }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// A segment entry of a manifest for `bytes` recorded over `[start, end)`.
fn seg(bytes: &[u8], start: i64, end: i64) -> Value {
    json!({"sha256": sha(bytes), "size": bytes.len(), "start_ms": start, "end_ms": end})
}

/// A closed manifest of `dev`.
fn manifest(
    clip_id: &str,
    dev: &Device,
    user: &str,
    mode: &str,
    trigger: Option<&str>,
    window: (i64, i64),
    segments: Vec<Value>,
) -> Value {
    json!({
        "clip_id": clip_id, "trigger_id": trigger, "mode": mode, "user": user,
        "device_id": dev.id, "start_ms": window.0, "end_ms": window.1,
        "segments": segments, "missing": [],
    })
}

/// An untriggered clip of `dev` whose one segment, `bytes`, was recorded over its whole window.
fn one_segment(
    clip_id: &str,
    dev: &Device,
    user: &str,
    mode: &str,
    window: (i64, i64),
    bytes: &[u8],
) -> Value {
    manifest(clip_id, dev, user, mode, None, window, vec![seg(bytes, window.0, window.1)])
}

/// Distinct bytes standing in for a sealed segment (the console never opens one).
fn bytes(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add((i % 251) as u8)).collect()
}

// ---- finding 6: device-supplied clip fields ----------------------------------------------

#[tokio::test]
async fn clip_of_a_user_without_approval_is_refused_audited_and_stores_nothing() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    let now = now_ms();
    let b = bytes(1, 1000);
    let m = one_segment("c-none", &dev, "mallory", "all-activities", (now - 2000, now), &b);
    let body = c.expect(&dev, &m, 409).await;
    assert!(body["error"].as_str().unwrap().contains("approval"), "{body}");
    let audit = c.audit_actions("clip:c-none").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, "clip.refused");
    assert!(audit[0].1["reason"].as_str().unwrap().contains("approval"), "{audit:?}");
    assert_eq!(c.admin.get::<Value>("/api/v1/clips/c-none").await.unwrap_err().status, 404);
    // Nothing names the segment, so its bytes are refused too.
    assert_eq!(c.put_segment(&dev, &b).await.status(), 409);
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn clip_windows_and_segments_outside_the_approval_are_refused() {
    let c = Console::start().await;
    c.settings(json!({"capture": {"enabled": true, "segment_secs": 2}})).await;
    let dev = c.enroll().await;
    c.approve("alice", "all-activities").await;
    let now = now_ms();
    let b = bytes(2, 1000);
    // 1970 to 9999.
    let forged = [
        ("c-epoch", (0, 253_402_300_799_000), vec![seg(&b, now, now + 1000)]),
        // A sane window naming a segment from 1970.
        ("c-old-seg", (now, now + 2000), vec![seg(&b, 0, 1000)]),
        // Recorded long before anybody approved it.
        (
            "c-before",
            (now - 86_400_000, now - 86_398_000),
            vec![seg(&b, now - 86_400_000, now - 86_398_000)],
        ),
        // Recorded in the future.
        (
            "c-future",
            (now + 86_400_000, now + 86_402_000),
            vec![seg(&b, now + 86_400_000, now + 86_402_000)],
        ),
    ];
    for (id, window, segs) in forged {
        c.expect(&dev, &manifest(id, &dev, "alice", "all-activities", None, window, segs), 409)
            .await;
        assert_eq!(c.audit_actions(&format!("clip:{id}")).await[0].0, "clip.refused", "{id}");
    }
    // The same segment, recorded now, in a window around it: accepted (case-insensitively
    // the approved user).
    let m = one_segment("c-ok", &dev, "Alice", "all-activities", (now, now + 2000), &b);
    c.expect(&dev, &m, 200).await;
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_mode_needs_an_approval_of_that_mode_and_specific_clips_need_a_trigger() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "specific-activities").await;
    c.approve("bob", "all-activities").await;
    let now = now_ms();
    let b = bytes(3, 1000);
    let window = (now, now + 1000);
    // Specific-activities does not cover continuous upload.
    let body = c
        .expect(&dev, &one_segment("c-all", &dev, "alice", "all-activities", window, &b), 409)
        .await;
    assert!(body["error"].as_str().unwrap().contains("all-activities"), "{body}");
    // A specific-activities clip without a trigger, and no local rule in the policy.
    let body = c
        .expect(&dev, &one_segment("c-spec", &dev, "alice", "specific-activities", window, &b), 409)
        .await;
    assert!(body["error"].as_str().unwrap().contains("trigger"), "{body}");
    // All-activities covers both.
    for (id, mode) in [("b-all", "all-activities"), ("b-spec-untriggered", "specific-activities")] {
        let want = if mode == "all-activities" { 200 } else { 409 };
        c.expect(&dev, &one_segment(id, &dev, "bob", mode, window, &b), want).await;
    }
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_triggered_clip_names_a_trigger_of_its_device_and_user_and_stays_in_its_window() {
    let c = Console::start().await;
    c.settings(json!({"capture": {"enabled": true, "segment_secs": 2}})).await;
    let a = c.enroll().await;
    let b_dev = c.enroll().await;
    c.approve("alice", "specific-activities").await;
    c.approve("bob", "specific-activities").await;
    // Late enough that the whole window falls after the approval (the ring holds nothing
    // recorded before it), early enough to be no event in the future.
    let event = now_ms() + 30_000;
    let (status, message, issued) = c
        .trigger(json!({"user": "alice", "event_time": event, "before": 20, "after": 10,
                        "reason": "roadmap.docx", "device": a.id}))
        .await;
    assert_eq!(status, 200, "{message}");
    let trigger = issued["trigger_ids"][0].as_str().unwrap().to_owned();
    let (from, to) = (event - 20_000, event + 10_000);
    let b = bytes(4, 1000);
    let inside = || vec![seg(&b, from - 1500, from + 500), seg(&b, to - 500, to + 1500)];
    let triggered = |id: &str, dev: &Device, user: &str, window: (i64, i64), segs: Vec<Value>| {
        manifest(id, dev, user, "specific-activities", Some(&trigger), window, segs)
    };
    // Another device naming a's trigger.
    c.expect(&b_dev, &triggered("t-other-dev", &b_dev, "alice", (from, to), inside()), 409).await;
    // The trigger's device, another user (approved, but not whom the trigger names).
    let m = triggered("t-other-user", &a, "bob", (from, to), inside());
    let body = c.expect(&a, &m, 409).await;
    assert!(body["error"].as_str().unwrap().contains("alice"), "{body}");
    // A window an hour later than the trigger's.
    let hour = 3_600_000;
    let late = vec![seg(&b, from + hour, from + hour + 1000)];
    c.expect(&a, &triggered("t-shifted", &a, "alice", (from + hour, to + hour), late), 409).await;
    // The trigger's window, with a segment reaching more than a segment beyond it.
    let long = vec![seg(&b, to, to + 60_000)];
    c.expect(&a, &triggered("t-overlong", &a, "alice", (from, to), long), 409).await;
    // The trigger's window, segments overlapping its ends by less than a segment (as the ring
    // cuts them), the user spelled differently: accepted and attached to the alert.
    c.expect(&a, &triggered("t-ok", &a, "ALICE", (from, to), inside()), 200).await;
    let clip: Value = c.admin.get("/api/v1/clips/t-ok").await.unwrap();
    assert_eq!(clip["alert_id"], issued["alert_id"]);
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn clips_recorded_before_a_revocation_stay_valid_and_later_ones_are_refused() {
    let c = Console::start().await;
    c.settings(json!({"capture": {"enabled": true, "segment_secs": 2}})).await;
    let dev = c.enroll().await;
    let approval = c.approve("alice", "all-activities").await;
    let recorded = now_ms();
    let _: Value =
        c.admin.post(&format!("/api/v1/approvals/{approval}/revoke"), &json!({})).await.unwrap();
    let revoked = now_ms();
    let b = bytes(5, 1000);
    // Recorded while approved, uploaded after the revocation (the device was offline).
    let m =
        one_segment("r-before", &dev, "alice", "all-activities", (recorded, recorded + 1000), &b);
    c.expect(&dev, &m, 200).await;
    // Recorded after the revocation, more than a segment (2 s) of clock slack later.
    let later = revoked + 10_000;
    let m = one_segment("r-after", &dev, "alice", "all-activities", (later, later + 1000), &b);
    c.expect(&dev, &m, 409).await;
    c.server.shutdown().await.unwrap();
}

/// Offline, the agent opens clips itself from the signed policy's local rules (no trigger):
/// those are accepted within the longest rule's window, nothing longer.
#[tokio::test]
async fn untriggered_clips_of_the_policys_local_rules_are_accepted_within_the_rule() {
    let c = Console::start().await;
    c.settings(json!({
        "capture": {"enabled": true, "segment_secs": 2},
        "indicators": [{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10}],
    }))
    .await;
    let dev = c.enroll().await;
    c.approve("alice", "specific-activities").await;
    let at = now_ms() + 1000;
    let b = bytes(6, 1000);
    let local = |id: &str, end: i64| {
        let segs = vec![seg(&b, at, at + 1000)];
        manifest(id, &dev, "alice", "specific-activities", None, (at - 20_000, end), segs)
    };
    c.expect(&dev, &local("l-ok", at + 10_000), 200).await;
    c.expect(&dev, &local("l-long", at + 3_600_000), 409).await;
    c.server.shutdown().await.unwrap();
}

/// A real uploader enrolled with `c`, in its own state directory (keep it alive), and the same
/// device as raw HTTP sees it (its id, and its token from the uploader's identity file).
async fn uploader_device(c: &Console) -> (tempfile::TempDir, Arc<Uploader>, Device) {
    let t: Value = c.admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let up = Uploader::open(UploaderConfig::new(c.url.clone(), state.path())).unwrap();
    let identity = up.enroll(t["token"].as_str().unwrap(), "host").await.unwrap();
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("identity.json")).unwrap())
            .unwrap();
    let token = file["device_token"].as_str().unwrap().to_owned();
    (state, up, Device { token, id: identity.device_id.clone() })
}

/// An all-activities clip of `user` for the spool: one segment, `bytes`, over `[at, at + 1 s)`.
fn spooled_clip(id: &str, user: &str, at: i64, bytes: Vec<u8>) -> (NewClip, Vec<NewSegment>) {
    let clip = NewClip {
        clip_id: id.into(),
        trigger_id: None,
        mode: "all-activities".into(),
        user: user.into(),
        start_ms: at,
        end_ms: at + 1000,
        missing: vec![],
        open: false,
    };
    (clip, vec![NewSegment { start_ms: at, end_ms: at + 1000, bytes: SegmentBytes::Bytes(bytes) }])
}

/// A clip the console refuses is set aside by the real uploader, and the clip after it is
/// still sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_sets_a_refused_clip_aside_and_sends_the_next() {
    let c = Console::start().await;
    c.approve("alice", "all-activities").await;
    let (_state, up, _) = uploader_device(&c).await;
    let now = now_ms();
    let (m1, s1) = spooled_clip("u-mallory", "mallory", now, bytes(7, 500));
    let (m2, s2) = spooled_clip("u-alice", "alice", now, bytes(8, 500));
    up.enqueue_clip(m1, s1).unwrap();
    up.enqueue_clip(m2, s2).unwrap();
    up.send_pending().await.unwrap();
    assert_eq!(up.clip_state("u-mallory").unwrap().as_deref(), Some("refused"));
    assert_eq!(up.clip_state("u-alice").unwrap().as_deref(), Some("sent"));
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_indicator_flood_is_rate_limited_counted_and_reported() {
    let limit = 3u32;
    let c = Console::start_with(IngestLimits {
        indicator_triggers_per_minute: limit,
        ..IngestLimits::default()
    })
    .await;
    let dev = c.enroll().await;
    c.approve("alice", "specific-activities").await;
    let n = 10usize;
    let now = now_ms();
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"user": "alice", "kind": "removable_media_copy", "time_ms": now,
                   "details": {"file": format!("f{i}.docx")}})
        })
        .collect();
    let (status, ack) = c.activity(&dev, json!(events)).await;
    assert_eq!(status, 200, "{ack}");
    let over = n - limit as usize;
    assert_eq!(ack["accepted"], json!(n), "every event is kept as activity: {ack}");
    assert_eq!(ack["triggers_issued"].as_array().unwrap().len(), limit as usize, "{ack}");
    let outcomes: Vec<&str> =
        ack["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "triggered").count(), limit as usize, "{ack}");
    assert_eq!(outcomes.iter().filter(|o| **o == "rate_limited").count(), over, "{ack}");
    assert_eq!(ack["rate_limited"], json!(over));
    // The next batch within the minute issues nothing more.
    let (_, again) = c.activity(&dev, json!([events[0]])).await;
    assert_eq!(again["results"][0]["outcome"], json!("rate_limited"), "{again}");
    let alerts: Vec<Value> = c.admin.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts.len(), limit as usize);
    let devices: Vec<Value> = c.admin.get("/api/v1/devices").await.unwrap();
    assert_eq!(devices[0]["indicators_over_limit"], json!(over + 1), "{devices:?}");
    let audit = c.audit_actions(&format!("device:{}", dev.id)).await;
    let counted: u64 = audit
        .iter()
        .filter(|(a, _)| a == "indicator.rate_limited")
        .map(|(_, d)| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, over as u64 + 1, "{audit:?}");
    c.server.shutdown().await.unwrap();
}

// ---- finding 7: memory ------------------------------------------------------------------

/// Writes a segment upload's request head announcing `total` body bytes, and `first` of them.
async fn start_upload(url: &str, dev: &Device, sha: &str, total: usize, first: &[u8]) -> TcpStream {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/device/segments/{sha} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {total}\r\n\r\n",
        dev.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// Reads one HTTP answer (head and a content-length body), waiting up to 10 s: a generous
/// bound for "the console answers without the rest of the body", not a timing claim.
async fn read_answer(s: &mut TcpStream) -> Option<(u16, String, String)> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return Some((status, head, body));
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
}

#[tokio::test]
async fn unreferenced_or_stored_segments_are_answered_before_their_body_is_read() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "all-activities").await;
    let big = 32 * 1024 * 1024;
    // Named by no manifest: refused on the head alone.
    let mut s = start_upload(&c.url, &dev, &sha(b"never named"), big, &[0u8; 1024]).await;
    let (status, _, body) = read_answer(&mut s).await.expect("an answer before the body ends");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("manifest"), "{body}");
    // Stored already: acknowledged on the head alone.
    let now = now_ms();
    let b = bytes(9, 2000);
    c.expect(
        &dev,
        &one_segment("s-1", &dev, "alice", "all-activities", (now, now + 1000), &b),
        200,
    )
    .await;
    assert_eq!(c.put_segment(&dev, &b).await.status(), 200);
    let mut s = start_upload(&c.url, &dev, &sha(&b), b.len(), &[]).await;
    let (status, _, body) = read_answer(&mut s).await.expect("an answer without the body");
    assert_eq!(status, 200, "{body}");
    let ack: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ack["newly_stored"], json!(false));
    c.server.shutdown().await.unwrap();
}

fn incoming_files(c: &Console) -> Vec<(std::path::PathBuf, u64)> {
    let dir = c.dir.path().join("blobs").join(".incoming");
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten().map(|e| (e.path(), e.metadata().unwrap().len())).collect()
}

#[tokio::test]
async fn segment_bodies_are_streamed_to_a_temp_file_while_hashed() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "all-activities").await;
    let now = now_ms();
    let b = bytes(10, 4 * 1024 * 1024);
    c.expect(
        &dev,
        &one_segment("st-1", &dev, "alice", "all-activities", (now, now + 1000), &b),
        200,
    )
    .await;
    let half = b.len() / 2;
    let mut s = start_upload(&c.url, &dev, &sha(&b), b.len(), &b[..half]).await;
    // Half the body is on the console's disk before the rest is sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !incoming_files(&c).iter().any(|(_, len)| *len > 0) {
        assert!(tokio::time::Instant::now() < deadline, "no temp file grows in blobs/.incoming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.write_all(&b[half..]).await.unwrap();
    let (status, _, body) = read_answer(&mut s).await.expect("an answer");
    assert_eq!(status, 200, "{body}");
    let blob = c.dir.path().join("blobs").join(&dev.id).join(&sha(&b)[..2]).join(sha(&b));
    assert_eq!(std::fs::read(blob).unwrap(), b);
    assert!(incoming_files(&c).is_empty(), "the temp file became the blob");
    // Damaged bytes: refused, the temp file removed.
    let b2 = bytes(11, 100_000);
    c.expect(
        &dev,
        &one_segment("st-2", &dev, "alice", "all-activities", (now, now + 1000), &b2),
        200,
    )
    .await;
    let mut damaged = b2.clone();
    damaged[7] ^= 1;
    let r = c
        .http
        .put(format!("{}/api/v1/device/segments/{}", c.url, sha(&b2)))
        .bearer_auth(&dev.token)
        .body(damaged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(incoming_files(&c).is_empty(), "{:?}", incoming_files(&c));
    // More bytes than the manifest says: refused.
    let r = c
        .http
        .put(format!("{}/api/v1/device/segments/{}", c.url, sha(&b2)))
        .bearer_auth(&dev.token)
        .body([b2.clone(), vec![0u8; 10]].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("manifest"));
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_device_are_capped_with_429() {
    let cap = 2usize;
    let c =
        Console::start_with(IngestLimits { uploads_per_device: cap, ..IngestLimits::default() })
            .await;
    let dev = c.enroll().await;
    let other = c.enroll().await;
    c.approve("alice", "all-activities").await;
    let now = now_ms();
    let segs: Vec<Vec<u8>> = (0..=cap as u8).map(|i| bytes(20 + i, 200_000)).collect();
    c.expect(
        &dev,
        &manifest(
            "cc-1",
            &dev,
            "alice",
            "all-activities",
            None,
            (now, now + 1000),
            segs.iter().map(|b| seg(b, now, now + 1000)).collect(),
        ),
        200,
    )
    .await;
    let o = bytes(40, 1000);
    c.expect(
        &other,
        &one_segment("cc-o", &other, "alice", "all-activities", (now, now + 1000), &o),
        200,
    )
    .await;
    // `cap` uploads in flight, their bodies half sent.
    let mut held = Vec::new();
    for b in &segs[..cap] {
        held.push(start_upload(&c.url, &dev, &sha(b), b.len(), &b[..1000]).await);
    }
    // Wait until the console holds them (their temp files exist).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while incoming_files(&c).len() < cap {
        assert!(tokio::time::Instant::now() < deadline, "uploads not in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.put_segment(&dev, &segs[cap]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some(), "{:?}", r.headers());
    // Another device is not held up.
    assert_eq!(c.put_segment(&other, &o).await.status(), 200);
    // Once they finish, the refused one goes through.
    for (s, b) in held.iter_mut().zip(&segs) {
        s.write_all(&b[1000..]).await.unwrap();
        assert_eq!(read_answer(s).await.unwrap().0, 200);
    }
    assert_eq!(c.put_segment(&dev, &segs[cap]).await.status(), 200);
    c.server.shutdown().await.unwrap();
}

/// The uploader keeps a clip answered 429 (tries again later), it does not set it aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_keeps_a_clip_answered_429() {
    let c = Console::start_with(IngestLimits { uploads_per_device: 1, ..IngestLimits::default() })
        .await;
    c.approve("alice", "all-activities").await;
    let (_state, up, dev) = uploader_device(&c).await;
    let now = now_ms();
    // The device's one upload allowed is held mid-body, on a connection of its own.
    let held = bytes(50, 100_000);
    let m = one_segment("k-held", &dev, "alice", "all-activities", (now, now + 1000), &held);
    c.expect(&dev, &m, 200).await;
    let mut s = start_upload(&c.url, &dev, &sha(&held), held.len(), &held[..10]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while incoming_files(&c).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "upload not in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (clip, segs) = spooled_clip("k-next", "alice", now, bytes(51, 1000));
    up.enqueue_clip(clip, segs).unwrap();
    let err = up.send_pending().await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(up.clip_state("k-next").unwrap().as_deref(), Some("pending"));
    s.write_all(&held[10..]).await.unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().0, 200);
    up.send_pending().await.unwrap();
    assert_eq!(up.clip_state("k-next").unwrap().as_deref(), Some("sent"));
    c.server.shutdown().await.unwrap();
}

/// Follows `X-Next-Cursor` from `path` (which has a `?`), `limit` a page: every page, in order.
async fn pages(c: &Console, path: &str, limit: usize) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}{path}&limit={limit}", c.url);
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let r = c.http.get(url).bearer_auth(&c.admin_token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let next = r.headers().get("x-next-cursor").map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = r.json().await.unwrap();
        assert!(page.len() <= limit, "{path}: {} items in a page of {limit}", page.len());
        out.push(page);
        match next {
            Some(n) => after = Some(n),
            None => return out,
        }
        assert!(out.len() < 1000, "{path}: the cursor never ends");
    }
}

/// Zero-segment all-activities clips `prefix-0..n` of alice on `dev` (complete at once).
async fn empty_clips(c: &Console, dev: &Device, prefix: &str, n: usize) -> Vec<String> {
    let now = now_ms();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let m = manifest(&id, dev, "alice", "all-activities", None, (now, now + 1000), vec![]);
        c.expect(dev, &m, 200).await;
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn every_list_comes_in_pages_with_a_next_cursor() {
    let c = Console::start().await;
    let a = c.enroll().await;
    let _b = c.enroll().await;
    c.approve("alice", "all-activities").await;
    c.approve("bob", "specific-activities").await;
    let clips = empty_clips(&c, &a, "p", 3).await;
    for _ in 0..3 {
        let (status, message, _) = c
            .trigger(json!({"user": "alice", "event_time": now_ms(), "before": 5, "after": 5,
                            "reason": "r", "device": a.id}))
            .await;
        assert_eq!(status, 200, "{message}");
    }
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"user": "alice", "kind": "seen", "time_ms": now_ms(), "details": {"n": i}}))
        .collect();
    assert_eq!(c.activity(&a, json!(events)).await.0, 200);

    for (path, key, want) in [
        ("/api/v1/clips?", "id", 3),
        ("/api/v1/alerts?", "id", 3),
        ("/api/v1/activity?", "id", 3),
        ("/api/v1/devices?", "id", 2),
        ("/api/v1/approvals?", "id", 2),
        ("/api/v1/audit?", "id", 0),
    ] {
        let paged: Vec<Vec<Value>> = pages(&c, path, 1).await;
        let ids: Vec<Value> = paged.iter().flatten().map(|v| v[key].clone()).collect();
        let whole: Vec<Value> = c.admin.get(path.trim_end_matches('?')).await.unwrap();
        let whole: Vec<Value> = whole.iter().map(|v| v[key].clone()).collect();
        assert_eq!(ids, whole, "{path}: the pages, in order, are the whole list");
        if want > 0 {
            assert_eq!(ids.len(), want, "{path}");
        }
        assert!(paged.len() >= ids.len(), "{path}: one item a page");
    }
    let listed: Vec<Value> = c.admin.get("/api/v1/clips").await.unwrap();
    assert_eq!(listed.iter().map(|v| v["id"].as_str().unwrap()).collect::<Vec<_>>(), clips);
    // A limit out of range, or a cursor that is not one, is refused with the reason.
    for q in ["limit=0", "limit=100000", "limit=ten", "after=x"] {
        let err = c.admin.get::<Value>(&format!("/api/v1/clips?{q}")).await.unwrap_err();
        assert_eq!(err.status, 400, "{q}: {}", err.message);
        assert!(err.message.contains(q.split('=').next().unwrap()), "{q}: {}", err.message);
    }
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_list_without_a_limit_answers_the_default_page() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "all-activities").await;
    let n = rearview_console::api::page::DEFAULT_LIMIT + 1;
    empty_clips(&c, &dev, "d", n).await;
    let r = c
        .http
        .get(format!("{}/api/v1/clips", c.url))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    let next = r.headers().get("x-next-cursor").map(|v| v.to_str().unwrap().to_owned());
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page.len(), rearview_console::api::page::DEFAULT_LIMIT);
    let rest: Vec<Value> =
        c.admin.get(&format!("/api/v1/clips?after={}", next.expect("a cursor"))).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["id"], json!(format!("d-{}", n - 1)));
    c.server.shutdown().await.unwrap();
}

/// Damages the stored manifest of `clip_id` (standing in for any clip the listing cannot read).
fn damage_clip(c: &Console, clip_id: &str) {
    let changed = c
        .db()
        .execute("UPDATE clips SET manifest_json = '{damaged' WHERE id = ?1", [clip_id])
        .unwrap();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn one_clip_is_read_without_reading_the_others() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "all-activities").await;
    empty_clips(&c, &dev, "o", 2).await;
    damage_clip(&c, "o-0");
    let clip: Value = c.admin.get("/api/v1/clips/o-1").await.unwrap();
    assert_eq!(clip["id"], json!("o-1"));
    assert_eq!(c.admin.get::<Value>("/api/v1/clips/o-9").await.unwrap_err().status, 404);
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_wait_asks_for_the_one_clip_it_waits_for() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "all-activities").await;
    empty_clips(&c, &dev, "w", 2).await;
    // A clip the list could not even read does not stop waiting for another.
    damage_clip(&c, "w-0");
    let (status, message, issued) = c
        .trigger(json!({"user": "alice", "event_time": now_ms(), "before": 5, "after": 5,
                        "reason": "r", "device": dev.id}))
        .await;
    assert_eq!(status, 200, "{message}");
    let trigger = issued["trigger_ids"][0].as_str().unwrap();
    let alert = issued["alert_id"].as_i64().unwrap();
    let now = now_ms();
    c.expect(
        &dev,
        &manifest(
            "w-t",
            &dev,
            "alice",
            "specific-activities",
            Some(trigger),
            (now - 5000, now + 5000),
            vec![],
        ),
        200,
    )
    .await;
    let exe = env!("CARGO_BIN_EXE_rearview-console");
    for filter in
        [vec!["--id", "w-1"], vec!["--alert", &alert.to_string()], vec!["--trigger", trigger]]
    {
        let url = c.url.clone();
        let token = c.admin_token.clone();
        let args: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(exe)
                .args(["clip", "wait", "--timeout", "20", "--server", &url, "--token", &token])
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{filter:?}: {}", String::from_utf8_lossy(&out.stderr));
        let clip: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(clip["complete"], json!(true), "{filter:?}");
        let want = if filter[0] == "--id" { "w-1" } else { "w-t" };
        assert_eq!(clip["id"], json!(want), "{filter:?}");
    }
    c.server.shutdown().await.unwrap();
}

// ---- finding 9: what the console signs ---------------------------------------------------

#[tokio::test]
async fn triggers_devices_would_refuse_are_refused_with_the_reason_and_leave_no_alert() {
    let c = Console::start().await;
    // Rules first: settings that would put the (default) rules over the bounds are refused.
    let rules = json!([{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10}]);
    let _: Value = c.admin.put("/api/v1/rules", &rules).await.unwrap();
    c.settings(json!({"capture": {"enabled": true}, "window": {"max_before_secs": 30, "max_after_secs": 20}}))
        .await;
    let dev = c.enroll().await;
    c.approve("alice", "specific-activities").await;
    let now = now_ms();
    let base = json!({"user": "alice", "event_time": now, "before": 30, "after": 20,
                      "reason": "roadmap.docx", "device": dev.id});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, says) in [
        (with("before", json!(31)), "max_before_secs"),
        (with("after", json!(21)), "max_after_secs"),
        (
            {
                let mut b = with("before", json!(0));
                b["after"] = json!(0);
                b
            },
            "empty",
        ),
        (with("event_time", json!(-1_000_000_000_000_000i64)), "event_time"),
        (with("event_time", json!(now + 3_600_000)), "event_time"),
        // Before the approval took effect: devices check the approval at the event time.
        (with("event_time", json!(now - 25_000)), "approval"),
        // Text a device would refuse in the trigger's object.
        (with("reason", json!("roadmap\u{7}.docx")), "reason"),
    ] {
        let (status, message, _) = c.trigger(body.clone()).await;
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let alerts: Vec<Value> = c.admin.get("/api/v1/alerts").await.unwrap();
    assert!(alerts.is_empty(), "refused triggers left alerts: {alerts:?}");
    let issued: i64 = c.db().query_row("SELECT COUNT(*) FROM triggers", [], |r| r.get(0)).unwrap();
    assert_eq!(issued, 0);
    // Within every bound it is issued.
    let (status, message, _) = c.trigger(base).await;
    assert_eq!(status, 200, "{message}");
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rules_over_the_policys_bounds_are_refused_naming_the_rule() {
    let c = Console::start().await;
    // The default rule (300 s before) is over these bounds, so it is replaced first.
    let err = c
        .admin
        .put::<_, Value>("/api/v1/policy/settings", &json!({"window": {"max_before_secs": 60}}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 400, "{}", err.message);
    assert!(err.message.contains("removable_media_copy"), "{}", err.message);
    let rules = json!([{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10}]);
    let _: Value = c.admin.put("/api/v1/rules", &rules).await.unwrap();
    c.settings(json!({"capture": {"enabled": true}, "window": {"max_before_secs": 60, "max_after_secs": 30}}))
        .await;
    let before: Value = c.admin.get("/api/v1/rules").await.unwrap();
    for (rules, names) in [
        (
            json!([{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10},
                   {"kind": "watched_folder_copy", "before_secs": 61, "after_secs": 10}]),
            "watched_folder_copy",
        ),
        (json!([{"kind": "print", "before_secs": 10, "after_secs": 31}]), "print"),
        (json!([{"kind": "print", "before_secs": 0, "after_secs": 0}]), "print"),
        (json!([{"kind": "no_such_kind", "before_secs": 10, "after_secs": 10}]), "no_such_kind"),
    ] {
        let err = c.admin.put::<_, Value>("/api/v1/rules", &rules).await.unwrap_err();
        assert_eq!(err.status, 400, "{rules}: {}", err.message);
        assert!(err.message.contains(names), "{rules}: {}", err.message);
    }
    let after: Value = c.admin.get("/api/v1/rules").await.unwrap();
    assert_eq!(after, before, "refused rules changed the rules");
    c.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_activity_batch_is_taken_event_by_event() {
    let c = Console::start().await;
    let dev = c.enroll().await;
    c.approve("alice", "specific-activities").await;
    let now = now_ms();
    let events = json!([
        {"user": "alice", "kind": "", "time_ms": now},
        {"user": "alice", "kind": "removable_media_copy", "time_ms": now, "details": {"file": "a.docx"}},
        {"user": "alice", "kind": "login", "time_ms": now},
        {"user": "alice", "kind": "removable_media_copy", "time_ms": -1_000_000_000_000_000i64},
        {"user": "carol", "kind": "removable_media_copy", "time_ms": now},
    ]);
    let (status, ack) = c.activity(&dev, events).await;
    assert_eq!(status, 200, "{ack}");
    let outcomes: Vec<&str> =
        ack["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["invalid", "triggered", "stored", "trigger_refused", "not_approved"]);
    assert!(ack["results"][0]["reason"].as_str().unwrap().contains("kind"), "{ack}");
    assert!(ack["results"][3]["reason"].as_str().unwrap().contains("event_time"), "{ack}");
    assert_eq!(ack["results"][1]["trigger_ids"], ack["triggers_issued"]);
    assert_eq!(ack["accepted"], json!(4));
    let activity: Vec<Value> = c.admin.get("/api/v1/activity").await.unwrap();
    assert_eq!(activity.len(), 4);
    let alerts: Vec<Value> = c.admin.get("/api/v1/alerts").await.unwrap();
    assert_eq!(alerts.len(), 1, "only the triggered event made an alert: {alerts:?}");
    c.server.shutdown().await.unwrap();
}

// ---- finding 12: log injection -----------------------------------------------------------

#[test]
fn names_a_device_sends_cannot_forge_log_lines() {
    let exe = env!("CARGO_BIN_EXE_rearview-console");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(exe).args(["init", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = support::labelled_token(&String::from_utf8(out.stdout).unwrap(), "admin token");
    let mut serve = std::process::Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    let forged = "FORGED 2030-01-01T00:00:00Z  INFO rearview_console: admin ivan signed in";
    let name = format!("mallory\n{forged}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = AdminClient::new(&url, &token, None).unwrap();
        let dev = enroll_at(&url, &admin).await;
        let http = reqwest::Client::new();
        // An indicator for an unapproved user (logged), and a refused manifest (logged).
        let r = http
            .post(format!("{url}/api/v1/device/activity"))
            .bearer_auth(&dev.token)
            .json(&json!({"events": [{"user": name, "kind": "removable_media_copy", "time_ms": now_ms()}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let now = now_ms();
        let m = manifest("log-1", &dev, &name, "all-activities", None, (now, now + 1000), vec![]);
        http.put(format!("{url}/api/v1/device/clips/log-1"))
            .bearer_auth(&dev.token)
            .json(&m)
            .send()
            .await
            .unwrap();
    });
    let ok = std::process::Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    assert!(ok.unwrap().success());
    let mut stderr = String::new();
    serve.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    serve.wait().unwrap();
    assert!(stderr.contains("mallory"), "the name is logged at all:\n{stderr}");
    for line in stderr.lines() {
        assert!(!line.starts_with("FORGED"), "a forged log line:\n{stderr}");
    }
}
