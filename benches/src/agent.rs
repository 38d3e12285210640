//! `agent`: the real `rearviewd` recording the workload desktop, as it runs on a device.
//!
//! Starts a 1920x1080 Xvfb with the workload ([`crate::workload`]), a daemon (the release
//! `rearviewd`, built here with the same cargo) whose fixed display is that Xvfb and whose
//! identity names a fresh tenant sealing key, hands it a signed policy approving the current
//! user at 1 fps, and lets it record for `--secs` (default 120). Measured:
//!
//! * `cpu_percent_of_core`: CPU time of the daemon *and its capture workers* (every process
//!   whose parent is the daemon), from `/proc/<pid>/stat`, over the recording time, as a share
//!   of one core;
//! * `peak_rss_mb`: peak resident memory (`VmHWM`) of the daemon plus that of its largest
//!   worker;
//! * `bytes_per_hour`: sealed bytes in the ring after a SIGTERM (which seals the open segment),
//!   per hour of recording.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rearview_config::time::{Duration as TDuration, OffsetDateTime};
use rearview_config::{
    sign_policy, Approval, CaptureMode, PolicyPayload, Principal, SigningKey, TenantId, UserScope,
};
use rearview_testkit::procfs::ProcStatus;
use rearview_testkit::xvfb::Xvfb;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Print one JSON object (the only output on stdout).
    #[arg(long)]
    json: bool,
    /// Seconds of recording.
    #[arg(long, default_value_t = 120)]
    secs: u64,
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rearviewd_binary() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let dir = here.parent().context("bench binary has no directory")?;
    let bin = dir.join("rearviewd");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile = if dir.ends_with("release") { "--release" } else { "--profile=dev" };
    let status = Command::new(cargo)
        .args(["build", profile, "-p", "rearview-agent", "--bin", "rearviewd"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() || !bin.exists() {
        bail!("could not build rearviewd next to {}", here.display());
    }
    Ok(bin)
}

fn call(socket: &Path, request: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    let v: serde_json::Value = serde_json::from_str(&answer)?;
    if v["ok"] != true {
        bail!("daemon refused {request}: {}", v["error"]);
    }
    Ok(v["result"].clone())
}

/// `utime + stime` ticks of `pid`.
fn ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s[s.rfind(')')? + 1..].split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

fn hwm_mb(pid: u32) -> f64 {
    let kib = ProcStatus::read(pid).ok().and_then(|status| status.kib("VmHWM"));
    kib.map_or(0.0, |kib| kib as f64 / 1024.0)
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let bin = rearviewd_binary()?;
    let x = Xvfb::start(1920, 1080)?;
    let _workload = crate::workload::Workload::start(&x)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let socket = dir.path().join("admin.sock");
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "server_url = \"http://127.0.0.1:9\"\ndata_dir = \"{}\"\n[cli]\nsocket = \"{}\"\n[capture]\ndisplay = \"{}\"\n",
            data.display(),
            socket.display(),
            x.display()
        ),
    )?;
    let signing = SigningKey::generate()?;
    // Any 32 random bytes are an X25519 public key; nobody opens what the bench records.
    let mut sealing_public = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut sealing_public)?;
    let sealing_hex: String = sealing_public.iter().map(|b| format!("{b:02x}")).collect();
    // The device key signs every segment into its chain: the bench pays for that too.
    let (_, device_key) = rearview_evidence::keys::Signer::generate()?;
    let identity = serde_json::json!({
        "server": "http://127.0.0.1:9", "device_id": "bench", "tenant_id": "bench",
        "device_token": "bench", "device_key_pkcs8_hex": hex::encode(&*device_key),
        "signing_public_key": signing.verifying_key().to_base64(),
        "signing_key_id": signing.key_id().to_string(),
        "sealing_public_key": sealing_hex,
    });
    std::fs::write(data.join("identity.json"), identity.to_string())?;

    let mut daemon = Daemon(
        Command::new(&bin)
            .arg("--config")
            .arg(dir.path().join("agent.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?,
    );
    let pid = daemon.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(&socket, serde_json::json!({"cmd":"status"})).is_err() {
        if Instant::now() > deadline {
            bail!("rearviewd did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let user =
        std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "root".into());
    let now = OffsetDateTime::now_utc();
    let mut p = PolicyPayload::new(
        TenantId::new("bench")?,
        1,
        now - TDuration::minutes(1),
        now + TDuration::days(1),
    );
    p.capture.enabled = true;
    p.capture.fps = 1;
    p.notify.enabled = false;
    p.users.push(UserScope {
        principal: Principal::new(user)?,
        mode: CaptureMode::SpecificActivities,
        approval: Approval {
            requested_by: Principal::new("investigator")?,
            approved_by: Principal::new("approver")?,
            justification: "benchmark".into(),
            approved_at: now - TDuration::minutes(1),
            expires_at: now + TDuration::days(1),
            approver_grant: None,
        },
    });
    let envelope = String::from_utf8(sign_policy(&signing, &p)?.to_json())?;
    call(&socket, serde_json::json!({"cmd":"apply_policy","envelope":envelope}))?;

    // Recording starts when the worker has delivered its first frame.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = call(&socket, serde_json::json!({"cmd":"status"}))?;
        if s["sessions"][0]["frames"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("capture did not start: {s}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let hz = clock_ticks_per_sec();
    let total = |pids: &[u32]| pids.iter().filter_map(|p| ticks(*p)).sum::<u64>();
    let mut pids = vec![pid];
    pids.extend(children(pid));
    let start = Instant::now();
    let start_ticks = total(&pids);
    let mut worker_hwm: f64 = 0.0;
    while start.elapsed() < Duration::from_secs(args.secs) {
        std::thread::sleep(Duration::from_secs(1));
        for c in children(pid) {
            if !pids.contains(&c) {
                pids.push(c);
            }
            worker_hwm = worker_hwm.max(hwm_mb(c));
        }
    }
    let cpu_secs = (total(&pids).saturating_sub(start_ticks)) as f64 / hz;
    let elapsed = start.elapsed().as_secs_f64();
    let daemon_hwm = hwm_mb(pid);

    nix_kill_term(pid);
    let _ = daemon.0.wait();
    let sealed: u64 = std::fs::read_dir(data.join("ring").join("segments"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seal"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();

    let result = serde_json::json!({
        "bench": "agent",
        "results": [{
            "name": "rearviewd",
            "cpu_percent_of_core": round(cpu_secs / elapsed * 100.0),
            "peak_rss_mb": round(daemon_hwm + worker_hwm),
            "bytes_per_hour": (sealed as f64 / elapsed * 3600.0).round() as u64,
        }]
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

/// The kernel's clock ticks per second (the unit of /proc/PID/stat times).
#[allow(unsafe_code)] // see the SAFETY comment inside
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

#[allow(unsafe_code)] // see the SAFETY comment inside
fn nix_kill_term(pid: u32) {
    // SAFETY: kill(2) with a pid we started and still hold (not yet reaped) and a valid signal.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
