//! A private `Xvfb` display for tests, benches, the demo and end-to-end tests.
//!
//! Each [`Xvfb`] is its own X server on a display number the server picks itself (`-displayfd`),
//! so any number of them can run side by side — `cargo test` runs tests in parallel threads and
//! several test binaries at once, and none of them may depend on a display started by hand or on
//! the process-global `DISPLAY`. The server listens only on its Unix socket (`-nolisten tcp`),
//! does not reset when its last client leaves (`-noreset`, so a root colour set by `xsetroot` or a
//! monitor set by `xrandr --setmonitor` stays), and is terminated and reaped on drop.
//!
//! ```no_run
//! use rearview_testkit::xvfb::Xvfb;
//! let x = Xvfb::start(1280, 720)?;
//! let status = x.command("xsetroot").args(["-solid", "#12ab34"]).status()?;
//! assert!(status.success());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// pre_exec (to pass the -displayfd pipe) and poll(2); each block says why it is sound.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to come up. Generous: on a loaded 2-core machine with many tests
/// starting servers at once, Xvfb (which compiles its keymap with `xkbcomp`) can take seconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The tail of the server's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum XvfbError {
    /// Permanent until someone installs it.
    #[error("Xvfb is not installed (no `Xvfb` on PATH); install the Debian package `xvfb` (scripts/setup-debian.sh does)")]
    NotInstalled,
    /// Retryable: usually resource exhaustion (file descriptors, processes).
    #[error("cannot start Xvfb: {0}")]
    Spawn(#[source] std::io::Error),
    /// Retryable when the machine is merely overloaded; permanent when the arguments are wrong
    /// (the server's own words are in `stderr`).
    #[error("Xvfb exited before it was ready ({status}); its stderr ends with: {stderr}")]
    Exited { status: String, stderr: String },
    /// Retryable: the machine is overloaded.
    #[error("Xvfb did not report a display within {0:?}; its stderr ends with: {1}")]
    Timeout(Duration, String),
    /// Permanent: a bug in this module or in the server.
    #[error("Xvfb reported a display number we cannot read: {0:?}")]
    BadDisplay(String),
    /// Permanent: the requested geometry or depth cannot work.
    #[error("invalid Xvfb option: {0}")]
    InvalidOption(String),
}

impl XvfbError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, XvfbError::Spawn(_) | XvfbError::Timeout(..) | XvfbError::Exited { .. })
    }
}

/// How to start a server; [`Xvfb::start`] covers the common case.
#[derive(Clone, Debug)]
pub struct XvfbOptions {
    width: u32,
    height: u32,
    depth: u8,
    extra_args: Vec<String>,
}

impl XvfbOptions {
    /// One screen of `width` x `height` at depth 24 (32 bits per pixel, BGRX in memory).
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, depth: 24, extra_args: Vec::new() }
    }

    /// Screen depth (8, 16, 24 or 32). Captures support only 24 and 32.
    pub fn depth(mut self, depth: u8) -> Self {
        self.depth = depth;
        self
    }

    /// Turn an extension off, e.g. `"MIT-SHM"` to exercise the GetImage fallback.
    pub fn disable_extension(self, name: &str) -> Self {
        self.arg("-extension").arg(name)
    }

    /// Any further server argument, passed as is.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(self) -> Result<Xvfb, XvfbError> {
        Xvfb::start_with(self)
    }
}

/// A running private X server, stopped and reaped on drop.
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    display: String,
    width: u32,
    height: u32,
}

impl Xvfb {
    /// A server with one `width` x `height` screen at depth 24.
    pub fn start(width: u32, height: u32) -> Result<Xvfb, XvfbError> {
        XvfbOptions::new(width, height).start()
    }

    /// The display name, e.g. `":42"`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Screen width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Screen height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A command for `program` with `DISPLAY` set to this server (and nothing else changed).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", &self.display);
        cmd
    }

    fn start_with(options: XvfbOptions) -> Result<Xvfb, XvfbError> {
        let XvfbOptions { width, height, depth, extra_args } = options;
        if width == 0 || height == 0 || width > 32767 || height > 32767 {
            return Err(XvfbError::InvalidOption(format!("screen size {width}x{height}")));
        }
        if ![8, 16, 24, 32].contains(&depth) {
            return Err(XvfbError::InvalidOption(format!("depth {depth}")));
        }

        // The server writes its display number into this pipe once it listens. Both ends are
        // close-on-exec (so parallel spawns elsewhere in the process do not inherit them); the
        // child clears the flag on the write end only, below.
        let (mut reader, writer) = std::io::pipe().map_err(XvfbError::Spawn)?;
        let write_fd = writer.as_raw_fd();

        let mut cmd = Command::new("Xvfb");
        cmd.arg("-displayfd")
            .arg(write_fd.to_string())
            .args(["-nolisten", "tcp", "-noreset", "-screen", "0"])
            .arg(format!("{width}x{height}x{depth}"))
            .args(&extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and calls only fcntl, which is
        // async-signal-safe; it touches no memory of the parent besides the copied fd number,
        // which is open in the child because `writer` lives until after spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(write_fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(XvfbError::NotInstalled)
            }
            Err(e) => return Err(XvfbError::Spawn(e)),
        };
        drop(writer);
        let stderr_tail = drain_stderr(&mut child);

        match read_display(&mut reader, &mut child, &stderr_tail) {
            Ok(number) => Ok(Xvfb { child, display: format!(":{number}"), width, height }),
            Err(e) => {
                stop(&mut child);
                Err(e)
            }
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Read the display number the server writes once it accepts connections. The pipe is
/// non-blocking-polled so a server that dies or hangs is noticed.
fn read_display(
    reader: &mut std::io::PipeReader,
    child: &mut Child,
    stderr_tail: &Arc<Mutex<Vec<u8>>>,
) -> Result<u32, XvfbError> {
    let tail = || {
        String::from_utf8_lossy(&stderr_tail.lock().unwrap_or_else(|e| e.into_inner()))
            .trim()
            .to_string()
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut got = Vec::new();
    loop {
        if got.contains(&b'\n') {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(XvfbError::Timeout(START_TIMEOUT, tail()));
        }
        let mut pfd = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let wait_ms = (deadline - now).as_millis().min(100) as libc::c_int;
        // SAFETY: `pfd` is one valid pollfd and we pass a count of 1; poll only writes `revents`.
        let rc = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if rc > 0 {
            let mut buf = [0u8; 32];
            match reader.read(&mut buf) {
                Ok(0) => {
                    // Every write end is closed: the server is gone. Reap it for its status.
                    let status = child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| format!("wait failed: {e}"));
                    // Give the stderr reader a moment to catch the server's last words.
                    thread::sleep(Duration::from_millis(50));
                    return Err(XvfbError::Exited { status, stderr: tail() });
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(XvfbError::Spawn(e)),
            }
        } else if let Ok(Some(status)) = child.try_wait() {
            thread::sleep(Duration::from_millis(50));
            return Err(XvfbError::Exited { status: status.to_string(), stderr: tail() });
        }
    }
    let text = String::from_utf8_lossy(&got).trim().to_string();
    text.parse::<u32>().map_err(|_| XvfbError::BadDisplay(text))
}

/// Keep reading the server's stderr so it never blocks on a full pipe; keep the tail for errors.
fn drain_stderr(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        let spawned = thread::Builder::new().name("xvfb-stderr".into()).spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                let excess = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..excess);
            }
        });
        // Without the reader thread the server could block on a full stderr pipe; we cannot do
        // better than ignore that here (the thread spawn failing means the process is dying).
        drop(spawned);
    }
    tail
}

/// SIGTERM (the server removes its socket and lock file), then SIGKILL if it lingers; always reap.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = crate::process::signal(child, libc::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
        }
    }
    crate::process::kill(child);
}
