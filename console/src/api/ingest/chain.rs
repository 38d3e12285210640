//! What ingest checks of a manifest's device-signed chain entries and absence notes
//! ([`rearview_protocol::chain`]) before it stores anything, so a segment sealed by someone who
//! holds only the tenant's public key (every device has it) is refused: its entry cannot carry
//! the enrolled device's signature.
//!
//! ```text
//! key          the device's enrolled Ed25519 key (devices.public_key, hex); every entry and
//!              absence note must verify with it
//! segments     every segment the manifest names is the sealed hash of a segment entry in
//!              `chain`; ClipFacts maps those entries' segment ids to the hashes
//! the clip     chain::verify: signatures, tenant (this console's), device (the caller),
//!              user (the manifest's), per chain no seq missing between the first and last
//!              entry given, every prev the hash of the entry before, times not going back,
//!              every segment entry whose segment the clip lacks explained by an absence note
//! across clips the console's accepted entries (store::chain): an entry at a (chain, seq)
//!              the console holds with another hash is a fork; one whose (chain, seq - 1) it
//!              holds must name that entry's hash as prev; one whose (chain, seq + 1) it holds
//!              must be the entry that one names
//! ```
//!
//! An open clip carries the entries of the segments it names so far; what is given is checked.
//! A refusal names the entry or segment and the check, and the caller answers it with 409 and
//! audits it as `clip.refused` in the same transaction, storing nothing else. Accepted entries
//! are recorded ([`accept`]) in the transaction that stores the manifest.

use std::collections::{HashMap, HashSet};

use rearview_protocol::chain::{verify_known, ChainError, ClipFacts, Entry, PublicKey};
use rearview_protocol::ClipManifest;

use crate::error::ApiError;
use crate::store::chain::AcceptedEntry;
use crate::store::Tx;

/// Why the chain of `m` (a manifest of `device_id`, already validated) is refused, if it is.
/// `earlier` is the clip's stored manifest, if any: its entries were verified when it was
/// taken, and an entry of `m` equal to one of them (signature included) is not checked again.
pub fn refusal(
    tx: &Tx<'_>,
    tenant: &str,
    device_id: &str,
    m: &ClipManifest,
    earlier: Option<&ClipManifest>,
) -> Result<Option<String>, ApiError> {
    let key = match enrolled_key(tx, device_id)? {
        Ok(key) => key,
        Err(why) => return Ok(Some(why)),
    };
    if let Some(e) = m.chain.iter().find(|e| i64::try_from(e.seq).is_err()) {
        return Ok(Some(format!("chain {} entry {}: seq is out of range", e.chain, e.seq)));
    }
    let named: HashSet<&str> = m.segments.iter().map(|s| s.sha256.as_str()).collect();
    let entries_by_hash: HashSet<&str> =
        m.chain.iter().filter_map(|e| e.segment.as_ref()).map(|s| s.sha256.as_str()).collect();
    if let Some(s) = m.segments.iter().find(|s| !entries_by_hash.contains(s.sha256.as_str())) {
        return Ok(Some(format!(
            "segment {}: no chain entry the device signed names it (every segment a clip \
             names needs the device's signed entry in the manifest's chain)",
            s.sha256
        )));
    }
    let segments: HashMap<String, String> = m
        .chain
        .iter()
        .filter_map(|e| e.segment.as_ref())
        .filter(|s| named.contains(s.sha256.as_str()))
        .map(|s| (s.id.clone(), s.sha256.clone()))
        .collect();
    let facts = ClipFacts {
        clip: &m.clip_id,
        tenant,
        device: device_id,
        user: &m.user,
        segments: &segments,
    };
    // Re-checking every entry of a long open clip on each extension would cost O(n²)
    // signature checks under the writer; what the stored version carried, byte for byte, was
    // checked when it was taken (and is what an export hands out).
    let verified: HashMap<(&str, u64), &Entry> = earlier
        .map(|old| old.chain.iter().map(|e| ((e.chain.as_str(), e.seq), e)).collect())
        .unwrap_or_default();
    let was_verified = |e: &Entry| verified.get(&(e.chain.as_str(), e.seq)) == Some(&e);
    let known = |e: &Entry, _: &[u8; 32]| was_verified(e);
    if let Err(e) = verify_known(&key, &facts, &m.chain, &m.absent, &known) {
        return Ok(Some(describe(&e, m, &key)));
    }
    // What the stored version carried was held up against the accepted entries when it was
    // taken; only the entries new in `m` can contradict them now.
    across_clips(tx, device_id, m.chain.iter().filter(|e| !was_verified(e)))
}

/// Records the entries of `m` (checked by [`refusal`]) as accepted from `device_id`.
pub fn accept(tx: &Tx<'_>, device_id: &str, m: &ClipManifest, now: i64) -> Result<(), ApiError> {
    let mut entries = Vec::with_capacity(m.chain.len());
    for e in &m.chain {
        entries.push(AcceptedEntry {
            chain: &e.chain,
            seq: e.seq,
            hash: entry_hash(e)
                .map_err(|why| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, why))?,
            prev: &e.prev,
        });
    }
    Ok(tx.accept_chain_entries(device_id, &m.clip_id, &entries, now)?)
}

/// The device's enrolled key, or why there is none to check with.
fn enrolled_key(tx: &Tx<'_>, device_id: &str) -> Result<Result<PublicKey, String>, ApiError> {
    let Some(text) = tx.device_public_key(device_id)? else {
        return Ok(Err(format!("device {device_id} has no enrolled key to check its chain with")));
    };
    let bytes: Option<[u8; 32]> = hex::decode(&text).ok().and_then(|b| b.try_into().ok());
    Ok(bytes.map(PublicKey::from_bytes).ok_or_else(|| {
        format!("the enrolled key of device {device_id} is not 32 bytes of hex; re-enroll it")
    }))
}

/// The verifier's error, naming the segment where the failing entry is a segment's.
fn describe(e: &ChainError, m: &ClipManifest, key: &PublicKey) -> String {
    let ChainError::BadSignature { chain, seq, .. } = e else { return e.to_string() };
    let entry = m.chain.iter().find(|x| &x.chain == chain && x.seq == *seq);
    match entry.and_then(|x| x.segment.as_ref()) {
        Some(seg) => format!(
            "segment {} (sha256 {}, chain {chain} entry {seq}): the chain entry's signature \
             does not verify with the enrolled device key {}",
            seg.id,
            seg.sha256,
            key.fingerprint()
        ),
        None => format!(
            "gap entry {chain}/{seq}: the chain entry's signature does not verify with the \
             enrolled device key {}",
            key.fingerprint()
        ),
    }
}

fn entry_hash(e: &Entry) -> Result<String, String> {
    e.hash().map(hex::encode).map_err(|e| e.to_string())
}

/// Why `entries` contradict entries of `device_id` the console accepted before, if they do.
fn across_clips<'a>(
    tx: &Tx<'_>,
    device_id: &str,
    entries: impl Iterator<Item = &'a Entry>,
) -> Result<Option<String>, ApiError> {
    for e in entries {
        let hash = match entry_hash(e) {
            Ok(hash) => hash,
            Err(why) => return Ok(Some(why)),
        };
        let at = format!("chain {} entry {}", e.chain, e.seq);
        if let Some(held) = tx.held_chain_entry(device_id, &e.chain, e.seq)? {
            if held.hash != hash {
                return Ok(Some(format!(
                    "{at}: the console already accepted a different entry {} of this chain from \
                     this device: a fork (two entries signed for one place in the chain)",
                    e.seq
                )));
            }
        }
        if let Some(seq) = e.seq.checked_sub(1) {
            if let Some(before) = tx.held_chain_entry(device_id, &e.chain, seq)? {
                if before.hash != e.prev {
                    return Ok(Some(format!(
                        "{at}: its prev is not the hash of entry {seq} the console accepted \
                         before: the chain was forked or spliced"
                    )));
                }
            }
        }
        if let Some(seq) = e.seq.checked_add(1) {
            if let Some(after) = tx.held_chain_entry(device_id, &e.chain, seq)? {
                if after.prev != hash {
                    return Ok(Some(format!(
                        "{at}: entry {seq} the console accepted before names another entry as \
                         its prev: a fork"
                    )));
                }
            }
        }
    }
    Ok(None)
}
