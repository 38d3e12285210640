//! A private PostgreSQL cluster for tests: `initdb` in a new temp dir, served on a free
//! loopback port, stopped and removed afterwards however the test process ends.
//!
//! The console's PostgreSQL store, its replica and failure tests and the benches all take their
//! database from here, so none of them depends on a system cluster, a password or a port set up
//! by hand. The test kit links no PostgreSQL client: it runs Debian's own programs (`initdb`,
//! `pg_ctl`, `psql`, `pg_isready` from the highest `/usr/lib/postgresql/*/bin`, else from
//! `PATH`). When the tests run as root, the cluster belongs to the `postgres` OS user (the server
//! refuses to run as root): its directory is chowned to it and the programs that touch the data
//! run through `runuser -u postgres --`.
//!
//! ```text
//! $TMPDIR/rearview-pg-PID-N-NANOS/   the cluster's directory (owned by postgres when root)
//!   data/                            PGDATA: initdb's, plus
//!     postgresql.conf                  ... ending in `include 'rearview.conf'`
//!     rearview.conf                    port, listen_addresses = '127.0.0.1', socket dir, fsync off
//!                                      (commits survive stop/restart, not a machine crash)
//!     pg_hba.conf                      trust, for the local socket and 127.0.0.1/32 only
//!   sock/                            the server's Unix socket (no /run/postgresql needed)
//!   server.log                       the server's log; its tail is in every start error
//! ```
//!
//! The superuser is `rearview`, with no password (trust on loopback only);
//! [`Postgres::create_database`] hands out `postgres://rearview@127.0.0.1:PORT/NAME` URLs.
//!
//! Cleanup has two paths. [`Drop`] stops the server at once (`pg_ctl stop -m immediate`) and
//! removes the directory. And every cluster has a *reaper*: a small `sh` child in its own
//! process group (so a Ctrl-C to the test does not reach it) whose stdin is a pipe only the test
//! process holds the other end of. When the test process goes — returns, panics, `exit`s, is
//! SIGKILLed — the kernel closes that end, the reaper reads end-of-file and does the same stop
//! and removal. That is what cleans up [`Postgres::shared`], which lives in a `static` and is
//! never dropped. (An end-of-file rather than polling the pid: no race with pid reuse, and no
//! wait for a zombie to be reaped.)
//!
//! ```no_run
//! use rearview_testkit::postgres::Postgres;
//! let url = Postgres::shared().create_database(); // postgres://rearview@127.0.0.1:PORT/rv_…
//! # let _ = url;
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::process;

/// How long a start or restart may take before it is an error. Generous: on a loaded 2-core
/// machine `initdb` alone takes seconds, and a restart after `-m immediate` runs crash recovery.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a start is retried when another process took the port between our pick and the
/// server's bind.
const PORT_ATTEMPTS: usize = 3;

/// The superuser `initdb` makes; every URL names it.
pub const SUPERUSER: &str = "rearview";

/// Clusters started by this process, for unique directory names.
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Permanent until someone installs it.
    #[error(
        "PostgreSQL is not installed (no `{0}` in /usr/lib/postgresql/*/bin or on PATH); \
         install the Debian package `postgresql` (scripts/setup-debian.sh does)"
    )]
    NotInstalled(&'static str),
    /// Permanent: usually `$TMPDIR` is missing, full or not writable.
    #[error("cannot prepare the cluster directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    /// Retryable: usually resource exhaustion (processes, file descriptors).
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// Permanent when the arguments or the installation are wrong, retryable when the machine
    /// is merely overloaded: the program's own words say which.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    /// Retryable: the machine is overloaded.
    #[error("PostgreSQL did not accept connections on 127.0.0.1:{port} within {limit:?}; its log ends with: {log}")]
    NotReady { port: u16, limit: Duration, log: String },
    /// Retryable: other processes keep taking the free ports we pick.
    #[error("no free port after {PORT_ATTEMPTS} attempts; the server's log ends with: {0}")]
    PortTaken(String),
    /// Permanent: not a URL [`Postgres::create_database`] made.
    #[error("{0:?} is not a test kit database URL (postgres://rearview@127.0.0.1:PORT/NAME)")]
    BadUrl(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Spawn { .. }
                | Error::Failed { .. }
                | Error::NotReady { .. }
                | Error::PortTaken(_)
        )
    }
}

/// [`Postgres::psql`] in the database a [`Postgres::create_database`] URL names, on whichever
/// test kit cluster it is (the shared one or a private one): for a test that holds only the URL
/// (a console's data directory records it).
pub fn psql_url(url: &str, sql: &str) -> Result<String, Error> {
    let bad = || Error::BadUrl(url.to_owned());
    let rest = url.strip_prefix(&format!("postgres://{SUPERUSER}@127.0.0.1:")).ok_or_else(bad)?;
    let (port, database) = rest.split_once('/').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    psql(&Programs::find()?, port, database, sql)
}

fn psql(programs: &Programs, port: u16, database: &str, sql: &str) -> Result<String, Error> {
    let mut cmd = Command::new(&programs.psql);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", SUPERUSER, "-d", database, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10");
    let out = run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The programs the cluster is run with.
#[derive(Debug)]
struct Programs {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
    pg_isready: PathBuf,
}

impl Programs {
    /// The highest `/usr/lib/postgresql/VERSION/bin` that has them all (Debian's layout, where
    /// `initdb` and `pg_ctl` are not on PATH), else each one from `PATH`.
    fn find() -> Result<Programs, Error> {
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        let versioned = versions.pop().map(|(_, bin)| bin);
        let find = |name: &'static str| {
            versioned
                .as_ref()
                .map(|bin| bin.join(name))
                .filter(|p| p.is_file())
                .or_else(|| on_path(name))
                .ok_or(Error::NotInstalled(name))
        };
        Ok(Programs {
            initdb: find("initdb")?,
            pg_ctl: find("pg_ctl")?,
            psql: find("psql")?,
            pg_isready: find("pg_isready")?,
        })
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A running private cluster; stopped and removed on drop (and by its reaper when the process
/// ends without dropping it).
#[derive(Debug)]
pub struct Postgres {
    /// The cluster's directory (see the module docs for its layout).
    dir: PathBuf,
    port: u16,
    programs: Programs,
    /// Whether the server's programs run as the `postgres` OS user (we are root).
    as_postgres: bool,
    /// Databases handed out, for unique names.
    databases: AtomicU64,
    /// The write end of the reaper's stdin: closing it (drop, or the process ending) tells the
    /// reaper to clean up. `None` once dropped.
    reaper_pipe: Option<ChildStdin>,
    reaper: Option<Child>,
}

impl Postgres {
    /// `initdb`s a private cluster in a new temp dir (as the `postgres` OS user when running as
    /// root), superuser `rearview`, trust authentication on 127.0.0.1 and the cluster's own
    /// socket only, fsync off; then starts it on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Result<Postgres, Error> {
        let programs = Programs::find()?;
        let as_postgres = process::is_root();
        let dir = std::env::temp_dir().join(format!(
            "rearview-pg-{}-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed),
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()),
        ));
        fs::create_dir(&dir).map_err(|source| Error::Dir { path: dir.clone(), source })?;
        // From here on the reaper owns the directory's removal, whatever fails below.
        let (reaper, reaper_pipe) = spawn_reaper(&programs, &dir, as_postgres)?;
        let mut pg = Postgres {
            dir,
            port: 0,
            programs,
            as_postgres,
            databases: AtomicU64::new(0),
            reaper_pipe: Some(reaper_pipe),
            reaper: Some(reaper),
        };
        fs::create_dir(pg.dir.join("sock")).map_err(|source| pg.dir_error(source))?;
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:").arg(&pg.dir);
            run(chown)?;
        }
        pg.initdb()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            pg.port = process::free_port()
                .map_err(|source| Error::Spawn { program: "bind".into(), source })?;
            pg.write_config()?;
            // A fresh log per attempt, so "could not bind" below is this attempt's.
            let _ = fs::remove_file(pg.dir.join("server.log"));
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(_) if attempt < PORT_ATTEMPTS && pg.log_tail().contains("could not bind") => {}
                Err(_) if pg.log_tail().contains("could not bind") => {
                    return Err(Error::PortTaken(pg.log_tail()));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One cluster per test process, started on first use; stopped and removed by its reaper
    /// when the process exits, however it exits. Panics (naming why) when it cannot start.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            Postgres::start()
                .unwrap_or_else(|e| panic!("cannot start the shared PostgreSQL cluster: {e}"))
        })
    }

    /// A new empty database with a unique name; its URL
    /// `postgres://rearview@127.0.0.1:PORT/NAME`. Panics with psql's stderr when the server
    /// refuses (stopped, say).
    pub fn create_database(&self) -> String {
        let name =
            format!("rv_{}_{}", std::process::id(), self.databases.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = self.psql("postgres", &format!("CREATE DATABASE \"{name}\"")) {
            panic!("cannot create database {name} on 127.0.0.1:{}: {e}", self.port);
        }
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in `database` (a name, as `create_database`'s URL ends) with `psql` as the
    /// superuser, stopping at the first error; its output unaligned, tuples only
    /// (`psql -At`), one row a line.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        psql(&self.programs, self.port, database, sql)
    }

    /// The loopback TCP port the server listens on (the same across [`Postgres::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket and log); gone after drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), keeping the data: for failure
    /// tests. Panics with pg_ctl's stderr when it cannot (not running, say).
    pub fn stop(&self) {
        if let Err(e) = self.pg_ctl_stop() {
            panic!("cannot stop the PostgreSQL cluster on port {}: {e}", self.port);
        }
    }

    /// Starts it again on the same port and data, and waits until it accepts connections.
    /// Panics naming why when it cannot (the port was taken meanwhile, say).
    pub fn restart(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("cannot restart the PostgreSQL cluster on port {}: {e}", self.port);
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for one of the server's programs, as the user that owns the cluster.
    fn server_command(&self, program: &Path) -> Command {
        server_command(program, self.as_postgres, &self.dir)
    }

    fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self.server_command(&self.programs.initdb);
        cmd.arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
            .arg("--no-instructions");
        run(cmd).map_err(|e| match e {
            Error::Failed { command, status, stderr } if self.as_postgres => Error::Failed {
                command,
                status,
                stderr: format!(
                    "{stderr} (the postgres user must be able to reach {}: is $TMPDIR private \
                     to root?)",
                    self.dir.display()
                ),
            },
            e => e,
        })?;
        // Trust, but only on the cluster's own socket and loopback: nothing else can reach it
        // anyway (it listens on 127.0.0.1 only), and this says so in the one place that decides.
        let hba = "# written by rearview-testkit\n\
                   local all all trust\n\
                   host all all 127.0.0.1/32 trust\n";
        fs::write(self.data().join("pg_hba.conf"), hba).map_err(|source| self.dir_error(source))?;
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .map_err(|source| self.dir_error(source))?;
        conf.write_all(
            b"\n# rearview-testkit: port, addresses and durability\ninclude 'rearview.conf'\n",
        )
        .map_err(|source| self.dir_error(source))
    }

    /// The settings a start uses: this cluster's port, loopback only, its own socket dir, and
    /// no durability against a machine crash (a test cluster is thrown away; fsync only slows
    /// the suite). Commits still wait for their WAL write (`synchronous_commit` stays on): an
    /// immediate stop kills the server, not the OS, so what a commit wrote survives
    /// [`Postgres::stop`] and [`Postgres::restart`], as failure tests need; with it off, the
    /// last commits before a stop would vanish.
    fn write_config(&self) -> Result<(), Error> {
        let conf = format!(
            "port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             fsync = off\n\
             full_page_writes = off\n\
             # replica and load tests open a pool per console process\n\
             max_connections = 300\n",
            port = self.port,
            sock = self.dir.join("sock").display(),
        );
        fs::write(self.data().join("rearview.conf"), conf).map_err(|source| self.dir_error(source))
    }

    fn pg_ctl_start(&self) -> Result<(), Error> {
        let mut cmd = self.server_command(&self.programs.pg_ctl);
        // -l: the server's output goes to the log, so it holds none of our pipes and `pg_ctl`
        // returns once it is up; -w -t: wait for "ready", bounded.
        cmd.arg("-D").arg(self.data()).arg("-l").arg(self.dir.join("server.log")).args([
            "-w",
            "-t",
            &START_TIMEOUT.as_secs().to_string(),
            "start",
        ]);
        run(cmd).map_err(|e| match e {
            Error::Failed { command, status, stderr } => Error::Failed {
                command,
                status,
                stderr: format!("{stderr}; the server's log ends with: {}", self.log_tail()),
            },
            e => e,
        })?;
        self.wait_ready()
    }

    /// `pg_ctl -w` has seen the server say "ready"; this asks over TCP, as clients will.
    fn wait_ready(&self) -> Result<(), Error> {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(&self.programs.pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-t", "5", "-U", SUPERUSER])
                .arg("-p")
                .arg(self.port.to_string())
                .stdin(Stdio::null())
                .status()
                .map_err(|source| Error::Spawn {
                    program: program_name(&self.programs.pg_isready),
                    source,
                })?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(Error::NotReady {
                    port: self.port,
                    limit: START_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pg_ctl_stop(&self) -> Result<(), Error> {
        let mut cmd = self.server_command(&self.programs.pg_ctl);
        cmd.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
        run(cmd).map(drop)
    }

    fn log_tail(&self) -> String {
        process::tail(&self.dir.join("server.log"))
    }

    fn dir_error(&self, source: io::Error) -> Error {
        Error::Dir { path: self.dir.clone(), source }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Stop first, so nothing writes into the directory while it goes. Errors are moot: the
        // server may never have started, or a test stopped it; the reaper tries again anyway.
        if self.data().join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
        // Closing the pipe lets the reaper finish (its stop and removal find nothing left to do);
        // waiting for it leaves no zombie behind.
        drop(self.reaper_pipe.take());
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.wait();
        }
    }
}

/// The reaper: waits for end-of-file on its stdin, then stops the server and removes `dir`.
/// Its own process group and ignored INT/TERM/HUP keep a Ctrl-C or a hang-up to the test from
/// killing it before it has cleaned up.
const REAPER: &str = r#"
trap '' INT TERM HUP
cat >/dev/null
if [ "$3" = root ]; then
  runuser -u postgres -- "$1" -D "$2/data" -m immediate -w stop >/dev/null 2>&1
else
  "$1" -D "$2/data" -m immediate -w stop >/dev/null 2>&1
fi
rm -rf "$2"
"#;

fn spawn_reaper(
    programs: &Programs,
    dir: &Path,
    as_postgres: bool,
) -> Result<(Child, ChildStdin), Error> {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(REAPER)
        .arg("rearview-pg-reaper")
        .arg(&programs.pg_ctl)
        .arg(dir)
        .arg(if as_postgres { "root" } else { "user" })
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => {
            let _ = fs::remove_dir_all(dir);
            return Err(Error::Spawn { program: "sh (the cluster's reaper)".into(), source });
        }
    };
    // std makes the pipe close-on-exec, so no program we start later holds its write end open.
    let pipe = child.stdin.take().expect("the reaper's stdin is piped");
    Ok((child, pipe))
}

fn server_command(program: &Path, as_postgres: bool, dir: &Path) -> Command {
    let mut cmd = if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    // The server's programs complain about a working directory they cannot read (root's home).
    cmd.current_dir(dir);
    cmd
}

/// Runs `cmd` to completion; its output, or an error carrying its stderr.
fn run(mut cmd: Command) -> Result<Output, Error> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.stdin(Stdio::null()).output().map_err(|source| Error::Spawn {
        program: program_name(Path::new(cmd.get_program())),
        source,
    })?;
    if out.status.success() {
        return Ok(out);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    Err(Error::Failed { command, status: out.status.to_string(), stderr })
}

fn program_name(program: &Path) -> String {
    program.display().to_string()
}
