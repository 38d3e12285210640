//! Harness for the end-to-end acceptance tests: the real console, the real agent daemon and
//! CLI (the shipping `main`s, built by this package as `e2e-*`), real Xvfb desktops driven by
//! xdotool, and real Unix users.
//!
//! Everything lives in one temp directory per test; every process started here is stopped
//! and reaped on drop, so a failing test leaves no server behind.
//!
//! The agent records other users' displays only as root (its capture worker runs as the
//! session's user), so these tests need root: `scripts/test.sh`, which README.md gives as the
//! test command, runs as root anyway to install its packages; CI runs as root.
//!
//! (A module of the test targets rather than a library: only they see `CARGO_BIN_EXE_*`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rearview_testkit::console::{self, InitTokens};
use rearview_testkit::xvfb::Xvfb;
use serde_json::Value;

/// Generous for a loaded 2-core machine; everything here polls, so the happy path is fast.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub use rearview_testkit::wait_until;

/// Panics with a clear message unless the test runs as root.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root: {why} (run scripts/test.sh as root, or in a container)"
    );
}

/// Makes sure a local user `name` exists (no home, no login shell) and returns its uid.
pub fn ensure_user(name: &str) -> u32 {
    if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
        return u.uid.as_raw();
    }
    let out = Command::new("useradd")
        .args(["--no-create-home", "--shell", "/usr/sbin/nologin", name])
        .output()
        .expect("cannot run useradd (Debian package passwd)");
    // Another test process may have created it in the meantime.
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => u.uid.as_raw(),
        _ => panic!("useradd {name} failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process stopped (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command, log: &Path) -> Proc {
        let log = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child: Some(child), what: what.to_string() }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait (up to 20 s, then SIGKILL). Returns whether it exited on its own.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM within 20 s: killed", self.what);
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL, as a crash or the OOM killer would, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reference console, run as its binary.
pub struct Console {
    pub data: PathBuf,
    pub url: String,
    pub admin_token: String,
    /// An investigator's token, for `clip export`; made on first use.
    investigator: std::sync::OnceLock<String>,
    /// The first approver's (`approver`, made by init: a second person).
    pub approver_token: String,
    log: PathBuf,
    proc: Proc,
}

impl Console {
    const BIN: &'static str = env!("CARGO_BIN_EXE_e2e-rearview-console");

    /// `init` a tenant in `dir/console` and `serve` it on a free loopback port.
    pub fn start(dir: &Path, tenant: &str) -> Console {
        let data = dir.join("console");
        let args = ["--tenant", tenant, "--admin", "admin", "--approver", "approver"];
        let tokens = console::init(Self::BIN.as_ref(), &data, &args).unwrap();
        let InitTokens { admin_token, approver_token, .. } = tokens;
        let log = dir.join("console.log");
        let (proc, url) = Self::serve(&data, "127.0.0.1:0", &log);
        Console {
            data,
            url,
            admin_token,
            approver_token,
            investigator: Default::default(),
            log,
            proc,
        }
    }

    fn serve(data: &Path, listen: &str, log: &Path) -> (Proc, String) {
        console::forget_url(data);
        let mut serve = console::serve_command(Self::BIN.as_ref(), data, listen);
        let mut proc = Proc::spawn("rearview-console serve", &mut serve, log);
        let child = proc.child.as_mut().expect("just spawned");
        let url = console::served_url(data, child).unwrap();
        (proc, url)
    }

    /// SIGTERM: a graceful stop, as `systemctl stop` does.
    pub fn stop(&mut self) {
        assert!(self.proc.stop(), "the console did not stop on SIGTERM");
    }

    /// Serves again on the same address (devices know only that URL).
    pub fn restart(&mut self) {
        let listen = self.url.trim_start_matches("http://").trim_end_matches('/').to_string();
        let (proc, url) = Self::serve(&self.data, &listen, &self.log);
        assert_eq!(url, self.url, "the console came back on another address");
        self.proc = proc;
    }

    /// Runs an API subcommand as `token` and returns its JSON output.
    pub fn api_as(&self, token: &str, args: &[&str]) -> Value {
        let out = run_ok(
            Command::new(Self::BIN).args(args).args(["--server", &self.url, "--token", token]),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{args:?}: output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Runs an API subcommand as the admin.
    pub fn api(&self, args: &[&str]) -> Value {
        self.api_as(&self.admin_token, args)
    }

    /// Runs an API subcommand as `token` that must be refused; returns what it printed.
    pub fn api_refused(&self, token: &str, args: &[&str]) -> String {
        let out = Command::new(Self::BIN)
            .args(args)
            .args(["--server", &self.url, "--token", token])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should have been refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Every clip the console holds (`clip list`, read from its database): id, device_id,
    /// user, mode, trigger_id, alert_id, start_ms, end_ms, complete, segments, open,
    /// covered_until_ms.
    pub fn clips(&self) -> Vec<Value> {
        let out = run_ok(Command::new(Self::BIN).args([
            "clip",
            "list",
            "--data",
            self.data.to_str().unwrap(),
        ]));
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(v)) => v,
            other => panic!("clip list: {other:?}"),
        }
    }

    /// Opens a clip with the tenant key into `out` (frames as PNG, events as JSON Lines), as
    /// an investigator (the only role `clip export` admits), added on first use.
    pub fn export(&self, clip_id: &str, out: &Path) -> Export {
        let investigator = self.investigator.get_or_init(|| {
            let p =
                self.api(&["person", "add", "--name", "investigator", "--role", "investigator"]);
            p["token"].as_str().expect("person add printed no token").to_string()
        });
        let summary = run_ok(Command::new(Self::BIN).args([
            "clip",
            "export",
            clip_id,
            "--data",
            self.data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--token",
            investigator,
        ]));
        let summary: Value = serde_json::from_slice(&summary.stdout).unwrap();
        Export { dir: out.to_path_buf(), summary }
    }

    /// `clip export --evidence OUT CLIP_ID --open` as the investigator, then `rearview-verify`
    /// on the package with the tenant key (every frame decoded again): the verifier's report.
    pub fn verified_evidence(&self, clip_id: &str, out: &Path) -> rearview_verify::Report {
        self.export(clip_id, &out.with_extension("plain"));
        let investigator = self.investigator.get().expect("the plain export made the person");
        run_ok(Command::new(Self::BIN).args([
            "clip",
            "export",
            "--evidence",
            out.to_str().unwrap(),
            clip_id,
            "--open",
            "--data",
            self.data.to_str().unwrap(),
            "--token",
            investigator,
        ]));
        rearview_verify::verify(&rearview_verify::Options {
            dir: out.to_path_buf(),
            tenant_key: Some(self.data.join("keys").join("sealing.key")),
            console_key: None,
        })
    }
}

/// An exported clip.
pub struct Export {
    pub dir: PathBuf,
    pub summary: Value,
}

impl Export {
    fn lines(&self, name: &str) -> Vec<Value> {
        let text = fs::read_to_string(self.dir.join(name)).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// `frames.jsonl`: `{file, utc_ms, monitor, segment}` per frame, in time order.
    pub fn frames(&self) -> Vec<Value> {
        self.lines("frames.jsonl")
    }

    /// `events.jsonl`: input and window events, in time order.
    pub fn events(&self) -> Vec<Value> {
        self.lines("events.jsonl")
    }

    /// The text typed between `from_ms` and `to_ms` (UTC), in order.
    pub fn typed(&self, from_ms: i64, to_ms: i64) -> String {
        self.events()
            .iter()
            .filter(|e| e["kind"]["type"] == "key_press")
            .filter(|e| {
                let ms = e["at"]["utc_micros"].as_i64().unwrap_or(0) / 1000;
                (from_ms..=to_ms).contains(&ms)
            })
            .filter_map(|e| e["kind"]["text"].as_str().map(str::to_string))
            .collect()
    }

    /// A decoded frame's pixel at (x, y), as RGB.
    pub fn pixel(&self, frame: &Value, x: u32, y: u32) -> [u8; 3] {
        let path = self.dir.join(frame["file"].as_str().unwrap());
        let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let p = img.to_rgb8().get_pixel(x, y).0;
        [p[0], p[1], p[2]]
    }
}

/// The agent daemon, run as its binary with a config file, plus its CLI.
pub struct Agent {
    pub config: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Agent {
    const DAEMON: &'static str = env!("CARGO_BIN_EXE_e2e-rearviewd");
    const CLI: &'static str = env!("CARGO_BIN_EXE_e2e-rearview");

    /// Writes `dir/agent/agent.toml` (`extra` is appended as is) without starting anything.
    pub fn configure(dir: &Path, server_url: &str, extra: &str) -> Agent {
        let root = dir.join("agent");
        fs::create_dir_all(&root).unwrap();
        let data = root.join("data");
        let socket = root.join("rearview.sock");
        let config = root.join("agent.toml");
        fs::write(
            &config,
            format!(
                "server_url = \"{server_url}\"\ndata_dir = \"{}\"\n[cli]\nsocket = \"{}\"\n{extra}",
                data.display(),
                socket.display()
            ),
        )
        .unwrap();
        Agent { config, socket, log: dir.join("agent.log"), proc: None }
    }

    /// Starts the daemon (enrolling with `token` if given) and waits for its socket.
    pub fn start(&mut self, enroll_token: Option<&str>) {
        let _ = fs::remove_file(&self.socket);
        let mut cmd = Command::new(Self::DAEMON);
        cmd.arg("--config").arg(&self.config);
        if let Some(t) = enroll_token {
            cmd.args(["--enroll-token", t]);
        }
        let mut proc = Proc::spawn("rearviewd", &mut cmd, &self.log);
        let socket = self.socket.clone();
        wait_until("the agent's socket", DEADLINE, || {
            assert!(proc.alive(), "rearviewd exited; see {}", self.log.display());
            socket.exists().then_some(())
        });
        self.proc = Some(proc);
    }

    /// SIGKILL: no chance to save or flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// `rearview --json <args>`.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = run_ok(
            Command::new(Self::CLI).arg("--socket").arg(&self.socket).arg("--json").args(args),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The session report of `user` in `rearview status`, if the agent has one.
    pub fn session(&self, user: &str) -> Option<Value> {
        let status = self.cli(&["status"]);
        status["sessions"].as_array()?.iter().find(|s| s["user"] == user).cloned()
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One user's desktop: a private Xvfb with a terminal of a given background colour that
/// echoes what is typed into it.
pub struct Desktop {
    pub xvfb: Xvfb,
    _terminal: Proc,
}

impl Desktop {
    pub fn start(dir: &Path, name: &str, bg: &str) -> Desktop {
        let xvfb = Xvfb::start(640, 480).unwrap();
        let terminal = Proc::spawn(
            &format!("xterm on {name}'s desktop"),
            xvfb.command("xterm").args([
                "-title",
                name,
                "-bg",
                bg,
                "-fg",
                "white",
                "-geometry",
                "60x20+0+0",
                "-e",
                "cat",
            ]),
            &dir.join(format!("xterm-{name}.log")),
        );
        let desktop = Desktop { xvfb, _terminal: terminal };
        wait_until(&format!("{name}'s terminal to map"), DEADLINE, || {
            let out = desktop.xdotool(&["search", "--onlyvisible", "--name", name]).ok()?;
            (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
        });
        desktop
    }

    fn xdotool(&self, args: &[&str]) -> std::io::Result<Output> {
        self.xvfb.command("xdotool").args(args).output()
    }

    /// Types `text` (then Return) into the focused terminal, at xdotool's pace.
    pub fn type_line(&self, text: &str) {
        run_ok(self.xvfb.command("xdotool").args(["type", "--delay", "30", text]));
        run_ok(self.xvfb.command("xdotool").args(["key", "Return"]));
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
