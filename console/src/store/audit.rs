//! `audit`: the append-only log of who did what. Every change that is audited writes its line
//! with [`Tx::audit`] inside the transaction that makes the change, so neither exists without
//! the other.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::sql::args;
use super::{json_or_null, now_ms, Tx};
use crate::api::page::PageRequest;
use crate::error::ConsoleError;

/// One line of the audit log.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

/// Appends one line to the audit log on `conn` (the SQLite migrations' transaction).
pub(super) fn audit_in(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ConsoleError> {
    conn.execute(
        "INSERT INTO audit (time_ms, actor, action, target, details_json) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), actor, action, target, details.to_string()],
    )?;
    Ok(())
}

/// A row of `SELECT id, time_ms, actor, action, target, details_json FROM audit`.
fn audit_row(r: &super::sql::Row<'_>) -> Result<AuditEntry, ConsoleError> {
    Ok(AuditEntry {
        id: r.get(0)?,
        time_ms: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        details: json_or_null(&r.get::<String>(5)?),
    })
}

impl Tx<'_> {
    /// Appends one line to the audit log, in this transaction: it is written if and only if
    /// the change it records is.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO audit (time_ms, actor, action, target, details_json) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![now_ms(), actor, action, target, details.to_string()],
        )?;
        Ok(())
    }

    /// A page of the log, oldest first, each line with its cursor (its id).
    pub fn audit_page(&self, page: PageRequest) -> Result<Vec<(i64, AuditEntry)>, ConsoleError> {
        self.page_of(
            "SELECT id, time_ms, actor, action, target, details_json FROM audit
             WHERE CAST(?1 AS BIGINT) IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
            page,
            audit_row,
        )
    }

    /// The log newest first, for the audit page: lines whose actor, action and target contain
    /// the given texts (any case; `None`: any), older than cursor `before`.
    pub fn audit_review(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        target: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, ConsoleError> {
        let like = |t: Option<&str>| t.map(super::clips::contains_pattern);
        let (actor, action, target) = (like(actor), like(action), like(target));
        self.rows(
            "SELECT id, time_ms, actor, action, target, details_json FROM audit
             WHERE (CAST(?1 AS BIGINT) IS NULL OR id < ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR LOWER(actor) LIKE ?2 ESCAPE '\\')
               AND (CAST(?3 AS TEXT) IS NULL OR LOWER(action) LIKE ?3 ESCAPE '\\')
               AND (CAST(?4 AS TEXT) IS NULL OR LOWER(target) LIKE ?4 ESCAPE '\\')
             ORDER BY id DESC LIMIT ?5",
            args![before, actor, action, target, limit],
            audit_row,
        )
    }
}
