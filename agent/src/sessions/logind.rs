//! systemd-logind over the system bus.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use zbus::zvariant::OwnedObjectPath;

use super::{Session, SessionsState};

/// `(session id, uid, user name, seat id, object path)`, as `ListSessions` returns them.
type SessionRow = (String, u32, String, String, OwnedObjectPath);

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    fn list_sessions(&self) -> zbus::Result<Vec<SessionRow>>;

    #[zbus(signal)]
    fn session_new(&self, session_id: String, object_path: OwnedObjectPath) -> zbus::Result<()>;

    #[zbus(signal)]
    fn session_removed(&self, session_id: String, object_path: OwnedObjectPath)
        -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.login1.Session",
    default_service = "org.freedesktop.login1"
)]
trait LoginSession {
    #[zbus(property, name = "Id")]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property, name = "Type")]
    fn kind(&self) -> zbus::Result<String>;
    #[zbus(property, name = "Class")]
    fn class(&self) -> zbus::Result<String>;
    #[zbus(property, name = "Display")]
    fn display(&self) -> zbus::Result<String>;
    #[zbus(property, name = "Name")]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property, name = "User")]
    fn user(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
    #[zbus(property, name = "Active")]
    fn active(&self) -> zbus::Result<bool>;
    #[zbus(property, name = "LockedHint")]
    fn locked_hint(&self) -> zbus::Result<bool>;
    #[zbus(property, name = "Leader")]
    fn leader(&self) -> zbus::Result<u32>;
}

/// What logind says about one session, before we decide whether it is a capturable one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSession {
    pub id: String,
    /// `x11`, `wayland`, `tty`, `mir`, `unspecified`.
    pub kind: String,
    /// `user`, `greeter`, `lock-screen`, `background`.
    pub class: String,
    pub display: String,
    pub name: String,
    pub uid: u32,
    pub active: bool,
    pub locked: bool,
    pub leader: u32,
}

/// Why a logind session is not one we record.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    NotGraphical,
    NotAUserSession,
    /// Wayland without Xwayland display: the X11 capture path cannot see it.
    NoXDisplay,
}

/// Maps logind's view to a [`Session`]; `env` is the leader's relevant environment and `gid`
/// the user's primary group.
pub fn to_session(raw: RawSession, gid: u32, env: Vec<(String, String)>) -> Result<Session, Skip> {
    if raw.kind != "x11" && raw.kind != "wayland" {
        return Err(Skip::NotGraphical);
    }
    if raw.class != "user" {
        return Err(Skip::NotAUserSession);
    }
    if raw.display.is_empty() {
        return Err(Skip::NoXDisplay);
    }
    Ok(Session {
        id: raw.id,
        user: raw.name,
        uid: raw.uid,
        gid,
        display: raw.display,
        active: raw.active,
        locked: raw.locked,
        env,
    })
}

/// How often every session is re-read anyway: a safety net under the signals (a missed
/// `PropertiesChanged`, a logind that does not emit one).
pub const POLL: Duration = Duration::from_secs(2);

/// Follows logind on the system bus until the bus connection fails.
pub async fn follow(tx: &watch::Sender<SessionsState>) -> zbus::Result<()> {
    follow_on(zbus::Connection::system().await?, tx, POLL).await
}

/// Follows logind on `conn`, re-reading every session on `SessionNew` / `SessionRemoved`, on any
/// session's `PropertiesChanged` (locks, unlocks and user switches change `LockedHint` and
/// `Active`: capture stops at once, not at the next poll) and each `poll`, until a call fails
/// (the bus closed, logind left it). [`follow`] is this on the system bus; tests pass a bus of
/// their own and a poll of their choice.
#[doc(hidden)]
pub async fn follow_on(
    conn: zbus::Connection,
    tx: &watch::Sender<SessionsState>,
    poll: Duration,
) -> zbus::Result<()> {
    let manager = ManagerProxy::new(&conn).await?;
    let mut new = manager.receive_session_new().await?;
    let mut removed = manager.receive_session_removed().await?;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.login1")?
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path_namespace("/org/freedesktop/login1/session")?
        .build();
    let mut changed = zbus::MessageStream::for_match_rule(rule, &conn, None).await?;
    tracing::info!("following graphical sessions through logind");
    // The loop lists first; a poll whose first tick were immediate would only repeat that list.
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    loop {
        let sessions = list(&conn, &manager).await?;
        tx.send_if_modified(|state| {
            let next = SessionsState { sessions, problem: None };
            let changed = *state != next;
            *state = next;
            changed
        });
        tokio::select! {
            _ = poll.tick() => {}
            Some(_) = new.next() => {}
            Some(_) = removed.next() => {}
            Some(_) = changed.next() => {}
        }
    }
}

async fn list(conn: &zbus::Connection, manager: &ManagerProxy<'_>) -> zbus::Result<Vec<Session>> {
    let mut out = Vec::new();
    for (id, _uid, _user, _seat, path) in manager.list_sessions().await? {
        let proxy = LoginSessionProxy::builder(conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let raw = match read(&proxy).await {
            Ok(raw) => raw,
            // A session that ends while we read it is simply gone.
            Err(e) => {
                tracing::debug!(session = id, error = %e, "session vanished while listing");
                continue;
            }
        };
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(raw.uid)).ok().flatten();
        let Some(user) = user else { continue };
        let env = leader_env(raw.leader, raw.uid);
        match to_session(raw, user.gid.as_raw(), env) {
            Ok(s) => out.push(s),
            Err(skip) => tracing::trace!(session = id, ?skip, "not a capturable session"),
        }
    }
    Ok(out)
}

async fn read(p: &LoginSessionProxy<'_>) -> zbus::Result<RawSession> {
    Ok(RawSession {
        id: p.id().await?,
        kind: p.kind().await?,
        class: p.class().await?,
        display: p.display().await?,
        name: p.name().await?,
        uid: p.user().await?.0,
        active: p.active().await?,
        locked: p.locked_hint().await?,
        leader: p.leader().await?,
    })
}

/// `XAUTHORITY` and the session bus address from the session leader's environment, so the
/// worker can open the display and post a notice as that user.
fn leader_env(leader: u32, uid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{leader}/environ")).unwrap_or_default();
    let mut env = parse_environ(&raw, &["XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS"]);
    if !env.iter().any(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS") {
        let bus = format!("/run/user/{uid}/bus");
        if std::path::Path::new(&bus).exists() {
            env.push(("DBUS_SESSION_BUS_ADDRESS".into(), format!("unix:path={bus}")));
        }
    }
    env
}

/// The `keys` found in a NUL-separated `/proc/PID/environ` image.
pub fn parse_environ(raw: &[u8], keys: &[&str]) -> Vec<(String, String)> {
    raw.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, class: &str, display: &str) -> RawSession {
        RawSession {
            id: "3".into(),
            kind: kind.into(),
            class: class.into(),
            display: display.into(),
            name: "alice".into(),
            uid: 1000,
            active: true,
            locked: true,
            leader: 1234,
        }
    }

    #[test]
    fn maps_graphical_user_sessions_only() {
        let s = to_session(raw("x11", "user", ":0"), 1000, vec![]).unwrap();
        assert_eq!((s.user.as_str(), s.display.as_str(), s.uid), ("alice", ":0", 1000));
        assert!(!s.capturable(), "a locked session is not captured");
        assert_eq!(to_session(raw("tty", "user", ""), 1, vec![]), Err(Skip::NotGraphical));
        assert_eq!(to_session(raw("x11", "greeter", ":0"), 1, vec![]), Err(Skip::NotAUserSession));
        assert_eq!(to_session(raw("wayland", "user", ""), 1, vec![]), Err(Skip::NoXDisplay));
        assert!(to_session(raw("wayland", "user", ":1"), 1, vec![]).is_ok());
    }

    #[test]
    fn environ_parsing_keeps_only_asked_keys() {
        let raw = b"HOME=/home/a\0XAUTHORITY=/run/user/1000/gdm/Xauthority\0PATH=/bin\0junk\0";
        assert_eq!(
            parse_environ(raw, &["XAUTHORITY"]),
            vec![("XAUTHORITY".to_string(), "/run/user/1000/gdm/Xauthority".to_string())]
        );
    }

    #[tokio::test]
    async fn without_logind_the_failure_is_clear() {
        // No system bus (or no logind) here: following must fail with an error, not hang or panic.
        let (tx, _rx) = watch::channel(SessionsState::default());
        let r = tokio::time::timeout(Duration::from_secs(10), follow(&tx)).await;
        match r {
            Ok(Err(_)) => {}
            Ok(Ok(())) => panic!("follow returned without a bus"),
            Err(_) => eprintln!("a logind answered here; nothing to check"),
        }
    }
}
