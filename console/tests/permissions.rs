//! The console's data directory is private whatever the umask of whoever runs it: the real
//! `rearview-console init` and `serve` binaries, each started under umask 022 and 000 in a
//! subprocess (a umask is per process), leave the data, key and blob directories 0700 and the
//! database, its WAL and shared-memory files, the secret keys and the blobs 0600. A data
//! directory an older version left readable is tightened when served.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rearview_console::client::AdminClient;
use serde_json::{json, Value};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_rearview-console");

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `rearview-console ARGS` under `umask`.
fn under_umask(umask: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("umask {umask}; exec \"$0\" \"$@\"")).arg(BIN).args(args);
    cmd
}

/// The serve process, killed when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(umask: &str, data: &Path) -> (Serving, String) {
    let url_file = data.join("console.url");
    let _ = std::fs::remove_file(&url_file);
    let child =
        under_umask(umask, &["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let serving = Serving(child);
    for _ in 0..200 {
        if let Ok(url) = std::fs::read_to_string(&url_file) {
            if !url.trim().is_empty() {
                return (serving, url.trim().to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("console did not start serving {}", data.display());
}

/// Every directory and file under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

/// Uploads one clip of one segment through the console at `url` (so it writes a blob), as a
/// device enrolled by hand sends it: the manifest, then the segment that completes it.
async fn upload_a_clip(url: &str, admin_token: &str, approver_token: &str) {
    let admin = AdminClient::new(url, admin_token, None).unwrap();
    // The console takes clips only of a user approved for that mode (review finding 6).
    let approver = AdminClient::new(url, approver_token, None).unwrap();
    support::approve(&admin, &approver, "alice", "all-activities").await;
    let support::Enrolled { token, id: device_id, key, tenant_id, .. } =
        support::enroll_keyed(url, &admin).await;
    let now = support::now_ms();
    let bytes = vec![7u8; 4096];
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    let mut manifest = json!({
        "clip_id": "clip-p", "trigger_id": null, "mode": "all-activities", "user": "alice",
        "device_id": device_id, "start_ms": now - 1000, "end_ms": now,
        "segments": [{"sha256": sha, "size": bytes.len(), "start_ms": now - 1000, "end_ms": now}],
        "missing": [],
    });
    support::Enrolled::chains(key, &tenant_id, &device_id).sign_manifest(&mut manifest);
    let http = reqwest::Client::new();
    let status = http
        .put(format!("{url}/api/v1/device/clips/clip-p"))
        .bearer_auth(&token)
        .json(&manifest)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let ack: Value = http
        .put(format!("{url}/api/v1/device/segments/{sha}"))
        .bearer_auth(&token)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack["completed_clips"], json!(["clip-p"]), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_whatever_the_umask() {
    for umask in ["022", "000"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("console");
        let init =
            under_umask(umask, &["init", "--data", data.to_str().unwrap()]).output().unwrap();
        assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
        let stdout = String::from_utf8_lossy(&init.stdout);
        let tokens = rearview_testkit::console::InitTokens::parse(&stdout).unwrap();
        let (admin_token, approver_token) = (tokens.admin_token, tokens.approver_token);

        let (_serving, url) = serve(umask, &data);
        upload_a_clip(&url, &admin_token, &approver_token).await;

        let want = |path: &Path| -> u32 {
            let name = path.file_name().unwrap().to_str().unwrap();
            match name {
                _ if path.is_dir() => 0o700,
                // Public halves, in the 0700 keys directory.
                "signing.pub" | "sealing.pub" => 0o644,
                // The address serve writes for the CLI; not secret.
                "console.url" => mode(path),
                _ => 0o600,
            }
        };
        assert_eq!(mode(&data), 0o700, "umask {umask}: {}", data.display());
        let mut all = Vec::new();
        walk(&data, &mut all);
        for side in ["console.db", "console.db-wal", "console.db-shm", "keys", "blobs"] {
            assert!(all.contains(&data.join(side)), "umask {umask}: no {side}: {all:?}");
        }
        assert!(
            all.iter().any(|p| p.starts_with(data.join("blobs")) && p.is_file()),
            "umask {umask}: no blob written: {all:?}"
        );
        for path in &all {
            assert_eq!(
                mode(path),
                want(path),
                "umask {umask}: {:o} {}",
                mode(path),
                path.display()
            );
        }
    }
}

/// What an older console left behind (0755 directory, 0644 database) is made private when the
/// console opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readable_data_directory_left_by_an_older_console_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let init = under_umask("022", &["init", "--data", data.to_str().unwrap()]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    for (path, loose) in
        [(data.clone(), 0o755), (data.join("console.db"), 0o644), (data.join("blobs"), 0o755)]
    {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    let (_serving, _url) = serve("022", &data);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("console.db")), 0o600);
    assert_eq!(mode(&data.join("blobs")), 0o700);
    assert_eq!(mode(&data.join("console.db-wal")), 0o600);
}
