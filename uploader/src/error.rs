//! Uploader errors, each saying whether trying again may help.

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
    /// A policy or trigger failed verification; it was not used.
    #[error("rejected {what}: {reason}")]
    Rejected { what: String, reason: String },
    /// The device is not enrolled yet.
    #[error("this device is not enrolled: run 'rearview enroll --server URL --token T'")]
    NotEnrolled,
    /// The local spool or identity file failed.
    #[error("spool: {0}")]
    Spool(String),
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

impl UploadError {
    /// Whether the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, UploadError::Unavailable(_) | UploadError::NotRecorded { .. })
    }

    /// Whether sending a clip failed for a reason of that clip alone, so the sender sets it
    /// aside (`refused`, its files freed) instead of trying again: the console refused it as
    /// malformed, conflicting or too large (400, 409, 413, 422), or the spool lost part of it.
    /// Everything else keeps the clip: an unreachable console, an answer cut short or garbled
    /// on the way, and refusals about the device rather than the clip (401, 403, 404, 429).
    pub fn sets_clip_aside(&self) -> bool {
        match self {
            UploadError::Refused { status, .. } => matches!(status, 400 | 409 | 413 | 422),
            UploadError::Spool(_) | UploadError::TooLarge(_) => true,
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for UploadError {
    fn from(e: rusqlite::Error) -> Self {
        UploadError::Spool(e.to_string())
    }
}

impl From<reqwest::Error> for UploadError {
    fn from(e: reqwest::Error) -> Self {
        // Transport failures (connect, timeout, reset, body cut) are all worth retrying.
        UploadError::Unavailable(e.to_string())
    }
}
