//! The parent side of a reaper test: one `#[ignore]`d test of this very test binary run as a
//! child process, which starts something, prints what it started after a marker and then ends
//! without dropping it; the parent reads that line and checks the reaper cleans up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs the test `name` of this test binary in a child process with the environment variable
/// `env.0` set to `env.1` (so the child test knows it is the child), and waits up to `limit`
/// for the line it prints starting with `marker`; the child (running, or exited) and the rest
/// of that line, trimmed. Panics, having killed and reaped the child, when it prints none.
pub fn start(name: &str, env: (&str, &str), marker: &str, limit: Duration) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child test");
    let stdout = child.stdout.take().expect("piped stdout");
    // Read on a thread, so a child that never prints fails the test instead of hanging it.
    let (tx, rx) = mpsc::channel();
    let marker_owned = marker.to_owned();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| Some(l.strip_prefix(&marker_owned)?.trim().to_owned()));
        let _ = tx.send(line);
    });
    match rx.recv_timeout(limit) {
        Ok(Some(line)) => (child, line),
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child test {name} printed no `{marker}` line ({outcome:?})");
        }
    }
}
