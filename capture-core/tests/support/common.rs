//! Helpers shared by the capture and input tests (included with `#[path]`, so it is not a test
//! target of its own).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rearview_testkit::xvfb::Xvfb;

/// Long enough for a loaded 2-core machine; tests poll, so the happy path is fast.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Poll `f` until it gives `Some`, or panic with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    rearview_testkit::wait_until(what, DEADLINE, f)
}

/// Run a client to completion on `x`; panic with its output if it fails.
pub fn run(x: &Xvfb, program: &str, args: &[&str]) -> String {
    let out = x.command(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (scripts/setup-debian.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A long-running client, killed and reaped on drop.
pub struct Client(pub Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(mut cmd: Command) -> Client {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start X client (scripts/setup-debian.sh installs it)");
    Client(child)
}

/// An xterm with window title and class `name`, background `bg`, at `geometry`; returns once
/// its window is mapped, with the client and its window id.
pub fn xterm(x: &Xvfb, name: &str, bg: &str, geometry: &str) -> (Client, String) {
    let mut cmd = x.command("xterm");
    cmd.args([
        "-title",
        name,
        "-class",
        name,
        "-bg",
        bg,
        "-geometry",
        geometry,
        "-e",
        "sleep",
        "600",
    ]);
    let client = spawn(cmd);
    let id = wait_for(&format!("xterm {name} to map"), || {
        let out =
            x.command("xdotool").args(["search", "--onlyvisible", "--name", name]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty())
    });
    (client, id)
}
