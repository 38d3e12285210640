//! `clip export --evidence DIR CLIP_ID [--open]`: the clip as an evidence package (layout and
//! formats: `rearview_evidence::package`), which `rearview-verify DIR` checks offline.
//!
//! # Who may export, and what it trusts
//!
//! An investigator, named by their API token (`--token` or `$REARVIEW_TOKEN`) and checked
//! against DATA's database as the plain `clip export` does; every other role, an unknown token
//! and no token are refused before anything is read or written. It trusts the console's own
//! store (records, custody log, blobs): each blob is hashed again and must still match its
//! name, or nothing is written.
//!
//! # Refusals
//!
//! A clip that does not exist or is not complete, a DIR that exists and is not empty, a
//! device enrolled before the console signed enrollment records, a stored segment that is no
//! sealed segment (no id to name its file by).
//!
//! # Records of it
//!
//! Before any file is written, in one transaction: `opened` (with `--open`) and `exported` in
//! the clip's custody log, and `clip.export.evidence.begin` in the audit log; the package's
//! `custody.jsonl` ends with those lines and its `custody.sig` signs that end. Then:
//!
//! ```text
//! clip.export.evidence         person:<name>  clip:<id>  {dir, open, segments, frames, events, custody_entries}
//! clip.export.evidence.failed  person:<name>  clip:<id>  {dir, open, error}
//! ```
//!
//! # `--open`
//!
//! Needs the tenant secret key (`DATA/keys/sealing.key`): every segment is opened and each
//! frame written as PNG under `open/frames/`, listed in `open/frames.jsonl` with the hash of its
//! decoded pixels, and every event in `open/events.jsonl`, in segment order. That is plaintext
//! evidence of what a person saw and typed.

use std::path::Path;

use rearview_capture::codec::PacketKind;
use rearview_capture::seal::TenantSecretKey;
use rearview_capture::segment::SegmentId;
use rearview_evidence::package::{self, Contents, OPEN_EVENTS, OPEN_FRAMES};
use rearview_evidence::record::ReceivedSegment;
use rearview_evidence::{custody, sha256_hex, Signer};

use super::{investigator, io, open_sealed, write_png};
use crate::blobs::BlobLocation;
use crate::error::ConsoleError;
use crate::private;
use crate::store::evidence::{ClipEvidence, CustodyAction};
use crate::store::{now_ms, Store};
use crate::tenant::{load_record_signer, load_sealing_key};

/// What an evidence export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvidenceSummary {
    pub clip_id: String,
    pub dir: std::path::PathBuf,
    pub segments: usize,
    pub opened: bool,
    pub frames: usize,
    pub events: usize,
    pub custody_entries: u64,
    /// The console key's fingerprint, for the recipient to compare out of band.
    pub console_key: String,
}

/// What `open/` holds.
#[derive(Default)]
struct OpenCounts {
    frames: usize,
    events: usize,
}

/// Exports clip `clip_id` of the tenant in `data` into `dir` as an evidence package, as the
/// investigator whose API token is `token` (see the module docs).
pub fn export_evidence(
    data: &Path,
    token: Option<&str>,
    clip_id: &str,
    dir: &Path,
    open: bool,
) -> Result<EvidenceSummary, ConsoleError> {
    let blobs = BlobLocation::Files(data.join("blobs"));
    export_evidence_with_blobs(data, &blobs, token, clip_id, dir, open)
}

/// [`export_evidence`] with the segments read from `blobs` (`clip export --blobs`). Blocking:
/// the blob store's reads wait on this thread (see `crate::blobs`, "Threads").
pub fn export_evidence_with_blobs(
    data: &Path,
    blobs: &BlobLocation,
    token: Option<&str>,
    clip_id: &str,
    dir: &Path,
    open: bool,
) -> Result<EvidenceSummary, ConsoleError> {
    let store = Store::open_with_blobs(data, blobs)?;
    let person = investigator(&store, token)?;
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ConsoleError::Config(format!(
            "{} exists and is not empty; an evidence package goes into a new directory",
            dir.display()
        )));
    }
    let signer = load_record_signer(data)?;
    let key = if open { Some(load_sealing_key(data)?) } else { None };
    let tenant = store
        .read_now(|tx| tx.meta_get("tenant_id"))?
        .ok_or_else(|| ConsoleError::Config(format!("{} holds no tenant", data.display())))?;
    let (actor, target) = (person.actor(), format!("clip:{clip_id}"));
    let evidence = store.write_now(|tx| {
        let found = tx.clip_evidence(clip_id)?;
        let now = now_ms();
        let to = dir.display();
        if open {
            let detail = format!("frames and events decoded into {to}/open");
            tx.append_custody(clip_id, now, &actor, CustodyAction::Opened, &detail)?;
        }
        let detail = format!("evidence package to {to}{}", if open { " (with open/)" } else { "" });
        tx.append_custody(clip_id, now, &actor, CustodyAction::Exported, &detail)?;
        let details = serde_json::json!({ "dir": dir, "open": open });
        tx.audit(&actor, "clip.export.evidence.begin", &target, details)?;
        Ok::<_, ConsoleError>(ClipEvidence { custody: tx.custody_log(clip_id)?, ..found })
    })?;
    let package = Package { store: &store, tenant: &tenant, signer: &signer, key: key.as_ref() };
    match package.write(clip_id, dir, &evidence) {
        Ok(counts) => {
            let details = serde_json::json!({
                "dir": dir, "open": open, "segments": evidence.segments.len(),
                "frames": counts.frames, "events": counts.events,
                "custody_entries": evidence.custody.entries,
            });
            store.write_now(|tx| tx.audit(&actor, "clip.export.evidence", &target, details))?;
            Ok(EvidenceSummary {
                clip_id: clip_id.to_owned(),
                dir: dir.to_owned(),
                segments: evidence.segments.len(),
                opened: open,
                frames: counts.frames,
                events: counts.events,
                custody_entries: evidence.custody.entries,
                console_key: signer.public_key().fingerprint().to_string(),
            })
        }
        Err(e) => {
            let details = serde_json::json!({ "dir": dir, "open": open, "error": e.to_string() });
            let audited = store
                .write_now(|tx| tx.audit(&actor, "clip.export.evidence.failed", &target, details));
            if let Err(a) = audited {
                tracing::warn!(error = %a, "failed evidence export not audited");
            }
            Err(e)
        }
    }
}

/// What a package is written with.
struct Package<'a> {
    store: &'a Store,
    tenant: &'a str,
    signer: &'a Signer,
    /// The tenant secret key, with `--open`.
    key: Option<&'a TenantSecretKey>,
}

impl Package<'_> {
    /// Writes the package of `ev` into `dir`: `open/` first (when asked), then every other
    /// file and `SHA256SUMS` over all of them.
    fn write(
        &self,
        clip_id: &str,
        dir: &Path,
        ev: &ClipEvidence,
    ) -> Result<OpenCounts, ConsoleError> {
        let segments = self.read_segments(&ev.device_id, &ev.segments)?;
        // 0700 whatever the umask (an empty DIR given is made so too), before anything lands.
        private::create_dir(dir).map_err(io(dir))?;
        private::create_dir(&dir.join(package::SEGMENTS)).map_err(io(dir))?;
        let counts = match self.key {
            Some(key) => self.write_open(key, &ev.device_id, dir, &segments)?,
            None => OpenCounts::default(),
        };
        let head = custody::sign_head(self.signer, clip_id, ev.custody.entries, &ev.custody.head)
            .map_err(|e| ConsoleError::Signing(e.to_string()))?;
        let contents = Contents {
            clip: clip_id,
            manifest: ev.manifest_json.as_bytes(),
            segments: &segments,
            chain: &ev.manifest.chain,
            absent: &ev.manifest.absent,
            enrollment: &ev.enrollment.record,
            enrollment_sig: &ev.enrollment.signature,
            console_key: &self.signer.public_key(),
            clip_record: &ev.clip_record.record,
            clip_record_sig: &ev.clip_record.signature,
            custody: ev.custody.text.as_bytes(),
            custody_head: &head,
        };
        package::write(dir, &contents).map_err(io(dir))?;
        Ok(counts)
    }

    /// Each segment's sealed bytes as stored, checked against its name; `(id, bytes)`.
    fn read_segments(
        &self,
        device: &str,
        named: &[ReceivedSegment],
    ) -> Result<Vec<(String, Vec<u8>)>, ConsoleError> {
        let mut out = Vec::with_capacity(named.len());
        for s in named {
            if s.id.parse::<SegmentId>().is_err() {
                return Err(ConsoleError::Conflict {
                    what: format!(
                        "segment {} is not a sealed segment (it has no segment id): this clip \
                         cannot make an evidence package",
                        s.sha256
                    ),
                });
            }
            let blobs = self.store.blobs();
            let at = || blobs.address(device, &s.sha256);
            let bytes = blobs.get_blocking(device, &s.sha256)?.ok_or_else(|| {
                ConsoleError::corrupt(format!("segment {}", s.sha256), format!("{} is gone", at()))
            })?;
            if sha256_hex(&bytes) != s.sha256 {
                return Err(ConsoleError::corrupt(
                    format!("segment {}", s.sha256),
                    format!("{} no longer hashes to its name: the blob store is damaged", at()),
                ));
            }
            out.push((s.id.clone(), bytes));
        }
        Ok(out)
    }

    /// Decodes every segment into `dir/open/` (layout: `rearview_evidence::package`).
    fn write_open(
        &self,
        key: &TenantSecretKey,
        device: &str,
        dir: &Path,
        segments: &[(String, Vec<u8>)],
    ) -> Result<OpenCounts, ConsoleError> {
        let frames_dir = dir.join("open").join("frames");
        private::create_dir(&frames_dir).map_err(io(&frames_dir))?;
        let (mut frames, mut events) = (Vec::new(), Vec::new());
        for (id, sealed) in segments {
            let bad = |e: &dyn std::fmt::Display| ConsoleError::corrupt(format!("segment {id}"), e);
            let plain = open_sealed(key, self.tenant, device, sealed)?;
            let segment = rearview_capture::segment::Segment::parse(&plain).map_err(|e| bad(&e))?;
            let monitor = segment.header().context.monitor.id;
            for (index, frame) in segment.decode_frames().enumerate() {
                let frame = frame.map_err(|e| bad(&e))?;
                let file = format!("open/frames/{id}-{index:05}.png");
                let mut bgrx = Vec::with_capacity(frame.width as usize * frame.height as usize * 4);
                for y in 0..frame.height {
                    bgrx.extend_from_slice(frame.row(y));
                }
                let rgb: Vec<u8> = bgrx.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
                write_png(&dir.join(&file), &rgb, frame.width, frame.height)?;
                let kind = match segment.frames()[index].kind {
                    PacketKind::Key => "K",
                    PacketKind::Delta => "D",
                    PacketKind::Same => "S",
                };
                let at = frame.captured_at;
                frames.push(serde_json::json!({
                    "segment": id, "index": index, "monitor": monitor,
                    "utc_micros": at.utc_micros, "mono_micros": at.mono_micros, "kind": kind,
                    "width": frame.width, "height": frame.height,
                    "bgrx_sha256": sha256_hex(&bgrx), "file": file,
                }));
            }
            for event in segment.events() {
                let event = serde_json::to_value(event).map_err(|e| bad(&e))?;
                events.push(serde_json::json!({ "segment": id, "event": event }));
            }
        }
        super::write_lines(&dir.join(OPEN_FRAMES), &frames)?;
        super::write_lines(&dir.join(OPEN_EVENTS), &events)?;
        Ok(OpenCounts { frames: frames.len(), events: events.len() })
    }
}
