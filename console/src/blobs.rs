//! Where the console keeps sealed segments ("blobs"): a local directory (the default) or any
//! S3-compatible bucket, behind one type, [`Blobs`]. Which segments are stored is the metadata
//! store's fact (its `segments` table); this module only holds their bytes.
//!
//! # Where ([`BlobLocation`], `serve --blobs`, `$REARVIEW_BLOBS`)
//!
//! ```text
//! files                                        DATA/blobs (the default)
//! file:///ABSOLUTE/DIR                          that directory
//! s3://BUCKET[/PREFIX][?endpoint=URL&region=R]  a bucket; endpoint and region override the
//!                                              environment's (any S3-compatible server)
//! ```
//!
//! A location never holds a secret (one with `user:password@` is refused). S3 takes its
//! credentials, and its endpoint and region unless the location names them, from the standard
//! AWS variables, as `object_store`'s `AmazonS3Builder::from_env` reads them:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` (web identity, container and instance credentials as
//! well). A plain `http://` endpoint from the environment needs `AWS_ALLOW_HTTP=true`; one written
//! into the location is its own consent.
//!
//! # Layout
//!
//! ```text
//! files   DIR/<device_id>/<sha256[0..2]>/<sha256>      sealed segment bytes, exactly as uploaded;
//!                                                     0600 files in 0700 directories
//!         DIR/.incoming/<random>.part                  an upload in flight (same file system)
//! s3      BUCKET: PREFIX/<device_id>/<sha256[0..2]>/<sha256>   the same bytes, one object each
//!                                                     (no PREFIX: <device_id>/… at the top)
//!         DATA/incoming/<random>.part                  an upload in flight, local (0700/0600)
//! ```
//!
//! Segments are stored per device so one device can never learn, by the console answering
//! "already have it", what another device uploaded. Device ids and names are checked before a
//! path or key is made of them ([`is_safe_device_id`], [`crate::store::is_sha256_hex`]): no
//! `/`, no `..`, nothing outside the layout.
//!
//! # Publishing: never visible partially, idempotent
//!
//! An upload is streamed into a `.part` file in [`Blobs::incoming_dir`] while it is hashed (never
//! held in memory) and fsynced; only when its bytes hash to its name is it published
//! ([`Blobs::put_file`]), and only then recorded in `segments`.
//!
//! * files: the part file is renamed into place (one file system, so the rename is atomic) and
//!   the directory is fsynced: a reader sees no blob or the whole one, also after a crash.
//! * s3: one PUT up to [`SINGLE_PUT_MAX`] bytes, else a multipart upload of [`PART_SIZE`] parts,
//!   one at a time from the file, completed after the last one. S3 makes an object visible only
//!   whole, when its PUT or its completion succeeds. A multipart upload that fails is aborted; one
//!   a crash cut off stays invisible (a bucket lifecycle rule "abort incomplete multipart uploads
//!   after a day" removes its parts).
//!
//! A name always holds the same bytes (it is their hash), so publishing again is harmless: the
//! same bytes replace the same bytes. A crash leaves either nothing or a complete blob (a blob
//! without a `segments` row is simply written again by the next upload of the same hash), plus
//! at most some `.part` files, which `serve` removes when it starts. `put_file` consumes its file
//! whether it succeeds or not; the device still holds the segment and sends it again.
//!
//! # Failures: 503, and the device keeps its spool
//!
//! Any failure of the bucket (unreachable, timed out, refused, missing) is
//! [`ConsoleError::BlobsUnavailable`], which the API answers 503 with `Retry-After`: a device
//! keeps the segment in its spool and sends it again later. Nothing waits unbounded: a connection
//! gets [`CONNECT_TIMEOUT`], a request [`REQUEST_TIMEOUT`], quick failures are retried within
//! [`RETRY_WINDOW`], [`Blobs::health`] (`/healthz`) gives the bucket [`HEALTH_TIMEOUT`] to
//! answer, and a segment's head (read when a clip completes, inside the store's write
//! transaction, which other writes wait for) [`HEAD_TIMEOUT`]. Local failures are
//! [`ConsoleError::Io`] (also a retryable 503).
//!
//! # Threads
//!
//! The S3 client runs on a small runtime of its own ([`S3_THREADS`] threads), owned by the
//! [`Blobs`] and shut down with its last clone. Async calls run there and are awaited from the
//! caller's runtime, whichever it is. The blocking calls ([`Blobs::get_blocking`],
//! [`Blobs::head_blocking`], for `clip export` and for the store's transaction that signs a clip
//! record) hand the request to that runtime and wait on a channel: they work on any thread, with
//! a runtime or without; on a worker of a multi-thread runtime they wait inside
//! `tokio::task::block_in_place`, so that worker's other tasks move elsewhere meanwhile. The local
//! directory is plain file I/O: on tokio's blocking pool for the async calls, on the calling
//! thread for the blocking ones.

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};

use crate::error::ConsoleError;
use crate::private;
use crate::store::is_sha256_hex;

/// How long connecting to the bucket's endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request to the bucket may take, its body included (a 64 MB segment part at a
/// few MB/s still fits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Failures quick enough to be retried (a refused connection, a 5xx) are, within this long from
/// the first attempt; a request that timed out is not tried again after it.
pub const RETRY_WINDOW: Duration = Duration::from_secs(10);
/// How long `/healthz` waits for the bucket.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Blobs::head_blocking`] waits for the bucket: the clip record reads the heads
/// inside the store's write transaction, which other writes wait for.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Blobs up to this size go up in one PUT (read into memory once); larger ones in parts.
pub const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;
/// The part size of a multipart upload (S3 wants at least 5 MiB for every part but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Threads of the S3 client's runtime (signing hashes the payload, so more than one).
pub const S3_THREADS: usize = 2;
/// Retries of a request that failed quickly, within [`RETRY_WINDOW`].
const RETRIES: usize = 3;
/// The key under PREFIX that [`Blobs::health`] lists (it names no blob: device ids never start
/// with a dot).
const HEALTH_PROBE: &str = ".health-probe";

/// Where blobs live: parsed from `files` (DATA/blobs), `file:///abs/path`, or
/// `s3://bucket/prefix` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlobLocation {
    /// A local directory (absolute, or relative to where the console runs).
    Files(PathBuf),
    /// A bucket of an S3-compatible store.
    S3 {
        bucket: String,
        /// Key prefix without leading or trailing `/` (empty: keys start at the top).
        prefix: String,
        /// The store's URL (`http://127.0.0.1:9000`); `None`: `AWS_ENDPOINT_URL`, else AWS.
        endpoint: Option<String>,
        /// `None`: `AWS_REGION`, else `us-east-1`.
        region: Option<String>,
    },
}

impl BlobLocation {
    /// Reads a location (`--blobs`); `files` means `data/blobs`. Refuses, naming what is wrong,
    /// anything else than the forms in the module docs, and credentials in the text.
    pub fn parse(s: &str, data: &Path) -> Result<BlobLocation, ConsoleError> {
        let s = s.trim();
        if s == "files" {
            return Ok(BlobLocation::Files(data.join("blobs")));
        }
        let shown = redacted(s);
        let refuse = |why: &str| {
            ConsoleError::Config(format!(
                "blob location {shown:?}: {why}; give 'files', 'file:///ABSOLUTE/DIR' or \
                 's3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]'"
            ))
        };
        let url = url::Url::parse(s).map_err(|e| refuse(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "credentials never go into a location: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the console's environment",
            ));
        }
        if url.fragment().is_some() {
            return Err(refuse("a location has no #fragment"));
        }
        match url.scheme() {
            "file" => {
                if url.query().is_some() {
                    return Err(refuse("a file location takes no ?options"));
                }
                let dir = url
                    .to_file_path()
                    .map_err(|()| refuse("not an absolute local path (file:///DIR)"))?;
                Ok(BlobLocation::Files(dir))
            }
            "s3" => {
                if url.port().is_some() {
                    return Err(refuse("a bucket has no port: put the server in ?endpoint="));
                }
                let bucket = url.host_str().unwrap_or_default().to_owned();
                check_bucket(&bucket).map_err(|why| refuse(&why))?;
                // From the text as written: the URL parser would resolve `a/../b` to `b`.
                let written = s.split_once("://").map_or("", |(_, rest)| rest);
                let written = written.split(['?', '#']).next().unwrap_or_default();
                let prefix = written.split_once('/').map_or("", |(_, path)| path);
                let prefix = prefix.trim_matches('/').to_owned();
                check_prefix(&prefix).map_err(|why| refuse(&why))?;
                let (mut endpoint, mut region) = (None, None);
                for (key, value) in url.query_pairs() {
                    let slot = match key.as_ref() {
                        "endpoint" => {
                            check_endpoint(&value).map_err(|why| refuse(&why))?;
                            &mut endpoint
                        }
                        "region" => {
                            check_region(&value).map_err(|why| refuse(&why))?;
                            &mut region
                        }
                        other => {
                            return Err(refuse(&format!(
                                "unknown option {other:?} (known: endpoint, region)"
                            )))
                        }
                    };
                    if slot.replace(value.into_owned()).is_some() {
                        return Err(refuse(&format!("{key} given twice")));
                    }
                }
                Ok(BlobLocation::S3 { bucket, prefix, endpoint, region })
            }
            other => Err(refuse(&format!("unknown scheme {other:?}"))),
        }
    }

    /// The text form parse() reads back (no secrets in it, ever): `file:///…` for a directory
    /// (made absolute), `s3://bucket/prefix?…` for a bucket.
    pub fn to_url(&self) -> String {
        match self {
            BlobLocation::Files(dir) => {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                url::Url::from_file_path(&dir)
                    .map(String::from)
                    .unwrap_or_else(|()| format!("file://{}", dir.display()))
            }
            BlobLocation::S3 { bucket, prefix, endpoint, region } => {
                let mut text = format!("s3://{bucket}");
                if !prefix.is_empty() {
                    text.push('/');
                    text.push_str(prefix);
                }
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(endpoint) = endpoint {
                    query.append_pair("endpoint", endpoint);
                }
                if let Some(region) = region {
                    query.append_pair("region", region);
                }
                let query = query.finish();
                if !query.is_empty() {
                    text.push('?');
                    text.push_str(&query);
                }
                text
            }
        }
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_url())
    }
}

/// `text` as a refusal may quote it: without a `user:password@` and without the `?options`
/// (the reason names the option it refuses), so a secret typed into a location is not echoed
/// into a log.
fn redacted(text: &str) -> String {
    let (head, query) = match text.split_once('?') {
        Some((head, _)) => (head, "?…"),
        None => (text, ""),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://…@{host}{path}"),
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    format!("{head}{query}")
}

/// S3's bucket naming rules (3–63 lowercase letters, digits, `.` and `-`, starting and ending
/// with a letter or digit), which every S3-compatible store accepts.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        && edge_ok(bucket.bytes().next())
        && edge_ok(bucket.bytes().last());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket {bucket:?} is not a bucket name (3-63 lowercase letters, digits, '.', '-')"
        ))
    }
}

/// A prefix is `/`-separated parts of S3's safe characters, none empty, `.` or `..`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
    for part in prefix.split('/') {
        if part.is_empty() || part == "." || part == ".." || !part.bytes().all(safe) {
            return Err(format!(
                "prefix {prefix:?}: each part between '/' is letters, digits and !-_.*'() \
                 (not empty, '.' or '..')"
            ));
        }
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("endpoint {endpoint:?} is not an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials never go into a location (the endpoint carries some)".into());
    }
    Ok(())
}

fn check_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("region {region:?} is not a region name (like us-east-1)"))
    }
}

/// True for a device id that may name a directory or a key part: 1–128 ASCII letters, digits,
/// `-`, `_`, `.`, not starting with a dot (so never `.`, `..` or a hidden name; never a `/`).
/// The store issues `dev-<hex>`; this guards the path however an id came to be.
pub fn is_safe_device_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Refuses a device id or segment name that could leave the layout.
fn check_names(device_id: &str, sha256: &str) -> Result<(), ConsoleError> {
    if !is_sha256_hex(sha256) {
        return Err(ConsoleError::Invalid(format!(
            "blob name {sha256:?} is not a lowercase hex SHA-256"
        )));
    }
    if !is_safe_device_id(device_id) {
        return Err(ConsoleError::Invalid(format!(
            "device id {device_id:?} cannot name a blob (letters, digits, '-', '_', '.' only)"
        )));
    }
    Ok(())
}

/// The blob store: one of the two backends. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Blobs {
    inner: Arc<Backend>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Blobs").field(&self.location().to_url()).finish()
    }
}

enum Backend {
    Files(Files),
    S3(S3),
}

/// A local directory.
struct Files {
    location: BlobLocation,
    dir: PathBuf,
}

/// A bucket, through `object_store` on a runtime of its own.
struct S3 {
    location: BlobLocation,
    store: Arc<AmazonS3>,
    bucket: String,
    /// The location's prefix, split at `/` (validated: no empty parts).
    prefix: Vec<String>,
    incoming: PathBuf,
    /// `Some` until dropped. `shutdown_background`, not a plain drop: the last clone may go
    /// inside an async task, where dropping a runtime would panic.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Blobs {
    /// Opens (for Files: creates, 0700, via [`crate::private`]). For S3: object_store's
    /// `AmazonS3Builder::from_env()` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    /// AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP), then the location's endpoint/region if
    /// set; bounded timeouts (see the module docs) so a dead bucket fails, never hangs.
    /// Synchronous (no network I/O): usable from `Store::open`.
    pub fn open(loc: &BlobLocation, data: &Path) -> Result<Blobs, ConsoleError> {
        match loc {
            BlobLocation::Files(dir) => {
                private::create_dir(dir).map_err(|e| ConsoleError::io(dir, e))?;
                let files = Files { location: loc.clone(), dir: dir.clone() };
                Ok(Blobs { inner: Arc::new(Backend::Files(files)) })
            }
            BlobLocation::S3 { .. } => {
                let from_env = std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
                    || std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
                    || std::env::var_os("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
                    || std::env::var_os("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
                if !from_env {
                    tracing::warn!(
                        blobs = %loc,
                        "no AWS credentials in the environment (AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY): asking the instance metadata service"
                    );
                }
                Blobs::open_s3(loc, data, AmazonS3Builder::from_env(), REQUEST_TIMEOUT)
            }
        }
    }

    /// An S3 location with credentials given here rather than read from the environment, and
    /// `request_timeout` for each request ([`REQUEST_TIMEOUT`] is the server's): for tests and
    /// tools, which cannot set a process's environment safely. Nothing else of the
    /// environment is read.
    pub fn open_s3_with(
        loc: &BlobLocation,
        data: &Path,
        key_id: &str,
        secret: &str,
        request_timeout: Duration,
    ) -> Result<Blobs, ConsoleError> {
        let builder =
            AmazonS3Builder::new().with_access_key_id(key_id).with_secret_access_key(secret);
        Blobs::open_s3(loc, data, builder, request_timeout)
    }

    fn open_s3(
        loc: &BlobLocation,
        data: &Path,
        builder: AmazonS3Builder,
        request_timeout: Duration,
    ) -> Result<Blobs, ConsoleError> {
        let BlobLocation::S3 { bucket, prefix, endpoint, region } = loc else {
            return Err(ConsoleError::Config(format!("{loc} is not an S3 location")));
        };
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        let client = AmazonS3ConfigKey::Client;
        let mut builder = builder
            .with_bucket_name(bucket)
            .with_config(client(ClientConfigKey::ConnectTimeout), millis(CONNECT_TIMEOUT))
            .with_config(client(ClientConfigKey::Timeout), millis(request_timeout))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: RETRIES,
                retry_timeout: RETRY_WINDOW,
            });
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        let store =
            builder.build().map_err(|e| ConsoleError::Config(format!("blob store {loc}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(S3_THREADS)
            .thread_name("rearview-blobs")
            .enable_all()
            .build()
            .map_err(|source| ConsoleError::Io {
                what: "the S3 client's threads".into(),
                source,
            })?;
        let s3 = S3 {
            location: loc.clone(),
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: prefix.split('/').filter(|p| !p.is_empty()).map(str::to_owned).collect(),
            incoming: data.join("incoming"),
            runtime: Some(runtime),
        };
        Ok(Blobs { inner: Arc::new(Backend::S3(s3)) })
    }

    /// Where these blobs are.
    pub fn location(&self) -> &BlobLocation {
        match &*self.inner {
            Backend::Files(f) => &f.location,
            Backend::S3(s) => &s.location,
        }
    }

    /// A local directory for uploads in flight (Files: DIR/.incoming, on the blobs' file system;
    /// S3: DATA/incoming). The caller creates it 0700 and its files 0600; `serve` removes what
    /// a stopped console left there.
    pub fn incoming_dir(&self) -> PathBuf {
        match &*self.inner {
            Backend::Files(f) => f.dir.join(".incoming"),
            Backend::S3(s) => s.incoming.clone(),
        }
    }

    /// Where blob `sha256` of `device_id` is (a path or an `s3://` URL), for messages.
    pub fn address(&self, device_id: &str, sha256: &str) -> String {
        match &*self.inner {
            Backend::Files(f) => f.path(device_id, sha256).display().to_string(),
            Backend::S3(s) => s.url(&s.key(device_id, sha256)),
        }
    }

    /// Publishes a verified upload (a local file whose bytes hash to `sha256`) under its
    /// content address. Idempotent (the same bytes again: Ok). Never visible partially (see
    /// "Publishing"). Removes/consumes the local file, also when it fails (Files: `file` must be
    /// on the blobs' file system, as [`Blobs::incoming_dir`] is).
    pub async fn put_file(
        &self,
        device_id: &str,
        sha256: &str,
        file: &Path,
    ) -> Result<(), ConsoleError> {
        let consume = |file: &Path| {
            if let Err(e) = std::fs::remove_file(file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = ?file, error = %e, "upload file not removed");
                }
            }
        };
        if let Err(e) = check_names(device_id, sha256) {
            consume(file);
            return Err(e);
        }
        let file = file.to_owned();
        match &*self.inner {
            Backend::Files(f) => {
                let dest = f.path(device_id, sha256);
                let dir = f.dir.clone();
                blocking("blob writer", move || {
                    let done = publish_file(&dir, &file, &dest);
                    if done.is_err() {
                        consume(&file);
                    }
                    done
                })
                .await
            }
            Backend::S3(s) => {
                let (store, key, url) = (s.store.clone(), s.key(device_id, sha256), s.url_of());
                s.run(async move {
                    let done = put_object(&store, &key, &file).await;
                    consume(&file);
                    done.map_err(|e| e.into_console(&url(&key)))
                })
                .await?
            }
        }
    }

    /// The stored bytes, or None when absent.
    pub async fn get(
        &self,
        device_id: &str,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, ConsoleError> {
        check_names(device_id, sha256)?;
        match &*self.inner {
            Backend::Files(f) => {
                let path = f.path(device_id, sha256);
                blocking("blob reader", move || read_file(&path, None)).await
            }
            Backend::S3(s) => s.run(s.get_op(device_id, sha256, None)).await?,
        }
    }

    /// [`Blobs::get`] for code that is not async (the CLI's exports): on any thread, with or
    /// without a runtime (see "Threads").
    pub fn get_blocking(
        &self,
        device_id: &str,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, ConsoleError> {
        self.read_blocking(device_id, sha256, None)
    }

    /// The first `len` bytes of the blob (all of it when shorter), or None when absent; blocking
    /// like [`Blobs::get_blocking`]. For the sealed header the clip record names.
    pub fn head_blocking(
        &self,
        device_id: &str,
        sha256: &str,
        len: usize,
    ) -> Result<Option<Vec<u8>>, ConsoleError> {
        self.read_blocking(device_id, sha256, Some(len))
    }

    fn read_blocking(
        &self,
        device_id: &str,
        sha256: &str,
        len: Option<usize>,
    ) -> Result<Option<Vec<u8>>, ConsoleError> {
        check_names(device_id, sha256)?;
        match &*self.inner {
            Backend::Files(f) => read_file(&f.path(device_id, sha256), len),
            Backend::S3(s) => s.run_blocking(s.get_op(device_id, sha256, len))?,
        }
    }

    /// Whether the blob is stored.
    pub async fn exists(&self, device_id: &str, sha256: &str) -> Result<bool, ConsoleError> {
        check_names(device_id, sha256)?;
        match &*self.inner {
            Backend::Files(f) => {
                let path = f.path(device_id, sha256);
                blocking("blob reader", move || match std::fs::metadata(&path) {
                    Ok(m) => Ok(m.is_file()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(ConsoleError::io(&path, e)),
                })
                .await
            }
            Backend::S3(s) => {
                let (store, key, url) = (s.store.clone(), s.key(device_id, sha256), s.url_of());
                s.run(async move {
                    match store.head(&key).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::NotFound { .. }) => Ok(false),
                        Err(e) => Err(unavailable(url(&key), e)),
                    }
                })
                .await?
            }
        }
    }

    /// Removes the blob (retention; see [`crate::store::retention`]); Ok also when it was not
    /// there. Files: the file is unlinked and its directory fsynced, so the removal survives a
    /// crash; S3: one DELETE.
    pub async fn remove(&self, device_id: &str, sha256: &str) -> Result<(), ConsoleError> {
        check_names(device_id, sha256)?;
        match &*self.inner {
            Backend::Files(f) => {
                let path = f.path(device_id, sha256);
                blocking("blob remover", move || {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(ConsoleError::io(&path, e)),
                    }
                    if let Some(dir) = path.parent() {
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(|e| ConsoleError::io(dir, e))?;
                    }
                    Ok(())
                })
                .await
            }
            Backend::S3(s) => {
                let (store, key, url) = (s.store.clone(), s.key(device_id, sha256), s.url_of());
                s.run(async move {
                    match store.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(unavailable(url(&key), e)),
                    }
                })
                .await?
            }
        }
    }

    /// Health for /healthz: Ok, or Err(reason), e.g. "bucket unreachable: …". Files: the
    /// directory is there. S3: the bucket answers a listing (of a prefix that names no blob)
    /// within [`HEALTH_TIMEOUT`].
    pub async fn health(&self) -> Result<(), String> {
        match &*self.inner {
            Backend::Files(f) => match tokio::fs::metadata(&f.dir).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!("blob directory {} is not a directory", f.dir.display())),
                Err(e) => Err(format!("blob directory {} unusable: {e}", f.dir.display())),
            },
            Backend::S3(s) => {
                let store = s.store.clone();
                let probe = s.key_of([HEALTH_PROBE]);
                let listed = s.run(async move {
                    tokio::time::timeout(HEALTH_TIMEOUT, store.list_with_delimiter(Some(&probe)))
                        .await
                });
                let bucket = format!("s3://{}", s.bucket);
                match listed.await {
                    Ok(Ok(Ok(_))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(format!("bucket unreachable: {bucket}: {e}")),
                    Ok(Err(_)) => Err(format!(
                        "bucket unreachable: {bucket} did not answer within {} s",
                        HEALTH_TIMEOUT.as_secs()
                    )),
                    Err(e) => Err(format!("bucket unreachable: {bucket}: {e}")),
                }
            }
        }
    }
}

impl Files {
    fn path(&self, device_id: &str, sha256: &str) -> PathBuf {
        self.dir.join(device_id).join(&sha256[..2]).join(sha256)
    }
}

impl S3 {
    /// `PREFIX/<device_id>/<sha256[0..2]>/<sha256>` (names checked by the caller).
    fn key(&self, device_id: &str, sha256: &str) -> Key {
        self.key_of([device_id, &sha256[..2], sha256])
    }

    fn key_of<'a>(&'a self, parts: impl IntoIterator<Item = &'a str>) -> Key {
        Key::from_iter(self.prefix.iter().map(String::as_str).chain(parts))
    }

    fn url(&self, key: &Key) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// [`S3::url`] for a task that outlives `self`'s borrow.
    fn url_of(&self) -> impl Fn(&Key) -> String + Send + 'static {
        let bucket = self.bucket.clone();
        move |key| format!("s3://{bucket}/{key}")
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, ConsoleError> {
        self.runtime
            .as_ref()
            .map(|r| r.handle())
            .ok_or_else(|| ConsoleError::Config("the S3 client's runtime is shut down".into()))
    }

    /// Runs `op` on the client's runtime, awaited from the caller's.
    async fn run<T: Send + 'static>(
        &self,
        op: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ConsoleError> {
        self.handle()?
            .spawn(op)
            .await
            .map_err(|source| ConsoleError::Task { what: "blob store call", source })
    }

    /// Runs `op` on the client's runtime and waits for it on this thread (see "Threads").
    fn run_blocking<T: Send + 'static>(
        &self,
        op: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ConsoleError> {
        let handle = self.handle()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = handle.spawn(op);
        // A second task reports the first one's end, panic included, through the channel.
        handle.spawn(async move {
            let _ = tx.send(task.await);
        });
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let got = if on_worker { tokio::task::block_in_place(|| rx.recv()) } else { rx.recv() };
        match got {
            Ok(done) => {
                done.map_err(|source| ConsoleError::Task { what: "blob store call", source })
            }
            Err(_) => Err(ConsoleError::Config("the S3 client's runtime stopped".into())),
        }
    }

    /// GET of the whole blob, or of its first `len` bytes.
    fn get_op(
        &self,
        device_id: &str,
        sha256: &str,
        len: Option<usize>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, ConsoleError>> + Send + 'static {
        let (store, key, url) = (self.store.clone(), self.key(device_id, sha256), self.url_of());
        async move {
            let read = async {
                let options = GetOptions::new().with_range(len.map(|n| 0..n as u64));
                match store.get_opts(&key, options).await {
                    Ok(got) => got.bytes().await.map(|b| Some(b.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    // A range of an empty object is refused (416); it has no head to give.
                    Err(e) if len.is_some() => match store.head(&key).await {
                        Ok(meta) if meta.size == 0 => Ok(Some(Vec::new())),
                        _ => Err(e),
                    },
                    Err(e) => Err(e),
                }
            };
            let read = match len {
                // A head is read inside the store's write transaction: keep that short.
                Some(_) => tokio::time::timeout(HEAD_TIMEOUT, read).await.unwrap_or_else(|e| {
                    Err(object_store::Error::Generic { store: "S3", source: Box::new(e) })
                }),
                None => read.await,
            };
            read.map_err(|e| unavailable(url(&key), e))
        }
    }
}

fn unavailable(what: String, source: object_store::Error) -> ConsoleError {
    ConsoleError::BlobsUnavailable { what, source }
}

/// Why a PUT of a local file failed: the file, or the bucket.
enum PutError {
    File(PathBuf, std::io::Error),
    Store(object_store::Error),
}

impl PutError {
    fn into_console(self, url: &str) -> ConsoleError {
        match self {
            PutError::File(path, e) => ConsoleError::io(&path, e),
            PutError::Store(e) => unavailable(url.to_owned(), e),
        }
    }
}

/// Uploads `file` to `key`: one PUT, or parts completed at the end (aborted on failure).
async fn put_object(store: &AmazonS3, key: &Key, file: &Path) -> Result<(), PutError> {
    use tokio::io::AsyncReadExt;
    let io = |e| PutError::File(file.to_owned(), e);
    let mut f = tokio::fs::File::open(file).await.map_err(io)?;
    let size = f.metadata().await.map_err(io)?.len();
    if size <= SINGLE_PUT_MAX {
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes).await.map_err(io)?;
        store.put(key, PutPayload::from(bytes)).await.map_err(PutError::Store)?;
        return Ok(());
    }
    let mut upload = store.put_multipart(key).await.map_err(PutError::Store)?;
    let parts = async {
        loop {
            let mut part = Vec::with_capacity(PART_SIZE);
            (&mut f).take(PART_SIZE as u64).read_to_end(&mut part).await.map_err(io)?;
            if part.is_empty() {
                break;
            }
            upload.put_part(PutPayload::from(part)).await.map_err(PutError::Store)?;
        }
        upload.complete().await.map_err(PutError::Store)
    };
    match parts.await {
        Ok(_) => Ok(()),
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key = %key, error = %abort, "failed multipart upload not aborted");
            }
            Err(e)
        }
    }
}

/// Files: makes `file` durable, renames it to `dest` (0600, directories 0700 made as needed)
/// and fsyncs the directories that changed, so a recorded blob survives a crash.
fn publish_file(dir: &Path, file: &Path, dest: &Path) -> Result<(), ConsoleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| ConsoleError::io(&path, e)
    };
    // The upload path fsynced it already; again costs nothing then, and any caller is safe.
    std::fs::File::open(file).and_then(|f| f.sync_all()).map_err(io(file))?;
    let parent = dest.parent().ok_or_else(|| ConsoleError::Invalid("blob path".into()))?;
    let device_dir = parent.parent().unwrap_or(dir);
    let (new_device, new_parent) = (!device_dir.exists(), !parent.exists());
    private::create_dir(parent).map_err(io(parent))?;
    private::set_mode(file, private::FILE_MODE).map_err(io(file))?;
    std::fs::rename(file, dest).map_err(io(dest))?;
    sync_dir(parent)?;
    if new_parent {
        sync_dir(device_dir)?;
    }
    if new_device {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ConsoleError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ConsoleError::io(dir, e))
}

/// Files: the blob at `path`, or its first `len` bytes; None when absent.
fn read_file(path: &Path, len: Option<usize>) -> Result<Option<Vec<u8>>, ConsoleError> {
    let read = std::fs::File::open(path).and_then(|f| {
        let mut out = Vec::new();
        match len {
            Some(n) => f.take(n as u64).read_to_end(&mut out)?,
            None => (&f).read_to_end(&mut out)?,
        };
        Ok(out)
    });
    match read {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConsoleError::io(path, e)),
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f).await.map_err(|source| ConsoleError::Task { what, source })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> BlobLocation {
        BlobLocation::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: endpoint.map(Into::into),
            region: region.map(Into::into),
        }
    }

    #[test]
    fn every_form_parses_and_reads_back_from_its_text() {
        let data = Path::new("/srv/rv");
        let cases = [
            ("files", BlobLocation::Files(data.join("blobs"))),
            ("file:///var/lib/blobs", BlobLocation::Files("/var/lib/blobs".into())),
            ("s3://evidence", s3("evidence", "", None, None)),
            ("s3://evidence/rv/prod/", s3("evidence", "rv/prod", None, None)),
            (
                "s3://ev-1.b/p?endpoint=http://127.0.0.1:9000&region=eu-west-1",
                s3("ev-1.b", "p", Some("http://127.0.0.1:9000"), Some("eu-west-1")),
            ),
            (
                "s3://evb/p?region=us-east-1&endpoint=https%3A%2F%2Fminio.corp%3A9000%2F",
                s3("evb", "p", Some("https://minio.corp:9000/"), Some("us-east-1")),
            ),
        ];
        for (text, want) in cases {
            let got = BlobLocation::parse(text, data).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(BlobLocation::parse(&got.to_url(), data).unwrap(), want, "{}", got.to_url());
        }
    }

    #[test]
    fn a_location_with_credentials_or_anything_unknown_is_refused_naming_why() {
        let data = Path::new("/srv/rv");
        let cases = [
            ("s3://AKIA:hunter2@bucket/p", "credentials never go into a location"),
            ("s3://hunter2@bucket/p", "credentials never go into a location"),
            ("s3://bucket/p?endpoint=http://k:hunter2@h:9000", "credentials never go into"),
            ("s3://bucket/p?secret=hunter2", "unknown option \"secret\""),
            ("s3://bucket/p?region=a&region=b", "region given twice"),
            ("s3://Bucket/p", "is not a bucket name"),
            ("s3://ab/p", "is not a bucket name"),
            ("s3://bucket:9000/p", "has no port"),
            ("s3://bucket/a/../b", "prefix"),
            ("s3://bucket/a//b", "prefix"),
            ("s3://bucket/a/%2e%2e/b", "prefix"),
            ("s3://bucket/./b", "prefix"),
            ("s3://bucket/p?endpoint=ftp://h", "is not an http:// or https:// URL"),
            ("s3://bucket/p?region=US", "is not a region name"),
            ("file://host/dir", "not an absolute local path"),
            ("file:///dir?x=1", "takes no ?options"),
            ("blobs", "give 'files'"),
            ("gs://bucket", "unknown scheme \"gs\""),
        ];
        for (text, why) in cases {
            let err = BlobLocation::parse(text, data).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("hunter2"), "a refusal quotes a secret: {err}");
        }
    }

    #[test]
    fn a_relative_directory_reads_back_as_an_absolute_one() {
        let loc = BlobLocation::parse("files", Path::new("rel/data")).unwrap();
        let text = loc.to_url();
        assert!(text.starts_with("file:///"), "{text}");
        let back = BlobLocation::parse(&text, Path::new("/elsewhere")).unwrap();
        assert_eq!(back, BlobLocation::Files(std::path::absolute("rel/data/blobs").unwrap()));
    }

    #[test]
    fn device_ids_that_could_leave_the_layout_are_refused() {
        for ok in ["dev-0123abcd", "a", "host_1.corp"] {
            assert!(is_safe_device_id(ok), "{ok}");
        }
        let long = "d".repeat(129);
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\\b", "dév", long.as_str()] {
            assert!(!is_safe_device_id(bad), "{bad}");
        }
    }
}
