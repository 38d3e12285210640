//! The spool against a simple in-memory model: random sequences of enqueue, extending and
//! closing an open clip, marking segments and clips sent, refusing, reopening the spool and
//! overflowing the offline cache, plus the daemon's clip records. After every step the real
//! spool (a SQLite file and segment files in a temp dir) must agree with the model on what is
//! pending (in order, with which segments), each clip's state, the unsent bytes, the lost
//! counters, the files on disk (exactly the unsent segments), and the clip records.

#[path = "spool/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rearview_config::WhenFull;
use rearview_uploader::spool::{CacheRule, ClipChange, ClipRecord, ClipWindow, RecordState, Spool};
use rearview_uploader::UploadError;
use support::{files_on_disk, manifest, named, segment_bytes, sha, SEGMENTS};

#[derive(Clone, Debug)]
enum Op {
    /// Enqueue clip `clip` with segments `segs` (a new clip, or an extension or close of an
    /// open one), with an offline cache of `cache` bytes that overwrites the oldest or, with
    /// `drop_newest`, refuses the new clip.
    Enqueue {
        clip: u8,
        segs: Vec<u8>,
        open: bool,
        cache: u64,
        drop_newest: bool,
    },
    MarkSegmentSent {
        seg: u8,
    },
    /// The console has all of the `nth` pending clip.
    MarkSent {
        nth: usize,
    },
    Refuse {
        nth: usize,
    },
    Reopen,
    /// The daemon opens clip record `rec` with segments `segs`.
    OpenRecord {
        rec: u8,
        segs: Vec<u8>,
    },
    /// The daemon takes segment `seg` for record `rec`.
    TakeSegment {
        rec: u8,
        seg: u8,
    },
    /// The daemon hands record `rec`'s unspooled segments over and sets its state.
    SettleRecord {
        rec: u8,
        state: RecordState,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Distinct within one call: the uploader names a segment by the hash of its sealed bytes,
    // and sealing is randomised, so one clip never names the same bytes twice.
    let segs =
        || proptest::collection::btree_set(0..SEGMENTS, 0..5).prop_map(|s| s.into_iter().collect());
    let state = prop_oneof![
        Just(RecordState::Collecting),
        Just(RecordState::Pending),
        Just(RecordState::Failed)
    ];
    prop_oneof![
        6 => (
            0u8..6,
            segs(),
            any::<bool>(),
            prop_oneof![Just(600u64), Just(1500), Just(100_000)],
            any::<bool>()
        )
            .prop_map(|(clip, segs, open, cache, drop_newest)| Op::Enqueue {
                clip,
                segs,
                open,
                cache,
                drop_newest
            }),
        2 => (0..SEGMENTS).prop_map(|seg| Op::MarkSegmentSent { seg }),
        2 => (0usize..4).prop_map(|nth| Op::MarkSent { nth }),
        1 => (0usize..4).prop_map(|nth| Op::Refuse { nth }),
        1 => Just(Op::Reopen),
        1 => (0u8..4, segs()).prop_map(|(rec, segs)| Op::OpenRecord { rec, segs }),
        1 => (0u8..4, 0..SEGMENTS).prop_map(|(rec, seg)| Op::TakeSegment { rec, seg }),
        1 => (0u8..4, state).prop_map(|(rec, state)| Op::SettleRecord { rec, state }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Pending,
    Sent,
    Refused,
    Lost,
}

impl Where {
    fn name(self) -> &'static str {
        match self {
            Where::Pending => "pending",
            Where::Sent => "sent",
            Where::Refused => "refused",
            Where::Lost => "lost",
        }
    }
}

#[derive(Debug)]
struct ModelClip {
    id: String,
    state: Where,
    open: bool,
    /// Segments the manifest names, in order.
    segs: Vec<u8>,
}

/// The spool as the docs describe it, in memory.
#[derive(Debug, Default)]
struct Model {
    /// In enqueue order.
    clips: Vec<ModelClip>,
    /// Segment rows: size and whether the console has it; one per segment a pending clip
    /// names.
    rows: BTreeMap<u8, bool>,
    lost_clips: u64,
    lost_segments: u64,
    lost_bytes: u64,
    records: BTreeMap<u8, ClipRecord>,
}

fn size(n: u8) -> u64 {
    segment_bytes(n).len() as u64
}

impl Model {
    fn clip(&self, id: &str) -> Option<usize> {
        self.clips.iter().position(|c| c.id == id)
    }

    fn spooled_bytes(&self) -> u64 {
        self.rows.iter().filter(|(_, sent)| !**sent).map(|(n, _)| size(*n)).sum()
    }

    fn pending(&self) -> impl Iterator<Item = &ModelClip> {
        self.clips.iter().filter(|c| c.state == Where::Pending)
    }

    /// Takes clip `i` out of the pending set; returns (segments, bytes) whose rows went.
    fn release(&mut self, i: usize, to: Where) -> (u64, u64) {
        self.clips[i].state = to;
        let still: BTreeSet<u8> = self.pending().flat_map(|c| c.segs.iter().copied()).collect();
        let orphans: Vec<u8> = self.clips[i]
            .segs
            .iter()
            .copied()
            .collect::<BTreeSet<u8>>()
            .into_iter()
            .filter(|n| self.rows.contains_key(n) && !still.contains(n))
            .collect();
        for n in &orphans {
            self.rows.remove(n);
        }
        (orphans.len() as u64, orphans.iter().map(|n| size(*n)).sum())
    }

    /// What `Spool::enqueue` does; returns the dropped clip ids, or `Err` for too large.
    fn enqueue(
        &mut self,
        id: &str,
        segs: &[u8],
        open: bool,
        cache: CacheRule,
    ) -> Result<Vec<String>, ()> {
        let mut adding: Vec<u8> = segs.to_vec();
        let mut next_segs = segs.to_vec();
        let existing = self.clip(id);
        if let Some(i) = existing {
            let c = &self.clips[i];
            if c.state != Where::Pending || !c.open {
                return Ok(vec![]);
            }
            adding.retain(|n| !c.segs.contains(n));
            next_segs = c.segs.clone();
            next_segs.extend(segs.iter().filter(|n| !c.segs.contains(n)));
            if next_segs == c.segs && open {
                return Ok(vec![]);
            }
        }
        let new_bytes: u64 =
            adding.iter().filter(|n| !self.rows.contains_key(n)).map(|n| size(*n)).sum();
        if new_bytes > cache.max_bytes {
            return Err(());
        }
        let full = self.spooled_bytes() + new_bytes > cache.max_bytes;
        if cache.when_full == WhenFull::DropNewest && new_bytes > 0 && full {
            let (n, bytes) = match existing {
                Some(i) => self.release(i, Where::Lost),
                None => {
                    let segs = next_segs;
                    self.clips.push(ModelClip {
                        id: id.to_string(),
                        state: Where::Lost,
                        open,
                        segs,
                    });
                    (0, 0)
                }
            };
            self.lost_clips += 1;
            self.lost_segments += adding.len() as u64 + n;
            self.lost_bytes += new_bytes + bytes;
            return Ok(vec![]);
        }
        let mut dropped = Vec::new();
        while self.spooled_bytes() + new_bytes > cache.max_bytes {
            let Some(i) = self.clips.iter().position(|c| c.state == Where::Pending && c.id != id)
            else {
                break;
            };
            let (n, bytes) = self.release(i, Where::Lost);
            self.lost_clips += 1;
            self.lost_segments += n;
            self.lost_bytes += bytes;
            dropped.push(self.clips[i].id.clone());
        }
        for n in adding {
            self.rows.entry(n).or_insert(false);
        }
        match existing {
            Some(i) => {
                self.clips[i].segs = next_segs;
                self.clips[i].open = open;
            }
            None => self.clips.push(ModelClip {
                id: id.to_string(),
                state: Where::Pending,
                open,
                segs: next_segs,
            }),
        }
        Ok(dropped)
    }
}

fn record(rec: u8, segs: &[u8]) -> ClipRecord {
    let window = ClipWindow { from_utc_micros: 0, to_utc_micros: 1 };
    let mut r = ClipRecord::collecting(
        format!("rec-{rec}"),
        Some(format!("trg-{rec}")),
        "alice".into(),
        "test".into(),
        window,
    );
    let mut seen = HashSet::new();
    r.segments = segs.iter().map(|n| sha(*n)).filter(|s| seen.insert(s.clone())).collect();
    r
}

fn apply(spool: &mut Spool, dir: &std::path::Path, model: &mut Model, op: &Op) {
    match op {
        Op::Enqueue { clip, segs, open, cache, drop_newest } => {
            let id = format!("clip-{clip}");
            let when_full =
                if *drop_newest { WhenFull::DropNewest } else { WhenFull::OverwriteOldest };
            let cache = CacheRule { max_bytes: *cache, when_full };
            let got = spool.enqueue(&manifest(&id, segs, *open), &named(segs), cache);
            match (got, model.enqueue(&id, segs, *open, cache)) {
                (Ok(e), Ok(dropped)) => assert_eq!(e.dropped_clips, dropped, "dropped clips"),
                (Err(UploadError::TooLarge(_)), Err(())) => {}
                (got, want) => panic!("enqueue {id}: spool {got:?}, model {want:?}"),
            }
        }
        Op::MarkSegmentSent { seg } => {
            spool.mark_segment_sent(&sha(*seg)).unwrap();
            if let Some(sent) = model.rows.get_mut(seg) {
                *sent = true;
            }
        }
        Op::MarkSent { nth } | Op::Refuse { nth } => {
            let Some(id) = model.pending().nth(*nth).map(|c| c.id.clone()) else { return };
            let i = model.clip(&id).unwrap();
            if matches!(op, Op::MarkSent { .. }) {
                spool.mark_sent(&id).unwrap();
                model.release(i, Where::Sent);
            } else {
                spool.mark_refused(&id, "422: no").unwrap();
                model.release(i, Where::Refused);
            }
        }
        Op::Reopen => {
            *spool = Spool::open(dir).unwrap();
        }
        Op::OpenRecord { rec, segs } => {
            let r = record(*rec, segs);
            let stored = spool.insert_clip_record(&r);
            assert_eq!(stored.is_ok(), !model.records.contains_key(rec), "{stored:?}");
            model.records.entry(*rec).or_insert(r);
        }
        Op::TakeSegment { rec, seg } => {
            let Some(r) = model.records.get_mut(rec) else { return };
            spool.add_clip_segments(&r.id, &[sha(*seg)]).unwrap();
            if !r.segments.contains(&sha(*seg)) {
                r.segments.push(sha(*seg));
            }
        }
        Op::SettleRecord { rec, state } => {
            let Some(r) = model.records.get_mut(rec) else { return };
            let handed = r.unspooled();
            let change = ClipChange {
                spooled: &handed,
                in_spool: true,
                state: *state,
                missing: None,
                error: Some("e"),
            };
            spool.update_clip_record(&r.id, &change).unwrap();
            r.apply(&change);
        }
    }
}

fn check(spool: &Spool, dir: &std::path::Path, model: &Model) {
    let pending: Vec<(String, Vec<String>)> = spool
        .pending()
        .unwrap()
        .into_iter()
        .map(|p| (p.manifest.clip_id, p.manifest.segments.into_iter().map(|s| s.sha256).collect()))
        .collect();
    let want: Vec<(String, Vec<String>)> =
        model.pending().map(|c| (c.id.clone(), c.segs.iter().map(|n| sha(*n)).collect())).collect();
    assert_eq!(pending, want, "pending clips");
    for c in &model.clips {
        assert_eq!(
            spool.clip_state(&c.id).unwrap().map(|s| s.as_str()),
            Some(c.state.name()),
            "{}",
            c.id
        );
    }
    let stats = spool.stats().unwrap();
    assert_eq!(stats.spooled_bytes, model.spooled_bytes(), "unsent bytes");
    assert_eq!(stats.pending_clips, model.pending().count() as u64);
    assert_eq!(
        (stats.lost_clips, stats.lost_segments, stats.lost_bytes),
        (model.lost_clips, model.lost_segments, model.lost_bytes),
        "lost counters"
    );
    let unsent: Vec<String> =
        model.rows.iter().filter(|(_, s)| !**s).map(|(n, _)| sha(*n)).collect();
    assert_eq!(files_on_disk(dir), unsent, "files on disk are the unsent segments");
    for n in 0..SEGMENTS {
        assert_eq!(spool.has_segment(&sha(n)).unwrap(), model.rows.contains_key(&n), "row of {n}");
    }
    let records = spool.clip_records().unwrap();
    let mut want: Vec<&ClipRecord> = model.records.values().collect();
    want.sort_by_key(|r| records.iter().position(|g| g.id == r.id));
    assert_eq!(records.iter().collect::<Vec<_>>(), want, "clip records");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        // Integration tests have no lib.rs beside them, so name the committed file directly
        // (relative to the crate).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/spool_model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn spool_matches_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let mut spool = Spool::open(&dir).unwrap();
        let mut model = Model::default();
        for op in &ops {
            apply(&mut spool, &dir, &mut model, op);
            check(&spool, &dir, &model);
        }
    }
}

/// Found by the model: a refused clip's stored manifest carries the refusal, which enqueue
/// could not read back, so the daemon's next extension or close of that clip failed with
/// "spooled manifest unreadable" on every tick instead of learning it was refused.
#[test]
fn a_refused_clip_enqueued_again_says_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let cache = CacheRule::overwrite_oldest(100_000);
    spool.enqueue(&manifest("c", &[1], true), &named(&[1]), cache).unwrap();
    spool.mark_refused("c", "422: window too long").unwrap();
    let again = spool.enqueue(&manifest("c", &[1, 2], false), &named(&[1, 2]), cache).unwrap();
    assert_eq!((again.new, again.added, again.state.as_str()), (false, 0, "refused"));
    assert!(files_on_disk(tmp.path()).is_empty(), "nothing written for a refused clip");
}

/// The agent's `[spool] max_bytes` caps the policy's cache (the smaller wins), and with
/// `drop_newest` a clip that does not fit is refused and counted lost while the cached ones
/// stay; with `overwrite_oldest` the oldest goes instead.
#[test]
fn the_cache_is_the_smaller_of_policy_and_agent_and_drop_newest_keeps_the_old() {
    let mut policy = rearview_config::OfflineCache { max_bytes: 500_000_000, ..Default::default() };
    assert_eq!(CacheRule::effective(&policy, 700).max_bytes, 700, "the agent's ceiling");
    assert_eq!(CacheRule::effective(&policy, u64::MAX).max_bytes, 500_000_000);
    policy.when_full = WhenFull::DropNewest;
    let cache = CacheRule::effective(&policy, 700);
    assert_eq!(cache.when_full, WhenFull::DropNewest);

    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    // Segments 1 and 2 are 200 and 300 bytes, 3 is 400.
    spool.enqueue(&manifest("old", &[1, 2], false), &named(&[1, 2]), cache).unwrap();
    let refused = spool.enqueue(&manifest("new", &[3], false), &named(&[3]), cache).unwrap();
    assert_eq!((refused.state.as_str(), refused.dropped_clips.len()), ("lost", 0));
    assert_eq!(spool.clip_state("old").unwrap().map(|s| s.as_str()), Some("pending"));
    assert_eq!(spool.clip_state("new").unwrap().map(|s| s.as_str()), Some("lost"));
    let stats = spool.stats().unwrap();
    assert_eq!((stats.lost_clips, stats.lost_segments, stats.lost_bytes), (1, 1, 400));
    assert_eq!(files_on_disk(tmp.path()), vec![support::sha(1), support::sha(2)]);

    let oldest = CacheRule::overwrite_oldest(700);
    let kept = spool.enqueue(&manifest("newer", &[3], false), &named(&[3]), oldest).unwrap();
    assert_eq!(kept.dropped_clips, vec!["old".to_string()]);
    assert_eq!(files_on_disk(tmp.path()), vec![support::sha(3)]);
}
