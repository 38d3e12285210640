//! A real S3-speaking server in its own process, for the tests of the console's bucket backend:
//! `moto_server` (PyPI `moto[server]`) on a free loopback port. It speaks S3 over plain HTTP
//! and checks no signature, so creating a bucket here is one raw `PUT /NAME` (the test kit has no
//! HTTP client crate), while the console reaches it as it would any S3-compatible store, with
//! signed requests and the credentials of [`S3Server::env`].
//!
//! ```text
//! start()    moto_server -H 127.0.0.1 -p PORT; ready once it answers an HTTP request
//!            a reaper (`process.rs`) kills it when the test process dies, so a
//!            server in a `static` (shared()) or behind a panicking test never outlives it
//! pause()    SIGSTOP: connections are still accepted by the kernel, nothing answers (a
//!            bucket that is "unreachable" while it keeps its data); resume() is SIGCONT
//! drop       SIGKILL and reap (the reaper too)
//! ```
//!
//! Buckets are the unit of isolation: every test makes its own ([`S3Server::create_bucket`]
//! with a unique name) on [`S3Server::shared`], except tests that pause the server, which
//! [`S3Server::start`] their own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{self, Guarded};

/// How long moto may take to answer its first request (a Python start on a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one raw request to the server may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum S3LaunchError {
    #[error("cannot run moto_server (install it: pip install 'moto[server]'): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("no free loopback port: {0}")]
    Port(#[source] std::io::Error),
    #[error(
        "moto_server on port {port} did not answer within {limit:?} (exit status: {status:?})"
    )]
    NotAnswering { port: u16, limit: Duration, status: Option<std::process::ExitStatus> },
}

/// A running `moto_server`, killed and reaped on drop.
pub struct S3Server {
    process: Guarded,
    port: u16,
}

impl S3Server {
    /// `moto_server -H 127.0.0.1 -p PORT` (free port), waits until it answers; a reaper
    /// child kills it when the test process dies.
    pub fn start() -> Result<S3Server, S3LaunchError> {
        let answering = |e: &S3LaunchError| matches!(e, S3LaunchError::NotAnswering { .. });
        process::on_a_free_port(S3LaunchError::Port, answering, |port| {
            let process = Guarded::spawn(
                Command::new("moto_server")
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .map_err(S3LaunchError::Spawn)?;
            let mut server = S3Server { process, port };
            // On failure, dropping `server` kills it.
            server.wait_ready()?;
            Ok(server)
        })
    }

    /// One server per test process, started on first use (panics when it cannot start).
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| S3Server::start().expect("start the shared moto_server"))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates bucket `name` (plain HTTP PUT /name; moto needs no signature). Unique names per
    /// test. Panics, with the server's answer, when it is not 200.
    pub fn create_bucket(&self, name: &str) {
        let answer = self
            .request(&format!("PUT /{name} HTTP/1.1"))
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "create bucket {name}: {answer}");
    }

    /// SIGSTOP the server: "unreachable" for failure tests without losing its data.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT the server after [`S3Server::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// The environment a console process needs to reach it: AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID=rearview-test, AWS_SECRET_ACCESS_KEY=rearview-test,
    /// AWS_REGION=us-east-1, AWS_ALLOW_HTTP=true.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "rearview-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "rearview-test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn signal(&self, signal: libc::c_int) {
        if let Err(e) = self.process.signal(signal) {
            panic!("signal {signal} to moto_server: {e}");
        }
    }

    /// Polls until an HTTP request gets an answer, or the server died, or [`START_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<(), S3LaunchError> {
        let port = self.port;
        let answers = || request(port, "GET / HTTP/1.1").is_ok_and(|a| a.starts_with("HTTP/1."));
        self.process
            .wait_ready(START_TIMEOUT, answers)
            .map_err(|status| S3LaunchError::NotAnswering { port, limit: START_TIMEOUT, status })
    }

    /// [`request`] to this server.
    fn request(&self, line: &str) -> std::io::Result<String> {
        request(self.port, line)
    }
}

/// One request line with an empty body to the server on `port`; the whole answer as text.
fn request(port: u16, line: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let host = format!("127.0.0.1:{port}");
    write!(conn, "{line}\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server answers, a bucket made here is there (listing it answers 200, one never made
    /// 404), and pause/resume keep what it holds.
    #[test]
    fn a_bucket_made_here_is_served_and_survives_a_pause() {
        let s3 = S3Server::start().unwrap();
        s3.create_bucket("kit-bucket-1");
        let listed = s3.request("GET /kit-bucket-1 HTTP/1.1").unwrap();
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
        let missing = s3.request("GET /kit-bucket-none HTTP/1.1").unwrap();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        s3.pause();
        s3.resume();
        let listed = s3.request("GET /kit-bucket-1 HTTP/1.1").unwrap();
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    }

    /// A stopped server accepts connections but answers nothing within a read timeout.
    #[test]
    fn a_paused_server_answers_nothing() {
        let s3 = S3Server::start().unwrap();
        s3.pause();
        let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, s3.port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 16];
        let read = conn.read(&mut buf);
        assert!(read.is_err(), "a stopped server answered: {read:?}");
        s3.resume();
    }
}
