//! kill -9 of a process writing the ring, at random moments, many times: after each kill the
//! ring reopens, every indexed segment opens with the tenant key (hpke crate), parses, and
//! decodes to exactly the frames the writer encoded.
//!
//! The writer is this test binary itself, re-executed with [`CHILD_ENV`] set, running only
//! [`crash_child_writer`]; run normally, that function returns at once.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rearview_capture::ring::{Ring, RingConfig};
use rearview_capture::seal::{open, seal, SealBinding, TenantPublicKey, TenantSecretKey};
use rearview_capture::segment::{Segment, SegmentContext, SegmentWriter};
use rearview_capture::{Frame, MonitorInfo, Timestamp};

const CHILD_ENV: &str = "REARVIEW_RING_CRASH_DIR";
const KEY_ENV: &str = "REARVIEW_RING_CRASH_KEY";
const ROUND_ENV: &str = "REARVIEW_RING_CRASH_ROUND";
const ROUNDS: u64 = 60;
const W: u32 = 48;
const H: u32 = 32;
const TENANT: &str = "contoso";
const DEVICE: &str = "laptop-17";

fn config(dir: &Path) -> RingConfig {
    // Small enough that the writer evicts all the time, so kills land in evictions too.
    RingConfig { dir: dir.to_owned(), retention: Duration::from_secs(90), max_bytes: 48 * 1024 }
}

/// The frame captured at `utc_micros`: a function of the time alone, so the checker can
/// recompute what every decoded frame must look like.
fn frame_at(utc_micros: i64) -> Frame {
    let t = (utc_micros / 1_000_000) as u32;
    let mut f = Frame::black(W, H, Timestamp { utc_micros, mono_micros: utc_micros as u64 });
    for y in 0..H {
        for x in 0..W {
            let p = &mut f.row_mut(y)[x as usize * 4..x as usize * 4 + 3];
            p[0] = (x.wrapping_mul(5) ^ t) as u8;
            p[1] = y.wrapping_mul(9).wrapping_add(t.wrapping_mul(3)) as u8;
            p[2] = if x.wrapping_add(t) % 16 < 4 { 255 } else { t.wrapping_mul(17) as u8 };
        }
    }
    f
}

fn context(monitor: u32) -> SegmentContext {
    SegmentContext {
        tenant: TENANT.into(),
        device: DEVICE.into(),
        user: "alice".into(),
        session: "s1".into(),
        monitor: MonitorInfo {
            id: monitor,
            name: format!("m{monitor}"),
            x: 0,
            y: 0,
            width: W,
            height: H,
            primary: monitor == 0,
        },
    }
}

#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let key: TenantPublicKey = std::env::var(KEY_ENV).unwrap().parse().unwrap();
    let round: i64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let (mut ring, _) = Ring::open(config(Path::new(&dir))).unwrap();
    // Each round continues the timeline where an hour-long gap separates it from the last.
    let mut t = 1_700_000_000_000_000 + round * 3_600_000_000;
    let mut n = 0u64;
    loop {
        let monitor = (n % 2) as u32;
        let mut w = SegmentWriter::new(context(monitor)).unwrap();
        for _ in 0..3 {
            w.push_frame(&frame_at(t)).unwrap();
            t += 1_000_000;
        }
        let done = w.finish().unwrap();
        let b = SealBinding { tenant: TENANT, device: DEVICE, segment_id: done.header.id };
        let sealed = seal(&key, &b, &done.plaintext).unwrap();
        ring.insert(&done.header, &sealed).unwrap();
        if n.is_multiple_of(4) {
            ring.pin(done.header.id, &format!("clip-{}", n % 3)).unwrap();
        }
        if n.is_multiple_of(7) {
            ring.unpin_all(&format!("clip-{}", (n + 1) % 3)).unwrap();
        }
        n += 1;
    }
}

/// xorshift64*, seeded from the clock: kill moments differ from run to run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn kill_9_at_random_moments() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = TenantSecretKey::generate().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = Rng(seed);
    let (mut repaired, mut checked, mut max_seen) = (0usize, 0usize, 0usize);
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, tmp.path())
            .env(KEY_ENV, key.public_key().to_string())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 400));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "writer died on its own in round {round} (seed {seed}): {status}"
        );

        let (ring, report) = Ring::open(config(tmp.path()))
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopen failed: {e}"));
        if !report.is_clean() {
            repaired += 1;
        }
        max_seen = max_seen.max(report.entries);
        for entry in ring.entries() {
            let sealed = ring.read(entry.id).unwrap();
            let b = SealBinding { tenant: TENANT, device: DEVICE, segment_id: entry.id };
            let plaintext = open(&key, &b, &sealed)
                .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
            let seg = Segment::parse(&plaintext).unwrap();
            assert_eq!(seg.header().id, entry.id);
            assert_eq!(seg.header().frame_count, 3);
            for frame in seg.decode_frames() {
                let frame = frame.unwrap();
                assert!(frame.same_pixels(&frame_at(frame.captured_at.utc_micros)));
            }
            checked += 1;
        }
    }
    eprintln!(
        "{ROUNDS} kills (seed {seed}): {checked} segment checks passed, {repaired} reopens had \
         something to repair, up to {max_seen} segments in the ring"
    );
    assert!(checked > 0, "the writer never got a segment in; the test proved nothing");
}
