//! What makes a clip prove itself: the device's signed chain of segments and gaps, the
//! console's signed records, the custody log, and the checks a stranger runs on them offline.
//!
//! This crate is the *format* and the *checks*, with as few dependencies as possible (ring for
//! SHA-256 and Ed25519, serde for JSON): the device signs with it, the console verifies and
//! countersigns with it, and `rearview-verify` (this crate's binary) checks an evidence package
//! with it and nothing else. Everything here is documented well enough that someone else can
//! write their own verifier from these docs alone.
//!
//! # Keys
//!
//! Ed25519 (RFC 8032). A public key travels as standard base64 of its 32 bytes; a signature as
//! standard base64 of its 64 bytes. Its *fingerprint* is the first 8 bytes of SHA-256 of the 32
//! raw key bytes, as 16 lowercase hex digits (the same rule as policy key ids).
//!
//! * the **device key**: made on the device at enrollment (the console saw its proof of
//!   possession then); signs the device's chain ([`chain`]) and its absence notes;
//! * the **console key**: the tenant's console signing key (the one that already signs policies
//!   and triggers, known to every device); signs enrollment records, clip records and custody
//!   heads ([`record`], [`custody`]).
//!
//! Every signature is over a domain-separated message, `domain || bytes`, where `domain` is an
//! ASCII string ending in `\n` that names the kind of thing signed
//! (`"rearview/chain/v1\n"`, `"rearview/absent/v1\n"`, `"rearview/record/v1\n"`,
//! `"rearview/custody/v1\n"`), so no signature can be passed off as another kind.
//!
//! # Hashes
//!
//! SHA-256, as 64 lowercase hex digits in JSON. The hash of a sealed segment is over the file's
//! bytes exactly as the device wrote them (the `RVSL` header included).
//!
//! # The pieces
//!
//! * [`chain`]: per capture stream (one session's one monitor), a hash chain of device-signed
//!   entries: one per sealed segment, and explicit gap entries where capture stopped (screen
//!   locked, approval ended, CPU pause, worker crash, daemon stopped). A verifier can tell a
//!   span nobody recorded (a signed gap) from a segment someone removed (a broken link).
//! * absence notes ([`chain::Absence`]): a segment the chain names but the clip does not carry
//!   (evicted from the device's ring before a clip took it) is explained by a device-signed note.
//! * [`record`]: a JSON file signed by the console as it is stored (no canonical form to agree
//!   on: the signature is over the file's bytes): the enrollment record (device id and key) and
//!   the clip record (manifest, segment hashes, trigger and approval, window, missing ranges).
//! * [`custody`]: per clip, an append-only hash-chained log of what happened to it and who did
//!   it; the console signs its head in an export, so neither an edit nor a cut goes unseen.

pub mod chain;
pub mod custody;
pub mod keys;
pub mod package;
pub mod record;

pub use keys::{Fingerprint, PublicKey, Signer, SignerError};

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}
