//! Rearview's configuration and trust: the agent's local config file, the policy schema, and
//! signed policy bundles and triggers, with both the signing side (console) and the verifying
//! side (agent), so both ends share one definition.
//!
//! The agent only ever acts on signed, current, approved instructions: every policy and trigger
//! is an Ed25519-signed [`SignedEnvelope`] whose payload is checked for tenant, device, version
//! (no rollback), validity period, approvals (approver ≠ requester, unexpired), window bounds and
//! replay before a [`VerifiedPolicy`] or [`VerifiedTrigger`] comes out. Each refusal is its own
//! error variant whose message names the reason and the fix.
//!
//! # Use
//!
//! Console:
//!
//! ```
//! # use rearview_config::*;
//! # use time::macros::datetime;
//! let key = SigningKey::generate()?;                     // store key.pkcs8_der() securely
//! let mut policy = PolicyPayload::new(
//!     TenantId::new("contoso")?, 1,
//!     datetime!(2026-11-22 00:00 UTC), datetime!(2026-12-22 00:00 UTC));
//! policy.capture.enabled = true;
//! let envelope = sign_policy(&key, &policy)?;            // send envelope.to_json()
//! # let anchor = TrustAnchor { tenant: policy.tenant.clone(), device: DeviceId::new("d1")?,
//! #     keys: vec![key.verifying_key().clone()] };
//! # let dir = tempfile::tempdir()?;
//! # let mut trust = TrustStore::open(anchor, dir.path().join("trust.json"))?;
//! # let now = datetime!(2026-11-23 00:00 UTC);
//! # let received = envelope.to_json();
//! // Agent:
//! let envelope = SignedEnvelope::from_json(&received)?;  // size-capped parse
//! let policy = trust.accept_policy(&envelope, now)?;     // verified, persisted
//! let accounts = LocalAccounts::bare();                   // from the agent config
//! assert!(policy.approved_account(&accounts, "alice", now).is_none()); // nobody approved
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! * [`agent_config`]: the agent's TOML file (`/etc/rearview/agent.toml`) into a validated
//!   [`AgentConfig`].
//! * [`ids`]: validated names ([`TenantId`], [`DeviceId`], [`Principal`], [`TriggerId`],
//!   [`AlertId`]); the one principal form ([`canonical_principal`]) and the one rule mapping
//!   principals onto local accounts ([`LocalAccounts`]).
//! * [`keys`]: [`SigningKey`] (console, redacted, zeroized), [`VerifyingKey`], [`KeyId`].
//! * [`envelope`]: the wire format of signed payloads ([`SignedEnvelope`]), domain separation
//!   between policies and triggers, size caps.
//! * [`policy`]: the policy payload schema ([`PolicyPayload`]) and its structural validation,
//!   including [`validate_approval`], the one set of rules for an approval that the console's
//!   API, the console's signer and the agent all apply.
//! * [`trigger`]: the trigger payload schema ([`TriggerPayload`]).
//! * [`sign`]: console side, [`sign_policy`] and [`sign_trigger`].
//! * [`trust`]: agent side, [`TrustStore`] (verification rules, persisted anti-rollback and
//!   anti-replay state) yielding [`VerifiedPolicy`] and [`VerifiedTrigger`].
//!
//! # Errors
//!
//! One `thiserror` enum per concern: [`ConfigError`] (agent config), [`KeyError`],
//! [`EnvelopeError`] (unreadable envelope), [`SignError`] (console refuses to sign),
//! [`PolicyRejected`] and [`TriggerRejected`] (one variant per refusal reason, messages name the
//! fix), [`StateError`] (trust state file). Each says whether retrying can help:
//! [`PolicyRejected::is_retryable`], [`TriggerRejected::is_retryable`],
//! [`StateError::is_retryable`]; everything else is permanent for the same input.
//!
//! Times are [`time::OffsetDateTime`] (re-exported as [`time`]), RFC 3339 in JSON; durations are
//! whole seconds in fields named `*_secs`; sizes are bytes in fields named `*_bytes`. (The
//! `time::macros::datetime!` macro needs `time` as a direct dependency of the calling crate.)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent_config;
pub mod data_dir;
pub mod envelope;
pub mod ids;
pub mod keys;
pub mod policy;
pub mod sign;
pub mod trigger;
pub mod trust;

pub use time;

pub use agent_config::{
    AgentConfig, ByteSize, ConfigError, FixedSession, LogFormat, LogLevel, DEFAULT_CONFIG_PATH,
    DEFAULT_REMOVABLE_ROOTS,
};
pub use data_dir::DataDir;
pub use envelope::{
    Domain, EnvelopeError, SignatureError, SignedEnvelope, MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES,
};
pub use ids::{
    canonical_principal, AlertId, DeviceId, IdError, LocalAccounts, Principal, TenantId, TriggerId,
};
pub use keys::{KeyError, KeyId, SigningKey, VerifyingKey};
pub use policy::{
    canonical_name, validate_approval, Approval, ApprovalRecord, CaptureMode, CaptureSettings,
    DeviceScope, IndicatorKind, IndicatorRule, Limits, Notice, OfflineCache, PayloadError,
    PolicyPayload, Quality, RoleGrant, UserScope, ValidationError, WhenFull, WindowBounds,
};
pub use policy::{MAX_MONITORS, MAX_TEXT_LEN, MAX_USERS, MAX_WINDOW_SECS};
pub use sign::{sign_policy, sign_trigger, SignError};
pub use trigger::{TriggerPayload, TriggerReason, MAX_EVENT_AHEAD, MAX_TRIGGER_LIFETIME};
pub use trust::{
    PolicyRejected, StateError, TriggerRejected, TrustAnchor, TrustStore, VerifiedPolicy,
    VerifiedTrigger, DEFAULT_CLOCK_SKEW, MAX_SEEN_TRIGGERS,
};
