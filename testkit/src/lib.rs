//! `rearview-testkit`: what the tests and benches of every crate share, in one place.
//!
//! A dev-only crate: tests (`[dev-dependencies]`) and `rearview-bench` take it; no shipped crate
//! may (the layering test in `tests/tests/layering.rs` fails if one does).
//!
//! * [`xvfb`]: a private X server per test, on a display number it picks itself.
//! * [`tmpfs`]: a small real filesystem, for disk-full tests (root only).
//! * [`wait_until`]: the one way tests wait for something that happens elsewhere.

pub mod tmpfs;
pub mod xvfb;

use std::time::{Duration, Instant};

/// How often [`wait_until`] asks.
const POLL: Duration = Duration::from_millis(50);

/// Asks `f` until it gives `Some`, and returns that; panics naming `what` after `limit`.
/// Tests wait with this instead of sleeping a guessed time, so the happy path is fast and a slow
/// machine only takes longer.
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}
