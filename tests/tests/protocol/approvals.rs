//! Capture approvals as a device sees them: a rejected, expiring or revoked approval checked in
//! the policy the real uploader verifies (the console-only cases are in
//! `console/tests/approvals.rs`; the console helpers are shared with them).

use std::time::Duration;

use rearview_uploader::{Uploader, UploaderConfig};
use serde_json::{json, Value};

use crate::console_support::approvals::*;

/// A device enrolled with the real uploader (no policy fetched yet).
async fn device(c: &Console) -> (tempfile::TempDir, std::sync::Arc<Uploader>) {
    let t: Value = c.admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let up = Uploader::open(UploaderConfig::new(c.server.url(), state.path())).unwrap();
    up.enroll(t["token"].as_str().unwrap(), "host").await.unwrap();
    (state, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_never_enters_the_bundle_and_cannot_be_approved_after() {
    let c = Console::start().await;
    let (_state, device) = device(&c).await;
    let (v0, _) = bundle(&c.admin).await;
    let id = c.request(86400).await;

    let r: Value = c
        .rita
        .post(&format!("/api/v1/approvals/{id}/reject"), &json!({"comment": "not proportionate"}))
        .await
        .unwrap();
    assert_eq!((r["state"].clone(), r["decided_by"].clone()), (json!("rejected"), json!("rita")));
    let (v1, users) = bundle(&c.admin).await;
    assert!(v1 > v0, "a decision raises the version");
    assert!(users.is_empty(), "{users:?}");
    // The device's own verified copy does not name the user either.
    let p = device.sync_policy().await.unwrap().expect("a first policy");
    assert_eq!(p.version(), v1);
    assert!(p.payload().users.is_empty());

    let audit = audit_of(&c.admin, id).await;
    let actions: Vec<&str> = audit.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(actions, ["approval.request", "approval.reject"]);
    assert_eq!(audit[1].0, "person:rita");
    assert_eq!(audit[1].2["comment"], json!("not proportionate"));

    // Neither the other approver nor the one who rejected can turn it round, and it cannot be
    // rejected twice.
    for (who, action) in [(&c.vera, "approve"), (&c.rita, "approve"), (&c.vera, "reject")] {
        let err = who
            .post::<_, Value>(&format!("/api/v1/approvals/{id}/{action}"), &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.status, 409, "{action}: {}", err.message);
        assert!(err.message.contains("is rejected"), "{}", err.message);
    }
    assert_eq!(c.approval(id).await["state"], json!("rejected"));
    assert_eq!(bundle(&c.admin).await, (v1, vec![]), "refused decisions change nothing");
    assert_no_trigger_without_approval(&c.admin).await;
    c.server.shutdown().await.unwrap();
}

/// The console's 1 s ticker notices an approval reaching its expiry and publishes a bundle
/// without it; the device accepts that bundle (it refuses bundles carrying expired approvals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_approval_reaching_its_expiry_leaves_the_bundle_while_the_console_runs() {
    let c = Console::start().await;
    let (id, v1) = c.approved().await;
    let (_state, device) = device(&c).await;
    let first = device.sync_policy().await.unwrap().expect("a first policy");
    assert_eq!(first.payload().users.len(), 1);

    // Due in 1.5 s instead of a day: the ticker compares expiries against its last tick, so the
    // new expiry must lie ahead of it.
    c.set_expiry(id, rearview_uploader::now_ms() + 1500);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (v2, users) = loop {
        let (v, users) = bundle(&c.admin).await;
        if v > v1 {
            break (v, users);
        }
        assert!(tokio::time::Instant::now() < deadline, "policy still at v{v1} after 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(users.is_empty(), "v{v2} still names {users:?}");
    assert_eq!(c.approval(id).await["state"], json!("expired"));
    let audit = audit_of(&c.admin, id).await;
    let last: Vec<(&str, &str)> =
        audit.iter().rev().take(1).map(|(w, a, _)| (w.as_str(), a.as_str())).collect();
    assert_eq!(last, [("console", "approval.expire")], "the expiry is in the audit log");
    let next = device.sync_policy().await.unwrap().expect("the newer policy");
    assert_eq!(next.version(), v2);
    assert!(next.payload().users.is_empty());
    assert_no_trigger_without_approval(&c.admin).await;
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_another_approver_leaves_the_bundle_and_the_audit_names_both() {
    let c = Console::start().await;
    let (id, v1) = c.approved().await;
    let (_state, _device) = device(&c).await;
    assert_eq!(trigger(&c.admin).await.0, 200);

    // An investigator may not revoke; an approver other than the one who approved may.
    let inv = person(&c.server.url(), &c.admin, "ingrid", "investigator").await;
    let err = inv
        .post::<_, Value>(&format!("/api/v1/approvals/{id}/revoke"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    let r: Value = c
        .vera
        .post(&format!("/api/v1/approvals/{id}/revoke"), &json!({"comment": "case closed"}))
        .await
        .unwrap();
    assert_eq!(r["state"], json!("revoked"));
    // The record keeps who approved as well as who revoked.
    assert_eq!((r["decided_by"].clone(), r["revoked_by"].clone()), (json!("rita"), json!("vera")));
    assert!(r["revoked_ms"].as_i64() >= r["decided_ms"].as_i64());
    let (v2, users) = bundle(&c.admin).await;
    assert!(v2 > v1);
    assert!(users.is_empty(), "{users:?}");
    assert_no_trigger_without_approval(&c.admin).await;

    let audit = audit_of(&c.admin, id).await;
    let who: Vec<(&str, &str)> = audit.iter().map(|(w, a, _)| (w.as_str(), a.as_str())).collect();
    assert_eq!(
        who,
        [
            ("person:ivan", "approval.request"),
            ("person:rita", "approval.approve"),
            ("person:vera", "approval.revoke")
        ]
    );
    assert_eq!(audit[2].2["comment"], json!("case closed"));
    // Revoked is final.
    for action in ["approve", "revoke"] {
        let err = c
            .rita
            .post::<_, Value>(&format!("/api/v1/approvals/{id}/{action}"), &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.status, 409, "{action}");
    }
    assert_eq!(bundle(&c.admin).await.0, v2);
    c.server.shutdown().await.unwrap();
}
