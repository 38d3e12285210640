//! Capture workers: one child process per captured session, running *as the session's user*.
//!
//! The daemon (root) never touches a user's display itself. For each session it may record it
//! starts `rearviewd __worker` with the user's uid and primary gid (supplementary groups
//! dropped — std's `Command::uid` calls `setgroups(0)` before `setgid`/`setuid`), a cleared
//! environment holding only `DISPLAY`, `XAUTHORITY`, `DBUS_SESSION_BUS_ADDRESS`, `HOME` and the
//! log settings, and two pipes. The worker captures the display (MIT-SHM), records input and
//! the active window, cuts segments of the policy's length with the recorder core's
//! `SegmentWriter` and hands each *plaintext* segment back. Sealing happens in the daemon, which
//! holds the tenant public key and the ring; plaintext only ever crosses the pipe, in memory.
//!
//! The daemon treats what a worker sends as untrusted (the user owns that process and could
//! ptrace it): every segment is parsed in full and must name the tenant, device, user and
//! session the daemon assigned, or it is dropped and reported.
//!
//! When the daemon is not root, the worker runs as the daemon's own user (still a separate
//! process, so capture load and crashes stay out of the daemon and CPU is measured per pid).
//!
//! # Protocol
//!
//! ```text
//! daemon → worker: stdin, one JSON object per line
//!   {"op":"start", ...WorkerSpec}       first line, exactly once
//!   {"op":"rate","fps_milli":N}         frames per 1000 s; 0 pauses capture (open segments are
//!                                       finished and sent, so a pause never loses a frame)
//!   {"op":"stop"}                       finish and send the open segments, then exit 0
//!   end of file                         same as stop (the daemon died or is shutting down)
//!
//! worker → daemon: stdout, frames
//!   len   u32 LE   length of kind + body: segment 1..=1+MAX_SEGMENT_PLAINTEXT,
//!                                         status  1..=1+MAX_STATUS_JSON
//!   kind  u8       1 segment, 2 status
//!   body  ...      segment: the plaintext segment (rearview_capture::segment format)
//!                  status:  JSON WorkerStatus
//! ```
//!
//! The worker writes nothing else to stdout; its logs go to stderr, which it shares with the
//! daemon (and so reach the same journal).
//!
//! # Bounds
//!
//! A segment may be at most [`MAX_SEGMENT_PLAINTEXT`] bytes: sealed, it must still fit the
//! console's limit for one segment ([`rearview_protocol::MAX_SEGMENT_BYTES`]), or it could
//! never be sent. The worker cuts its segments early to stay below it. A length beyond the
//! bound for its kind, an unknown kind or an unparsable status breaks the protocol: the
//! daemon's reader stops, kills the worker and reports why ([`WorkerEvent::Ended`]).
//!
//! All workers' messages reach the daemon through one [`inbox`], bounded in messages
//! ([`QUEUE_DEPTH`]) and in bytes ([`MAX_QUEUED_BYTES`]): a reader takes a message's bytes from
//! the budget *before* it allocates the body, and they return when the daemon drops the
//! [`FromWorker`]. A worker that writes faster than the daemon takes is held back by its own
//! pipe (its writes block), and the daemon's memory for queued messages stays within the
//! budget whatever the workers send.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

pub mod run;

/// Largest plaintext segment a worker may send: what seals into the largest segment the
/// console accepts.
pub const MAX_SEGMENT_PLAINTEXT: usize =
    rearview_protocol::MAX_SEGMENT_BYTES - rearview_capture::seal::OVERHEAD;
/// Largest status message body (JSON of a few fields and one error line).
pub const MAX_STATUS_JSON: usize = 64 * 1024;
/// Largest message a worker may send (kind byte and the largest segment).
pub const MAX_MESSAGE: usize = 1 + MAX_SEGMENT_PLAINTEXT;
/// Most bytes of messages read from workers and not yet handled by the daemon, all workers
/// together: two of the largest, so one can be handled while the next is read.
pub const MAX_QUEUED_BYTES: usize = 2 * MAX_MESSAGE;
/// Most messages waiting in the [`inbox`].
pub const QUEUE_DEPTH: usize = 64;

const KIND_SEGMENT: u8 = 1;
const KIND_STATUS: u8 = 2;

/// What the worker needs to know to record one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub display: String,
    /// Written into every segment header (and checked by the daemon on the way back).
    pub tenant: String,
    pub device: String,
    pub user: String,
    pub session: String,
    /// Frames per 1000 seconds (1000 = 1 fps), so throttled rates stay integers.
    pub fps_milli: u32,
    pub segment_secs: u32,
    pub max_monitors: u8,
    /// Desktop notice to show once capture runs, if the policy asks for one.
    pub notice: Option<String>,
}

/// Daemon → worker control lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    Start(WorkerSpec),
    Rate { fps_milli: u32 },
    Stop,
}

/// What a worker says about itself (sent on changes and with every closed segment).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// `starting`, `capturing`, `paused`, `display_unreachable`, `capture_failing`.
    pub state: String,
    pub monitors: u32,
    pub fps_milli: u32,
    pub frames: u64,
    pub segments: u64,
    /// Input capture backend running (`x11-record`), or why none is.
    pub input: String,
    /// Last error, for health (no content: never pixels or keys).
    pub error: Option<String>,
    /// Median milliseconds per captured frame (capture + encode) over the last segment.
    pub ms_per_frame: Option<f64>,
}

/// One message from a worker.
pub enum WorkerMessage {
    /// A closed segment's plaintext, wiped from memory when dropped.
    Segment(Zeroizing<Vec<u8>>),
    Status(WorkerStatus),
}

impl std::fmt::Debug for WorkerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerMessage::Segment(b) => write!(f, "Segment({} bytes)", b.len()),
            WorkerMessage::Status(s) => write!(f, "Status({s:?})"),
        }
    }
}

/// Writes one frame (worker side, blocking).
pub fn write_message(w: &mut impl Write, message: &WorkerMessage) -> io::Result<()> {
    let (kind, body): (u8, std::borrow::Cow<'_, [u8]>) = match message {
        WorkerMessage::Segment(bytes) => (KIND_SEGMENT, std::borrow::Cow::Borrowed(&bytes[..])),
        WorkerMessage::Status(s) => {
            (KIND_STATUS, std::borrow::Cow::Owned(serde_json::to_vec(s).map_err(io::Error::other)?))
        }
    };
    // What the daemon would refuse (and kill the worker for) is not sent.
    let len = check_len(kind, body.len() + 1)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    w.write_all(&(len as u32).to_le_bytes())?;
    w.write_all(&[kind])?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame (blocking); `Ok(None)` at a clean end of stream.
pub fn read_message(r: &mut impl Read) -> io::Result<Option<WorkerMessage>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    let len = check_len(kind[0], u32::from_le_bytes(len) as usize)?;
    let mut body = Zeroizing::new(vec![0u8; len - 1]);
    r.read_exact(&mut body)?;
    decode(kind[0], body).map(Some)
}

/// Reads one frame (daemon side), taking its length from `budget` before reading the body;
/// `Ok(None)` at a clean end of stream.
async fn read_message_async(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    budget: &Arc<Semaphore>,
) -> io::Result<Option<(WorkerMessage, OwnedSemaphorePermit)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let kind = r.read_u8().await?;
    let len = check_len(kind, u32::from_le_bytes(len) as usize)?;
    // `check_len` bounds `len` by MAX_MESSAGE, which is below both u32::MAX and the budget.
    let permit = budget
        .clone()
        .acquire_many_owned(len as u32)
        .await
        .map_err(|_| io::Error::other("the worker inbox is closed"))?;
    let mut body = Zeroizing::new(vec![0u8; len - 1]);
    r.read_exact(&mut body).await?;
    decode(kind, body).map(|m| Some((m, permit)))
}

/// The length of a frame of `kind` if it is within that kind's bound.
fn check_len(kind: u8, len: usize) -> io::Result<usize> {
    let (what, max) = match kind {
        KIND_SEGMENT => ("segment", 1 + MAX_SEGMENT_PLAINTEXT),
        KIND_STATUS => ("status", 1 + MAX_STATUS_JSON),
        k => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown message kind {k}"),
            ))
        }
    };
    if len == 0 || len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} message of {len} bytes, outside 1..={max}"),
        ));
    }
    Ok(len)
}

fn decode(kind: u8, body: Zeroizing<Vec<u8>>) -> io::Result<WorkerMessage> {
    match kind {
        KIND_SEGMENT => Ok(WorkerMessage::Segment(body)),
        KIND_STATUS => serde_json::from_slice(&body)
            .map(WorkerMessage::Status)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        k => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown message kind {k}"))),
    }
}

/// What a worker's reader hands the daemon.
pub enum WorkerEvent {
    /// One message.
    Message(WorkerMessage),
    /// The worker's output ended (sent once, last). `violation` says how it broke the protocol,
    /// if it did; it was then killed.
    Ended { violation: Option<String> },
}

/// One event of the worker keyed `key` (`<session>#<n>`). Holds its message's share of the
/// inbox's byte budget until dropped.
pub struct FromWorker {
    pub key: String,
    pub event: WorkerEvent,
    _budget: Option<OwnedSemaphorePermit>,
}

/// The sending side of the [`inbox`], one clone per worker.
#[derive(Clone)]
pub struct WorkerSender {
    tx: mpsc::Sender<FromWorker>,
    budget: Arc<Semaphore>,
}

/// Where every worker's messages go: at most [`QUEUE_DEPTH`] messages and [`MAX_QUEUED_BYTES`]
/// bytes wait at once (module docs, "Bounds").
pub fn inbox() -> (WorkerSender, mpsc::Receiver<FromWorker>) {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    (WorkerSender { tx, budget: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)) }, rx)
}

/// Who the worker runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Extra environment: `XAUTHORITY`, `DBUS_SESSION_BUS_ADDRESS`.
    pub env: Vec<(String, String)>,
}

/// The daemon's end of a running worker. Dropping it kills the worker.
pub struct WorkerHandle {
    /// Shared with the reader only weakly, so that it can kill a worker that breaks the
    /// protocol, while dropping the handle still kills (and the reader never outlives it).
    child: Arc<tokio::sync::Mutex<tokio::process::Child>>,
    control: Option<tokio::process::ChildStdin>,
    pid: u32,
}

impl WorkerHandle {
    /// Starts `exe __worker` as `run_as` (privileges dropped when the daemon is root and the
    /// user differs) and forwards its messages to `tx`, tagged with `key`. When the worker's
    /// output ends, [`WorkerEvent::Ended`] is sent once.
    pub async fn spawn(
        exe: &Path,
        spec: WorkerSpec,
        run_as: &RunAs,
        key: String,
        tx: WorkerSender,
    ) -> io::Result<WorkerHandle> {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("__worker")
            .env_clear()
            .env("DISPLAY", &spec.display)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A process group of its own: a Ctrl-C at the terminal running the daemon (SIGINT
            // to the whole foreground group) must not kill the worker before the daemon has
            // asked it to finish and hand over its open segments.
            .process_group(0)
            .kill_on_drop(true);
        for k in ["RUST_LOG", "REARVIEW_LOG_FORMAT"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &run_as.env {
            cmd.env(k, v);
        }
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 && run_as.uid != 0 {
            let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(run_as.uid))
                .ok()
                .flatten()
                .map(|u| u.dir);
            if let Some(home) = home {
                cmd.env("HOME", home);
            }
            cmd.uid(run_as.uid).gid(run_as.gid);
        } else if run_as.uid != euid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "cannot start a capture worker as uid {} without root (the daemon runs as uid {euid})",
                    run_as.uid
                ),
            ));
        } else if let Ok(home) = std::env::var("HOME") {
            cmd.env("HOME", home);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let mut control = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("worker stdout was not captured"))?;
        if let Some(stdin) = control.as_mut() {
            send(stdin, &Control::Start(spec)).await?;
        }
        let child = Arc::new(tokio::sync::Mutex::new(child));
        tokio::spawn(read_worker(stdout, key, tx, Arc::downgrade(&child)));
        Ok(WorkerHandle { child, control, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Changes the frame rate (0 pauses).
    pub async fn set_rate(&mut self, fps_milli: u32) -> io::Result<()> {
        match self.control.as_mut() {
            Some(c) => send(c, &Control::Rate { fps_milli }).await,
            None => Ok(()),
        }
    }

    /// Asks the worker to finish and send its open segments and exit; waits up to `deadline`
    /// for it, then kills it.
    pub async fn stop(mut self, deadline: std::time::Duration) {
        if let Some(mut c) = self.control.take() {
            let _ = send(&mut c, &Control::Stop).await;
            drop(c);
        }
        let mut child = self.child.lock().await;
        if tokio::time::timeout(deadline, child.wait()).await.is_err() {
            tracing::warn!(pid = self.pid, "capture worker did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }

    /// Stops capture at once: the open segment is discarded (used when an approval ends).
    pub async fn kill(self) {
        let _ = self.child.lock().await.kill().await;
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_lock().is_ok_and(|mut c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

/// Forwards a worker's messages until its output ends or it breaks the protocol; then kills it
/// (if its handle still lives) and says why.
async fn read_worker(
    mut stdout: tokio::process::ChildStdout,
    key: String,
    tx: WorkerSender,
    child: Weak<tokio::sync::Mutex<tokio::process::Child>>,
) {
    let violation = loop {
        match read_message_async(&mut stdout, &tx.budget).await {
            Ok(Some((message, permit))) => {
                let event = WorkerEvent::Message(message);
                let item = FromWorker { key: key.clone(), event, _budget: Some(permit) };
                if tx.tx.send(item).await.is_err() {
                    return;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    if let Some(why) = &violation {
        tracing::warn!(session = key, error = %why, "capture worker broke the protocol; killing it");
        if let Some(child) = child.upgrade() {
            let _ = child.lock().await.start_kill();
        }
    }
    let _ = tx
        .tx
        .send(FromWorker { key, event: WorkerEvent::Ended { violation }, _budget: None })
        .await;
}

async fn send(w: &mut tokio::process::ChildStdin, control: &Control) -> io::Result<()> {
    let mut line = serde_json::to_vec(control).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let mut buf = Vec::new();
        write_message(&mut buf, &WorkerMessage::Segment(Zeroizing::new(b"RVSG...".to_vec())))
            .unwrap();
        let status = WorkerStatus { state: "capturing".into(), monitors: 2, ..Default::default() };
        write_message(&mut buf, &WorkerMessage::Status(status.clone())).unwrap();
        let mut r = &buf[..];
        match read_message(&mut r).unwrap() {
            Some(WorkerMessage::Segment(b)) => assert_eq!(&b[..], b"RVSG..."),
            other => panic!("{other:?}"),
        }
        match read_message(&mut r).unwrap() {
            Some(WorkerMessage::Status(s)) => assert_eq!(s, status),
            other => panic!("{other:?}"),
        }
        assert!(read_message(&mut r).unwrap().is_none());

        let huge = ((MAX_MESSAGE + 1) as u32).to_le_bytes();
        assert!(read_message(&mut &[&huge[..], &[KIND_SEGMENT]].concat()[..]).is_err());
        let big_status = ((MAX_STATUS_JSON + 2) as u32).to_le_bytes();
        let e = read_message(&mut &[&big_status[..], &[KIND_STATUS]].concat()[..]).unwrap_err();
        assert!(e.to_string().contains("status message"), "{e}");
        let unknown = [1u8, 0, 0, 0, 9];
        assert!(read_message(&mut &unknown[..]).is_err());
        let truncated = [10u8, 0, 0, 0, 1, 2];
        assert!(read_message(&mut &truncated[..]).is_err());
    }

    #[test]
    fn control_lines_are_tagged() {
        let line = serde_json::to_string(&Control::Rate { fps_milli: 500 }).unwrap();
        assert_eq!(line, r#"{"op":"rate","fps_milli":500}"#);
        assert_eq!(serde_json::from_str::<Control>(r#"{"op":"stop"}"#).unwrap(), Control::Stop);
    }
}
