//! The blob store on both backends, against the real things: a temp directory, and a real
//! S3-speaking server in its own process (`moto_server`, started by the test kit) reached over
//! HTTP with signed requests. Put, get, exists and the exact layout; an empty blob; publishing
//! again; a missing local file; names that could leave the layout; 20 MB through the multipart
//! path; a paused server (every call fails, bounded, as a retryable 503, and works again once
//! resumed); a bucket that does not exist.
//!
//! End to end: the console binary serving with its blobs in a bucket ingests a device's clip
//! (the segments land in the bucket, nothing in DATA), answers an upload 503 with Retry-After
//! while the bucket is paused (and `/healthz` names the bucket), takes the same upload once it
//! is back, and `clip export --evidence` reads the clip back from the bucket into a package
//! that verifies offline.

// This binary uses a few of the evidence world's helpers.
#[allow(dead_code)]
#[path = "support/evidence.rs"]
mod evidence_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use rand::RngCore;
use rearview_console::blobs::{BlobLocation, Blobs, PART_SIZE, SINGLE_PUT_MAX};
use rearview_console::ConsoleError;
use rearview_evidence::sha256_hex;
use rearview_testkit::s3::S3Server;
use serde_json::{json, Value};

const DEVICE: &str = "dev-00aa11bb22cc";
const KEY_ID: &str = "rearview-test";
const SECRET: &str = "rearview-test";
/// Requests to a paused server in these tests give up after this (the console's own is
/// `blobs::REQUEST_TIMEOUT`), so the failure tests end soon.
const TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A call that has not ended after this is hung: the bounds of `blobs` are broken. Far above
/// anything they allow, so a slow machine never trips it.
const HANG: Duration = Duration::from_secs(180);

/// A bucket name no other test (or earlier run against the same server) uses.
fn bucket(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("rv-{test}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn s3_location(server: &S3Server, bucket: &str, prefix: &str) -> BlobLocation {
    BlobLocation::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
    }
}

/// A blob store of either kind and the data directory it lives in (kept alive with it).
struct Backend {
    data: tempfile::TempDir,
    blobs: Blobs,
    /// The bucket, for S3.
    bucket: Option<String>,
}

fn files() -> Backend {
    let data = tempfile::tempdir().unwrap();
    let loc = BlobLocation::parse("files", data.path()).unwrap();
    let blobs = Blobs::open(&loc, data.path()).unwrap();
    Backend { data, blobs, bucket: None }
}

/// An S3 store on `server`, in a new bucket, under `prefix`.
fn s3_on(server: &S3Server, test: &str, prefix: &str) -> Backend {
    let name = bucket(test);
    server.create_bucket(&name);
    let data = tempfile::tempdir().unwrap();
    let loc = s3_location(server, &name, prefix);
    let blobs =
        Blobs::open_s3_with(&loc, data.path(), KEY_ID, SECRET, TEST_REQUEST_TIMEOUT).unwrap();
    Backend { data, blobs, bucket: Some(name) }
}

fn s3(test: &str, prefix: &str) -> Backend {
    s3_on(S3Server::shared(), test, prefix)
}

/// Random bytes (nothing compresses or repeats by accident) and their name.
fn blob(len: usize) -> (String, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    (sha256_hex(&bytes), bytes)
}

/// `bytes` written as an upload in flight: a `.part` file in the store's incoming directory.
fn staged(blobs: &Blobs, bytes: &[u8]) -> PathBuf {
    let dir = blobs.incoming_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.part", sha256_hex(&rand::random::<[u8; 16]>())));
    std::fs::write(&file, bytes).unwrap();
    file
}

async fn put(blobs: &Blobs, sha: &str, bytes: &[u8]) -> Result<(), ConsoleError> {
    let file = staged(blobs, bytes);
    let done = blobs.put_file(DEVICE, sha, &file).await;
    assert!(!file.exists(), "put_file consumes its file, whatever the outcome ({done:?})");
    done
}

/// The keys in `bucket` and their sizes, by a raw unsigned ListObjectsV2 (not through the
/// client under test).
async fn keys_and_sizes(server: &S3Server, bucket: &str) -> Vec<(String, usize)> {
    let url = format!("{}/{bucket}?list-type=2", server.endpoint());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let field = |entry: &str, tag: &str| -> String {
        let open = format!("<{tag}>");
        let rest = entry.split_once(&open).unwrap_or_else(|| panic!("no {tag} in {entry}")).1;
        rest.split_once(&format!("</{tag}>")).unwrap().0.to_owned()
    };
    text.split("<Contents>")
        .skip(1)
        .map(|entry| (field(entry, "Key"), field(entry, "Size").parse().unwrap()))
        .collect()
}

async fn keys(server: &S3Server, bucket: &str) -> Vec<String> {
    keys_and_sizes(server, bucket).await.into_iter().map(|(key, _)| key).collect()
}

/// The ETag S3 gives `key` (a multipart object's ends in `-<parts>`), by a raw HEAD.
async fn etag(server: &S3Server, bucket: &str, key: &str) -> String {
    let r = reqwest::Client::new()
        .head(format!("{}/{bucket}/{key}", server.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD {key}");
    r.headers()["etag"].to_str().unwrap().trim_matches('"').to_owned()
}

/// `f`'s output; panics when it has not ended after [`HANG`].
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let hung = |_| panic!("{what} still waiting after {HANG:?}");
    tokio::time::timeout(HANG, f).await.unwrap_or_else(hung)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_503(e: &ConsoleError) -> bool {
    e.is_retryable() && e.status() == StatusCode::SERVICE_UNAVAILABLE
}

/// What both backends must do with one blob: stored, read back whole and by its head, known to
/// exist; another name is absent everywhere.
async fn round_trip(blobs: &Blobs) -> (String, Vec<u8>) {
    let (sha, bytes) = blob(4096 + 17);
    let (absent, _) = blob(10);
    assert!(!blobs.exists(DEVICE, &sha).await.unwrap());
    assert_eq!(blobs.get(DEVICE, &sha).await.unwrap(), None);
    put(blobs, &sha, &bytes).await.unwrap();
    assert_eq!(blobs.get(DEVICE, &sha).await.unwrap().as_deref(), Some(&bytes[..]));
    assert!(blobs.exists(DEVICE, &sha).await.unwrap());
    let blocking = blobs.clone();
    let sha2 = sha.clone();
    let (whole, head) = tokio::task::spawn_blocking(move || {
        (blocking.get_blocking(DEVICE, &sha2).unwrap(), blocking.head_blocking(DEVICE, &sha2, 100))
    })
    .await
    .unwrap();
    assert_eq!(whole.as_deref(), Some(&bytes[..]));
    assert_eq!(head.unwrap().as_deref(), Some(&bytes[..100]));
    assert_eq!(blobs.get(DEVICE, &absent).await.unwrap(), None);
    assert!(!blobs.exists(DEVICE, &absent).await.unwrap());
    assert!(blobs.health().await.is_ok());
    (sha, bytes)
}

/// Files: `DIR/<device>/<sha[0..2]>/<sha>`, 0600 in 0700 directories; nothing left in
/// `.incoming`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_put_get_exists_and_their_layout() {
    let b = files();
    let (sha, bytes) = round_trip(&b.blobs).await;
    let dir = b.data.path().join("blobs");
    let path = dir.join(DEVICE).join(&sha[..2]).join(&sha);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(b.blobs.address(DEVICE, &sha), path.display().to_string());
    assert_eq!(mode(&path), 0o600);
    for d in [&dir, &dir.join(DEVICE), &dir.join(DEVICE).join(&sha[..2])] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    assert_eq!(std::fs::read_dir(b.blobs.incoming_dir()).unwrap().count(), 0);
    // A head longer than the blob is the whole blob.
    let head = b.blobs.head_blocking(DEVICE, &sha, bytes.len() * 2).unwrap();
    assert_eq!(head.as_deref(), Some(&bytes[..]));
}

/// S3: exactly one object, `PREFIX/<device>/<sha[0..2]>/<sha>`, holding the bytes; uploads in
/// flight were local (DATA/incoming), and none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_put_get_exists_and_its_layout() {
    let server = S3Server::shared();
    for prefix in ["rv/prod", ""] {
        let b = s3("layout", prefix);
        let (sha, bytes) = round_trip(&b.blobs).await;
        let bucket = b.bucket.as_deref().unwrap();
        let key = format!("{DEVICE}/{}/{sha}", &sha[..2]);
        let key = if prefix.is_empty() { key } else { format!("{prefix}/{key}") };
        let listed = keys_and_sizes(server, bucket).await;
        assert_eq!(listed, [(key.clone(), bytes.len())], "one object, of the blob's size");
        assert_eq!(b.blobs.address(DEVICE, &sha), format!("s3://{bucket}/{key}"));
        assert_eq!(b.blobs.incoming_dir(), b.data.path().join("incoming"));
        assert_eq!(std::fs::read_dir(b.blobs.incoming_dir()).unwrap().count(), 0);
        let head = b.blobs.head_blocking(DEVICE, &sha, bytes.len() * 2).unwrap();
        assert_eq!(head.as_deref(), Some(&bytes[..]), "a head longer than the blob: all of it");
    }
}

/// The same bytes published again: Ok, and still one blob holding them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_the_same_bytes_again_is_harmless() {
    let server = S3Server::shared();
    for b in [files(), s3("again", "p")] {
        let (sha, bytes) = blob(1000);
        put(&b.blobs, &sha, &bytes).await.unwrap();
        put(&b.blobs, &sha, &bytes).await.unwrap();
        assert_eq!(b.blobs.get(DEVICE, &sha).await.unwrap(), Some(bytes));
        match &b.bucket {
            Some(bucket) => assert_eq!(keys(server, bucket).await.len(), 1),
            None => {
                let dir = b.data.path().join("blobs").join(DEVICE).join(&sha[..2]);
                assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
            }
        }
    }
}

/// An empty blob (nothing to range over: S3 refuses a range of it) is stored, read back and
/// has an empty head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_blob_reads_back_empty_whole_and_by_its_head() {
    for b in [files(), s3("empty", "p")] {
        let (sha, bytes) = blob(0);
        put(&b.blobs, &sha, &bytes).await.unwrap();
        assert_eq!(b.blobs.get(DEVICE, &sha).await.unwrap(), Some(Vec::new()));
        let blocking = b.blobs.clone();
        let head = tokio::task::spawn_blocking(move || blocking.head_blocking(DEVICE, &sha, 64));
        assert_eq!(head.await.unwrap().unwrap(), Some(Vec::new()));
    }
}

/// A put whose local file is not there: an error naming the file, retryable (the device sends
/// again), nothing stored, and the store goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_file_is_missing_fails_cleanly() {
    for b in [files(), s3("missing-file", "p")] {
        let (sha, bytes) = blob(300);
        let gone = b.blobs.incoming_dir().join("never-written.part");
        let e = b.blobs.put_file(DEVICE, &sha, &gone).await.unwrap_err();
        assert!(matches!(e, ConsoleError::Io { .. }), "{e:?}");
        assert!(is_503(&e), "{e:?}");
        assert!(e.to_string().contains("never-written.part"), "{e}");
        assert!(!b.blobs.exists(DEVICE, &sha).await.unwrap());
        put(&b.blobs, &sha, &bytes).await.unwrap();
        assert_eq!(b.blobs.get(DEVICE, &sha).await.unwrap(), Some(bytes));
    }
}

/// A device id or name that could make a path or key outside the layout is refused (400),
/// before anything is written; the file handed over is consumed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_could_leave_the_layout_are_refused() {
    let server = S3Server::shared();
    for b in [files(), s3("names", "p")] {
        let (sha, bytes) = blob(64);
        for (device, name) in [("../evil", sha.as_str()), ("a/b", &sha), (".", &sha)]
            .into_iter()
            .chain([(DEVICE, "../../etc/passwd"), (DEVICE, &sha.to_uppercase()), (DEVICE, "ab")])
        {
            let file = staged(&b.blobs, &bytes);
            let e = b.blobs.put_file(device, name, &file).await.unwrap_err();
            assert!(matches!(e, ConsoleError::Invalid(_)), "{device} {name}: {e:?}");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(!file.exists());
            assert!(matches!(b.blobs.get(device, name).await, Err(ConsoleError::Invalid(_))));
        }
        match &b.bucket {
            Some(bucket) => assert!(keys(server, bucket).await.is_empty()),
            None => {
                let root = b.data.path();
                let mut left: Vec<_> = std::fs::read_dir(root.join("blobs"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                left.sort();
                assert_eq!(left, [".incoming"], "nothing but the upload directory");
                assert!(!root.join("evil").exists());
            }
        }
    }
}

/// 20 MB, above the one-PUT size: read back byte for byte; in S3 it went up in parts (the
/// object's ETag counts them) and is one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_blob_round_trips() {
    let server = S3Server::shared();
    let len = 20 * 1024 * 1024;
    assert!(len as u64 > SINGLE_PUT_MAX);
    for b in [files(), s3("large", "big")] {
        let (sha, bytes) = blob(len);
        put(&b.blobs, &sha, &bytes).await.unwrap();
        let got = b.blobs.get(DEVICE, &sha).await.unwrap().unwrap();
        assert!(got == bytes, "20 MB read back differ");
        if let Some(bucket) = &b.bucket {
            let key = format!("big/{DEVICE}/{}/{sha}", &sha[..2]);
            assert_eq!(keys(server, bucket).await, std::slice::from_ref(&key));
            let parts = len.div_ceil(PART_SIZE);
            let tag = etag(server, bucket, &key).await;
            assert!(tag.ends_with(&format!("-{parts}")), "multipart ETag of {parts} parts: {tag}");
        }
    }
}

/// A paused server (it accepts connections and answers nothing): put, get, exists and the
/// blocking get each fail within their bounds as a retryable 503 naming the object; health
/// names the bucket. Resumed: what was stored is still there, a failed put left the blob absent
/// or whole, never partial, and the same put succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_fails_bounded_with_a_503_and_works_again() {
    let server = S3Server::start().unwrap();
    let b = s3_on(&server, "paused", "p");
    let bucket = b.bucket.clone().unwrap();
    let (kept, kept_bytes) = blob(2000);
    put(&b.blobs, &kept, &kept_bytes).await.unwrap();
    let (sha, bytes) = blob(3000);

    server.pause();
    let e = bounded("put", put(&b.blobs, &sha, &bytes)).await.unwrap_err();
    assert!(matches!(e, ConsoleError::BlobsUnavailable { .. }) && is_503(&e), "{e:?}");
    assert!(e.to_string().contains(&format!("s3://{bucket}/p/{DEVICE}/")), "{e}");
    let e = bounded("get", b.blobs.get(DEVICE, &kept)).await.unwrap_err();
    assert!(matches!(e, ConsoleError::BlobsUnavailable { .. }) && is_503(&e), "{e:?}");
    let e = bounded("exists", b.blobs.exists(DEVICE, &kept)).await.unwrap_err();
    assert!(is_503(&e), "{e:?}");
    let (blocking, k) = (b.blobs.clone(), kept.clone());
    let read = tokio::task::spawn_blocking(move || blocking.get_blocking(DEVICE, &k));
    let e = bounded("get_blocking", read).await.unwrap().unwrap_err();
    assert!(is_503(&e), "{e:?}");
    let (blocking, k) = (b.blobs.clone(), kept.clone());
    let read = tokio::task::spawn_blocking(move || blocking.head_blocking(DEVICE, &k, 64));
    let e = bounded("head_blocking", read).await.unwrap().unwrap_err();
    assert!(matches!(e, ConsoleError::BlobsUnavailable { .. }) && is_503(&e), "{e:?}");
    let why = bounded("health", b.blobs.health()).await.unwrap_err();
    assert!(why.starts_with("bucket unreachable: ") && why.contains(&bucket), "{why}");

    server.resume();
    assert_eq!(b.blobs.health().await, Ok(()));
    assert_eq!(b.blobs.get(DEVICE, &kept).await.unwrap(), Some(kept_bytes));
    // The paused server may still act on the PUT it had queued: whole, or not at all.
    if let Some(got) = b.blobs.get(DEVICE, &sha).await.unwrap() {
        assert!(got == bytes, "a failed put left a partial blob");
    }
    put(&b.blobs, &sha, &bytes).await.unwrap();
    assert_eq!(b.blobs.get(DEVICE, &sha).await.unwrap(), Some(bytes));
}

/// A bucket that does not exist: unhealthy, naming it; a put is a retryable 503 (create the
/// bucket and the device's next try works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_unhealthy_and_refuses_puts_with_a_503() {
    let server = S3Server::shared();
    let name = bucket("never-made");
    let data = tempfile::tempdir().unwrap();
    let loc = s3_location(server, &name, "p");
    let blobs =
        Blobs::open_s3_with(&loc, data.path(), KEY_ID, SECRET, TEST_REQUEST_TIMEOUT).unwrap();
    let why = blobs.health().await.unwrap_err();
    assert!(why.starts_with("bucket unreachable: ") && why.contains(&name), "{why}");
    let (sha, bytes) = blob(100);
    let e = put(&blobs, &sha, &bytes).await.unwrap_err();
    assert!(matches!(e, ConsoleError::BlobsUnavailable { .. }) && is_503(&e), "{e:?}");
    server.create_bucket(&name);
    assert_eq!(blobs.health().await, Ok(()));
    put(&blobs, &sha, &bytes).await.unwrap();
}

/// The directory backend is healthy while its directory is there.
#[tokio::test]
async fn the_files_backend_is_unhealthy_without_its_directory() {
    let b = files();
    assert_eq!(b.blobs.health().await, Ok(()));
    std::fs::remove_dir_all(b.data.path().join("blobs")).unwrap();
    let why = b.blobs.health().await.unwrap_err();
    assert!(why.contains("blobs"), "{why}");
}

/// `rearview-console clip export --evidence DIR CLIP --data DATA --token T --blobs LOC`, with
/// `env` set.
fn export(
    w: &evidence_support::World,
    dir: &Path,
    token: &str,
    blobs: &str,
    env: &[(String, String)],
) -> std::process::Output {
    std::process::Command::new(evidence_support::BIN)
        .args(["clip", "export", "--evidence"])
        .arg(dir)
        .arg(evidence_support::CLIP)
        .arg("--data")
        .arg(w.data())
        .args(["--token", token, "--blobs", blobs])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("REARVIEW_BLOBS")
        .output()
        .unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The console binary with `--blobs` in a bucket (from $REARVIEW_BLOBS, credentials and
/// endpoint from the AWS variables): a device's clip is ingested into the bucket; while the
/// bucket is paused an upload answers 503 with Retry-After and /healthz is 503 naming the
/// bucket; after, the same upload is taken, the clip completes (its record reads each
/// segment's sealed header from the bucket), and `clip export --evidence` reads it back into a
/// package that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_on_s3_ingests_refuses_while_paused_and_exports_from_the_bucket() {
    let server = S3Server::start().unwrap();
    let name = bucket("console");
    server.create_bucket(&name);
    let location = format!("s3://{name}/tenant-a");
    let env = server.env();
    let mut serve_env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serve_env.push(("REARVIEW_BLOBS", &location));
    let w = evidence_support::world_with(&serve_env).await;
    let http = reqwest::Client::new();
    let health = || http.get(format!("{}/healthz", w.console.url)).send();
    let r = health().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "ok".to_owned()));

    let clip = evidence_support::make_clip(&w);
    evidence_support::put_manifest(&w, &clip.manifest).await;
    let [first, second, third] = <[Vec<u8>; 3]>::try_from(clip.segments.clone()).unwrap();
    let r = evidence_support::put_segment(&w, first).await;
    assert_eq!(r.status(), 200);

    server.pause();
    let r = evidence_support::put_segment(&w, second.clone()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("blob store unavailable") && error.contains(&name), "{error}");
    let r = health().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let why = r.text().await.unwrap();
    assert!(why.contains("bucket unreachable: ") && why.contains(&name), "{why}");

    server.resume();
    let r = evidence_support::put_segment(&w, second).await;
    assert_eq!(r.status(), 200);
    let r = evidence_support::put_segment(&w, third).await;
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["completed_clips"], json!([evidence_support::CLIP]));
    let r = health().await.unwrap();
    assert_eq!(r.status(), 200);

    // Every segment is in the bucket under the documented key, and none in the data directory.
    let mut want: Vec<String> = clip
        .segments
        .iter()
        .map(|s| {
            let sha = sha256_hex(s);
            format!("tenant-a/{}/{}/{sha}", w.device_id, &sha[..2])
        })
        .collect();
    want.sort();
    let mut got = keys(&server, &name).await;
    got.sort();
    assert_eq!(got, want);
    assert_eq!(files_under(&w.data().join("blobs")), Vec::<PathBuf>::new());
    assert_eq!(files_under(&w.data().join("incoming")), Vec::<PathBuf>::new());

    let out = tempfile::tempdir().unwrap();
    let pack = out.path().join("package");
    let exported = export(&w, &pack, &w.investigator_token, &location, &env);
    let summary = evidence_support::exported(&exported);
    assert_eq!(summary["segments"], clip.segments.len());
    let report = rearview_verify::verify(&rearview_verify::Options {
        dir: pack.clone(),
        tenant_key: None,
        console_key: None,
    });
    assert!(report.ok(), "{}", report.text());
    for sealed in &clip.segments {
        let sha = sha256_hex(sealed);
        let held = files_under(&pack).into_iter().any(|f| std::fs::read(&f).unwrap() == *sealed);
        assert!(held, "segment {sha} is in the package as received");
    }

    // With the bucket gone quiet, the export fails naming it rather than hanging.
    server.pause();
    let again = out.path().join("again");
    let failed = export(&w, &again, &w.investigator_token, &location, &env);
    server.resume();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("blob store unavailable") && stderr.contains(&name), "{stderr}");
}
