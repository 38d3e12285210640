//! The spool's chains (`spool::chain`): entries and heads survive a reopen, a spool of the
//! previous schema gains the tables and keeps its clips, appends that would break a chain are
//! refused and store nothing, and open clips keep their entries and notes as they grow.

#[path = "spool/support.rs"]
mod support;

use rearview_protocol::chain::{
    Absence, Appended, ChainHead, Entry, Gap, SegmentRef, Signer, Stream,
};
use rearview_uploader::spool::{CacheRule, Spool, StreamKey};
use rearview_uploader::UploadError;

/// A stream of session "2", monitor 1, and the device key that signs its chain.
struct Device {
    signer: Signer,
    key: StreamKey,
    stream: Stream,
}

fn device() -> Device {
    let (signer, _der) = Signer::generate().unwrap();
    let stream = Stream {
        tenant: "tenant-a".into(),
        device: "dev-1".into(),
        user: "alice@corp.example".into(),
        session: "2".into(),
        monitor: 1,
    };
    Device { signer, key: StreamKey { session: "2".into(), monitor: 1 }, stream }
}

/// Segment `n`'s entry: id and hash from `n`, spanning `n` s to `n` s + 900 ms.
fn segment(d: &Device, head: &mut ChainHead, n: u8) -> Entry {
    let seg = SegmentRef { id: format!("{n:032x}"), sha256: support::sha(n) };
    let from = i64::from(n) * 1_000_000;
    head.append(&d.signer, &d.stream, (from, from + 900_000), Appended::Segment(seg)).unwrap()
}

fn gap(d: &Device, head: &mut ChainHead, from_s: i64, to_s: i64) -> Entry {
    let gap = Gap { reason: "locked".into() };
    head.append(&d.signer, &d.stream, (from_s * 1_000_000, to_s * 1_000_000), Appended::Gap(gap))
        .unwrap()
}

#[test]
fn entries_and_heads_survive_reopen_and_are_found_by_time_and_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let d = device();
    let mut head = ChainHead::new().unwrap();
    let entries = {
        let spool = Spool::open(tmp.path()).unwrap();
        assert_eq!(spool.chain_head(&d.key).unwrap(), None);
        let first = vec![segment(&d, &mut head, 1)];
        spool.append_chain(&d.key, &head, &first).unwrap();
        let more = vec![gap(&d, &mut head, 2, 4), segment(&d, &mut head, 4)];
        spool.append_chain(&d.key, &head, &more).unwrap();
        // A repeat of a stored call (a retry after a crash) changes nothing.
        spool.append_chain(&d.key, &head, &more).unwrap();
        [first, more].concat()
    };
    let spool = Spool::open(tmp.path()).unwrap();
    assert_eq!(spool.chain_head(&d.key).unwrap(), Some(head.clone()));
    let other = StreamKey { session: "2".into(), monitor: 0 };
    assert_eq!(spool.chain_head(&other).unwrap(), None, "another monitor has its own chain");
    assert_eq!(spool.chain_entries_overlapping(0, 10_000_000).unwrap(), entries);
    assert_eq!(spool.chain_entries_overlapping(2_500_000, 3_000_000).unwrap(), entries[1..2]);
    assert_eq!(spool.chain_entries_overlapping(1_950_000, 1_990_000).unwrap(), vec![]);
    assert_eq!(spool.chain_entries_for_segment(&format!("{:032x}", 4)).unwrap(), entries[1..]);
    assert_eq!(spool.chain_entries_for_segment(&format!("{:032x}", 1)).unwrap(), entries[..1]);
    assert_eq!(spool.chain_entries_for_segment(&format!("{:032x}", 9)).unwrap(), vec![]);
    // Pruning forgets entries that ended before the time, and keeps the head.
    assert_eq!(spool.prune_chain(3_000_000).unwrap(), 1);
    assert_eq!(spool.chain_entries_overlapping(0, 10_000_000).unwrap(), entries[1..]);
    assert_eq!(spool.chain_head(&d.key).unwrap(), Some(head));
}

#[test]
fn an_append_that_breaks_the_chain_is_refused_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let d = device();
    let mut head = ChainHead::new().unwrap();
    let first = segment(&d, &mut head, 1);
    spool.append_chain(&d.key, &head, std::slice::from_ref(&first)).unwrap();
    let stored = head.clone();
    // A hole: entry 1 signed but not handed over, entry 2 given alone.
    let _skipped = segment(&d, &mut head, 2);
    let after_hole = segment(&d, &mut head, 3);
    let err = spool.append_chain(&d.key, &head, std::slice::from_ref(&after_hole)).unwrap_err();
    assert!(matches!(err, UploadError::Chain(_)), "{err:?}");
    assert!(err.to_string().contains("does not follow the stored chain"), "{err}");
    // Entries that do not lead to the head given.
    let mut head2 = stored.clone();
    let next = segment(&d, &mut head2, 2);
    let mut wrong = head2.clone();
    wrong.next_seq += 1;
    let err = spool.append_chain(&d.key, &wrong, std::slice::from_ref(&next)).unwrap_err();
    assert!(err.to_string().contains("is not where its entries lead"), "{err}");
    // The stored head with entries it does not have.
    let err = spool.append_chain(&d.key, &stored, std::slice::from_ref(&next)).unwrap_err();
    assert!(err.to_string().contains("the head is already stored but this entry is not"), "{err}");
    // Another stream's entries.
    let err = spool
        .append_chain(&StreamKey { session: "9".into(), monitor: 1 }, &head2, &[next])
        .unwrap_err();
    assert!(err.to_string().contains("not the stream's"), "{err}");
    assert_eq!(spool.chain_head(&d.key).unwrap(), Some(stored));
    assert_eq!(spool.chain_entries_overlapping(0, i64::MAX).unwrap(), vec![first]);
}

#[test]
fn a_spool_of_the_previous_schema_gains_the_chain_tables_and_keeps_its_clips() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(tmp.path()).unwrap();
        let m = support::manifest("old-clip", &[1, 2], false);
        spool.enqueue(&m, &support::named(&[1, 2]), CacheRule::overwrite_oldest(1 << 20)).unwrap();
    }
    // The spool as schema version 2 wrote it: no chain tables.
    {
        let db = rusqlite::Connection::open(tmp.path().join("spool.db")).unwrap();
        db.execute_batch(
            "DROP TABLE chain_heads; DROP TABLE chain_entries; PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let spool = Spool::open(tmp.path()).unwrap();
    let db = rusqlite::Connection::open(tmp.path().join("spool.db")).unwrap();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, rearview_uploader::spool::SCHEMA_VERSION);
    assert_eq!(version, 3);
    let pending = spool.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].manifest, support::manifest("old-clip", &[1, 2], false));
    assert_eq!(support::files_on_disk(tmp.path()), vec![support::sha(1), support::sha(2)]);
    let d = device();
    let mut head = ChainHead::new().unwrap();
    let e = segment(&d, &mut head, 1);
    spool.append_chain(&d.key, &head, &[e]).unwrap();
    assert_eq!(spool.chain_head(&d.key).unwrap(), Some(head));
}

#[test]
fn extending_an_open_clip_keeps_its_entries_and_notes_and_adds_new_ones_in_chain_order() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let cache = CacheRule::overwrite_oldest(1 << 20);
    let d = device();
    let mut head = ChainHead::new().unwrap();
    let (e1, e2, e3) =
        (segment(&d, &mut head, 1), segment(&d, &mut head, 2), segment(&d, &mut head, 3));
    let note = |e: &Entry| Absence::sign(&d.signer, e, "k", "evicted").unwrap();
    let mut first = support::manifest("k", &[1], true);
    first.chain = vec![e1.clone(), e2.clone()];
    first.absent = vec![note(&e2)];
    spool.enqueue(&first, &support::named(&[1]), cache).unwrap();
    // The extension gives only what is new, out of order, and repeats one entry.
    let mut next = support::manifest("k", &[3], false);
    next.chain = vec![e3.clone(), e2.clone()];
    next.absent = vec![note(&e2)];
    spool.enqueue(&next, &support::named(&[3]), cache).unwrap();
    let stored = &spool.pending().unwrap()[0].manifest;
    assert_eq!(stored.chain, vec![e1, e2.clone(), e3]);
    assert_eq!(stored.absent, vec![note(&e2)]);
    assert!(!stored.open);
}

#[test]
fn a_segment_lost_on_the_device_keeps_its_entry_and_gets_a_signed_absence_note() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let d = device();
    let mut head = ChainHead::new().unwrap();
    let entries = vec![segment(&d, &mut head, 1), segment(&d, &mut head, 2)];
    let mut m = support::manifest("k", &[1, 2], false);
    m.chain = entries.clone();
    spool.enqueue(&m, &support::named(&[1, 2]), CacheRule::overwrite_oldest(1 << 20)).unwrap();
    std::fs::remove_file(tmp.path().join("segments").join(support::sha(2))).unwrap();
    let wanted = vec![support::sha(1), support::sha(2)];
    let revised = spool.settle_lost("k", &wanted, Some(&d.signer)).unwrap().unwrap();
    assert_eq!(revised.chain, entries, "the lost segment's entry stays");
    let reason = rearview_uploader::spool::LOST_ON_DEVICE;
    assert_eq!(revised.absent, vec![Absence::sign(&d.signer, &entries[1], "k", reason).unwrap()]);
    assert_eq!(spool.pending().unwrap()[0].manifest, revised);
}
