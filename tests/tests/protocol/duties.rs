//! Separation of duties as a device sees it: an approval the signer refuses is left out of the
//! bundle and revocations still reach the real uploader (the console-only cases are in
//! `console/tests/duties.rs`; the console helpers are shared with them).

use rearview_uploader::{Uploader, UploaderConfig};
use serde_json::{json, Value};

use crate::console_support::duties::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_signer_refuses_is_left_out_flagged_and_audited_and_revocations_still_reach_devices(
) {
    let c = start().await;
    let _: Value = c
        .admin
        .put("/api/v1/policy/settings", &json!({"capture": {"enabled": true}}))
        .await
        .unwrap();
    let bob = request(&c.admin, "bob", "case 5").await.unwrap();
    let _ = decide(&c.rita, bob, "approve").await.unwrap();
    let (v1, users) = bundle(&c.admin).await.unwrap();
    assert_eq!(principals(&users), ["bob"]);
    let t: Value = c.admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let device = Uploader::open(UploaderConfig::new(c.server.url(), state.path())).unwrap();
    device.enroll(t["token"].as_str().unwrap(), "host").await.unwrap();
    assert_eq!(device.sync_policy().await.unwrap().expect("a policy").version(), v1);

    // An older console accepted a justification with a carriage return and approved it.
    let now = rearview_uploader::now_ms();
    let db = c.db();
    db.execute(
        "INSERT INTO approvals (user_name, mode, justification, requested_by, requested_ms, expires_ms,
                                state, decided_by, decided_ms)
         VALUES ('mallory', 'all-activities', 'case 6\r\nforged', 'ivan', ?1, ?2, 'approved', 'rita', ?3)",
        [now - 2000, now + DAY_MS, now - 1000],
    )
    .unwrap();
    let mallory = db.last_insert_rowid();

    // Revoking bob still yields a bundle, without bob and without the record it cannot sign.
    let _ = decide(&c.rita, bob, "revoke").await.unwrap();
    let (v2, users) = bundle(&c.admin).await.expect("the policy is served");
    assert!(v2 > v1);
    assert!(users.is_empty(), "{users:?}");
    let p = device.sync_policy().await.unwrap().expect("the revocation reaches the device");
    assert_eq!(p.version(), v2);
    assert!(p.payload().users.is_empty());

    let a = approval(&c.admin, mallory).await;
    let why = a["excluded"].as_str().expect("flagged on the approval");
    assert!(why.contains("justification"), "{why}");
    // Signing again (another change) neither fails nor audits the same record twice.
    let _: Value = c
        .admin
        .put("/api/v1/policy/settings", &json!({"capture": {"enabled": true, "fps": 2}}))
        .await
        .unwrap();
    let (v3, users) = bundle(&c.admin).await.unwrap();
    assert!(v3 > v2 && users.is_empty());
    let audit = audit_of(&c.admin, &format!("approval:{mallory}")).await;
    let actions: Vec<(&str, &str)> =
        audit.iter().map(|(w, a, _)| (w.as_str(), a.as_str())).collect();
    assert_eq!(actions, [("console", "approval.exclude")]);
    assert!(audit[0].2["reason"].as_str().unwrap().contains("justification"));
    c.server.shutdown().await.unwrap();
}
