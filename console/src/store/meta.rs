//! `meta`: the console's own settings and counters, one text value per key (tenant id, policy
//! version and the bundle signed for it, capture settings, indicator rules, expiries handled).

use super::sql::args;
use super::Tx;
use crate::error::ConsoleError;

impl Tx<'_> {
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, ConsoleError> {
        self.opt("SELECT value FROM meta WHERE key = ?1", args![key], |r| r.get(0))
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            args![key, value],
        )?;
        Ok(())
    }

    /// Raises the policy version by one and returns the new value, in the transaction of the
    /// change it versions: the database hands it out, so two replicas never sign one version
    /// with different contents (writes are one at a time on either backend).
    pub fn bump_policy_version(&self) -> Result<u64, ConsoleError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES ('policy_version', '1')
             ON CONFLICT (key) DO UPDATE
             SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)",
            args![],
        )?;
        self.notify(crate::push::CHANNEL, crate::push::POLICY_PAYLOAD)?;
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

    /// The latest time [`Tx::event_ms`] handed out, as the database records it.
    pub(super) fn last_event_ms(&self) -> Result<i64, ConsoleError> {
        self.one(
            "SELECT COALESCE(MAX(t), 0) FROM (
                 SELECT MAX(granted_ms) AS t FROM role_grants
                 UNION ALL SELECT MAX(confirmed_ms) FROM role_grants
                 UNION ALL SELECT MAX(requested_ms) FROM approvals) AS times",
            args![],
            |r| r.get(0),
        )
    }
}
