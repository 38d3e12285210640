//! kill -9 of a process writing the spool, at random moments, many times. The writer opens
//! clips, extends and closes them, marks segments and clips sent, and opens and extends the
//! daemon's clip records, printing each step once it returned (committed). After each kill the
//! spool reopens and must hold everything printed: no acknowledged clip, segment or record
//! lost, none doubled, every spooled file whole and named by a row, no stray files.
//!
//! The writer is this test binary itself, re-executed with [`CHILD_ENV`] set, running only
//! [`crash_child_writer`]; run normally, that function returns at once.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rearview_config::WhenFull;
use rearview_uploader::spool::{
    CacheRule, ClipChange, ClipRecord, ClipWindow, RecordState, SegmentBytes, Spool,
};
use support::manifest_naming;

#[path = "spool/support.rs"]
mod support;

const CHILD_ENV: &str = "REARVIEW_SPOOL_CRASH_DIR";
const ROUND_ENV: &str = "REARVIEW_SPOOL_CRASH_ROUND";
const ROUNDS: u64 = 60;
/// Large enough that nothing is dropped: every acknowledged clip must survive.
const CACHE: u64 = 1 << 40;
const CACHE_RULE: CacheRule = CacheRule { max_bytes: CACHE, when_full: WhenFull::OverwriteOldest };
/// Marks the writer's acknowledgements in its output (the test harness prints there too, and
/// may start the first line).
const ACK: &str = "ACK ";

/// A segment's name: unique per round, step and index.
fn sha(round: u64, step: u64, k: u64) -> String {
    format!("{round:024x}{step:032x}{k:08x}")
}

/// A segment's bytes, a function of its name, so the checker knows what each file must hold.
fn bytes_of(sha: &str) -> Vec<u8> {
    sha.as_bytes().repeat(4)
}

fn enqueue(spool: &Spool, clip: &str, shas: &[String], open: bool) {
    let named: Vec<(String, SegmentBytes)> =
        shas.iter().map(|s| (s.clone(), SegmentBytes::Bytes(bytes_of(s)))).collect();
    let sizes = shas.iter().map(|s| (s.clone(), bytes_of(s).len() as u64));
    spool.enqueue(&manifest_naming(clip, sizes, open), &named, CACHE_RULE).unwrap();
}

fn say(out: &mut std::io::Stdout, line: &str) {
    writeln!(out, "{ACK}{line}").unwrap();
    out.flush().unwrap();
}

/// One step of the writer; `last` is the open clip it works on.
fn step(spool: &Spool, round: u64, n: u64, last: &mut Option<(String, Vec<String>)>) -> String {
    match (n % 7, last.as_mut()) {
        (0, _) | (_, None) => {
            let clip = format!("c-{round}-{n}");
            let shas = vec![sha(round, n, 0), sha(round, n, 1)];
            enqueue(spool, &clip, &shas, true);
            let line = format!("open {clip} {}", shas.join(" "));
            *last = Some((clip, shas));
            line
        }
        (1 | 2, Some((clip, shas))) => {
            let new = sha(round, n, 0);
            enqueue(spool, clip, std::slice::from_ref(&new), true);
            shas.push(new.clone());
            format!("extend {clip} {new}")
        }
        (3, Some((_, shas))) => {
            spool.mark_segment_sent(&shas[0]).unwrap();
            format!("segsent {}", shas[0])
        }
        (4, Some((clip, _))) => {
            enqueue(spool, clip, &[], false);
            format!("close {clip}")
        }
        (5, Some((clip, _))) => {
            spool.mark_sent(clip).unwrap();
            let line = format!("sent {clip}");
            *last = None;
            line
        }
        (_, Some(_)) => record_step(spool, round, n),
    }
}

/// Opens a clip record with one segment, takes a second, hands the first over; one line per
/// committed change.
fn record_step(spool: &Spool, round: u64, n: u64) -> String {
    let id = format!("r-{round}-{n}");
    let window = ClipWindow { from_utc_micros: 0, to_utc_micros: 1 };
    let mut r =
        ClipRecord::collecting(id.clone(), Some(format!("t-{id}")), "a".into(), "r".into(), window);
    let (first, second) = (sha(round, n, 0), sha(round, n, 1));
    r.segments = vec![first.clone()];
    spool.insert_clip_record(&r).unwrap();
    let mut out = std::io::stdout();
    say(&mut out, &format!("record {id} {first}"));
    spool.add_clip_segments(&id, std::slice::from_ref(&second)).unwrap();
    say(&mut out, &format!("take {id} {second}"));
    let handed = vec![first.clone()];
    let change = ClipChange {
        spooled: &handed,
        in_spool: true,
        state: RecordState::Collecting,
        missing: None,
        error: None,
    };
    spool.update_clip_record(&id, &change).unwrap();
    format!("handed {id} {first}")
}

#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let spool = Spool::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout();
    let mut last = None;
    for n in 0.. {
        let line = step(&spool, round, n, &mut last);
        say(&mut out, &line);
    }
}

/// What the writers acknowledged, over all rounds.
#[derive(Default)]
struct Acked {
    /// Clip id → its segments, and whether it was closed / sent.
    clips: BTreeMap<String, AckedClip>,
    sent_segments: HashSet<String>,
    /// Record id → its segments, and those handed over.
    records: BTreeMap<String, (Vec<String>, BTreeSet<String>)>,
    /// The clip each killed writer was working on: the step the kill cut short may have
    /// committed without being acknowledged (marking its first segment or itself sent).
    unsure: HashSet<String>,
    /// The clip the current writer works on.
    current: Option<String>,
}

#[derive(Default)]
struct AckedClip {
    segments: Vec<String>,
    closed: bool,
    sent: bool,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let words: Vec<&str> = line.split(' ').collect();
        let owned = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match words.as_slice() {
            ["open", clip, segs @ ..] => {
                let c = AckedClip { segments: owned(segs), ..AckedClip::default() };
                assert!(self.clips.insert(clip.to_string(), c).is_none(), "{line}");
                self.current = Some(clip.to_string());
            }
            ["extend", clip, seg] => self.clip(clip).segments.push(seg.to_string()),
            ["close", clip] => self.clip(clip).closed = true,
            ["sent", clip] => {
                self.clip(clip).sent = true;
                self.current = None;
            }
            ["segsent", seg] => {
                self.sent_segments.insert(seg.to_string());
            }
            ["record", id, seg] => {
                self.records.insert(id.to_string(), (vec![seg.to_string()], BTreeSet::new()));
            }
            ["take", id, seg] => self.records.get_mut(*id).unwrap().0.push(seg.to_string()),
            ["handed", id, seg] => {
                self.records.get_mut(*id).unwrap().1.insert(seg.to_string());
            }
            _ => panic!("writer said {line:?}"),
        }
    }

    /// The writer was killed.
    fn killed(&mut self) {
        self.unsure.extend(self.current.take());
    }

    fn clip(&mut self, id: &str) -> &mut AckedClip {
        self.clips.get_mut(id).unwrap()
    }
}

/// Everything acknowledged is there, once; files are whole and each has its row.
fn check(dir: &Path, acked: &Acked) {
    let spool = Spool::open(dir).unwrap();
    let pending = spool.pending().unwrap();
    let ids: HashSet<&str> = pending.iter().map(|p| p.manifest.clip_id.as_str()).collect();
    assert_eq!(ids.len(), pending.len(), "a clip pending twice");
    for (id, clip) in &acked.clips {
        let state = spool.clip_state(id).unwrap();
        let unsure = acked.unsure.contains(id);
        if clip.sent || (unsure && state.map(|s| s.as_str()) == Some("sent")) {
            assert_eq!(state.map(|s| s.as_str()), Some("sent"), "{id}");
            continue;
        }
        assert_eq!(state.map(|s| s.as_str()), Some("pending"), "{id} lost");
        let p = pending.iter().find(|p| &p.manifest.clip_id == id).unwrap();
        let named: Vec<&str> = p.manifest.segments.iter().map(|s| s.sha256.as_str()).collect();
        let distinct: HashSet<&str> = named.iter().copied().collect();
        assert_eq!(distinct.len(), named.len(), "{id} names a segment twice");
        // The acknowledged segments, in order; an unacknowledged last extension may follow.
        assert_eq!(&named[..clip.segments.len()], clip.segments.as_slice(), "{id}");
        assert!(named.len() <= clip.segments.len() + 1, "{id}");
        if clip.closed {
            assert!(!p.manifest.open, "{id} closed but open again");
        }
        for (i, sha) in clip.segments.iter().enumerate() {
            let gone = !dir.join("segments").join(sha).exists();
            if acked.sent_segments.contains(sha) || (unsure && i == 0 && gone) {
                assert!(!dir.join("segments").join(sha).exists(), "{sha} sent, file kept");
            } else {
                assert_eq!(spool.read_segment(sha).unwrap(), bytes_of(sha), "{sha}");
            }
        }
    }
    let mut file_bytes = 0;
    for entry in std::fs::read_dir(dir.join("segments")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(spool.has_segment(&name).unwrap(), "stray file {name}");
        file_bytes += bytes_of(&name).len() as u64;
    }
    assert_eq!(spool.stats().unwrap().spooled_bytes, file_bytes, "rows = files");
    let records = spool.clip_records().unwrap();
    let ids: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), records.len());
    for (id, (segments, handed)) in &acked.records {
        let r = records.iter().find(|r| &r.id == id).unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(&r.segments[..segments.len()], segments.as_slice(), "{id}");
        assert!(handed.iter().all(|s| r.spooled.contains(s)), "{id}");
    }
}

#[test]
fn spool_survives_kill_9_at_random_moments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let exe = std::env::current_exe().unwrap();
    let mut acked = Acked::default();
    let mut lines = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rand::random::<u64>() % 180));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the writer died on its own: {status:?}");
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        // A line cut short by the kill was never acknowledged.
        let complete = out.rsplit_once('\n').map_or("", |(done, _)| done);
        for line in complete.lines().filter_map(|l| l.split_once(ACK).map(|(_, ack)| ack)) {
            acked.take(line);
            lines += 1;
        }
        acked.killed();
        check(&dir, &acked);
    }
    eprintln!("{ROUNDS} kills, {lines} acknowledged steps, {} clips", acked.clips.len());
    assert!(lines > ROUNDS, "the writer barely ran: {lines} steps");
}
