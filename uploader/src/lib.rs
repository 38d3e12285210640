//! `rearview-uploader`: the device side of the Rearview protocol (`rearview-protocol` holds the
//! contract itself: every message, path and limit; callers import it directly).
//!
//! A device enrolls once, then holds a push stream from the console that brings signed policy
//! bundles and triggers (verified here with `rearview_config` before anyone acts on them), and
//! sends clips — manifests and the sealed segments they name — from a crash-safe spool,
//! within the policy's daily upload limit and offline cache.
//!
//! # Layout
//!
//! * [`uploader`]: [`Uploader`], the API the agent daemon uses — `enroll`, `subscribe` to
//!   verified [`Command`]s, `sync_policy`, `enqueue_clip`, `start` (stream + send loops),
//!   `status`, `report_health`, `report_activity`.
//! * [`spool`]: the SQLite (WAL) spool and its on-disk format and crash rules, the offline
//!   cache rule, the daemon's clip records ([`spool::clip_records`]) and the device-signed
//!   chains of its capture streams ([`spool::chain`]; [`Uploader::chain_signer`] is the key
//!   that signs them).
//! * [`client`]: the HTTP client (reqwest, rustls); [`sse`]: the event-stream reader;
//!   [`backoff`]: exponential backoff with jitter; [`error`]: errors that say if retrying helps.
//! * [`fault`]: debug-build fault points for crash tests (`REARVIEW_FAULT`).

pub mod backoff;
pub mod client;
pub mod error;
pub mod fault;
pub mod spool;
pub mod sse;
pub mod uploader;

pub use error::{Refusal, UploadError};
pub use spool::{SegmentBytes, SpoolStats, StreamKey};
pub use uploader::{
    Command, Identity, NewClip, NewSegment, Running, Status, TriggerAccepted, TriggerDelivery,
    Uploader, UploaderConfig,
};

/// Wall-clock time, Unix milliseconds ([`rearview_protocol::UnixMillis::now`], the one clock
/// of the wire).
pub fn now_ms() -> i64 {
    rearview_protocol::UnixMillis::now().millis()
}
