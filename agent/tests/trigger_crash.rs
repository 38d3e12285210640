//! An accepted trigger yields exactly one clip, whatever moment the daemon dies at.
//!
//! The real console (in process, on 127.0.0.1:0, its SQLite file in a temp directory), the real
//! `rearviewd` enrolled with it and recording an Xvfb display, and two ways of killing the
//! daemon while it accepts a trigger:
//!
//! * the debug-build fault points (`REARVIEW_FAULT=trigger:<step>`), which abort the process at
//!   each step of accepting a trigger, as a `kill -9` there would;
//! * a real `kill -9` once the console holds the acknowledgement, while `rearview doctor` waits
//!   on a console probe that a proxy holds open.
//!
//! After the restart the console holds exactly one clip for the trigger, and the same signed
//! trigger sent again opens no second one.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rearview_agent::admin::{Client, Request};
use rearview_agent::status::{ClipReport, StatusReport};
use rearview_console::client::AdminClient;
use rearview_console::{Server, ServerConfig, ServerHandle};
use rearview_testkit::xvfb::Xvfb;
use serde_json::{json, Value};

/// The console with an admin and an approver, on its own runtime (the tests are blocking).
struct Console {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    _server: ServerHandle,
    url: String,
    admin: AdminClient,
    approver: AdminClient,
}

impl Console {
    fn start() -> Console {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out =
            rearview_console::init_with_approver(dir.path(), "tenant-a", "ivan", "rita").unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let server = rt.block_on(Server::start(ServerConfig::plain(dir.path(), listen))).unwrap();
        let url = server.url();
        let admin = AdminClient::new(&url, &out.admin_token, None).unwrap();
        // init's approver: an approver an admin adds waits for a second person's confirmation.
        let approver = AdminClient::new(&url, &out.approver_token, None).unwrap();
        let console = Console { rt, dir, _server: server, url, admin, approver };
        console.put(
            "/api/v1/policy/settings",
            json!({"capture": {"enabled": true, "fps": 2, "segment_secs": 1}}),
        );
        console
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.rt.block_on(self.admin.post(path, &body)).unwrap_or_else(|e| panic!("{path}: {e:?}"))
    }

    fn put(&self, path: &str, body: Value) -> Value {
        self.rt.block_on(self.admin.put(path, &body)).unwrap_or_else(|e| panic!("{path}: {e:?}"))
    }

    /// Approves capture of `user`: requested by the admin, approved by the approver.
    fn approve(&self, user: &str) {
        let req = self.post(
            "/api/v1/approvals",
            json!({"user": user, "mode": "specific-activities", "justification": "case 4711"}),
        );
        let id = req["id"].as_i64().unwrap();
        let path = format!("/api/v1/approvals/{id}/approve");
        let _: Value = self.rt.block_on(self.approver.post(&path, &json!({}))).unwrap();
    }

    fn enrollment_token(&self) -> String {
        self.post("/api/v1/enrollment-tokens", json!({"ttl_secs": 600}))["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Issues a trigger for `user` around now; returns its id.
    fn trigger(&self, user: &str, before: u32, after: u32) -> String {
        let now = rearview_uploader::now_ms();
        let issued = self.post(
            "/api/v1/triggers",
            json!({"user": user, "event_time": now, "before": before, "after": after, "reason": "roadmap.docx"}),
        );
        issued["trigger_ids"][0].as_str().unwrap().to_owned()
    }

    fn clips_of(&self, trigger_id: &str) -> Vec<Value> {
        let all: Vec<Value> = self.rt.block_on(self.admin.get("/api/v1/clips")).unwrap();
        all.into_iter().filter(|c| c["trigger_id"] == json!(trigger_id)).collect()
    }

    /// Waits for the complete clip of `trigger_id`; panics if there is none or more than one.
    fn one_complete_clip(&self, trigger_id: &str, why: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let clips = self.clips_of(trigger_id);
            assert!(clips.len() <= 1, "{why}: {} clips for trigger {trigger_id}", clips.len());
            if let Some(c) = clips.into_iter().find(|c| c["complete"] == json!(true)) {
                return c;
            }
            assert!(Instant::now() < deadline, "{why}: no complete clip for trigger {trigger_id}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("console.db")).unwrap()
    }

    /// Whether the device acknowledged `trigger_id` (the console then stops sending it).
    fn acked(&self, trigger_id: &str) -> bool {
        self.db()
            .query_row("SELECT acked_ms FROM triggers WHERE id = ?1", [trigger_id], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .unwrap()
            .is_some()
    }

    /// The signed envelope the console sent for `trigger_id` (JSON text).
    fn envelope(&self, trigger_id: &str) -> String {
        self.db()
            .query_row("SELECT signed_json FROM triggers WHERE id = ?1", [trigger_id], |r| r.get(0))
            .unwrap()
    }
}

fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap().name
}

/// The real daemon, enrolled with `server`, recording its own user's Xvfb display.
struct Agent {
    dir: tempfile::TempDir,
    _xvfb: Xvfb,
    daemon: Option<Child>,
    token: Option<String>,
}

impl Agent {
    fn new(server: &str, token: String) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let xvfb = Xvfb::start(320, 240).unwrap();
        let config = format!(
            "server_url = \"{server}\"\ndata_dir = \"{data}\"\n[cli]\nsocket = \"{sock}\"\n\
             [capture]\ndisplay = \"{display}\"\n[indicators]\nwatched_folders = []\n",
            data = dir.path().join("data").display(),
            sock = dir.path().join("admin.sock").display(),
            display = xvfb.display(),
        );
        std::fs::write(dir.path().join("agent.toml"), config).unwrap();
        Agent { dir, _xvfb: xvfb, daemon: None, token: Some(token) }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Starts the daemon (aborting at `fault`, if given) and waits until capture runs.
    fn start(&mut self, fault: Option<&str>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rearviewd"));
        cmd.process_group(0)
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .env("RUST_LOG", "info")
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .env_remove("REARVIEW_FAULT")
            .stdin(Stdio::null());
        if let Some(token) = self.token.take() {
            cmd.arg("--enroll-token").arg(token);
        }
        if let Some(fault) = fault {
            cmd.env("REARVIEW_FAULT", fault);
        }
        self.daemon = Some(cmd.spawn().unwrap());
        self.wait_for("capture", 90, |s| {
            s.sessions.first().is_some_and(|x| x.capture == "capturing") && s.ring.segments > 0
        });
    }

    fn status(&self) -> Option<StatusReport> {
        let v = Client::new(self.socket()).call(&Request::Status).ok()?;
        serde_json::from_value(v).ok()
    }

    fn wait_for(&mut self, what: &str, secs: u64, ok: impl Fn(&StatusReport) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.status().is_some_and(|s| ok(&s)) {
                return;
            }
            if let Some(exit) = self.daemon.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("daemon exited ({exit}) while waiting for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the daemon to end by itself (at a fault point).
    fn wait_exit(&mut self, why: &str) -> ExitStatus {
        let child = self.daemon.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                self.daemon = None;
                return exit;
            }
            assert!(Instant::now() < deadline, "{why}: the daemon is still running");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(&mut self) {
        let mut child = self.daemon.take().unwrap();
        child.kill().unwrap();
        let _ = child.wait();
    }

    fn clips_of(&self, trigger_id: &str) -> Vec<ClipReport> {
        let v = Client::new(self.socket()).call(&Request::Clips).unwrap();
        let clips: Vec<ClipReport> = serde_json::from_value(v).unwrap();
        clips.into_iter().filter(|c| c.trigger_id.as_deref() == Some(trigger_id)).collect()
    }

    /// Sends `envelope` again over the admin socket, as an operator replaying it would.
    fn resend(&self, envelope: &str) -> Value {
        Client::new(self.socket())
            .call(&Request::Trigger { envelope: envelope.to_owned() })
            .unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// After the restart: one clip on the console, one in the daemon's book, and a re-sent trigger
/// changes neither.
fn exactly_one_clip(console: &Console, agent: &Agent, trigger_id: &str, why: &str) {
    let clip = console.one_complete_clip(trigger_id, why);
    assert_eq!(agent.clips_of(trigger_id).len(), 1, "{why}: {:?}", agent.clips_of(trigger_id));
    let answer = agent.resend(&console.envelope(trigger_id));
    assert_eq!(agent.clips_of(trigger_id).len(), 1, "{why}: re-sent ({answer}) it opened another");
    assert_eq!(console.clips_of(trigger_id).len(), 1, "{why}: {clip}");
}

#[test]
fn an_accepted_trigger_survives_a_crash_at_every_step() {
    let console = Console::start();
    console.approve(&me());
    let mut agent = Agent::new(&console.url, console.enrollment_token());
    agent.start(None);
    for step in ["trigger:before-intent", "trigger:after-intent", "trigger:after-seen"] {
        agent.kill9();
        agent.start(Some(step));
        let trigger_id = console.trigger(&me(), 2, 1);
        let exit = agent.wait_exit(&format!("fault point {step}"));
        assert!(!exit.success(), "{step}: {exit}");
        agent.start(None);
        exactly_one_clip(&console, &agent, &trigger_id, step);
        assert!(console.acked(&trigger_id), "{step}: never acknowledged");
    }
}

/// What the proxy does with a connection: `GET /healthz` (doctor's clock probe) is held open
/// with one more byte of a header that never ends now and then, never answered; everything
/// else goes to the console.
async fn proxy_conn(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    held: mpsc::Sender<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = vec![0u8; 64 * 1024];
    let Ok(n) = client.read(&mut first).await else { return };
    if first[..n].starts_with(b"GET /healthz ") {
        let _ = held.send(());
        let _ = client.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ").await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if client.write_all(b"a").await.is_err() {
                return;
            }
        }
    }
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
    if server.write_all(&first[..n]).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// While `rearview doctor` waits on a console that does not answer its probe, a trigger is
/// accepted and acknowledged; the daemon is then killed. The acknowledgement means the console
/// never sends it again, so the clip must already be recorded.
#[test]
fn a_trigger_acknowledged_while_doctor_waits_survives_kill_9() {
    let console = Console::start();
    console.approve(&me());
    let upstream: SocketAddr = console.url.trim_start_matches("http://").parse().unwrap();
    let listener = console.rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let (held_tx, held) = mpsc::channel();
    console.rt.spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(proxy_conn(conn, upstream, held_tx.clone()));
        }
    });
    let mut agent = Agent::new(&proxy, console.enrollment_token());
    agent.start(None);

    let socket = agent.socket();
    let doctor = std::thread::spawn(move || Client::new(socket).call(&Request::Doctor));
    held.recv_timeout(Duration::from_secs(60)).expect("doctor never probed the console");
    let trigger_id = console.trigger(&me(), 2, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !console.acked(&trigger_id) {
        assert!(Instant::now() < deadline, "the trigger was never acknowledged");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill9();
    let _ = doctor.join();

    agent.start(None);
    exactly_one_clip(&console, &agent, &trigger_id, "killed after the acknowledgement");
}
