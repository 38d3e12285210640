//! What the console must not take on a device's word (review findings 6, 7, 9 and 12): clip
//! manifests checked against approvals and triggers, indicator floods, segment bodies streamed
//! and capped, lists in pages, triggers devices would refuse, and log lines forged through
//! names a device sends; and (issue 13) device-signed chains verified at ingest, against the
//! console binary: a segment sealed by someone holding only the tenant public key, a segment
//! without an entry, a hole, a fork or splice across clips, an entry of someone else.
//!
//! Devices are enrolled with raw HTTP (a key pair made here), so manifests and uploads can be
//! forged the way a hostile device would; uploads that must stay open mid-body are written on a
//! raw TCP socket.
//!
//! What the real uploader does with the console's answers is in
//! `tests/tests/protocol/device_trust.rs`.

use std::io::{BufRead, Read};
use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::IngestLimits;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

mod support;

use support::device_trust::*;
use support::now_ms;

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
    rearview_testkit::eventually(
        "no temp file grows in blobs/.incoming",
        Duration::from_secs(10),
        || incoming_files(&c).iter().any(|(_, len)| *len > 0),
    )
    .await;
    s.write_all(&b[half..]).await.unwrap();
    let (status, _, body) = read_answer(&mut s).await.expect("an answer");
    assert_eq!(status, 200, "{body}");
    let stored = c.server.store().blobs().get(&dev.id, &sha(&b)).await.unwrap();
    assert_eq!(stored.as_deref(), Some(&b[..]), "the blob is not the bytes sent");
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
    rearview_testkit::eventually("the uploads in flight", Duration::from_secs(10), || {
        incoming_files(&c).len() >= cap
    })
    .await;
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
    let db = c.db();
    db.exec(&format!("UPDATE clips SET manifest_json = '{{damaged' WHERE id = '{clip_id}'"));
    let stored = db.text(&format!("SELECT manifest_json FROM clips WHERE id = '{clip_id}'"));
    assert_eq!(stored, "{damaged");
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
    let issued = c.db().int("SELECT COUNT(*) FROM triggers");
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
    let token = rearview_testkit::console::init(exe.as_ref(), &data, &[]).unwrap().admin_token;
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

// ---- issue 13: device-signed chains, verified at ingest ------------------------------------

/// The console as its binary (`init`, then `serve` on 127.0.0.1:0), alice approved for all
/// activities, and one device enrolled with a key the test holds.
struct ChainConsole {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    _served: rearview_testkit::console::ServedConsole,
    url: String,
    admin: AdminClient,
    dev: Device,
}

impl ChainConsole {
    async fn start() -> ChainConsole {
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_rearview-console"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let tokens =
            rearview_testkit::console::init(exe, &data, &["--tenant", "tenant-a"]).unwrap();
        let served = rearview_testkit::console::ServedConsole::start(exe, &data, &[]).unwrap();
        let url = served.url.clone();
        let admin = AdminClient::new(&url, &tokens.admin_token, None).unwrap();
        let approver = AdminClient::new(&url, &tokens.approver_token, None).unwrap();
        support::approve(&admin, &approver, "alice", "all-activities").await;
        let dev = enroll_at(&url, &admin).await;
        ChainConsole { _dir: dir, data, _served: served, url, admin, dev }
    }

    async fn put(&self, manifest: &Value) -> (u16, Value) {
        let id = manifest["clip_id"].as_str().unwrap();
        let r = reqwest::Client::new()
            .put(format!("{}/api/v1/device/clips/{id}", self.url))
            .bearer_auth(&self.dev.token)
            .json(manifest)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Sends `manifest`, which must be refused with 409 naming `why`, audited as
    /// `clip.refused` with that reason, and leave nothing stored: no clip, no accepted entry,
    /// and its segments are not taken.
    async fn refused(&self, manifest: &Value, why: &str) {
        let id = manifest["clip_id"].as_str().unwrap();
        let (status, body) = self.put(manifest).await;
        assert_eq!(status, 409, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(why), "want {why:?} in: {error}");
        let audit: Vec<Value> = self.admin.get("/api/v1/audit?limit=1000").await.unwrap();
        let line = audit
            .iter()
            .find(|a| a["target"] == json!(format!("clip:{id}")) && a["action"] == "clip.refused")
            .unwrap_or_else(|| panic!("no clip.refused for {id}: {audit:?}"));
        assert!(line["details"]["reason"].as_str().unwrap().contains(why), "{line}");
        let err = self.admin.get::<Value>(&format!("/api/v1/clips/{id}")).await.unwrap_err();
        assert_eq!(err.status, 404, "the refused clip was stored");
        let db = support::backend::TestDb::of(&self.data);
        let held = db.int(&format!("SELECT COUNT(*) FROM chain_entries WHERE clip_id = '{id}'"));
        assert_eq!(held, 0, "entries of a refused clip were accepted");
        for s in manifest["segments"].as_array().unwrap() {
            let sha = s["sha256"].as_str().unwrap();
            let r = reqwest::Client::new()
                .put(format!("{}/api/v1/device/segments/{sha}", self.url))
                .bearer_auth(&self.dev.token)
                .body(vec![0u8; 10])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 409, "a segment of the refused clip is taken");
        }
    }
}

/// One segment's bytes and its manifest entry, recorded over [at, at + 1 s].
fn chain_seg(tag: u8, at: i64) -> (Vec<u8>, Value) {
    let b = bytes(tag, 500);
    let s = seg(&b, at, at + 1000);
    (b, s)
}

/// A chain entry signed by `key` at (chain, seq) after `prev`, for segment `sha256` of
/// `stream`, recorded over [at, at + 1 s].
fn forged_entry(
    key: &rearview_protocol::chain::Signer,
    place: (&str, u64, &str),
    stream: &rearview_protocol::chain::Stream,
    id: String,
    sha256: &str,
    at: i64,
) -> rearview_protocol::ChainEntry {
    use rearview_protocol::chain::{Appended, ChainHead, SegmentRef};
    let mut head = ChainHead {
        chain: place.0.into(),
        next_seq: place.1,
        last_hash: place.2.into(),
        last_to_utc_micros: None,
    };
    let seg = Appended::Segment(SegmentRef { id, sha256: sha256.into() });
    head.append(key, stream, (at * 1000, (at + 1000) * 1000), seg).unwrap()
}

fn alice_stream(dev: &Device, tenant: &str, user: &str) -> rearview_protocol::chain::Stream {
    rearview_protocol::chain::Stream {
        tenant: tenant.into(),
        device: dev.id.clone(),
        user: user.into(),
        session: "1".into(),
        monitor: 0,
    }
}

/// Issue 13's attack: anyone holding the tenant's public key (every device has it) can seal a
/// valid segment under any device's name. Sealed properly, sent with the real device token,
/// but signed by another Ed25519 key: refused, because only the enrolled key signs entries.
#[tokio::test]
async fn a_segment_sealed_with_only_the_tenant_public_key_is_refused_and_audited() {
    use rearview_capture::seal::{seal, SealBinding, TenantPublicKey};
    use rearview_capture::segment::SegmentId;
    let c = ChainConsole::start().await;
    let tenant_key: TenantPublicKey = c.dev.sealing_public_key.parse().unwrap();
    let segment_id = SegmentId::from_bytes(*b"forged-segment!!");
    let binding = SealBinding { tenant: "tenant-a", device: &c.dev.id, segment_id };
    let sealed = seal(&tenant_key, &binding, b"frames the device never recorded").unwrap();
    let now = now_ms();
    let (intruder, _der) = rearview_protocol::chain::Signer::generate().unwrap();
    let chain = "ab".repeat(16);
    let zeros = "00".repeat(32);
    let entry = forged_entry(
        &intruder,
        (&chain, 0, &zeros),
        &alice_stream(&c.dev, "tenant-a", "alice"),
        segment_id.to_string(),
        &sha(&sealed),
        now,
    );
    let mut m = json!({
        "clip_id": "forged", "trigger_id": null, "mode": "all-activities", "user": "alice",
        "device_id": c.dev.id, "start_ms": now, "end_ms": now + 1000,
        "segments": [seg(&sealed, now, now + 1000)], "missing": [], "chain": [entry],
    });
    let fingerprint = c.dev.with_key(|key| key.public_key().fingerprint());
    let why = format!(
        "segment {segment_id} (sha256 {}, chain {chain} entry 0): the chain entry's signature \
         does not verify with the enrolled device key {fingerprint}",
        sha(&sealed)
    );
    c.refused(&m, &why).await;
    // The same segment with the entry the enrolled key signs is taken.
    m["clip_id"] = json!("genuine");
    c.dev.sign(&mut m);
    assert_eq!(c.put(&m).await.0, 200);
}

#[tokio::test]
async fn a_manifest_naming_a_segment_without_a_chain_entry_is_refused() {
    let c = ChainConsole::start().await;
    let now = now_ms();
    let (_, s1) = chain_seg(1, now);
    let (_, s2) = chain_seg(2, now + 1000);
    let mut m =
        manifest("unchained", &c.dev, "alice", "all-activities", None, (now, now + 2000), vec![s1]);
    m["segments"].as_array_mut().unwrap().push(s2.clone());
    let why = format!(
        "segment {}: no chain entry the device signed names it",
        s2["sha256"].as_str().unwrap()
    );
    c.refused(&m, &why).await;
}

#[tokio::test]
async fn a_hole_in_the_chain_without_a_gap_entry_is_refused() {
    let c = ChainConsole::start().await;
    let now = now_ms();
    let segs: Vec<Value> = (0..3).map(|i| chain_seg(10 + i, now + i64::from(i) * 1000).1).collect();
    let window = (now, now + 3000);
    let full = manifest("holed", &c.dev, "alice", "all-activities", None, window, segs.clone());
    // The middle segment taken out with its entry, and no gap entry or absence note for it.
    let mut m = full.clone();
    m["segments"].as_array_mut().unwrap().remove(1);
    m["chain"].as_array_mut().unwrap().remove(1);
    let chain = full["chain"][0]["chain"].as_str().unwrap();
    c.refused(&m, &format!("chain {chain}: entry 1 is missing (entries 0..=2 are given)")).await;
    // Taken out with its entry kept: the entry is there, but nothing explains the absence.
    let mut m = full.clone();
    m["segments"].as_array_mut().unwrap().remove(1);
    m["clip_id"] = json!("holed-2");
    let id = full["chain"][1]["segment"]["id"].as_str().unwrap();
    let why = format!("segment {id} (chain {chain}/1) is not in the clip and no device-signed absence note explains it");
    c.refused(&m, &why).await;
    assert_eq!(c.put(&full).await.0, 200, "the whole chain is taken");
}

#[tokio::test]
async fn a_fork_across_two_clips_is_refused() {
    let c = ChainConsole::start().await;
    let now = now_ms();
    let (_, s1) = chain_seg(21, now);
    let first =
        manifest("first", &c.dev, "alice", "all-activities", None, (now, now + 1000), vec![s1]);
    assert_eq!(c.put(&first).await.0, 200);
    let chain = first["chain"][0]["chain"].as_str().unwrap().to_owned();
    let accepted: rearview_protocol::ChainEntry =
        serde_json::from_value(first["chain"][0].clone()).unwrap();
    // Another entry 0 of the same chain, properly signed by the enrolled key: a fork.
    let (b2, s2) = chain_seg(22, now + 1000);
    let zeros = "00".repeat(32);
    let stream = alice_stream(&c.dev, "tenant-a", "alice");
    let signed = |place: (&str, u64, &str), id: &str| {
        c.dev
            .with_key(|key| forged_entry(key, place, &stream, id.repeat(16), &sha(&b2), now + 1000))
    };
    let fork = signed((&chain, 0, &zeros), "22");
    // An entry 1 that names something else than the accepted entry 0: a splice.
    let splice = signed((&chain, 1, &"11".repeat(32)), "23");
    let second = |id: &str, entry: &rearview_protocol::ChainEntry| {
        json!({
            "clip_id": id, "trigger_id": null, "mode": "all-activities", "user": "alice",
            "device_id": c.dev.id, "start_ms": now + 1000, "end_ms": now + 2000,
            "segments": [s2], "missing": [], "chain": [entry],
        })
    };
    let why = format!("chain {chain} entry 0: the console already accepted a different entry 0 of this chain from this device: a fork");
    c.refused(&second("forked", &fork), &why).await;
    let why = format!(
        "chain {chain} entry 1: its prev is not the hash of entry 0 the console accepted before"
    );
    c.refused(&second("spliced", &splice), &why).await;
    // The entry that does follow the accepted one is taken.
    let mut head = rearview_protocol::chain::ChainHead {
        chain: chain.clone(),
        next_seq: 1,
        last_hash: hex::encode(accepted.hash().unwrap()),
        last_to_utc_micros: None,
    };
    let seg2 = rearview_protocol::chain::SegmentRef { id: "24".repeat(16), sha256: sha(&b2) };
    let span = ((now + 1000) * 1000, (now + 2000) * 1000);
    let next = c.dev.with_key(|key| {
        head.append(key, &stream, span, rearview_protocol::chain::Appended::Segment(seg2)).unwrap()
    });
    assert_eq!(c.put(&second("following", &next)).await.0, 200);
}

#[tokio::test]
async fn an_entry_of_another_tenant_device_or_user_is_refused() {
    let c = ChainConsole::start().await;
    let now = now_ms();
    let (b, s) = chain_seg(31, now);
    let zeros = "00".repeat(32);
    let entry = |chain: &str, tenant: &str, device: &str, user: &str| {
        let stream = rearview_protocol::chain::Stream {
            tenant: tenant.into(),
            device: device.into(),
            user: user.into(),
            session: "1".into(),
            monitor: 0,
        };
        c.dev.with_key(|key| {
            forged_entry(key, (chain, 0, &zeros), &stream, "31".repeat(16), &sha(&b), now)
        })
    };
    let cases = [
        (
            "of-bob",
            entry(&"b1".repeat(16), "tenant-a", &c.dev.id, "bob"),
            "names user \"bob\", the clip's is \"alice\"",
        ),
        (
            "of-tenant-b",
            entry(&"b2".repeat(16), "tenant-b", &c.dev.id, "alice"),
            "names tenant \"tenant-b\", the clip's is \"tenant-a\"",
        ),
        (
            "of-dev-x",
            entry(&"b3".repeat(16), "tenant-a", "dev-x", "alice"),
            &format!("names device \"dev-x\", the clip's is {:?}", c.dev.id),
        ),
    ];
    for (id, e, why) in cases {
        let m = json!({
            "clip_id": id, "trigger_id": null, "mode": "all-activities", "user": "alice",
            "device_id": c.dev.id, "start_ms": now, "end_ms": now + 1000,
            "segments": [s], "missing": [], "chain": [e],
        });
        c.refused(&m, why).await;
    }
}
