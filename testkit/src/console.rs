//! The console run as its binary, for tests and benches that need a real process (a SIGTERM or
//! SIGKILL, a umask, its RSS): `init` a tenant, read the tokens `init` prints, `serve` it on a
//! free loopback port and learn the address it took.
//!
//! The test kit depends on none of our crates (capture-core's and config's tests take it, and
//! must not build the console to do so), so it knows the console only as a program: the caller
//! passes the binary's path (`env!("CARGO_BIN_EXE_…")`). The in-process launcher
//! (`Server::start`), which needs the console's types, is the console's own test support
//! (`console/tests/support`), which `tests/tests/protocol.rs` mounts as well.
//!
//! What this reads, and from where (the console's `main.rs` and `cli.rs` write it):
//!
//! ```text
//! init stdout:   admin token (NAME): rvp_…       one line each, in any order, among others
//!                approver token (NAME): rvp_…
//! DATA/console.url:  http://127.0.0.1:PORT        written by `serve` once it listens
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long `serve` may take to write its address. Generous for a loaded 2-core machine.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ConsoleLaunchError {
    #[error("cannot run {exe}: {source}")]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("`{exe} init` failed: {stderr}")]
    InitFailed { exe: PathBuf, stderr: String },
    #[error("`init` printed no `{label} (NAME): TOKEN` line: {stdout}")]
    NoToken { label: &'static str, stdout: String },
    #[error("`serve` wrote no address to {url_file} within {limit:?} (exit status: {status:?})")]
    NoAddress { url_file: PathBuf, limit: Duration, status: Option<std::process::ExitStatus> },
}

/// The two people `init` makes, each with the token it printed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitTokens {
    pub admin_name: String,
    pub admin_token: String,
    pub approver_name: String,
    pub approver_token: String,
}

/// A person named on an `init` line: `LABEL (NAME): TOKEN`.
struct Labelled<'a> {
    name: &'a str,
    token: &'a str,
}

fn labelled<'a>(stdout: &'a str, label: &str) -> Option<Labelled<'a>> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix(label)?.strip_prefix(" (")?;
        let (name, token) = rest.split_once("): ")?;
        Some(Labelled { name, token: token.trim() })
    })
}

impl InitTokens {
    /// The tokens in what `init` printed (the one parser of that output).
    pub fn parse(stdout: &str) -> Result<InitTokens, ConsoleLaunchError> {
        let find = |label: &'static str| {
            labelled(stdout, label)
                .ok_or_else(|| ConsoleLaunchError::NoToken { label, stdout: stdout.to_owned() })
        };
        let admin = find("admin token")?;
        let approver = find("approver token")?;
        Ok(InitTokens {
            admin_name: admin.name.to_owned(),
            admin_token: admin.token.to_owned(),
            approver_name: approver.name.to_owned(),
            approver_token: approver.token.to_owned(),
        })
    }
}

/// Runs `exe init --data DATA ARGS…` (e.g. `["--tenant", "t", "--admin", "ivan"]`) and returns
/// the tokens it printed. With `REARVIEW_TEST_STORE=postgres` the tenant's metadata goes into a
/// new database of the shared test cluster ([`crate::postgres::Postgres::shared`]), which the
/// data directory then records for every later command on it.
pub fn init(exe: &Path, data: &Path, args: &[&str]) -> Result<InitTokens, ConsoleLaunchError> {
    let database;
    let mut with: Vec<&str> = args.to_vec();
    if std::env::var("REARVIEW_TEST_STORE").as_deref() == Ok("postgres") {
        database = crate::postgres::Postgres::shared().create_database();
        with.extend(["--database", database.as_str()]);
    }
    init_with(exe, data, &with, &[])
}

/// `exe init --data DATA ARGS` with `env` set and nothing added: for a caller that names the
/// backends itself (`--database`, `--blobs`) and the credentials they need.
pub fn init_with(
    exe: &Path,
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<InitTokens, ConsoleLaunchError> {
    let out = Command::new(exe)
        .arg("init")
        .arg("--data")
        .arg(data)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|source| ConsoleLaunchError::Spawn { exe: exe.to_owned(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(ConsoleLaunchError::InitFailed { exe: exe.to_owned(), stderr });
    }
    InitTokens::parse(&String::from_utf8_lossy(&out.stdout))
}

/// A data directory for replica `r` of the tenant `init` made in `data`, beside it
/// (`data-R`): the tenant's keys and `backends.json`, as an operator copies them to each
/// replica (the metadata and blobs are shared, so nothing else is). Its path.
pub fn replica_data_dir(data: &Path, r: usize) -> std::io::Result<PathBuf> {
    let to = data.with_file_name(format!("data-{r}"));
    std::fs::create_dir_all(to.join("keys"))?;
    for entry in std::fs::read_dir(data.join("keys"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join("keys").join(entry.file_name()))?;
    }
    std::fs::copy(data.join("backends.json"), to.join("backends.json"))?;
    Ok(to)
}

/// `exe serve --data DATA --listen LISTEN`, not yet started: the caller adds what it needs
/// (environment, where output goes) and spawns it, then waits with [`served_url`].
pub fn serve_command(exe: &Path, data: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg("--data").arg(data).args(["--listen", listen]);
    cmd
}

/// The address a `serve` of `data` (started after the old address was removed, see
/// [`forget_url`]) wrote once it listens; `child` is asked whether it died meanwhile.
pub fn served_url(data: &Path, child: &mut Child) -> Result<String, ConsoleLaunchError> {
    let url_file = data.join("console.url");
    let end = std::time::Instant::now() + SERVE_TIMEOUT;
    loop {
        let url = std::fs::read_to_string(&url_file).unwrap_or_default();
        if !url.trim().is_empty() {
            return Ok(url.trim().to_owned());
        }
        let status = child.try_wait().ok().flatten();
        if status.is_some() || std::time::Instant::now() >= end {
            return Err(ConsoleLaunchError::NoAddress { url_file, limit: SERVE_TIMEOUT, status });
        }
        std::thread::sleep(crate::POLL);
    }
}

/// Removes the address an earlier `serve` of `data` wrote, so [`served_url`] reads the new one.
pub fn forget_url(data: &Path) {
    let _ = std::fs::remove_file(data.join("console.url"));
}

/// A console serving `data` on a free loopback port, its output discarded; killed and reaped
/// on drop.
pub struct ServedConsole {
    pub child: Child,
    pub url: String,
}

impl ServedConsole {
    /// `serve`s `data` (already `init`ed) with `exe` on 127.0.0.1:0, with `env` set.
    pub fn start(
        exe: &Path,
        data: &Path,
        env: &[(&str, &str)],
    ) -> Result<ServedConsole, ConsoleLaunchError> {
        forget_url(data);
        let mut cmd = serve_command(exe, data, "127.0.0.1:0");
        cmd.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|source| ConsoleLaunchError::Spawn { exe: exe.to_owned(), source })?;
        match served_url(data, &mut child) {
            Ok(url) => Ok(ServedConsole { child, url }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for ServedConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_output_gives_both_tokens_whatever_the_names() {
        let out = "tenant tenant-a initialised in /d\n\
                   admin token (ivan): rvp_aaa\n\
                   approver token (rita): rvp_bbb \n";
        let t = InitTokens::parse(out).unwrap();
        assert_eq!((t.admin_name.as_str(), t.admin_token.as_str()), ("ivan", "rvp_aaa"));
        assert_eq!((t.approver_name.as_str(), t.approver_token.as_str()), ("rita", "rvp_bbb"));
    }

    #[test]
    fn init_output_without_an_approver_line_names_what_is_missing() {
        let err = InitTokens::parse("admin token (ivan): rvp_aaa\n").unwrap_err();
        assert!(err.to_string().contains("approver token (NAME): TOKEN"), "{err}");
    }
}
