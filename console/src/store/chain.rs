//! `chain_entries`: the device-signed chain entries the console has accepted, per device, so a
//! clip cannot fork or splice a chain that an earlier clip of the same device already showed
//! (see [`crate::api::ingest::chain`] for the rules).
//!
//! ```text
//! chain_entries  device_id, chain (32 hex), seq PK; hash (64 hex: the entry's hash, what the
//!                next entry's prev names), prev (64 hex: the entry's own prev), clip_id (the
//!                clip that first carried it), accepted_ms
//! ```
//!
//! Rows are only added (an entry accepted once stays, with the first clip that carried it):
//! a later clip carrying the same entry finds it, one carrying another entry at its place is
//! refused.

use super::sql::args;
use super::Tx;
use crate::error::ConsoleError;

/// An entry the console has accepted at (device, chain, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry {
    /// The entry's hash (64 hex).
    pub hash: String,
    /// The hash of the entry before it that it names (64 hex).
    pub prev: String,
}

/// An entry to record as accepted.
pub struct AcceptedEntry<'a> {
    pub chain: &'a str,
    pub seq: u64,
    pub hash: String,
    pub prev: &'a str,
}

/// The database's integer for a seq: ingest refuses seqs beyond `i64::MAX` before they get here
/// ([`crate::api::ingest::chain`]).
fn seq_column(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Tx<'_> {
    /// The Ed25519 public key device `id` enrolled with (hex, as enrollment stored it).
    pub fn device_public_key(&self, id: &str) -> Result<Option<String>, ConsoleError> {
        self.opt("SELECT public_key FROM devices WHERE id = ?1", args![id], |r| r.get(0))
    }

    /// The entry the console accepted from `device_id` at (`chain`, `seq`), if any.
    pub fn held_chain_entry(
        &self,
        device_id: &str,
        chain: &str,
        seq: u64,
    ) -> Result<Option<HeldEntry>, ConsoleError> {
        self.opt(
            "SELECT hash, prev FROM chain_entries WHERE device_id = ?1 AND chain = ?2 AND seq = ?3",
            args![device_id, chain, seq_column(seq)],
            |r| Ok(HeldEntry { hash: r.get(0)?, prev: r.get(1)? }),
        )
    }

    /// Records `entries` of `device_id` as accepted with `clip_id` at `now` (those already
    /// held stay as they are).
    pub fn accept_chain_entries(
        &self,
        device_id: &str,
        clip_id: &str,
        entries: &[AcceptedEntry<'_>],
        now: i64,
    ) -> Result<(), ConsoleError> {
        for e in entries {
            self.exec(
                "INSERT INTO chain_entries (device_id, chain, seq, hash, prev, clip_id, accepted_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                args![device_id, e.chain, seq_column(e.seq), e.hash, e.prev, clip_id, now],
            )?;
        }
        Ok(())
    }
}
