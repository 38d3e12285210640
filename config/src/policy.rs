//! The policy bundle payload: what a tenant tells its agents to capture, for whom, within which
//! limits.
//!
//! Sent as JSON inside a [`crate::SignedEnvelope`] (domain `rearview-policy-v1`). Times are
//! RFC 3339 strings, durations are whole seconds (`*_secs`), sizes whole bytes (`*_bytes`;
//! "MB" in this crate means 10^6 bytes, as in the product's settings). Unknown fields are refused
//! everywhere, so an agent never silently ignores a restriction it does not understand. Sections
//! left out take the defaults of DESIGN.md ("Defaults").
//!
//! ```text
//! {
//!   "tenant": "contoso",                      TenantId; must be the agent's own
//!   "version": 12,                            strictly rising per tenant; agents refuse rollback
//!   "issued_at":  "2026-11-22T02:00:00Z",     when the console signed it
//!   "not_before": "2026-11-22T02:00:00Z",     not in force before
//!   "expires_at": "2026-12-22T02:00:00Z",     not in force from (agent stops capturing)
//!   "devices": "all" | {"only": ["laptop-42", …]},
//!   "capture":   {"enabled": true, "fps": 1, "max_monitors": 4, "quality": "lossless",
//!                 "segment_secs": 10, "ring_retention_secs": 600},
//!   "limits":    {"upload_bytes_per_user_per_day": 500000000,
//!                 "offline_cache": {"max_bytes": 500000000, "when_full": "overwrite_oldest",
//!                                   "warn_percent": 90},
//!                 "cpu_limit_percent": 5},
//!   "window":    {"max_before_secs": 300, "max_after_secs": 600},
//!   "indicators": [{"kind": "removable_media_copy", "before_secs": 300, "after_secs": 600}],
//!   "notify":    {"enabled": true, "text": "This session may be recorded …"},
//!   "users": [{"principal": "alice@contoso.example", "mode": "specific-activities",
//!              "approval": {"requested_by": "ivan@contoso.example",
//!                           "approved_by": "rita@contoso.example",
//!                           "justification": "case 4711", "approved_at": "…", "expires_at": "…",
//!                           "approver_grant": {"granted_by": "olga@contoso.example",
//!                                              "granted_at": "…",
//!                                              "confirmed_by": "paul@contoso.example",
//!                                              "confirmed_at": "…"}}}]
//! }
//! ```
//!
//! `approver_grant` says how the approver came to hold the approver role: who granted it and
//! when, and the second person who confirmed the grant and when (from then on the role was
//! held). It may be absent in bundles signed before it existed, so those still verify; the
//! console always fills it. Grants carried over from such consoles name `legacy` as granter and
//! confirmer, the first approver made by `rearview-console init` names `console:init`.
//!
//! # One set of rules for an approval
//!
//! [`validate_approval`] holds every rule a single approval must follow: the names are valid
//! principals, approver and requester are different people (compared in canonical form,
//! [`canonical_name`]), the justification is 1..=2000 bytes without control characters other
//! than newline and tab, and the approver's role was neither granted nor confirmed by the
//! requester (nor confirmed by the approver). The console's API calls it before it stores a
//! request or a decision, the console's signer (through [`UserScope::validate`]) before it puts
//! a record into a bundle, and the agent (through [`PolicyPayload::validate`]) after verifying
//! one: what the API accepts, the signer signs and the agent keeps.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{DeviceId, LocalAccounts, Principal, TenantId};

/// Largest accepted free-text field (justification, notice text, trigger object), in bytes.
pub const MAX_TEXT_LEN: usize = 2000;

/// Most users one bundle may name.
pub const MAX_USERS: usize = 10_000;

/// Most monitors captured per session (the product's bound).
pub const MAX_MONITORS: u8 = 4;

/// Longest capture window on either side of an event, and longest ring retention: one day.
pub const MAX_WINDOW_SECS: u32 = 24 * 3600;

/// A payload that parses but breaks a rule. Never retryable: the console must issue a
/// corrected one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A field holds a value outside its allowed range or shape.
    #[error("field {field} {why}")]
    Field {
        /// Dotted path of the field, e.g. `capture.fps` or `users[3].approval.justification`.
        field: String,
        /// The rule broken, e.g. "must be between 1 and 30, is 0".
        why: String,
    },
    /// An approval whose approver is its requester (compared case-insensitively).
    #[error("approval for {principal} was approved by its own requester {approver}; a different person must approve it")]
    SelfApproval {
        /// The captured user.
        principal: Principal,
        /// The person who both requested and approved.
        approver: Principal,
    },
}

pub(crate) fn field_err(field: impl Into<String>, why: impl Into<String>) -> ValidationError {
    ValidationError::Field { field: field.into(), why: why.into() }
}

pub(crate) fn check_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ValidationError> {
    if v < lo || v > hi {
        return Err(field_err(field, format!("must be between {lo} and {hi}, is {v}")));
    }
    Ok(())
}

/// RFC 3339 can only write years 0000..=9999 and offsets in whole minutes; anything else could
/// not be serialised into the signed JSON.
pub(crate) fn check_time(field: &str, t: OffsetDateTime) -> Result<(), ValidationError> {
    if !(0..=9999).contains(&t.year()) || t.offset().seconds_past_minute() != 0 {
        return Err(field_err(
            field,
            "must be representable in RFC 3339 (years 0000-9999, offset in whole minutes)",
        ));
    }
    Ok(())
}

pub(crate) fn check_text(field: &str, s: &str, allow_empty: bool) -> Result<(), ValidationError> {
    if !allow_empty && s.trim().is_empty() {
        return Err(field_err(field, "must not be empty"));
    }
    if s.len() > MAX_TEXT_LEN {
        return Err(field_err(
            field,
            format!("must be at most {MAX_TEXT_LEN} bytes, is {}", s.len()),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(field_err(
            field,
            "must not hold control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// A policy bundle's payload. Build one (console), sign it with [`crate::sign_policy`]; an agent
/// gets it back only through [`crate::TrustStore::accept_policy`] as a [`crate::VerifiedPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPayload {
    /// Tenant the bundle belongs to; an agent refuses other tenants' bundles.
    pub tenant: TenantId,
    /// Version, strictly rising per tenant (≥ 1). An agent accepts only versions above the last it
    /// accepted, so an old bundle (e.g. one with a revoked approval) cannot be replayed.
    pub version: u64,
    /// When the console signed the bundle.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The bundle is not in force before this instant.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// The bundle is not in force from this instant on; an agent whose bundle expired captures
    /// nothing until it gets a newer one (fail closed).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Devices the bundle applies to.
    pub devices: DeviceScope,
    /// How to record.
    #[serde(default)]
    pub capture: CaptureSettings,
    /// Resource bounds on the device.
    #[serde(default)]
    pub limits: Limits,
    /// Largest capture window a trigger may ask for.
    #[serde(default)]
    pub window: WindowBounds,
    /// Local events that create a trigger on the device itself (used while the console is
    /// unreachable). Each kind at most once.
    #[serde(default)]
    pub indicators: Vec<IndicatorRule>,
    /// Whether and how the captured user is told.
    #[serde(default)]
    pub notify: Notice,
    /// The users in scope. A user not listed (or whose approval is not in force) is not recorded
    /// at all, not even into the ring.
    #[serde(default)]
    pub users: Vec<UserScope>,
}

/// Which devices a bundle applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceScope {
    /// Every device of the tenant. JSON: `"all"`.
    All,
    /// Only these devices. JSON: `{"only": ["laptop-42"]}`. Must not be empty.
    Only(Vec<DeviceId>),
}

impl DeviceScope {
    /// Whether `device` is in scope.
    pub fn includes(&self, device: &DeviceId) -> bool {
        match self {
            DeviceScope::All => true,
            DeviceScope::Only(list) => list.contains(device),
        }
    }
}

/// How to record. Defaults: capture off, 1 fps, 4 monitors, lossless, 10 s segments, 10 min ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// Master switch. Off by default: nothing is recorded until a policy turns it on.
    #[serde(default = "default_capture_enabled")]
    pub enabled: bool,
    /// Frames per second per monitor, 1..=30. The agent may lower it when above the CPU limit.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Most monitors recorded per session, 1..=4 (the first ones, in the display's order).
    #[serde(default = "default_max_monitors")]
    pub max_monitors: u8,
    /// Lossless or lossy encoding.
    #[serde(default)]
    pub quality: Quality,
    /// Length of a segment (the unit of storage, eviction and upload), 1..=300 s. Shorter cuts
    /// clips more finely; longer costs fewer keyframes.
    #[serde(default = "default_segment_secs")]
    pub segment_secs: u32,
    /// How far back the on-device ring keeps recordings, segment_secs..=86400 s. Bounds how far
    /// before an event a clip can reach.
    #[serde(default = "default_ring_retention_secs")]
    pub ring_retention_secs: u32,
}

fn default_capture_enabled() -> bool {
    false
}
fn default_fps() -> u32 {
    1
}
fn default_max_monitors() -> u8 {
    MAX_MONITORS
}
fn default_segment_secs() -> u32 {
    10
}
fn default_ring_retention_secs() -> u32 {
    600
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            enabled: default_capture_enabled(),
            fps: default_fps(),
            max_monitors: default_max_monitors(),
            quality: Quality::default(),
            segment_secs: default_segment_secs(),
            ring_retention_secs: default_ring_retention_secs(),
        }
    }
}

impl CaptureSettings {
    /// Segment length as a duration.
    pub fn segment(&self) -> Duration {
        Duration::from_secs(self.segment_secs.into())
    }
    /// Ring retention as a duration.
    pub fn ring_retention(&self) -> Duration {
        Duration::from_secs(self.ring_retention_secs.into())
    }
}

/// Encoding quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Every pixel kept (the default; evidence should show what was on screen).
    #[default]
    Lossless,
    /// Smaller clips, text may blur. Refused by [`PolicyPayload::validate`] until the codec
    /// has a lossy mode.
    Lossy,
}

/// Resource bounds on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most bytes uploaded per captured user per UTC day (default 500 MB). Above it, clips wait in
    /// the offline cache for the next day.
    #[serde(default = "default_upload_bytes")]
    pub upload_bytes_per_user_per_day: u64,
    /// The offline cache (spool) that holds clips while the console is unreachable.
    #[serde(default)]
    pub offline_cache: OfflineCache,
    /// Share of the whole machine's CPU capture may use, 1..=100 % (default 5). Above it the
    /// agent lowers the frame rate, and pauses capture if that is not enough.
    #[serde(default = "default_cpu_limit_percent")]
    pub cpu_limit_percent: u8,
}

fn default_upload_bytes() -> u64 {
    500_000_000
}
fn default_cpu_limit_percent() -> u8 {
    5
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upload_bytes_per_user_per_day: default_upload_bytes(),
            offline_cache: OfflineCache::default(),
            cpu_limit_percent: default_cpu_limit_percent(),
        }
    }
}

/// The offline cache. Default: 500 MB, overwrite oldest, warn at 90 %.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineCache {
    /// Most bytes of clips held for upload (≥ 1 MB).
    #[serde(default = "default_offline_cache_bytes")]
    pub max_bytes: u64,
    /// What happens when a new clip does not fit.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Fill level, in percent (1..=100), at which the agent reports a warning to the console.
    #[serde(default = "default_warn_percent")]
    pub warn_percent: u8,
}

fn default_offline_cache_bytes() -> u64 {
    500_000_000
}
fn default_warn_percent() -> u8 {
    90
}

impl Default for OfflineCache {
    fn default() -> Self {
        OfflineCache {
            max_bytes: default_offline_cache_bytes(),
            when_full: WhenFull::default(),
            warn_percent: default_warn_percent(),
        }
    }
}

/// What the offline cache does when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the oldest clips to make room (the product's behaviour, the default).
    #[default]
    OverwriteOldest,
    /// Keep what is cached and drop the new clip (and report it).
    DropNewest,
}

/// Largest capture window a trigger may ask for. Default: 5 min before, 10 min after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowBounds {
    /// Most seconds before the event, at most `capture.ring_retention_secs` (the ring cannot give
    /// more).
    #[serde(default = "default_max_before_secs")]
    pub max_before_secs: u32,
    /// Most seconds after the event, at most 86400.
    #[serde(default = "default_max_after_secs")]
    pub max_after_secs: u32,
}

fn default_max_before_secs() -> u32 {
    300
}
fn default_max_after_secs() -> u32 {
    600
}

impl Default for WindowBounds {
    fn default() -> Self {
        WindowBounds {
            max_before_secs: default_max_before_secs(),
            max_after_secs: default_max_after_secs(),
        }
    }
}

/// Kinds of events that can bring a user's recording into a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndicatorKind {
    /// A file copied to removable media (USB stick, SD card). Detected on the device.
    RemovableMediaCopy,
    /// A file copied out of a folder the agent config watches. Detected on the device.
    WatchedFolderCopy,
    /// A file uploaded to a cloud service (known to the console from other signals).
    CloudUpload,
    /// A document printed (known to the console from other signals).
    Print,
    /// An investigator asked for a clip (console only).
    Manual,
}

impl IndicatorKind {
    /// Whether the agent can see this kind of event by itself, so a policy may make it a local
    /// indicator rule.
    pub fn detected_on_device(self) -> bool {
        matches!(self, IndicatorKind::RemovableMediaCopy | IndicatorKind::WatchedFolderCopy)
    }

    /// Human wording, e.g. for "file copied to removable media: roadmap.docx".
    pub fn describe(self) -> &'static str {
        match self {
            IndicatorKind::RemovableMediaCopy => "file copied to removable media",
            IndicatorKind::WatchedFolderCopy => "file copied from a watched folder",
            IndicatorKind::CloudUpload => "file uploaded to a cloud service",
            IndicatorKind::Print => "document printed",
            IndicatorKind::Manual => "clip requested by an investigator",
        }
    }
}

/// A local event that creates a trigger on the device (used while the console is unreachable;
/// the console still sees the resulting clip and its reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorRule {
    /// Which event; must be one detected on the device.
    pub kind: IndicatorKind,
    /// Seconds before the event to include, at most `window.max_before_secs`.
    pub before_secs: u32,
    /// Seconds after the event to include, at most `window.max_after_secs`.
    pub after_secs: u32,
}

/// Whether and how the captured user is told. Default: on, with the agent's built-in text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// Show a notice to the user while they are in scope.
    #[serde(default = "default_notify_enabled")]
    pub enabled: bool,
    /// Text to show instead of the built-in one (≤ 2000 bytes).
    #[serde(default)]
    pub text: Option<String>,
}

fn default_notify_enabled() -> bool {
    true
}

impl Default for Notice {
    fn default() -> Self {
        Notice { enabled: default_notify_enabled(), text: None }
    }
}

/// One user in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserScope {
    /// Who (matched against session owners with [`LocalAccounts::names`]).
    pub principal: Principal,
    /// What may leave the device.
    pub mode: CaptureMode,
    /// The approval that allows capturing this user. Capture only while it is in force.
    pub approval: Approval,
}

/// What may leave the device for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureMode {
    /// Record into the ring only; upload only the window of an approved trigger.
    SpecificActivities,
    /// Upload everything continuously.
    AllActivities,
}

/// Approval of capturing one user, given by someone other than who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Who asked for the capture (admin).
    pub requested_by: Principal,
    /// Who approved it (approver role); never the requester.
    pub approved_by: Principal,
    /// Why, for the audit trail (1..=2000 bytes).
    pub justification: String,
    /// When it was approved; not in force before.
    #[serde(with = "time::serde::rfc3339")]
    pub approved_at: OffsetDateTime,
    /// Not in force from this instant on: capture of the user stops.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// How the approver came to hold the approver role. Optional on parse so that bundles
    /// signed before it existed still verify; the console always fills it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_grant: Option<RoleGrant>,
}

/// A grant of the approver role: who gave it, and the second person who confirmed it (the
/// role is held from the confirmation on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// Who granted the role (an admin; `legacy` or `console:init`, see the module docs).
    pub granted_by: Principal,
    /// When it was granted.
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
    /// Who confirmed the grant: an approver other than the granter and the grantee.
    pub confirmed_by: Principal,
    /// From when the role was held; never after the approval it allowed.
    #[serde(with = "time::serde::rfc3339")]
    pub confirmed_at: OffsetDateTime,
}

/// One approval's names and words as the console has them, before any of it is a signed
/// [`Approval`]: the input of [`validate_approval`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApprovalRecord<'a> {
    /// The user to capture.
    pub user: &'a str,
    /// Who asked for the capture.
    pub requested_by: &'a str,
    /// Who approved it; `None` while the request waits for a decision.
    pub approved_by: Option<&'a str>,
    /// Why.
    pub justification: &'a str,
    /// Who granted the approver their role, when known.
    pub approver_granted_by: Option<&'a str>,
    /// Who confirmed that grant, when known.
    pub approver_confirmed_by: Option<&'a str>,
}

/// The form in which people's names are compared: trimmed, ASCII letters in lower case; the
/// same comparison as [`Principal::same_as`], so that the console (uniqueness of people,
/// requester against approver and granter) and the agent agree on who is the same person.
pub fn canonical_name(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// The rules one approval must follow (see the module docs, "One set of rules"). Fields are
/// named as in [`ApprovalRecord`] (`user`, `requested_by`, `approved_by`, `justification`,
/// `approver_grant.granted_by`, `approver_grant.confirmed_by`); an approver who is the requester
/// is [`ValidationError::SelfApproval`].
pub fn validate_approval(r: &ApprovalRecord<'_>) -> Result<(), ValidationError> {
    let principal = |field: &str, s: &str| {
        Principal::new(s).map_err(|e| field_err(field, format!("is not a valid name: {}", e.why)))
    };
    let user = principal("user", r.user)?;
    let requested_by = principal("requested_by", r.requested_by)?;
    let approved_by = r.approved_by.map(|a| principal("approved_by", a)).transpose()?;
    if let Some(approver) = &approved_by {
        if approver.same_as(&requested_by) {
            return Err(ValidationError::SelfApproval {
                principal: user,
                approver: approver.clone(),
            });
        }
    }
    check_text("justification", r.justification, false)?;
    if let Some(g) = r.approver_granted_by {
        if principal("approver_grant.granted_by", g)?.same_as(&requested_by) {
            return Err(field_err(
                "approver_grant.granted_by",
                format!("is the requester {requested_by}: an approver given the role by the requester may not decide their requests"),
            ));
        }
    }
    if let Some(c) = r.approver_confirmed_by {
        let c = principal("approver_grant.confirmed_by", c)?;
        if c.same_as(&requested_by) {
            return Err(field_err(
                "approver_grant.confirmed_by",
                format!("is the requester {requested_by}: an approver whose role the requester confirmed may not decide their requests"),
            ));
        }
        if approved_by.as_ref().is_some_and(|a| a.same_as(&c)) {
            return Err(field_err(
                "approver_grant.confirmed_by",
                format!("is the approver {c}: nobody confirms their own approver role"),
            ));
        }
    }
    Ok(())
}

impl UserScope {
    /// The approval's names and words, as [`validate_approval`] takes them.
    pub fn record(&self) -> ApprovalRecord<'_> {
        let a = &self.approval;
        let grant = a.approver_grant.as_ref();
        ApprovalRecord {
            user: self.principal.as_str(),
            requested_by: a.requested_by.as_str(),
            approved_by: Some(a.approved_by.as_str()),
            justification: &a.justification,
            approver_granted_by: grant.map(|g| g.granted_by.as_str()),
            approver_confirmed_by: grant.map(|g| g.confirmed_by.as_str()),
        }
    }

    /// Checks this one entry: [`validate_approval`], then its times. Fields are named from the
    /// entry (`principal`, `approval.justification`, `approval.approver_grant.confirmed_at`, …).
    /// The console's signer calls it per record, to leave out (not sign) one it refuses.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_approval(&self.record()).map_err(|e| match e {
            ValidationError::Field { field, why } if field == "user" => field_err("principal", why),
            ValidationError::Field { field, why } => field_err(format!("approval.{field}"), why),
            other => other,
        })?;
        let a = &self.approval;
        check_time("approval.approved_at", a.approved_at)?;
        check_time("approval.expires_at", a.expires_at)?;
        if a.expires_at <= a.approved_at {
            return Err(field_err("approval.expires_at", "must be after approved_at"));
        }
        if let Some(g) = &a.approver_grant {
            check_time("approval.approver_grant.granted_at", g.granted_at)?;
            check_time("approval.approver_grant.confirmed_at", g.confirmed_at)?;
            if g.confirmed_at < g.granted_at {
                return Err(field_err(
                    "approval.approver_grant.confirmed_at",
                    "must not be before granted_at",
                ));
            }
            if g.confirmed_at > a.approved_at {
                return Err(field_err(
                    "approval.approver_grant.confirmed_at",
                    "must not be after approved_at: the approver did not hold the role yet",
                ));
            }
        }
        Ok(())
    }
}

impl Approval {
    /// Whether the approval is in force at `t` (`approved_at <= t < expires_at`).
    pub fn in_force_at(&self, t: OffsetDateTime) -> bool {
        self.approved_at <= t && t < self.expires_at
    }
}

/// Why a payload's bytes are not a payload. Never retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} payload is not valid JSON of the expected schema: {why}")]
pub struct PayloadError {
    /// "policy bundle" or "trigger".
    pub what: &'static str,
    /// The parser's message (line, column, field).
    pub why: String,
}

impl PolicyPayload {
    /// A bundle with every section at its default (capture off, no users), valid from `issued_at`
    /// until `expires_at`, for all devices.
    pub fn new(
        tenant: TenantId,
        version: u64,
        issued_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Self {
        PolicyPayload {
            tenant,
            version,
            issued_at,
            not_before: issued_at,
            expires_at,
            devices: DeviceScope::All,
            capture: CaptureSettings::default(),
            limits: Limits::default(),
            window: WindowBounds::default(),
            indicators: Vec::new(),
            notify: Notice::default(),
            users: Vec::new(),
        }
    }

    /// Parses payload bytes (as found inside a verified envelope). Size is capped by the envelope.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes)
            .map_err(|e| PayloadError { what: "policy bundle", why: e.to_string() })
    }

    /// The JSON bytes that get signed. Fails only for timestamps RFC 3339 cannot write, which
    /// [`PolicyPayload::validate`] refuses.
    pub fn to_json(&self) -> Result<Vec<u8>, PayloadError> {
        serde_json::to_vec(self)
            .map_err(|e| PayloadError { what: "policy bundle", why: e.to_string() })
    }

    /// Whether the bundle itself is in force at `t` (`not_before <= t < expires_at`).
    pub fn in_force_at(&self, t: OffsetDateTime) -> bool {
        self.not_before <= t && t < self.expires_at
    }

    /// The scope entry for `principal`, if listed (approval not checked).
    pub fn user(&self, principal: &Principal) -> Option<&UserScope> {
        self.users.iter().find(|u| u.principal.same_as(principal))
    }

    /// The scope entry naming local account `account` (by `accounts`' rule,
    /// [`LocalAccounts::names`]) whose approval is in force at `t`. When several entries name
    /// the account, the first in the bundle wins; its principal is what the account's segments
    /// are labelled with.
    pub fn approved_account(
        &self,
        accounts: &LocalAccounts,
        account: &str,
        t: OffsetDateTime,
    ) -> Option<&UserScope> {
        self.users
            .iter()
            .find(|u| accounts.names(&u.principal, account) && u.approval.in_force_at(t))
    }

    /// The local indicator rule for `kind`, if any.
    pub fn indicator(&self, kind: IndicatorKind) -> Option<&IndicatorRule> {
        self.indicators.iter().find(|r| r.kind == kind)
    }

    /// Checks every rule that does not depend on the clock or on the receiving device: ranges,
    /// consistency between sections, unique users, and each user's [`UserScope::validate`]
    /// (approver ≠ requester, …). The console calls it before signing ([`crate::sign_policy`]);
    /// the agent again after verifying.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.version == 0 {
            return Err(field_err("version", "must be at least 1"));
        }
        check_time("issued_at", self.issued_at)?;
        check_time("not_before", self.not_before)?;
        check_time("expires_at", self.expires_at)?;
        if self.expires_at <= self.issued_at {
            return Err(field_err("expires_at", "must be after issued_at"));
        }
        if self.expires_at <= self.not_before {
            return Err(field_err("expires_at", "must be after not_before"));
        }
        if let DeviceScope::Only(list) = &self.devices {
            if list.is_empty() {
                return Err(field_err(
                    "devices.only",
                    "must name at least one device (or use \"all\")",
                ));
            }
        }
        let c = &self.capture;
        check_range("capture.fps", c.fps, 1, 30)?;
        check_range("capture.max_monitors", c.max_monitors, 1, MAX_MONITORS)?;
        check_range("capture.segment_secs", c.segment_secs, 1, 300)?;
        if c.quality != Quality::Lossless {
            // Every field acts or is refused: the codec has no lossy mode yet (issue 18).
            return Err(field_err(
                "capture.quality",
                "must be \"lossless\": this version's codec has no lossy mode",
            ));
        }
        check_range(
            "capture.ring_retention_secs",
            c.ring_retention_secs,
            c.segment_secs,
            MAX_WINDOW_SECS,
        )?;
        let l = &self.limits;
        if l.upload_bytes_per_user_per_day == 0 {
            return Err(field_err("limits.upload_bytes_per_user_per_day", "must be above 0"));
        }
        check_range(
            "limits.offline_cache.max_bytes",
            l.offline_cache.max_bytes,
            1_000_000,
            u64::MAX,
        )?;
        check_range("limits.offline_cache.warn_percent", l.offline_cache.warn_percent, 1, 100)?;
        check_range("limits.cpu_limit_percent", l.cpu_limit_percent, 1, 100)?;
        let w = &self.window;
        check_range("window.max_before_secs", w.max_before_secs, 0, c.ring_retention_secs)?;
        check_range("window.max_after_secs", w.max_after_secs, 0, MAX_WINDOW_SECS)?;
        let mut kinds = HashSet::new();
        for (i, r) in self.indicators.iter().enumerate() {
            let f = |name: &str| format!("indicators[{i}].{name}");
            if !r.kind.detected_on_device() {
                return Err(field_err(f("kind"), "must be an event the device detects (removable_media_copy, watched_folder_copy)"));
            }
            if !kinds.insert(r.kind) {
                return Err(field_err(f("kind"), "appears more than once"));
            }
            check_range(&f("before_secs"), r.before_secs, 0, w.max_before_secs)?;
            check_range(&f("after_secs"), r.after_secs, 0, w.max_after_secs)?;
            if r.before_secs == 0 && r.after_secs == 0 {
                return Err(field_err(f("after_secs"), "window must not be empty"));
            }
        }
        if let Some(text) = &self.notify.text {
            check_text("notify.text", text, false)?;
        }
        if self.users.len() > MAX_USERS {
            return Err(field_err("users", format!("must name at most {MAX_USERS} users")));
        }
        let mut seen = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !seen.insert(&u.principal) {
                return Err(field_err(
                    format!("users[{i}].principal"),
                    format!("{} is listed twice", u.principal),
                ));
            }
            u.validate().map_err(|e| match e {
                ValidationError::Field { field, why } => {
                    field_err(format!("users[{i}].{field}"), why)
                }
                other => other,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn p(s: &str) -> Principal {
        Principal::new(s).unwrap()
    }

    pub(crate) fn sample() -> PolicyPayload {
        let mut pol = PolicyPayload::new(
            TenantId::new("contoso").unwrap(),
            3,
            datetime!(2026-11-22 00:00 UTC),
            datetime!(2026-12-22 00:00 UTC),
        );
        pol.capture.enabled = true;
        pol.indicators.push(IndicatorRule {
            kind: IndicatorKind::RemovableMediaCopy,
            before_secs: 300,
            after_secs: 600,
        });
        pol.users.push(UserScope {
            principal: p("alice@contoso.example"),
            mode: CaptureMode::SpecificActivities,
            approval: Approval {
                requested_by: p("ivan@contoso.example"),
                approved_by: p("rita@contoso.example"),
                justification: "case 4711".into(),
                approved_at: datetime!(2026-11-21 00:00 UTC),
                expires_at: datetime!(2026-12-21 00:00 UTC),
                approver_grant: Some(RoleGrant {
                    granted_by: p("olga@contoso.example"),
                    granted_at: datetime!(2026-11-01 00:00 UTC),
                    confirmed_by: p("paul@contoso.example"),
                    confirmed_at: datetime!(2026-11-02 00:00 UTC),
                }),
            },
        });
        pol
    }

    /// Each way of breaking one approval is refused alike by [`validate_approval`] (what the
    /// console's API calls) and by [`PolicyPayload::validate`] (what the console's signer and the
    /// agent's trust store call), with the same rule and the field named from where it sits.
    #[test]
    fn one_set_of_approval_rules_for_the_console_api_its_signer_and_the_agent() {
        type Break = fn(&mut UserScope);
        let cases: &[(&str, Break)] = &[
            ("approval.justification", |u| u.approval.justification = "j".repeat(MAX_TEXT_LEN + 1)),
            ("approval.justification", |u| u.approval.justification = "case\r4711".into()),
            ("approval.justification", |u| u.approval.justification = "case \u{1b}[2J".into()),
            ("approval.approver_grant.granted_by", |u| {
                u.approval.approver_grant.as_mut().unwrap().granted_by = p("IVAN@contoso.example")
            }),
            ("approval.approver_grant.confirmed_by", |u| {
                u.approval.approver_grant.as_mut().unwrap().confirmed_by = p("ivan@contoso.example")
            }),
            ("approval.approver_grant.confirmed_by", |u| {
                u.approval.approver_grant.as_mut().unwrap().confirmed_by = p("Rita@contoso.example")
            }),
        ];
        for (field, break_it) in cases {
            let mut pol = sample();
            break_it(&mut pol.users[0]);
            let alone = validate_approval(&pol.users[0].record()).unwrap_err();
            let (
                ValidationError::Field { why: why_alone, .. },
                Err(ValidationError::Field { field: f, why }),
            ) = (alone, pol.validate())
            else {
                panic!("breaking {field}: not a field error");
            };
            assert_eq!(
                (f.as_str(), why.as_str()),
                (format!("users[0].{field}").as_str(), why_alone.as_str())
            );
            let key = crate::SigningKey::generate().unwrap();
            assert!(crate::sign_policy(&key, &pol).is_err(), "signed despite {field}");
        }
        // An approver who is the requester in canonical form (Carol for carol).
        let mut pol = sample();
        pol.users[0].approval.requested_by = p("carol");
        pol.users[0].approval.approved_by = p("Carol");
        assert!(matches!(
            validate_approval(&pol.users[0].record()),
            Err(ValidationError::SelfApproval { .. })
        ));
        assert!(matches!(pol.validate(), Err(ValidationError::SelfApproval { .. })));
        // A request not yet decided is checked with the same rules, minus the approver's.
        let pending = ApprovalRecord { approved_by: None, ..pol.users[0].record() };
        assert!(validate_approval(&pending).is_ok());
        let bad_user = ApprovalRecord { user: "al\u{7}ice", ..pending };
        assert!(
            matches!(validate_approval(&bad_user), Err(ValidationError::Field { field, .. }) if field == "user")
        );
    }

    #[test]
    fn a_grant_confirmed_after_the_approval_is_refused_and_an_absent_one_still_parses() {
        let mut pol = sample();
        let g = pol.users[0].approval.approver_grant.as_mut().unwrap();
        g.confirmed_at = datetime!(2026-11-21 00:00:01 UTC);
        match pol.validate() {
            Err(ValidationError::Field { field, .. }) => {
                assert_eq!(field, "users[0].approval.approver_grant.confirmed_at")
            }
            other => panic!("{other:?}"),
        }
        // A bundle signed before grants were recorded.
        let mut v = serde_json::to_value(sample()).unwrap();
        v["users"][0]["approval"].as_object_mut().unwrap().remove("approver_grant");
        let old = PolicyPayload::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        old.validate().unwrap();
        assert_eq!(old.users[0].approval.approver_grant, None);
    }

    #[test]
    fn canonical_names_compare_as_principals_do() {
        for (a, b) in [("Carol", "carol"), ("ADMIN", "admin"), ("Ünal", "ünal"), ("a.b@C", "A.B@c")]
        {
            let same = canonical_name(a) == canonical_name(b);
            assert_eq!(same, p(a).same_as(&p(b)), "{a} / {b}");
        }
        assert_eq!(canonical_name("  Rita\t"), "rita");
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let pol = sample();
        pol.validate().unwrap();
        let back = PolicyPayload::from_json(&pol.to_json().unwrap()).unwrap();
        assert_eq!(back, pol);
    }

    #[test]
    fn minimal_json_takes_design_defaults() {
        let json = br#"{"tenant":"t","version":1,"issued_at":"2026-11-22T00:00:00Z",
            "not_before":"2026-11-22T00:00:00Z","expires_at":"2026-11-23T00:00:00Z","devices":"all"}"#;
        let pol = PolicyPayload::from_json(json).unwrap();
        pol.validate().unwrap();
        assert!(!pol.capture.enabled);
        assert_eq!(pol.capture.fps, 1);
        assert_eq!(pol.capture.max_monitors, 4);
        assert_eq!(pol.capture.quality, Quality::Lossless);
        assert_eq!(pol.capture.ring_retention_secs, 600);
        assert_eq!(pol.capture.segment_secs, 10);
        assert_eq!(pol.limits.upload_bytes_per_user_per_day, 500_000_000);
        assert_eq!(pol.limits.offline_cache.max_bytes, 500_000_000);
        assert_eq!(pol.limits.offline_cache.when_full, WhenFull::OverwriteOldest);
        assert_eq!(pol.limits.offline_cache.warn_percent, 90);
        assert_eq!(pol.limits.cpu_limit_percent, 5);
        assert!(pol.notify.enabled);
        assert!(pol.users.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["capture"]["blur_faces"] = true.into();
        assert!(PolicyPayload::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = 1.into();
        assert!(PolicyPayload::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn device_scope_json_forms() {
        let only: DeviceScope = serde_json::from_str(r#"{"only":["a","b"]}"#).unwrap();
        assert!(only.includes(&DeviceId::new("b").unwrap()));
        assert!(!only.includes(&DeviceId::new("c").unwrap()));
        let all: DeviceScope = serde_json::from_str(r#""all""#).unwrap();
        assert!(all.includes(&DeviceId::new("c").unwrap()));
        assert_eq!(
            serde_json::to_string(&CaptureMode::AllActivities).unwrap(),
            "\"all-activities\""
        );
    }

    #[test]
    fn each_structural_rule_is_enforced() {
        type Break = fn(&mut PolicyPayload);
        let cases: &[(&str, Break)] = &[
            ("version", |p| p.version = 0),
            ("expires_at", |p| p.expires_at = p.issued_at),
            ("expires_at", |p| p.not_before = p.expires_at),
            ("issued_at", |p| p.issued_at = p.issued_at.replace_year(-1).unwrap()),
            ("not_before", |p| p.not_before = p.not_before.replace_year(-100).unwrap()),
            ("users[0].approval.approved_at", |p| {
                let t = &mut p.users[0].approval.approved_at;
                *t = t.to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap())
            }),
            ("devices.only", |p| p.devices = DeviceScope::Only(vec![])),
            ("capture.fps", |p| p.capture.fps = 0),
            ("capture.fps", |p| p.capture.fps = 31),
            ("capture.max_monitors", |p| p.capture.max_monitors = 5),
            ("capture.max_monitors", |p| p.capture.max_monitors = 0),
            ("capture.segment_secs", |p| p.capture.segment_secs = 0),
            ("capture.ring_retention_secs", |p| p.capture.ring_retention_secs = 5),
            // A setting that does nothing is refused: this codec is lossless only.
            ("capture.quality", |p| p.capture.quality = Quality::Lossy),
            ("limits.upload_bytes_per_user_per_day", |p| {
                p.limits.upload_bytes_per_user_per_day = 0
            }),
            ("limits.offline_cache.max_bytes", |p| p.limits.offline_cache.max_bytes = 10),
            ("limits.offline_cache.warn_percent", |p| p.limits.offline_cache.warn_percent = 101),
            ("limits.cpu_limit_percent", |p| p.limits.cpu_limit_percent = 0),
            ("window.max_before_secs", |p| p.window.max_before_secs = 601),
            ("window.max_after_secs", |p| p.window.max_after_secs = MAX_WINDOW_SECS + 1),
            ("indicators[0].kind", |p| p.indicators[0].kind = IndicatorKind::Manual),
            ("indicators[1].kind", |p| {
                let r = p.indicators[0].clone();
                p.indicators.push(r)
            }),
            ("indicators[0].before_secs", |p| p.indicators[0].before_secs = 301),
            ("indicators[0].after_secs", |p| p.indicators[0].after_secs = 601),
            ("indicators[0].after_secs", |p| {
                p.indicators[0].before_secs = 0;
                p.indicators[0].after_secs = 0
            }),
            ("notify.text", |p| p.notify.text = Some(String::new())),
            ("notify.text", |p| p.notify.text = Some("x".repeat(MAX_TEXT_LEN + 1))),
            ("users[1].principal", |p| {
                let mut u = p.users[0].clone();
                u.principal = Principal::new("ALICE@contoso.example").unwrap();
                p.users.push(u)
            }),
            ("users[0].approval.justification", |p| p.users[0].approval.justification = " ".into()),
            ("users[0].approval.expires_at", |p| {
                p.users[0].approval.expires_at = p.users[0].approval.approved_at
            }),
        ];
        for (field, break_it) in cases {
            let mut pol = sample();
            break_it(&mut pol);
            match pol.validate() {
                Err(ValidationError::Field { field: f, .. }) => assert_eq!(&f, field),
                other => panic!("breaking {field}: got {other:?}"),
            }
        }
    }

    #[test]
    fn self_approval_is_its_own_error_case_insensitively() {
        let mut pol = sample();
        pol.users[0].approval.approved_by = p("IVAN@contoso.example");
        let err = pol.validate().unwrap_err();
        assert!(matches!(err, ValidationError::SelfApproval { .. }), "{err}");
        assert!(err.to_string().contains("different person"));
    }

    #[test]
    fn approved_account_needs_an_approval_in_force() {
        let pol = sample();
        let contoso = LocalAccounts::with_domain("contoso.example").unwrap();
        let at = |d| pol.approved_account(&contoso, "alice", d);
        assert!(at(datetime!(2026-11-22 00:00 UTC)).is_some());
        assert!(at(datetime!(2026-11-20 00:00 UTC)).is_none());
        assert!(at(datetime!(2026-12-21 00:00 UTC)).is_none());
        let now = datetime!(2026-11-22 00:00 UTC);
        assert!(pol.approved_account(&contoso, "bob", now).is_none());
        // Without the device's domain, alice@contoso.example is not the local alice.
        assert!(pol.approved_account(&LocalAccounts::bare(), "alice", now).is_none());
    }
}
