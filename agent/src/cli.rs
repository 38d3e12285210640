//! The `rearview` command: asks the daemon over the admin socket and prints the answer, as a
//! table for people or as JSON (`--json`) for scripts.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::{AdminError, Client, ErrorKind, Request};
use crate::status::{BufferEntry, Check, ClipReport, StatusReport};

/// Socket used when neither `--socket` nor a readable config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/rearview/rearview.sock";

#[derive(Parser, Debug)]
#[command(name = "rearview", version, about = "Rearview agent: local status and diagnostics")]
pub struct Cli {
    /// The daemon's admin socket (default: [cli] socket of the agent config).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Agent configuration file, read for the socket path.
    #[arg(long, global = true, default_value = rearview_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Enrollment, policy, sessions and what is captured, ring, spool, uploads, errors.
    Status,
    /// Checks display, input, disk, clock, console, key files and policy; says how to fix.
    Doctor,
    /// The sealed segments in the ring.
    Buffer,
    /// Clips opened by triggers: collecting, pending, uploading, sent.
    Clips,
    /// Enrolls this device with a console using a one-time token.
    Enroll {
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
    },
    /// Hands the daemon a signed policy envelope from a file (verified like a pushed one).
    ApplyPolicy { file: PathBuf },
    /// Hands the daemon a signed trigger envelope from a file (verified like a pushed one).
    Trigger { file: PathBuf },
}

impl Cli {
    pub fn socket_path(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        match rearview_config::AgentConfig::load(&self.config) {
            Ok(c) => c.socket_path().to_path_buf(),
            Err(_) => PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

/// Runs the command; returns what to print and whether it succeeded (doctor fails when a
/// check fails).
pub fn run(cli: &Cli) -> Result<(String, bool), AdminError> {
    let client = Client::new(cli.socket_path());
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| {
            AdminError::new(ErrorKind::BadRequest, format!("cannot read {}: {e}", p.display()))
        })
    };
    let request = match &cli.command {
        Cmd::Status => Request::Status,
        Cmd::Doctor => Request::Doctor,
        Cmd::Buffer => Request::Buffer,
        Cmd::Clips => Request::Clips,
        Cmd::Enroll { server, token } => {
            Request::Enroll { server: server.clone(), token: token.clone() }
        }
        Cmd::ApplyPolicy { file } => Request::ApplyPolicy { envelope: read(file)? },
        Cmd::Trigger { file } => Request::Trigger { envelope: read(file)? },
    };
    let value = client.call(&request)?;
    if cli.json {
        let ok = match &cli.command {
            Cmd::Doctor => serde_json::from_value::<Vec<Check>>(value.clone())
                .map(|c| c.iter().all(|c| c.ok))
                .unwrap_or(false),
            _ => true,
        };
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        return Ok((text, ok));
    }
    let parse_err = |e: serde_json::Error| {
        AdminError::new(ErrorKind::Internal, format!("daemon answered something unexpected: {e}"))
    };
    Ok(match &cli.command {
        Cmd::Status => (format_status(&serde_json::from_value(value).map_err(parse_err)?), true),
        Cmd::Doctor => {
            let checks: Vec<Check> = serde_json::from_value(value).map_err(parse_err)?;
            let ok = checks.iter().all(|c| c.ok);
            (format_doctor(&checks), ok)
        }
        Cmd::Buffer => (
            format_buffer(&serde_json::from_value::<Vec<BufferEntry>>(value).map_err(parse_err)?),
            true,
        ),
        Cmd::Clips => (
            format_clips(&serde_json::from_value::<Vec<ClipReport>>(value).map_err(parse_err)?),
            true,
        ),
        _ => (serde_json::to_string_pretty(&value).unwrap_or_default(), true),
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

fn utc(micros: i64) -> String {
    rearview_config::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&rearview_config::time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(|| micros.to_string())
}

pub fn format_status(s: &StatusReport) -> String {
    let mut o = String::new();
    write_identity(&mut o, s);
    write_machinery(&mut o, s);
    write_sessions(&mut o, s);
    let _ = writeln!(o, "Indicators    {} file copies seen", s.indicators_seen);
    if !s.last_errors.is_empty() {
        let _ = writeln!(o, "Last errors");
        for e in &s.last_errors {
            let _ = writeln!(o, "  {}  {}", utc(e.at_utc_micros), e.what);
        }
    }
    o
}

/// Agent version, enrollment and the policy in force.
fn write_identity(o: &mut String, s: &StatusReport) {
    let _ = writeln!(o, "Rearview agent {}", s.agent_version);
    let e = &s.enrollment;
    if e.enrolled {
        let _ = writeln!(
            o,
            "Enrollment    device {} in tenant {} ({})",
            e.device.as_deref().unwrap_or("?"),
            e.tenant.as_deref().unwrap_or("?"),
            e.server
        );
    } else {
        let _ =
            writeln!(o, "Enrollment    NOT ENROLLED (server {}): run `rearview enroll`", e.server);
    }
    match &s.policy {
        Some(p) => {
            let _ = writeln!(
                o,
                "Policy        v{}, issued {}{}, {}, capture {}, {} fps, {} s segments, {} user(s) in scope",
                p.version,
                ago(p.age_secs),
                if p.stale { " (STALE: older than 24 h)" } else { "" },
                if p.in_force { "in force" } else { "NOT in force" },
                if p.capture_enabled { "on" } else { "off" },
                p.fps,
                p.segment_secs,
                p.users_in_scope
            );
        }
        None => {
            let _ = writeln!(o, "Policy        none: nobody is recorded");
        }
    }
}

/// Console, ring, spool, upload budget and CPU.
fn write_machinery(o: &mut String, s: &StatusReport) {
    let sv = &s.server;
    let _ = writeln!(
        o,
        "Console       {}{}{}",
        if sv.reachable { "reachable" } else { "UNREACHABLE" },
        if sv.stream_connected { ", push stream connected" } else { "" },
        sv.uploading.as_ref().map(|c| format!(", uploading clip {c}")).unwrap_or_default()
    );
    let r = &s.ring;
    let _ = writeln!(
        o,
        "Ring          {} segments, {} of {} ({} pinned), keeps {} s, in {}",
        r.segments,
        mb(r.bytes),
        mb(r.max_bytes),
        r.pinned_segments,
        r.retention_secs,
        r.dir
    );
    if r.pin_failures > 0 {
        let last = r.last_pin_failure.as_deref().unwrap_or("");
        let _ = writeln!(o, "              {} pin/unpin failures, last: {last}", r.pin_failures);
    }
    let sp = &s.spool;
    let _ = writeln!(
        o,
        "Spool         {} clip(s) pending, {} sent, {} of {}{}",
        sp.pending_clips,
        sp.sent_clips,
        mb(sp.bytes),
        mb(sp.max_bytes),
        if sp.lost_clips > 0 {
            format!(", {} LOST to overflow", sp.lost_clips)
        } else {
            String::new()
        }
    );
    let used: Vec<String> = s.upload.today.iter().map(|(u, b)| format!("{u} {}", mb(*b))).collect();
    let _ = writeln!(
        o,
        "Upload today  limit {} per user{}",
        mb(s.upload.limit_per_user_per_day),
        if used.is_empty() { String::new() } else { format!(": {}", used.join(", ")) }
    );
    for w in &s.upload.warnings {
        let _ = writeln!(o, "              warning: {w}");
    }
    let c = &s.cpu;
    let _ = writeln!(
        o,
        "CPU           {} of the machine (limit {} %){}",
        c.percent_of_machine
            .map(|p| format!("{p:.2} %"))
            .unwrap_or_else(|| "not measured yet".into()),
        c.limit_percent,
        if c.paused {
            ", capture PAUSED"
        } else if c.throttled {
            ", frame rate lowered"
        } else {
            ""
        }
    );
}

/// One line per graphical session.
fn write_sessions(o: &mut String, s: &StatusReport) {
    let _ = writeln!(o, "Sessions");
    if s.sessions.is_empty() {
        let _ = writeln!(
            o,
            "  none{}",
            s.sessions_problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            o,
            "  {:<18} {:<12} {:<8} {:<22} {:<20} {:>5} {:>7} {:>8}",
            "SESSION", "USER", "DISPLAY", "CAPTURE", "MODE", "FPS", "FRAMES", "SEGMENTS"
        );
        for x in &s.sessions {
            let _ = writeln!(
                o,
                "  {:<18} {:<12} {:<8} {:<22} {:<20} {:>5} {:>7} {:>8}",
                x.id,
                x.user,
                x.display,
                x.capture,
                x.mode.as_deref().unwrap_or("-"),
                x.fps,
                x.frames,
                x.segments
            );
        }
    }
}

pub fn format_doctor(checks: &[Check]) -> String {
    let mut o = String::new();
    for c in checks {
        let _ = writeln!(o, "[{}] {}: {}", if c.ok { "PASS" } else { "FAIL" }, c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(o, "       fix: {fix}");
        }
    }
    o
}

pub fn format_buffer(entries: &[BufferEntry]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<32} {:<14} {:<16} {:>3} {:<25} {:>6} {:>6} {:>10}  PINNED BY",
        "SEGMENT", "USER", "SESSION", "MON", "START (UTC)", "SECS", "FRAMES", "BYTES"
    );
    for e in entries {
        let _ = writeln!(
            o,
            "{:<32} {:<14} {:<16} {:>3} {:<25} {:>6.1} {:>6} {:>10}  {}",
            e.id,
            e.user,
            e.session,
            e.monitor,
            utc(e.start_utc_micros),
            (e.end_utc_micros - e.start_utc_micros) as f64 / 1e6,
            e.frames,
            e.sealed_bytes,
            e.pinned_by.join(",")
        );
    }
    let total: u64 = entries.iter().map(|e| e.sealed_bytes).sum();
    let _ = writeln!(o, "{} segments, {} sealed", entries.len(), mb(total));
    o
}

pub fn format_clips(clips: &[ClipReport]) -> String {
    let mut o = String::new();
    if clips.is_empty() {
        let _ = writeln!(o, "no clips");
        return o;
    }
    for c in clips {
        let _ = writeln!(
            o,
            "{} [{}] user {} trigger {} window {} .. {} segments {}",
            c.id,
            c.state,
            c.user,
            c.trigger_id.as_deref().unwrap_or("(local)"),
            utc(c.from_utc_micros),
            utc(c.to_utc_micros),
            c.segments
        );
        let _ = writeln!(o, "    reason: {}", c.reason);
        for m in &c.missing {
            let _ = writeln!(o, "    missing: {m}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every section of `rearview status`, once and in its order, also for a bare report.
    #[test]
    fn status_prints_every_section_in_order() {
        let mut s = StatusReport { agent_version: "0.1.0".into(), ..Default::default() };
        s.last_errors.push(crate::status::ErrorRecord { at_utc_micros: 0, what: "x".into() });
        let text = format_status(&s);
        println!("{text}");
        let starts = [
            "Rearview agent 0.1.0",
            "Enrollment    NOT ENROLLED",
            "Policy        none",
            "Console       UNREACHABLE",
            "Ring ",
            "Spool ",
            "Upload today ",
            "CPU ",
            "Sessions",
            "  none",
            "Indicators ",
            "Last errors",
            "  1970-01-01T00:00:00Z  x",
        ];
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), starts.len(), "{text}");
        for (line, start) in lines.iter().zip(starts) {
            assert!(line.starts_with(start), "{line:?} should start with {start:?}");
        }
    }
}
