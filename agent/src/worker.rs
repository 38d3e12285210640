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
//!   len   u32 LE   length of kind + body, 1..=MAX_MESSAGE
//!   kind  u8       1 segment, 2 status
//!   body  ...      segment: the plaintext segment (rearview_capture::segment format)
//!                  status:  JSON WorkerStatus
//! ```
//!
//! The worker writes nothing else to stdout; its logs go to stderr, which it shares with the
//! daemon (and so reach the same journal).

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

pub mod run;

/// Largest message a worker may send (a 10 s segment of a busy 4K monitor fits many times).
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

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
    let len = u32::try_from(body.len() + 1)
        .ok()
        .filter(|l| *l as usize <= MAX_MESSAGE)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    w.write_all(&len.to_le_bytes())?;
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
    let len = u32::from_le_bytes(len) as usize;
    check_len(len)?;
    let mut body = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body)?;
    decode(body).map(Some)
}

/// Reads one frame (daemon side); `Ok(None)` at a clean end of stream.
pub async fn read_message_async(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<Option<WorkerMessage>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    check_len(len)?;
    let mut body = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body).await?;
    decode(body).map(Some)
}

fn check_len(len: usize) -> io::Result<()> {
    if len == 0 || len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("worker message length {len} outside 1..={MAX_MESSAGE}"),
        ));
    }
    Ok(())
}

fn decode(body: Zeroizing<Vec<u8>>) -> io::Result<WorkerMessage> {
    match body[0] {
        KIND_SEGMENT => Ok(WorkerMessage::Segment(Zeroizing::new(body[1..].to_vec()))),
        KIND_STATUS => serde_json::from_slice(&body[1..])
            .map(WorkerMessage::Status)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        k => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown message kind {k}"))),
    }
}

/// Who the worker runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Extra environment: `XAUTHORITY`, `DBUS_SESSION_BUS_ADDRESS`.
    pub env: Vec<(String, String)>,
}

/// The daemon's end of a running worker.
pub struct WorkerHandle {
    child: tokio::process::Child,
    control: Option<tokio::process::ChildStdin>,
    pid: u32,
}

impl WorkerHandle {
    /// Starts `exe __worker` as `run_as` (privileges dropped when the daemon is root and the
    /// user differs) and forwards its messages to `tx`, tagged with `key`. When the worker's
    /// output ends, `None` is sent once.
    pub async fn spawn(
        exe: &Path,
        spec: WorkerSpec,
        run_as: &RunAs,
        key: String,
        tx: mpsc::Sender<(String, Option<WorkerMessage>)>,
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
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("worker stdout was not captured"))?;
        if let Some(stdin) = control.as_mut() {
            send(stdin, &Control::Start(spec)).await?;
        }
        tokio::spawn(async move {
            loop {
                match read_message_async(&mut stdout).await {
                    Ok(Some(m)) => {
                        if tx.send((key.clone(), Some(m))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(session = key, error = %e, "capture worker sent garbage; dropping it");
                        break;
                    }
                }
            }
            let _ = tx.send((key, None)).await;
        });
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
        if tokio::time::timeout(deadline, self.child.wait()).await.is_err() {
            tracing::warn!(pid = self.pid, "capture worker did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }

    /// Stops capture at once: the open segment is discarded (used when an approval ends).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
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
        assert!(read_message(&mut &huge[..]).is_err());
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
