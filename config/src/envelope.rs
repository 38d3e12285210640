//! The signed envelope that carries a policy or a trigger from the console to an agent.
//!
//! ```text
//! {
//!   "key_id":    "3f9a0c1d22e4b5a6",         KeyId of the signing key (16 hex digits)
//!   "payload":   "eyJ0ZW5hbnQiOiJjb250b3…",   standard base64 of the exact payload bytes (JSON)
//!   "signature": "q2V0…"                      standard base64 of the 64-byte Ed25519 signature
//! }
//!
//! signed message = domain tag || payload bytes
//!   domain tag   = b"rearview-policy-v1\0"   for a policy bundle
//!                  b"rearview-trigger-v1\0"  for a trigger
//! ```
//!
//! The signature covers the payload *bytes*, not a re-serialisation of parsed JSON, so the agent
//! verifies exactly what the console signed and parses only after the signature holds. The domain
//! tag stops a signature made for one kind of payload being presented as the other (both are
//! JSON, and a crafted payload could parse as either).
//!
//! Size caps: an envelope is at most [`MAX_ENVELOPE_BYTES`] before any parsing, and its payload is
//! at most [`MAX_PAYLOAD_BYTES`]. Unknown fields are refused.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyId, SigningKey, VerifyingKey};

/// Largest envelope accepted, in bytes of JSON. Policies name at most a few thousand users.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// Largest payload accepted (decoded), in bytes. Base64 inflates by 4/3, so this keeps the
/// encoded payload under [`MAX_ENVELOPE_BYTES`].
pub const MAX_PAYLOAD_BYTES: usize = 768 * 1024;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// What a signature is for; each kind signs under its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A policy bundle ([`crate::policy::PolicyPayload`]).
    Policy,
    /// A trigger ([`crate::trigger::TriggerPayload`]).
    Trigger,
}

impl Domain {
    /// The bytes prepended to the payload before signing.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Policy => b"rearview-policy-v1\0",
            Domain::Trigger => b"rearview-trigger-v1\0",
        }
    }

    /// Human name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Policy => "policy bundle",
            Domain::Trigger => "trigger",
        }
    }

    fn message(self, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.tag().len() + payload.len());
        m.extend_from_slice(self.tag());
        m.extend_from_slice(payload);
        m
    }
}

/// Why an envelope could not even be read. Never retryable: the same bytes fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// More than [`MAX_ENVELOPE_BYTES`] (or a payload above [`MAX_PAYLOAD_BYTES`]).
    #[error("signed envelope is {size} bytes, above the {limit}-byte limit; the console must send a smaller bundle")]
    TooLarge {
        /// Size seen.
        size: usize,
        /// Limit it exceeds.
        limit: usize,
    },
    /// Not the JSON shape described in this module.
    #[error("signed envelope is not valid JSON of the form {{key_id, payload, signature}}: {0}")]
    Malformed(String),
    /// `payload` or `signature` is not standard base64, or the signature is not 64 bytes.
    #[error("signed envelope field {field} is not valid: {why}")]
    BadField {
        /// `payload` or `signature`.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Why the signature of an envelope does not hold. Never retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No trusted key has this id.
    #[error("{domain} is signed with key {key_id}, which this device does not trust; re-enroll the device or check the console's signing key")]
    UnknownKey {
        /// "policy bundle" or "trigger".
        domain: &'static str,
        /// The id named by the envelope.
        key_id: KeyId,
    },
    /// The key is known but the signature does not verify over the payload.
    #[error("{domain} signature does not verify with key {key_id}; the bundle was altered or signed for another purpose, ask the console to re-issue it")]
    BadSignature {
        /// "policy bundle" or "trigger".
        domain: &'static str,
        /// The key tried.
        key_id: KeyId,
    },
}

/// A signed policy or trigger, as sent over the wire. See the module docs for the format.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    key_id: KeyId,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    key_id: KeyId,
    payload: String,
    signature: String,
}

impl SignedEnvelope {
    /// Signs `payload` under `domain` with `key`. Prefer [`crate::sign_policy`] and
    /// [`crate::sign_trigger`], which also validate and serialise the payload.
    pub fn sign(key: &SigningKey, domain: Domain, payload: Vec<u8>) -> Result<Self, EnvelopeError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EnvelopeError::TooLarge { size: payload.len(), limit: MAX_PAYLOAD_BYTES });
        }
        let signature = key.sign(&domain.message(&payload));
        Ok(SignedEnvelope { key_id: key.key_id(), payload, signature })
    }

    /// Builds an envelope from its parts without checking anything; for tests and tools that
    /// need to present a tampered envelope.
    pub fn from_parts(key_id: KeyId, payload: Vec<u8>, signature: Vec<u8>) -> Self {
        SignedEnvelope { key_id, payload, signature }
    }

    /// Parses the JSON form, enforcing the size caps. Does not verify the signature.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { size: bytes.len(), limit: MAX_ENVELOPE_BYTES });
        }
        let wire: WireEnvelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        Self::from_wire(wire)
    }

    fn from_wire(wire: WireEnvelope) -> Result<Self, EnvelopeError> {
        // Checked before decoding, so an embedded envelope cannot make us allocate for a huge
        // payload either.
        let max_encoded = MAX_PAYLOAD_BYTES.div_ceil(3) * 4;
        if wire.payload.len() > max_encoded {
            return Err(EnvelopeError::TooLarge { size: wire.payload.len(), limit: max_encoded });
        }
        let b64 = &base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(&wire.payload).map_err(|_| EnvelopeError::BadField {
            field: "payload",
            why: "not standard base64",
        })?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EnvelopeError::TooLarge { size: payload.len(), limit: MAX_PAYLOAD_BYTES });
        }
        if wire.signature.len() != SIGNATURE_LEN.div_ceil(3) * 4 {
            return Err(EnvelopeError::BadField {
                field: "signature",
                why: "not 64 bytes of base64",
            });
        }
        let signature = b64.decode(&wire.signature).map_err(|_| EnvelopeError::BadField {
            field: "signature",
            why: "not standard base64",
        })?;
        if signature.len() != SIGNATURE_LEN {
            return Err(EnvelopeError::BadField { field: "signature", why: "not 64 bytes" });
        }
        Ok(SignedEnvelope { key_id: wire.key_id, payload, signature })
    }

    /// The JSON form (compact).
    pub fn to_json(&self) -> Vec<u8> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let wire = WireEnvelope {
            key_id: self.key_id,
            payload: b64.encode(&self.payload),
            signature: b64.encode(&self.signature),
        };
        // Serialising a struct of three strings cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// The id of the key that (claims to have) signed this.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The payload bytes. Unverified: parse them only after [`SignedEnvelope::verify`].
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Checks the signature under `domain` against the trusted `keys`, returning the payload
    /// bytes it covers.
    pub fn verify<'a>(
        &'a self,
        domain: Domain,
        keys: &[VerifyingKey],
    ) -> Result<&'a [u8], SignatureError> {
        let key = keys
            .iter()
            .find(|k| k.key_id() == self.key_id)
            .ok_or(SignatureError::UnknownKey { domain: domain.name(), key_id: self.key_id })?;
        if key.verify(&domain.message(&self.payload), &self.signature) {
            Ok(&self.payload)
        } else {
            Err(SignatureError::BadSignature { domain: domain.name(), key_id: self.key_id })
        }
    }
}

impl std::fmt::Debug for SignedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedEnvelope")
            .field("key_id", &self.key_id)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Serialize for SignedEnvelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        WireEnvelope {
            key_id: self.key_id,
            payload: b64.encode(&self.payload),
            signature: b64.encode(&self.signature),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SignedEnvelope {
    /// Embedding an envelope inside other JSON (e.g. a sync response) goes through the same
    /// checks as [`SignedEnvelope::from_json`], except the whole-document size cap, which the
    /// outer reader must enforce (the payload cap still holds).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SignedEnvelope::from_wire(WireEnvelope::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_round_trips_through_json() {
        let key = SigningKey::generate().unwrap();
        let env = SignedEnvelope::sign(&key, Domain::Policy, b"{\"x\":1}".to_vec()).unwrap();
        let back = SignedEnvelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert_eq!(
            back.verify(Domain::Policy, &[key.verifying_key().clone()]).unwrap(),
            b"{\"x\":1}"
        );
    }

    #[test]
    fn a_policy_signature_is_not_a_trigger_signature() {
        let key = SigningKey::generate().unwrap();
        let env = SignedEnvelope::sign(&key, Domain::Policy, b"{}".to_vec()).unwrap();
        let err = env.verify(Domain::Trigger, &[key.verifying_key().clone()]).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let env = SignedEnvelope::sign(&key, Domain::Policy, b"{}".to_vec()).unwrap();
        let err = env.verify(Domain::Policy, &[other.verifying_key().clone()]).unwrap_err();
        assert_eq!(
            err,
            SignatureError::UnknownKey { domain: "policy bundle", key_id: key.key_id() }
        );
        assert!(err.to_string().contains(&key.key_id().to_string()));
    }

    #[test]
    fn oversized_and_malformed_envelopes_are_refused() {
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(SignedEnvelope::from_json(&big), Err(EnvelopeError::TooLarge { .. })));
        assert!(matches!(SignedEnvelope::from_json(b"[]"), Err(EnvelopeError::Malformed(_))));
        let extra = br#"{"key_id":"0011223344556677","payload":"","signature":"","extra":1}"#;
        assert!(matches!(SignedEnvelope::from_json(extra), Err(EnvelopeError::Malformed(_))));
        let short_sig = br#"{"key_id":"0011223344556677","payload":"","signature":"AAAA"}"#;
        assert!(matches!(
            SignedEnvelope::from_json(short_sig),
            Err(EnvelopeError::BadField { field: "signature", .. })
        ));
        let bad_b64 = br#"{"key_id":"0011223344556677","payload":"!!","signature":""}"#;
        assert!(matches!(
            SignedEnvelope::from_json(bad_b64),
            Err(EnvelopeError::BadField { field: "payload", .. })
        ));
        let key = SigningKey::generate().unwrap();
        let huge = vec![b'x'; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            SignedEnvelope::sign(&key, Domain::Policy, huge),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn serde_embedding_matches_to_json() {
        let key = SigningKey::generate().unwrap();
        let env = SignedEnvelope::sign(&key, Domain::Trigger, b"abc".to_vec()).unwrap();
        let v = serde_json::to_vec(&env).unwrap();
        assert_eq!(v, env.to_json());
        let back: SignedEnvelope = serde_json::from_slice(&v).unwrap();
        assert_eq!(back, env);
        let huge = format!(
            r#"{{"key_id":"0011223344556677","payload":"{}","signature":""}}"#,
            "A".repeat(MAX_PAYLOAD_BYTES / 3 * 4 + 8)
        );
        let err = serde_json::from_str::<SignedEnvelope>(&huge).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
