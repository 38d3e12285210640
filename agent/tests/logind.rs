//! How the agent follows systemd-logind sessions, over a real D-Bus.
//!
//! Each test starts its own `dbus-daemon` and serves on it a **fake** `org.freedesktop.login1`
//! written here with zbus: a Manager with `ListSessions` and the `SessionNew` / `SessionRemoved`
//! signals, and Session objects with the properties the agent reads, emitting
//! `PropertiesChanged` when a test flips `Active` or `LockedHint`. The fake stands in for logind
//! only so that the agent's side — proxies, signal matching, property reads, the mapping to
//! [`SessionsState`] — runs for real against a bus; it says nothing about logind itself.
//!
//! Sessions belong to the user the tests run as, and their `Leader` is a real `sleep` process
//! started with a known environment, so the agent's user lookup (gid) and its read of the
//! leader's `/proc/PID/environ` happen for real.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearview_agent::sessions::logind::{follow_on, POLL};
use rearview_agent::sessions::{Session, SessionsState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

#[path = "support/bus.rs"]
mod bus;
use bus::Bus;

const MANAGER_PATH: &str = "/org/freedesktop/login1";
/// Every wait for the agent to publish something is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
/// A poll so long it never fires during a test: what changes then came from a signal.
const NO_POLL: Duration = Duration::from_secs(3600);
const XAUTHORITY: &str = "/run/user/test/gdm/Xauthority";
const USER_BUS: &str = "unix:path=/run/user/test/bus";

/// A session leader: a real process whose environment holds what a desktop session's would.
struct Leader(Child);

impl Leader {
    fn start() -> Leader {
        let child = Command::new("sleep")
            .arg("600")
            .env_clear()
            .env("HOME", "/nonexistent")
            .env("XAUTHORITY", XAUTHORITY)
            .env("DBUS_SESSION_BUS_ADDRESS", USER_BUS)
            .spawn()
            .unwrap();
        Leader(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(session id, uid, user name, seat id, object path)`, as logind's `ListSessions` returns them.
type SessionRow = (String, u32, String, String, OwnedObjectPath);

struct FakeManager {
    rows: Arc<Mutex<Vec<SessionRow>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl FakeManager {
    fn list_sessions(&self) -> Vec<SessionRow> {
        self.rows.lock().unwrap().clone()
    }

    #[zbus(signal)]
    async fn session_new(
        emitter: &SignalEmitter<'_>,
        session_id: &str,
        object_path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn session_removed(
        emitter: &SignalEmitter<'_>,
        session_id: &str,
        object_path: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}

#[derive(Clone)]
struct FakeSession {
    id: String,
    kind: String,
    class: String,
    display: String,
    name: String,
    uid: u32,
    active: bool,
    locked: bool,
    leader: u32,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl FakeSession {
    #[zbus(property, name = "Id")]
    fn id(&self) -> String {
        self.id.clone()
    }
    #[zbus(property, name = "Type")]
    fn kind(&self) -> String {
        self.kind.clone()
    }
    #[zbus(property, name = "Class")]
    fn class(&self) -> String {
        self.class.clone()
    }
    #[zbus(property, name = "Display")]
    fn display(&self) -> String {
        self.display.clone()
    }
    #[zbus(property, name = "Name")]
    fn name(&self) -> String {
        self.name.clone()
    }
    #[zbus(property, name = "User")]
    fn user(&self) -> (u32, OwnedObjectPath) {
        let path = format!("/org/freedesktop/login1/user/_{}", self.uid);
        (self.uid, ObjectPath::try_from(path).unwrap().into())
    }
    #[zbus(property, name = "Active")]
    fn active(&self) -> bool {
        self.active
    }
    #[zbus(property, name = "LockedHint")]
    fn locked_hint(&self) -> bool {
        self.locked
    }
    #[zbus(property, name = "Leader")]
    fn leader(&self) -> u32 {
        self.leader
    }
}

/// The object path logind gives session `id` (a leading digit is escaped, as `_3N`).
fn session_path(id: &str) -> OwnedObjectPath {
    let escaped = match id.chars().next() {
        Some(c) if c.is_ascii_digit() => format!("_3{id}"),
        _ => id.to_string(),
    };
    ObjectPath::try_from(format!("/org/freedesktop/login1/session/{escaped}")).unwrap().into()
}

/// The fake logind, owning `org.freedesktop.login1` on a [`Bus`].
struct Logind {
    conn: zbus::Connection,
    rows: Arc<Mutex<Vec<SessionRow>>>,
}

impl Logind {
    async fn serve(bus: &Bus, sessions: &[FakeSession]) -> Logind {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .serve_at(MANAGER_PATH, FakeManager { rows: rows.clone() })
            .unwrap()
            .name("org.freedesktop.login1")
            .unwrap()
            .build()
            .await
            .unwrap();
        let logind = Logind { conn, rows };
        for s in sessions {
            logind.add(s.clone()).await;
        }
        logind
    }

    /// Exports `s` and lists it, without announcing it.
    async fn add(&self, s: FakeSession) {
        let path = session_path(&s.id);
        let row = (s.id.clone(), s.uid, s.name.clone(), "seat0".to_string(), path.clone());
        assert!(self.conn.object_server().at(&path, s).await.unwrap());
        self.rows.lock().unwrap().push(row);
    }

    /// A login: exported, listed, then announced with `SessionNew`, in logind's order.
    async fn login(&self, s: FakeSession) {
        let id = s.id.clone();
        self.add(s).await;
        let emitter = SignalEmitter::new(&self.conn, MANAGER_PATH).unwrap();
        FakeManager::session_new(&emitter, &id, session_path(&id).into()).await.unwrap();
    }

    /// A logout: unlisted, unexported, then announced with `SessionRemoved`.
    async fn logout(&self, id: &str) {
        let path = session_path(id);
        self.rows.lock().unwrap().retain(|r| r.0 != id);
        assert!(self.conn.object_server().remove::<FakeSession, _>(&path).await.unwrap());
        let emitter = SignalEmitter::new(&self.conn, MANAGER_PATH).unwrap();
        FakeManager::session_removed(&emitter, id, path.into()).await.unwrap();
    }

    /// Changes a session's `Active` / `LockedHint` and emits `PropertiesChanged` as logind does.
    async fn set(&self, id: &str, active: bool, locked: bool) {
        let iface =
            self.conn.object_server().interface::<_, FakeSession>(session_path(id)).await.unwrap();
        let mut s = iface.get_mut().await;
        if s.active != active {
            s.active = active;
            s.active_changed(iface.signal_emitter()).await.unwrap();
        }
        if s.locked != locked {
            s.locked = locked;
            s.locked_hint_changed(iface.signal_emitter()).await.unwrap();
        }
    }
}

/// The user the tests run as: `(name, uid, primary gid)`.
fn me() -> (String, u32, u32) {
    let u = nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
    (u.name, u.uid.as_raw(), u.gid.as_raw())
}

fn session(id: &str, kind: &str, class: &str, display: &str, leader: &Leader) -> FakeSession {
    let (name, uid, _) = me();
    FakeSession {
        id: id.into(),
        kind: kind.into(),
        class: class.into(),
        display: display.into(),
        name,
        uid,
        active: true,
        locked: false,
        leader: leader.pid(),
    }
}

/// The agent following logind on `bus`, publishing into the returned receiver. The state starts
/// with a `problem` the agent clears with its first publication.
async fn follow(
    bus: &Bus,
    poll: Duration,
) -> (watch::Receiver<SessionsState>, JoinHandle<zbus::Result<()>>) {
    let conn = bus.connect().await;
    let before = SessionsState { sessions: Vec::new(), problem: Some("not started".into()) };
    let (tx, rx) = watch::channel(before);
    let agent = tokio::spawn(async move { follow_on(conn, &tx, poll).await });
    (rx, agent)
}

/// Waits (bounded) until the published state satisfies `ok`, and returns it.
async fn wait_for(
    rx: &mut watch::Receiver<SessionsState>,
    what: &str,
    ok: impl Fn(&SessionsState) -> bool,
) -> SessionsState {
    let waited = tokio::time::timeout(WAIT, async {
        rx.wait_for(|s| s.problem.is_none() && ok(s)).await.map(|s| s.clone())
    })
    .await;
    match waited {
        Ok(Ok(state)) => state,
        Ok(Err(_)) => panic!("the agent stopped following before {what}"),
        Err(_) => panic!("no {what} within {WAIT:?}; last published: {:#?}", *rx.borrow()),
    }
}

fn find<'a>(state: &'a SessionsState, id: &str) -> Option<&'a Session> {
    state.sessions.iter().find(|s| s.id == id)
}

fn sorted(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.sort();
    env
}

#[tokio::test]
async fn a_graphical_user_session_is_found_at_start_and_others_are_ignored() {
    let bus = Bus::start();
    let leader = Leader::start();
    let _logind = Logind::serve(
        &bus,
        &[
            session("c1", "tty", "user", "", &leader),
            session("c2", "x11", "greeter", ":1", &leader),
            session("c3", "wayland", "user", "", &leader),
            session("2", "x11", "user", ":0", &leader),
        ],
    )
    .await;
    let (mut rx, agent) = follow(&bus, NO_POLL).await;

    let state = wait_for(&mut rx, "session 2", |s| find(s, "2").is_some()).await;
    let (name, uid, gid) = me();
    let expected = Session {
        id: "2".into(),
        user: name,
        uid,
        gid,
        display: ":0".into(),
        active: true,
        locked: false,
        env: sorted(vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), USER_BUS.into()),
            ("XAUTHORITY".into(), XAUTHORITY.into()),
        ]),
    };
    let found = find(&state, "2").unwrap().clone();
    assert_eq!(Session { env: sorted(found.env.clone()), ..found }, expected);
    assert!(expected.capturable());
    assert_eq!(state.sessions.len(), 1, "tty, greeter and display-less wayland are not recorded");
    agent.abort();
}

#[tokio::test]
async fn sessions_come_and_go_with_session_new_and_session_removed() {
    let bus = Bus::start();
    let leader = Leader::start();
    let logind = Logind::serve(&bus, &[session("2", "x11", "user", ":0", &leader)]).await;
    // No poll during the test: whatever changes, a signal made the agent see it.
    let (mut rx, agent) = follow(&bus, NO_POLL).await;
    wait_for(&mut rx, "session 2", |s| find(s, "2").is_some()).await;

    logind.login(session("5", "x11", "user", ":1", &leader)).await;
    let state = wait_for(&mut rx, "session 5 after SessionNew", |s| find(s, "5").is_some()).await;
    assert_eq!(find(&state, "5").unwrap().display, ":1");
    assert!(find(&state, "2").is_some(), "the first session stays");

    logind.logout("2").await;
    let state =
        wait_for(&mut rx, "session 2 gone after SessionRemoved", |s| find(s, "2").is_none()).await;
    assert_eq!(state.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["5"]);
    agent.abort();
}

#[tokio::test]
async fn a_lock_and_a_user_switch_stop_capture_until_undone() {
    let bus = Bus::start();
    let leader = Leader::start();
    let logind = Logind::serve(&bus, &[session("2", "x11", "user", ":0", &leader)]).await;
    // No poll: what changes comes from the sessions' PropertiesChanged signals.
    let (mut rx, agent) = follow(&bus, NO_POLL).await;
    let capturable = |s: &SessionsState| find(s, "2").is_some_and(Session::capturable);
    wait_for(&mut rx, "session 2, capturable", capturable).await;

    logind.set("2", true, true).await;
    let state = wait_for(&mut rx, "the lock", |s| find(s, "2").is_some_and(|s| s.locked)).await;
    assert!(!find(&state, "2").unwrap().capturable(), "a locked session is not recorded");

    logind.set("2", true, false).await;
    wait_for(&mut rx, "the unlock", capturable).await;

    logind.set("2", false, false).await;
    let state =
        wait_for(&mut rx, "the switch away", |s| find(s, "2").is_some_and(|s| !s.active)).await;
    assert!(!find(&state, "2").unwrap().capturable(), "a switched-away session is not recorded");

    logind.set("2", true, false).await;
    wait_for(&mut rx, "the switch back", capturable).await;
    agent.abort();
}

/// Waits (bounded) for the agent to stop, which it must do with an error.
async fn stops_with_an_error(agent: JoinHandle<zbus::Result<()>>, why: &str) {
    match tokio::time::timeout(WAIT, agent).await {
        Ok(Ok(Err(e))) => eprintln!("{why}: follow_on failed with: {e}"),
        Ok(Ok(Ok(()))) => panic!("{why}: follow_on returned Ok"),
        Ok(Err(e)) => panic!("{why}: follow_on panicked: {e}"),
        Err(_) => panic!("{why}: follow_on still running after {WAIT:?}"),
    }
}

#[tokio::test]
async fn following_fails_when_logind_leaves_the_bus() {
    let bus = Bus::start();
    let leader = Leader::start();
    let logind = Logind::serve(&bus, &[session("2", "x11", "user", ":0", &leader)]).await;
    let (mut rx, agent) = follow(&bus, POLL).await;
    wait_for(&mut rx, "session 2", |s| find(s, "2").is_some()).await;

    logind.conn.close().await.unwrap();
    stops_with_an_error(agent, "logind gone").await;
}

#[tokio::test]
async fn following_fails_when_the_bus_goes_away() {
    let bus = Bus::start();
    let leader = Leader::start();
    let _logind = Logind::serve(&bus, &[session("2", "x11", "user", ":0", &leader)]).await;
    let (mut rx, agent) = follow(&bus, POLL).await;
    wait_for(&mut rx, "session 2", |s| find(s, "2").is_some()).await;

    drop(bus);
    stops_with_an_error(agent, "bus gone").await;
}
