//! Disk full on a real, small filesystem: a 1 MiB tmpfs mounted by the test (root only;
//! otherwise the test prints why it skipped). Writes fail with a clear, retryable error,
//! nothing stored is lost, the ring reopens, and writing resumes once space returns.

use std::fs;
use std::time::Duration;

use rearview_capture::ring::{Ring, RingConfig, RingError};
use rearview_capture::seal::{open, TenantSecretKey};
use rearview_capture::segment::{SegmentHeader, SegmentId};
use rearview_testkit::tmpfs::Tmpfs;

#[path = "support/ring.rs"]
mod ring_support;

use ring_support::{binding, seal_bytes};

/// The `i`-th segment: 9 s starting at `i` × 10 s.
fn header(id: SegmentId, i: i64) -> SegmentHeader {
    ring_support::header(id, "s1", 0, i * 10_000_000, i * 10_000_000 + 9_000_000)
}

#[test]
fn disk_full_fails_cleanly_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let _mount = match Tmpfs::mount(tmp.path(), "1m") {
        Ok(m) => m,
        Err(reason) => {
            eprintln!("SKIPPED disk_full_fails_cleanly_and_recovers: {reason}");
            return;
        }
    };
    let key = TenantSecretKey::generate().unwrap();
    let filler = tmp.path().join("filler");
    fs::write(&filler, vec![0u8; 256 * 1024]).unwrap();
    // The ring's own bound is far above the filesystem's, so the disk fills first.
    let cfg = RingConfig {
        dir: tmp.path().join("ring"),
        retention: Duration::from_secs(3600),
        max_bytes: 1 << 30,
    };
    let (mut ring, _) = Ring::open(cfg.clone()).unwrap();
    let plaintext = vec![0xa5u8; 60 * 1024];
    let seal_for = |id: SegmentId| seal_bytes(&key, id, &plaintext);

    let mut stored = Vec::new();
    let (failed_id, failed_bytes) = loop {
        let i = stored.len() as i64;
        assert!(i < 100, "a 1 MiB tmpfs never filled up");
        let id = SegmentId::random().unwrap();
        let sealed = seal_for(id);
        match ring.insert(&header(id, i), &sealed) {
            Ok(report) => {
                assert!(report.evicted.is_empty());
                stored.push(id);
            }
            Err(e) => {
                assert!(matches!(e, RingError::DiskFull { .. }), "expected disk full, got {e:?}");
                assert!(e.is_retryable());
                assert!(e.to_string().contains("disk full"), "{e}");
                break (id, sealed);
            }
        }
    };
    assert!(stored.len() >= 3, "only {} segments fit", stored.len());
    let check_all = |ring: &Ring, ids: &[SegmentId]| {
        assert_eq!(ring.entries().map(|e| e.id).collect::<Vec<_>>(), ids);
        for id in ids {
            let plain = open(&key, &binding(*id), &ring.read(*id).unwrap()).unwrap();
            assert_eq!(plain.len(), plaintext.len());
        }
    };
    check_all(&ring, &stored);
    assert!(ring.get(failed_id).is_none());
    let leftovers: Vec<_> = fs::read_dir(cfg.dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") || n.starts_with(&failed_id.to_string()))
        .collect();
    assert!(leftovers.is_empty(), "failed write left {leftovers:?}");
    // Still full: a second try fails the same way.
    assert!(matches!(
        ring.insert(&header(failed_id, 20), &failed_bytes),
        Err(RingError::DiskFull { .. })
    ));

    // A restart while the disk is full opens the ring with nothing lost or repaired.
    drop(ring);
    let (mut ring, report) = Ring::open(cfg.clone()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    check_all(&ring, &stored);

    // Space returns: the very same sealed bytes go in, and more after them.
    fs::remove_file(&filler).unwrap();
    ring.insert(&header(failed_id, 20), &failed_bytes).unwrap();
    stored.push(failed_id);
    let id = SegmentId::random().unwrap();
    ring.insert(&header(id, 21), &seal_for(id)).unwrap();
    stored.push(id);
    check_all(&ring, &stored);
    drop(ring);
    let (ring, report) = Ring::open(cfg).unwrap();
    assert!(report.is_clean(), "{report:?}");
    check_all(&ring, &stored);
}
