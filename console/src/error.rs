//! Errors of the console library, and how API errors become HTTP answers.
//!
//! A failure keeps its type up to the edge, where [`ApiError::from`] picks the answer from it:
//!
//! ```text
//! ConsoleError                        HTTP   retry?
//! Constraint (UNIQUE, CHECK, FOREIGN   409    no: the database refuses this change; the
//!   KEY, NOT NULL, a trigger's RAISE)         answer carries its reason
//! Conflict { what }                    409    no
//! NotFound { what }                    404    no
//! Invalid(..)                          400    no
//! Denied(..)                           403    no
//! Unavailable (busy, locked, full,     503    yes (Retry-After): the database will take
//!   read-only, I/O, cannot open)              the same request later
//! Io { .. }, Task(..) cancelled       503    yes
//! BlobsUnavailable { .. } (the bucket  503    yes (Retry-After): a device keeps the segment
//!   unreachable, timed out, refused)          in its spool and sends it again
//! Task(..) that panicked               500    no: the same request panics again
//! Database, Corrupt, Keys, Config,     500    no: a bug or a damaged store; the log says which
//!   Signing
//! ```
//!
//! Database errors are sorted once per backend, in `From<rusqlite::Error>` and
//! `From<postgres::Error>`; every caller gets the same classification
//! ([`ConsoleError::is_retryable`]) whichever backend the console runs on. PostgreSQL's are
//! sorted by SQLSTATE class: integrity violations and a trigger's RAISE are `Constraint`;
//! connection, resource, operator-intervention and system errors, serialization failures,
//! deadlocks and a lost connection are `Unavailable`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rearview_protocol::ErrorBody;
use rusqlite::ErrorCode;

/// A failure of either database backend, as its driver reported it.
#[derive(Debug)]
pub struct DbError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // PostgreSQL's Display is only "db error"; its message and detail are in the source.
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        f.write_str(&text)
    }
}

impl std::error::Error for DbError {}

impl DbError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> DbError {
        DbError(Box::new(e))
    }

    pub fn message(text: impl Into<String>) -> DbError {
        DbError(text.into().into())
    }
}

/// Seconds a caller is told to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Failures of the console's own machinery (storage, keys, startup) and the refusals its store
/// makes.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The database refused the change because it breaks one of its rules; permanent for this
    /// request (the same request would be refused again).
    #[error("refused by the database: {0}")]
    Constraint(#[source] DbError),
    /// The database cannot serve now (busy, locked, disk full, read-only, I/O error); the same
    /// request may succeed later.
    #[error("database unavailable, try again: {0}")]
    Unavailable(#[source] DbError),
    /// Any other database failure: a query the console got wrong, or a damaged file.
    #[error("database: {0}")]
    Database(#[source] DbError),
    /// A stored value the console cannot read back (`what` names it).
    #[error("stored {what} cannot be read: {why}")]
    Corrupt { what: String, why: String },
    /// What the request names does not exist.
    #[error("{what}")]
    NotFound { what: String },
    /// The request conflicts with what is stored (taken, already done, changed meanwhile).
    #[error("{what}")]
    Conflict { what: String },
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A file or directory (`what`) could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The blob store (an S3-compatible bucket) did not do what was asked on `what` (an
    /// `s3://` URL): unreachable, timed out, refused, missing. The same request may succeed
    /// later; see [`crate::blobs`].
    #[error("blob store unavailable, try again: {what}: {source}")]
    BlobsUnavailable {
        what: String,
        #[source]
        source: object_store::Error,
    },
    /// A blocking task (store call, blob writer, server) panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
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
        matches!(
            self,
            ConsoleError::Unavailable(_)
                | ConsoleError::Io { .. }
                | ConsoleError::BlobsUnavailable { .. }
        ) || matches!(self, ConsoleError::Task { source, .. } if !source.is_panic())
    }

    /// An I/O failure on the file or directory `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> ConsoleError {
        ConsoleError::Io { what: path.display().to_string(), source }
    }

    /// A stored value (`what`) that does not parse.
    pub fn corrupt(what: impl Into<String>, why: impl std::fmt::Display) -> ConsoleError {
        ConsoleError::Corrupt { what: what.into(), why: why.to_string() }
    }

    /// The HTTP status this error answers with (see the module docs).
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Constraint(_) | ConsoleError::Conflict { .. } => StatusCode::CONFLICT,
            ConsoleError::NotFound { .. } => StatusCode::NOT_FOUND,
            ConsoleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Denied(_) => StatusCode::FORBIDDEN,
            e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<rusqlite::Error> for ConsoleError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => ConsoleError::Constraint(DbError::new(e)),
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed,
            ) => ConsoleError::Unavailable(DbError::new(e)),
            _ => ConsoleError::Database(DbError::new(e)),
        }
    }
}

impl From<postgres::Error> for ConsoleError {
    fn from(e: postgres::Error) -> Self {
        // What a caller may be told of a server error: its code and message, never its DETAIL
        // (which quotes the values of other rows: "Key (name)=(…) already exists").
        if let Some(db) = e.as_db_error() {
            let told = DbError::message(format!("{}: {}", db.code().code(), db.message()));
            let code = db.code().code().to_owned();
            return classify_pg(&code, told);
        }
        let Some(code) = e.code().map(|c| c.code().to_owned()) else {
            // No SQLSTATE: the connection broke or could not be made (I/O, closed, timed
            // out), or a value did not convert (a bug: Database).
            return if e.is_closed() || is_connection_failure(&e) {
                ConsoleError::Unavailable(DbError::new(e))
            } else {
                ConsoleError::Database(DbError::new(e))
            };
        };
        classify_pg(&code, DbError::new(e))
    }
}

/// A PostgreSQL error of SQLSTATE `code`, sorted (see the module docs).
fn classify_pg(code: &str, e: DbError) -> ConsoleError {
    match code.get(..2) {
        // 23: integrity constraint violation; P0001: raise_exception (a trigger's refusal).
        Some("23") => ConsoleError::Constraint(e),
        _ if code == "P0001" => ConsoleError::Constraint(e),
        // 08 connection, 53 resources, 57 operator intervention (shutdown, cannot connect now,
        // statement timeout), 58 system/I-O, 40 serialization failure and deadlock; 55P03 lock
        // not available, 25006 read-only transaction (a standby).
        Some("08" | "53" | "57" | "58" | "40") => ConsoleError::Unavailable(e),
        _ if code == "55P03" || code == "25006" => ConsoleError::Unavailable(e),
        _ => ConsoleError::Database(e),
    }
}

/// Whether a PostgreSQL error without SQLSTATE is the connection failing (I/O or a timeout)
/// rather than a value that did not convert.
fn is_connection_failure(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    text.contains("timeout") || text.contains("connection") || text.contains("closed")
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
        let status = e.status();
        if status.is_server_error() {
            tracing::error!(error = ?e.to_string(), "request failed inside the console");
        } else {
            tracing::info!(error = ?e.to_string(), "request refused");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (self.status, Json(ErrorBody { error: self.message })).into_response();
        if retry {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store call that panicked is a bug that would panic again: 500, no Retry-After. One
    /// cancelled (the server shutting down) may work later: 503.
    #[tokio::test]
    async fn a_panicked_task_is_a_500_and_a_cancelled_one_a_503() {
        let panicked = tokio::task::spawn_blocking(|| panic!("a bug")).await.unwrap_err();
        let e = ConsoleError::Task { what: "store", source: panicked };
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let cancelled = task.await.unwrap_err();
        let e = ConsoleError::Task { what: "store", source: cancelled };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A real UNIQUE failure of SQLite: 409 naming the constraint, not retryable.
    #[test]
    fn a_unique_failure_is_a_409_naming_the_constraint() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE people (name TEXT UNIQUE); INSERT INTO people VALUES ('a');",
        )
        .unwrap();
        let e = ConsoleError::from(db.execute("INSERT INTO people VALUES ('a')", []).unwrap_err());
        assert!(matches!(e, ConsoleError::Constraint(_)), "{e:?}");
        assert!(!e.is_retryable());
        let api = ApiError::from(e);
        assert_eq!(api.status, StatusCode::CONFLICT);
        assert!(api.message.contains("UNIQUE constraint failed: people.name"), "{}", api.message);
    }

    /// A database another connection holds locked: a retryable 503 with Retry-After.
    #[test]
    fn a_locked_database_is_a_retryable_503() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE;").unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let e = ConsoleError::from(other.execute("INSERT INTO t VALUES (1)", []).unwrap_err());
        assert!(matches!(e, ConsoleError::Unavailable(_)), "{e:?}");
        assert!(e.is_retryable());
        let response = ApiError::from(e).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    /// A query the console got wrong is its own bug: 500, not "try again".
    #[test]
    fn a_wrong_query_is_a_500() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let e = ConsoleError::from(db.execute("INSERT INTO nowhere VALUES (1)", []).unwrap_err());
        assert!(matches!(e, ConsoleError::Database(_)), "{e:?}");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
