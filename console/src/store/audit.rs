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
            |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    details: json_or_null(&r.get::<String>(5)?),
                })
            },
        )
    }
}
