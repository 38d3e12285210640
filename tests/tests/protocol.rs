//! The protocol end to end: a real console on 127.0.0.1, real uploaders, real SQLite spools.
//! Every test here needs both ends, so it lives in neither end's crate (the console and the
//! uploader do not depend on each other, not even for tests; see `layering.rs`).
//!
//! * `e2e`: enroll → policy → trigger → clip complete; indicators → console rule → trigger.
//! * `faults`: console restarted mid-upload, uploader SIGKILLed mid-upload (a child process),
//!   console answering 5xx or hanging (a fault proxy) — no duplicate, no loss.
//! * `security`: forged, replayed and other-tenant triggers; expired and reused enrollment
//!   tokens; device isolation; self-approval.
//! * `limits`: the daily upload limit and the offline cache.
//! * `local`: the device's own storage failing (a spool file gone or unreadable, the spool
//!   database failing, a full disk): only the console's refusal sets a clip aside.
//! * `approvals`, `duties`, `device_trust`: the console's approval, separation-of-duties and
//!   device-trust rules as the real uploader meets them (the console-only halves stay in
//!   `console/tests`).
//! * `export`: `clip export` of a clip the real uploader sent.
//! * `replicas`: 200 real uploaders behind a balancer in front of two console processes on
//!   PostgreSQL: a replica SIGKILLed, and PostgreSQL restarted, under load — every trigger once,
//!   every segment once, no clip lost.
//!
//! `support` is the device side of the harness (test devices, a fault proxy, a balancer); the console side
//! is the console's own test support (`console/tests/support`), mounted here as
//! `console_support`, so there is one in-process console launcher.

#[path = "protocol/approvals.rs"]
mod approvals;
#[path = "../../console/tests/support/mod.rs"]
mod console_support;
#[path = "protocol/device_trust.rs"]
mod device_trust;
#[path = "protocol/duties.rs"]
mod duties;
#[path = "protocol/e2e.rs"]
mod e2e;
#[path = "protocol/export.rs"]
mod export;
#[path = "protocol/faults.rs"]
mod faults;
#[path = "protocol/limits.rs"]
mod limits;
#[path = "protocol/local.rs"]
mod local;
#[path = "protocol/replicas.rs"]
mod replicas;
#[path = "protocol/security.rs"]
mod security;
#[path = "protocol/support.rs"]
mod support;
