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
//! # State file
//!
//! `<data_dir>/clips.json`, rewritten (temp file, fsync, rename) on every change, so a restart
//! continues collecting open windows and pins of unknown clips can be released. A trigger's
//! clip is saved here before the trigger counts as seen, and `trigger_id` is unique in the
//! file: a trigger that comes again finds its clip instead of opening another.
//!
//! `user` is the principal the trigger named; a segment belongs to the clip when its label (the
//! principal its session's approval named) is the same principal ([`same_principal`]).
//!
//! ```text
//! [ { "id": "<32 hex>", "trigger_id": "…"|null, "user": "<principal>", "reason": "…",
//!     "mode": "specific-activities", "from_utc_micros": i64, "to_utc_micros": i64,
//!     "segments": ["<segment id hex>", …], "spooled": ["<segment id hex>", …],
//!     "in_spool": bool, "state": "collecting"|"pending"|"failed",
//!     "missing": [{"from_utc_micros": i64, "to_utc_micros": i64, "reason": "…"}],
//!     "error": "…"|null }, … ]   at most MAX_KEPT, newest last
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use rearview_capture::ring::Ring;
use rearview_capture::segment::SegmentId;
use rearview_config::CaptureMode;
use serde::{Deserialize, Serialize};

/// Clip records kept in the state file (finished ones beyond this are forgotten).
pub const MAX_KEPT: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clip {
    pub id: String,
    pub trigger_id: Option<String>,
    pub user: String,
    pub reason: String,
    pub mode: CaptureMode,
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    pub segments: Vec<String>,
    /// Those of `segments` already handed to the spool.
    #[serde(default)]
    pub spooled: Vec<String>,
    /// The spool has this clip (open while collecting).
    #[serde(default)]
    pub in_spool: bool,
    /// `collecting`, `pending`, `failed`.
    pub state: String,
    pub missing: Vec<Missing>,
    pub error: Option<String>,
}

impl Clip {
    pub fn collecting(&self) -> bool {
        self.state == "collecting"
    }

    /// Segments not handed to the spool yet.
    pub fn unspooled(&self) -> Vec<String> {
        self.segments.iter().filter(|s| !self.spooled.contains(s)).cloned().collect()
    }

    /// Whether a segment labelled `user` spanning `[start, end]` belongs in this clip.
    pub fn wants(&self, user: &str, start: i64, end: i64) -> bool {
        self.collecting()
            && same_principal(&self.user, user)
            && start <= self.to_utc_micros
            && end >= self.from_utc_micros
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

/// The daemon's clips and their state file.
#[derive(Debug)]
pub struct ClipBook {
    path: PathBuf,
    pub clips: Vec<Clip>,
}

impl ClipBook {
    /// Loads `path`; a missing file is an empty book, an unreadable one is set aside (renamed
    /// `.bad`) so the daemon starts, and the error is returned for the log.
    pub fn load(path: &Path) -> (ClipBook, Option<String>) {
        let mut problem = None;
        let clips = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::rename(path, path.with_extension("json.bad"));
                    problem = Some(format!("{} is unreadable ({e}); set aside", path.display()));
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                problem = Some(format!("cannot read {}: {e}", path.display()));
                Vec::new()
            }
        };
        (ClipBook { path: path.to_path_buf(), clips }, problem)
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        let excess = self.clips.len().saturating_sub(MAX_KEPT);
        if excess > 0 {
            let mut dropped = 0;
            self.clips.retain(|c| {
                if dropped < excess && !c.collecting() {
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&self.clips).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
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

    #[test]
    fn book_survives_restart_and_sets_garbage_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clips.json");
        let (mut book, problem) = ClipBook::load(&path);
        assert!(problem.is_none() && book.clips.is_empty());
        book.clips.push(Clip {
            id: random_id().unwrap(),
            trigger_id: Some("t1".into()),
            user: "alice".into(),
            reason: "r".into(),
            mode: CaptureMode::SpecificActivities,
            from_utc_micros: 1,
            to_utc_micros: 2,
            segments: vec!["ab".into()],
            spooled: vec![],
            in_spool: false,
            state: "collecting".into(),
            missing: vec![],
            error: None,
        });
        book.save().unwrap();
        let (again, _) = ClipBook::load(&path);
        assert_eq!(again.clips, book.clips);
        assert!(again.clips[0].wants("ALICE", 0, 1));
        assert!(!again.clips[0].wants("bob", 0, 1));
        assert!(!again.clips[0].wants("alice@corp.example", 0, 1), "not the same principal");
        std::fs::write(&path, b"{not json").unwrap();
        let (empty, problem) = ClipBook::load(&path);
        assert!(empty.clips.is_empty() && problem.is_some());
        assert!(path.with_extension("json.bad").exists());
    }
}

/// Brings pins and the clip state file back in line after a restart. A crash can fall between
/// pinning a segment and saving `clips.json`, or between saving a new clip's record and pinning
/// what the ring held for it: pins of a clip the file does not know (or no longer collects for)
/// are released, segments pinned by a collecting clip, or that it [wants](Clip::wants), but
/// missing from its list are pinned and adopted, and listed segments the ring no longer holds
/// are forgotten.
pub fn reconcile_pins(ring: &mut Ring, book: &mut ClipBook) {
    let known: std::collections::BTreeSet<String> =
        book.clips.iter().filter(|c| c.collecting()).map(|c| c.id.clone()).collect();
    let owners: std::collections::BTreeSet<String> =
        ring.entries().filter_map(|e| ring.pins(e.id)).flatten().collect();
    for owner in owners.difference(&known) {
        let _ = ring.unpin_all(owner);
    }
    for clip in book.clips.iter_mut().filter(|c| c.collecting()) {
        clip.segments.retain(|sid| sid.parse::<SegmentId>().is_ok_and(|id| ring.get(id).is_some()));
        let mut adopt = Vec::new();
        for e in ring.entries() {
            let pinned = ring.pins(e.id).is_some_and(|p| p.contains(&clip.id));
            let wanted = clip.wants(&e.user, e.start.utc_micros, e.end.utc_micros);
            if (pinned || wanted) && !clip.segments.contains(&e.id.to_string()) {
                adopt.push((e.id, pinned));
            }
        }
        for (id, pinned) in adopt {
            if pinned || ring.pin(id, &clip.id).is_ok() {
                clip.segments.push(id.to_string());
            }
        }
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
            mode: CaptureMode::SpecificActivities,
            from_utc_micros: 0,
            to_utc_micros: i64::MAX,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            spooled: Vec::new(),
            in_spool: false,
            state: "collecting".into(),
            missing: Vec::new(),
            error: None,
        }
    }

    /// A crash between pinning and saving clips.json, in both orders of damage: on a real ring
    /// in a temp directory, reconciling adopts the unlisted pin, forgets the vanished segment
    /// and releases the pin of a clip nobody remembers.
    #[test]
    fn restart_reconciles_pins_with_the_clip_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = TenantSecretKey::generate().unwrap();
        let mut ring = Ring::open(RingConfig::new(dir.path().join("ring"))).unwrap().0;
        let (listed, unlisted, foreign) =
            (insert(&mut ring, &key, 1), insert(&mut ring, &key, 2), insert(&mut ring, &key, 3));
        ring.pin(listed, "clip-a").unwrap();
        ring.pin(unlisted, "clip-a").unwrap();
        ring.pin(foreign, "clip-unknown").unwrap();
        let vanished = SegmentId::from_bytes([9; 16]);
        let (mut book, problem) = ClipBook::load(&dir.path().join("clips.json"));
        assert!(problem.is_none(), "{problem:?}");
        // Bob's clip: alice's segments are not wanted by it, only its own pins count.
        let mut a = clip("clip-a", &[listed, vanished]);
        a.user = "bob".into();
        book.clips.push(a);

        reconcile_pins(&mut ring, &mut book);

        let mut got = book.clips[0].segments.clone();
        got.sort();
        let mut want = vec![listed.to_string(), unlisted.to_string()];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(ring.pins(foreign).unwrap_or_default(), Vec::<String>::new());
        assert_eq!(ring.pins(unlisted).unwrap(), vec!["clip-a".to_string()]);
    }

    /// A crash after a trigger's clip was recorded but before the ring's segments of its window
    /// were pinned: the restart pins and lists them, so the clip is not left without the part
    /// of its window the ring still holds.
    #[test]
    fn restart_pins_what_a_recorded_clip_wants() {
        let dir = tempfile::tempdir().unwrap();
        let key = TenantSecretKey::generate().unwrap();
        let mut ring = Ring::open(RingConfig::new(dir.path().join("ring"))).unwrap().0;
        let held = insert(&mut ring, &key, 1);
        let (mut book, _) = ClipBook::load(&dir.path().join("clips.json"));
        let mut other = clip("clip-bob", &[]);
        other.user = "bob".into();
        book.clips.push(clip("clip-alice", &[]));
        book.clips.push(other);

        reconcile_pins(&mut ring, &mut book);

        assert_eq!(book.clips[0].segments, vec![held.to_string()]);
        assert!(book.clips[1].segments.is_empty());
        assert_eq!(ring.pins(held).unwrap(), vec!["clip-alice".to_string()]);
    }
}
