//! A private D-Bus for tests: a real `dbus-daemon` (Debian package dbus-daemon) on a socket in
//! a temp directory, and a desktop notification service written here that records what it is
//! asked to show. Shared by the test binaries that talk D-Bus (each uses part of it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A private `dbus-daemon`, killed on drop.
pub struct Bus {
    daemon: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .arg(format!("--address=unix:path={}", dir.path().join("bus").display()))
            .stdout(Stdio::piped())
            // It warns that it cannot raise its fd limit when not started by init.
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) must be installed");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().to_string();
        assert!(!address.is_empty(), "dbus-daemon printed no address; run it by hand to see why");
        Bus { daemon, address, _dir: dir }
    }

    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str()).unwrap().build().await.unwrap()
    }

    /// Ends the bus now (everyone on it loses their connection).
    pub fn kill(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One notice as the notification service received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub app: String,
    pub summary: String,
    pub body: String,
    pub urgency: Option<u8>,
}

/// What the notification service was asked to show, in order.
pub type Shown = Arc<Mutex<Vec<Notice>>>;

struct Recorder(Shown);

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let urgency = hints.get("urgency").and_then(|v| u8::try_from(v).ok());
        let mut shown = self.0.lock().unwrap();
        shown.push(Notice { app: app_name, summary, body, urgency });
        shown.len() as u32
    }
}

/// Serves `org.freedesktop.Notifications` on `bus`; keep the connection alive while it should.
pub async fn notification_service(bus: &Bus) -> (zbus::Connection, Shown) {
    let shown: Shown = Arc::default();
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at("/org/freedesktop/Notifications", Recorder(shown.clone()))
        .unwrap()
        .build()
        .await
        .unwrap();
    (conn, shown)
}
