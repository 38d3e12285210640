//! What the protocol tests share: a real console on 127.0.0.1 (started by the one in-process
//! launcher, `console_support`, and restartable on the same port), people with roles, test
//! devices that sign their chains as the daemon does ([`EnqueueChained`]), and a
//! fault-injecting TCP proxy between device and console.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_console::{Server, ServerConfig, ServerHandle};
use rearview_protocol::chain::{Appended, ChainHead, SegmentRef, Stream};
use rearview_protocol::ChainEntry;
pub use rearview_testkit::eventually;
use rearview_uploader::spool::Enqueued;
use rearview_uploader::{
    Command, NewClip, NewSegment, SegmentBytes, StreamKey, UploadError, Uploader, UploaderConfig,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const USER: &str = "alice";

/// A console in a temp directory, with an admin and an approver.
pub struct TestConsole {
    pub dir: tempfile::TempDir,
    pub server: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub admin: AdminClient,
    pub admin_token: String,
    pub approver: AdminClient,
}

impl TestConsole {
    pub async fn start() -> TestConsole {
        // The first approver (rita) is made by init: a second person with her own token.
        let (dir, server, out) = crate::console_support::start_with("rita").await;
        let addr = server.addr();
        let admin = AdminClient::new(&server.url(), &out.admin_token, None).unwrap();
        let approver = AdminClient::new(&server.url(), &out.approver_token, None).unwrap();
        TestConsole {
            dir,
            server: Some(server),
            addr,
            admin,
            admin_token: out.admin_token,
            approver,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server at once (connections cut), as a crash would.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    /// Starts it again on the same address and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match Server::start(ServerConfig::plain(self.dir.path(), self.addr)).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("console did not restart: {last:?}");
    }

    /// Turns capture on, sets `settings` (merged over {capture: enabled}), and approves `user`.
    pub async fn approve(&self, user: &str, mode: &str) {
        let req: Value = self
            .admin
            .post(
                "/api/v1/approvals",
                &json!({"user": user, "mode": mode, "justification": "case 4711"}),
            )
            .await
            .unwrap();
        let id = req["id"].as_i64().unwrap();
        let _: Value = self
            .approver
            .post(&format!("/api/v1/approvals/{id}/approve"), &json!({}))
            .await
            .unwrap();
    }

    pub async fn settings(&self, settings: Value) {
        let _: Value = self.admin.put("/api/v1/policy/settings", &settings).await.unwrap();
    }

    pub async fn enrollment_token(&self, ttl_secs: i64) -> String {
        let t: Value = self
            .admin
            .post("/api/v1/enrollment-tokens", &json!({"ttl_secs": ttl_secs}))
            .await
            .unwrap();
        t["token"].as_str().unwrap().to_owned()
    }

    pub async fn clips(&self) -> Vec<Value> {
        self.admin.get("/api/v1/clips").await.unwrap()
    }

    pub async fn clip(&self, id: &str) -> Value {
        self.admin.get(&format!("/api/v1/clips/{id}")).await.unwrap()
    }

    /// Stored segments, read from the console's database: (device, sha256, size).
    pub fn stored_segments(&self) -> Vec<(String, String, i64)> {
        let conn = rusqlite::Connection::open(self.data().join("console.db")).unwrap();
        let mut stmt =
            conn.prepare("SELECT device_id, sha256, size FROM segments ORDER BY sha256").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Blob files on disk, all devices.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out)
                } else {
                    out.push(e.path())
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data().join("blobs"), &mut out);
        out
    }
}

/// A device: an uploader in its own temp directory.
pub struct TestDevice {
    pub dir: tempfile::TempDir,
    pub uploader: Arc<Uploader>,
}

pub fn uploader_config(server: &str, dir: &Path) -> UploaderConfig {
    let mut c = UploaderConfig::new(server, dir);
    c.backoff_base = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(3);
    c
}

impl TestDevice {
    pub async fn enroll(console: &TestConsole, server: &str) -> TestDevice {
        let dir = tempfile::tempdir().unwrap();
        let uploader = Uploader::open(uploader_config(server, dir.path())).unwrap();
        let token = console.enrollment_token(600).await;
        uploader.enroll(&token, "test-host").await.unwrap();
        TestDevice { dir, uploader }
    }
}

/// Waits for a command matching `want`, up to 10 s (a generous bound, not a timing claim).
/// Every trigger passed over is recorded, as the agent records its clip, so the uploader goes
/// on to mark it seen and acknowledge it.
pub async fn next_command(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Command>,
    want: impl Fn(&Command) -> bool,
) -> Command {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no matching command within 10 s")
            .expect("channel closed");
        if let Command::Trigger(delivery) = &c {
            delivery.recorded();
        }
        if want(&c) {
            return c;
        }
    }
}

/// Accepts `message` directly (not from the stream) while standing in for the agent: a
/// trigger delivered on `rx` meanwhile is recorded. Returns the result and whether one was.
pub async fn accept_recording(
    uploader: &Uploader,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Command>,
    message: &rearview_protocol::TriggerMessage,
) -> (Result<(), rearview_uploader::UploadError>, bool) {
    let accept = uploader.accept_trigger(message);
    tokio::pin!(accept);
    let mut delivered = false;
    loop {
        tokio::select! {
            result = &mut accept => return (result, delivered),
            Some(c) = rx.recv() => {
                if let Command::Trigger(delivery) = c {
                    delivery.recorded();
                    delivered = true;
                }
            }
        }
    }
}

/// `n` distinct pseudo-sealed segments of `size` bytes (the console never opens them).
pub fn segments(n: usize, size: usize, start_ms: i64) -> Vec<(NewSegment, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut bytes = vec![0u8; size];
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = (rand::random::<u8>()).wrapping_add((i + j) as u8);
            }
            let seg = NewSegment {
                start_ms: start_ms + i as i64 * 1000,
                end_ms: start_ms + (i as i64 + 1) * 1000,
                bytes: SegmentBytes::Bytes(bytes.clone()),
            };
            (seg, bytes)
        })
        .collect()
}

/// A clip of [`USER`] around `n` one-second segments recorded from about now (see
/// [`segments`]): a triggered one (`specific-activities`) for `trigger_id`, else an
/// all-activities upload. The console checks both against an approval in force (the test
/// approves first) and an untriggered clip's window against the policy's bounds.
pub fn new_clip(clip_id: &str, trigger_id: Option<String>, n: usize) -> NewClip {
    let start = rearview_uploader::now_ms() - 10_000;
    let mode = if trigger_id.is_some() {
        rearview_protocol::CaptureMode::SpecificActivities
    } else {
        rearview_protocol::CaptureMode::AllActivities
    };
    NewClip {
        clip_id: clip_id.to_owned(),
        trigger_id,
        mode,
        user: USER.into(),
        start_ms: start,
        end_ms: start + (n as i64 + 20) * 1000,
        missing: vec![],
        open: false,
        chain: vec![],
        absent: vec![],
    }
}

/// What the daemon does before it hands a clip to the uploader: every segment gets its chain
/// entry, signed with the enrolled key (`Uploader::chain_signer`) and stored through the
/// spool's chain API, and the clip carries its segments' entries. One chain per user (its
/// session id is the user's name, monitor 0); a segment that starts before the chain's last
/// entry ends (tests send clips in any time order) starts a new chain in a session of its own.
/// A segment that already has an entry in the spool (shared with a clip before) keeps it.
pub trait EnqueueChained {
    fn enqueue_chained(
        &self,
        clip: NewClip,
        segments: Vec<NewSegment>,
    ) -> Result<Enqueued, UploadError>;
}

impl EnqueueChained for Uploader {
    fn enqueue_chained(
        &self,
        mut clip: NewClip,
        segments: Vec<NewSegment>,
    ) -> Result<Enqueued, UploadError> {
        for e in chain_entries(self, &clip.user, &segments)? {
            if !clip.chain.iter().any(|c| c.chain == e.chain && c.seq == e.seq) {
                clip.chain.push(e);
            }
        }
        self.enqueue_clip(clip, segments)
    }
}

/// The chain entries of `segments` of `user`, as [`EnqueueChained`] signs and stores them (a
/// segment that has one already keeps it), for tests that write manifests by hand.
pub fn chain_entries(
    up: &Uploader,
    user: &str,
    segments: &[NewSegment],
) -> Result<Vec<ChainEntry>, UploadError> {
    let mut out: Vec<ChainEntry> = Vec::new();
    for s in segments {
        let bytes = s.bytes.read()?;
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        // A really sealed segment's entry names its id; stand-in bytes get one from the hash.
        let id = match rearview_capture::seal::SealedHeader::parse(&bytes) {
            Ok(header) => header.segment_id.to_string(),
            Err(_) => rearview_testkit::chain::segment_id(&sha),
        };
        drop(bytes);
        let mut entries = up.spool().chain_entries_for_segment(&id)?;
        if entries.is_empty() {
            entries.push(sign_segment(up, user, SegmentRef { id, sha256: sha }, s)?);
        }
        for e in entries {
            if !out.iter().any(|c| c.chain == e.chain && c.seq == e.seq) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Appends `segment`'s entry to `user`'s chain in the spool (see [`EnqueueChained`]).
fn sign_segment(
    up: &Uploader,
    user: &str,
    segment: SegmentRef,
    s: &NewSegment,
) -> Result<ChainEntry, UploadError> {
    let signer = up.chain_signer().ok_or(UploadError::NotEnrolled)?;
    let identity = up.identity().ok_or(UploadError::NotEnrolled)?;
    let span = (s.start_ms * 1000, s.end_ms * 1000);
    let mut key = StreamKey { session: user.into(), monitor: 0 };
    let mut head = up.spool().chain_head(&key)?;
    if head.as_ref().and_then(|h| h.last_to_utc_micros).is_some_and(|end| end > span.0) {
        key.session = format!("{user}-{}", rand::random::<u64>());
        head = None;
    }
    let mut head = match head {
        Some(h) => h,
        None => ChainHead::new()?,
    };
    let stream = Stream {
        tenant: identity.tenant_id.clone(),
        device: identity.device_id.clone(),
        user: user.into(),
        session: key.session.clone(),
        monitor: 0,
    };
    let entry = head.append(&signer, &stream, span, Appended::Segment(segment))?;
    up.spool().append_chain(&key, &head, std::slice::from_ref(&entry))?;
    Ok(entry)
}

/// How the proxy treats new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward both ways.
    Pass = 0,
    /// Answer every request with 503 without asking the console.
    Fail = 1,
    /// Accept and read, never answer.
    Hang = 2,
    /// Answer 200 with a body that stops half-way (a console dying mid-answer).
    CutBody = 3,
    /// Answer 200 with a whole body that is not JSON (a broken middlebox).
    Garbage = 4,
}

/// A TCP proxy in front of the console that can fail, hang, throttle and cut connections.
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Microseconds of delay per 16 KiB forwarded device → console (0: none).
    throttle_us: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let throttle_us = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (mode, throttle_us, conns) = (mode.clone(), throttle_us.clone(), conns.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else { return };
                    let m = mode.load(Ordering::SeqCst);
                    let t = throttle_us.clone();
                    let task = tokio::spawn(async move {
                        match m {
                            0 => forward(client, upstream, t).await,
                            1 => fail(client).await,
                            2 => hang(client).await,
                            3 => answer_200(client, Some(400), r#"{"clip_id":"#).await,
                            _ => answer_200(client, None, "<html>proxy error</html>").await,
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            })
        };
        FaultProxy { addr, mode, throttle_us, conns, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New mode for new connections; existing ones are cut so the change applies at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.cut();
    }

    pub fn throttle(&self, us_per_16k: u64) {
        self.throttle_us.store(us_per_16k, Ordering::SeqCst);
    }

    pub fn cut(&self) {
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, throttle_us: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    splice(client, server, throttle_us).await
}

/// Copies both ways between `client` and `server` until either side ends, delaying
/// `throttle_us` per read from the client.
async fn splice(client: TcpStream, server: TcpStream, throttle_us: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = throttle_us.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_micros(delay)).await;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! { _ = up => {}, _ = down => {} }
}

/// A round-robin TCP balancer in front of several consoles, as an operator's reverse proxy
/// in front of replicas: each new connection goes to the next upstream in turn, passing over
/// one that refuses to connect (a replica that died), so devices that reconnect land on a
/// live one.
pub struct Balancer {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(upstreams: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let conns = conns.clone();
            tokio::spawn(async move {
                let mut turn = 0usize;
                loop {
                    let Ok((client, _)) = listener.accept().await else { return };
                    let first = turn;
                    turn += 1;
                    let upstreams = upstreams.clone();
                    let task = tokio::spawn(async move {
                        for k in 0..upstreams.len() {
                            let to = upstreams[(first + k) % upstreams.len()];
                            if let Ok(server) = TcpStream::connect(to).await {
                                splice(client, server, Arc::default()).await;
                                return;
                            }
                        }
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|t| !t.is_finished());
                    conns.push(task);
                }
            })
        };
        Balancer { addr, conns, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

async fn fail(mut client: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    // Read the request head before answering, as a real failing server would.
    let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
    let body = r#"{"error":"injected failure"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Answers 200 announcing `length` body bytes (default: all of `body`) and sends `body`, then
/// closes.
async fn answer_200(mut client: TcpStream, length: Option<usize>, body: &str) {
    let length = length.unwrap_or(body.len());
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{body}"
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}

async fn hang(mut client: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}
