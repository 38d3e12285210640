//! The protocol end to end: a real console on 127.0.0.1, real uploaders, real SQLite spools.
//!
//! * `e2e`: enroll → policy → trigger → clip complete; indicators → console rule → trigger.
//! * `faults`: console restarted mid-upload, uploader SIGKILLed mid-upload (a child process),
//!   console answering 5xx or hanging (a fault proxy) — no duplicate, no loss.
//! * `security`: forged, replayed and other-tenant triggers; expired and reused enrollment
//!   tokens; device isolation; self-approval.
//! * `limits`: the daily upload limit and the offline cache.
//! * `local`: the device's own storage failing (a spool file gone or unreadable, the spool
//!   database failing, a full disk): only the console's refusal sets a clip aside.

#[path = "protocol/e2e.rs"]
mod e2e;
#[path = "protocol/faults.rs"]
mod faults;
#[path = "protocol/limits.rs"]
mod limits;
#[path = "protocol/local.rs"]
mod local;
#[path = "protocol/security.rs"]
mod security;
#[path = "protocol/support.rs"]
mod support;
