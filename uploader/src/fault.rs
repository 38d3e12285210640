//! Fault points for crash tests: `REARVIEW_FAULT=<name>[,<name>…]` makes the process abort at
//! the named points, as a `kill -9` there would (no destructor runs, nothing more is written or
//! sent). Debug builds only: in a release build [`point`] does nothing and reads nothing, so a
//! shipped binary cannot be made to crash through its environment.
//!
//! ```text
//! trigger:before-intent   the daemon holds a verified trigger, nothing of it is persisted
//! trigger:after-intent    the clip for it is in the spool database; the id is not marked seen
//! trigger:after-seen      the id is marked seen in the trust state; the console has no ack
//! ```
//!
//! Stall points, for tests of what keeps running while one part waits on a slow disk:
//! `REARVIEW_STALL=<name>:<path>` makes [`stall`] at the named point wait while `<path>`
//! exists (debug builds only, like [`point`]).
//!
//! ```text
//! store:segment           the agent's store thread, before it takes a worker's segment
//! ```

/// Aborts the process if `REARVIEW_FAULT` names `name` (debug builds only).
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("REARVIEW_FAULT").is_ok_and(|v| v.split(',').any(|p| p.trim() == name)) {
        eprintln!("REARVIEW_FAULT: aborting at {name}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Waits while the file `REARVIEW_STALL` names for `name` exists (debug builds only).
pub fn stall(name: &str) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("REARVIEW_STALL") {
        let path = v.strip_prefix(name).and_then(|rest| rest.strip_prefix(':'));
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            while std::path::Path::new(path).exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
