//! Graphical sessions: who is logged in on which X display.
//!
//! On a desktop the source of truth is systemd-logind on the system bus
//! (`org.freedesktop.login1`): [`logind`] lists sessions, reads each one's `Type`, `Class`,
//! `Display`, `Name`, `User`, `Active`, `LockedHint` and `Leader`, and re-lists at once on
//! `SessionNew`, `SessionRemoved` and any session's `PropertiesChanged` (locks, unlocks and
//! user switches), with a short poll as a safety net. Tests and the demo configure a fixed display
//! instead; its session belongs to the user the daemon runs as.
//!
//! When logind cannot be reached the watcher says so once, clearly, and falls back to the fixed
//! display if one is configured — otherwise there are no sessions and health reports why.

use std::time::Duration;

use rearview_config::FixedSession;
use tokio::sync::watch;

pub mod logind;

/// One graphical session a capture worker could record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// logind's session id, or `fixed:<display>`.
    pub id: String,
    /// Login name; the policy names users by it.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// X display the worker connects to (`":0"`).
    pub display: String,
    /// In the foreground of its seat (a switched-away session is not active).
    pub active: bool,
    pub locked: bool,
    /// Environment the worker needs to reach the display and the user's bus
    /// (`XAUTHORITY`, `DBUS_SESSION_BUS_ADDRESS`), read from the session leader.
    pub env: Vec<(String, String)>,
}

impl Session {
    /// Whether capture should run now: a locked or switched-away screen shows nothing of the
    /// user's work, so it is not recorded.
    pub fn capturable(&self) -> bool {
        self.active && !self.locked
    }
}

/// What the watcher knows right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionsState {
    pub sessions: Vec<Session>,
    /// Why the list may be incomplete (logind unreachable, …), for health and `status`.
    pub problem: Option<String>,
}

/// The session of a fixed display: `user`'s, or the daemon's own user's when `None`.
///
/// A named user must exist, and only a root daemon may record someone else's display (the
/// worker runs as the session's user, and only root can start it so).
pub fn fixed_session(fixed: &FixedSession) -> Result<Session, String> {
    let me = nix::unistd::geteuid();
    let user = match &fixed.user {
        None => nix::unistd::User::from_uid(me).ok().flatten(),
        Some(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Some(u),
            Ok(None) => {
                return Err(format!(
                    "capture.sessions: user {name:?} of display {} does not exist",
                    fixed.display
                ))
            }
            Err(e) => return Err(format!("capture.sessions: cannot look up user {name:?}: {e}")),
        },
    };
    let (name, uid, gid) = match user {
        Some(u) => (u.name, u.uid, u.gid),
        None => (me.to_string(), me, nix::unistd::getegid()),
    };
    if uid != me && !me.is_root() {
        return Err(format!(
            "capture.sessions: display {} belongs to {name:?}, but the daemon is not root and \
             cannot record another user's display",
            fixed.display
        ));
    }
    // The daemon's own session inherits how it reaches the display; another user's fixed
    // display is reached without (a kiosk or test server with no X authority file).
    let env = if uid == me {
        ["XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Session {
        id: format!("fixed:{}", fixed.display),
        user: name,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        display: fixed.display.clone(),
        active: true,
        locked: false,
        env,
    })
}

/// Keeps `tx` up to date: the fixed displays when configured, logind otherwise.
pub async fn watch(fixed: Vec<FixedSession>, tx: watch::Sender<SessionsState>) {
    if !fixed.is_empty() {
        let mut state = SessionsState::default();
        for f in &fixed {
            match fixed_session(f) {
                Ok(s) => state.sessions.push(s),
                Err(problem) => {
                    tracing::error!("{problem}");
                    state.problem = Some(problem);
                }
            }
        }
        tx.send_replace(state);
        return;
    }
    // Retries start at 1 s (a restarting logind is back within seconds; meanwhile nobody is
    // recorded) and double up to 30 s (a machine without logind is not asked every second).
    let mut retry = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        match logind::follow(&tx).await {
            Ok(()) => return,
            Err(e) => {
                let problem = format!(
                    "cannot follow graphical sessions: {e}; is systemd-logind running? \
                     (set [capture] display in the agent config to record a fixed display)"
                );
                tracing::warn!("{problem}");
                tx.send_replace(SessionsState { sessions: Vec::new(), problem: Some(problem) });
                if started.elapsed() > Duration::from_secs(60) {
                    // It had been working: this is a restart, not a missing logind.
                    retry = Duration::from_secs(1);
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}
