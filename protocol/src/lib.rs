//! `rearview-protocol`: the device ↔ console wire protocol — every JSON message both sides
//! exchange, in one crate that both take and that takes neither of them, so the console
//! (`rearview-console`) and the device (`rearview-uploader`) cannot drift apart.
//!
//! # Layout
//!
//! * this file: the messages ([`ClipManifest`], [`HealthReport`], …) and size limits.
//! * [`paths`]: every device endpoint's path, mounted by the console, called by the device.
//! * [`kinds`]: the fixed sets of values that travel as strings ([`CaptureMode`],
//!   [`ActivityKind`], [`HealthState`], [`ClipState`]), as enums with the same bytes.
//! * [`time`]: [`UnixMillis`], the wire's instant, and the one clock both ends read.
//!
//! # Transport and authentication
//!
//! HTTPS (HTTP/1.1) with JSON bodies, except segment uploads, which are the raw sealed bytes.
//! Times are Unix milliseconds (`*_ms`, typed [`UnixMillis`]), durations seconds (`*_secs`),
//! hashes lowercase hex SHA-256 of the exact bytes they name.
//!
//! ```text
//! enrollment (once)                       every later device request
//! ─────────────────                       ──────────────────────────
//! device: Ed25519 key pair (own)          Authorization: Bearer rvd_<64 hex>
//! POST /api/v1/enroll                     (the device token, shown to the device once;
//!   token        one-time, expiring         the console keeps only its SHA-256)
//!   public_key   32 bytes hex
//!   proof        Ed25519 signature by that key over
//!                "rearview-enroll-v1\n" ‖ token ‖ "\n" ‖ public_key_hex
//! ← device id, tenant id, device token,
//!   tenant signing key (Ed25519, base64) + key id,
//!   tenant sealing key (X25519)
//! ```
//!
//! The proof shows the enrolling party holds the private key it names, so a token sniffed
//! in flight cannot be bound to somebody else's key after the fact. After enrollment a bearer
//! token (random, 256 bits) authenticates the device: it is cheap to check on every request
//! and on a long-lived push stream, and TLS protects it in transit. The console scopes every
//! device request to the device the token belongs to: a device can only see and write its own
//! clips, segments, triggers and health.
//!
//! # Device endpoints
//!
//! Each path is a constant of [`paths`], which both the console's router and the device's
//! client use.
//!
//! ```text
//! POST /api/v1/enroll                         EnrollRequest → EnrollResponse
//! GET  /api/v1/device/policy                  → PolicyMessage (newest signed bundle)
//! GET  /api/v1/device/stream                  server-sent events, see below
//! POST /api/v1/device/triggers/{id}/ack       → 204 (stop re-sending this trigger)
//! PUT  /api/v1/device/clips/{clip_id}         ClipManifest → ClipStatus (which segments are missing)
//! GET  /api/v1/device/clips/{clip_id}         → ClipStatus
//! PUT  /api/v1/device/segments/{sha256}       raw sealed bytes (≤ 64 MiB) → SegmentAck
//! POST /api/v1/device/health                  HealthReport → 204
//! POST /api/v1/device/activity                ActivityBatch → ActivityAck (one result per event)
//! ```
//!
//! Upload is idempotent and resumable: the manifest goes first and the answer lists the
//! segments the console does not yet hold; a segment is accepted only if one of this device's
//! manifests names it and its bytes hash to the name; a clip is complete when every segment it
//! names is stored. Any step can be repeated after a crash of either side with the same result.
//!
//! The console checks what a manifest claims against its own records (the user's approval at
//! the clip's first recording, the trigger it names, the policy's window bounds) and its
//! device-signed chain against the key the device enrolled (every segment named has its signed
//! entry, the chain has no hole, no fork of entries it accepted before; see
//! [`ClipManifest::chain`]), and refuses a clip it cannot take with 409 and the reason: a refusal of that clip alone, which the device
//! sets aside. A segment upload is answered before its body is read when no manifest names the
//! hash (409) or the console holds it already (200, `newly_stored: false`); a device with too
//! many uploads in flight gets 429 with `Retry-After` (try again later, keep the clip); a body
//! longer than its manifest says is refused (400).
//!
//! # Push stream
//!
//! `GET /api/v1/device/stream` answers `text/event-stream`. On connect the console sends the
//! current policy and every trigger for this device not yet acknowledged; then every new
//! policy or trigger as it happens; a `ping` every 15 s (more often if the console's idle timeout
//! is under 45 s) keeps the console, and proxies, from closing the stream as idle.
//!
//! ```text
//! event: policy            event: trigger            event: ping
//! data: <PolicyMessage>    data: <TriggerMessage>    data: {}
//! ```
//!
//! The signed bundles and triggers (`signed` fields) are `rearview_config` envelopes; this
//! module carries them as JSON without looking inside, and the device verifies them.
//!
//! # Errors
//!
//! 4xx/5xx answers have the body [`ErrorBody`], except bodies the HTTP framework refuses before
//! a handler runs (413 too large, 415/422 JSON that does not fit the type), which come as plain
//! text. 4xx are permanent for that request (fix the request), 5xx and transport failures are
//! retryable.

use serde::{Deserialize, Serialize};

pub mod kinds;
pub mod paths;
pub mod time;

pub use kinds::{ActivityKind, CaptureMode, ClipState, HealthState, IndicatorKind};
/// The evidence chain's wire types, as a manifest carries them.
pub use rearview_evidence::chain::{Absence, Entry as ChainEntry};

/// What a device needs to keep and sign its chain, and the console to verify it
/// ([`rearview_evidence::chain`]): the same types and the one verifier, so both ends use the
/// contract's own rules without a dependency of their own on the evidence crate.
pub mod chain {
    pub use rearview_evidence::chain::{
        verify, verify_known, Absence, Appended, ChainError, ChainHead, ClipFacts, Entry, Gap,
        SegmentRef, Stream, VerifiedChain,
    };
    pub use rearview_evidence::keys::{PublicKey, Signer, SignerError};
}
pub use time::UnixMillis;

/// The message a device signs (with its own key) to prove it holds the key it enrolls.
pub fn enroll_proof_message(token: &str, public_key_hex: &str) -> Vec<u8> {
    format!("rearview-enroll-v1\n{token}\n{public_key_hex}").into_bytes()
}

/// Largest sealed segment the console accepts.
pub const MAX_SEGMENT_BYTES: usize = 64 * 1024 * 1024;
/// Largest clip manifest the console accepts: room for the most segments a clip may name
/// (8192) with a signed chain entry each (about 600 bytes of JSON apiece).
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and, where possible, how to fix it.
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token an admin created.
    pub token: String,
    /// The device's Ed25519 public key, 32 bytes hex.
    pub public_key: String,
    /// Ed25519 signature (64 bytes hex) over [`enroll_proof_message`].
    pub proof: String,
    /// Host name, for people reading the device list.
    pub hostname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The id the console gave this device; it appears in every policy and trigger for it.
    pub device_id: String,
    /// The tenant the device now belongs to.
    pub tenant_id: String,
    /// Bearer token for every later request. Shown once; keep it secret.
    pub device_token: String,
    /// The tenant's Ed25519 public key that signs policies and triggers, in
    /// `rearview_config::VerifyingKey`'s text form (standard base64).
    pub signing_public_key: String,
    /// Id of that signing key, as named in signed envelopes.
    pub signing_key_id: String,
    /// The tenant's X25519 public key that segments are sealed to, in
    /// `rearview_capture::seal::TenantPublicKey`'s text form.
    pub sealing_public_key: String,
}

/// A signed policy bundle for one device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyMessage {
    /// Bundle version; rises on every change.
    pub version: u64,
    /// The signed `rearview_config` envelope.
    pub signed: serde_json::Value,
}

/// A signed trigger for one device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerMessage {
    /// Trigger id; the device acknowledges it by this id and names it in the clip manifest.
    pub trigger_id: String,
    /// The signed `rearview_config` envelope.
    pub signed: serde_json::Value,
}

/// What a clip holds, sent before its segments.
///
/// # Open clips
///
/// A triggered clip is sent while its window is still running, so evidence leaves the device
/// as each segment closes rather than when the window ends. Such a manifest says `open: true`.
/// While the console's stored manifest is open, the device may send it again with *more*
/// segments (every segment already named stays, with the same fields) and, last, with
/// `open: false` and the final `missing` ranges; everything else must stay the same. An open
/// clip is never complete. Once closed the manifest is immutable; a late re-send of an older,
/// open version (a superseded request) changes nothing and is answered with the clip's status.
///
/// # Chain entries and absence notes
///
/// `chain` and `absent` are kept like segments: an update (an extension, a re-send that gives
/// up lost segments) keeps every entry and note already given, unchanged, and may add more
/// (the entries of the segments it adds, and notes for the segments it gives up); a closed
/// clip gains no chain entry. An entry is the same entry when its `(chain, seq)` is; a note
/// when the entry hash it explains is.
///
/// # Segments lost on the device
///
/// One exception to "every segment already named stays": a device that lost the spooled file
/// of a segment the console does not hold yet names it missing instead (a range covering it,
/// with the reason) and sends the manifest again without it, open or closed; the console then
/// stops waiting for it (see [`ClipManifest::gives_up_lost`]). Segments the console holds can
/// never be dropped, and a closed clip gains nothing else this way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipManifest {
    /// Chosen by the device, unique for it (e.g. random 128-bit hex).
    pub clip_id: String,
    /// The trigger this clip answers; `None` for all-activities uploads.
    pub trigger_id: Option<String>,
    /// `specific-activities` or `all-activities`.
    pub mode: CaptureMode,
    /// Principal name of the captured user.
    pub user: String,
    /// Must be the authenticated device's id.
    pub device_id: String,
    /// Window the clip covers, Unix ms.
    pub start_ms: UnixMillis,
    pub end_ms: UnixMillis,
    /// The sealed segments, in time order.
    pub segments: Vec<ManifestSegment>,
    /// Parts of the window that could not be provided (ring no longer held them, capture
    /// paused, …), so an investigator knows a gap is not a hidden one.
    pub missing: Vec<MissingRange>,
    /// The window is still running and more segments will be added (see above). Absent
    /// means closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// The device-signed chain entries that cover the clip ([`rearview_evidence::chain`]):
    /// one segment entry for every segment named, every gap entry between them, and the
    /// entries of segments the clip lacks (each with a note in `absent`), in chain order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainEntry>,
    /// Device-signed notes, one per chain entry whose segment this clip lacks, saying why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<Absence>,
}

impl ClipManifest {
    /// Whether `self` (stored, open) may be replaced by `next`: the same clip with every
    /// segment of `self` still named, unchanged.
    pub fn extended_by(&self, next: &ClipManifest) -> bool {
        self.open
            && self.same_clip(next)
            && names_all(&next.segments, &self.segments)
            && keeps_evidence(next, self)
    }

    /// Whether `older` is a superseded open version of `self`: the same clip, naming only
    /// segments `self` names.
    pub fn supersedes(&self, older: &ClipManifest) -> bool {
        older.open
            && self.same_clip(older)
            && names_all(&self.segments, &older.segments)
            && keeps_evidence(self, older)
    }

    /// Whether `next` may replace `self` (stored, not complete) because the device lost some
    /// segments: the same clip, every segment of `self` either still named unchanged or dropped
    /// from `next` while the console does not hold it (`held` says which it does) and a range
    /// of `next.missing` covers it. An open `self` may also gain segments and close, as in
    /// [`ClipManifest::extended_by`]; a closed one stays closed, gains no segment, and keeps
    /// every missing range it had.
    pub fn gives_up_lost(&self, next: &ClipManifest, held: impl Fn(&str) -> bool) -> bool {
        if !self.same_clip(next) || !keeps_evidence(next, self) {
            return false;
        }
        let kept: std::collections::HashSet<&ManifestSegment> = next.segments.iter().collect();
        let mut dropped = false;
        for s in &self.segments {
            if kept.contains(s) {
                continue;
            }
            let covered =
                next.missing.iter().any(|m| m.start_ms <= s.start_ms && m.end_ms >= s.end_ms);
            let renamed = next.segments.iter().any(|n| n.sha256 == s.sha256);
            if held(&s.sha256) || !covered || renamed {
                return false;
            }
            dropped = true;
        }
        if self.open {
            return dropped;
        }
        dropped
            && !next.open
            && names_all(&self.segments, &next.segments)
            && keeps_all(&self.chain, &next.chain, chain_key)
            && self.missing.iter().all(|m| next.missing.contains(m))
    }

    fn same_clip(&self, other: &ClipManifest) -> bool {
        self.clip_id == other.clip_id
            && self.trigger_id == other.trigger_id
            && self.mode == other.mode
            && self.user == other.user
            && self.device_id == other.device_id
            && self.start_ms == other.start_ms
            && self.end_ms == other.end_ms
    }
}

/// Whether every segment of `some` is in `all`, unchanged (a set: manifests name up to
/// thousands of segments and are compared on every re-send of an open clip).
fn names_all(all: &[ManifestSegment], some: &[ManifestSegment]) -> bool {
    let all: std::collections::HashSet<&ManifestSegment> = all.iter().collect();
    some.iter().all(|s| all.contains(s))
}

/// Whether `next` keeps every chain entry and absence note of `older`, unchanged (see "Chain
/// entries and absence notes" on [`ClipManifest`]).
fn keeps_evidence(next: &ClipManifest, older: &ClipManifest) -> bool {
    keeps_all(&next.chain, &older.chain, chain_key)
        && keeps_all(&next.absent, &older.absent, |a: &Absence| a.entry.as_str())
}

/// Where an entry stands: its chain and seq.
fn chain_key(e: &ChainEntry) -> (&str, u64) {
    (e.chain.as_str(), e.seq)
}

/// Whether every item of `some` is in `all` unchanged, items told apart by `key` (a map:
/// the types are not `Hash`, and a clip carries thousands of entries).
fn keeps_all<'a, T: PartialEq, K: std::hash::Hash + Eq>(
    all: &'a [T],
    some: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> bool {
    let all: std::collections::HashMap<K, &T> = all.iter().map(|t| (key(t), t)).collect();
    some.iter().all(|s| all.get(&key(s)).is_some_and(|t| *t == s))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSegment {
    /// SHA-256 (hex) of the sealed bytes.
    pub sha256: String,
    /// Size of the sealed bytes.
    pub size: u64,
    /// Time range the segment covers, Unix ms.
    pub start_ms: UnixMillis,
    pub end_ms: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingRange {
    pub start_ms: UnixMillis,
    pub end_ms: UnixMillis,
    /// Why it is missing, in words.
    pub reason: String,
}

/// The console's view of a clip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipStatus {
    pub clip_id: String,
    /// True once the clip is closed and every named segment is stored.
    pub complete: bool,
    /// Hashes the console still needs.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentAck {
    pub sha256: String,
    /// False when the console already had these bytes (a repeated upload).
    pub newly_stored: bool,
    /// Clips of this device that became complete with this segment.
    pub completed_clips: Vec<String>,
}

/// What a device says about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthReport {
    /// `capturing`, `idle`, `paused: cpu limit`, or a newer device's state.
    pub state: HealthState,
    /// Policy version the device is running.
    pub policy_version: u64,
    /// Principal names with a graphical session on the device (where triggers for them go).
    #[serde(default)]
    pub users: Vec<String>,
    /// Recent errors, newest last.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Anything else (ring/spool fill, upload use, …), shown as is.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// A user activity the device saw (an indicator), e.g. a file copied to removable media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityEvent {
    /// Principal name.
    pub user: String,
    /// Indicator kind, e.g. `removable_media_copy`, or a newer device's kind.
    pub kind: ActivityKind,
    /// When it happened, Unix ms.
    pub time_ms: UnixMillis,
    /// Kind-specific details (file, size, destination, …).
    #[serde(default)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivityBatch {
    pub events: Vec<ActivityEvent>,
}

/// The console's answer to a batch: events are taken one by one, so a bad event is refused
/// alone and the others are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivityAck {
    /// Events stored (all but the `invalid` ones).
    pub accepted: usize,
    /// Triggers the console's rules issued because of these events.
    pub triggers_issued: Vec<String>,
    /// Events that would have issued a trigger but were over the device's indicator rate
    /// limit (stored, counted, not acted on). Absent from older consoles.
    #[serde(default)]
    pub rate_limited: usize,
    /// One result per event, in the batch's order. Empty from older consoles.
    #[serde(default)]
    pub results: Vec<ActivityResult>,
}

/// What the console did with one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityResult {
    pub outcome: ActivityOutcome,
    /// The triggers it issued (`triggered` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trigger_ids: Vec<String>,
    /// Why it was refused, or why its trigger was (`invalid`, `trigger_refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The fate of one activity event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityOutcome {
    /// Malformed (user, kind): not stored.
    Invalid,
    /// Stored; no indicator rule for its kind.
    Stored,
    /// Stored; its user has no approval in force, so no trigger.
    NotApproved,
    /// Stored; over the device's indicator rate limit, so no trigger.
    RateLimited,
    /// Stored, and a rule issued a trigger.
    Triggered,
    /// Stored; the rule's trigger was refused (e.g. the event time is out of bounds).
    TriggerRefused,
}

impl ActivityOutcome {
    /// The name used on the wire and in the console's `activity.outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityOutcome::Invalid => "invalid",
            ActivityOutcome::Stored => "stored",
            ActivityOutcome::NotApproved => "not_approved",
            ActivityOutcome::RateLimited => "rate_limited",
            ActivityOutcome::Triggered => "triggered",
            ActivityOutcome::TriggerRefused => "trigger_refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rearview_evidence::chain::{SegmentRef, Stream};

    fn entry(seq: u64, signature: &str) -> ChainEntry {
        ChainEntry {
            chain: "c0".repeat(16),
            seq,
            prev: "00".repeat(32),
            stream: Stream {
                tenant: "t".into(),
                device: "d".into(),
                user: "alice".into(),
                session: "1".into(),
                monitor: 0,
            },
            from_utc_micros: seq as i64 * 1000,
            to_utc_micros: seq as i64 * 1000 + 999,
            segment: Some(SegmentRef { id: format!("{seq:032x}"), sha256: sha(seq) }),
            gap: None,
            signature: signature.into(),
        }
    }

    fn sha(i: u64) -> String {
        format!("{i:064x}")
    }

    fn absence(seq: u64) -> Absence {
        Absence {
            entry: format!("{:064x}", seq + 100),
            clip: "k".into(),
            reason: "evicted".into(),
            signature: "s".into(),
        }
    }

    /// An open clip of segments `0..n`, each with its chain entry.
    fn clip(n: u64, open: bool) -> ClipManifest {
        ClipManifest {
            clip_id: "k".into(),
            trigger_id: None,
            mode: CaptureMode::AllActivities,
            user: "alice".into(),
            device_id: "d".into(),
            start_ms: 0.into(),
            end_ms: 100_000.into(),
            segments: (0..n)
                .map(|i| ManifestSegment {
                    sha256: sha(i),
                    size: 10,
                    start_ms: (i as i64).into(),
                    end_ms: (i as i64 + 1).into(),
                })
                .collect(),
            missing: vec![],
            open,
            chain: (0..n).map(|i| entry(i, "sig")).collect(),
            absent: vec![],
        }
    }

    #[test]
    fn an_extension_keeps_every_chain_entry_and_absence_note_and_may_add() {
        let stored = clip(2, true);
        assert!(stored.extended_by(&clip(3, true)));
        assert!(stored.extended_by(&clip(3, false)));
        let mut dropped = clip(3, true);
        dropped.chain.remove(0);
        assert!(!stored.extended_by(&dropped), "an entry already given was dropped");
        let mut changed = clip(3, true);
        changed.chain[1] = entry(1, "another signature");
        assert!(!stored.extended_by(&changed), "an entry already given was changed");
        let mut noted = clip(2, true);
        noted.absent.push(absence(7));
        assert!(stored.extended_by(&noted), "adding an absence note is an extension");
        assert!(!noted.extended_by(&clip(3, true)), "the absence note was dropped");
        let mut renoted = clip(3, true);
        renoted.absent.push(Absence { reason: "other".into(), ..absence(7) });
        assert!(!noted.extended_by(&renoted), "the absence note was changed");
    }

    #[test]
    fn a_superseded_version_names_only_entries_and_notes_the_stored_one_has() {
        let mut stored = clip(3, false);
        stored.absent.push(absence(1));
        let mut older = clip(2, true);
        assert!(stored.supersedes(&older));
        older.chain[0] = entry(0, "forged");
        assert!(!stored.supersedes(&older), "an entry the stored version does not have");
        let mut older = clip(2, true);
        older.absent.push(absence(9));
        assert!(!stored.supersedes(&older), "a note the stored version does not have");
    }

    #[test]
    fn giving_up_lost_segments_keeps_their_chain_entries_and_adds_notes() {
        let stored = clip(3, false);
        let mut next = clip(3, false);
        next.segments.remove(1);
        next.missing.push(MissingRange {
            start_ms: 1.into(),
            end_ms: 2.into(),
            reason: "lost".into(),
        });
        next.absent.push(absence(1));
        assert!(stored.gives_up_lost(&next, |_| false));
        let mut unchained = next.clone();
        unchained.chain.remove(1);
        assert!(!stored.gives_up_lost(&unchained, |_| false), "the lost segment's entry went");
        let mut gained = next.clone();
        gained.chain.push(entry(5, "sig"));
        assert!(!stored.gives_up_lost(&gained, |_| false), "a closed clip gained an entry");
        let mut open = clip(3, true);
        open.absent.push(absence(4));
        let mut next_open = next.clone();
        next_open.open = true;
        assert!(!open.gives_up_lost(&next_open, |_| false), "the open clip's note went");
        next_open.absent.push(absence(4));
        next_open.chain.push(entry(5, "sig"));
        assert!(open.gives_up_lost(&next_open, |_| false), "an open clip may add entries");
    }
}
