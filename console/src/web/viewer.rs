//! What the player shows: a clip's timeline and its frames, opened from the sealed segments
//! with the tenant key, exactly as captured (lossless PNG of the decoded pixels; no
//! re-encoding that could change one).
//!
//! ```text
//! GET /clips/{id}/timeline?view=V      JSON: monitors, frames (time, monitor, segment, index,
//!                                      kind), the transcript, gaps with their reason, trigger,
//!                                      integrity
//! GET /clips/{id}/frames/{sha}/{i}?view=V   image/png: frame i of segment sha
//! ```
//!
//! Both need the investigator role and a view `V` that this session opened for this clip
//! ([`crate::web::clips::player`] makes it, audited); a frame is served only from a segment
//! the clip names. So every plaintext byte that leaves the console is part of an audited view.
//!
//! # Opening, and the cache
//!
//! A segment is read from the blob store, its SHA-256 checked against its name, opened
//! (`rearview_capture::seal::open`, bound to tenant and device) and parsed; the plaintext is
//! kept in a cache bounded by [`CACHE_BYTES`] (least recently used first out; zeroed when
//! dropped), with the PNGs made from it. A frame is decoded from its segment's keyframe (a
//! segment holds one keyframe and at most a few dozen frames) and encoded with fast PNG
//! compression. Frames of kind `S` (same as the one before) are not fetched: the timeline says
//! so and the player shows the previous picture.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rearview_capture::codec::PacketKind;
use rearview_capture::event::InputEvent;
use rearview_capture::frame::MonitorInfo;
use rearview_capture::seal::TenantSecretKey;
use rearview_capture::segment::Segment;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::api::clips::ClipView;
use crate::auth::Role;
use crate::error::{ApiError, ConsoleError};
use crate::state::AppState;
use crate::store::{now_ms, Store};
use crate::web::session::WebSession;
use crate::web::transcript::{self, Entry};
use crate::web::WebError;

/// Plaintext kept in memory at most (opened segments and their PNGs).
pub const CACHE_BYTES: usize = 256 * 1024 * 1024;

/// One opened segment: its plaintext, and what the timeline needs from it.
pub struct Opened {
    plain: Zeroizing<Vec<u8>>,
    pub monitor: MonitorInfo,
    /// (UTC µs, kind) of each frame, in order.
    pub frames: Vec<(i64, PacketKind)>,
    pub events: Vec<InputEvent>,
    pngs: Mutex<HashMap<usize, Arc<Vec<u8>>>>,
}

impl Opened {
    fn bytes(&self) -> usize {
        let pngs: usize =
            self.pngs.lock().map(|p| p.values().map(|v| v.len()).sum()).unwrap_or_default();
        self.plain.len() + pngs
    }
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Arc<Opened>>,
    order: VecDeque<String>,
}

/// Opens segments for the player (see the module docs).
pub struct Viewer {
    key: TenantSecretKey,
    tenant: String,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer").field("tenant", &self.tenant).finish_non_exhaustive()
    }
}

impl Viewer {
    pub fn new(key: TenantSecretKey, tenant: &str) -> Viewer {
        Viewer { key, tenant: tenant.to_owned(), cache: Mutex::default() }
    }

    fn cached(&self, sha: &str) -> Option<Arc<Opened>> {
        let mut cache = self.cache.lock().ok()?;
        let found = cache.map.get(sha).cloned()?;
        cache.order.retain(|s| s != sha);
        cache.order.push_back(sha.to_owned());
        Some(found)
    }

    fn keep(&self, sha: &str, opened: Arc<Opened>) {
        let Ok(mut cache) = self.cache.lock() else { return };
        cache.order.retain(|s| s != sha);
        cache.order.push_back(sha.to_owned());
        cache.map.insert(sha.to_owned(), opened);
        let mut total: usize = cache.map.values().map(|o| o.bytes()).sum();
        while total > CACHE_BYTES && cache.order.len() > 1 {
            let Some(oldest) = cache.order.pop_front() else { break };
            if let Some(gone) = cache.map.remove(&oldest) {
                total = total.saturating_sub(gone.bytes());
            }
        }
    }

    /// Segment `sha` of `device`, opened; `None` when the blob store does not hold it.
    /// Blocking (blob reads wait on this thread).
    pub fn open(
        &self,
        store: &Store,
        device: &str,
        sha: &str,
    ) -> Result<Option<Arc<Opened>>, ConsoleError> {
        if let Some(hit) = self.cached(sha) {
            return Ok(Some(hit));
        }
        let Some(sealed) = store.blobs().get_blocking(device, sha)? else { return Ok(None) };
        let actual = rearview_evidence::sha256_hex(&sealed);
        if actual != sha {
            return Err(ConsoleError::corrupt(
                format!("segment {sha}"),
                format!("the stored bytes hash to {actual}"),
            ));
        }
        let plain = crate::export::open_sealed(&self.key, &self.tenant, device, &sealed)?;
        let segment = Segment::parse(&plain)
            .map_err(|e| ConsoleError::corrupt(format!("segment {sha}"), e))?;
        let monitor = segment.header().context.monitor.clone();
        let frames = segment.frames().iter().map(|f| (f.at.utc_micros, f.kind)).collect();
        let events = segment.events().to_vec();
        drop(segment);
        let opened = Arc::new(Opened { plain, monitor, frames, events, pngs: Mutex::default() });
        self.keep(sha, opened.clone());
        Ok(Some(opened))
    }

    /// Frame `index` of the opened segment `opened` (`sha`) as PNG (RGB, 8 bits).
    pub fn png(
        &self,
        sha: &str,
        opened: &Opened,
        index: usize,
    ) -> Result<Arc<Vec<u8>>, ConsoleError> {
        if let Some(hit) = opened.pngs.lock().ok().and_then(|p| p.get(&index).cloned()) {
            return Ok(hit);
        }
        let corrupt =
            |e: &dyn std::fmt::Display| ConsoleError::corrupt(format!("segment {sha}"), e);
        let segment = Segment::parse(&opened.plain).map_err(|e| corrupt(&e))?;
        if index >= segment.frames().len() {
            return Err(ConsoleError::NotFound {
                what: format!(
                    "segment {sha} has {} frames, no frame {index}",
                    segment.frames().len()
                ),
            });
        }
        let frame = segment
            .decode_frames()
            .nth(index)
            .ok_or_else(|| corrupt(&"frame missing"))?
            .map_err(|e| corrupt(&e))?;
        let mut rgb =
            Zeroizing::new(Vec::with_capacity(frame.width as usize * frame.height as usize * 3));
        for y in 0..frame.height {
            for px in frame.row(y).chunks_exact(4) {
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        }
        let mut out = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Sub,
        );
        image::ImageEncoder::write_image(
            encoder,
            &rgb,
            frame.width,
            frame.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| corrupt(&e))?;
        let png = Arc::new(out);
        if let Ok(mut pngs) = opened.pngs.lock() {
            pngs.insert(index, png.clone());
        }
        Ok(png)
    }
}

#[derive(Debug, Deserialize)]
pub struct ViewQuery {
    #[serde(default)]
    pub view: Option<String>,
}

/// The clip `id`, if this session's view `view` is of it and the person may open clips.
async fn viewed_clip(
    state: &AppState,
    session: &WebSession,
    id: &str,
    view: Option<&str>,
) -> Result<ClipView, WebError> {
    session.person.require(&[Role::Investigator])?;
    let view = view.unwrap_or_default().to_owned();
    let (clip_id, session_id, now) = (id.to_owned(), session.id_sha256.clone(), now_ms());
    let found = state
        .store
        .read(move |tx| {
            let viewed = tx.clip_of_view(&view, &session_id, now)?;
            if viewed.as_deref() != Some(clip_id.as_str()) {
                return Ok(None);
            }
            tx.clip(&clip_id)
        })
        .await?;
    found.ok_or_else(|| {
        WebError::Api(ApiError::forbidden(
            "this clip was not opened in this session (or the view ended): open it from the clip list",
        ))
    })
}

#[derive(Debug, Serialize)]
pub struct FrameRef {
    /// UTC µs.
    pub t: i64,
    /// Monitor id.
    pub m: u32,
    /// Segment SHA-256.
    pub s: String,
    /// Index in the segment.
    pub i: usize,
    /// "K", "D" or "S" (same as the monitor's previous frame).
    pub k: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Gap {
    pub start_ms: i64,
    pub end_ms: i64,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Integrity {
    /// "verified", "failed" or "not signed".
    pub state: String,
    pub checks: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Timeline {
    pub clip: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub trigger_ms: Option<i64>,
    pub trigger_reason: Option<String>,
    pub monitors: Vec<MonitorInfoView>,
    pub frames: Vec<FrameRef>,
    pub transcript: Vec<Entry>,
    pub gaps: Vec<Gap>,
    pub integrity: Integrity,
}

#[derive(Debug, Serialize)]
pub struct MonitorInfoView {
    pub id: u32,
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// `GET /clips/{id}/timeline?view=` (investigator, in the view's session).
pub async fn timeline(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path(id): Path<String>,
    Query(q): Query<ViewQuery>,
) -> Result<Json<Timeline>, WebError> {
    let clip = viewed_clip(&state, &session, &id, q.view.as_deref()).await?;
    let st = state.clone();
    let built = tokio::task::spawn_blocking(move || build_timeline(&st, &clip))
        .await
        .map_err(|e| ConsoleError::Task { what: "opening the clip", source: e })??;
    Ok(Json(built))
}

fn build_timeline(state: &AppState, clip: &ClipView) -> Result<Timeline, ConsoleError> {
    let viewer = &state.web.viewer;
    let mut monitors: Vec<MonitorInfoView> = Vec::new();
    let mut frames = Vec::new();
    let mut events = Vec::new();
    let mut gaps: Vec<Gap> = clip
        .manifest
        .missing
        .iter()
        .map(|m| Gap { start_ms: m.start_ms.0, end_ms: m.end_ms.0, reason: m.reason.clone() })
        .collect();
    let mut hashes_checked = 0;
    for seg in &clip.manifest.segments {
        let Some(opened) = viewer.open(&state.store, &clip.device_id, &seg.sha256)? else {
            gaps.push(Gap {
                start_ms: seg.start_ms.0,
                end_ms: seg.end_ms.0,
                reason: "segment not uploaded (yet)".into(),
            });
            continue;
        };
        hashes_checked += 1;
        let m = &opened.monitor;
        if !monitors.iter().any(|x| x.id == m.id) {
            monitors.push(MonitorInfoView {
                id: m.id,
                name: m.name.clone(),
                width: m.width,
                height: m.height,
            });
        }
        for (i, (t, kind)) in opened.frames.iter().enumerate() {
            let k = match kind {
                PacketKind::Key => "K",
                PacketKind::Delta => "D",
                PacketKind::Same => "S",
            };
            frames.push(FrameRef { t: *t, m: m.id, s: seg.sha256.clone(), i, k });
        }
        events.extend(opened.events.iter().cloned());
    }
    for a in &clip.manifest.absent {
        gaps.push(Gap {
            start_ms: clip.start_ms,
            end_ms: clip.start_ms,
            reason: format!("device: {}", a.reason),
        });
    }
    frames.sort_by_key(|f| (f.t, f.m));
    monitors.sort_by_key(|m| m.id);
    gaps.sort_by_key(|g| g.start_ms);
    let (trigger_ms, trigger_reason) = match &clip.trigger_id {
        Some(t) => {
            let t = t.clone();
            state.store.read_now(|tx| tx.trigger_time_and_reason(&t))?.unzip()
        }
        None => (None, None),
    };
    let integrity = integrity(state, clip, hashes_checked)?;
    Ok(Timeline {
        clip: clip.id.clone(),
        start_ms: clip.start_ms,
        end_ms: clip.end_ms,
        trigger_ms,
        trigger_reason,
        monitors,
        frames,
        transcript: transcript::build(&events),
        gaps,
        integrity,
    })
}

/// What the badge says: the console's signed clip record and the clip's custody log checked
/// against the console key, the segments' hashes against their names.
fn integrity(state: &AppState, clip: &ClipView, hashes: usize) -> Result<Integrity, ConsoleError> {
    let id = clip.id.clone();
    let (record, custody) = state
        .store
        .read_now(|tx| Ok::<_, ConsoleError>((tx.clip_record(&id)?, tx.custody_log(&id)?)))?;
    let mut checks = vec![format!(
        "{hashes} of {} segments held, each matching its SHA-256",
        clip.manifest.segments.len()
    )];
    let Some(record) = record else {
        checks.push("no console clip record yet (the clip is not complete)".into());
        return Ok(Integrity { state: "not signed".into(), checks });
    };
    let key = state.web.record_key;
    match rearview_evidence::record::verify(
        &key,
        rearview_evidence::package::CLIP_KIND,
        &record.record,
        &record.signature,
    ) {
        Ok(()) => checks.push("console clip record: signature verified".into()),
        Err(e) => {
            checks.push(format!("console clip record: {e}"));
            return Ok(Integrity { state: "failed".into(), checks });
        }
    }
    checks.push(format!(
        "device chain: {} signed entries, verified at ingest",
        clip.manifest.chain.len()
    ));
    checks.push(format!("custody log: {} entries", custody.entries));
    Ok(Integrity { state: "verified".into(), checks })
}

/// `GET /clips/{id}/frames/{sha256}/{index}?view=` (investigator, in the view's session).
pub async fn frame(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path((id, sha, index)): Path<(String, String, String)>,
    Query(q): Query<ViewQuery>,
) -> Result<Response, WebError> {
    let clip = viewed_clip(&state, &session, &id, q.view.as_deref()).await?;
    let index: usize = index.trim_end_matches(".png").parse().map_err(|_| {
        ApiError::bad_request(format!("frame index must be a number, not {index:?}"))
    })?;
    if !clip.manifest.segments.iter().any(|s| s.sha256 == sha) {
        return Err(ApiError::not_found(format!("clip {id} names no segment {sha}")).into());
    }
    let st = state.clone();
    let png = tokio::task::spawn_blocking(move || {
        let opened = st.web.viewer.open(&st.store, &clip.device_id, &sha)?.ok_or_else(|| {
            ConsoleError::NotFound { what: format!("segment {sha} is not uploaded (yet)") }
        })?;
        st.web.viewer.png(&sha, &opened, index)
    })
    .await
    .map_err(|e| ConsoleError::Task { what: "decoding a frame", source: e })??;
    Ok(([(header::CONTENT_TYPE, "image/png")], png.as_ref().clone()).into_response())
}
