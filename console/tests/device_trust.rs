//! What the console must not take on a device's word (review findings 6, 7, 9 and 12): clip
//! manifests checked against approvals and triggers, indicator floods, segment bodies streamed
//! and capped, lists in pages, triggers devices would refuse, and log lines forged through
//! names a device sends.
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
