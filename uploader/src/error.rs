//! Uploader errors, each saying whether trying again may help, and whose fault it is: the
//! console's answer about one clip, the console or network at large, or the device's own disk.

use std::path::PathBuf;

/// What went wrong talking to the console or keeping the spool.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The console could not be reached, timed out, or answered 5xx: try again later.
    #[error("console unreachable or failing: {0}")]
    Unavailable(String),
    /// The console refused the request (4xx): repeating it unchanged will not help.
    #[error("console refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The console answered something this device cannot understand.
    #[error("console answered something unexpected: {0}")]
    Protocol(String),
    /// A policy or trigger failed verification; it was not used. `reason` is the verifier's
    /// own error (the source), which also says whether sending it again later may work.
    #[error("rejected {what}: {reason}")]
    Rejected {
        what: String,
        #[source]
        reason: Box<Refusal>,
    },
    /// The device is not enrolled yet.
    #[error("this device is not enrolled: run 'rearview enroll --server URL --token T'")]
    NotEnrolled,
    /// A file of the device's own state (spool segment, temporary file) could not be read or
    /// written: a full disk, an I/O error, a permission. The disk's fault, not the clip's:
    /// the clip is kept and tried again, nothing is deleted for it.
    #[error("local file {}: {source}", path.display())]
    LocalFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spool database failed (locked, disk full, I/O). Kept and tried again, like
    /// [`UploadError::LocalFile`].
    #[error("spool database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The spool or the state directory holds something unusable (a manifest that does not
    /// parse, an identity or trust file that does not load).
    #[error("spool: {0}")]
    Spool(String),
    /// Chain entries handed to the spool that do not continue their stream's chain (see
    /// [`crate::spool::chain`]): the caller's mistake; nothing was stored.
    #[error("chain: {0}")]
    Chain(String),
    /// A chain entry that cannot be hashed or signed (a field out of its format's bounds).
    #[error(transparent)]
    ChainEntry(#[from] rearview_protocol::chain::ChainError),
    /// Something larger than the limits allow.
    #[error("{0}")]
    TooLarge(String),
    /// Bad configuration (server URL, CA file, …).
    #[error("configuration: {0}")]
    Config(String),
    /// A verified trigger whose clip this device could not record (the agent's state file, or
    /// no agent listening): it is neither marked seen nor acknowledged, so the console sends
    /// it again.
    #[error("trigger {trigger} not acted on: {reason}; the console will send it again")]
    NotRecorded { trigger: String, reason: String },
}

/// Why a policy or trigger was refused: the verifier's error, unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Policy(#[from] rearview_config::PolicyRejected),
    #[error(transparent)]
    Trigger(#[from] rearview_config::TriggerRejected),
    #[error(transparent)]
    Envelope(#[from] rearview_config::EnvelopeError),
}

impl Refusal {
    /// The verifier's own answer (a trigger before any policy may pass once one is in force).
    pub fn is_retryable(&self) -> bool {
        match self {
            Refusal::Policy(e) => e.is_retryable(),
            Refusal::Trigger(e) => e.is_retryable(),
            Refusal::Envelope(_) => false,
        }
    }
}

impl UploadError {
    /// Whether the same call may succeed later without any change: the console or network
    /// came back, the device's disk has room again, or (a refused policy or trigger) the
    /// verifier says a later attempt may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            UploadError::Rejected { reason, .. } => reason.is_retryable(),
            _ => matches!(
                self,
                UploadError::Unavailable(_)
                    | UploadError::NotRecorded { .. }
                    | UploadError::LocalFile { .. }
                    | UploadError::Database(_)
            ),
        }
    }

    /// Whether the device's own storage failed (not the console, not the network). The send
    /// loop keeps such a clip, goes on with the others, and shows the error in status.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            UploadError::LocalFile { .. } | UploadError::Database(_) | UploadError::Spool(_)
        )
    }

    /// Whether the console could not be reached (as opposed to answering, or the device's
    /// disk failing): status then says the server is unreachable.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UploadError::Unavailable(_))
    }

    /// Whether sending a clip failed because the console refused *that clip* for good, so the
    /// sender sets it aside (`refused`, its files freed) instead of trying again: malformed,
    /// conflicting or too large (400, 409, 413, 422). Nothing else sets a clip aside: not an
    /// unreachable console, not an answer cut short or garbled on the way, not a refusal of
    /// the device rather than the clip (401, 403, 404, 429), and never a failure of the
    /// device's own disk or database (a spool file that is gone becomes a missing range of the
    /// clip instead, see [`crate::spool::Spool::settle_lost`]).
    pub fn sets_clip_aside(&self) -> bool {
        match self {
            UploadError::Refused { status, .. } => matches!(status, 400 | 409 | 413 | 422),
            _ => false,
        }
    }

    /// Whether this is the device's disk being full (ENOSPC, or SQLite's "disk is full"), so
    /// status can say what to free rather than just what failed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            UploadError::LocalFile { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
            }
            UploadError::Database(e) => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            _ => false,
        }
    }
}

impl From<reqwest::Error> for UploadError {
    fn from(e: reqwest::Error) -> Self {
        // Transport failures (connect, timeout, reset, body cut) are all worth retrying.
        UploadError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use rearview_config::{TriggerId, TriggerRejected};

    use super::*;

    /// One classification: a trigger that arrived before any policy may be accepted once one
    /// is in force (config says so), so the uploader says so too, and keeps the cause.
    #[test]
    fn a_trigger_refused_for_want_of_a_policy_may_be_retried_and_keeps_its_cause() {
        let id = TriggerId::new("trg-1").unwrap();
        let e = UploadError::Rejected {
            what: "trigger trg-1".into(),
            reason: Box::new(TriggerRejected::NoPolicy { id }.into()),
        };
        assert!(e.is_retryable(), "{e}");
        let cause = std::error::Error::source(&e).expect("the verifier's error is the source");
        let refusal = cause.downcast_ref::<Box<Refusal>>().expect("a Refusal");
        assert!(
            matches!(**refusal, Refusal::Trigger(TriggerRejected::NoPolicy { .. })),
            "{refusal:?}"
        );
    }
}
