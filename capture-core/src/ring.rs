//! The on-disk ring: the last minutes of sealed segments, bounded by retention time (default
//! [`DEFAULT_RETENTION`], 10 min) and bytes (default [`DEFAULT_MAX_BYTES`], 1 GiB), oldest
//! evicted first, except segments pinned by a pending clip.
//!
//! The ring stores only *sealed* segments ([`insert`](Ring::insert) refuses anything whose
//! sealed header does not parse), so nothing it writes can be read back on the device.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/
//!   index.rvx                 append-only index (below)
//!   index.tmp                 a compaction in progress; removed on open
//!   segments/
//!     <segment id, 32 hex>.seal   one sealed segment (crate::seal format), written once
//!     <segment id>.tmp            a write in progress; removed on open
//! ```
//!
//! One process owns a ring directory at a time (the daemon); the ring takes no lock itself.
//!
//! # Index format, version 1
//!
//! An append-only log of checksummed records. It was chosen over SQLite because the ring's
//! state is tiny (a few hundred entries), every change is one small append plus one
//! `fdatasync`, a torn tail is detected by length and checksum and simply cut off, and the
//! format is documented here byte for byte. Integers little-endian; `str` is `u16 length ||
//! UTF-8`.
//!
//! ```text
//! file header (5 bytes):
//!   magic     4   "RVIX"
//!   version   1   1
//! record (repeated to the end of the file):
//!   len       u32 length of kind + body, 1..=65536
//!   kind      u8  1 insert, 2 remove, 3 pin, 4 unpin
//!   body      ... see below
//!   check     8   first 8 bytes of SHA-256(len || kind || body): catches torn and rotten
//!                 records, which the length alone cannot
//! insert body: what queries, eviction and upload need without opening the segment
//!   segment_id 16 | tenant str | device str | user str | session str | monitor u32 |
//!   start.utc i64 | start.mono u64 | end.utc i64 | end.mono u64 | frame_count u32 |
//!   sealed_len u64 (size of the .seal file) | sha256 32 (of the .seal file: its upload name)
//! remove body: segment_id 16
//! pin / unpin body: segment_id 16 | owner str (at most 128 bytes, e.g. a clip id)
//! ```
//!
//! Pins and unpins of a batch ([`Ring::pin_many`], [`Ring::unpin_all`]) are appended with one
//! write and one `fdatasync`; each record stays checked on its own, so a crash part-way keeps
//! a prefix of the batch.
//!
//! Entries are ordered by their position in the log (`seq`); compaction keeps that order.
//! The log is compacted (live inserts and pins rewritten to `index.tmp`, fsync, rename, fsync
//! the directory) on open and when dead records outnumber live ones.
//!
//! # Writing a segment
//!
//! 1. write `segments/<id>.tmp`, fsync it, rename it to `<id>.seal`, fsync `segments/`;
//! 2. append the insert record, `fdatasync` the index.
//!
//! A crash before 2 leaves an orphan file, removed on open. A failure in either step (disk
//! full included) removes what it wrote and truncates the index back, so the ring is exactly
//! as before and the caller — who still holds the sealed bytes — can retry.
//!
//! # Eviction
//!
//! A segment is evicted when it ended more than `retention` before the horizon (the end of the
//! segment just inserted, or the `now` given to [`Ring::evict_expired`]), or, oldest first by
//! `(end, seq)`, while unpinned bytes exceed `max_bytes`. Pinned segments are never evicted
//! and do not count against `max_bytes`: the spool accounts for them
//! ([`RingStats::pinned_bytes`]). Eviction deletes the file *first* and then appends the
//! remove record without waiting for it, so a full disk can always make room; a crash in
//! between leaves an entry without a file, dropped on open.
//!
//! # Crash recovery (on open)
//!
//! 1. remove `*.tmp` files;
//! 2. replay the index up to the first record that is short or fails its checksum, and cut
//!    the file there (torn tail);
//! 3. drop entries whose file is missing, has the wrong size or a sealed header that does not
//!    parse or names another segment (the file is deleted);
//! 4. delete `.seal` files no entry names (orphans);
//! 5. compact.
//!
//! Everything dropped is counted in the [`RecoveryReport`]. Bit rot inside a ciphertext is
//! not looked for here (it would mean reading every file); opening fails on it, and the upload
//! hash catches it.

mod index;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::seal::{SealedHeader, SealedHeaderError, OVERHEAD};
use crate::segment::{SegmentHeader, SegmentId};
use crate::Timestamp;

use index::{IndexFile, Record};

/// How long segments are kept unless policy says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(10 * 60);
/// How many bytes of unpinned segments are kept unless policy says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Longest pin owner id.
pub const MAX_OWNER_LEN: usize = 128;

const INDEX_FILE: &str = "index.rvx";
const INDEX_TMP: &str = "index.tmp";
const SEGMENTS_DIR: &str = "segments";

/// Where the ring lives and how much it keeps.
#[derive(Clone, Debug)]
pub struct RingConfig {
    pub dir: PathBuf,
    pub retention: Duration,
    pub max_bytes: u64,
}

impl RingConfig {
    /// A ring in `dir` with the default bounds.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), retention: DEFAULT_RETENTION, max_bytes: DEFAULT_MAX_BYTES }
    }
}

/// What went wrong. [`RingError::is_retryable`] says whether the same call may succeed later
/// (disk full, other I/O); on every error the ring is as it was before the call.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(
        "disk full writing {path}: the segment was not stored, nothing stored was lost; \
         retry when space is freed"
    )]
    DiskFull { path: PathBuf, source: io::Error },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("refusing to store bytes that are not a sealed segment: {0}")]
    NotSealed(#[from] SealedHeaderError),
    #[error("sealed bytes are segment {sealed} but the header says {header}")]
    IdMismatch { header: SegmentId, sealed: SegmentId },
    #[error("segment {0} is already in the ring")]
    Duplicate(SegmentId),
    #[error("sealed segment of {len} bytes is larger than the whole ring ({max} bytes)")]
    TooLarge { len: u64, max: u64 },
    #[error("segment {0} is not in the ring (evicted, or never stored)")]
    NotFound(SegmentId),
    #[error("segment file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("pin owner id is {0} bytes; at most {MAX_OWNER_LEN} are allowed")]
    OwnerTooLong(usize),
}

impl RingError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, RingError::DiskFull { .. } | RingError::Io { .. })
    }

    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        if is_disk_full(&source) {
            RingError::DiskFull { path: path.to_owned(), source }
        } else {
            RingError::Io { op, path: path.to_owned(), source }
        }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
}

/// One stored segment as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingEntry {
    pub id: SegmentId,
    pub tenant: String,
    pub device: String,
    pub user: String,
    pub session: String,
    pub monitor: u32,
    pub start: Timestamp,
    pub end: Timestamp,
    pub frame_count: u32,
    /// Size of the sealed file.
    pub sealed_len: u64,
    /// SHA-256 of the sealed file: the name it is uploaded under.
    pub sha256: [u8; 32],
}

impl RingEntry {
    /// Whether the segment overlaps `[from, to]` (UTC microseconds, inclusive).
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.start.utc_micros <= to && self.end.utc_micros >= from
    }
}

/// What eviction did, and what it could not do because of pins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictionReport {
    /// Evicted, oldest first.
    pub evicted: Vec<SegmentId>,
    pub evicted_bytes: u64,
    /// Pinned segments past retention, kept for their clips.
    pub expired_pinned: usize,
    /// All pinned segments and their bytes, after eviction (the spool's share of the disk).
    pub pinned_segments: usize,
    pub pinned_bytes: u64,
}

/// What opening the ring found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the ring after recovery.
    pub entries: usize,
    /// Bytes cut off the end of the index (a torn or corrupt tail).
    pub torn_index_bytes: u64,
    /// Index entries dropped because their file was gone.
    pub missing_files: usize,
    /// Index entries dropped (and files deleted) because the file was the wrong size or its
    /// sealed header was unreadable.
    pub unreadable_files: usize,
    /// `.seal` files no index entry named, deleted.
    pub orphans_removed: usize,
    /// Unfinished `.tmp` writes, deleted.
    pub temp_files_removed: usize,
}

impl RecoveryReport {
    /// Whether the ring was closed cleanly (nothing had to be dropped or removed).
    pub fn is_clean(&self) -> bool {
        self.torn_index_bytes == 0
            && self.missing_files == 0
            && self.unreadable_files == 0
            && self.orphans_removed == 0
            && self.temp_files_removed == 0
    }
}

/// Sizes, for status and the spool's accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub segments: usize,
    pub bytes: u64,
    pub pinned_segments: usize,
    pub pinned_bytes: u64,
}

struct Live {
    entry: RingEntry,
    pins: BTreeSet<String>,
}

/// The ring. Methods take `&mut self`; the daemon shares it behind a mutex.
pub struct Ring {
    config: RingConfig,
    segments_dir: PathBuf,
    index: IndexFile,
    /// Live entries by position in the log: `seq` order is insertion order.
    live: BTreeMap<u64, Live>,
    by_id: HashMap<SegmentId, u64>,
    next_seq: u64,
    unpinned_bytes: u64,
    pinned_bytes: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("dir", &self.config.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Opens (creating if needed) the ring in `config.dir`, recovering from any crash.
    pub fn open(config: RingConfig) -> Result<(Ring, RecoveryReport), RingError> {
        let segments_dir = config.dir.join(SEGMENTS_DIR);
        fs::create_dir_all(&segments_dir)
            .map_err(|e| RingError::io("create directory", &segments_dir, e))?;
        let mut report = RecoveryReport::default();

        let index_tmp = config.dir.join(INDEX_TMP);
        match fs::remove_file(&index_tmp) {
            Ok(()) => report.temp_files_removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RingError::io("remove", &index_tmp, e)),
        }

        let index_path = config.dir.join(INDEX_FILE);
        let (index, records, torn) = IndexFile::open(&index_path)?;
        report.torn_index_bytes = torn;

        let mut ring = Ring {
            config,
            segments_dir,
            index,
            live: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            unpinned_bytes: 0,
            pinned_bytes: 0,
        };
        for record in records {
            ring.replay(record);
        }
        ring.reconcile_files(&mut report)?;
        ring.recount();
        report.entries = ring.live.len();
        // A full disk must not keep the ring from opening: the uncompacted log is still valid
        // and the next open repeats the same (idempotent) reconciliation.
        let _ = ring.compact();
        Ok((ring, report))
    }

    fn replay(&mut self, record: Record) {
        match record {
            Record::Insert(entry) => {
                if !self.by_id.contains_key(&entry.id) {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.by_id.insert(entry.id, seq);
                    self.live.insert(seq, Live { entry, pins: BTreeSet::new() });
                }
            }
            Record::Remove(id) => {
                if let Some(seq) = self.by_id.remove(&id) {
                    self.live.remove(&seq);
                }
            }
            Record::Pin(id, owner) => {
                if let Some(live) = self.by_id.get(&id).and_then(|s| self.live.get_mut(s)) {
                    live.pins.insert(owner);
                }
            }
            Record::Unpin(id, owner) => {
                if let Some(live) = self.by_id.get(&id).and_then(|s| self.live.get_mut(s)) {
                    live.pins.remove(&owner);
                }
            }
        }
    }

    fn reconcile_files(&mut self, report: &mut RecoveryReport) -> Result<(), RingError> {
        let dir = self.segments_dir.clone();
        let listing = fs::read_dir(&dir).map_err(|e| RingError::io("list", &dir, e))?;
        let mut seen = BTreeSet::new();
        for item in listing {
            let item = item.map_err(|e| RingError::io("list", &dir, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = dir.join(name);
            if name.ends_with(".tmp") {
                remove_file_if_exists(&path)?;
                report.temp_files_removed += 1;
                continue;
            }
            let Some(id) = name.strip_suffix(".seal").and_then(|s| s.parse::<SegmentId>().ok())
            else {
                continue; // not ours; leave it alone
            };
            let Some(&seq) = self.by_id.get(&id) else {
                remove_file_if_exists(&path)?;
                report.orphans_removed += 1;
                continue;
            };
            let expected = self.live[&seq].entry.sealed_len;
            if let Err(_reason) = check_sealed_file(&path, id, expected) {
                remove_file_if_exists(&path)?;
                self.drop_entry(id);
                report.unreadable_files += 1;
                continue;
            }
            seen.insert(id);
        }
        let missing: Vec<SegmentId> =
            self.by_id.keys().filter(|id| !seen.contains(*id)).copied().collect();
        for id in missing {
            self.drop_entry(id);
            report.missing_files += 1;
        }
        fsync_dir(&dir)
    }

    fn drop_entry(&mut self, id: SegmentId) {
        if let Some(seq) = self.by_id.remove(&id) {
            self.live.remove(&seq);
        }
    }

    fn recount(&mut self) {
        self.pinned_bytes = 0;
        self.unpinned_bytes = 0;
        for live in self.live.values() {
            if live.pins.is_empty() {
                self.unpinned_bytes += live.entry.sealed_len;
            } else {
                self.pinned_bytes += live.entry.sealed_len;
            }
        }
    }

    /// Rewrites the index with only live entries and pins.
    fn compact(&mut self) -> Result<(), RingError> {
        let mut records = Vec::with_capacity(self.live.len());
        for live in self.live.values() {
            records.push(Record::Insert(live.entry.clone()));
            for owner in &live.pins {
                records.push(Record::Pin(live.entry.id, owner.clone()));
            }
        }
        self.index.rewrite(&self.config.dir.join(INDEX_TMP), &records)
    }

    fn maybe_compact(&mut self) {
        let useful = self.live.values().map(|l| 1 + l.pins.len() as u64).sum::<u64>();
        if self.index.records() > 2 * useful + 256 {
            // Failing to compact costs only log length; the next attempt may succeed.
            let _ = self.compact();
        }
    }

    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    fn file_path(&self, id: SegmentId) -> PathBuf {
        self.segments_dir.join(format!("{id}.seal"))
    }

    /// Stores a sealed segment durably, then evicts what the bounds require. On error nothing
    /// changed; [`RingError::DiskFull`] and other I/O errors are worth retrying.
    pub fn insert(
        &mut self,
        header: &SegmentHeader,
        sealed: &[u8],
    ) -> Result<EvictionReport, RingError> {
        let sealed_header = SealedHeader::parse(sealed)?;
        if sealed_header.segment_id != header.id {
            return Err(RingError::IdMismatch {
                header: header.id,
                sealed: sealed_header.segment_id,
            });
        }
        if self.by_id.contains_key(&header.id) {
            return Err(RingError::Duplicate(header.id));
        }
        let len = sealed.len() as u64;
        if len > self.config.max_bytes {
            return Err(RingError::TooLarge { len, max: self.config.max_bytes });
        }
        let c = &header.context;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, sealed).as_ref());
        let entry = RingEntry {
            id: header.id,
            tenant: c.tenant.clone(),
            device: c.device.clone(),
            user: c.user.clone(),
            session: c.session.clone(),
            monitor: c.monitor.id,
            start: header.start,
            end: header.end,
            frame_count: header.frame_count,
            sealed_len: len,
            sha256,
        };

        let path = self.file_path(header.id);
        let tmp = self.segments_dir.join(format!("{}.tmp", header.id));
        if let Err(e) = write_file_durably(&tmp, &path, &self.segments_dir, sealed) {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        if let Err(e) = self.index.append(&Record::Insert(entry.clone()), true) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(entry.id, seq);
        self.live.insert(seq, Live { entry, pins: BTreeSet::new() });
        self.unpinned_bytes += len;

        let horizon = header.end.utc_micros.saturating_sub(retention_micros(&self.config));
        let report = self.enforce(horizon);
        self.maybe_compact();
        Ok(report)
    }

    /// Evicts what ended more than `retention` before `now_utc_micros`; the daemon calls this
    /// periodically so that an idle ring still forgets.
    pub fn evict_expired(&mut self, now_utc_micros: i64) -> EvictionReport {
        let horizon = now_utc_micros.saturating_sub(retention_micros(&self.config));
        let report = self.enforce(horizon);
        self.maybe_compact();
        report
    }

    fn enforce(&mut self, horizon: i64) -> EvictionReport {
        let mut report = EvictionReport::default();
        let expired: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, l)| l.pins.is_empty() && l.entry.end.utc_micros < horizon)
            .map(|(&seq, _)| seq)
            .collect();
        let mut victims: Vec<(i64, u64)> =
            expired.iter().map(|s| (self.live[s].entry.end.utc_micros, *s)).collect();
        victims.sort_unstable();
        for (_, seq) in victims {
            self.evict(seq, &mut report);
        }
        while self.unpinned_bytes > self.config.max_bytes {
            let oldest = self
                .live
                .iter()
                .filter(|(_, l)| l.pins.is_empty())
                .map(|(&seq, l)| (l.entry.end.utc_micros, seq))
                .min();
            match oldest {
                Some((_, seq)) => self.evict(seq, &mut report),
                None => break,
            }
        }
        report.expired_pinned = self
            .live
            .values()
            .filter(|l| !l.pins.is_empty() && l.entry.end.utc_micros < horizon)
            .count();
        let stats = self.stats();
        report.pinned_segments = stats.pinned_segments;
        report.pinned_bytes = stats.pinned_bytes;
        report
    }

    fn evict(&mut self, seq: u64, report: &mut EvictionReport) {
        let Some(live) = self.live.remove(&seq) else { return };
        let id = live.entry.id;
        self.by_id.remove(&id);
        self.unpinned_bytes -= live.entry.sealed_len;
        // File first, so a full disk gets its space back before the index grows; a failure
        // here leaves an orphan that the next open removes.
        let _ = fs::remove_file(self.file_path(id));
        // Not synced: a lost remove record only means the next open finds the file missing
        // and drops the entry, which is the same outcome.
        let _ = self.index.append(&Record::Remove(id), false);
        report.evicted.push(id);
        report.evicted_bytes += live.entry.sealed_len;
    }

    /// Pins a segment for `owner` (a clip id): it will not be evicted until every owner has
    /// unpinned it. Pinning twice for the same owner is a no-op.
    pub fn pin(&mut self, id: SegmentId, owner: &str) -> Result<(), RingError> {
        self.pin_many(&[id], owner).map(|_| ())
    }

    /// Removes `owner`'s pin. Returns whether it was there. The segment becomes evictable
    /// again (at the next insert or [`evict_expired`](Ring::evict_expired)) once no pin is left.
    pub fn unpin(&mut self, id: SegmentId, owner: &str) -> Result<bool, RingError> {
        let Some(&seq) = self.by_id.get(&id) else { return Ok(false) };
        if !self.live[&seq].pins.contains(owner) {
            return Ok(false);
        }
        self.index.append(&Record::Unpin(id, owner.to_owned()), true)?;
        if let Some(live) = self.live.get_mut(&seq) {
            live.pins.remove(owner);
            if live.pins.is_empty() {
                self.pinned_bytes -= live.entry.sealed_len;
                self.unpinned_bytes += live.entry.sealed_len;
            }
        }
        self.maybe_compact();
        Ok(true)
    }

    /// Pins segments `ids` for `owner` with one index append and one `fdatasync` (see
    /// [`pin`](Ring::pin)). Returns how many pins are new. An id the ring does not hold fails
    /// the whole batch before anything is written; a crash part-way keeps a prefix of it.
    pub fn pin_many(&mut self, ids: &[SegmentId], owner: &str) -> Result<usize, RingError> {
        if owner.len() > MAX_OWNER_LEN {
            return Err(RingError::OwnerTooLong(owner.len()));
        }
        let mut seqs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let seq = *self.by_id.get(id).ok_or(RingError::NotFound(*id))?;
            if !self.live[&seq].pins.contains(owner) && seen.insert(seq) {
                seqs.push((seq, *id));
            }
        }
        let records: Vec<Record> =
            seqs.iter().map(|(_, id)| Record::Pin(*id, owner.to_owned())).collect();
        self.index.append_batch(&records)?;
        for (seq, _) in &seqs {
            if let Some(live) = self.live.get_mut(seq) {
                if live.pins.is_empty() {
                    self.unpinned_bytes -= live.entry.sealed_len;
                    self.pinned_bytes += live.entry.sealed_len;
                }
                live.pins.insert(owner.to_owned());
            }
        }
        Ok(seqs.len())
    }

    /// Removes every pin `owner` holds (a clip finished or was cancelled), with one index
    /// append and one `fdatasync`. Returns how many. A crash part-way keeps a prefix of the
    /// unpins; the rest are still pinned after the restart.
    pub fn unpin_all(&mut self, owner: &str) -> Result<usize, RingError> {
        let seqs: Vec<u64> =
            self.live.iter().filter(|(_, l)| l.pins.contains(owner)).map(|(s, _)| *s).collect();
        let records: Vec<Record> =
            seqs.iter().map(|s| Record::Unpin(self.live[s].entry.id, owner.to_owned())).collect();
        self.index.append_batch(&records)?;
        for seq in &seqs {
            if let Some(live) = self.live.get_mut(seq) {
                live.pins.remove(owner);
                if live.pins.is_empty() {
                    self.pinned_bytes -= live.entry.sealed_len;
                    self.unpinned_bytes += live.entry.sealed_len;
                }
            }
        }
        self.maybe_compact();
        Ok(seqs.len())
    }

    /// Owners pinning `id`, if it is in the ring.
    pub fn pins(&self, id: SegmentId) -> Option<Vec<String>> {
        let seq = self.by_id.get(&id)?;
        Some(self.live[seq].pins.iter().cloned().collect())
    }

    pub fn get(&self, id: SegmentId) -> Option<&RingEntry> {
        self.by_id.get(&id).map(|seq| &self.live[seq].entry)
    }

    /// Every entry, oldest insert first.
    pub fn entries(&self) -> impl Iterator<Item = &RingEntry> {
        self.live.values().map(|l| &l.entry)
    }

    /// Segments of `session` on any of `monitors` that overlap `[from, to]` (UTC microseconds,
    /// inclusive), ordered by start time, then monitor, then insertion.
    pub fn query(&self, session: &str, monitors: &[u32], from: i64, to: i64) -> Vec<RingEntry> {
        let mut hits: Vec<(i64, u32, u64, &RingEntry)> = self
            .live
            .iter()
            .filter(|(_, l)| {
                l.entry.session == session
                    && monitors.contains(&l.entry.monitor)
                    && l.entry.overlaps(from, to)
            })
            .map(|(&seq, l)| (l.entry.start.utc_micros, l.entry.monitor, seq, &l.entry))
            .collect();
        hits.sort_unstable_by_key(|&(start, monitor, seq, _)| (start, monitor, seq));
        hits.into_iter().map(|(.., e)| e.clone()).collect()
    }

    /// The sealed bytes of a segment, checked against the index (size and SHA-256).
    pub fn read(&self, id: SegmentId) -> Result<Vec<u8>, RingError> {
        let entry = self.get(id).ok_or(RingError::NotFound(id))?;
        let path = self.file_path(id);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RingError::NotFound(id),
            _ => RingError::io("read", &path, e),
        })?;
        if bytes.len() as u64 != entry.sealed_len
            || ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref() != entry.sha256
        {
            return Err(RingError::Corrupt {
                path,
                reason: format!(
                    "{} bytes whose SHA-256 does not match the index ({} bytes expected)",
                    bytes.len(),
                    entry.sealed_len
                ),
            });
        }
        Ok(bytes)
    }

    pub fn stats(&self) -> RingStats {
        let pinned_segments = self.live.values().filter(|l| !l.pins.is_empty()).count();
        RingStats {
            segments: self.live.len(),
            bytes: self.unpinned_bytes + self.pinned_bytes,
            pinned_segments,
            pinned_bytes: self.pinned_bytes,
        }
    }
}

fn retention_micros(config: &RingConfig) -> i64 {
    i64::try_from(config.retention.as_micros()).unwrap_or(i64::MAX)
}

fn write_file_durably(tmp: &Path, dest: &Path, dir: &Path, bytes: &[u8]) -> Result<(), RingError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| RingError::io("create", tmp, e))?;
    file.write_all(bytes).map_err(|e| RingError::io("write", tmp, e))?;
    file.sync_all().map_err(|e| RingError::io("fsync", tmp, e))?;
    drop(file);
    fs::rename(tmp, dest).map_err(|e| RingError::io("rename", dest, e))?;
    fsync_dir(dir)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), RingError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RingError::io("fsync directory", dir, e))
}

fn remove_file_if_exists(path: &Path) -> Result<(), RingError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RingError::io("remove", path, e)),
    }
}

/// Size and sealed header of a stored file, without reading the ciphertext.
fn check_sealed_file(path: &Path, id: SegmentId, expected_len: u64) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != expected_len {
        return Err(format!("{len} bytes, index says {expected_len}"));
    }
    let mut head = vec![0u8; OVERHEAD.min(len as usize)];
    file.read_exact(&mut head).map_err(|e| e.to_string())?;
    let header = SealedHeader::parse(&head).map_err(|e| e.to_string())?;
    if header.segment_id != id {
        return Err(format!("file holds segment {}", header.segment_id));
    }
    Ok(())
}
