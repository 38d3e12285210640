//! The device's chains ([`rearview_protocol::chain`]): every entry the daemon signed, and the
//! head of each capture stream's chain, kept in the spool database so a clip can carry the
//! entries that cover it long after they were signed, and a restart continues the chain where
//! it stopped.
//!
//! # Tables (schema version 3)
//!
//! ```text
//! chain_heads    session, monitor (the stream: one monitor of one graphical session) PK;
//!                chain (32 hex), next_seq, last_hash (64 hex), last_to_us (end of the last
//!                entry, UTC micros; NULL before the first): the stream's ChainHead
//! chain_entries  chain, seq PK; session, monitor (the stream it belongs to), segment_id
//!                (32 hex; NULL for a gap entry), from_us, to_us (the entry's span, UTC
//!                micros), entry_json (the signed entry exactly as it travels)
//! ```
//!
//! # Rules
//!
//! * [`Spool::append_chain`] stores new entries and the head they lead to in one transaction:
//!   after a crash the head and the entries agree (both or neither), so the daemon never signs
//!   a second entry for a seq it already used (a fork a console refuses).
//! * Entries must continue the stream's stored chain without a hole (the first names the
//!   stored head's seq and hash) or start a new chain at seq 0, be consecutive, and end at the
//!   head given (its seq, hash and end time): anything else is refused with
//!   [`UploadError::Chain`] and nothing is stored. Repeating a call that was stored (a retry
//!   after a crash) changes nothing.
//! * Entries are kept until [`Spool::prune_chain`] forgets those that ended before a time (the
//!   ring's oldest segment, say); heads are never pruned. A pending clip carries copies of its
//!   entries in its manifest, so pruning never takes one from a clip.

use rusqlite::{params, OptionalExtension, Transaction};

use rearview_protocol::chain::{ChainHead, Entry};

use super::Spool;
use crate::error::UploadError;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS chain_heads (
    session TEXT NOT NULL, monitor INTEGER NOT NULL, chain TEXT NOT NULL,
    next_seq INTEGER NOT NULL, last_hash TEXT NOT NULL, last_to_us INTEGER,
    PRIMARY KEY (session, monitor));
CREATE TABLE IF NOT EXISTS chain_entries (
    chain TEXT NOT NULL, seq INTEGER NOT NULL, session TEXT NOT NULL, monitor INTEGER NOT NULL,
    segment_id TEXT, from_us INTEGER NOT NULL, to_us INTEGER NOT NULL, entry_json TEXT NOT NULL,
    PRIMARY KEY (chain, seq));
CREATE INDEX IF NOT EXISTS chain_entries_segment ON chain_entries (segment_id);
CREATE INDEX IF NOT EXISTS chain_entries_to ON chain_entries (to_us);
"#;

/// One capture stream: a monitor of a graphical session (the daemon's session id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub session: String,
    pub monitor: u32,
}

fn refused(why: String) -> UploadError {
    UploadError::Chain(why)
}

fn parse_entry(json: &str) -> Result<Entry, UploadError> {
    serde_json::from_str(json)
        .map_err(|e| UploadError::Spool(format!("a stored chain entry is unreadable: {e}")))
}

fn to_i64(seq: u64) -> Result<i64, UploadError> {
    i64::try_from(seq).map_err(|_| refused(format!("seq {seq} is beyond what the spool stores")))
}

impl Spool {
    /// The stored head of the stream's chain (None: the stream has no chain yet).
    pub fn chain_head(&self, key: &StreamKey) -> Result<Option<ChainHead>, UploadError> {
        let conn = self.conn();
        read_head(&conn, key)
    }

    /// Stores `entries` (already appended to `head`, in order) and the new `head`: one
    /// transaction, so a crash keeps both or neither. See the module docs for what is refused.
    pub fn append_chain(
        &self,
        key: &StreamKey,
        head: &ChainHead,
        entries: &[Entry],
    ) -> Result<(), UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let stored = read_head(&tx, key)?;
        if stored.as_ref() == Some(head) {
            return already_stored(&tx, entries);
        }
        check_append(key, stored.as_ref(), head, entries)?;
        for e in entries {
            let json = serde_json::to_string(e).map_err(|e| UploadError::Spool(e.to_string()))?;
            tx.execute(
                "INSERT INTO chain_entries
                     (chain, seq, session, monitor, segment_id, from_us, to_us, entry_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    e.chain,
                    to_i64(e.seq)?,
                    key.session,
                    key.monitor,
                    e.segment.as_ref().map(|s| s.id.as_str()),
                    e.from_utc_micros,
                    e.to_utc_micros,
                    json
                ],
            )?;
        }
        tx.execute(
            "INSERT INTO chain_heads (session, monitor, chain, next_seq, last_hash, last_to_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (session, monitor) DO UPDATE SET chain = excluded.chain,
                 next_seq = excluded.next_seq, last_hash = excluded.last_hash,
                 last_to_us = excluded.last_to_us",
            params![
                key.session,
                key.monitor,
                head.chain,
                to_i64(head.next_seq)?,
                head.last_hash,
                head.last_to_utc_micros
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every stored entry whose span overlaps [from, to] (inclusive), ordered by chain then seq.
    pub fn chain_entries_overlapping(
        &self,
        from_utc_micros: i64,
        to_utc_micros: i64,
    ) -> Result<Vec<Entry>, UploadError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT entry_json FROM chain_entries WHERE to_us >= ?1 AND from_us <= ?2
             ORDER BY chain, seq",
        )?;
        let rows: Vec<String> = stmt
            .query_map([from_utc_micros, to_utc_micros], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        rows.iter().map(|j| parse_entry(j)).collect()
    }

    /// The entry of segment `segment_id` (32 hex) and the gap entries right before it in its
    /// chain (back to the previous segment entry), in seq order; empty when unknown.
    pub fn chain_entries_for_segment(&self, segment_id: &str) -> Result<Vec<Entry>, UploadError> {
        let conn = self.conn();
        let found: Option<(String, i64)> = conn
            .query_row(
                "SELECT chain, seq FROM chain_entries WHERE segment_id = ?1 ORDER BY rowid LIMIT 1",
                [segment_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((chain, seq)) = found else { return Ok(Vec::new()) };
        let mut stmt = conn.prepare(
            "SELECT entry_json, segment_id IS NOT NULL FROM chain_entries
             WHERE chain = ?1 AND seq <= ?2 ORDER BY seq DESC",
        )?;
        let mut rows = stmt.query(params![chain, seq])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let (json, is_segment): (String, bool) = (row.get(0)?, row.get(1)?);
            if is_segment && !out.is_empty() {
                break;
            }
            out.push(parse_entry(&json)?);
        }
        out.reverse();
        Ok(out)
    }

    /// Forgets entries that ended before `before_utc_micros` (heads are kept). Returns how many.
    pub fn prune_chain(&self, before_utc_micros: i64) -> Result<u64, UploadError> {
        let n = self
            .conn()
            .execute("DELETE FROM chain_entries WHERE to_us < ?1", [before_utc_micros])?;
        Ok(n as u64)
    }
}

fn read_head(
    conn: &rusqlite::Connection,
    key: &StreamKey,
) -> Result<Option<ChainHead>, UploadError> {
    let row: Option<(String, i64, String, Option<i64>)> = conn
        .query_row(
            "SELECT chain, next_seq, last_hash, last_to_us FROM chain_heads
             WHERE session = ?1 AND monitor = ?2",
            params![key.session, key.monitor],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    row.map(|(chain, next_seq, last_hash, last_to_utc_micros)| {
        let next_seq = u64::try_from(next_seq)
            .map_err(|_| UploadError::Spool(format!("chain {chain} has next seq {next_seq}")))?;
        Ok(ChainHead { chain, next_seq, last_hash, last_to_utc_micros })
    })
    .transpose()
}

/// A repeat of a call already stored: every entry must be there, unchanged.
fn already_stored(tx: &Transaction<'_>, entries: &[Entry]) -> Result<(), UploadError> {
    let mut stmt =
        tx.prepare_cached("SELECT entry_json FROM chain_entries WHERE chain = ?1 AND seq = ?2")?;
    for e in entries {
        let json: Option<String> =
            stmt.query_row(params![e.chain, to_i64(e.seq)?], |r| r.get(0)).optional()?;
        if json.map(|j| parse_entry(&j)).transpose()?.as_ref() != Some(e) {
            return Err(refused(format!(
                "chain {} entry {}: the head is already stored but this entry is not",
                e.chain, e.seq
            )));
        }
    }
    Ok(())
}

/// Whether `entries` lead from the stream's stored head (or a new chain's start) to `head`.
fn check_append(
    key: &StreamKey,
    stored: Option<&ChainHead>,
    head: &ChainHead,
    entries: &[Entry],
) -> Result<(), UploadError> {
    let continues = stored.filter(|s| s.chain == head.chain);
    let (mut seq, mut hash) = match continues {
        Some(s) => (s.next_seq, s.last_hash.clone()),
        None => (0, hex::encode([0u8; 32])),
    };
    let mut last_to = continues.and_then(|s| s.last_to_utc_micros);
    for e in entries {
        let at = format!("chain {} entry {}", e.chain, e.seq);
        if e.chain != head.chain {
            return Err(refused(format!("{at} is not of the head's chain {}", head.chain)));
        }
        if e.stream.session != key.session || e.stream.monitor != key.monitor {
            return Err(refused(format!(
                "{at} is of session {:?} monitor {}, not the stream's ({:?}, {})",
                e.stream.session, e.stream.monitor, key.session, key.monitor
            )));
        }
        if e.seq != seq || e.prev != hash {
            return Err(refused(format!(
                "{at} does not follow the stored chain (want seq {seq} naming the hash of the \
                 entry before it)"
            )));
        }
        hash = hex::encode(e.hash()?);
        seq += 1;
        last_to = Some(e.to_utc_micros);
    }
    if head.next_seq != seq || head.last_hash != hash || head.last_to_utc_micros != last_to {
        return Err(refused(format!(
            "the head of chain {} (next seq {}) is not where its entries lead (next seq {seq})",
            head.chain, head.next_seq
        )));
    }
    Ok(())
}
