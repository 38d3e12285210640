//! The trust state file: what an agent must remember across restarts to refuse rollbacks and
//! replays.
//!
//! ```text
//! <data_dir>/trust.json   (mode 0600, JSON, unknown fields refused)
//! {
//!   "format": 1,                          bumped on incompatible change; others are refused
//!   "tenant": "contoso",                  enrollment this state belongs to
//!   "device": "laptop-42",
//!   "last_policy_version": 12,            highest accepted policy version (null: none yet)
//!   "policy": {key_id, payload, signature} | null,
//!                                         the envelope of that version, re-verified on load so
//!                                         the policy stays in force across a restart
//!   "seen_triggers": [{"id": "trg-1", "expires_at": "2026-11-22T03:10:05Z"}, …]
//!                                         accepted trigger ids, kept until they expire (after
//!                                         that the trigger is refused as expired anyway)
//! }
//! ```
//!
//! Writes are atomic: the new state goes to `trust.json.tmp` in the same directory, is fsynced,
//! renamed over `trust.json`, and the directory is fsynced, so a crash leaves either the old or
//! the new state, never a torn one. A state that is present but unreadable is an error, never
//! silently reset: resetting would re-open the door to rollback and replay.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::envelope::SignedEnvelope;
use crate::ids::{DeviceId, TenantId, TriggerId};

/// Current state file format.
const FORMAT: u32 = 1;

/// Largest state file read. 100 000 trigger ids plus a 1 MiB envelope fit well below.
const MAX_STATE_BYTES: u64 = 32 * 1024 * 1024;

/// Most unexpired trigger ids remembered; beyond it new triggers are refused (retryable) rather
/// than forgetting ids that could then be replayed.
pub const MAX_SEEN_TRIGGERS: usize = 100_000;

/// Why the trust state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed. Retryable (disk full, permissions fixed later).
    #[error("cannot {action} trust state file {}: {source}; check the data directory's permissions and free space", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but is not a state file this version understands. Permanent.
    #[error("trust state file {} is corrupt ({why}); it guards against policy rollback and trigger replay, so it is not reset automatically: restore it from backup, or delete it and re-enroll the device", path.display())]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file belongs to another enrollment. Permanent.
    #[error("trust state file {} belongs to tenant {found_tenant} device {found_device}, not to this enrollment ({tenant}/{device}); delete it only when re-enrolling on purpose", path.display())]
    OtherEnrollment {
        /// The file concerned.
        path: PathBuf,
        /// Tenant recorded in the file.
        found_tenant: TenantId,
        /// Device recorded in the file.
        found_device: DeviceId,
        /// Tenant of the current enrollment.
        tenant: TenantId,
        /// Device of the current enrollment.
        device: DeviceId,
    },
    /// Too many unexpired trigger ids to remember one more. Retryable once some expire.
    #[error("{count} unexpired trigger ids are remembered already (limit {MAX_SEEN_TRIGGERS}); new triggers are refused until some expire")]
    TooManyTriggers {
        /// How many are remembered.
        count: usize,
    },
}

impl StateError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Io { .. } | StateError::TooManyTriggers { .. })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenTrigger {
    id: TriggerId,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    tenant: TenantId,
    device: DeviceId,
    last_policy_version: Option<u64>,
    policy: Option<SignedEnvelope>,
    seen_triggers: Vec<SeenTrigger>,
}

/// The remembered state, in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub last_policy_version: Option<u64>,
    pub policy: Option<SignedEnvelope>,
    pub seen_triggers: BTreeMap<TriggerId, OffsetDateTime>,
}

impl State {
    /// Forgets trigger ids that expired at or before `now`.
    pub fn prune(&mut self, now: OffsetDateTime) {
        self.seen_triggers.retain(|_, expires_at| *expires_at > now);
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io { action, path: path.to_path_buf(), source }
}

/// Loads the state at `path`; a missing file is a fresh state.
pub(crate) fn load(path: &Path, tenant: &TenantId, device: &DeviceId) -> Result<State, StateError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(io("open", path)(e)),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_STATE_BYTES + 1), &mut bytes)
        .map_err(io("read", path))?;
    let corrupt = |why: String| StateError::Corrupt { path: path.to_path_buf(), why };
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(corrupt(format!("larger than {MAX_STATE_BYTES} bytes")));
    }
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(format!(
            "format {} is not the supported format {FORMAT}",
            file.format
        )));
    }
    if &file.tenant != tenant || &file.device != device {
        return Err(StateError::OtherEnrollment {
            path: path.to_path_buf(),
            found_tenant: file.tenant,
            found_device: file.device,
            tenant: tenant.clone(),
            device: device.clone(),
        });
    }
    Ok(State {
        last_policy_version: file.last_policy_version,
        policy: file.policy,
        seen_triggers: file.seen_triggers.into_iter().map(|s| (s.id, s.expires_at)).collect(),
    })
}

/// Writes `state` to `path` atomically (see the module docs).
pub(crate) fn store(
    path: &Path,
    tenant: &TenantId,
    device: &DeviceId,
    state: &State,
) -> Result<(), StateError> {
    let file = StateFile {
        format: FORMAT,
        tenant: tenant.clone(),
        device: device.clone(),
        last_policy_version: state.last_policy_version,
        policy: state.policy.clone(),
        seen_triggers: state
            .seen_triggers
            .iter()
            .map(|(id, expires_at)| SeenTrigger { id: id.clone(), expires_at: *expires_at })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        why: format!("cannot serialise: {e}"),
    })?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    // The rename is durable only once the directory entry is.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory of", path))?;
    Ok(())
}
