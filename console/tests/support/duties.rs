//! The separation-of-duties tests' console (`console/tests/duties.rs`, and its device half in
//! `tests/tests/protocol/duties.rs`): admin ivan and first approver rita, requests, decisions,
//! grants, the signed bundle read back, the audit of one target.

use base64::Engine;
use rearview_console::client::{AdminClient, ClientError};
use rearview_console::ServerHandle;
use serde_json::{json, Value};

pub const DAY_MS: i64 = 86_400_000;

/// A console whose `init` made the admin `ivan` and the first approver `rita`.
pub struct Console {
    pub dir: tempfile::TempDir,
    pub server: ServerHandle,
    pub admin: AdminClient,
    pub rita: AdminClient,
}

/// The one place that makes the first admin and the first approver.
pub async fn start() -> Console {
    let (dir, server, out) = super::start_with("rita").await;
    let admin = AdminClient::new(&server.url(), &out.admin_token, None).unwrap();
    let rita = AdminClient::new(&server.url(), &out.approver_token, None).unwrap();
    Console { dir, server, admin, rita }
}

impl Console {
    pub fn client(&self, token: &str) -> AdminClient {
        AdminClient::new(&self.server.url(), token, None).unwrap()
    }

    /// `by` adds a person; their id and a client with their token.
    pub async fn add(
        &self,
        by: &AdminClient,
        name: &str,
        roles: &[&str],
    ) -> Result<(i64, AdminClient), ClientError> {
        let p: Value = by.post("/api/v1/people", &json!({"name": name, "roles": roles})).await?;
        Ok((p["id"].as_i64().unwrap(), self.client(p["token"].as_str().unwrap())))
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("console.db")).unwrap()
    }
}

pub async fn request(
    by: &AdminClient,
    user: &str,
    justification: &str,
) -> Result<i64, ClientError> {
    let a: Value = by
        .post(
            "/api/v1/approvals",
            &json!({"user": user, "mode": "specific-activities", "justification": justification}),
        )
        .await?;
    Ok(a["id"].as_i64().unwrap())
}

pub async fn decide(by: &AdminClient, id: i64, action: &str) -> Result<Value, ClientError> {
    by.post(&format!("/api/v1/approvals/{id}/{action}"), &json!({})).await
}

pub async fn confirm(by: &AdminClient, person: i64) -> Result<Value, ClientError> {
    by.post(&format!("/api/v1/people/{person}/roles/approver/confirm"), &json!({})).await
}

pub async fn grant(by: &AdminClient, person: i64, role: &str) -> Result<Value, ClientError> {
    by.post(&format!("/api/v1/people/{person}/roles/{role}"), &json!({})).await
}

/// The users of the signed bundle `GET /api/v1/policy` serves (read from the signed payload),
/// and its version.
pub async fn bundle(by: &AdminClient) -> Result<(u64, Vec<Value>), ClientError> {
    let m: Value = by.get("/api/v1/policy").await?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(m["signed"]["payload"].as_str().unwrap())
        .unwrap();
    let payload: Value = serde_json::from_slice(&bytes).unwrap();
    Ok((payload["version"].as_u64().unwrap(), payload["users"].as_array().unwrap().clone()))
}

pub fn principals(users: &[Value]) -> Vec<&str> {
    users.iter().map(|u| u["principal"].as_str().unwrap()).collect()
}

pub async fn approval(by: &AdminClient, id: i64) -> Value {
    let all: Vec<Value> = by.get("/api/v1/approvals").await.unwrap();
    all.into_iter().find(|a| a["id"] == json!(id)).expect("approval listed")
}

/// Audit entries whose target is `target`, as (actor, action, details).
pub async fn audit_of(by: &AdminClient, target: &str) -> Vec<(String, String, Value)> {
    let audit: Vec<Value> = by.get("/api/v1/audit").await.unwrap();
    audit
        .into_iter()
        .filter(|a| a["target"] == json!(target))
        .map(|a| {
            (
                a["actor"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
                a["details"].clone(),
            )
        })
        .collect()
}

pub fn refused(r: Result<Value, ClientError>, status: u16, what: &str) -> String {
    match r {
        Ok(v) => panic!("{what}: accepted, answered {v}"),
        Err(e) => {
            assert_eq!(e.status, status, "{what}: {}", e.message);
            e.message
        }
    }
}
