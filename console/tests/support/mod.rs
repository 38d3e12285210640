//! What the console's test binaries share: a tenant initialised in a temp directory and served
//! on a free loopback port.

use rearview_console::{InitOutput, Server, ServerConfig, ServerHandle};

/// `init` of tenant `tenant-a` (first admin `ivan`) and `serve` on 127.0.0.1:0; returns the
/// directory (keep it alive), the server and the admin token.
#[allow(dead_code)]
pub async fn start() -> (tempfile::TempDir, ServerHandle, String) {
    let (dir, server, out) = start_with("approver").await;
    (dir, server, out.admin_token)
}

/// As [`start`], with the first approver named `approver`; returns all `init` printed (both
/// tokens).
pub async fn start_with(approver: &str) -> (tempfile::TempDir, ServerHandle, InitOutput) {
    let dir = tempfile::tempdir().unwrap();
    let out =
        rearview_console::init_with_approver(dir.path(), "tenant-a", "ivan", approver).unwrap();
    let server = Server::start(ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    (dir, server, out)
}

/// The token on the line `init` labels `label` (`admin token (NAME): rvp_…`).
#[allow(dead_code)]
pub fn labelled_token(init_stdout: &str, label: &str) -> String {
    let line = init_stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in {init_stdout}"));
    line.rsplit(' ').next().unwrap().trim().to_owned()
}

/// `rearview-console serve --listen 127.0.0.1:0 --data DATA` run as the binary `exe`; the child
/// (kill it when done) and the URL it printed.
#[allow(dead_code)]
pub fn serve_binary(exe: &str, data: &std::path::Path) -> (std::process::Child, String) {
    let mut serve = std::process::Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(serve.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("serve started").to_owned();
    (serve, url)
}
