//! `rearview doctor`: each check says pass or fail, what it saw, and the fix.
//!
//! [`prepare`] takes what the checks need from the daemon on its loop, without waiting on
//! anything; [`Doctor::run`] then does the checks that touch the disk and the network (the
//! console probe may wait up to [`PROBE_DEADLINE`]) in a task of its own, so the loop keeps
//! sealing segments and recording triggers meanwhile.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rearview_config::time::OffsetDateTime;
use rearview_uploader::Uploader;

use super::workers::SessionView;
use super::Daemon;
use crate::status::Check;

/// Clock skew beyond which triggers and policies may be refused as not yet valid.
const MAX_SKEW_SECS: i64 = 60;
/// Free space below which the ring cannot be trusted to keep its window.
const MIN_FREE_BYTES: u64 = 1 << 30;
/// Longest the console probe may take in all (connect, request, answer).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);

fn check(name: &str, ok: bool, detail: String, fix: &str) -> Check {
    Check { name: name.into(), ok, detail, fix: (!ok).then(|| fix.to_string()) }
}

/// The checks' inputs, taken from the daemon (see the module docs).
pub struct Doctor {
    /// Checks answered from the daemon's own state (displays, input hooks).
    sessions: Vec<Check>,
    /// The policy check, last in the output.
    policy: Check,
    data_dir: PathBuf,
    server: String,
    uploader: Arc<Uploader>,
}

/// Takes what the checks need; never waits.
pub fn prepare(d: &Daemon) -> Doctor {
    let policy = match d.policy() {
        Some(p) => check(
            "policy signature",
            true,
            format!("v{} verified with tenant key {}", p.version(), p.envelope().key_id()),
            "",
        ),
        None => check(
            "policy signature",
            false,
            if d.uploader().is_enrolled() {
                "no verified policy yet".into()
            } else {
                "not enrolled".into()
            },
            "enroll (rearview enroll --server URL --token T) and check that the console is reachable",
        ),
    };
    Doctor {
        sessions: session_checks(d),
        policy,
        data_dir: d.config().data_dir().to_path_buf(),
        server: d.config().server_url().to_string(),
        uploader: d.uploader().clone(),
    }
}

fn session_checks(d: &Daemon) -> Vec<Check> {
    let mut out = Vec::new();
    let sessions = d.sessions_for_doctor();
    let capturing: Vec<_> = sessions.iter().filter(|v| v.worker_running).collect();
    if sessions.is_empty() {
        out.push(check(
            "display reachable",
            false,
            "no graphical session found".into(),
            "log in to a graphical session, or set [capture] display in the agent config",
        ));
    } else if capturing.is_empty() {
        out.push(check(
            "display reachable",
            true,
            format!("{} session(s), none approved for capture: display not tried", sessions.len()),
            "",
        ));
    }
    for SessionView { session: s, status: st, .. } in capturing {
        let ok = st.state == "capturing";
        let speed = st.ms_per_frame.map(|m| format!(", {m:.1} ms per frame")).unwrap_or_default();
        out.push(check(
            &format!("display {} ({})", s.display, s.user),
            ok,
            format!("{}{speed}", st.error.clone().unwrap_or_else(|| st.state.clone())),
            "check that the X server runs and that XAUTHORITY of the session is readable by the user",
        ));
        out.push(check(
            &format!("input hook {} ({})", s.display, s.user),
            st.input.contains("x11-record"),
            if st.input.is_empty() { "not started yet".into() } else { st.input.clone() },
            "the X server needs the RECORD extension (Xorg: loaded by default; Xvfb: +extension RECORD)",
        ));
    }
    out
}

impl Doctor {
    /// Runs the checks, in the order `rearview doctor` prints them.
    pub async fn run(self) -> Vec<Check> {
        let Doctor { sessions: mut out, policy, data_dir, server, uploader } = self;
        let files = tokio::task::spawn_blocking(move || file_checks(&data_dir));
        let probe =
            uploader.console_clock(PROBE_DEADLINE).await.map_err(|e| format!("{server}: {e}"));
        let (disk, perms) = match files.await {
            Ok(v) => v,
            Err(e) => {
                let failed = |name| check(name, false, format!("check failed: {e}"), "try again");
                (failed("disk space"), failed("key file permissions"))
            }
        };
        let status = uploader.status().unwrap_or_default();
        out.push(disk);
        out.extend(console_checks(probe, &status));
        out.push(perms);
        out.push(policy);
        out
    }
}

/// Free space and the modes of the data directory and the device identity.
fn file_checks(data_dir: &std::path::Path) -> (Check, Check) {
    let disk = match nix::sys::statvfs::statvfs(data_dir) {
        Ok(v) => {
            let free = v.blocks_available() * v.fragment_size();
            check(
                "disk space",
                free >= MIN_FREE_BYTES,
                format!("{} MB free in {}", free / 1_000_000, data_dir.display()),
                "free space on that filesystem or lower [ring] max_bytes",
            )
        }
        Err(e) => check("disk space", false, e.to_string(), "check data_dir in the agent config"),
    };
    let mut perm_problems = Vec::new();
    for (path, required) in [
        (data_dir.to_path_buf(), 0o077),
        (rearview_config::DataDir::new(data_dir).identity(), 0o077),
    ] {
        match std::fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & required != 0 => perm_problems.push(format!(
                "{} is mode {:o}",
                path.display(),
                m.permissions().mode() & 0o777
            )),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => perm_problems.push(format!("{}: {e}", path.display())),
        }
    }
    let perms = check(
        "key file permissions",
        perm_problems.is_empty(),
        if perm_problems.is_empty() {
            "data directory and device identity readable by root only".into()
        } else {
            perm_problems.join("; ")
        },
        "chmod 700 the data directory and 600 identity.json",
    );
    (disk, perms)
}

/// Clock skew and reachability, from the probe and the uploader's view.
fn console_checks(
    probe: Result<Option<OffsetDateTime>, String>,
    status: &rearview_uploader::Status,
) -> Vec<Check> {
    let mut out = Vec::new();
    match probe {
        Ok(Some(their)) => {
            let skew = (OffsetDateTime::now_utc() - their).whole_seconds();
            out.push(check(
                "clock skew",
                skew.abs() <= MAX_SKEW_SECS,
                format!("{skew:+} s against the console"),
                "enable time synchronisation (systemd-timesyncd or chrony)",
            ));
            out.push(check("console reachable", true, "answered".into(), ""));
        }
        Ok(None) => {
            out.push(check(
                "clock skew",
                false,
                "not measured: the console's answer had no Date header".into(),
                "compare `date -u` with the console's clock by hand",
            ));
            out.push(check(
                "console reachable",
                status.server_reachable,
                status.last_error.clone().unwrap_or_else(|| "per the uploader".into()),
                "check server_url and the network path to the console",
            ));
        }
        Err(e) => {
            out.push(check(
                "clock skew",
                false,
                "not measured: console unreachable".into(),
                "reach the console first",
            ));
            out.push(check(
                "console reachable",
                false,
                e,
                "check server_url in the agent config and the network path to the console",
            ));
        }
    }

    out
}
