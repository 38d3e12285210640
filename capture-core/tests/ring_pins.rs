//! Batched pins on a real ring in a temp directory: a batch is one index append and one
//! fdatasync, survives a reopen, writes nothing when one id is unknown, and a crash part-way
//! (the index cut inside the batch) keeps a prefix of it.

use std::fs::OpenOptions;
use std::time::Duration;

use rearview_capture::ring::{Ring, RingConfig, RingError};
use rearview_capture::seal::TenantSecretKey;
use rearview_capture::segment::SegmentId;

#[path = "support/ring.rs"]
mod ring_support;

fn config(dir: &std::path::Path) -> RingConfig {
    RingConfig { dir: dir.to_owned(), retention: Duration::from_secs(3600), max_bytes: 1 << 30 }
}

/// A ring holding `n` segments, and their ids in order.
fn ring_with(dir: &std::path::Path, n: u8) -> (Ring, Vec<SegmentId>) {
    let key = TenantSecretKey::generate().unwrap();
    let (mut ring, _) = Ring::open(config(dir)).unwrap();
    let base = 1_700_000_000_000_000;
    let ids: Vec<SegmentId> = (1..=n).map(|i| SegmentId::from_bytes([i; 16])).collect();
    for (i, id) in ids.iter().enumerate() {
        let start = base + i as i64 * 10_000_000;
        let header = ring_support::header(*id, "s1", 0, start, start + 9_000_000);
        ring.insert(&header, &ring_support::sealed(&key, *id, 64)).unwrap();
    }
    (ring, ids)
}

fn index_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("index.rvx")).unwrap().len()
}

fn pinned_by(ring: &Ring, ids: &[SegmentId], owner: &str) -> Vec<bool> {
    ids.iter().map(|id| ring.pins(*id).unwrap_or_default().contains(&owner.to_string())).collect()
}

#[test]
fn a_batch_of_pins_persists_and_an_unknown_id_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut ring, ids) = ring_with(tmp.path(), 6);
    let before = index_len(tmp.path());
    let unknown = SegmentId::from_bytes([0xee; 16]);
    let err = ring.pin_many(&[ids[0], unknown], "clip-a").unwrap_err();
    assert!(matches!(err, RingError::NotFound(id) if id == unknown), "{err}");
    assert_eq!(index_len(tmp.path()), before, "nothing written");
    assert_eq!(pinned_by(&ring, &ids, "clip-a"), vec![false; 6]);

    // Repeats in a batch, and pins already held, are pinned once.
    assert_eq!(ring.pin_many(&[ids[0], ids[1], ids[0]], "clip-a").unwrap(), 2);
    assert_eq!(ring.pin_many(&ids, "clip-a").unwrap(), 4);
    assert_eq!(ring.pin_many(&ids[..3], "clip-b").unwrap(), 3);
    assert_eq!(ring.stats().pinned_segments, 6);
    drop(ring);

    let (mut ring, _) = Ring::open(config(tmp.path())).unwrap();
    assert_eq!(pinned_by(&ring, &ids, "clip-a"), vec![true; 6]);
    assert_eq!(ring.unpin_all("clip-a").unwrap(), 6);
    assert_eq!(ring.stats().pinned_segments, 3, "clip-b still pins three");
    drop(ring);
    let (ring, _) = Ring::open(config(tmp.path())).unwrap();
    assert_eq!(pinned_by(&ring, &ids, "clip-a"), vec![false; 6]);
    assert_eq!(pinned_by(&ring, &ids, "clip-b"), [vec![true; 3], vec![false; 3]].concat());
}

#[test]
fn a_crash_inside_a_batch_keeps_a_prefix_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut ring, ids) = ring_with(tmp.path(), 10);
    let before = index_len(tmp.path());
    assert_eq!(ring.pin_many(&ids, "clip-a").unwrap(), 10);
    let after = index_len(tmp.path());
    drop(ring);
    // As if the machine died with the batch half on disk: cut inside its sixth record.
    let record = (after - before) / 10;
    let cut = before + 5 * record + record / 2;
    OpenOptions::new()
        .write(true)
        .open(tmp.path().join("index.rvx"))
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (mut ring, report) = Ring::open(config(tmp.path())).unwrap();
    assert!(report.torn_index_bytes > 0, "{report:?}");
    assert_eq!(report.entries, 10, "the segments themselves are intact");
    assert_eq!(pinned_by(&ring, &ids, "clip-a"), [vec![true; 5], vec![false; 5]].concat());
    // Pinning the batch again completes it.
    assert_eq!(ring.pin_many(&ids, "clip-a").unwrap(), 5);
    assert_eq!(ring.stats().pinned_segments, 10);
}
