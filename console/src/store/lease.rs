//! `leases`: which console process does a piece of background work (approval expiry, later
//! retention), so that it runs once however many replicas serve the tenant.
//!
//! ```text
//! leases  name (the work), holder (a process's random id), until_ms
//! ```
//!
//! A process takes a lease that nobody holds or whose holder let it lapse, and renews its own
//! well before it ends; a holder that dies stops renewing, and another process takes the lease
//! once `until_ms` has passed. The work itself stays safe to run twice (each piece records in
//! the database what it handled, in the transaction that handles it): the lease makes it run
//! once, not correct.

use super::sql::args;
use super::Tx;
use crate::error::ConsoleError;

impl Tx<'_> {
    /// Takes or renews lease `name` for `holder` until `now + ttl_ms`; true when `holder` holds
    /// it now, false when another process does.
    pub fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
             WHERE leases.holder = excluded.holder OR leases.until_ms <= ?4",
            args![name, holder, now.saturating_add(ttl_ms), now],
        )?;
        Ok(changed == 1)
    }

    /// Who holds lease `name` and until when, if anybody ever took it.
    pub fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, ConsoleError> {
        self.opt("SELECT holder, until_ms FROM leases WHERE name = ?1", args![name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }
}
