//! `rearview-testkit`: what the tests and benches of every crate share, in one place.
//!
//! A dev-only crate: tests (`[dev-dependencies]`) and `rearview-bench` take it; no shipped crate
//! may (the layering test in `tests/tests/layering.rs` fails if one does).
//!
//! It depends on none of our crates but the evidence formats (which depend on nothing of ours),
//! so that capture-core's and config's tests can take it without building the console: it
//! knows the console only as a program to run ([`console`]).
//! The in-process console launcher needs the console's types and so is the console's own test
//! support (`console/tests/support`), which the workspace tests mount too.
//!
//! * [`xvfb`]: a private X server per test, on a display number it picks itself.
//! * [`tmpfs`]: a small real filesystem, for disk-full tests (root only).
//! * [`console`]: the console binary `init`ed and `serve`d, and the one parser of what `init`
//!   prints (the people's tokens).
//! * [`chain`]: a test device's signed chain entries and absence notes, so the manifests tests
//!   send carry what the console verifies.
//! * [`postgres`]: a private PostgreSQL cluster on a free port, removed however the process ends.
//! * [`s3`]: a real S3-speaking server (`moto_server`) in its own process, to pause and resume.
//! * [`browser`]: a headless Chromium driven over WebDriver, for the console's web page tests.
//! * [`oidc`]: a real OpenID Connect provider (`oidc-provider` on node) with a login form.
//! * [`smtp`]: a real SMTP server (`aiosmtpd`) that keeps every message it receives.
//! * `process` (private): what the harnesses above share: a free port, a reaper so that no
//!   server outlives the test process, signals, the tail of a log.
//! * [`procfs`]: the one reader of `/proc/PID/status` (uids, memory high-water mark).
//! * [`wait_until`], [`eventually`]: the one way tests wait for something that happens
//!   elsewhere, from a thread or from an async test.

pub mod browser;
pub mod chain;
pub mod console;
pub mod oidc;
pub mod postgres;
mod process;
pub mod procfs;
pub mod s3;
pub mod smtp;
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

/// [`wait_until`] for async tests (the runtime keeps running while it waits): asks `f` until
/// it holds; panics naming `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
