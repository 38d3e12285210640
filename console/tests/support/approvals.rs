//! The approval tests' console (`console/tests/approvals.rs`, and its device half in
//! `tests/tests/protocol/approvals.rs`): a tenant with an admin and two approvers, requests,
//! the signed bundle read back, the audit of one approval.

use base64::Engine;
use rearview_console::client::AdminClient;
use rearview_console::ServerHandle;
use serde_json::{json, Value};

pub const USER: &str = "alice";

/// A running console with its first admin (ivan) and two approvers: rita (made by `init`) and
/// vera (added by a second admin, olga, and confirmed by rita: an approver ivan made could not
/// decide ivan's requests).
pub struct Console {
    pub dir: tempfile::TempDir,
    pub server: ServerHandle,
    pub admin: AdminClient,
    pub rita: AdminClient,
    pub vera: AdminClient,
}

impl Console {
    pub async fn start() -> Console {
        let (dir, server, out) = super::start_with("rita").await;
        let admin = AdminClient::new(&server.url(), &out.admin_token, None).unwrap();
        let rita = AdminClient::new(&server.url(), &out.approver_token, None).unwrap();
        let olga = person(&server.url(), &admin, "olga", "admin").await;
        let v: Value = olga
            .post("/api/v1/people", &json!({"name": "vera", "roles": ["approver"]}))
            .await
            .unwrap();
        let _: Value = rita
            .post(&format!("/api/v1/people/{}/roles/approver/confirm", v["id"]), &json!({}))
            .await
            .unwrap();
        let vera = AdminClient::new(&server.url(), v["token"].as_str().unwrap(), None).unwrap();
        Console { dir, server, admin, rita, vera }
    }

    /// ivan asks for capture of [`USER`]; returns the approval id.
    pub async fn request(&self, ttl_secs: i64) -> i64 {
        let a: Value = self
            .admin
            .post(
                "/api/v1/approvals",
                &json!({"user": USER, "mode": "specific-activities",
                        "justification": "case 4711", "ttl_secs": ttl_secs}),
            )
            .await
            .unwrap();
        assert_eq!(a["state"], json!("pending"));
        a["id"].as_i64().unwrap()
    }

    /// ivan's request for a day, approved by rita; returns its id and the version of the bundle
    /// that names [`USER`].
    pub async fn approved(&self) -> (i64, u64) {
        let id = self.request(86400).await;
        let _: Value =
            self.rita.post(&format!("/api/v1/approvals/{id}/approve"), &json!({})).await.unwrap();
        let (version, users) = bundle(&self.admin).await;
        assert_eq!(users, [USER]);
        (id, version)
    }

    pub async fn approval(&self, id: i64) -> Value {
        let all: Vec<Value> = self.admin.get("/api/v1/approvals").await.unwrap();
        all.into_iter().find(|a| a["id"] == json!(id)).expect("approval listed")
    }

    /// Moves the approval's expiry in the database, standing in for the time it takes to get
    /// there (the console reads it from the database on every call and every tick).
    pub fn set_expiry(&self, id: i64, expires_ms: i64) {
        let db = super::backend::TestDb::of(self.dir.path());
        db.exec(&format!("UPDATE approvals SET expires_ms = {expires_ms} WHERE id = {id}"));
        assert_eq!(
            db.int(&format!("SELECT expires_ms FROM approvals WHERE id = {id}")),
            expires_ms
        );
    }
}

pub async fn person(url: &str, admin: &AdminClient, name: &str, role: &str) -> AdminClient {
    let p: Value =
        admin.post("/api/v1/people", &json!({"name": name, "roles": [role]})).await.unwrap();
    AdminClient::new(url, p["token"].as_str().unwrap(), None).unwrap()
}

/// The version of the bundle `GET /api/v1/policy` serves and the users its signed payload
/// names (read from the payload itself, not from the outer version field).
pub async fn bundle(admin: &AdminClient) -> (u64, Vec<String>) {
    let m: Value = admin.get("/api/v1/policy").await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(m["signed"]["payload"].as_str().unwrap())
        .unwrap();
    let payload: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(payload["version"], m["version"]);
    let users = payload["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["principal"].as_str().unwrap().to_owned())
        .collect();
    (payload["version"].as_u64().unwrap(), users)
}

/// Audit entries about approval `id`, as (actor, action, details).
pub async fn audit_of(admin: &AdminClient, id: i64) -> Vec<(String, String, Value)> {
    let audit: Vec<Value> = admin.get("/api/v1/audit").await.unwrap();
    audit
        .into_iter()
        .filter(|a| a["target"] == json!(format!("approval:{id}")))
        .map(|a| {
            (
                a["actor"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
                a["details"].clone(),
            )
        })
        .collect()
}

/// Issues a trigger for [`USER`]: the HTTP status and, when refused, the reason.
pub async fn trigger(admin: &AdminClient) -> (u16, String) {
    let body = json!({"user": USER, "event_time": super::now_ms(), "before": 5,
                      "after": 5, "reason": "r"});
    match admin.post::<_, Value>("/api/v1/triggers", &body).await {
        Ok(_) => (200, String::new()),
        Err(e) => (e.status, e.message),
    }
}

pub async fn assert_no_trigger_without_approval(admin: &AdminClient) {
    let (status, message) = trigger(admin).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("no capture approval in force"), "{message}");
}
