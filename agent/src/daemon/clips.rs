//! Clips the daemon opened: the window a trigger asked for, the segments pinned for it, and
//! what the ring did not hold.
//!
//! A clip is *collecting* from the trigger until its window has ended and the segments covering
//! its end have closed; segments that close meanwhile and overlap the window are pinned to it
//! (pin owner = clip id), so eviction cannot take them, and overlapping clips simply pin the
//! same segment twice (it is stored, and sent, once).
//!
//! While collecting, the clip is already in the uploader's spool as an *open* clip: the segments
//! the ring held at the trigger go there at once, and each later one as it closes (`spooled`
//! lists those handed over), so evidence leaves the device during the window, not after it.
//! When the window has ended the clip is closed with what the window lacks (*pending*) and its
//! pins are released: the spool holds its own copy. The pins are kept until then so the
//! missing ranges can be computed from the ring's index, and a failed hand-over can be retried.
//!
//! # Where the state lives
//!
//! The records live in the spool database ([`rearview_uploader::spool::clip_records`]), one
//! transaction per change; [`ClipBook`] holds the collecting ones for the loop and writes every
//! change there first, then to itself. A trigger's clip is stored before the trigger counts as
//! seen, and a trigger id has one record: a trigger that comes again finds its clip instead of
//! opening another. Ring pins follow the records: a segment is listed in its clip before it is
//! pinned, and at start ([`ClipBook::load`]) each collecting clip takes what the ring holds for
//! its window again, its listed segments are pinned and every other pin is released.
//!
//! `user` is the principal the trigger named; a segment belongs to the clip when its label (the
//! principal its session's approval named) is the same principal ([`same_principal`]).
//!
//! # Upgrade from `clips.json`
//!
//! Agents before schema version 2 kept the records in `<data_dir>/clips.json`:
//!
//! ```text
//! [ { "id": "<32 hex>", "trigger_id": "…"|null, "user": "<principal>", "reason": "…",
//!     "mode": "specific-activities", "from_utc_micros": i64, "to_utc_micros": i64,
//!     "segments": ["<segment id hex>", …], "spooled": ["<segment id hex>", …],
//!     "in_spool": bool, "state": "collecting"|"pending"|"failed",
//!     "missing": [{"from_utc_micros": i64, "to_utc_micros": i64, "reason": "…"}],
//!     "error": "…"|null }, … ]
//! ```
//!
//! At start such a file is imported into the spool (records already there are kept as they
//! are, so a crash between import and removal imports nothing twice), then removed. An
//! unreadable one is set aside as `clips.json.bad` and reported.

use std::collections::BTreeSet;
use std::path::Path;

use rearview_capture::ring::Ring;
use rearview_capture::segment::SegmentId;
use rearview_uploader::spool::{ClipChange, Spool};
use rearview_uploader::UploadError;
use serde::Deserialize;

pub use rearview_uploader::spool::{ClipMissing as Missing, ClipRecord as Clip, RecordState};

/// Whether a segment labelled `user` spanning `[start, end]` belongs in `clip`.
pub fn wants(clip: &Clip, user: &str, start: i64, end: i64) -> bool {
    clip.is_collecting()
        && same_principal(&clip.user, user)
        && start <= clip.to_utc_micros
        && end >= clip.from_utc_micros
}

/// The ring's segments `clip` wants, that it does not list yet.
pub fn held_for(ring: &Ring, clip: &Clip) -> Vec<SegmentId> {
    let listed: BTreeSet<&str> = clip.segments.iter().map(String::as_str).collect();
    ring.entries()
        .filter(|e| wants(clip, &e.user, e.start.utc_micros, e.end.utc_micros))
        .filter(|e| !listed.contains(e.id.to_string().as_str()))
        .map(|e| e.id)
        .collect()
}

/// Pins that could not be made or released: the segment may be evicted under a clip, or kept
/// after it; counted for `rearview status` rather than dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinFailures {
    pub count: u64,
    pub last: Option<String>,
}

impl PinFailures {
    fn note(&mut self, what: String) {
        tracing::warn!("{what}");
        self.count += 1;
        self.last = Some(what);
    }
}

/// The clips being collected: the spool's collecting records, held for the loop. Every change
/// is stored in the spool first and applied here only once stored, so this never runs ahead
/// of the database.
#[derive(Debug, Default)]
pub struct ClipBook {
    collecting: Vec<Clip>,
    pub pin_failures: PinFailures,
}

impl ClipBook {
    /// Imports an old `clips.json` (see the module docs), loads the collecting records, and
    /// makes the ring's pins follow them: each clip takes again what the ring holds for its
    /// window (a crash may have fallen between storing a segment and listing it), forgets
    /// listed segments the ring no longer holds, pins the rest; pins of any other owner are
    /// released. Returns the book and problems worth reporting.
    pub fn load(
        spool: &Spool,
        ring: &mut Ring,
        data_dir: &Path,
    ) -> Result<(ClipBook, Vec<String>), UploadError> {
        let mut problems: Vec<String> = import_clips_json(spool, data_dir).into_iter().collect();
        let mut book =
            ClipBook { collecting: spool.collecting_clip_records()?, ..Default::default() };
        for clip in &mut book.collecting {
            let gone: Vec<String> = clip
                .segments
                .iter()
                .filter(|sid| sid.parse::<SegmentId>().map_or(true, |id| ring.get(id).is_none()))
                .cloned()
                .collect();
            let taken: Vec<String> = held_for(ring, clip).iter().map(|id| id.to_string()).collect();
            spool.remove_clip_segments(&clip.id, &gone)?;
            spool.add_clip_segments(&clip.id, &taken)?;
            let gone: BTreeSet<String> = gone.into_iter().collect();
            clip.segments.retain(|sid| !gone.contains(sid));
            clip.spooled.retain(|sid| !gone.contains(sid));
            clip.segments.extend(taken);
        }
        let owners: BTreeSet<String> =
            ring.entries().filter_map(|e| ring.pins(e.id)).flatten().collect();
        let known: BTreeSet<String> = book.collecting.iter().map(|c| c.id.clone()).collect();
        for owner in owners.difference(&known) {
            book.unpin_all(ring, owner);
        }
        for i in 0..book.collecting.len() {
            let ids: Vec<SegmentId> =
                book.collecting[i].segments.iter().filter_map(|s| s.parse().ok()).collect();
            let owner = book.collecting[i].id.clone();
            book.pin(ring, &ids, &owner);
        }
        problems.extend(book.pin_failures.last.clone());
        Ok((book, problems))
    }

    /// The collecting clips.
    pub fn collecting(&self) -> &[Clip] {
        &self.collecting
    }

    /// Stores a new collecting clip with the segments it lists, then pins them. Returns its
    /// index.
    pub fn open(
        &mut self,
        spool: &Spool,
        ring: &mut Ring,
        clip: Clip,
    ) -> Result<usize, UploadError> {
        spool.insert_clip_record(&clip)?;
        let ids: Vec<SegmentId> = clip.segments.iter().filter_map(|s| s.parse().ok()).collect();
        self.pin(ring, &ids, &clip.id);
        self.collecting.push(clip);
        Ok(self.collecting.len() - 1)
    }

    /// Lists segment `id` in clip `i` (stored), then pins it.
    pub fn take(
        &mut self,
        spool: &Spool,
        ring: &mut Ring,
        i: usize,
        id: SegmentId,
    ) -> Result<(), UploadError> {
        let owner = self.collecting[i].id.clone();
        spool.add_clip_segments(&owner, &[id.to_string()])?;
        self.pin(ring, &[id], &owner);
        self.collecting[i].segments.push(id.to_string());
        Ok(())
    }

    /// Stores `change` of clip `i`, then applies it; a clip no longer collecting loses its
    /// pins (the spool holds its own copies) and leaves the book at the next [`sweep`](Self::sweep).
    pub fn settle(
        &mut self,
        spool: &Spool,
        ring: &mut Ring,
        i: usize,
        change: &ClipChange<'_>,
    ) -> Result<(), UploadError> {
        spool.update_clip_record(&self.collecting[i].id, change)?;
        self.collecting[i].apply(change);
        if !self.collecting[i].is_collecting() {
            let owner = self.collecting[i].id.clone();
            self.unpin_all(ring, &owner);
        }
        Ok(())
    }

    /// Forgets segments `gone` of clip `i`, which the ring no longer holds (stored first, then
    /// here): they cannot be handed over, and the clip's missing ranges cover their span.
    pub fn forget(&mut self, spool: &Spool, i: usize, gone: &[String]) -> Result<(), UploadError> {
        spool.remove_clip_segments(&self.collecting[i].id, gone)?;
        let gone: BTreeSet<&str> = gone.iter().map(String::as_str).collect();
        let clip = &mut self.collecting[i];
        clip.segments.retain(|sid| !gone.contains(sid.as_str()));
        clip.spooled.retain(|sid| !gone.contains(sid.as_str()));
        Ok(())
    }

    /// Drops clips that stopped collecting.
    pub fn sweep(&mut self) {
        self.collecting.retain(Clip::is_collecting);
    }

    /// Pins `ids` for `owner` in one batch (one fsync).
    fn pin(&mut self, ring: &mut Ring, ids: &[SegmentId], owner: &str) {
        if let Err(e) = ring.pin_many(ids, owner) {
            let n = ids.len();
            self.pin_failures.note(format!("{n} segments not pinned for clip {owner}: {e}"));
        }
    }

    fn unpin_all(&mut self, ring: &mut Ring, owner: &str) {
        if let Err(e) = ring.unpin_all(owner) {
            self.pin_failures.note(format!("pins of clip {owner} not released: {e}"));
        }
    }
}

/// A record as an agent before schema version 2 wrote it to `clips.json`.
#[derive(Deserialize)]
struct LegacyClip {
    id: String,
    trigger_id: Option<String>,
    user: String,
    reason: String,
    mode: rearview_protocol::CaptureMode,
    from_utc_micros: i64,
    to_utc_micros: i64,
    segments: Vec<String>,
    #[serde(default)]
    spooled: Vec<String>,
    #[serde(default)]
    in_spool: bool,
    state: RecordState,
    missing: Vec<Missing>,
    error: Option<String>,
}

impl From<LegacyClip> for Clip {
    fn from(c: LegacyClip) -> Clip {
        Clip {
            id: c.id,
            trigger_id: c.trigger_id,
            user: c.user,
            reason: c.reason,
            mode: c.mode,
            from_utc_micros: c.from_utc_micros,
            to_utc_micros: c.to_utc_micros,
            segments: c.segments,
            spooled: c.spooled.into_iter().collect(),
            in_spool: c.in_spool,
            state: c.state,
            missing: c.missing,
            error: c.error,
        }
    }
}

/// Imports `<data_dir>/clips.json` from an older agent into the spool, then removes it (see
/// the module docs). Returns a problem to report, if any; the file stays until imported.
pub fn import_clips_json(spool: &Spool, data_dir: &Path) -> Option<String> {
    let path = rearview_config::DataDir::new(data_dir).legacy_clips();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot read {} to import it: {e}", path.display())),
    };
    let legacy: Vec<LegacyClip> = match serde_json::from_slice(&bytes) {
        Ok(clips) => clips,
        Err(e) => {
            let aside = path.with_extension("json.bad");
            return Some(match std::fs::rename(&path, &aside) {
                Ok(()) => format!(
                    "{} is unreadable ({e}); set aside as {}",
                    path.display(),
                    aside.display()
                ),
                Err(r) => format!(
                    "{} is unreadable ({e}) and could not be set aside: {r}",
                    path.display()
                ),
            });
        }
    };
    let records: Vec<Clip> = legacy.into_iter().map(Clip::from).collect();
    match spool.import_clip_records(&records) {
        Ok(new) => {
            tracing::info!(clips = records.len(), new, "imported clips.json into the spool");
            std::fs::remove_file(&path)
                .err()
                .map(|e| format!("{} imported but not removed: {e}", path.display()))
        }
        Err(e) => Some(format!("{} not imported (kept for the next start): {e}", path.display())),
    }
}

/// Whether a clip's user and a segment's label name the same person: equal canonical forms
/// ([`rearview_config::canonical_principal`]), the rule approvals and triggers use too.
///
/// Labels are what the session's approval named when the segment was recorded. A segment from
/// before an upgrade, or from before `[identity] domain` was set, may carry a bare login
/// (`alice`) where triggers now name `alice@corp.example`: it is not taken (who `alice` was then
/// cannot be told after the fact), and the clip names that part of its window missing; such
/// segments leave the ring within its retention.
pub fn same_principal(a: &str, b: &str) -> bool {
    rearview_config::canonical_principal(a) == rearview_config::canonical_principal(b)
}

/// The parts of `[from, to]` that `spans` (segment start/end, UTC micros) do not cover, allowing
/// gaps up to `tolerance` (the time between two frames) as covered.
pub fn missing_ranges(from: i64, to: i64, spans: &[(i64, i64)], tolerance: i64) -> Vec<Missing> {
    let mut spans: Vec<(i64, i64)> = spans.to_vec();
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut cursor = from;
    for (i, (start, end)) in spans.iter().copied().enumerate() {
        if end < from || start > to {
            continue;
        }
        if start > cursor + tolerance {
            let reason = if i == 0 || cursor == from {
                "before the oldest recording the ring held for this user"
            } else {
                "not recorded (screen locked, capture paused or not running)"
            };
            out.push(Missing {
                from_utc_micros: cursor,
                to_utc_micros: start,
                reason: reason.into(),
            });
        }
        cursor = cursor.max(end);
    }
    if cursor + tolerance < to {
        let reason = if spans.is_empty() {
            "nothing recorded for this user in the window"
        } else {
            "not recorded after this point (capture stopped)"
        };
        out.push(Missing { from_utc_micros: cursor, to_utc_micros: to, reason: reason.into() });
    }
    out
}

/// 128 random bits as hex, for clip ids.
pub fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parts_are_named() {
        // Window 0..100, ring holds 40..60 and 61..80 (a one-unit frame gap is tolerated).
        let m = missing_ranges(0, 100, &[(61, 80), (40, 60)], 2);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].from_utc_micros, m[0].to_utc_micros), (0, 40));
        assert!(m[0].reason.contains("oldest"), "{}", m[0].reason);
        assert_eq!((m[1].from_utc_micros, m[1].to_utc_micros), (80, 100));
        // A hole in the middle.
        let m = missing_ranges(0, 100, &[(0, 30), (50, 100)], 2);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].from_utc_micros, m[0].to_utc_micros), (30, 50));
        assert!(m[0].reason.contains("not recorded"));
        assert!(missing_ranges(10, 20, &[(0, 30)], 2).is_empty());
        let all = missing_ranges(10, 20, &[], 2);
        assert_eq!((all[0].from_utc_micros, all[0].to_utc_micros), (10, 20));
    }

    /// 8,192 segments, half handed over: `unspooled` keeps the order taken and the ones not
    /// handed (one set lookup per segment; the old `Vec::contains` made this quadratic).
    #[test]
    fn unspooled_keeps_order_over_a_full_clip() {
        let window = rearview_uploader::spool::ClipWindow { from_utc_micros: 0, to_utc_micros: 1 };
        let mut clip = Clip::collecting("c".into(), None, "alice".into(), "r".into(), window);
        clip.segments = (0..8192).map(|n| format!("{n:032x}")).collect();
        clip.spooled = clip.segments.iter().step_by(2).cloned().collect();
        let started = std::time::Instant::now();
        let left = clip.unspooled();
        eprintln!("unspooled over 8192 segments: {:?}", started.elapsed());
        assert_eq!(left.len(), 4096);
        assert_eq!(left[0], format!("{:032x}", 1));
        assert!(left.windows(2).all(|w| w[0] < w[1]), "order taken");
    }
}
#[cfg(test)]
mod pin_tests {
    use rearview_capture::ring::RingConfig;
    use rearview_capture::seal::{seal, SealBinding, TenantSecretKey};
    use rearview_capture::segment::{SegmentContext, SegmentHeader};
    use rearview_capture::{MonitorInfo, Timestamp};

    use super::*;

    fn now_micros() -> i64 {
        Timestamp::now().utc_micros
    }

    fn insert(ring: &mut Ring, key: &TenantSecretKey, n: u8) -> SegmentId {
        let id = SegmentId::from_bytes([n; 16]);
        let now = now_micros();
        let t = |s: i64| Timestamp { utc_micros: now + s * 1_000_000, mono_micros: 0 };
        let header = SegmentHeader {
            id,
            context: SegmentContext {
                tenant: "contoso".into(),
                device: "dev-1".into(),
                user: "alice".into(),
                session: "s".into(),
                monitor: MonitorInfo {
                    id: 0,
                    name: "m0".into(),
                    x: 0,
                    y: 0,
                    width: 8,
                    height: 8,
                    primary: true,
                },
            },
            start: t(i64::from(n)),
            end: t(i64::from(n) + 1),
            frame_count: 1,
            event_count: 0,
        };
        let binding = SealBinding { tenant: "contoso", device: "dev-1", segment_id: id };
        ring.insert(&header, &seal(&key.public_key(), &binding, &[7; 64]).unwrap()).unwrap();
        id
    }

    fn clip(id: &str, segments: &[SegmentId]) -> Clip {
        Clip {
            id: id.into(),
            trigger_id: None,
            user: "alice".into(),
            reason: "test".into(),
            mode: rearview_protocol::CaptureMode::SpecificActivities,
            from_utc_micros: 0,
            to_utc_micros: i64::MAX,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            spooled: Default::default(),
            in_spool: false,
            state: RecordState::Collecting,
            missing: Vec::new(),
            error: None,
        }
    }

    struct Device {
        dir: tempfile::TempDir,
        key: TenantSecretKey,
        ring: Ring,
        spool: Spool,
    }

    fn device() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let key = TenantSecretKey::generate().unwrap();
        let ring = Ring::open(RingConfig::new(dir.path().join("ring"))).unwrap().0;
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        Device { dir, key, ring, spool }
    }

    fn restart(d: Device) -> Device {
        let Device { dir, key, ring, spool } = d;
        drop((ring, spool));
        let ring = Ring::open(RingConfig::new(dir.path().join("ring"))).unwrap().0;
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        Device { dir, key, ring, spool }
    }

    /// A clip is stored before its trigger counts as seen, a restart finds it collecting with
    /// its segments and what was handed over, and its trigger id finds it again.
    #[test]
    fn clips_survive_restart_in_the_spool_database() {
        let mut d = device();
        let (a, b) = (insert(&mut d.ring, &d.key, 1), insert(&mut d.ring, &d.key, 2));
        let mut book = ClipBook::load(&d.spool, &mut d.ring, d.dir.path()).unwrap().0;
        let mut c = clip("clip-a", &[a]);
        c.trigger_id = Some("t1".into());
        let i = book.open(&d.spool, &mut d.ring, c).unwrap();
        book.take(&d.spool, &mut d.ring, i, b).unwrap();
        let handed = vec![a.to_string()];
        let change = ClipChange {
            spooled: &handed,
            in_spool: true,
            state: RecordState::Collecting,
            missing: None,
            error: None,
        };
        book.settle(&d.spool, &mut d.ring, i, &change).unwrap();
        let before = book.collecting()[0].clone();

        let mut d = restart(d);
        let (book, problems) = ClipBook::load(&d.spool, &mut d.ring, d.dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(book.collecting(), std::slice::from_ref(&before));
        assert_eq!(book.collecting()[0].unspooled(), vec![b.to_string()]);
        assert_eq!(d.spool.clip_record_for_trigger("t1").unwrap(), Some(before));
        assert_eq!(d.ring.pins(b).unwrap(), vec!["clip-a".to_string()]);
        assert!(wants(&book.collecting()[0], "ALICE", 0, 1));
        assert!(!wants(&book.collecting()[0], "bob", 0, 1));
        assert!(
            !wants(&book.collecting()[0], "alice@corp.example", 0, 1),
            "not the same principal"
        );
    }

    /// The ring's pins follow the records at start: a pin of a clip nobody recorded is
    /// released, a listed segment the ring lost is forgotten, a stored segment the clip wants
    /// but had not listed yet (a crash in between) is taken and pinned, and a bob clip takes
    /// none of alice's.
    #[test]
    fn restart_pins_follow_the_records() {
        let mut d = device();
        let (listed, unlisted, foreign) = (
            insert(&mut d.ring, &d.key, 1),
            insert(&mut d.ring, &d.key, 2),
            insert(&mut d.ring, &d.key, 3),
        );
        d.ring.pin(foreign, "clip-unknown").unwrap();
        let vanished = SegmentId::from_bytes([9; 16]);
        d.spool.insert_clip_record(&clip("clip-a", &[listed, vanished])).unwrap();
        let mut bob = clip("clip-bob", &[]);
        bob.user = "bob".into();
        d.spool.insert_clip_record(&bob).unwrap();

        let (book, problems) = ClipBook::load(&d.spool, &mut d.ring, d.dir.path()).unwrap();

        assert!(problems.is_empty(), "{problems:?}");
        let want = vec![listed.to_string(), unlisted.to_string(), foreign.to_string()];
        assert_eq!(book.collecting()[0].segments, want);
        assert!(book.collecting()[1].segments.is_empty());
        assert_eq!(d.ring.pins(foreign).unwrap(), vec!["clip-a".to_string()]);
        assert_eq!(d.ring.pins(unlisted).unwrap(), vec!["clip-a".to_string()]);
        // What the restart decided is stored, not only held.
        let stored = d.spool.collecting_clip_records().unwrap();
        assert_eq!(stored[0].segments, want);
    }

    /// A pin that fails is counted and named for `rearview status`, not dropped (here: an
    /// owner id longer than the ring takes); the clip is still stored.
    #[test]
    fn pin_failures_are_counted_not_dropped() {
        let mut d = device();
        let seg = insert(&mut d.ring, &d.key, 1);
        let mut book = ClipBook::load(&d.spool, &mut d.ring, d.dir.path()).unwrap().0;
        let long = "c".repeat(200);
        book.open(&d.spool, &mut d.ring, clip(&long, &[seg])).unwrap();
        assert_eq!(book.pin_failures.count, 1);
        let last = book.pin_failures.last.clone().unwrap();
        assert!(last.contains("not pinned") && last.contains(&long), "{last}");
        assert_eq!(d.ring.pins(seg).unwrap(), Vec::<String>::new());
        assert_eq!(d.spool.collecting_clip_records().unwrap().len(), 1);
    }

    /// An old agent's `clips.json` is imported once (records and handed-over segments kept),
    /// then removed; a repeat after a crash before the removal imports nothing twice; garbage
    /// is set aside and reported.
    #[test]
    fn clips_json_is_imported_once_then_removed() {
        let mut d = device();
        let seg = insert(&mut d.ring, &d.key, 1);
        let legacy = serde_json::json!([
            { "id": "old-collecting", "trigger_id": "t1", "user": "alice", "reason": "r",
              "mode": "specific-activities", "from_utc_micros": 0, "to_utc_micros": i64::MAX,
              "segments": [seg.to_string()], "spooled": [seg.to_string()], "in_spool": true,
              "state": "collecting", "missing": [], "error": null },
            { "id": "old-done", "trigger_id": "t0", "user": "alice", "reason": "r",
              "mode": "specific-activities", "from_utc_micros": 0, "to_utc_micros": 5,
              "segments": [], "state": "pending",
              "missing": [{"from_utc_micros": 0, "to_utc_micros": 5, "reason": "gone"}],
              "error": null }
        ]);
        let path = d.dir.path().join("clips.json");
        std::fs::write(&path, serde_json::to_vec(&legacy).unwrap()).unwrap();
        let copy = std::fs::read(&path).unwrap();

        let (book, problems) = ClipBook::load(&d.spool, &mut d.ring, d.dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!path.exists(), "removed after the import");
        assert_eq!(book.collecting().len(), 1);
        assert!(book.collecting()[0].unspooled().is_empty());
        assert_eq!(d.ring.pins(seg).unwrap(), vec!["old-collecting".to_string()]);
        let done = d.spool.clip_record_for_trigger("t0").unwrap().unwrap();
        assert_eq!(done.state, RecordState::Pending);
        assert_eq!(done.missing[0].reason, "gone");

        // A crash before the removal: the file is there again; nothing is doubled.
        std::fs::write(&path, &copy).unwrap();
        assert_eq!(import_clips_json(&d.spool, d.dir.path()), None);
        assert_eq!(d.spool.clip_records().unwrap().len(), 2);
        assert!(!path.exists());

        std::fs::write(&path, b"{not json").unwrap();
        let problem = import_clips_json(&d.spool, d.dir.path()).unwrap();
        assert!(problem.contains("unreadable"), "{problem}");
        assert!(path.with_extension("json.bad").exists());
        assert_eq!(d.spool.clip_records().unwrap().len(), 2);
    }
}
