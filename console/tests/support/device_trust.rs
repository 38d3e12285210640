//! The device-trust tests' console (`console/tests/device_trust.rs`, and its uploader half in
//! `tests/tests/protocol/device_trust.rs`): devices enrolled with raw HTTP (a key pair made
//! here), so manifests and uploads can be forged the way a hostile device would, and segment
//! uploads held open mid-body on a raw TCP socket.

use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::{IngestLimits, Server, ServerConfig, ServerHandle};
use rearview_testkit::chain::DeviceChains;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A console in a temp directory with its first admin (ivan) and an approver (rita).
pub struct Console {
    pub dir: tempfile::TempDir,
    pub server: ServerHandle,
    pub url: String,
    pub admin: AdminClient,
    pub admin_token: String,
    pub approver: AdminClient,
    pub http: reqwest::Client,
}

/// An enrolled device: its token and id, and the chains its enrolled key signs (every
/// manifest made by [`manifest`] carries the entries and notes that cover it).
pub struct Device {
    pub token: String,
    pub id: String,
    pub chains: std::sync::Mutex<DeviceChains>,
    /// The tenant's X25519 key (hex) the device seals segments to.
    pub sealing_public_key: String,
}

impl Device {
    /// Fills `chain` and `absent` of `manifest` (see [`DeviceChains::sign_manifest`]).
    pub fn sign(&self, manifest: &mut Value) {
        self.chains.lock().unwrap().sign_manifest(manifest);
    }

    /// `f` with the device's enrolled key, to sign entries by hand.
    pub fn with_key<T>(&self, f: impl FnOnce(&rearview_protocol::chain::Signer) -> T) -> T {
        f(self.chains.lock().unwrap().signer())
    }
}

impl Console {
    pub async fn start() -> Console {
        Console::start_with(IngestLimits::default()).await
    }

    pub async fn start_with(ingest: IngestLimits) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let out = super::backend::init_tenant(dir.path(), "rita");
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

    /// A user's approval in force (see [`super::approve`]); its id.
    pub async fn approve(&self, user: &str, mode: &str) -> i64 {
        super::approve(&self.admin, &self.approver, user, mode).await
    }

    pub async fn settings(&self, settings: Value) {
        let _: Value = self.admin.put("/api/v1/policy/settings", &settings).await.unwrap();
    }

    pub async fn enroll(&self) -> Device {
        enroll_at(&self.url, &self.admin).await
    }

    /// `PUT /api/v1/device/clips/{id}`: the status and the JSON answer.
    pub async fn put_manifest(&self, dev: &Device, manifest: &Value) -> (u16, Value) {
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
    pub async fn expect(&self, dev: &Device, manifest: &Value, want: u16) -> Value {
        let (status, body) = self.put_manifest(dev, manifest).await;
        assert_eq!(status, want, "{}: {body}", manifest["clip_id"]);
        body
    }

    pub async fn put_segment(&self, dev: &Device, bytes: &[u8]) -> reqwest::Response {
        self.http
            .put(format!("{}/api/v1/device/segments/{}", self.url, sha(bytes)))
            .bearer_auth(&dev.token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn activity(&self, dev: &Device, events: Value) -> (u16, Value) {
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
    pub async fn trigger(&self, body: Value) -> (u16, String, Value) {
        match self.admin.post::<_, Value>("/api/v1/triggers", &body).await {
            Ok(v) => (200, String::new(), v),
            Err(e) => (e.status, e.message, Value::Null),
        }
    }

    pub async fn audit_actions(&self, target: &str) -> Vec<(String, Value)> {
        let audit: Vec<Value> = self.admin.get("/api/v1/audit?limit=1000").await.unwrap();
        audit
            .into_iter()
            .filter(|a| a["target"] == json!(target))
            .map(|a| (a["action"].as_str().unwrap().to_owned(), a["details"].clone()))
            .collect()
    }

    /// The console's database, for raw SQL beside it (either backend).
    pub fn db(&self) -> super::backend::TestDb {
        super::backend::TestDb::of(self.dir.path())
    }
}

/// Enrolls a device by hand (see [`super::enroll`]).
pub async fn enroll_at(url: &str, admin: &AdminClient) -> Device {
    let e = super::enroll_keyed(url, admin).await;
    let chains = std::sync::Mutex::new(super::Enrolled::chains(e.key, &e.tenant_id, &e.id));
    Device { token: e.token, id: e.id, chains, sealing_public_key: e.sealing_public_key }
}

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// A segment entry of a manifest for `bytes` recorded over `[start, end)`.
pub fn seg(bytes: &[u8], start: i64, end: i64) -> Value {
    json!({"sha256": sha(bytes), "size": bytes.len(), "start_ms": start, "end_ms": end})
}

/// A closed manifest of `dev`, with the chain entries (signed by its enrolled key) that cover
/// its segments.
pub fn manifest(
    clip_id: &str,
    dev: &Device,
    user: &str,
    mode: &str,
    trigger: Option<&str>,
    window: (i64, i64),
    segments: Vec<Value>,
) -> Value {
    let mut m = json!({
        "clip_id": clip_id, "trigger_id": trigger, "mode": mode, "user": user,
        "device_id": dev.id, "start_ms": window.0, "end_ms": window.1,
        "segments": segments, "missing": [],
    });
    dev.sign(&mut m);
    m
}

/// An untriggered clip of `dev` whose one segment, `bytes`, was recorded over its whole window.
pub fn one_segment(
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
pub fn bytes(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add((i % 251) as u8)).collect()
}

// ---- finding 6: device-supplied clip fields ----------------------------------------------

/// Writes a segment upload's request head announcing `total` body bytes, and `first` of them.
pub async fn start_upload(
    url: &str,
    dev: &Device,
    sha: &str,
    total: usize,
    first: &[u8],
) -> TcpStream {
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
pub async fn read_answer(s: &mut TcpStream) -> Option<(u16, String, String)> {
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

pub fn incoming_files(c: &Console) -> Vec<(std::path::PathBuf, u64)> {
    // Where this console's blob store keeps uploads in flight (DATA/blobs/.incoming for files,
    // DATA/incoming for a bucket).
    let dir = c.server.store().blobs().incoming_dir();
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten().map(|e| (e.path(), e.metadata().unwrap().len())).collect()
}
