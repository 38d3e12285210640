//! Segment uploads: `PUT /api/v1/device/segments/{sha256}`, the raw sealed bytes.
//!
//! A body is never held in memory. In order:
//!
//! ```text
//! 1. the name must be lowercase hex SHA-256, a Content-Length at most MAX_SEGMENT_BYTES  400/413
//! 2. a manifest of this device must name the hash, else 409 — before a byte is read; a
//!    Content-Length over the size the manifest names: 400
//! 3. already stored for this device: acknowledged (newly_stored: false) — without reading
//! 4. a permit of the device's uploads_per_device, else 429 with Retry-After
//!    (answers 2–4 are sent at once; what the client still sends is read and thrown away, not
//!    kept, so the answer is not lost to a connection reset)
//! 5. the body is streamed into <incoming>/<random>.part (a local directory, see
//!    crate::blobs) by a blocking thread that hashes as it writes; more bytes than the manifest
//!    names (or MAX_SEGMENT_BYTES) stop it: 400/413
//! 6. fsync; a hash other than the name removes the file: 400; else publish it (Blobs::put_file:
//!    a rename into place, or a PUT to the bucket; a bucket that fails: 503), then record
//! ```

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use rearview_protocol::{ErrorBody, SegmentAck, MAX_SEGMENT_BYTES};

use crate::auth::Device;
use crate::error::{ApiError, ConsoleError, RETRY_AFTER_SECS};
use crate::state::AppState;
use crate::store::{is_sha256_hex, now_ms, Tx};

/// Chunks queued between the network and the writing thread (backpressure beyond that).
const QUEUE: usize = 8;

/// How long the rest of a body answered early is read and thrown away before the connection
/// is dropped (a client sending slower than that was not going to use the answer soon anyway).
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// `PUT /api/v1/device/segments/{sha256}` (a device, for segments its own manifests name).
pub async fn put_segment(
    State(state): State<Arc<AppState>>,
    device: Device,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_sha256_hex(&sha256) {
        return Err(ApiError::bad_request("segment name must be lowercase hex SHA-256"));
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_SEGMENT_BYTES as u64) {
        return Err(too_large());
    }
    let known = {
        let (device_id, sha256) = (device.id.clone(), sha256.clone());
        state.store.read(move |tx| known_segment(tx, &device_id, &sha256)).await?
    };
    let (named_size, stored) = (known.named_size, known.stored);
    let Some(named_size) = named_size else {
        discard(body);
        return Err(ApiError::conflict(format!(
            "no clip manifest of this device names segment {sha256}: send the manifest first"
        )));
    };
    let named_size = named_size.max(0) as u64;
    if announced.is_some_and(|n| n > named_size) {
        return Err(longer_than_named(named_size));
    }
    if stored {
        discard(body);
        return Ok(Json(acknowledged(&state, device, sha256, None).await?).into_response());
    }
    let Some(_permit) = state.ingest.try_upload(&device.id) else {
        discard(body);
        return Ok(busy(state.ingest.limits.uploads_per_device));
    };
    let incoming = receive(&state.store.blobs().incoming_dir(), body, named_size).await?;
    if incoming.sha256 != sha256 {
        let got = incoming.sha256.clone();
        incoming.discard();
        return Err(ApiError::bad_request(format!(
            "segment bytes hash to {got}, not {sha256}: the upload was damaged, send it again"
        )));
    }
    let size = incoming.size;
    // The id its sealed header carries, for the clip records that will name it (read from
    // the local file before it is published, so completing a clip never reads a blob).
    let tmp = incoming.tmp.clone();
    let segment_id = tokio::task::spawn_blocking(move || crate::store::sealed_segment_id(&tmp))
        .await
        .map_err(|e| ApiError::from(ConsoleError::Task { what: "segment header", source: e }))?;
    state.store.blobs().put_file(&device.id, &sha256, &incoming.tmp).await?;
    let stored = Some((size, segment_id));
    Ok(Json(acknowledged(&state, device, sha256, stored).await?).into_response())
}

/// What the store knows of a segment a device offers.
struct KnownSegment {
    /// The largest size a manifest of the device names for it; `None`: none names it.
    named_size: Option<i64>,
    stored: bool,
}

fn known_segment(tx: &Tx<'_>, device_id: &str, sha256: &str) -> Result<KnownSegment, ApiError> {
    // A name an older console kept without its size: the protocol bound applies.
    let named_size = tx.named_segment_size(device_id, sha256, MAX_SEGMENT_BYTES as i64)?;
    Ok(KnownSegment { named_size, stored: tx.segment_stored(device_id, sha256)? })
}

/// Records the segment (when `stored` says it was just stored: its size and the id its sealed
/// header carries) and answers which of the device's clips it completed, in one transaction
/// with their `clip.complete` lines.
async fn acknowledged(
    state: &AppState,
    device: Device,
    sha256: String,
    stored: Option<(u64, Option<String>)>,
) -> Result<SegmentAck, ApiError> {
    let newly_stored = stored.is_some();
    let answer = move |tx: &Tx<'_>| {
        if let Some((size, segment_id)) = &stored {
            tx.insert_segment(&device.id, &sha256, *size, segment_id.as_deref(), now_ms())?;
        }
        let mut completed_clips = Vec::new();
        for clip in tx.incomplete_clips_naming(&device.id, &sha256)? {
            if super::status(tx, &device.id, &clip)?.complete {
                completed_clips.push(clip);
            }
        }
        Ok::<_, ApiError>(SegmentAck { sha256, newly_stored, completed_clips })
    };
    state.store.write(answer).await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("a segment is at most {MAX_SEGMENT_BYTES} bytes"),
    )
}

fn longer_than_named(size: u64) -> ApiError {
    ApiError::bad_request(format!("segment is larger than the {size} bytes its manifest names"))
}

/// 429: the device has `limit` uploads in flight already.
fn busy(limit: usize) -> Response {
    let body = ErrorBody {
        error: format!(
            "this device already has {limit} segment uploads in flight; send one at a time, \
             retry after {RETRY_AFTER_SECS} s"
        ),
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        Json(body),
    )
        .into_response()
}

/// Reads what a client still sends of a body that was answered without it, and throws it away
/// (at most [`MAX_SEGMENT_BYTES`], for at most [`DISCARD_FOR`]), so the answer reaches a client
/// still sending instead of being lost to a connection reset. Nothing is kept.
fn discard(body: Body) {
    tokio::spawn(async move {
        let drain = async {
            let mut stream = body.into_data_stream();
            let mut seen = 0usize;
            while let Some(Ok(chunk)) = stream.next().await {
                seen += chunk.len();
                if seen > MAX_SEGMENT_BYTES {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_FOR, drain).await;
    });
}

/// An upload received into a temporary file, fsynced, not yet published (`Blobs::put_file`
/// consumes the file).
struct Incoming {
    tmp: PathBuf,
    sha256: String,
    size: u64,
}

impl Incoming {
    fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Why receiving stopped, as the writing thread saw it.
enum Stop {
    /// More than `limit` bytes arrived.
    TooLong {
        limit: u64,
    },
    Io(std::io::Error),
}

/// Streams `body` into a new file in `dir` while hashing it, refusing more than `limit` bytes.
async fn receive(dir: &FsPath, body: Body, limit: u64) -> Result<Incoming, ApiError> {
    let tmp = dir.join(format!("{}.part", hex::encode(rand::random::<[u8; 16]>())));
    // The file exists before anything else happens, and `part` removes it however this ends:
    // when a client cuts the connection, hyper drops this future mid-await, and without the
    // guard the writer thread would finish and leave the partial file behind.
    let file = {
        let io = |e: std::io::Error| ApiError::from(ConsoleError::io(&tmp, e));
        crate::private::create_dir(dir).map_err(io)?;
        crate::private::create_new_file(&tmp).map_err(io)?
    };
    let mut part = PartFile { tmp: tmp.clone(), armed: true };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_hashing(file, rx, limit));
    let mut stream = body.into_data_stream();
    let mut cut = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            // A closed channel means the writer stopped; its result says why.
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                cut = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ApiError::from(ConsoleError::Task { what: "blob writer", source: e }))?;
    let fail = |e: ApiError| {
        let _ = std::fs::remove_file(&tmp);
        Err(e)
    };
    match (written, cut) {
        (Err(Stop::TooLong { limit }), _) if limit >= MAX_SEGMENT_BYTES as u64 => fail(too_large()),
        (Err(Stop::TooLong { limit }), _) => fail(longer_than_named(limit)),
        (Err(Stop::Io(e)), _) => fail(ApiError::from(ConsoleError::io(&tmp, e))),
        (Ok(_), Some(cut)) => {
            fail(ApiError::bad_request(format!("segment upload cut short: {cut}")))
        }
        (Ok((sha256, size)), None) => {
            part.armed = false;
            Ok(Incoming { tmp, sha256, size })
        }
    }
}

/// A temporary upload file nobody owns yet: removed on drop while `armed`.
struct PartFile {
    tmp: PathBuf,
    armed: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.armed {
            // Unlinking a file the writer thread still has open is fine: it never re-creates it.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The writing thread: appends every chunk to `tmp` and to the hash, then fsyncs.
fn write_hashing(
    mut file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    limit: u64,
) -> Result<(String, u64), Stop> {
    let io = Stop::Io;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        size += chunk.len() as u64;
        if size > limit.min(MAX_SEGMENT_BYTES as u64) {
            return Err(Stop::TooLong { limit: limit.min(MAX_SEGMENT_BYTES as u64) });
        }
        hash.update(&chunk);
        file.write_all(&chunk).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    Ok((hex::encode(hash.finish().as_ref()), size))
}
