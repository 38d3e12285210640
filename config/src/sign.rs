//! The console's side: validate a payload, serialise it, sign it into an envelope.
//!
//! Both ends share the payload types and [`crate::PolicyPayload::validate`] /
//! [`crate::TriggerPayload::validate`], so a console cannot sign a bundle an agent would refuse
//! for its shape (it can still sign one that has expired, or is for another device: those depend
//! on the receiver and the clock).

use crate::envelope::{Domain, EnvelopeError, SignedEnvelope};
use crate::keys::SigningKey;
use crate::policy::{PolicyPayload, ValidationError};
use crate::trigger::TriggerPayload;

/// Why the console could not sign. Never retryable: fix the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The payload breaks a rule agents enforce.
    #[error("refusing to sign an invalid {what}: {source}")]
    Invalid {
        /// "policy bundle" or "trigger".
        what: &'static str,
        /// The rule broken.
        source: ValidationError,
    },
    /// The payload could not be serialised (validation refuses the only known cause, timestamps
    /// RFC 3339 cannot write).
    #[error("cannot serialise the payload to sign: {0}")]
    Encode(String),
    /// The serialised payload is above the size cap.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Validates `payload` and signs its JSON under the policy domain.
pub fn sign_policy(key: &SigningKey, payload: &PolicyPayload) -> Result<SignedEnvelope, SignError> {
    payload.validate().map_err(|source| SignError::Invalid { what: "policy bundle", source })?;
    let bytes = payload.to_json().map_err(|e| SignError::Encode(e.why))?;
    Ok(SignedEnvelope::sign(key, Domain::Policy, bytes)?)
}

/// Validates `payload` and signs its JSON under the trigger domain.
pub fn sign_trigger(
    key: &SigningKey,
    payload: &TriggerPayload,
) -> Result<SignedEnvelope, SignError> {
    payload.validate().map_err(|source| SignError::Invalid { what: "trigger", source })?;
    let bytes = payload.to_json().map_err(|e| SignError::Encode(e.why))?;
    Ok(SignedEnvelope::sign(key, Domain::Trigger, bytes)?)
}
