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
}

impl UploadError {
    /// Whether the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, UploadError::Unavailable(_))
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
