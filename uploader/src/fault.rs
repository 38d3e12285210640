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
