//! What the console's test binaries share, and the one in-process console launcher of the
//! workspace: a tenant initialised in a temp directory and served on a free loopback port,
//! people, approvals and devices enrolled by hand (with keys the tests hold, so the manifests
//! they send carry chain entries signed by the enrolled key: [`rearview_testkit::chain`]). `tests/tests/protocol.rs` mounts this module
//! too (as `console_support`), for the tests that need the uploader as well.
//!
//! * [`approvals`], [`duties`], [`device_trust`]: each of those test files' console helpers,
//!   here because their device halves (in `tests/tests/protocol`) use them too.
//! * [`backend`]: which backend the tests run on (`REARVIEW_TEST_STORE`), and raw SQL on it.
//! * [`streams`]: a device's push stream read as raw events.
//! * [`web`]: the web UI as a browser sends it (cookies, forms, CSRF tokens), without one.

// Each test binary uses some of these helpers, none uses all.
#![allow(dead_code)]

use rearview_console::client::AdminClient;
use rearview_console::{InitOutput, Server, ServerConfig, ServerHandle};
use rearview_protocol::chain::Signer;
use rearview_testkit::chain::DeviceChains;
use serde_json::{json, Value};

pub mod approvals;
pub mod backend;
pub mod device_trust;
pub mod duties;
pub mod streams;
pub mod web;

/// Wall-clock time, Unix milliseconds: the clock of the wire.
pub fn now_ms() -> i64 {
    rearview_protocol::UnixMillis::now().millis()
}

/// `init` of tenant `tenant-a` (first admin `ivan`) and `serve` on 127.0.0.1:0; returns the
/// directory (keep it alive), the server and the admin token.
pub async fn start() -> (tempfile::TempDir, ServerHandle, String) {
    let (dir, server, out) = start_with("approver").await;
    (dir, server, out.admin_token)
}

/// As [`start`], with the first approver named `approver`; returns all `init` printed (both
/// tokens).
pub async fn start_with(approver: &str) -> (tempfile::TempDir, ServerHandle, InitOutput) {
    start_configured(approver, |_| {}).await
}

/// As [`start_with`], serving with the default configuration changed by `adjust`.
pub async fn start_configured(
    approver: &str,
    adjust: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, ServerHandle, InitOutput) {
    let dir = tempfile::tempdir().unwrap();
    let out = backend::init_tenant(dir.path(), approver);
    let mut config = ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap());
    adjust(&mut config);
    let server = Server::start(config).await.unwrap();
    (dir, server, out)
}

/// A new person with `role` (not `approver`: that grant waits for a second person, so tests
/// take init's approver), as a client of the console at `url`.
pub async fn person(url: &str, admin: &AdminClient, name: &str, role: &str) -> AdminClient {
    let p: Value =
        admin.post("/api/v1/people", &json!({"name": name, "roles": [role]})).await.unwrap();
    AdminClient::new(url, p["token"].as_str().unwrap(), None).unwrap()
}

/// The one place these tests get a user an approval in force: requested by `admin`, approved by
/// `approver` (another person, with the approver role). Returns the approval id.
pub async fn approve(admin: &AdminClient, approver: &AdminClient, user: &str, mode: &str) -> i64 {
    let a: Value = admin
        .post("/api/v1/approvals", &json!({"user": user, "mode": mode, "justification": "case 1"}))
        .await
        .unwrap();
    let id = a["id"].as_i64().unwrap();
    let _: Value =
        approver.post(&format!("/api/v1/approvals/{id}/approve"), &json!({})).await.unwrap();
    id
}

/// Enrolls a device by hand (raw HTTP, a fresh Ed25519 key) and returns its token and id.
/// On the way: a proof made for another key is refused, and does not use up the token.
pub async fn enroll(url: &str, admin: &AdminClient) -> (String, String) {
    let e = enroll_keyed(url, admin).await;
    (e.token, e.id)
}

/// A device [`enroll_keyed`] enrolled.
pub struct Enrolled {
    pub token: String,
    pub id: String,
    /// The device key it enrolled with, which signs its chain entries.
    pub key: Signer,
    /// The tenant's X25519 key segments are sealed to (hex), as enrollment answered it.
    pub sealing_public_key: String,
    /// The tenant the device joined (what its chain entries name).
    pub tenant_id: String,
}

impl Enrolled {
    /// The device's chains, signed with its enrolled key ([`DeviceChains`]).
    pub fn chains(key: Signer, tenant_id: &str, device_id: &str) -> DeviceChains {
        DeviceChains::new(key, tenant_id, device_id)
    }
}

/// As [`enroll`], also returning the device key and the tenant's sealing key.
pub async fn enroll_keyed(url: &str, admin: &AdminClient) -> Enrolled {
    let t: Value = admin.post("/api/v1/enrollment-tokens", &json!({})).await.unwrap();
    let token = t["token"].as_str().unwrap();
    let (key, _der) = Signer::generate().unwrap();
    let pk = hex::encode(key.public_key().as_bytes());
    // The proof is a plain Ed25519 signature of the message: no domain before it.
    let wrong = hex::encode(key.sign("", b"something else"));
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/enroll"))
        .json(&json!({"token": token, "public_key": pk, "proof": wrong, "hostname": "h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let proof = hex::encode(key.sign("", &rearview_protocol::enroll_proof_message(token, &pk)));
    let r: Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/enroll"))
        .json(&json!({"token": token, "public_key": pk, "proof": proof, "hostname": "h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = |field: &str| r[field].as_str().unwrap().to_owned();
    Enrolled {
        token: text("device_token"),
        id: text("device_id"),
        key,
        sealing_public_key: text("sealing_public_key"),
        tenant_id: text("tenant_id"),
    }
}

/// Issues a trigger for alice on `device` (a USB copy, 5 s either side of now); its id.
pub async fn trigger_alice(admin: &AdminClient, device: &str) -> String {
    let t: Value = admin
        .post(
            "/api/v1/triggers",
            &json!({"user": "alice", "event_time": now_ms(), "before": 5, "after": 5,
                    "reason": "usb copy", "device": device}),
        )
        .await
        .unwrap();
    t["trigger_ids"][0].as_str().unwrap_or_else(|| panic!("no trigger id in {t}")).to_owned()
}
