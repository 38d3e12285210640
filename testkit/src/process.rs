//! What the harnesses that run a server in a process of its own share: a free loopback port to
//! start it on (and another when that one was taken meanwhile), a *reaper* so that it never
//! outlives the test process, signals to it, and the tail of its log for error messages.
//!
//! # Reapers
//!
//! A test process does not always drop what it started: a server in a `static` (the harnesses'
//! `shared()`) is never dropped, and a test that aborts, `exit`s or is SIGKILLed skips every
//! drop. So [`Guarded::spawn`] starts a second child with every server, its reaper: a small `sh`
//! that asks once a second whether the test process is still there (`kill -0 OWNER`) and, once
//! it is not, SIGKILLs the server (which ends a SIGSTOPped one too, so no SIGCONT first). It
//! also ends by itself once the server is gone, so a dropped server leaves no reaper behind.
//! [`Guarded::spawn_group`] does the same for a server that starts processes of its own
//! (chromedriver and its chromium): the server leads a new process group, and the reaper
//! watches and kills the whole group.
//!
//! ```text
//! test process ── server      (its own process group with spawn_group)
//!              └─ reaper      sh -c 'while kill -0 OWNER && kill -0 PID; do sleep 1; done;
//!                                    kill -9 PID'                 (-PGID for a group)
//! drop         SIGKILL the server (the group), reap it; SIGKILL the reaper, reap it
//! ```
//!
//! Polling the owner's pid leaves a window of up to a second in which that pid could be reused;
//! the cost would be a server that lives on, not a wrong process killed (the server's pid is the
//! reaper's to check). PostgreSQL's cluster ([`crate::postgres`]) has a reaper of its own, of
//! another kind: it must stop the server and remove the cluster's directory, and learns that
//! the test process is gone from the end-of-file of a pipe.
//!
//! # Unsafe
//!
//! One block, in [`send`]: `kill(2)`, which takes plain integers and touches no memory of ours,
//! so it cannot break memory safety whatever it is passed. What must still hold is that the
//! signal reaches the process meant: a pid is free for reuse once its process is reaped, so
//! every caller passes the pid (or, negated, the process group) of a child of ours that is not
//! reaped yet — a zombie keeps its pid, and a group keeps its id while its leader does.
//! [`signal`] checks that with `try_wait`, which std remembers once it has reaped the child;
//! [`Guarded`] reaps only through its own methods and records it.

// kill(2) on our own unreaped children; the block says why it is sound.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Ports tried by [`on_a_free_port`] when the one picked was taken meanwhile.
const PORT_TRIES: usize = 3;
/// How much of a log [`tail`] keeps.
const TAIL: usize = 2048;

/// A port nobody listens on right now (the OS picks it). It may be taken again before the
/// server binds it, which [`on_a_free_port`] survives by trying another.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Runs `start` on a [`free_port`], and on another while `retry` says its error may be the port
/// taken meanwhile (at most 3 ports); the first success, or the last error. `port_error` makes
/// the harness's error when no port can be had.
pub(crate) fn on_a_free_port<T, E>(
    port_error: impl Fn(io::Error) -> E,
    retry: impl Fn(&E) -> bool,
    mut start: impl FnMut(u16) -> Result<T, E>,
) -> Result<T, E> {
    let mut tries = 1;
    loop {
        match start(free_port().map_err(&port_error)?) {
            Err(e) if tries < PORT_TRIES && retry(&e) => tries += 1,
            done => return done,
        }
    }
}

/// A server process and its reaper (see the module docs): both SIGKILLed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Guarded {
    child: Child,
    reaper: Child,
    /// Whether `child` leads a process group of its own, which the reaper and drop kill whole.
    group: bool,
    /// Whether `child` has been reaped (its pid may then be someone else's).
    reaped: bool,
}

impl Guarded {
    /// Spawns `cmd` and its reaper; when the reaper cannot start, kills `cmd` again.
    pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Guarded> {
        Guarded::start(cmd, false)
    }

    /// [`Guarded::spawn`] with `cmd` leading a new process group, which the processes it
    /// starts inherit: the reaper and drop kill the whole group.
    pub(crate) fn spawn_group(cmd: &mut Command) -> io::Result<Guarded> {
        Guarded::start(cmd.process_group(0), true)
    }

    fn start(cmd: &mut Command, group: bool) -> io::Result<Guarded> {
        let mut child = cmd.spawn()?;
        let target = if group { format!("-{}", child.id()) } else { child.id().to_string() };
        match reaper_of(std::process::id(), &target) {
            Ok(reaper) => Ok(Guarded { child, reaper, group, reaped: false }),
            Err(e) => {
                if group {
                    kill_group(&mut child);
                }
                kill(&mut child);
                Err(e)
            }
        }
    }

    /// The server's exit status once it has exited (and so is reaped); `None` while it runs.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }

    /// Asks `ready` until it holds, every [`crate::POLL`]; the server's exit status as the error
    /// when it exits first, `None` when `limit` passes first.
    pub(crate) fn wait_ready(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), Option<ExitStatus>> {
        let end = Instant::now() + limit;
        loop {
            if ready() {
                return Ok(());
            }
            let status = self.exited();
            if status.is_some() || Instant::now() >= end {
                return Err(status);
            }
            std::thread::sleep(crate::POLL);
        }
    }

    /// Sends `signal` to the server (not to its group); an error once it has been reaped.
    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        if self.reaped {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        send(pid(&self.child)?, signal)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.group && !self.reaped {
            kill_group(&mut self.child);
        }
        kill(&mut self.child);
        kill(&mut self.reaper);
    }
}

/// SIGKILL (which also ends a stopped process) and reap; nothing when it is reaped already.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to `child`; an error once it has exited (and so is reaped).
pub(crate) fn signal(child: &mut Child, signal: libc::c_int) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    send(pid(child)?, signal)
}

/// SIGKILL the process group `leader` leads (the leader is reaped after, by [`kill`]). Only
/// for a leader not reaped yet (see the module docs).
fn kill_group(leader: &mut Child) {
    if let Ok(pgid) = pid(leader) {
        let _ = send(-pgid, libc::SIGKILL);
    }
}

fn pid(child: &Child) -> io::Result<libc::pid_t> {
    libc::pid_t::try_from(child.id()).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))
}

/// kill(2): `target` is a pid, or a negated process group id.
fn send(target: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. Every caller passes a
    // child of ours (or the group it leads) that is not reaped yet, so the pid (the group id)
    // cannot have been reused: see the module docs.
    if unsafe { libc::kill(target, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The reaper (see the module docs): `sh` asking once a second whether `owner` and `target` (a
/// pid, or `-PGID` for a process group) are alive; once `owner` is not, it SIGKILLs `target`.
fn reaper_of(owner: u32, target: &str) -> io::Result<Child> {
    let script = format!(
        "while kill -0 {owner} 2>/dev/null && kill -0 {target} 2>/dev/null; do sleep 1; done; \
         kill -9 {target} 2>/dev/null; exit 0"
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// The end of the log at `path` (at most 2 KiB, trimmed), for error messages; empty when it
/// cannot be read.
pub(crate) fn tail(path: &Path) -> String {
    let log = fs::read(path).unwrap_or_default();
    let tail = &log[log.len().saturating_sub(TAIL)..];
    String::from_utf8_lossy(tail).trim().to_owned()
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    /// The reaper ends its target once the process that started it is gone: here a child
    /// process standing in for a test binary.
    #[test]
    fn the_reaper_kills_its_target_when_its_owner_dies() {
        let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
        let mut victim = Command::new("sleep").arg("600").spawn().unwrap();
        let mut reaper = reaper_of(owner.id(), &victim.id().to_string()).unwrap();
        kill(&mut owner);
        let status = crate::wait_until("the reaper to kill its target", LIMIT, || {
            victim.try_wait().unwrap()
        });
        assert!(!status.success());
        let _ = reaper.wait();
    }

    /// A group's reaper ends every process of the group, not only its leader.
    #[test]
    fn a_group_reaper_kills_the_whole_group() {
        let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 600 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(leader.stdout.take().unwrap()), &mut line)
            .unwrap();
        let member: u32 = line.trim().parse().unwrap();
        let mut reaper = reaper_of(owner.id(), &format!("-{}", leader.id())).unwrap();
        kill(&mut owner);
        crate::wait_until("the reaper to kill the group's leader", LIMIT, || {
            leader.try_wait().unwrap()
        });
        // The member is not our child: gone is when its /proc entry is (init reaps it).
        crate::wait_until("the reaper to kill the group's member", LIMIT, || {
            (!Path::new(&format!("/proc/{member}")).exists()).then_some(())
        });
        let _ = reaper.wait();
    }

    /// Dropping a [`Guarded`] ends the server and its reaper; a server that has exited is not
    /// signalled.
    #[test]
    fn drop_ends_server_and_reaper_and_the_exited_are_not_signalled() {
        let guarded = Guarded::spawn(Command::new("sleep").arg("600")).unwrap();
        guarded.signal(libc::SIGSTOP).unwrap();
        guarded.signal(libc::SIGCONT).unwrap();
        let (server, reaper) = (guarded.child.id(), guarded.reaper.id());
        drop(guarded);
        for pid in [server, reaper] {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid} is reaped");
        }

        let mut done = Guarded::spawn(&mut Command::new("true")).unwrap();
        let status = done.wait_ready(LIMIT, || false).unwrap_err();
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        assert!(done.signal(libc::SIGTERM).is_err());
    }

    /// A port taken meanwhile is retried on another, at most three times; other errors are not.
    #[test]
    fn on_a_free_port_retries_only_what_it_is_told_to() {
        let mut ports = Vec::new();
        let taken: Result<(), &str> = on_a_free_port(
            |_| "no port",
            |e| *e == "taken",
            |port| {
                ports.push(port);
                Err("taken")
            },
        );
        assert_eq!((taken, ports.len()), (Err("taken"), 3));
        let mut tries = 0;
        let broken: Result<(), &str> = on_a_free_port(
            |_| "no port",
            |e| *e == "taken",
            |_| {
                tries += 1;
                Err("broken")
            },
        );
        assert_eq!((broken, tries), (Err("broken"), 1));
    }
}
