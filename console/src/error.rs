//! Errors of the console library, and how API errors become HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rearview_protocol::ErrorBody;

/// Failures of the console's own machinery (storage, keys, startup).
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("database: {0}")]
    Database(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("tenant keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Config(String),
    #[error("signing: {0}")]
    Signing(String),
    /// The caller may not do this (no token, a token nobody holds, a role it lacks); the
    /// message names what is needed.
    #[error("{0}")]
    Denied(String),
}

impl ConsoleError {
    /// Whether trying the same thing again may work (a busy database, a full disk freed).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConsoleError::Database(_) | ConsoleError::Io(_))
    }
}

impl From<rusqlite::Error> for ConsoleError {
    fn from(e: rusqlite::Error) -> Self {
        ConsoleError::Database(e.to_string())
    }
}

/// An answer to an API request that did not succeed: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
}

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> Self {
        tracing::error!(error = ?e.to_string(), "request failed inside the console");
        let status = if e.is_retryable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if matches!(e, ConsoleError::Denied(_)) {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::from(ConsoleError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}
