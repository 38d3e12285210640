//! The agent's side: decide whether a signed policy or trigger may be acted on, and remember
//! what must not be accepted twice.
//!
//! A [`TrustStore`] holds the enrollment ([`TrustAnchor`]: tenant, device, trusted keys) and the
//! persisted [state] (last accepted policy version and its envelope, seen trigger ids).
//!
//! Policy checks, in order (the first failure is reported):
//!
//! ```text
//! key id known ─► signature ─► JSON schema ─► tenant ─► device in scope
//!   ─► self-approval ─► other structural rules ─► not_before ≤ now + skew ─► now < expires_at
//!   ─► every approval unexpired ─► version > last accepted ─► state persisted ─► in force
//! ```
//!
//! Re-delivery of the very bundle in force (same version, same payload bytes) is accepted again
//! without a state change, so a console may resend its current bundle on every sync; if it comes
//! under a new signature (key rotation) the new envelope is stored. Any other bundle whose
//! version is not above the last accepted one is refused.
//!
//! An expired approval refuses the **whole** bundle (the console must renew or drop the user and
//! publish a new version) rather than silently dropping the user: the console then learns at once
//! that what it published is not what runs. Approvals that expire *after* acceptance simply stop
//! that user's capture: [`VerifiedPolicy::approved_account`] checks each approval against `now`.
//!
//! Trigger checks, in order:
//!
//! ```text
//! key id known ─► signature ─► JSON schema ─► tenant ─► device (if named) ─► structural rules
//!   ─► issued_at ≤ now + skew ─► now < expires_at ─► id not seen ─► a policy in force
//!   ─► capture enabled ─► user listed with an approval in force at event_at and at now
//!   ─► before/after within the policy's window bounds ─► id persisted ─► act on it
//! ```
//!
//! [`TrustStore::accept_trigger`] does all of it; the agent instead calls
//! [`TrustStore::verify_trigger`] (every check up to "id persisted", no state change), records
//! the clip durably, and only then [`TrustStore::mark_trigger_seen`]: a crash in between leaves
//! the id unseen, the console sends the trigger again, and the agent recognises the clip it
//! already holds for that id (see `rearview_uploader::Uploader::accept_trigger`).
//!
//! Only accepted triggers are remembered, so one refused for a reason that can change (no policy
//! yet) can be sent again. `now` is always passed in, for tests and so one instant is used per
//! decision.

pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::envelope::{Domain, SignatureError, SignedEnvelope};
use crate::ids::{DeviceId, LocalAccounts, Principal, TenantId, TriggerId};
use crate::keys::{KeyId, VerifyingKey};
use crate::policy::{PayloadError, PolicyPayload, UserScope, ValidationError};
use crate::trigger::TriggerPayload;
pub use state::{StateError, MAX_SEEN_TRIGGERS};

/// Clock difference tolerated for "not yet valid" checks (never for expiry): device clocks drift.
pub const DEFAULT_CLOCK_SKEW: time::Duration = time::Duration::minutes(2);

fn rfc3339(t: &OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// What the device was told at enrollment: whose instructions to follow, and their keys.
/// Serialisable so the enrollment code can persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAnchor {
    /// The tenant this device belongs to.
    pub tenant: TenantId,
    /// This device's id.
    pub device: DeviceId,
    /// Keys whose signatures are accepted (more than one during a key rotation).
    pub keys: Vec<VerifyingKey>,
}

/// A policy bundle that passed every check. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VerifiedPolicy(Arc<VerifiedPolicyInner>);

#[derive(Debug)]
struct VerifiedPolicyInner {
    payload: PolicyPayload,
    envelope: SignedEnvelope,
}

impl VerifiedPolicy {
    /// The policy's content.
    pub fn payload(&self) -> &PolicyPayload {
        &self.0.payload
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.0.payload.version
    }

    /// The envelope it came in (e.g. to show the key id, or to attach as proof).
    pub fn envelope(&self) -> &SignedEnvelope {
        &self.0.envelope
    }

    /// Whether the bundle is in force at `now` (`not_before <= now < expires_at`).
    pub fn in_force_at(&self, now: OffsetDateTime) -> bool {
        self.0.payload.in_force_at(now)
    }

    /// The scope entry naming local account `account` (by `accounts`' rule) if the bundle is in
    /// force at `now`, capture is enabled, and the user's approval is in force at `now`. `None`
    /// means: do not record this user at all.
    pub fn approved_account(
        &self,
        accounts: &LocalAccounts,
        account: &str,
        now: OffsetDateTime,
    ) -> Option<&UserScope> {
        let p = &self.0.payload;
        if !p.in_force_at(now) || !p.capture.enabled {
            return None;
        }
        p.approved_account(accounts, account, now)
    }
}

/// A trigger that passed every check (and, from [`TrustStore::accept_trigger`], has been
/// recorded as seen).
#[derive(Debug, Clone)]
pub struct VerifiedTrigger {
    payload: TriggerPayload,
    policy_version: u64,
    envelope: SignedEnvelope,
}

impl VerifiedTrigger {
    /// The trigger's content.
    pub fn payload(&self) -> &TriggerPayload {
        &self.payload
    }

    /// Version of the policy in force when it was accepted (for the clip manifest).
    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }

    /// The envelope it came in (to attach to the clip as the console's signed instruction).
    pub fn envelope(&self) -> &SignedEnvelope {
        &self.envelope
    }
}

/// Why a policy bundle was refused. Only [`PolicyRejected::State`] may be retryable; everything
/// else needs a new bundle (or a fixed clock, or a re-enrollment), as each message says.
#[derive(Debug, thiserror::Error)]
pub enum PolicyRejected {
    /// The envelope names a key this device does not trust.
    #[error("policy bundle rejected: signed with key {key_id}, which this device does not trust; re-enroll the device or check the console's signing key ('rearview status' shows the trusted keys)")]
    UnknownKey {
        /// Key id named by the envelope.
        key_id: KeyId,
    },
    /// The signature does not verify over the payload under the policy domain.
    #[error("policy bundle rejected: signature does not verify with tenant key {key_id}; the bundle was altered or signed for another purpose, ask the console to re-issue it")]
    BadSignature {
        /// Key id named by the envelope.
        key_id: KeyId,
    },
    /// Signed, but not a policy payload of this schema.
    #[error("policy bundle rejected: {0}; the console and agent disagree on the policy format, upgrade the older one")]
    Malformed(PayloadError),
    /// For another tenant.
    #[error("policy bundle v{version} rejected: it is for tenant {tenant}, this device belongs to {expected}; check the server URL in the agent config")]
    OtherTenant {
        /// Bundle version.
        version: u64,
        /// Tenant named by the bundle.
        tenant: TenantId,
        /// This device's tenant.
        expected: TenantId,
    },
    /// The bundle's device scope does not include this device.
    #[error("policy bundle v{version} rejected: its device scope does not include this device ({device}); add the device to the policy in the console")]
    NotForThisDevice {
        /// Bundle version.
        version: u64,
        /// This device.
        device: DeviceId,
    },
    /// A user's approval was approved by its requester.
    #[error("policy bundle v{version} rejected: the approval for {principal} was approved by its own requester {approver}; a different person must approve it")]
    SelfApproval {
        /// Bundle version.
        version: u64,
        /// The user concerned.
        principal: Principal,
        /// Requester and approver.
        approver: Principal,
    },
    /// Another structural rule is broken.
    #[error("policy bundle v{version} rejected: {source}; fix the policy in the console and publish a new version")]
    Invalid {
        /// Bundle version.
        version: u64,
        /// The rule broken.
        source: ValidationError,
    },
    /// `not_before` is ahead of this device's clock (beyond the tolerated skew).
    #[error("policy bundle v{version} rejected: not valid before {}; wait, or check this device's clock", rfc3339(.not_before))]
    NotYetValid {
        /// Bundle version.
        version: u64,
        /// Its `not_before`.
        not_before: OffsetDateTime,
    },
    /// `expires_at` has passed.
    #[error("policy bundle v{version} rejected: it expired at {}; the console must publish a fresh bundle (or this device's clock is wrong)", rfc3339(.expires_at))]
    Expired {
        /// Bundle version.
        version: u64,
        /// Its `expires_at`.
        expires_at: OffsetDateTime,
    },
    /// A user's approval has expired.
    #[error("policy bundle v{version} rejected: the approval for {principal} expired at {}; renew or remove it in the console and publish a new version", rfc3339(.expired_at))]
    ApprovalExpired {
        /// Bundle version.
        version: u64,
        /// The user concerned.
        principal: Principal,
        /// The approval's `expires_at`.
        expired_at: OffsetDateTime,
    },
    /// Not above the last accepted version (rollback or stale resend).
    #[error("policy bundle v{version} rejected: version is not above v{last}, the last accepted one (rollback refused); publish the policy with a version above {last}")]
    VersionNotAbove {
        /// Bundle version.
        version: u64,
        /// Last accepted version.
        last: u64,
    },
    /// Valid, but recording its acceptance failed; it is not in force.
    #[error("policy bundle v{version} not applied: {source}")]
    State {
        /// Bundle version.
        version: u64,
        /// The failure (boxed: it is large and rare).
        source: Box<StateError>,
    },
}

impl PolicyRejected {
    /// Whether the same bundle may be accepted if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            PolicyRejected::State { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// Why a trigger was refused. [`TriggerRejected::NoPolicy`] and some [`TriggerRejected::State`]
/// are retryable; everything else is final for this trigger.
#[derive(Debug, thiserror::Error)]
pub enum TriggerRejected {
    /// The envelope names a key this device does not trust.
    #[error("trigger rejected: signed with key {key_id}, which this device does not trust; re-enroll the device or check the console's signing key")]
    UnknownKey {
        /// Key id named by the envelope.
        key_id: KeyId,
    },
    /// The signature does not verify over the payload under the trigger domain.
    #[error("trigger rejected: signature does not verify with tenant key {key_id}; it was altered or signed for another purpose, ask the console to re-issue it")]
    BadSignature {
        /// Key id named by the envelope.
        key_id: KeyId,
    },
    /// Signed, but not a trigger payload of this schema.
    #[error("trigger rejected: {0}; the console and agent disagree on the trigger format, upgrade the older one")]
    Malformed(PayloadError),
    /// For another tenant.
    #[error("trigger {id} rejected: it is for tenant {tenant}, this device belongs to {expected}")]
    OtherTenant {
        /// Trigger id.
        id: TriggerId,
        /// Tenant named by the trigger.
        tenant: TenantId,
        /// This device's tenant.
        expected: TenantId,
    },
    /// Names another device.
    #[error("trigger {id} rejected: it is for device {target}, this is {device}")]
    NotForThisDevice {
        /// Trigger id.
        id: TriggerId,
        /// Device named by the trigger.
        target: DeviceId,
        /// This device.
        device: DeviceId,
    },
    /// A structural rule is broken.
    #[error("trigger {id} rejected: {source}; the console must issue a corrected trigger")]
    Invalid {
        /// Trigger id.
        id: TriggerId,
        /// The rule broken.
        source: ValidationError,
    },
    /// `issued_at` is ahead of this device's clock (beyond the tolerated skew).
    #[error("trigger {id} rejected: issued at {}, which is in this device's future; check this device's clock", rfc3339(.issued_at))]
    NotYetValid {
        /// Trigger id.
        id: TriggerId,
        /// Its `issued_at`.
        issued_at: OffsetDateTime,
    },
    /// `expires_at` has passed.
    #[error("trigger {id} rejected: it expired at {}; issue a new trigger if the clip is still wanted", rfc3339(.expires_at))]
    Expired {
        /// Trigger id.
        id: TriggerId,
        /// Its `expires_at`.
        expires_at: OffsetDateTime,
    },
    /// Already accepted once (replay).
    #[error("trigger {id} rejected: already received (replay); each trigger acts once, issue a new one with a new id")]
    Replay {
        /// Trigger id.
        id: TriggerId,
    },
    /// No policy is in force on this device. Retryable after the next policy sync.
    #[error("trigger {id} rejected: no policy is in force on this device; it can be resent once the device has a current policy")]
    NoPolicy {
        /// Trigger id.
        id: TriggerId,
    },
    /// The user is not approved in the policy in force (at the event or now).
    #[error("trigger {id} rejected: {user} has no approval in force in policy v{policy_version} ({why}); approve the user in the console first")]
    UserNotApproved {
        /// Trigger id.
        id: TriggerId,
        /// The user named.
        user: Principal,
        /// Version of the policy in force.
        policy_version: u64,
        /// "capture is disabled in the policy", "not listed", "approval not in force at the event
        /// time", "approval not in force now".
        why: &'static str,
    },
    /// The window asks for more than the policy allows.
    #[error("trigger {id} rejected: window {before_secs} s before / {after_secs} s after exceeds the policy v{policy_version} bounds of {max_before_secs} s / {max_after_secs} s; ask for a shorter window or widen the policy")]
    WindowTooLong {
        /// Trigger id.
        id: TriggerId,
        /// Requested seconds before.
        before_secs: u32,
        /// Requested seconds after.
        after_secs: u32,
        /// Policy bound before.
        max_before_secs: u32,
        /// Policy bound after.
        max_after_secs: u32,
        /// Version of the policy in force.
        policy_version: u64,
    },
    /// Valid, but recording it as seen failed; not acted on.
    #[error("trigger {id} not applied: {source}")]
    State {
        /// Trigger id.
        id: TriggerId,
        /// The failure (boxed: it is large and rare).
        source: Box<StateError>,
    },
}

impl TriggerRejected {
    /// Whether the same trigger may be accepted if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            TriggerRejected::NoPolicy { .. } => true,
            TriggerRejected::State { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// The agent's trust decisions and their persisted memory. See the module docs.
#[derive(Debug)]
pub struct TrustStore {
    anchor: TrustAnchor,
    path: PathBuf,
    clock_skew: time::Duration,
    state: state::State,
    current: Option<VerifiedPolicy>,
}

impl TrustStore {
    /// Opens (or starts) the state file at `state_path` for `anchor`'s enrollment. The policy
    /// recorded there is re-verified against `anchor.keys`; if it no longer verifies (keys
    /// rotated) there is no current policy until the console sends one, but its version still
    /// bounds what is accepted.
    pub fn open(
        anchor: TrustAnchor,
        state_path: impl Into<PathBuf>,
    ) -> Result<TrustStore, StateError> {
        let path = state_path.into();
        let state = state::load(&path, &anchor.tenant, &anchor.device)?;
        let mut store =
            TrustStore { anchor, path, clock_skew: DEFAULT_CLOCK_SKEW, state, current: None };
        store.current = store.reverify_stored();
        Ok(store)
    }

    fn reverify_stored(&self) -> Option<VerifiedPolicy> {
        let env = self.state.policy.as_ref()?;
        let payload =
            PolicyPayload::from_json(env.verify(Domain::Policy, &self.anchor.keys).ok()?).ok()?;
        let ok = payload.tenant == self.anchor.tenant
            && payload.devices.includes(&self.anchor.device)
            && Some(payload.version) == self.state.last_policy_version
            && payload.validate().is_ok();
        ok.then(|| VerifiedPolicy(Arc::new(VerifiedPolicyInner { payload, envelope: env.clone() })))
    }

    /// Changes the clock skew tolerated by "not yet valid" checks (default
    /// [`DEFAULT_CLOCK_SKEW`]).
    pub fn set_clock_skew(&mut self, skew: std::time::Duration) {
        self.clock_skew = time::Duration::try_from(skew).unwrap_or(DEFAULT_CLOCK_SKEW);
    }

    /// Replaces the trusted keys (key rotation announced by the console over an authenticated
    /// channel). The current policy stays in force.
    pub fn set_keys(&mut self, keys: Vec<VerifyingKey>) {
        self.anchor.keys = keys;
    }

    /// The enrollment.
    pub fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// Where the state lives.
    pub fn state_path(&self) -> &Path {
        &self.path
    }

    /// Highest policy version accepted so far, if any.
    pub fn last_policy_version(&self) -> Option<u64> {
        self.state.last_policy_version
    }

    /// The last accepted policy, whether or not it is still in force.
    pub fn latest_policy(&self) -> Option<&VerifiedPolicy> {
        self.current.as_ref()
    }

    /// The policy in force at `now`, if any. `None` means: record nobody.
    pub fn policy_in_force(&self, now: OffsetDateTime) -> Option<&VerifiedPolicy> {
        self.current.as_ref().filter(|p| p.in_force_at(now))
    }

    /// Verifies a policy bundle and, if it passes, records it as the policy in force (persisted
    /// before returning).
    pub fn accept_policy(
        &mut self,
        envelope: &SignedEnvelope,
        now: OffsetDateTime,
    ) -> Result<VerifiedPolicy, PolicyRejected> {
        let bytes = envelope.verify(Domain::Policy, &self.anchor.keys).map_err(|e| match e {
            SignatureError::UnknownKey { key_id, .. } => PolicyRejected::UnknownKey { key_id },
            SignatureError::BadSignature { key_id, .. } => PolicyRejected::BadSignature { key_id },
        })?;
        let payload = PolicyPayload::from_json(bytes).map_err(PolicyRejected::Malformed)?;
        let version = payload.version;
        if payload.tenant != self.anchor.tenant {
            return Err(PolicyRejected::OtherTenant {
                version,
                tenant: payload.tenant,
                expected: self.anchor.tenant.clone(),
            });
        }
        if !payload.devices.includes(&self.anchor.device) {
            return Err(PolicyRejected::NotForThisDevice {
                version,
                device: self.anchor.device.clone(),
            });
        }
        payload.validate().map_err(|source| match source {
            ValidationError::SelfApproval { principal, approver } => {
                PolicyRejected::SelfApproval { version, principal, approver }
            }
            source => PolicyRejected::Invalid { version, source },
        })?;
        if payload.not_before > now.saturating_add(self.clock_skew) {
            return Err(PolicyRejected::NotYetValid { version, not_before: payload.not_before });
        }
        if payload.expires_at <= now {
            return Err(PolicyRejected::Expired { version, expires_at: payload.expires_at });
        }
        if let Some(u) = payload.users.iter().find(|u| u.approval.expires_at <= now) {
            return Err(PolicyRejected::ApprovalExpired {
                version,
                principal: u.principal.clone(),
                expired_at: u.approval.expires_at,
            });
        }
        if let Some(last) = self.state.last_policy_version {
            let same_bundle = version == last
                && self.state.policy.as_ref().is_some_and(|p| p.payload() == envelope.payload());
            if version < last || (version == last && !same_bundle) {
                return Err(PolicyRejected::VersionNotAbove { version, last });
            }
            if let Some(current) = &self.current {
                if current.envelope() == envelope {
                    return Ok(current.clone());
                }
            }
            // Same bundle under a new signature (after a key rotation): store the new envelope
            // so it re-verifies with the current keys after a restart.
        }
        let mut next = self.state.clone();
        next.last_policy_version = Some(version);
        next.policy = Some(envelope.clone());
        next.prune(now);
        state::store(&self.path, &self.anchor.tenant, &self.anchor.device, &next)
            .map_err(|source| PolicyRejected::State { version, source: Box::new(source) })?;
        self.state = next;
        let verified =
            VerifiedPolicy(Arc::new(VerifiedPolicyInner { payload, envelope: envelope.clone() }));
        self.current = Some(verified.clone());
        Ok(verified)
    }

    /// Verifies a trigger against the policy in force and, if it passes, records its id as seen
    /// (persisted before returning): [`verify_trigger`](Self::verify_trigger) then
    /// [`mark_trigger_seen`](Self::mark_trigger_seen). A caller that must record the clip
    /// before the id counts as seen (so a crash in between loses nothing) calls the two itself.
    pub fn accept_trigger(
        &mut self,
        envelope: &SignedEnvelope,
        now: OffsetDateTime,
    ) -> Result<VerifiedTrigger, TriggerRejected> {
        let trigger = self.verify_trigger(envelope, now)?;
        self.mark_trigger_seen(&trigger, now)?;
        Ok(trigger)
    }

    /// Runs every check of a trigger (module docs, up to "id persisted") without changing any
    /// state: a trigger that passes may still be refused by [`mark_trigger_seen`]
    /// (Self::mark_trigger_seen) only if the state file cannot be written.
    pub fn verify_trigger(
        &self,
        envelope: &SignedEnvelope,
        now: OffsetDateTime,
    ) -> Result<VerifiedTrigger, TriggerRejected> {
        let bytes = envelope.verify(Domain::Trigger, &self.anchor.keys).map_err(|e| match e {
            SignatureError::UnknownKey { key_id, .. } => TriggerRejected::UnknownKey { key_id },
            SignatureError::BadSignature { key_id, .. } => TriggerRejected::BadSignature { key_id },
        })?;
        let t = TriggerPayload::from_json(bytes).map_err(TriggerRejected::Malformed)?;
        let id = t.id.clone();
        if t.tenant != self.anchor.tenant {
            return Err(TriggerRejected::OtherTenant {
                id,
                tenant: t.tenant,
                expected: self.anchor.tenant.clone(),
            });
        }
        if let Some(target) = &t.device {
            if target != &self.anchor.device {
                return Err(TriggerRejected::NotForThisDevice {
                    id,
                    target: target.clone(),
                    device: self.anchor.device.clone(),
                });
            }
        }
        t.validate().map_err(|source| TriggerRejected::Invalid { id: id.clone(), source })?;
        if t.issued_at > now.saturating_add(self.clock_skew) {
            return Err(TriggerRejected::NotYetValid { id, issued_at: t.issued_at });
        }
        if t.expires_at <= now {
            return Err(TriggerRejected::Expired { id, expires_at: t.expires_at });
        }
        if self.state.seen_triggers.contains_key(&id) {
            return Err(TriggerRejected::Replay { id });
        }
        let Some(policy) = self.policy_in_force(now) else {
            return Err(TriggerRejected::NoPolicy { id });
        };
        let policy_version = policy.version();
        let p = policy.payload();
        let not_approved = |why| TriggerRejected::UserNotApproved {
            id: id.clone(),
            user: t.user.clone(),
            policy_version,
            why,
        };
        if !p.capture.enabled {
            return Err(not_approved("capture is disabled in the policy"));
        }
        let user = p.user(&t.user).ok_or_else(|| not_approved("not listed"))?;
        if !user.approval.in_force_at(t.event_at) {
            return Err(not_approved("approval not in force at the event time"));
        }
        if !user.approval.in_force_at(now) {
            return Err(not_approved("approval not in force now"));
        }
        if t.before_secs > p.window.max_before_secs || t.after_secs > p.window.max_after_secs {
            return Err(TriggerRejected::WindowTooLong {
                id,
                before_secs: t.before_secs,
                after_secs: t.after_secs,
                max_before_secs: p.window.max_before_secs,
                max_after_secs: p.window.max_after_secs,
                policy_version,
            });
        }
        // Refused before anyone acts on it, rather than after its clip is recorded.
        let unexpired = self.state.seen_triggers.values().filter(|e| **e > now).count();
        if unexpired >= MAX_SEEN_TRIGGERS {
            return Err(TriggerRejected::State {
                id,
                source: Box::new(StateError::TooManyTriggers { count: unexpired }),
            });
        }
        Ok(VerifiedTrigger { payload: t, policy_version, envelope: envelope.clone() })
    }

    /// Records `trigger` as seen (persisted before returning), so the same id is refused as a
    /// replay from now on. Marking an id already seen changes nothing.
    pub fn mark_trigger_seen(
        &mut self,
        trigger: &VerifiedTrigger,
        now: OffsetDateTime,
    ) -> Result<(), TriggerRejected> {
        let id = &trigger.payload.id;
        if self.state.seen_triggers.contains_key(id) {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.prune(now);
        if next.seen_triggers.len() >= MAX_SEEN_TRIGGERS {
            return Err(TriggerRejected::State {
                id: id.clone(),
                source: Box::new(StateError::TooManyTriggers { count: next.seen_triggers.len() }),
            });
        }
        next.seen_triggers.insert(id.clone(), trigger.payload.expires_at);
        state::store(&self.path, &self.anchor.tenant, &self.anchor.device, &next).map_err(
            |source| TriggerRejected::State { id: id.clone(), source: Box::new(source) },
        )?;
        self.state = next;
        Ok(())
    }

    /// How many trigger ids are remembered (for status output).
    pub fn seen_trigger_count(&self) -> usize {
        self.state.seen_triggers.len()
    }
}
