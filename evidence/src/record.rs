//! Records the console signs: a JSON file and a detached signature over its exact bytes.
//!
//! # Signed file
//!
//! ```text
//! NAME.json       the record, UTF-8 JSON, as the console wrote it
//! NAME.json.sig   one line: {"key": "<base64 console public key>", "signature":
//!                 base64( Ed25519(console key, "rearview/record/v1\n" || kind || "\n"
//!                                               || bytes of NAME.json) )}
//! ```
//!
//! `kind` names the record (`enrollment`, `clip`), so an enrollment record's signature cannot
//! be passed off as a clip record's. The signature is over the bytes as stored, not over a
//! re-serialisation, so a verifier needs no canonical JSON: it checks the bytes, then parses.
//!
//! # Enrollment record (`device.json`, kind `enrollment`)
//!
//! ```text
//! {"tenant": str, "device": str, "device_public_key": "<base64>",
//!  "enrolled_utc": "<RFC 3339>", "enrolled_by": str}
//! ```
//!
//! The console writes it when a device enrolls, after the device proved it holds the key. It
//! is what ties the device key that signs the chain to a device name in the tenant.
//!
//! # Clip record (`clip-record.json`, kind `clip`)
//!
//! ```text
//! {"clip": str, "tenant": str, "device": str, "user": str,
//!  "manifest_sha256": "<64 hex of manifest.json>",
//!  "window": {"from_utc_micros": i64, "to_utc_micros": i64},
//!  "trigger": {"id": str, "reason": str, "approval": {"id": str, "requested_by": str,
//!              "approved_by": str} | null} | null,
//!  "approval": {"id": str, "requested_by": str, "approved_by": str},   only without a trigger
//!                                                  (all-activities): the approval in force at
//!                                                  the window's start
//!  "segments": [{"id": "<32 hex>", "sha256": "<64 hex>", "received_utc": "<RFC 3339>"}],
//!  "missing": [{"from_utc_micros": i64, "to_utc_micros": i64, "reason": str}],
//!  "completed_utc": "<RFC 3339>"}
//! ```

use serde::{Deserialize, Serialize};

use crate::keys::{signature_from_base64, signature_to_base64, PublicKey, Signer};

/// Domain of record signatures.
pub const RECORD_DOMAIN: &str = "rearview/record/v1\n";

/// The `.sig` file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub key: String,
    pub signature: String,
}

/// Why a signed record does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{kind} record signature file is malformed: {why}")]
    Malformed { kind: String, why: String },
    #[error("{kind} record is signed by key {got}, not by the console key {want}")]
    OtherKey { kind: String, got: String, want: String },
    #[error(
        "{kind} record signature does not verify with console key {key}: the record was altered"
    )]
    BadSignature { kind: String, key: String },
}

fn message(kind: &str, bytes: &[u8]) -> Vec<u8> {
    [kind.as_bytes(), b"\n", bytes].concat()
}

/// The `.sig` content for `bytes` as record `kind`.
pub fn sign(key: &Signer, kind: &str, bytes: &[u8]) -> Detached {
    let signature = key.sign(RECORD_DOMAIN, &message(kind, bytes));
    Detached { key: key.public_key().to_base64(), signature: signature_to_base64(&signature) }
}

/// Checks that `sig` (the `.sig` file's bytes) signs `bytes` as record `kind` with `console`.
pub fn verify(
    console: &PublicKey,
    kind: &str,
    bytes: &[u8],
    sig: &[u8],
) -> Result<(), RecordError> {
    let malformed = |why: String| RecordError::Malformed { kind: kind.into(), why };
    let detached: Detached = serde_json::from_slice(sig).map_err(|e| malformed(e.to_string()))?;
    let signer = PublicKey::from_base64(&detached.key).map_err(|e| malformed(e.to_string()))?;
    if signer != *console {
        return Err(RecordError::OtherKey {
            kind: kind.into(),
            got: signer.fingerprint().to_string(),
            want: console.fingerprint().to_string(),
        });
    }
    let signature =
        signature_from_base64(&detached.signature).map_err(|e| malformed(e.to_string()))?;
    if console.verifies(RECORD_DOMAIN, &message(kind, bytes), &signature) {
        Ok(())
    } else {
        Err(RecordError::BadSignature { kind: kind.into(), key: console.fingerprint().to_string() })
    }
}

/// The enrollment record (`device.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    pub tenant: String,
    pub device: String,
    /// Base64 of the device's 32-byte Ed25519 public key.
    pub device_public_key: String,
    pub enrolled_utc: String,
    pub enrolled_by: String,
}

/// The clip's window, UTC microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
}

/// Who asked for the capture and who approved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRef {
    pub id: String,
    pub requested_by: String,
    pub approved_by: String,
}

/// The trigger a clip answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRef {
    pub id: String,
    pub reason: String,
    pub approval: Option<ApprovalRef>,
}

/// A segment as the console received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedSegment {
    pub id: String,
    pub sha256: String,
    pub received_utc: String,
}

/// A part of the window the clip lacks, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingSpan {
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    pub reason: String,
}

/// The clip record (`clip-record.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipRecord {
    pub clip: String,
    pub tenant: String,
    pub device: String,
    pub user: String,
    pub manifest_sha256: String,
    pub window: Window,
    pub trigger: Option<TriggerRef>,
    /// The approval a clip with no trigger (all-activities) was captured under; a triggered
    /// clip names its approval in `trigger`. Absent in records of older consoles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    pub segments: Vec<ReceivedSegment>,
    pub missing: Vec<MissingSpan>,
    pub completed_utc: String,
}
