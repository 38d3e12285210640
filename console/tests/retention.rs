//! Retention against the real console binary with a clip of real sealed segments: the daily
//! job deletes an expired clip and its blobs (on files or a bucket), a legal hold keeps it,
//! deletion by an investigator and bulk deletion by an admin, who may do what, the custody and
//! audit records, a device's late re-send of a deleted clip, and the same in the browser's
//! pages (the list's warning and filter, the player's forms, CSRF).
//!
//! A clip "captured 121 days ago" is the world's clip with its window moved back in the
//! database: the job reads nothing else to decide.

#[path = "support/evidence.rs"]
#[allow(dead_code)] // the evidence tests use the rest of it
mod evidence_support;
mod support;

use evidence_support::{audit_actions, custody_rows, send_clip, world, World, CLIP, USER};
use rearview_console::blobs::Blobs;
use rearview_console::client::AdminClient;
use serde_json::{json, Value};
use support::backend::TestDb;
use support::web::{hidden, set_password, Web};

const PASSWORD: &str = "correct horse battery staple";
const DAY_MS: i64 = 86_400_000;

async fn served() -> (World, Value) {
    let w = world().await;
    let manifest = send_clip(&w).await;
    for token in [&w.investigator_token, &w.approver_token, &w.admin_token] {
        assert_eq!(set_password(&w.console.url, token, PASSWORD).await, 200);
    }
    (w, manifest)
}

fn investigator(w: &World) -> AdminClient {
    AdminClient::new(&w.console.url, &w.investigator_token, None).unwrap()
}

fn approver(w: &World) -> AdminClient {
    AdminClient::new(&w.console.url, &w.approver_token, None).unwrap()
}

/// Moves the clip's window `days` into the past.
fn age_clip(w: &World, days: i64) {
    let ms = days * DAY_MS;
    TestDb::of(w.data()).exec(&format!(
        "UPDATE clips SET start_ms = start_ms - {ms}, end_ms = end_ms - {ms} WHERE id = '{CLIP}'"
    ));
}

/// The segments the clip names, and whether each blob is stored.
async fn blobs_stored(w: &World, manifest: &Value) -> Vec<bool> {
    let loc = rearview_console::store::recorded_blobs(w.data()).unwrap();
    let blobs = Blobs::open(&loc, w.data()).unwrap();
    let mut out = Vec::new();
    for s in manifest["segments"].as_array().unwrap() {
        out.push(blobs.exists(&w.device_id, s["sha256"].as_str().unwrap()).await.unwrap());
    }
    out
}

async fn run(w: &World) -> Value {
    w.admin().post("/api/v1/retention/run", &json!({})).await.unwrap()
}

fn status_of<T>(r: Result<T, rearview_console::client::ClientError>) -> (u16, String) {
    match r {
        Ok(_) => (200, String::new()),
        Err(e) => (e.status, e.message),
    }
}

#[tokio::test]
async fn an_expired_clip_is_kept_under_a_hold_then_deleted_with_its_blobs_and_audited() {
    let (w, manifest) = served().await;
    let settings: Value = w.admin().get("/api/v1/retention/settings").await.unwrap();
    assert_eq!(settings, json!({"days": 120, "bulk_delete": false}), "the defaults");
    assert_eq!(blobs_stored(&w, &manifest).await, vec![true; 3]);

    // Not expired yet: the job keeps it.
    let summary = run(&w).await;
    assert_eq!(summary["clips_deleted"], 0, "{summary}");
    age_clip(&w, 121);

    // A hold on the user keeps it past its expiry.
    let hold: Value = investigator(&w)
        .post("/api/v1/holds", &json!({"user": USER.to_uppercase(), "reason": "case 7 litigation"}))
        .await
        .unwrap();
    let summary = run(&w).await;
    assert_eq!(
        (summary["clips_deleted"].as_i64(), summary["clips_held"].as_i64()),
        (Some(0), Some(1))
    );
    let (status, message) = status_of(
        investigator(&w)
            .post::<_, Value>(&format!("/api/v1/clips/{CLIP}/delete"), &json!({"reason": "x"}))
            .await,
    );
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("legal hold") && message.contains("case 7 litigation"), "{message}");

    // Released: the next run deletes the clip and its blobs.
    let id = hold["id"].as_str().unwrap();
    let _: Value = investigator(&w)
        .post(&format!("/api/v1/holds/{id}/release"), &json!({"reason": "case closed"}))
        .await
        .unwrap();
    let summary = run(&w).await;
    assert_eq!(summary["clips_deleted"], 1, "{summary}");
    assert_eq!(summary["blobs_removed"], 3, "{summary}");
    assert_eq!(blobs_stored(&w, &manifest).await, vec![false; 3], "the blobs are gone");
    let (status, _) =
        status_of(investigator(&w).get::<Value>(&format!("/api/v1/clips/{CLIP}")).await);
    assert_eq!(status, 404);

    // The record stays: custody says held, released, deleted; the audit names the job.
    let custody = custody_rows(&w, CLIP).join("\n");
    for action in ["legal-hold-set", "legal-hold-cleared", "deleted"] {
        assert!(custody.contains(action), "custody lacks {action}: {custody}");
    }
    let lines: Vec<Value> = w.admin().get_all("/api/v1/audit").await.unwrap();
    let deleted: Vec<&Value> = lines.iter().filter(|l| l["action"] == "clip.delete").collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["actor"], "console:retention");
    assert_eq!(deleted[0]["details"]["segments"], 3);
    let actions = audit_actions(&w).await;
    for a in ["hold.place", "hold.release", "retention.run", "retention.run.requested"] {
        assert!(actions.contains(&a.to_owned()), "no {a} in {actions:?}");
    }

    // The device sending the clip again is told it was deleted, not given it back.
    let again = reqwest::Client::new()
        .put(format!("{}/api/v1/device/clips/{CLIP}", w.console.url))
        .bearer_auth(&w.device_token)
        .json(&manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert!(again.text().await.unwrap().contains("deleted"));
    let (status, _) =
        status_of(investigator(&w).get::<Value>(&format!("/api/v1/clips/{CLIP}")).await);
    assert_eq!(status, 404);
}

#[tokio::test]
async fn each_role_may_do_only_its_part_of_retention() {
    let (w, _) = served().await;
    let body = json!({"reason": "r"});
    let delete = format!("/api/v1/clips/{CLIP}/delete");
    let bulk = format!("/api/v1/users/{USER}/clips/delete");
    // The approver: nothing here.
    let a = approver(&w);
    assert_eq!(status_of(a.get::<Value>("/api/v1/retention/settings").await).0, 403);
    assert_eq!(status_of(a.get::<Value>("/api/v1/holds").await).0, 403);
    assert_eq!(
        status_of(a.post::<_, Value>("/api/v1/holds", &json!({"clip": CLIP, "reason": "r"})).await)
            .0,
        403
    );
    assert_eq!(status_of(a.post::<_, Value>(&delete, &body).await).0, 403);
    assert_eq!(status_of(a.post::<_, Value>("/api/v1/retention/run", &json!({})).await).0, 403);
    // The investigator: holds and single deletions, not the settings, the job or bulk.
    let i = investigator(&w);
    let put = json!({"days": 1, "bulk_delete": true});
    assert_eq!(status_of(i.put::<_, Value>("/api/v1/retention/settings", &put).await).0, 403);
    assert_eq!(status_of(i.post::<_, Value>("/api/v1/retention/run", &json!({})).await).0, 403);
    assert_eq!(status_of(i.post::<_, Value>(&bulk, &body).await).0, 403);
    // The admin: settings and bulk (when allowed), not a single clip's deletion.
    let admin = w.admin();
    assert_eq!(status_of(admin.post::<_, Value>(&delete, &body).await).0, 403);
    let (status, message) = status_of(admin.post::<_, Value>(&bulk, &body).await);
    assert_eq!(status, 403, "bulk deletion is off by default");
    assert!(message.contains("bulk_delete"), "{message}");
    // Bad settings and reasons are refused, naming the field.
    for bad in [json!({"days": 0}), json!({"days": 4000}), json!({"days": 30, "forever": true})] {
        let (status, _) =
            status_of(admin.put::<_, Value>("/api/v1/retention/settings", &bad).await);
        assert!(status == 400 || status == 422, "{bad}: {status}");
    }
    let (status, message) = status_of(i.post::<_, Value>(&delete, &json!({"reason": "  "})).await);
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("reason"), "{message}");
    // Allowed: the admin's bulk deletion takes the user's clips, held ones kept.
    let saved: Value = admin.put("/api/v1/retention/settings", &put).await.unwrap();
    assert_eq!(saved, put);
    let done: Value =
        admin.post(&bulk, &json!({"reason": "employee left; data minimisation"})).await.unwrap();
    assert_eq!(done["deleted"], json!([CLIP]), "{done}");
    let actions = audit_actions(&w).await;
    for a in ["retention.settings", "clip.delete", "user.clips.delete"] {
        assert!(actions.contains(&a.to_owned()), "no {a} in {actions:?}");
    }
}

#[tokio::test]
async fn bulk_deletion_keeps_the_clips_under_a_hold() {
    let (w, _) = served().await;
    let admin = w.admin();
    let _: Value = admin
        .put("/api/v1/retention/settings", &json!({"days": 120, "bulk_delete": true}))
        .await
        .unwrap();
    let _: Value =
        admin.post("/api/v1/holds", &json!({"clip": CLIP, "reason": "hr case"})).await.unwrap();
    let done: Value = admin
        .post(&format!("/api/v1/users/{USER}/clips/delete"), &json!({"reason": "left"}))
        .await
        .unwrap();
    assert_eq!((done["deleted"].clone(), done["held"].clone()), (json!([]), json!([CLIP])));
    let clip: Value = investigator(&w).get(&format!("/api/v1/clips/{CLIP}")).await.unwrap();
    assert_eq!(clip["id"], CLIP);
    let holds: Vec<Value> = investigator(&w).get("/api/v1/holds").await.unwrap();
    assert_eq!(holds.len(), 1);
    // A hold on a clip that does not exist is a 404.
    let (status, _) = status_of(
        admin.post::<_, Value>("/api/v1/holds", &json!({"clip": "nope", "reason": "r"})).await,
    );
    assert_eq!(status, 404);
}

async fn signed_in(w: &World, name: &str) -> Web {
    let mut web = Web::new(&w.console.url);
    let a = web.sign_in(name, PASSWORD).await;
    assert_eq!(a.status, 303, "{}", a.body);
    web
}

#[tokio::test]
async fn the_pages_warn_of_clips_about_to_go_and_hold_or_delete_them() {
    let (w, manifest) = served().await;
    let mut web = signed_in(&w, "ines").await;
    let list = web.get("/clips").await;
    assert!(!list.body.contains("expiring-warning"), "nothing expires soon yet");
    age_clip(&w, 115);
    let list = web.get("/clips").await;
    assert!(list.body.contains("id=\"expiring-warning\""), "{}", list.body);
    assert!(list.body.contains("expires in 5 days"), "{}", list.body);
    let soon = web.get("/clips?expiring=7").await;
    assert!(soon.body.contains(CLIP), "the filter lists it");
    assert_eq!(web.get("/clips?expiring=30").await.status, 400);

    // Hold it from the player (with this session's CSRF token only).
    let player = web.get(&format!("/clips/{CLIP}")).await;
    let csrf = hidden(&player.body, "csrf").unwrap();
    let forged =
        web.post(&format!("/clips/{CLIP}/hold"), &[("csrf", "csrf_x"), ("reason", "r")]).await;
    assert_eq!(forged.status, 403);
    let held = web
        .post(&format!("/clips/{CLIP}/hold"), &[("csrf", &csrf), ("reason", "board inquiry")])
        .await;
    assert_eq!(held.status, 303, "{}", held.body);
    let player = web.get(&format!("/clips/{CLIP}")).await;
    assert!(player.body.contains("legal hold on the clip: board inquiry"), "{}", player.body);
    assert!(!player.body.contains("id=\"delete-form\""), "no delete form while held");
    let refused =
        web.post(&format!("/clips/{CLIP}/delete"), &[("csrf", &csrf), ("reason", "r")]).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    let list = web.get("/clips").await;
    assert!(list.body.contains("<span class=\"held\">legal hold</span>"), "{}", list.body);

    // The retention page lists the hold; an approver may not open it.
    let page = web.get("/retention").await;
    assert!(page.body.contains("board inquiry"), "{}", page.body);
    let mut rita = signed_in(&w, "rita").await;
    assert_eq!(rita.get("/retention").await.status, 403);
    let rita_csrf = rita.csrf().await;
    let a =
        rita.post(&format!("/clips/{CLIP}/delete"), &[("csrf", &rita_csrf), ("reason", "r")]).await;
    assert_eq!(a.status, 403);
    // An admin may not delete a single clip, nor change settings without CSRF.
    let mut ivan = signed_in(&w, "ivan").await;
    let ivan_csrf = ivan.csrf().await;
    let a =
        ivan.post(&format!("/clips/{CLIP}/delete"), &[("csrf", &ivan_csrf), ("reason", "r")]).await;
    assert_eq!(a.status, 403);
    let a = ivan.post("/retention/settings", &[("csrf", "csrf_x"), ("days", "1")]).await;
    assert_eq!(a.status, 403);
    let a = ivan.post("/retention/settings", &[("csrf", &ivan_csrf), ("days", "90")]).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let settings: Value = w.admin().get("/api/v1/retention/settings").await.unwrap();
    assert_eq!(settings, json!({"days": 90, "bulk_delete": false}));

    // Released from the retention page, then deleted from the player.
    let page = web.get("/retention").await;
    let hold_id =
        page.body.split("data-hold=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let a = web
        .post(&format!("/holds/{hold_id}/release"), &[("csrf", &csrf), ("reason", "done")])
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let player = web.get(&format!("/clips/{CLIP}")).await;
    assert!(player.body.contains("id=\"delete-form\""));
    let a = web
        .post(
            &format!("/clips/{CLIP}/delete"),
            &[("csrf", &csrf), ("reason", "duplicate of case 12")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("id=\"deleted\""));
    assert_eq!(web.get(&format!("/clips/{CLIP}")).await.status, 404);
    assert_eq!(blobs_stored(&w, &manifest).await, vec![false; 3], "its blobs are removed at once");
    let lines: Vec<Value> = w.admin().get_all("/api/v1/audit").await.unwrap();
    let deleted = lines.iter().find(|l| l["action"] == "clip.delete").unwrap();
    assert_eq!(deleted["actor"], "person:ines");
    assert_eq!(deleted["details"]["reason"], "duplicate of case 12");
}

/// A segment two clips of one device name stays while the other clip does.
#[tokio::test]
async fn a_blob_another_clip_still_names_is_kept() {
    let (w, manifest) = served().await;
    // A second clip naming the same segments (as a later trigger over the same ring would).
    let db = TestDb::of(w.data());
    db.exec(&format!(
        "INSERT INTO clips (id, device_id, trigger_id, alert_id, user_name, mode, start_ms, end_ms, \
         manifest_json, created_ms, complete_ms) SELECT 'clip-ev-2', device_id, trigger_id, alert_id, \
         user_name, mode, start_ms, end_ms, manifest_json, created_ms, complete_ms FROM clips WHERE id = '{CLIP}'"
    ));
    db.exec(&format!(
        "INSERT INTO clip_segments (clip_id, sha256, size) SELECT 'clip-ev-2', sha256, size \
         FROM clip_segments WHERE clip_id = '{CLIP}'"
    ));
    let done: Value = investigator(&w)
        .post(&format!("/api/v1/clips/{CLIP}/delete"), &json!({"reason": "dup"}))
        .await
        .unwrap();
    assert_eq!(done["blobs_queued"], 0, "{done}");
    assert_eq!(blobs_stored(&w, &manifest).await, vec![true; 3]);
    let done: Value = investigator(&w)
        .post("/api/v1/clips/clip-ev-2/delete", &json!({"reason": "dup"}))
        .await
        .unwrap();
    assert_eq!(done["blobs_queued"], 3, "{done}");
    assert_eq!(blobs_stored(&w, &manifest).await, vec![false; 3]);
}
