//! A real SMTP server in its own process, for the tests of the console's mail: PyPI's
//! `aiosmtpd` (pinned in scripts/setup-debian.sh) on a free loopback port, with a small handler
//! of ours (`testkit/assets/smtp-server.py`) that keeps every message it accepts.
//!
//! ```text
//! start()    python3 smtp-server.py 127.0.0.1 PORT SPOOL (free port); ready once it greets
//!            with "220"; a reaper (`process.rs`) kills it when the test process dies
//! spool      DIR/spool/NNNNNN.json   the envelope: {"mail_from": ..., "rcpt_tos": [...]}
//!            DIR/spool/NNNNNN.eml    the message exactly as received (dot-unstuffed, CRLF)
//!            NNNNNN counts from 000001 in arrival order; the .eml is renamed into place last,
//!            so a message whose .eml is there is whole
//! drop       SIGKILL and reap (the reaper too), remove DIR
//! ```
//!
//! It speaks plain SMTP (no STARTTLS, no AUTH) and accepts every sender and recipient.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{self, Guarded};

/// The handler script, written to the server's directory at start.
const SCRIPT: &str = include_str!("../assets/smtp-server.py");
/// How long the server may take to greet (a Python start on a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SmtpLaunchError {
    /// Permanent until someone installs it.
    #[error("cannot run python3 (install it, and aiosmtpd: scripts/setup-debian.sh does): {0}")]
    Spawn(#[source] std::io::Error),
    /// Permanent until someone installs it.
    #[error(
        "python3 has no aiosmtpd (install it: scripts/setup-debian.sh, or pip install \
         aiosmtpd==1.4.6); its stderr ends with: {stderr}"
    )]
    NoAiosmtpd { stderr: String },
    /// Retryable: resource exhaustion.
    #[error("no free loopback port or temp dir: {0}")]
    Resources(#[source] std::io::Error),
    /// Retryable when the machine is merely overloaded.
    #[error(
        "the SMTP server on port {port} did not greet within {limit:?} (exit status: \
         {status:?}); its stderr ends with: {stderr}"
    )]
    NotAnswering {
        port: u16,
        limit: Duration,
        status: Option<std::process::ExitStatus>,
        stderr: String,
    },
}

/// A message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`), which may differ from the `From:` header.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`), which may differ from the `To:` header.
    pub rcpt_tos: Vec<String>,
    /// The RFC 5322 text exactly as received (CRLF line ends; non-UTF-8 bytes replaced).
    pub text: String,
}

/// A running SMTP server, killed and reaped on drop.
pub struct SmtpServer {
    _process: Guarded,
    port: u16,
    /// Holds the script, the spool and the server's stderr; removed after the server is gone
    /// (fields drop in order, `_process` first).
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// The server on a free loopback port, once it greets (see the module docs).
    pub fn start() -> Result<SmtpServer, SmtpLaunchError> {
        let dir = tempfile::Builder::new()
            .prefix("rearview-smtp-")
            .tempdir()
            .map_err(SmtpLaunchError::Resources)?;
        let script = dir.path().join("smtp-server.py");
        let spool = dir.path().join("spool");
        fs::write(&script, SCRIPT).map_err(SmtpLaunchError::Resources)?;
        fs::create_dir(&spool).map_err(SmtpLaunchError::Resources)?;
        let log_path = dir.path().join("stderr.log");
        let answering = |e: &SmtpLaunchError| matches!(e, SmtpLaunchError::NotAnswering { .. });
        process::on_a_free_port(SmtpLaunchError::Resources, answering, |port| {
            let log = fs::File::create(&log_path).map_err(SmtpLaunchError::Resources)?;
            let mut server = Guarded::spawn(
                Command::new("python3")
                    .arg(&script)
                    .args(["127.0.0.1", &port.to_string()])
                    .arg(&spool)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .map_err(SmtpLaunchError::Spawn)?;
            // On failure, dropping `server` kills it.
            wait_ready(&mut server, port, &log_path)?;
            Ok((server, port))
        })
        .map(|(process, port)| SmtpServer { _process: process, port, dir })
    }

    /// The port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, as raw RFC 5322 text, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.text).collect()
    }

    /// Every message received so far with its envelope, in arrival order. Panics when the spool
    /// cannot be read (it is this process's own temp dir).
    pub fn received(&self) -> Vec<Received> {
        let spool = self.spool();
        let read =
            |path: &Path| fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut names: Vec<PathBuf> = fs::read_dir(&spool)
            .unwrap_or_else(|e| panic!("list the SMTP spool {}: {e}", spool.display()))
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|eml| {
                let envelope: Value = serde_json::from_slice(&read(&eml.with_extension("json")))
                    .unwrap_or_else(|e| panic!("the envelope of {}: {e}", eml.display()));
                let text = String::from_utf8_lossy(&read(&eml)).into_owned();
                let mail_from = envelope["mail_from"].as_str().unwrap_or_default().to_owned();
                let rcpt_tos = envelope["rcpt_tos"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default();
                Received { mail_from, rcpt_tos, text }
            })
            .collect()
    }

    /// Waits until at least `n` messages have arrived and returns them all ([`SmtpServer::messages`]);
    /// panics after `timeout`, saying how many did.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < end,
                "timed out after {timeout:?} waiting for {n} messages at the SMTP server on port \
                 {}: {} arrived",
                self.port,
                messages.len()
            );
            std::thread::sleep(crate::POLL);
        }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
}

/// Polls until the server greets with 220, or it died, or [`START_TIMEOUT`].
fn wait_ready(server: &mut Guarded, port: u16, log: &Path) -> Result<(), SmtpLaunchError> {
    server.wait_ready(START_TIMEOUT, || greets(port)).map_err(|status| {
        let stderr = process::tail(log);
        if stderr.contains("No module named 'aiosmtpd'") {
            return SmtpLaunchError::NoAiosmtpd { stderr };
        }
        SmtpLaunchError::NotAnswering { port, limit: START_TIMEOUT, status, stderr }
    })
}

/// Whether a connection gets the server's "220" greeting.
fn greets(port: u16) -> bool {
    let Ok(conn) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    if conn.set_read_timeout(Some(Duration::from_secs(5))).is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).is_ok() && line.starts_with("220")
}
