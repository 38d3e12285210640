//! The local admin socket: how `rearview` (the CLI) talks to `rearviewd`.
//!
//! A Unix stream socket at the configured path (default `/run/rearview/rearview.sock`). The
//! kernel tells us who is on the other end (`SO_PEERCRED`); we serve root, the user the daemon
//! runs as (who owns all of its files anyway), and members of the configured admin group
//! (primary group or supplementary, resolved with `getgrouplist`). Anyone else gets one
//! `permission_denied` answer naming the rule, and the connection is closed: no status, no
//! counts, nothing else.
//!
//! The socket itself is 0666 (so that refused users read why); its directory is what keeps
//! others away. At bind the daemon gives that directory to the admin group (`g+rx`, see
//! [`open_dir_to_group`]): the packaged unit's `RuntimeDirectory=` makes `/run/rearview`
//! root:root 0750, which would lock the group out too.
//!
//! # Protocol
//!
//! Newline-delimited JSON, one request and one response per line, in order; a connection may
//! carry several requests.
//!
//! ```text
//! client → daemon   {"cmd":"status"}
//!                   {"cmd":"doctor"}
//!                   {"cmd":"buffer"}
//!                   {"cmd":"clips"}
//!                   {"cmd":"enroll","server":"https://…","token":"…"}
//!                   {"cmd":"apply_policy","envelope":"<signed policy envelope, JSON text>"}
//!                   {"cmd":"trigger","envelope":"<signed trigger envelope, JSON text>"}
//!                   {"cmd":"reload"}
//! daemon → client   {"ok":true,"result":<command-specific JSON>}
//!                   {"ok":false,"error":{"kind":"<ErrorKind>","message":"<what and the fix>"}}
//! ```
//!
//! `apply_policy` and `trigger` carry the same signed envelopes the console pushes; the daemon
//! verifies them exactly as it verifies pushed ones, so the socket grants no trust of its own
//! (it serves offline installs and tests). A request line is capped at [`MAX_LINE`] bytes.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Longest request line accepted (a signed policy envelope fits with room to spare).
pub const MAX_LINE: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Doctor,
    Buffer,
    Clips,
    Enroll { server: String, token: String },
    ApplyPolicy { envelope: String },
    Trigger { envelope: String },
    Reload,
}

impl Request {
    /// For logs: the command name only (enrollment tokens and envelopes stay out).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Doctor => "doctor",
            Request::Buffer => "buffer",
            Request::Clips => "clips",
            Request::Enroll { .. } => "enroll",
            Request::ApplyPolicy { .. } => "apply_policy",
            Request::Trigger { .. } => "trigger",
            Request::Reload => "reload",
        }
    }
}

/// What went wrong, as the CLI shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    PermissionDenied,
    BadRequest,
    /// The daemon could not do it now (e.g. console unreachable); trying again may work.
    Unavailable,
    /// The daemon refused the content (e.g. a policy that does not verify).
    Rejected,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AdminError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdminError {}

/// One response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AdminError>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Self { ok: true, result: Some(result), error: None }
    }

    pub fn err(error: AdminError) -> Self {
        Self { ok: false, result: None, error: Some(error) }
    }

    pub fn into_result(self) -> Result<serde_json::Value, AdminError> {
        match (self.ok, self.result, self.error) {
            (true, Some(v), _) => Ok(v),
            (true, None, _) => Ok(serde_json::Value::Null),
            (false, _, Some(e)) => Err(e),
            (false, _, None) => {
                Err(AdminError::new(ErrorKind::Internal, "daemon answered an error without detail"))
            }
        }
    }
}

/// A request received on the socket, with the way back to its client.
pub struct Incoming {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Who may use the socket.
#[derive(Clone, Debug)]
pub struct AccessRule {
    /// The configured admin group's name, and its gid when the group exists.
    admin_group: Option<(String, Option<u32>)>,
    /// The user the daemon runs as.
    daemon_uid: u32,
}

impl AccessRule {
    /// Resolves `admin_group` once; a group that does not exist admits nobody (and is logged).
    pub fn new(admin_group: Option<&str>) -> Self {
        let admin_group = admin_group.map(|name| {
            let gid = match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => {
                    tracing::warn!(
                        group = name,
                        "admin group does not exist; only root may use the CLI"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(group = name, error = %e, "cannot look up admin group");
                    None
                }
            };
            (name.to_string(), gid)
        });
        Self { admin_group, daemon_uid: nix::unistd::geteuid().as_raw() }
    }

    /// The admin group's gid, when one is configured and exists.
    pub fn admin_gid(&self) -> Option<u32> {
        self.admin_group.as_ref().and_then(|(_, gid)| *gid)
    }

    /// Whether the peer `uid`/`gid` may be served. Group membership is resolved from the user
    /// database at each connection, so adding someone to the group needs no restart.
    pub fn check(&self, uid: u32, gid: u32) -> Result<(), AdminError> {
        let groups = if self.admin_group.as_ref().is_some_and(|(_, g)| g.is_some()) {
            groups_of(uid, gid)
        } else {
            vec![gid]
        };
        decide(uid, &groups, self.daemon_uid, self.admin_group.as_ref())
    }
}

/// The rule itself, without the user database, so it can be tested with any input.
pub fn decide(
    uid: u32,
    groups: &[u32],
    daemon_uid: u32,
    admin_group: Option<&(String, Option<u32>)>,
) -> Result<(), AdminError> {
    if uid == 0 || uid == daemon_uid {
        return Ok(());
    }
    if let Some((_, Some(admin_gid))) = admin_group {
        if groups.contains(admin_gid) {
            return Ok(());
        }
    }
    let who = user_name(uid).map(|n| format!("uid {uid} ({n})")).unwrap_or(format!("uid {uid}"));
    let message = match admin_group {
        Some((name, Some(_))) => format!(
            "permission denied: {who} is not root and not in the admin group '{name}'; \
             ask an administrator to add you to '{name}' or run as root"
        ),
        Some((name, None)) => format!(
            "permission denied: {who} is not root, and the admin group '{name}' does not exist \
             on this machine; run as root"
        ),
        None => format!(
            "permission denied: {who} is not root and no admin group is configured; run as root"
        ),
    };
    Err(AdminError::new(ErrorKind::PermissionDenied, message))
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// The peer's primary group and every group the user database lists for it.
fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten();
    if let Some(user) = user {
        if let Ok(name) = std::ffi::CString::new(user.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, user.gid) {
                groups.extend(list.into_iter().map(|g| g.as_raw()));
            }
        }
    }
    groups
}

/// Binds the socket at `path` (replacing a stale one), world-connectable so that refused users
/// get our explanation rather than a bare `EACCES`; access is decided per connection. The
/// socket's directory is opened to `admin_gid` (see [`open_dir_to_group`]).
pub fn bind(path: &Path, admin_gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        if let Some(gid) = admin_gid {
            // Root can still use the socket without it: say so, but serve.
            if let Err(e) = open_dir_to_group(dir, gid) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot give the socket directory to the admin group; only root can reach the CLI socket");
            }
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Lets the admin group into the socket's directory `dir`: group `gid`, group may enter and
/// list (`g+rx`, never `g+w`). systemd makes the unit's `RuntimeDirectory=` (`/run/rearview`)
/// root:root 0750 on every start, which would keep the group out of a socket they may use;
/// only the daemon knows the group (agent.toml), so it sets it here, each time it binds.
///
/// Only a directory the daemon owns and nobody else may write is changed: a socket configured
/// into a shared place (`/tmp`) leaves that place alone.
pub fn open_dir_to_group(dir: &Path, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o002 != 0 {
        tracing::debug!(dir = %dir.display(), "socket directory not ours alone; group left as is");
        return Ok(());
    }
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    let mode = ((meta.mode() & 0o7777) | 0o050) & !0o020;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Accepts connections until the listener fails; each request goes to `tx`.
pub async fn serve(listener: UnixListener, rule: AccessRule, tx: mpsc::Sender<Incoming>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let rule = rule.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &rule, &tx).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

async fn serve_one(
    stream: UnixStream,
    rule: &AccessRule,
    tx: &mpsc::Sender<Incoming>,
) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    if let Err(denied) = rule.check(cred.uid(), cred.gid()) {
        tracing::warn!(uid = cred.uid(), pid = cred.pid(), "admin socket: refused a client");
        write_line(&mut write, &Response::err(denied)).await?;
        return write.shutdown().await;
    }
    let mut lines = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut lines).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE {
            let e = AdminError::new(ErrorKind::BadRequest, "request line too long");
            write_line(&mut write, &Response::err(e)).await?;
            return Ok(());
        }
        let response = match serde_json::from_slice::<Request>(&buf) {
            Err(e) => Response::err(AdminError::new(
                ErrorKind::BadRequest,
                format!("malformed request: {e}"),
            )),
            Ok(request) => {
                tracing::debug!(cmd = request.name(), uid = cred.uid(), "admin request");
                let (reply, rx) = oneshot::channel();
                if tx.send(Incoming { request, reply }).await.is_err() {
                    Response::err(AdminError::new(
                        ErrorKind::Unavailable,
                        "daemon is shutting down",
                    ))
                } else {
                    rx.await.unwrap_or_else(|_| {
                        Response::err(AdminError::new(ErrorKind::Internal, "request dropped"))
                    })
                }
            }
        };
        write_line(&mut write, &response).await?;
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// The CLI side: one request, one response.
pub struct Client {
    path: PathBuf,
    timeout: std::time::Duration,
}

/// How long the CLI waits for the daemon's answer (doctor's slowest probe is well within it).
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

impl Client {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), timeout: ANSWER_WITHIN }
    }

    /// The same client, waiting at most `timeout` for an answer.
    pub fn with_timeout(self, timeout: std::time::Duration) -> Self {
        Self { timeout, ..self }
    }

    /// Sends `request` and waits for its answer. Errors on the way (no daemon, refused) come
    /// back as [`AdminError`]s whose message names the fix.
    pub fn call(&self, request: &Request) -> Result<serde_json::Value, AdminError> {
        use std::io::{BufRead, Write};
        let stream = std::os::unix::net::UnixStream::connect(&self.path).map_err(|e| {
            let fix = match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    "is rearviewd running? (systemctl status rearviewd)"
                }
                io::ErrorKind::PermissionDenied => {
                    "only root and the admin group may use it; try sudo"
                }
                _ => "check the socket path in the agent config ([cli] socket)",
            };
            AdminError::new(
                ErrorKind::Unavailable,
                format!("cannot connect to the daemon at {}: {e}; {fix}", self.path.display()),
            )
        })?;
        let secs = self.timeout.as_secs();
        let io_err = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AdminError::new(
                ErrorKind::Unavailable,
                format!(
                    "the daemon did not answer within {secs} s; it may be stuck \
                     (journalctl -u rearviewd)"
                ),
            ),
            _ => AdminError::new(ErrorKind::Unavailable, format!("daemon connection failed: {e}")),
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| AdminError::new(ErrorKind::Internal, e.to_string()))?;
        line.push(b'\n');
        // A refused client may find the socket already closed by the time it writes; the
        // daemon's explanation is still waiting to be read.
        let _ = (&stream).write_all(&line);
        let mut reader = std::io::BufReader::new(&stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).map_err(io_err)?;
        if answer.is_empty() {
            return Err(AdminError::new(ErrorKind::Unavailable, "daemon closed the connection"));
        }
        let response: Response = serde_json::from_str(&answer).map_err(|e| {
            AdminError::new(ErrorKind::Internal, format!("daemon sent a malformed answer: {e}"))
        })?;
        response.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(gid: u32) -> (String, Option<u32>) {
        ("rearview-admin".into(), Some(gid))
    }

    #[test]
    fn root_and_daemon_user_are_served() {
        assert!(decide(0, &[0], 1000, Some(&group(900))).is_ok());
        assert!(decide(1000, &[1000], 1000, None).is_ok());
    }

    #[test]
    fn admin_group_member_is_served_and_others_are_refused() {
        assert!(decide(1001, &[1001, 900], 0, Some(&group(900))).is_ok());
        let e = decide(1002, &[1002, 27], 0, Some(&group(900))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(e.message.contains("rearview-admin"), "{}", e.message);
        let e = decide(1002, &[1002], 0, Some(&("missing".into(), None))).unwrap_err();
        assert!(e.message.contains("does not exist"), "{}", e.message);
        assert!(decide(1002, &[1002], 0, None).is_err());
    }

    #[test]
    fn requests_round_trip_as_documented() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"enroll","server":"s","token":"t"}"#).unwrap();
        assert_eq!(r, Request::Enroll { server: "s".into(), token: "t".into() });
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"cmd":"status"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    /// The packaged layout: a root-owned 0750 runtime directory (as systemd makes it) is given
    /// to the admin group; a world-writable one (`/tmp`-like) is left alone. Needs root (it
    /// changes a directory's group); skipped, saying so, otherwise.
    #[tokio::test]
    async fn the_socket_directory_is_opened_to_the_admin_group_only_when_it_is_the_daemons() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: not root, cannot change a directory's group");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        // Any group other than root's will do; "daemon" exists on every Debian system.
        let gid = nix::unistd::Group::from_name("daemon").unwrap().expect("group daemon").gid;
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
        let _listener = bind(&run.join("rearview.sock"), Some(gid.as_raw())).unwrap();
        let meta = std::fs::metadata(&run).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (gid.as_raw(), 0o750));

        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let _other = bind(&shared.join("rearview.sock"), Some(gid.as_raw())).unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (0, 0o1777));
    }

    #[tokio::test]
    async fn socket_serves_an_allowed_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = bind(&path, None).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, AccessRule::new(None), tx));
        tokio::spawn(async move {
            while let Some(inc) = rx.recv().await {
                let answer = serde_json::json!({ "cmd": inc.request.name() });
                let _ = inc.reply.send(Response::ok(answer));
            }
        });
        let client = Client::new(&path);
        let v = tokio::task::spawn_blocking(move || client.call(&Request::Buffer)).await.unwrap();
        assert_eq!(v.unwrap()["cmd"], "buffer");
    }
}
