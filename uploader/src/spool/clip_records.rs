//! Clip records: the clips the agent daemon opened for triggers, kept in the spool database
//! beside the spooled clips they become, so the clip's whole life is in one store.
//!
//! A record is *collecting* while its trigger's window runs: it lists the ring segments taken
//! for it (in the order taken) and which of them were handed to the spool. When the window has
//! ended it is closed (*pending*, with the parts of the window nothing covered) or it *failed*
//! (with the reason). Every change is one transaction, so a crash leaves the record before the
//! change or after it.
//!
//! # Tables (schema version 2)
//!
//! ```text
//! clip_records   clip_id PK, trigger_id UNIQUE (NULL for clips opened offline), user (the
//!                principal the trigger named), reason, mode, from_us, to_us (the window,
//!                UTC micros), state (collecting | pending | failed), in_spool (0/1: the spool
//!                has the clip, open while collecting), missing_json ([ClipMissing] as JSON),
//!                error (the last failure, NULL when none); rowid order = opening order
//! clip_record_segments  clip_id, segment_id (ring segment id, hex), spooled (0/1: handed to
//!                the spool); PK (clip_id, segment_id); rowid order = the order taken
//! ```
//!
//! At most [`MAX_KEPT`] records are kept; beyond that the oldest that are no longer collecting
//! are forgotten when a new one is opened. `trigger_id` is unique, so a trigger that comes again
//! finds its clip ([`Spool::clip_record_for_trigger`]) instead of opening another.

use std::collections::HashSet;

use rusqlite::{params, Transaction};
use serde::{Deserialize, Serialize};

use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::CaptureMode;

use super::Spool;
use crate::error::UploadError;

/// Clip records kept (records no longer collecting beyond this are forgotten, oldest first).
pub const MAX_KEPT: usize = 200;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clip_records (
    clip_id TEXT PRIMARY KEY, trigger_id TEXT UNIQUE, user TEXT NOT NULL, reason TEXT NOT NULL,
    mode TEXT NOT NULL, from_us INTEGER NOT NULL, to_us INTEGER NOT NULL, state TEXT NOT NULL,
    in_spool INTEGER NOT NULL, missing_json TEXT NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS clip_record_segments (
    clip_id TEXT NOT NULL, segment_id TEXT NOT NULL, spooled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (clip_id, segment_id));
"#;

/// Where a clip the daemon opened is in its life on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// The window runs (or its last segment has not closed): segments are still taken.
    Collecting,
    /// Closed and handed to the spool; the spool says how far its upload went.
    Pending,
    /// Given up: larger than the whole offline cache, dropped from it, or refused.
    Failed,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Collecting => "collecting",
            RecordState::Pending => "pending",
            RecordState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<RecordState, UploadError> {
        match s {
            "collecting" => Ok(RecordState::Collecting),
            "pending" => Ok(RecordState::Pending),
            "failed" => Ok(RecordState::Failed),
            other => Err(UploadError::Spool(format!("clip record in unknown state {other:?}"))),
        }
    }
}

/// A part of a clip's window no segment covers, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipMissing {
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    pub reason: String,
}

/// A clip the daemon opened, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipRecord {
    pub id: String,
    pub trigger_id: Option<String>,
    /// The principal the trigger named.
    pub user: String,
    pub reason: String,
    /// The mode the manifest names (triggered clips: specific activities).
    pub mode: CaptureMode,
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    /// Ring segment ids (hex) taken for the clip, in the order taken.
    pub segments: Vec<String>,
    /// Those of `segments` already handed to the spool.
    pub spooled: HashSet<String>,
    /// The spool has this clip (open while collecting).
    pub in_spool: bool,
    pub state: RecordState,
    pub missing: Vec<ClipMissing>,
    pub error: Option<String>,
}

impl ClipRecord {
    /// A new collecting record with no segments.
    pub fn collecting(
        id: String,
        trigger_id: Option<String>,
        user: String,
        reason: String,
        window: ClipWindow,
    ) -> ClipRecord {
        ClipRecord {
            id,
            trigger_id,
            user,
            reason,
            mode: CaptureMode::SpecificActivities,
            from_utc_micros: window.from_utc_micros,
            to_utc_micros: window.to_utc_micros,
            segments: Vec::new(),
            spooled: HashSet::new(),
            in_spool: false,
            state: RecordState::Collecting,
            missing: Vec::new(),
            error: None,
        }
    }

    pub fn is_collecting(&self) -> bool {
        self.state == RecordState::Collecting
    }

    /// Segments not handed to the spool yet, in the order taken (one set lookup each).
    pub fn unspooled(&self) -> Vec<String> {
        self.segments.iter().filter(|s| !self.spooled.contains(*s)).cloned().collect()
    }

    /// Whether some segment is not handed to the spool yet.
    pub fn has_unspooled(&self) -> bool {
        self.segments.iter().any(|s| !self.spooled.contains(s))
    }

    /// Applies `change` (as [`Spool::update_clip_record`] stored it).
    pub fn apply(&mut self, change: &ClipChange<'_>) {
        self.spooled.extend(change.spooled.iter().cloned());
        self.in_spool = change.in_spool;
        self.state = change.state;
        if let Some(missing) = change.missing {
            self.missing = missing.to_vec();
        }
        self.error = change.error.map(str::to_owned);
    }
}

/// A clip's window, UTC micros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipWindow {
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
}

/// One change of a record after a hand-over to the spool, stored in one transaction.
#[derive(Clone, Copy, Debug)]
pub struct ClipChange<'a> {
    /// Segments handed over by this change.
    pub spooled: &'a [String],
    pub in_spool: bool,
    pub state: RecordState,
    /// The missing ranges, when this change sets them (the close).
    pub missing: Option<&'a [ClipMissing]>,
    pub error: Option<&'a str>,
}

fn json_err(e: serde_json::Error) -> UploadError {
    UploadError::Spool(format!("clip record unreadable: {e}"))
}

impl Spool {
    /// Stores a new record with its segments, and forgets the oldest finished records beyond
    /// [`MAX_KEPT`]. Fails (and stores nothing) if the id or trigger id is already recorded.
    pub fn insert_clip_record(&self, record: &ClipRecord) -> Result<(), UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_record(&tx, record, false)?;
        forget_beyond_kept(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores records from an older agent (its `clips.json`); those already recorded are left
    /// as they are, so importing twice changes nothing. Returns how many were new.
    pub fn import_clip_records(&self, records: &[ClipRecord]) -> Result<usize, UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut new = 0;
        for record in records {
            new += usize::from(insert_record(&tx, record, true)?);
        }
        forget_beyond_kept(&tx)?;
        tx.commit()?;
        Ok(new)
    }

    /// Adds segments (not handed over yet) to a record; ones it lists already are ignored.
    pub fn add_clip_segments(&self, clip_id: &str, segments: &[String]) -> Result<(), UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_segments(&tx, clip_id, segments, &HashSet::new())?;
        tx.commit()?;
        Ok(())
    }

    /// Takes segments off a record (the ring no longer holds them).
    pub fn remove_clip_segments(
        &self,
        clip_id: &str,
        segments: &[String],
    ) -> Result<(), UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut del = tx.prepare_cached(
                "DELETE FROM clip_record_segments WHERE clip_id = ?1 AND segment_id = ?2",
            )?;
            for sid in segments {
                del.execute(params![clip_id, sid])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores what a hand-over to the spool made of a record.
    pub fn update_clip_record(
        &self,
        clip_id: &str,
        change: &ClipChange<'_>,
    ) -> Result<(), UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let missing = change.missing.map(serde_json::to_string).transpose().map_err(json_err)?;
        let updated = tx.execute(
            "UPDATE clip_records SET in_spool = ?1, state = ?2, error = ?3,
             missing_json = COALESCE(?4, missing_json) WHERE clip_id = ?5",
            params![change.in_spool, change.state.as_str(), change.error, missing, clip_id],
        )?;
        if updated == 0 {
            return Err(UploadError::Spool(format!("no clip record {clip_id}")));
        }
        {
            let mut mark = tx.prepare_cached(
                "UPDATE clip_record_segments SET spooled = 1 WHERE clip_id = ?1 AND segment_id = ?2",
            )?;
            for sid in change.spooled {
                mark.execute(params![clip_id, sid])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records still collecting, oldest first.
    pub fn collecting_clip_records(&self) -> Result<Vec<ClipRecord>, UploadError> {
        self.load_records("WHERE state = 'collecting'", &[])
    }

    /// Every record kept, oldest first.
    pub fn clip_records(&self) -> Result<Vec<ClipRecord>, UploadError> {
        self.load_records("", &[])
    }

    /// The record of the clip opened for `trigger_id`, if any.
    pub fn clip_record_for_trigger(
        &self,
        trigger_id: &str,
    ) -> Result<Option<ClipRecord>, UploadError> {
        Ok(self.load_records("WHERE trigger_id = ?1", &[trigger_id])?.pop())
    }

    fn load_records(&self, filter: &str, args: &[&str]) -> Result<Vec<ClipRecord>, UploadError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT clip_id, trigger_id, user, reason, mode, from_us, to_us, state, in_spool,
                    missing_json, error FROM clip_records {filter} ORDER BY rowid"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                ClipRecord {
                    id: r.get(0)?,
                    trigger_id: r.get(1)?,
                    user: r.get(2)?,
                    reason: r.get(3)?,
                    mode: mode_from_name(r.get::<_, String>(4)?)?,
                    from_utc_micros: r.get(5)?,
                    to_utc_micros: r.get(6)?,
                    segments: Vec::new(),
                    spooled: HashSet::new(),
                    in_spool: r.get(8)?,
                    state: RecordState::Collecting,
                    missing: Vec::new(),
                    error: r.get(10)?,
                },
                r.get::<_, String>(7)?,
                r.get::<_, String>(9)?,
            ))
        })?;
        let mut segs = conn.prepare_cached(
            "SELECT segment_id, spooled FROM clip_record_segments WHERE clip_id = ?1 ORDER BY rowid",
        )?;
        let mut records = Vec::new();
        for row in rows {
            let (mut record, state, missing) = row?;
            record.state = RecordState::parse(&state)?;
            record.missing = serde_json::from_str(&missing).map_err(json_err)?;
            for seg in segs.query_map([&record.id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (sid, spooled): (String, bool) = seg?;
                if spooled {
                    record.spooled.insert(sid.clone());
                }
                record.segments.push(sid);
            }
            records.push(record);
        }
        Ok(records)
    }
}

/// Inserts `record` (with `or_ignore`, leaves one already there alone); returns whether it was
/// new.
fn insert_record(
    tx: &Transaction<'_>,
    record: &ClipRecord,
    or_ignore: bool,
) -> Result<bool, UploadError> {
    let missing = serde_json::to_string(&record.missing).map_err(json_err)?;
    let verb = if or_ignore { "INSERT OR IGNORE" } else { "INSERT" };
    let inserted = tx.execute(
        &format!(
            "{verb} INTO clip_records (clip_id, trigger_id, user, reason, mode, from_us, to_us,
             state, in_spool, missing_json, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            record.id,
            record.trigger_id,
            record.user,
            record.reason,
            capture_mode_name(record.mode),
            record.from_utc_micros,
            record.to_utc_micros,
            record.state.as_str(),
            record.in_spool,
            missing,
            record.error,
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    insert_segments(tx, &record.id, &record.segments, &record.spooled)?;
    Ok(true)
}

fn insert_segments(
    tx: &Transaction<'_>,
    clip_id: &str,
    segments: &[String],
    spooled: &HashSet<String>,
) -> Result<(), UploadError> {
    let mut add = tx.prepare_cached(
        "INSERT OR IGNORE INTO clip_record_segments (clip_id, segment_id, spooled) VALUES (?1, ?2, ?3)",
    )?;
    for sid in segments {
        add.execute(params![clip_id, sid, spooled.contains(sid)])?;
    }
    Ok(())
}

/// Forgets the oldest records no longer collecting, beyond [`MAX_KEPT`].
fn forget_beyond_kept(tx: &Transaction<'_>) -> Result<(), UploadError> {
    let total: i64 = tx.query_row("SELECT COUNT(*) FROM clip_records", [], |r| r.get(0))?;
    let excess = total - MAX_KEPT as i64;
    if excess <= 0 {
        return Ok(());
    }
    let ids: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT clip_id FROM clip_records WHERE state != 'collecting' ORDER BY rowid LIMIT ?1",
        )?;
        let rows = stmt.query_map([excess], |r| r.get(0))?.collect::<Result<_, _>>()?;
        rows
    };
    for id in &ids {
        tx.execute("DELETE FROM clip_record_segments WHERE clip_id = ?1", [id])?;
        tx.execute("DELETE FROM clip_records WHERE clip_id = ?1", [id])?;
    }
    Ok(())
}

/// A stored mode name back to its mode; a name this build does not know is a damaged row.
fn mode_from_name(name: String) -> rusqlite::Result<CaptureMode> {
    [CaptureMode::SpecificActivities, CaptureMode::AllActivities]
        .into_iter()
        .find(|m| capture_mode_name(*m) == name)
        .ok_or_else(|| {
            let why = format!("clip record in unknown mode {name:?}");
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, why.into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool from before the schema version was kept (version 0, no clip tables) opens with
    /// its rows intact and gains the clip tables; one from a newer agent is refused with a
    /// message, and left as it was.
    #[test]
    fn schema_version_upgrades_old_spools_and_refuses_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("spool.db");
        {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(super::super::SCHEMA).unwrap();
            conn.execute("INSERT INTO counters (name, value) VALUES ('lost_clips', 3)", [])
                .unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.stats().unwrap().lost_clips, 3);
        let window = ClipWindow { from_utc_micros: 0, to_utc_micros: 1 };
        let record =
            ClipRecord::collecting("c1".into(), Some("t".into()), "a".into(), "r".into(), window);
        spool.insert_clip_record(&record).unwrap();
        assert!(spool.insert_clip_record(&record).is_err(), "one record per clip id");
        drop(spool);
        let conn = rusqlite::Connection::open(&db).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, super::super::SCHEMA_VERSION);
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = Spool::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let kept: i64 =
            conn.query_row("SELECT COUNT(*) FROM clip_records", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1);
    }

    /// Beyond MAX_KEPT records, the oldest finished ones go; collecting ones always stay.
    #[test]
    fn finished_records_beyond_the_limit_are_forgotten_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let window = ClipWindow { from_utc_micros: 0, to_utc_micros: 1 };
        let make = |n: usize, state: RecordState| {
            let mut r =
                ClipRecord::collecting(format!("c{n}"), None, "a".into(), "r".into(), window);
            r.state = state;
            r.segments = vec![format!("s{n}")];
            r
        };
        spool.insert_clip_record(&make(0, RecordState::Collecting)).unwrap();
        for n in 1..=MAX_KEPT {
            spool.insert_clip_record(&make(n, RecordState::Pending)).unwrap();
        }
        let kept = spool.clip_records().unwrap();
        assert_eq!(kept.len(), MAX_KEPT);
        assert_eq!(kept[0].id, "c0", "collecting stays");
        assert_eq!(kept[1].id, "c2", "the oldest finished one went");
        assert_eq!(kept[1].segments, vec!["s2".to_string()]);
    }
}
