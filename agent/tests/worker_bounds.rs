//! The capture worker runs as the recorded user, who owns the process and may replace what it
//! sends: the daemon's end of the pipe ([`WorkerHandle`]) must bound each message by what a
//! plaintext segment may be, and what it queues by bytes, whatever the worker writes.
//!
//! The "worker" here is a real process started through [`WorkerHandle::spawn`] — a shell
//! script speaking the worker's framing (length, kind, body) with lengths of its choosing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rearview_agent::worker::{
    inbox, FromWorker, RunAs, WorkerEvent, WorkerHandle, WorkerMessage, WorkerSender, WorkerSpec,
    MAX_QUEUED_BYTES,
};

/// Largest plaintext segment a worker may send: once sealed it must still fit what the
/// console accepts.
const MAX_PLAINTEXT: usize =
    rearview_protocol::MAX_SEGMENT_BYTES - rearview_capture::seal::OVERHEAD;

/// The segment in `item`, if it carries one.
fn segment_len(item: &FromWorker) -> Option<usize> {
    match &item.event {
        WorkerEvent::Message(WorkerMessage::Segment(b)) => Some(b.len()),
        _ => None,
    }
}

fn spec() -> WorkerSpec {
    WorkerSpec {
        display: ":0".into(),
        tenant: "t".into(),
        device: "d".into(),
        user: "u".into(),
        session: "s".into(),
        fps_milli: 1000,
        segment_secs: 1,
        max_monitors: 1,
        notice: None,
    }
}

fn me() -> RunAs {
    RunAs {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        env: vec![],
    }
}

/// `sh` lines writing one segment message whose body (kind byte included) is `len` bytes.
fn message(len: usize) -> String {
    let header: String = (len as u32).to_le_bytes().iter().map(|b| format!("\\{b:03o}")).collect();
    format!("printf '{header}\\001'\nhead -c {} /dev/zero\n", len - 1)
}

/// Writes `body` as an executable script in `dir`.
fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-worker");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Starts the fake worker `exe`. A script just written may be busy for a moment: the other
/// test's fork can hold its write descriptor until that child execs (ETXTBSY); try again then.
async fn spawn(exe: &Path, tx: WorkerSender) -> WorkerHandle {
    for _ in 0..100 {
        match WorkerHandle::spawn(exe, spec(), &me(), "s#1".into(), tx.clone()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            started => return started.unwrap(),
        }
    }
    panic!("{} stayed busy (ETXTBSY)", exe.display());
}

/// A segment exactly at the bound is taken; one byte more and the worker is cut off (killed,
/// with the reason reported), and nothing of the oversized message reaches the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_the_worker_killed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(
        dir.path(),
        &format!("{}{}exec sleep 600\n", message(1 + MAX_PLAINTEXT), message(2 + MAX_PLAINTEXT)),
    );
    let (tx, mut rx) = inbox();
    let mut worker = spawn(&exe, tx).await;

    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    assert_eq!(segment_len(&first), Some(MAX_PLAINTEXT), "the largest allowed segment");
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.unwrap().unwrap();
    match &second.event {
        WorkerEvent::Ended { violation: Some(why) } => {
            assert!(why.contains(&format!("{}", 2 + MAX_PLAINTEXT)), "{why}")
        }
        WorkerEvent::Ended { violation: None } => panic!("ended without naming the violation"),
        WorkerEvent::Message(m) => panic!("an oversized message was delivered: {m:?}"),
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.exited() {
        assert!(Instant::now() < deadline, "the worker that broke the bound still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker that writes many large segments faster than they are taken is held back by its
/// pipe: what waits in the daemon stays within the byte budget, and once the daemon takes
/// them every one arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_worker_is_held_back_and_its_queue_bounded_by_bytes() {
    let size = 8 << 20;
    let count = 3 * MAX_QUEUED_BYTES / size;
    let dir = tempfile::tempdir().unwrap();
    let progress = dir.path().join("progress");
    let done = dir.path().join("done");
    let exe = script(
        dir.path(),
        &format!(
            "i=0\nwhile [ $i -lt {count} ]; do\n{}i=$((i+1))\necho $i > {p}\ndone\ntouch {d}\nexec sleep 600\n",
            message(size),
            p = progress.display(),
            d = done.display(),
        ),
    );
    let (tx, mut rx) = inbox();
    let _worker = spawn(&exe, tx).await;

    // Nobody takes messages: wait until the worker is done or stops getting anywhere.
    let read = || std::fs::read_to_string(&progress).unwrap_or_default();
    let (mut last, mut since) = (read(), Instant::now());
    while !done.exists() && since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if read() != last {
            (last, since) = (read(), Instant::now());
        }
    }
    let mut queued = 0;
    let mut received = 0;
    let mut held = Vec::new();
    while let Ok(item) = rx.try_recv() {
        if let Some(len) = segment_len(&item) {
            assert_eq!(len, size - 1);
            queued += len;
            received += 1;
        }
        held.push(item);
    }
    assert!(
        queued <= MAX_QUEUED_BYTES,
        "{queued} bytes of one worker waited in the daemon (budget {MAX_QUEUED_BYTES})"
    );
    assert!(!done.exists(), "the worker was never held back");
    drop(held);

    // Taken as they come, the rest follows: throttled, not dropped.
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, rx.recv()).await;
        let Ok(Some(item)) = item else { panic!("after {received} of {count} segments: nothing") };
        match (&item.event, segment_len(&item)) {
            (_, Some(len)) => {
                assert_eq!(len, size - 1);
                received += 1;
            }
            (WorkerEvent::Message(WorkerMessage::Status(_)), None) => {}
            (WorkerEvent::Ended { violation }, None) => {
                panic!("after {received} of {count} segments the worker ended: {violation:?}")
            }
            (WorkerEvent::Message(WorkerMessage::Segment(_)), None) => unreachable!(),
        }
    }
}
