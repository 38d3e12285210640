//! Graphical sessions: who is logged in on which X display.
//!
//! On a desktop the source of truth is systemd-logind on the system bus
//! (`org.freedesktop.login1`): [`logind`] lists sessions, reads each one's `Type`, `Class`,
//! `Display`, `Name`, `User`, `Active`, `LockedHint` and `Leader`, and follows `SessionNew` /
//! `SessionRemoved` (each triggers an immediate re-list) plus a short poll that catches locks,
//! unlocks and user switches (property changes). Tests and the demo configure a fixed display
//! instead; its session belongs to the user the daemon runs as.
//!
//! When logind cannot be reached the watcher says so once, clearly, and falls back to the fixed
//! display if one is configured — otherwise there are no sessions and health reports why.

use std::time::Duration;

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

/// The fixed-display session: the daemon's own user on `display`.
pub fn fixed_session(display: &str) -> Session {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let env = ["XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    Session {
        id: format!("fixed:{display}"),
        user,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        display: display.to_string(),
        active: true,
        locked: false,
        env,
    }
}

/// Keeps `tx` up to date: the fixed display when configured, logind otherwise.
pub async fn watch(fixed_display: Option<String>, tx: watch::Sender<SessionsState>) {
    if let Some(display) = fixed_display {
        tx.send_replace(SessionsState { sessions: vec![fixed_session(&display)], problem: None });
        return;
    }
    loop {
        match logind::follow(&tx).await {
            Ok(()) => return,
            Err(e) => {
                let problem = format!(
                    "cannot follow graphical sessions: {e}; is systemd-logind running? \
                     (set [capture] display in the agent config to record a fixed display)"
                );
                tracing::warn!("{problem}");
                tx.send_replace(SessionsState { sessions: Vec::new(), problem: Some(problem) });
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}
