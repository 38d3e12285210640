//! What the daemon reports about itself: the answers to `status`, `buffer` and `clips` on the
//! admin socket, shared by the daemon (which fills them) and the CLI (which prints them).
//! Everything here is metadata; no frame, keystroke or key ever appears.

use serde::{Deserialize, Serialize};

/// Policy older than this is reported as stale.
pub const POLICY_STALE_SECS: i64 = 24 * 3600;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent_version: String,
    pub enrollment: Enrollment,
    pub policy: Option<PolicyInfo>,
    pub sessions: Vec<SessionReport>,
    /// Why the session list may be incomplete (logind unreachable …).
    pub sessions_problem: Option<String>,
    pub ring: RingReport,
    pub spool: SpoolReport,
    pub upload: UploadReport,
    pub server: ServerReport,
    pub cpu: CpuReport,
    /// Newest last, at most [`MAX_ERRORS`].
    pub last_errors: Vec<ErrorRecord>,
    pub indicators_seen: u64,
}

/// Errors kept for `status` and health.
pub const MAX_ERRORS: usize = 10;

/// The part of [`StatusReport`] the daemon's store thread answers (disk and database reads).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorePart {
    pub ring: RingReport,
    pub spool: SpoolReport,
    pub upload: UploadReport,
    pub server: ServerReport,
}

impl StatusReport {
    /// The report with the store's part; `None` (the store did not answer in time) leaves
    /// those figures empty and says so in the errors.
    pub fn with_store(mut self, part: Option<StorePart>) -> StatusReport {
        match part {
            Some(StorePart { ring, spool, upload, server }) => {
                self.ring = ring;
                self.spool = spool;
                self.upload = upload;
                self.server = server;
            }
            None => self.last_errors.push(ErrorRecord {
                at_utc_micros: rearview_capture::Timestamp::now().utc_micros,
                what: "the evidence store did not answer in time (busy on a slow disk, or \
                       stopping); ring, spool and upload figures are missing"
                    .into(),
            }),
        }
        self
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub enrolled: bool,
    pub server: String,
    pub tenant: Option<String>,
    pub device: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub version: u64,
    /// Seconds since the bundle was issued.
    pub age_secs: i64,
    pub stale: bool,
    pub in_force: bool,
    pub capture_enabled: bool,
    pub fps: u32,
    pub segment_secs: u32,
    pub users_in_scope: usize,
    pub expires_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    pub id: String,
    pub user: String,
    pub display: String,
    pub active: bool,
    pub locked: bool,
    /// `capturing`, `paused`, `not approved`, `capture disabled`, `no policy`, `locked`,
    /// `starting`, `display unreachable`, `capture failing`.
    pub capture: String,
    /// `specific-activities` / `all-activities` when approved.
    pub mode: Option<String>,
    pub worker_pid: Option<u32>,
    pub monitors: u32,
    pub fps: f64,
    pub frames: u64,
    pub segments: u64,
    pub input: String,
    pub ms_per_frame: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingReport {
    pub dir: String,
    pub segments: usize,
    pub bytes: u64,
    pub pinned_segments: usize,
    pub pinned_bytes: u64,
    pub max_bytes: u64,
    pub retention_secs: u64,
    /// UTC micros of the oldest and newest recording held.
    pub oldest_utc_micros: Option<i64>,
    pub newest_utc_micros: Option<i64>,
    /// Pins and unpins for clips that failed since the daemon started (a segment may then be
    /// evicted under its clip, or kept after it), and the last such failure.
    #[serde(default)]
    pub pin_failures: u64,
    #[serde(default)]
    pub last_pin_failure: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolReport {
    pub pending_clips: u64,
    pub sent_clips: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub lost_clips: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReport {
    pub limit_per_user_per_day: u64,
    /// `(user, bytes)` uploaded today (UTC).
    pub today: Vec<(String, u64)>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    pub reachable: bool,
    pub stream_connected: bool,
    pub uploading: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    /// Share of the whole machine over the last window, percent.
    pub percent_of_machine: Option<f64>,
    pub limit_percent: f64,
    pub throttled: bool,
    pub paused: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub at_utc_micros: i64,
    pub what: String,
}

/// One segment held in the ring (`rearview buffer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferEntry {
    pub id: String,
    pub user: String,
    pub session: String,
    pub monitor: u32,
    pub start_utc_micros: i64,
    pub end_utc_micros: i64,
    pub frames: u32,
    pub sealed_bytes: u64,
    /// Clips holding it.
    pub pinned_by: Vec<String>,
}

/// A clip the daemon opened (`rearview clips`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipReport {
    pub id: String,
    pub trigger_id: Option<String>,
    pub user: String,
    pub reason: String,
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    /// `collecting` (window still open), `pending` (in the spool), `uploading`, `sent` (the
    /// console has all of it), `refused` (by the console, for good), `lost` (dropped from a
    /// full offline cache), `failed` (never reached the spool).
    pub state: String,
    pub segments: usize,
    /// Parts of the window the ring did not hold, in words.
    pub missing: Vec<String>,
}

/// One check of `rearview doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do when it fails.
    pub fix: Option<String>,
}
