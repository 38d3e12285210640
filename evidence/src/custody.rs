//! The custody log: per clip, every thing that happened to it, who did it and when, in a hash
//! chain that an edit, an insertion, a removal or a reordering breaks.
//!
//! # Entry (JSON, one object per line in `custody.jsonl`)
//!
//! ```text
//! {"seq": u64, "at_utc": "<RFC 3339>", "actor": str, "action": str, "detail": str,
//!  "prev": "<64 hex>"}
//! ```
//!
//! Actions: `received` (first segment stored), `completed` (clip whole), `opened` (someone
//! viewed frames), `exported` (an evidence package or a copy left the console),
//! `legal-hold-set`, `legal-hold-cleared`, `deleted`. `actor` is the console person (or
//! `device:<id>` for what a device did). `seq` counts from 0 without holes.
//!
//! `prev` of entry 0 is SHA-256(`"rearview/custody/v1\n" || clip id`); of entry n, the
//! entry hash of n-1, where an entry's hash is SHA-256(`"rearview/custody/v1\n" || the bytes
//! of its line`, without the newline). The line is hashed as stored, so no canonical JSON is
//! needed.
//!
//! # Head (`custody.sig`)
//!
//! In an export the console signs the head, so a log cut short is seen too:
//!
//! ```text
//! {"clip": str, "entries": u64, "head": "<64 hex: hash of the last entry>",
//!  "key": "<base64 console public key>",
//!  "signature": base64( Ed25519(console key, "rearview/custody/v1\n" || str clip
//!                               || u64be entries || head (32 bytes)) )}
//! ```

use serde::{Deserialize, Serialize};

use crate::chain::{fixed_hex, put_str};
use crate::keys::{signature_from_base64, signature_to_base64, PublicKey, Signer};

/// Domain of custody hashes and of the head signature.
pub const CUSTODY_DOMAIN: &str = "rearview/custody/v1\n";

/// One entry as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyEntry {
    pub seq: u64,
    pub at_utc: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub prev: String,
}

/// The signed head of an exported log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyHead {
    pub clip: String,
    pub entries: u64,
    pub head: String,
    pub key: String,
    pub signature: String,
}

/// Why a custody log does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustodyError {
    #[error("custody log line {line}: {why}")]
    Malformed { line: usize, why: String },
    #[error("custody log line {line}: seq is {got}, expected {want}")]
    OutOfOrder { line: usize, got: u64, want: u64 },
    #[error("custody log line {line}: prev does not match the line before it: an earlier entry was edited, removed or reordered")]
    BrokenLink { line: usize },
    #[error("custody head: {why}")]
    BadHead { why: String },
    #[error("custody log has {got} entries, the console signed {want}: entries were cut or added")]
    Length { got: u64, want: u64 },
    #[error("custody log's last entry is not the head the console signed: the log was altered")]
    HeadDiffers,
}

/// The `prev` of entry 0 of `clip`'s log.
pub fn genesis(clip: &str) -> [u8; 32] {
    crate::sha256(&[CUSTODY_DOMAIN.as_bytes(), clip.as_bytes()].concat())
}

/// The hash of one stored line (without its newline).
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    crate::sha256(&[CUSTODY_DOMAIN.as_bytes(), line].concat())
}

/// Appends to a log kept as lines: the next entry's line (without newline) and its hash.
pub fn next_line(
    clip: &str,
    last: Option<(u64, [u8; 32])>,
    at_utc: &str,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(String, [u8; 32]), serde_json::Error> {
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (0, genesis(clip)),
    };
    let entry = CustodyEntry {
        seq,
        at_utc: at_utc.into(),
        actor: actor.into(),
        action: action.into(),
        detail: detail.into(),
        prev: hex::encode(prev),
    };
    let line = serde_json::to_string(&entry)?;
    let hash = line_hash(line.as_bytes());
    Ok((line, hash))
}

fn head_message(clip: &str, entries: u64, head: &[u8; 32]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    put_str(&mut out, clip)?;
    out.extend_from_slice(&entries.to_be_bytes());
    out.extend_from_slice(head);
    Ok(out)
}

/// The signed head of a log of `entries` entries whose last hash is `head`.
pub fn sign_head(
    key: &Signer,
    clip: &str,
    entries: u64,
    head: &[u8; 32],
) -> Result<CustodyHead, CustodyError> {
    let message = head_message(clip, entries, head).map_err(|why| CustodyError::BadHead { why })?;
    Ok(CustodyHead {
        clip: clip.into(),
        entries,
        head: hex::encode(head),
        key: key.public_key().to_base64(),
        signature: signature_to_base64(&key.sign(CUSTODY_DOMAIN, &message)),
    })
}

/// Checks a log (`custody.jsonl`'s bytes) and its signed head against `console`; returns the
/// entries.
pub fn verify(
    console: &PublicKey,
    clip: &str,
    log: &[u8],
    head: &CustodyHead,
) -> Result<Vec<CustodyEntry>, CustodyError> {
    let bad_head = |why: String| CustodyError::BadHead { why };
    if head.clip != clip {
        return Err(bad_head(format!("it is for clip {:?}", head.clip)));
    }
    let signer = PublicKey::from_base64(&head.key).map_err(|e| bad_head(e.to_string()))?;
    if signer != *console {
        return Err(bad_head(format!(
            "signed by key {}, not by the console key {}",
            signer.fingerprint(),
            console.fingerprint()
        )));
    }
    let head_hash = fixed_hex::<32>(&head.head).map_err(bad_head)?;
    let message = head_message(clip, head.entries, &head_hash).map_err(bad_head)?;
    let signature = signature_from_base64(&head.signature).map_err(|e| bad_head(e.to_string()))?;
    if !console.verifies(CUSTODY_DOMAIN, &message, &signature) {
        return Err(bad_head(format!(
            "the signature does not verify with console key {}",
            console.fingerprint()
        )));
    }
    let text = std::str::from_utf8(log)
        .map_err(|e| CustodyError::Malformed { line: 0, why: e.to_string() })?;
    let mut prev = genesis(clip);
    let mut entries = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.is_empty()).enumerate() {
        let n = i + 1;
        let e: CustodyEntry = serde_json::from_str(line)
            .map_err(|err| CustodyError::Malformed { line: n, why: err.to_string() })?;
        if e.seq != i as u64 {
            return Err(CustodyError::OutOfOrder { line: n, got: e.seq, want: i as u64 });
        }
        if fixed_hex::<32>(&e.prev).ok() != Some(prev) {
            return Err(CustodyError::BrokenLink { line: n });
        }
        prev = line_hash(line.as_bytes());
        entries.push(e);
    }
    if entries.len() as u64 != head.entries {
        return Err(CustodyError::Length { got: entries.len() as u64, want: head.entries });
    }
    let last = if entries.is_empty() { genesis(clip) } else { prev };
    if last != head_hash {
        return Err(CustodyError::HeadDiffers);
    }
    Ok(entries)
}
