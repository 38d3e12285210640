//! `meta`: the console's own settings and counters, one text value per key (tenant id, policy
//! version and the bundle signed for it, capture settings, indicator rules, expiries handled).

use rusqlite::{params, OptionalExtension};

use super::Tx;
use crate::error::ConsoleError;

impl Tx<'_> {
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, ConsoleError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), ConsoleError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Raises the policy version by one and returns the new value.
    pub fn bump_policy_version(&self) -> Result<u64, ConsoleError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('policy_version', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            [],
        )?;
        self.policy_version()
    }

    /// The policy version in force (0 before the first).
    pub fn policy_version(&self) -> Result<u64, ConsoleError> {
        match self.meta_get("policy_version")? {
            Some(v) => v.parse().map_err(|_| {
                ConsoleError::corrupt("policy_version", format!("{v:?} is not a number"))
            }),
            None => Ok(0),
        }
    }

    /// The latest time [`super::Store::event_ms`] handed out before this process, as the
    /// database records it.
    pub(super) fn last_event_ms(&self) -> Result<i64, ConsoleError> {
        Ok(self.conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(granted_ms) FROM role_grants), 0),
                        COALESCE((SELECT MAX(confirmed_ms) FROM role_grants), 0),
                        COALESCE((SELECT MAX(requested_ms) FROM approvals), 0))",
            [],
            |r| r.get(0),
        )?)
    }
}
