//! The offline spool: clips waiting to reach the console, with their sealed segments.
//!
//! # Why copies
//!
//! The spool holds its own copy of every segment a pending clip names (a hard link when the
//! ring is on the same file system, a copy otherwise). The ring can then evict on its own
//! schedule, the spool's size is exactly what the policy's *offline cache* bounds, and a crash
//! of the agent between "ring evicted" and "clip sent" cannot lose a segment. Segments are
//! already sealed to the tenant key, so the spool holds no plaintext.
//!
//! # Layout
//!
//! ```text
//! SPOOL/spool.db                 SQLite, WAL
//! SPOOL/segments/<sha256>        sealed segment bytes, named by their SHA-256
//!
//! clips      clip_id PK, user, manifest_json, bytes (sum of its segment sizes),
//!            state (pending | sent | refused | lost), enqueued_ms, sent_ms
//! clip_segments  clip_id, sha256              which segments a clip names
//! segments   sha256 PK, size, sent (0/1)      one row per segment a pending clip names; its
//!                                             file in segments/ while sent = 0
//! usage      day (YYYY-MM-DD, UTC), user, bytes    upload bytes per user per day
//! counters   name PK, value                   lost_clips, lost_segments, lost_bytes
//! clip_records, clip_record_segments           the daemon's clips while it collects them
//!                                             and after (see [`clip_records`])
//! chain_heads, chain_entries                  the device-signed chain of each capture stream
//!                                             and its head (see [`chain`])
//! ```
//!
//! `PRAGMA user_version` is the schema version: 0 for a spool from before it was kept (the
//! tables above without the clip records; opening adds them), 2 with the clip records, 3
//! ([`SCHEMA_VERSION`]) with the chains. Opening an older spool adds the tables it lacks in one
//! transaction and keeps everything it holds. A spool written by a newer agent is refused
//! rather than guessed at.
//!
//! # Chain entries in manifests
//!
//! A clip's manifest carries the chain entries that cover it and the device's absence notes
//! (see [`ClipManifest`]), as the agent hands them over ([`crate::NewClip`]). Extending a
//! spooled open clip keeps the entries and notes stored and adds the new ones: the union by
//! `(chain, seq)` (entries) and by the entry hash a note explains (notes), entries kept in
//! chain order (chain id, then seq). A segment given up as lost ([`Spool::settle_lost`]) keeps
//! its entry, and gets an absence note signed with the device key.
//!
//! # Invariants and crash recovery
//!
//! * A segment file is written to `segments/.tmp-*`, fsynced and renamed *before* the
//!   transaction that inserts its row commits. On open, files without a row and temporary
//!   files are deleted: a crash mid-enqueue leaves no trace, the caller enqueues again. So
//!   are files of segments marked sent (a crash between the mark and the deletion).
//! * A clip is `pending` until the console said it is complete; only then `sent`. Every step of
//!   sending (manifest, segments, status) is idempotent on the console, so resuming a
//!   `pending` clip after a crash of either side repeats at most one segment upload and never
//!   loses one: **at least once, and no duplicate on the console**.
//! * An *open* clip (a window still running, see [`ClipManifest`]) is pending like any other;
//!   the agent extends it by enqueueing the same clip id again with more segments and, last,
//!   closed. Each extension writes the new files, then replaces the manifest and adds the
//!   segment rows in one transaction, so a crash leaves the old version or the new one.
//!   Segments already named are not added twice, so repeating an extension after a crash is
//!   harmless.
//! * A segment's file is deleted as soon as the console has stored it (`sent` = 1: the console
//!   keeps blobs by hash and never asks for a stored one again), so an open clip's early
//!   segments do not sit in the spool until its window ends; its row goes when no pending clip
//!   names it any more (then also the file of a segment never sent).
//! * The offline cache ([`CacheRule`]) is the policy's `offline_cache.max_bytes`, capped by
//!   the agent's `[spool] max_bytes`. When the unsent bytes would exceed it, with
//!   `when_full = overwrite_oldest` (the default) the oldest pending clips are dropped whole
//!   (their unshared segments deleted) until the new clip fits; with `drop_newest` the new
//!   clip is refused instead (kept as a `lost` row, nothing written) and the cached ones stay.
//!   An extension of an open clip that does not fit is the newest data too: the whole clip
//!   is then dropped. Either way the `lost_*` counters record it so the device can report
//!   what was lost.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rearview_config::{OfflineCache, WhenFull};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::UploadError;
use rearview_protocol::chain::{Absence, Signer};
use rearview_protocol::{ClipManifest, ClipState, MissingRange};

pub mod chain;
pub mod clip_records;
pub use chain::StreamKey;
pub use clip_records::{ClipChange, ClipMissing, ClipRecord, ClipWindow, RecordState};

/// The spool database's schema version (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clips (
    clip_id TEXT PRIMARY KEY, user TEXT NOT NULL, manifest_json TEXT NOT NULL,
    bytes INTEGER NOT NULL, state TEXT NOT NULL, enqueued_ms INTEGER NOT NULL, sent_ms INTEGER);
CREATE TABLE IF NOT EXISTS clip_segments (
    clip_id TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (clip_id, sha256));
CREATE INDEX IF NOT EXISTS clip_segments_hash ON clip_segments (sha256);
CREATE TABLE IF NOT EXISTS segments (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS usage (day TEXT NOT NULL, user TEXT NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (day, user));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"#;

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction; refuses a newer one.
fn migrate(conn: &Connection) -> Result<(), UploadError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(UploadError::Spool(format!(
            "the spool database has schema version {version}, newer than this agent's \
             ({SCHEMA_VERSION}); install the newer agent again or move the spool aside"
        )));
    }
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} {} {} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
            clip_records::SCHEMA,
            chain::SCHEMA
        ))?;
    }
    Ok(())
}

/// How big the offline cache is and what happens when a clip does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRule {
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

impl CacheRule {
    /// The policy's offline cache, capped by the agent's own ceiling (`[spool] max_bytes`).
    pub fn effective(policy: &OfflineCache, local_max_bytes: u64) -> CacheRule {
        CacheRule { max_bytes: policy.max_bytes.min(local_max_bytes), when_full: policy.when_full }
    }

    /// Overwrite-oldest with `max_bytes`.
    pub fn overwrite_oldest(max_bytes: u64) -> CacheRule {
        CacheRule { max_bytes, when_full: WhenFull::OverwriteOldest }
    }
}

/// A pending clip, as the sender needs it.
#[derive(Debug, Clone)]
pub struct PendingClip {
    pub manifest: ClipManifest,
    pub bytes: u64,
}

/// What the spool holds, for status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpoolStats {
    pub pending_clips: u64,
    pub sent_clips: u64,
    /// Bytes of segment files on disk (unsent segments of pending clips).
    pub spooled_bytes: u64,
    pub lost_clips: u64,
    pub lost_segments: u64,
    pub lost_bytes: u64,
    /// Segment files that vanished from the spool before they were sent; each became a
    /// missing range of the clips that named it (see [`Spool::settle_lost`]).
    #[serde(default)]
    pub lost_files: u64,
}

/// The result of enqueueing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// False when this clip id was already spooled (the call was a repeat or an extension).
    pub new: bool,
    /// Segments added to an open clip that was already spooled.
    pub added: usize,
    /// The clip's state after the call: `pending`, or for a clip spooled before, whatever it
    /// became (`sent`, `refused`, `lost`: an extension then changes nothing).
    pub state: ClipState,
    /// Older clips dropped to make room.
    pub dropped_clips: Vec<String>,
}

pub struct Spool {
    conn: Mutex<Connection>,
    dir: PathBuf,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).finish()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> UploadError {
    UploadError::LocalFile { path: path.to_owned(), source: e }
}

impl Spool {
    /// Opens or creates the spool in `dir`, and cleans up after a crash.
    pub fn open(dir: &Path) -> Result<Spool, UploadError> {
        let seg_dir = dir.join("segments");
        std::fs::create_dir_all(&seg_dir).map_err(|e| io_err(&seg_dir, e))?;
        let conn = Connection::open(dir.join("spool.db"))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        let spool = Spool { conn: Mutex::new(conn), dir: dir.to_owned() };
        spool.recover()?;
        Ok(spool)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segment_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("segments").join(sha256)
    }

    /// Deletes files the database does not count: without a row (a crash between write and
    /// commit) or of a segment the console already has (a crash between marking it sent and
    /// deleting its file).
    fn recover(&self) -> Result<(), UploadError> {
        let known: std::collections::HashSet<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT sha256 FROM segments WHERE sent = 0")?;
            let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            rows
        };
        let seg_dir = self.dir.join("segments");
        for entry in std::fs::read_dir(&seg_dir).map_err(|e| io_err(&seg_dir, e))? {
            let entry = entry.map_err(|e| io_err(&seg_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(file = %name, "spool: removing a file left by an interrupted step");
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Adds a clip and its segments (`(sha256, bytes)`, hashes already checked by the caller),
    /// or extends a spooled open clip: segments it does not name yet are added, and its
    /// `missing` and `open` are taken from `manifest`. A spooled closed clip is left as it is.
    /// When the unsent bytes would exceed the cache, `cache.when_full` decides (see the module
    /// docs): the oldest other pending clips are dropped, or this one.
    pub fn enqueue(
        &self,
        manifest: &ClipManifest,
        segments: &[(String, SegmentBytes)],
        cache: CacheRule,
    ) -> Result<Enqueued, UploadError> {
        let spooled: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT state, manifest_json FROM clips WHERE clip_id = ?1",
                [&manifest.clip_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let mut next = manifest.clone();
        let mut adding: Vec<&(String, SegmentBytes)> = segments.iter().collect();
        if let Some((state, json)) = spooled {
            // The state first: a refused clip's stored manifest carries the refusal
            // (`mark_refused`), which a `ClipManifest` does not read.
            let state = stored_state(&state)?;
            if state != ClipState::Pending {
                return Ok(Enqueued { new: false, added: 0, state, dropped_clips: vec![] });
            }
            let stored: ClipManifest = serde_json::from_str(&json)
                .map_err(|e| UploadError::Spool(format!("spooled manifest unreadable: {e}")))?;
            if !stored.open {
                return Ok(Enqueued { new: false, added: 0, state, dropped_clips: vec![] });
            }
            let named: std::collections::HashSet<&str> =
                stored.segments.iter().map(|s| s.sha256.as_str()).collect();
            adding.retain(|(sha, _)| !named.contains(sha.as_str()));
            next.segments = stored.segments.clone();
            next.segments.extend(
                manifest.segments.iter().filter(|s| !named.contains(s.sha256.as_str())).cloned(),
            );
            // Ranges the spool itself named missing (segment files lost on the device, see
            // `settle_lost`) stay named when the agent extends or closes the clip with its own.
            for m in &stored.missing {
                if !next.missing.contains(m) {
                    next.missing.push(m.clone());
                }
            }
            next.missing.sort_by_key(|m| (m.start_ms, m.end_ms));
            unite_evidence(&mut next, &stored);
            if next.segments == stored.segments
                && next.chain == stored.chain
                && next.absent == stored.absent
                && next.open
            {
                return Ok(Enqueued { new: false, added: 0, state, dropped_clips: vec![] });
            }
            return match self.write(&next, &adding, cache, true)? {
                Written::Kept { dropped_clips } => {
                    Ok(Enqueued { new: false, added: adding.len(), state, dropped_clips })
                }
                Written::Refused => Ok(Enqueued {
                    new: false,
                    added: 0,
                    state: ClipState::Lost,
                    dropped_clips: vec![],
                }),
            };
        }
        match self.write(&next, &adding, cache, false)? {
            Written::Kept { dropped_clips } => {
                Ok(Enqueued { new: true, added: 0, state: ClipState::Pending, dropped_clips })
            }
            Written::Refused => {
                Ok(Enqueued { new: true, added: 0, state: ClipState::Lost, dropped_clips: vec![] })
            }
        }
    }

    /// Makes room (or, with drop-newest, refuses this clip), then [stores](Self::store) it.
    fn write(
        &self,
        manifest: &ClipManifest,
        segments: &[&(String, SegmentBytes)],
        cache: CacheRule,
        update: bool,
    ) -> Result<Written, UploadError> {
        let new_bytes: u64 = {
            let conn = self.conn();
            let mut have =
                conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM segments WHERE sha256 = ?1)")?;
            // (A segment already sent has a row and needs no file: it counts as nothing.)
            let mut total = 0;
            for (sha, data) in segments {
                if !have.query_row([sha], |r| r.get::<_, bool>(0))? {
                    total += data.len()?;
                }
            }
            total
        };
        if new_bytes > cache.max_bytes {
            return Err(UploadError::TooLarge(format!(
                "clip {} needs {new_bytes} bytes, more than the whole offline cache ({})",
                manifest.clip_id, cache.max_bytes
            )));
        }
        let fits = |spool: &Spool| -> Result<bool, UploadError> {
            Ok(spool.stats()?.spooled_bytes + new_bytes <= cache.max_bytes)
        };
        if cache.when_full == WhenFull::DropNewest && new_bytes > 0 && !fits(self)? {
            self.refuse_newest(manifest, segments.len() as u64, new_bytes, update)?;
            return Ok(Written::Refused);
        }
        let mut dropped_clips = Vec::new();
        while !fits(self)? {
            match self.drop_oldest(&manifest.clip_id)? {
                Some(c) => dropped_clips.push(c),
                None => break,
            }
        }
        self.store(manifest, segments, update)?;
        Ok(Written::Kept { dropped_clips })
    }

    /// Writes the files of `segments` the spool lacks, then inserts (or, with `update`,
    /// replaces) the clip's row and adds its segment rows in one transaction.
    fn store(
        &self,
        manifest: &ClipManifest,
        segments: &[&(String, SegmentBytes)],
        update: bool,
    ) -> Result<(), UploadError> {
        // Files first, then the rows that make them count. Which segments the spool already
        // has is asked again here, not taken from above: dropping a clip may just have removed
        // a segment this one names too.
        let known: std::collections::HashSet<String> = {
            let conn = self.conn();
            let mut have = conn.prepare_cached("SELECT sha256 FROM segments WHERE sha256 = ?1")?;
            let mut known = std::collections::HashSet::new();
            for (sha, _) in segments {
                if let Some(s) = have.query_row([sha], |r| r.get(0)).optional()? {
                    known.insert(s);
                }
            }
            known
        };
        let mut written = Vec::new();
        for (sha, data) in segments {
            let path = self.segment_path(sha);
            if !known.contains(sha) && !path.exists() {
                data.write_to(&path, &self.dir.join("segments"))?;
                written.push((sha.clone(), data.len()?));
            }
        }
        let json =
            serde_json::to_string(manifest).map_err(|e| UploadError::Spool(e.to_string()))?;
        let bytes: u64 = manifest.segments.iter().map(|s| s.size).sum();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if update {
            tx.execute(
                "UPDATE clips SET manifest_json = ?1, bytes = ?2 WHERE clip_id = ?3",
                params![json, bytes as i64, manifest.clip_id],
            )?;
        } else {
            tx.execute(
                "INSERT INTO clips (clip_id, user, manifest_json, bytes, state, enqueued_ms) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                params![manifest.clip_id, manifest.user, json, bytes as i64, crate::now_ms()],
            )?;
        }
        for (sha, _) in segments {
            tx.execute(
                "INSERT OR IGNORE INTO clip_segments (clip_id, sha256) VALUES (?1, ?2)",
                params![manifest.clip_id, sha],
            )?;
        }
        for (sha, size) in &written {
            tx.execute(
                "INSERT OR IGNORE INTO segments (sha256, size) VALUES (?1, ?2)",
                params![sha, *size as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drop-newest: the clip that does not fit is kept as a `lost` row and counted; nothing of
    /// it is written. An open clip already spooled is dropped whole (its data is the newest).
    fn refuse_newest(
        &self,
        manifest: &ClipManifest,
        segments: u64,
        bytes: u64,
        update: bool,
    ) -> Result<(), UploadError> {
        let (released, released_bytes) = if update {
            self.release(&manifest.clip_id, ClipState::Lost)?
        } else {
            let json =
                serde_json::to_string(manifest).map_err(|e| UploadError::Spool(e.to_string()))?;
            self.conn().execute(
                "INSERT INTO clips (clip_id, user, manifest_json, bytes, state, enqueued_ms) VALUES (?1, ?2, ?3, 0, 'lost', ?4)",
                params![manifest.clip_id, manifest.user, json, crate::now_ms()],
            )?;
            (0, 0)
        };
        self.bump("lost_clips", 1)?;
        self.bump("lost_segments", segments + released)?;
        self.bump("lost_bytes", bytes + released_bytes)?;
        tracing::warn!(clip = %manifest.clip_id, bytes, "offline cache full: dropped the new clip (when_full = drop_newest)");
        Ok(())
    }

    /// Drops the oldest pending clip other than `keep`; returns its id, or `None` when there is
    /// none.
    fn drop_oldest(&self, keep: &str) -> Result<Option<String>, UploadError> {
        let oldest: Option<String> = self
            .conn()
            .query_row(
                "SELECT clip_id FROM clips WHERE state = 'pending' AND clip_id != ?1 ORDER BY enqueued_ms, rowid LIMIT 1",
                [keep],
                |r| r.get(0),
            )
            .optional()?;
        let Some(clip_id) = oldest else { return Ok(None) };
        let (segments, bytes) = self.release(&clip_id, ClipState::Lost)?;
        self.bump("lost_clips", 1)?;
        self.bump("lost_segments", segments)?;
        self.bump("lost_bytes", bytes)?;
        tracing::warn!(clip = %clip_id, segments, bytes, "offline cache full: dropped the oldest clip");
        Ok(Some(clip_id))
    }

    /// Takes a clip out of the pending set into `state` (`sent`, `refused` or `lost`: the row
    /// stays, so `clip_state` can tell which) and deletes segment files no other pending clip
    /// names. Returns (segments, bytes) deleted.
    fn release(&self, clip_id: &str, state: ClipState) -> Result<(u64, u64), UploadError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let orphans: Vec<(String, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT s.sha256, s.size FROM clip_segments cs JOIN segments s ON s.sha256 = cs.sha256
                 WHERE cs.clip_id = ?1 AND NOT EXISTS (
                    SELECT 1 FROM clip_segments o JOIN clips c ON c.clip_id = o.clip_id
                    WHERE o.sha256 = cs.sha256 AND o.clip_id != ?1 AND c.state = 'pending')",
            )?;
            let rows = stmt
                .query_map([clip_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows
        };
        tx.execute(
            "UPDATE clips SET state = ?1, sent_ms = CASE WHEN ?1 = 'sent' THEN ?2 END WHERE clip_id = ?3",
            params![state.as_str(), crate::now_ms(), clip_id],
        )?;
        tx.execute("DELETE FROM clip_segments WHERE clip_id = ?1", [clip_id])?;
        for (sha, _) in &orphans {
            tx.execute("DELETE FROM segments WHERE sha256 = ?1", [sha])?;
        }
        tx.commit()?;
        drop(conn);
        // After the commit: a crash here leaves files without rows, which open() removes.
        for (sha, _) in &orphans {
            let _ = std::fs::remove_file(self.segment_path(sha));
        }
        Ok((orphans.len() as u64, orphans.iter().map(|(_, s)| *s as u64).sum()))
    }

    /// The console refused the clip for good (4xx): keep its row (state `refused`, with the
    /// reason) for the record, free its files, and stop retrying it.
    pub fn mark_refused(&self, clip_id: &str, reason: &str) -> Result<(), UploadError> {
        self.release(clip_id, ClipState::Refused)?;
        self.conn().execute(
            "UPDATE clips SET manifest_json = json_set(manifest_json, '$.refused', ?1) WHERE clip_id = ?2",
            params![reason, clip_id],
        )?;
        Ok(())
    }

    pub fn refused_count(&self) -> Result<u64, UploadError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM clips WHERE state = 'refused'", [], |r| {
            r.get::<_, i64>(0)
        })? as u64)
    }

    /// The console has stored this segment: its file goes now (the row stays while a pending
    /// clip names it).
    pub fn mark_segment_sent(&self, sha256: &str) -> Result<(), UploadError> {
        self.conn().execute("UPDATE segments SET sent = 1 WHERE sha256 = ?1", [sha256])?;
        // After the update: a crash here leaves a file no longer counted, which open()
        // removes.
        let _ = std::fs::remove_file(self.segment_path(sha256));
        Ok(())
    }

    /// The console has every segment of `clip_id`: forget its files.
    pub fn mark_sent(&self, clip_id: &str) -> Result<(), UploadError> {
        self.release(clip_id, ClipState::Sent).map(|_| ())
    }

    /// Where a clip is: `pending`, `sent`, `refused` or `lost` (dropped from a full offline
    /// cache); `None` when the spool never had it.
    pub fn clip_state(&self, clip_id: &str) -> Result<Option<ClipState>, UploadError> {
        let name: Option<String> = self
            .conn()
            .query_row("SELECT state FROM clips WHERE clip_id = ?1", [clip_id], |r| r.get(0))
            .optional()?;
        name.map(|n| stored_state(&n)).transpose()
    }

    /// Pending clips, oldest first.
    pub fn pending(&self) -> Result<Vec<PendingClip>, UploadError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT manifest_json, bytes FROM clips WHERE state = 'pending' ORDER BY enqueued_ms, rowid")?;
        let rows: Vec<(String, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(json, bytes)| {
                let manifest = serde_json::from_str(&json)
                    .map_err(|e| UploadError::Spool(format!("spooled manifest unreadable: {e}")))?;
                Ok(PendingClip { manifest, bytes: bytes as u64 })
            })
            .collect()
    }

    /// Turns segments of pending clip `clip_id` that the console still lacks (`wanted`, from its
    /// answer to the manifest) and whose spool file is gone (deleted, a disk replaced, a restore
    /// without them) into missing ranges of the clip, so the rest of it can still be sent and
    /// completed. Returns the new manifest, or `None` when nothing was lost.
    ///
    /// Only a file that is *not there* counts as lost. Any other failure to look at it (EIO,
    /// a permission) is returned as it is and changes nothing: the file may come back, and a
    /// segment is never given up on a guess. A segment the console holds is never given up.
    ///
    /// A lost segment's chain entry stays in the manifest, and `signer` (the device key)
    /// signs an absence note for it, so the console sees why the clip lacks it.
    pub fn settle_lost(
        &self,
        clip_id: &str,
        wanted: &[String],
        signer: Option<&Signer>,
    ) -> Result<Option<ClipManifest>, UploadError> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT manifest_json FROM clips WHERE clip_id = ?1 AND state = 'pending'",
                [clip_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(json) = json else { return Ok(None) };
        let mut manifest: ClipManifest = serde_json::from_str(&json)
            .map_err(|e| UploadError::Spool(format!("spooled manifest unreadable: {e}")))?;
        let wanted: std::collections::HashSet<&str> = wanted.iter().map(String::as_str).collect();
        let mut lost = Vec::new();
        {
            let conn = self.conn();
            let mut row = conn.prepare_cached("SELECT sent FROM segments WHERE sha256 = ?1")?;
            for seg in manifest.segments.iter().filter(|s| wanted.contains(s.sha256.as_str())) {
                let sent: Option<bool> = row.query_row([&seg.sha256], |r| r.get(0)).optional()?;
                let path = self.segment_path(&seg.sha256);
                match std::fs::symlink_metadata(&path) {
                    // No row: nothing accounts for the bytes any more, whatever is on disk.
                    Ok(_) if sent.is_none() => lost.push(seg.clone()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => lost.push(seg.clone()),
                    Err(e) => return Err(io_err(&path, e)),
                }
            }
        }
        if lost.is_empty() {
            return Ok(None);
        }
        let gone: std::collections::HashSet<&str> =
            lost.iter().map(|s| s.sha256.as_str()).collect();
        manifest.segments.retain(|s| !gone.contains(s.sha256.as_str()));
        for seg in &lost {
            manifest.missing.push(MissingRange {
                start_ms: seg.start_ms,
                end_ms: seg.end_ms,
                reason: format!(
                    "segment {} lost on the device: its spool file was gone before upload",
                    seg.sha256
                ),
            });
        }
        manifest.missing.sort_by_key(|m| (m.start_ms, m.end_ms));
        note_absences(&mut manifest, &gone, signer)?;
        let json =
            serde_json::to_string(&manifest).map_err(|e| UploadError::Spool(e.to_string()))?;
        let bytes: u64 = manifest.segments.iter().map(|s| s.size).sum();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE clips SET manifest_json = ?1, bytes = ?2 WHERE clip_id = ?3",
            params![json, bytes as i64, clip_id],
        )?;
        for seg in &lost {
            tx.execute(
                "DELETE FROM clip_segments WHERE clip_id = ?1 AND sha256 = ?2",
                params![clip_id, seg.sha256],
            )?;
            // Other pending clips naming it keep the row until they settle it themselves.
            tx.execute(
                "DELETE FROM segments WHERE sha256 = ?1
                 AND NOT EXISTS (SELECT 1 FROM clip_segments WHERE sha256 = ?1)",
                [&seg.sha256],
            )?;
        }
        tx.execute(
            "INSERT INTO counters (name, value) VALUES ('lost_files', ?1)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            [lost.len() as i64],
        )?;
        tx.commit()?;
        tracing::warn!(
            clip = clip_id,
            segments = lost.len(),
            "spool files lost on the device; the clip names them as missing"
        );
        Ok(Some(manifest))
    }

    /// Reads a spooled segment's bytes.
    pub fn read_segment(&self, sha256: &str) -> Result<Vec<u8>, UploadError> {
        let path = self.segment_path(sha256);
        std::fs::read(&path).map_err(|e| io_err(&path, e))
    }

    /// True when the spool holds this segment's file.
    pub fn has_segment(&self, sha256: &str) -> Result<bool, UploadError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM segments WHERE sha256 = ?1)",
            [sha256],
            |r| r.get(0),
        )?)
    }

    /// Adds uploaded bytes to `user`'s use for `day`.
    pub fn add_usage(&self, day: &str, user: &str, bytes: u64) -> Result<(), UploadError> {
        self.conn().execute(
            "INSERT INTO usage (day, user, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (day, user) DO UPDATE SET bytes = bytes + excluded.bytes",
            params![day, user, bytes as i64],
        )?;
        Ok(())
    }

    /// Bytes uploaded for each user on `day`.
    pub fn usage(&self, day: &str) -> Result<HashMap<String, u64>, UploadError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT user, bytes FROM usage WHERE day = ?1")?;
        let rows =
            stmt.query_map([day], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn bump(&self, name: &str, by: u64) -> Result<(), UploadError> {
        self.conn().execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            params![name, by as i64],
        )?;
        Ok(())
    }

    pub fn stats(&self) -> Result<SpoolStats, UploadError> {
        let conn = self.conn();
        let count = |state: &str| -> rusqlite::Result<u64> {
            conn.query_row("SELECT COUNT(*) FROM clips WHERE state = ?1", [state], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        };
        let counter = |name: &str| -> rusqlite::Result<u64> {
            conn.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
        };
        Ok(SpoolStats {
            pending_clips: count(ClipState::Pending.as_str())?,
            sent_clips: count(ClipState::Sent.as_str())?,
            spooled_bytes: conn.query_row(
                "SELECT COALESCE(SUM(size), 0) FROM segments WHERE sent = 0",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64,
            lost_clips: counter("lost_clips")?,
            lost_segments: counter("lost_segments")?,
            lost_bytes: counter("lost_bytes")?,
            lost_files: counter("lost_files")?,
        })
    }
}

/// Signs an absence note for the chain entry of every segment in `gone` that has one and no
/// note yet. Without a signer (never enrolled) there is nothing to sign with and no entry.
fn note_absences(
    manifest: &mut ClipManifest,
    gone: &std::collections::HashSet<&str>,
    signer: Option<&Signer>,
) -> Result<(), UploadError> {
    let Some(signer) = signer else { return Ok(()) };
    let lost = manifest
        .chain
        .iter()
        .filter(|e| e.segment.as_ref().is_some_and(|s| gone.contains(s.sha256.as_str())));
    let mut notes = Vec::new();
    for entry in lost {
        let hash = hex::encode(entry.hash()?);
        if manifest.absent.iter().any(|a| a.entry == hash) {
            continue;
        }
        notes.push(Absence::sign(signer, entry, &manifest.clip_id, LOST_ON_DEVICE)?);
    }
    manifest.absent.extend(notes);
    Ok(())
}

/// The reason an absence note gives for a segment whose spool file was gone before upload.
pub const LOST_ON_DEVICE: &str = "lost on the device: its spool file was gone before upload";

/// `next` keeps the chain entries and absence notes of `stored` and adds its own: the union by
/// `(chain, seq)` and by explained entry hash, entries in chain order (see the module docs).
fn unite_evidence(next: &mut ClipManifest, stored: &ClipManifest) {
    let mut chain = stored.chain.clone();
    let known: std::collections::HashSet<(&str, u64)> =
        stored.chain.iter().map(|e| (e.chain.as_str(), e.seq)).collect();
    chain
        .extend(next.chain.iter().filter(|e| !known.contains(&(e.chain.as_str(), e.seq))).cloned());
    chain.sort_by(|a, b| (a.chain.as_str(), a.seq).cmp(&(b.chain.as_str(), b.seq)));
    let mut absent = stored.absent.clone();
    let noted: std::collections::HashSet<&str> =
        stored.absent.iter().map(|a| a.entry.as_str()).collect();
    absent.extend(next.absent.iter().filter(|a| !noted.contains(a.entry.as_str())).cloned());
    next.chain = chain;
    next.absent = absent;
}

/// What [`Spool::write`] did with a clip.
enum Written {
    /// Stored; older clips dropped to make room.
    Kept { dropped_clips: Vec<String> },
    /// Not stored: the cache is full and drops the newest.
    Refused,
}

/// Where a segment's sealed bytes come from when it is enqueued.
#[derive(Debug, Clone)]
pub enum SegmentBytes {
    /// In memory.
    Bytes(Vec<u8>),
    /// A file (e.g. in the ring); hard-linked into the spool when possible, else copied.
    File(PathBuf),
}

impl SegmentBytes {
    pub fn len(&self) -> Result<u64, UploadError> {
        match self {
            SegmentBytes::Bytes(b) => Ok(b.len() as u64),
            SegmentBytes::File(p) => Ok(std::fs::metadata(p).map_err(|e| io_err(p, e))?.len()),
        }
    }

    pub fn is_empty(&self) -> Result<bool, UploadError> {
        Ok(self.len()? == 0)
    }

    /// Reads all bytes (to hash them).
    pub fn read(&self) -> Result<std::borrow::Cow<'_, [u8]>, UploadError> {
        match self {
            SegmentBytes::Bytes(b) => Ok(std::borrow::Cow::Borrowed(b)),
            SegmentBytes::File(p) => {
                Ok(std::borrow::Cow::Owned(std::fs::read(p).map_err(|e| io_err(p, e))?))
            }
        }
    }

    fn write_to(&self, path: &Path, dir: &Path) -> Result<(), UploadError> {
        let tmp = dir.join(format!(".tmp-{}", rand::random::<u64>()));
        let written = match self {
            SegmentBytes::File(src) if std::fs::hard_link(src, &tmp).is_ok() => Ok(()),
            _ => self.read().and_then(|bytes| {
                let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
                f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))
            }),
        };
        let placed = written.and_then(|_| std::fs::rename(&tmp, path).map_err(|e| io_err(path, e)));
        if placed.is_err() {
            // A full disk must not also keep the half-written copy that filled it: the caller
            // tries again once there is room, and the space is needed then.
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }
}
/// A state as the spool stored it; a name this build does not know is a damaged row.
fn stored_state(name: &str) -> Result<ClipState, UploadError> {
    ClipState::parse(name)
        .ok_or_else(|| UploadError::Spool(format!("a spooled clip is in unknown state {name:?}")))
}
