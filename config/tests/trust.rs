//! The agent's trust rules, end to end through the public API: the console signs, the agent's
//! `TrustStore` accepts or refuses, state persists in a real file in a temp dir.

use rearview_config::time::macros::datetime;
use rearview_config::time::{Duration, OffsetDateTime};
use rearview_config::*;

struct Fixture {
    key: SigningKey,
    dir: tempfile::TempDir,
    store: TrustStore,
}

const NOW: OffsetDateTime = datetime!(2026-11-22 02:30 UTC);

fn p(s: &str) -> Principal {
    Principal::new(s).unwrap()
}

/// The device's accounts are the UPNs of contoso.example (the test policies name
/// `alice@contoso.example`).
fn contoso() -> LocalAccounts {
    LocalAccounts::with_domain("contoso.example").unwrap()
}

fn anchor(key: &SigningKey) -> TrustAnchor {
    TrustAnchor {
        tenant: TenantId::new("contoso").unwrap(),
        device: DeviceId::new("laptop-42").unwrap(),
        keys: vec![key.verifying_key().clone()],
    }
}

impl Fixture {
    fn new() -> Fixture {
        let key = SigningKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::open(anchor(&key), dir.path().join("trust.json")).unwrap();
        Fixture { key, dir, store }
    }

    fn reopen(&mut self) {
        self.store =
            TrustStore::open(anchor(&self.key), self.dir.path().join("trust.json")).unwrap();
    }

    fn sign(&self, pol: &PolicyPayload) -> SignedEnvelope {
        sign_policy(&self.key, pol).unwrap()
    }

    /// Signs without the console's validation, as a buggy or hostile signer might.
    fn sign_raw(&self, domain: Domain, bytes: Vec<u8>) -> SignedEnvelope {
        SignedEnvelope::sign(&self.key, domain, bytes).unwrap()
    }

    fn accept(&mut self, pol: &PolicyPayload) -> Result<VerifiedPolicy, PolicyRejected> {
        let env = self.sign(pol);
        self.store.accept_policy(&env, NOW)
    }

    fn trigger(
        &mut self,
        t: &TriggerPayload,
        now: OffsetDateTime,
    ) -> Result<VerifiedTrigger, TriggerRejected> {
        let env = sign_trigger(&self.key, t).unwrap();
        self.store.accept_trigger(&env, now)
    }
}

fn policy(version: u64) -> PolicyPayload {
    let mut pol = PolicyPayload::new(
        TenantId::new("contoso").unwrap(),
        version,
        datetime!(2026-11-22 00:00 UTC),
        datetime!(2026-12-22 00:00 UTC),
    );
    pol.capture.enabled = true;
    pol.users.push(UserScope {
        principal: p("alice@contoso.example"),
        mode: CaptureMode::SpecificActivities,
        approval: Approval {
            requested_by: p("ivan@contoso.example"),
            approved_by: p("rita@contoso.example"),
            justification: "case 4711: suspected data exfiltration".into(),
            approved_at: datetime!(2026-11-21 00:00 UTC),
            expires_at: datetime!(2026-12-01 00:00 UTC),
            approver_grant: None,
        },
    });
    pol
}

fn trigger(id: &str) -> TriggerPayload {
    TriggerPayload {
        id: TriggerId::new(id).unwrap(),
        tenant: TenantId::new("contoso").unwrap(),
        user: p("alice@contoso.example"),
        device: None,
        event_at: datetime!(2026-11-22 02:25 UTC),
        before_secs: 300,
        after_secs: 600,
        reason: TriggerReason {
            indicator: IndicatorKind::RemovableMediaCopy,
            object: "roadmap.docx".into(),
        },
        alert: AlertId::new("alert-981").unwrap(),
        issued_at: datetime!(2026-11-22 02:26 UTC),
        expires_at: datetime!(2026-11-22 03:26 UTC),
    }
}

// ---------------------------------------------------------------- policy: acceptance

#[test]
fn valid_policy_is_accepted_and_survives_restart() {
    let mut f = Fixture::new();
    assert!(f.store.policy_in_force(NOW).is_none(), "fresh device has no policy");
    let v = f.accept(&policy(3)).unwrap();
    assert_eq!(v.version(), 3);
    assert_eq!(v.payload(), &policy(3));
    assert!(v.approved_account(&contoso(), "alice", NOW).is_some());
    assert!(v.approved_account(&contoso(), "bob", NOW).is_none());

    f.reopen();
    assert_eq!(f.store.last_policy_version(), Some(3));
    let again = f.store.policy_in_force(NOW).expect("policy in force after restart");
    assert_eq!(again.payload(), &policy(3));
    assert_eq!(again.envelope().key_id(), f.key.key_id());
}

#[test]
fn resending_the_policy_in_force_is_idempotent_but_other_bytes_are_not() {
    let mut f = Fixture::new();
    let env = f.sign(&policy(3));
    f.store.accept_policy(&env, NOW).unwrap();
    assert_eq!(f.store.accept_policy(&env, NOW).unwrap().version(), 3);
    let mut changed = policy(3);
    changed.capture.fps = 2;
    let err = f.accept(&changed).unwrap_err();
    assert!(matches!(err, PolicyRejected::VersionNotAbove { version: 3, last: 3 }), "{err}");
}

#[test]
fn same_bundle_resigned_after_key_rotation_is_taken_and_survives_restart() {
    let mut f = Fixture::new();
    f.accept(&policy(3)).unwrap();
    let new_key = SigningKey::generate().unwrap();
    f.store.set_keys(vec![f.key.verifying_key().clone(), new_key.verifying_key().clone()]);
    let resigned = sign_policy(&new_key, &policy(3)).unwrap();
    assert_eq!(f.store.accept_policy(&resigned, NOW).unwrap().version(), 3);
    let mut anchor2 = anchor(&new_key);
    anchor2.keys = vec![new_key.verifying_key().clone()];
    let store = TrustStore::open(anchor2, f.dir.path().join("trust.json")).unwrap();
    assert_eq!(store.policy_in_force(NOW).unwrap().envelope().key_id(), new_key.key_id());
}

#[test]
fn a_newer_policy_replaces_the_old_one() {
    let mut f = Fixture::new();
    f.accept(&policy(3)).unwrap();
    let mut revoked = policy(4);
    revoked.users.clear();
    f.accept(&revoked).unwrap();
    let now = f.store.policy_in_force(NOW).unwrap();
    assert_eq!(now.version(), 4);
    assert!(
        now.approved_account(&contoso(), "alice", NOW).is_none(),
        "revocation stops capture at once"
    );
}

#[test]
fn capture_disabled_policy_approves_nobody() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.capture.enabled = false;
    let v = f.accept(&pol).unwrap();
    assert!(v.approved_account(&contoso(), "alice", NOW).is_none());
}

#[test]
fn policy_and_approvals_stop_at_their_expiry_after_acceptance() {
    let mut f = Fixture::new();
    let v = f.accept(&policy(1)).unwrap();
    let after_approval = datetime!(2026-12-01 00:00 UTC);
    assert!(v
        .approved_account(&contoso(), "alice", after_approval - Duration::seconds(1))
        .is_some());
    assert!(v.approved_account(&contoso(), "alice", after_approval).is_none(), "approval expired");
    let after_policy = datetime!(2026-12-22 00:00 UTC);
    assert!(f.store.policy_in_force(after_policy - Duration::seconds(1)).is_some());
    assert!(f.store.policy_in_force(after_policy).is_none(), "policy expired: fail closed");
    assert!(f.store.latest_policy().is_some());
}

#[test]
fn device_list_including_this_device_is_accepted() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.devices = DeviceScope::Only(vec![
        DeviceId::new("other").unwrap(),
        DeviceId::new("laptop-42").unwrap(),
    ]);
    f.accept(&pol).unwrap();
}

#[test]
fn not_before_within_clock_skew_is_accepted() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.not_before = NOW + Duration::seconds(60);
    f.accept(&pol).unwrap();
}

// ---------------------------------------------------------------- policy: each refusal

#[test]
fn altered_payload_is_refused_as_bad_signature() {
    let mut f = Fixture::new();
    let env = f.sign(&policy(1));
    let mut payload = env.payload().to_vec();
    let at = payload.iter().position(|&b| b == b'1').unwrap();
    payload[at] = b'2';
    let forged = SignedEnvelope::from_parts(env.key_id(), payload, env.signature().to_vec());
    let err = f.store.accept_policy(&forged, NOW).unwrap_err();
    assert!(
        matches!(err, PolicyRejected::BadSignature { key_id } if key_id == f.key.key_id()),
        "{err}"
    );
    assert!(err.to_string().contains(&f.key.key_id().to_string()));
    assert!(!err.is_retryable());
    assert!(f.store.policy_in_force(NOW).is_none());
}

#[test]
fn signature_by_an_untrusted_key_is_refused_as_unknown_key() {
    let mut f = Fixture::new();
    let stranger = SigningKey::generate().unwrap();
    let env = sign_policy(&stranger, &policy(1)).unwrap();
    let err = f.store.accept_policy(&env, NOW).unwrap_err();
    assert!(
        matches!(err, PolicyRejected::UnknownKey { key_id } if key_id == stranger.key_id()),
        "{err}"
    );
}

#[test]
fn untrusted_key_claiming_a_trusted_key_id_is_refused_as_bad_signature() {
    let mut f = Fixture::new();
    let stranger = SigningKey::generate().unwrap();
    let env = sign_policy(&stranger, &policy(1)).unwrap();
    let claimed = SignedEnvelope::from_parts(
        f.key.key_id(),
        env.payload().to_vec(),
        env.signature().to_vec(),
    );
    let err = f.store.accept_policy(&claimed, NOW).unwrap_err();
    assert!(matches!(err, PolicyRejected::BadSignature { .. }), "{err}");
}

#[test]
fn trigger_signature_cannot_pass_as_policy() {
    let mut f = Fixture::new();
    let env = f.sign_raw(Domain::Trigger, policy(1).to_json().unwrap());
    let err = f.store.accept_policy(&env, NOW).unwrap_err();
    assert!(matches!(err, PolicyRejected::BadSignature { .. }), "{err}");
}

#[test]
fn signed_garbage_is_refused_as_malformed() {
    let mut f = Fixture::new();
    let env = f.sign_raw(Domain::Policy, b"{\"tenant\":\"contoso\"}".to_vec());
    let err = f.store.accept_policy(&env, NOW).unwrap_err();
    assert!(matches!(err, PolicyRejected::Malformed(_)), "{err}");
}

#[test]
fn other_tenant_is_refused() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.tenant = TenantId::new("fabrikam").unwrap();
    let err = f.accept(&pol).unwrap_err();
    assert!(matches!(err, PolicyRejected::OtherTenant { version: 1, .. }), "{err}");
    assert!(err.to_string().contains("fabrikam") && err.to_string().contains("contoso"), "{err}");
}

#[test]
fn policy_for_other_devices_is_refused() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.devices = DeviceScope::Only(vec![DeviceId::new("desktop-7").unwrap()]);
    let err = f.accept(&pol).unwrap_err();
    assert!(matches!(err, PolicyRejected::NotForThisDevice { .. }), "{err}");
    assert!(err.to_string().contains("laptop-42"), "{err}");
}

#[test]
fn rollback_is_refused_even_after_restart() {
    let mut f = Fixture::new();
    let v2 = f.sign(&policy(2));
    f.accept(&policy(3)).unwrap();
    let err = f.store.accept_policy(&v2, NOW).unwrap_err();
    assert!(matches!(err, PolicyRejected::VersionNotAbove { version: 2, last: 3 }), "{err}");
    assert!(err.to_string().contains("rollback"), "{err}");
    f.reopen();
    let err = f.store.accept_policy(&v2, NOW).unwrap_err();
    assert!(matches!(err, PolicyRejected::VersionNotAbove { version: 2, last: 3 }), "{err}");
    assert_eq!(f.store.policy_in_force(NOW).unwrap().version(), 3);
}

#[test]
fn not_yet_valid_policy_is_refused() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.not_before = NOW + Duration::minutes(10);
    let err = f.accept(&pol).unwrap_err();
    assert!(matches!(err, PolicyRejected::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains("clock"), "{err}");
}

#[test]
fn expired_policy_is_refused() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.expires_at = NOW;
    let err = f.accept(&pol).unwrap_err();
    assert!(matches!(err, PolicyRejected::Expired { .. }), "{err}");
    assert!(err.to_string().contains("2026-11-22T02:30:00Z"), "{err}");
}

#[test]
fn self_approval_is_refused_even_if_signed() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.users[0].approval.approved_by = p("Ivan@Contoso.example");
    assert!(
        matches!(sign_policy(&f.key, &pol), Err(SignError::Invalid { .. })),
        "console refuses to sign"
    );
    let env = f.sign_raw(Domain::Policy, pol.to_json().unwrap());
    let err = f.store.accept_policy(&env, NOW).unwrap_err();
    assert!(matches!(err, PolicyRejected::SelfApproval { version: 1, .. }), "{err}");
    assert!(err.to_string().contains("different person"), "{err}");
}

#[test]
fn expired_approval_refuses_the_whole_bundle() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.users[0].approval.expires_at = NOW - Duration::seconds(1);
    let err = f.accept(&pol).unwrap_err();
    assert!(
        matches!(&err, PolicyRejected::ApprovalExpired { principal, .. } if principal == &p("alice@contoso.example")),
        "{err}"
    );
    assert!(f.store.policy_in_force(NOW).is_none());
}

#[test]
fn structurally_invalid_policy_is_refused_even_if_signed() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.capture.max_monitors = 5;
    let env = f.sign_raw(Domain::Policy, pol.to_json().unwrap());
    let err = f.store.accept_policy(&env, NOW).unwrap_err();
    assert!(matches!(&err, PolicyRejected::Invalid { version: 1, .. }), "{err}");
    assert!(err.to_string().contains("capture.max_monitors"), "{err}");
}

// ---------------------------------------------------------------- state file

#[test]
fn failing_to_persist_leaves_the_old_policy_in_force() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    // A directory where the temp file should go makes the write fail like a full disk would.
    std::fs::create_dir(f.dir.path().join("trust.json.tmp")).unwrap();
    let err = f.accept(&policy(2)).unwrap_err();
    assert!(matches!(err, PolicyRejected::State { version: 2, .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(f.store.policy_in_force(NOW).unwrap().version(), 1);
    std::fs::remove_dir(f.dir.path().join("trust.json.tmp")).unwrap();
    assert_eq!(f.accept(&policy(2)).unwrap().version(), 2, "retry succeeds");
}

#[test]
fn corrupt_state_is_an_error_not_a_reset() {
    let f = Fixture::new();
    let path = f.dir.path().join("trust.json");
    std::fs::write(&path, b"{not json").unwrap();
    let err = TrustStore::open(anchor(&f.key), &path).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(std::fs::read(&path).unwrap(), b"{not json", "left for the operator");
}

#[test]
fn state_of_another_enrollment_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let mut other = anchor(&f.key);
    other.device = DeviceId::new("laptop-43").unwrap();
    let err = TrustStore::open(other, f.dir.path().join("trust.json")).unwrap_err();
    assert!(matches!(err, StateError::OtherEnrollment { .. }), "{err}");
}

#[test]
fn rotated_keys_drop_the_stored_policy_but_keep_its_version() {
    let mut f = Fixture::new();
    f.accept(&policy(5)).unwrap();
    let new_key = SigningKey::generate().unwrap();
    let store = TrustStore::open(anchor(&new_key), f.dir.path().join("trust.json")).unwrap();
    assert!(store.policy_in_force(NOW).is_none());
    assert_eq!(store.last_policy_version(), Some(5));
}

#[test]
fn state_file_is_private_and_has_no_leftover_temp() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let meta = std::fs::metadata(f.dir.path().join("trust.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!f.dir.path().join("trust.json.tmp").exists());
}

// ---------------------------------------------------------------- triggers

#[test]
fn valid_trigger_is_accepted_once_even_across_restart() {
    let mut f = Fixture::new();
    f.accept(&policy(3)).unwrap();
    let t = trigger("trg-1");
    let v = f.trigger(&t, NOW).unwrap();
    assert_eq!(v.payload(), &t);
    assert_eq!(v.policy_version(), 3);
    assert_eq!(v.envelope().key_id(), f.key.key_id());

    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::Replay { .. }), "{err}");
    f.reopen();
    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::Replay { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(f.trigger(&trigger("trg-2"), NOW).is_ok());
}

/// The agent records a trigger's clip between verifying it and marking it seen: verifying
/// changes nothing (a crash then leaves it acceptable when the console sends it again), marking
/// makes it a replay, also after a restart, and marking twice is harmless.
#[test]
fn a_verified_trigger_is_a_replay_only_once_marked_seen() {
    let mut f = Fixture::new();
    f.accept(&policy(3)).unwrap();
    let env = sign_trigger(&f.key, &trigger("trg-1")).unwrap();
    let v = f.store.verify_trigger(&env, NOW).unwrap();
    assert_eq!(f.store.seen_trigger_count(), 0);
    f.reopen();
    let v2 = f.store.verify_trigger(&env, NOW).expect("unmarked: verified again after a restart");
    assert_eq!(v2.payload(), v.payload());
    f.store.mark_trigger_seen(&v, NOW).unwrap();
    f.store.mark_trigger_seen(&v2, NOW).unwrap();
    assert_eq!(f.store.seen_trigger_count(), 1);
    f.reopen();
    let err = f.store.verify_trigger(&env, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::Replay { .. }), "{err}");
}

#[test]
fn seen_trigger_ids_are_forgotten_after_they_expire() {
    let mut f = Fixture::new();
    f.accept(&policy(3)).unwrap();
    f.trigger(&trigger("trg-1"), NOW).unwrap();
    assert_eq!(f.store.seen_trigger_count(), 1);
    let later = datetime!(2026-11-22 04:00 UTC);
    let mut t2 = trigger("trg-2");
    t2.issued_at = later - Duration::minutes(1);
    t2.expires_at = later + Duration::hours(1);
    t2.event_at = later - Duration::minutes(2);
    f.trigger(&t2, later).unwrap();
    assert_eq!(f.store.seen_trigger_count(), 1, "trg-1 pruned");
    let text = std::fs::read_to_string(f.dir.path().join("trust.json")).unwrap();
    assert!(!text.contains("trg-1") && text.contains("trg-2"), "{text}");
    // The pruned id cannot come back: it is refused as expired.
    let err = f.trigger(&trigger("trg-1"), later).unwrap_err();
    assert!(matches!(err, TriggerRejected::Expired { .. }), "{err}");
}

#[test]
fn trigger_without_policy_is_refused_retryably_and_works_later() {
    let mut f = Fixture::new();
    let t = trigger("trg-1");
    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::NoPolicy { .. }), "{err}");
    assert!(err.is_retryable());
    f.accept(&policy(1)).unwrap();
    f.trigger(&t, NOW).unwrap();
}

#[test]
fn trigger_with_bad_signature_or_unknown_key_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let env = sign_trigger(&f.key, &trigger("trg-1")).unwrap();
    let mut sig = env.signature().to_vec();
    sig[10] ^= 1;
    let forged = SignedEnvelope::from_parts(env.key_id(), env.payload().to_vec(), sig);
    assert!(matches!(
        f.store.accept_trigger(&forged, NOW),
        Err(TriggerRejected::BadSignature { .. })
    ));
    let stranger = SigningKey::generate().unwrap();
    let env = sign_trigger(&stranger, &trigger("trg-1")).unwrap();
    assert!(matches!(f.store.accept_trigger(&env, NOW), Err(TriggerRejected::UnknownKey { .. })));
    // A policy-domain signature over trigger bytes does not pass either.
    let env = f.sign_raw(Domain::Policy, trigger("trg-1").to_json().unwrap());
    assert!(matches!(f.store.accept_trigger(&env, NOW), Err(TriggerRejected::BadSignature { .. })));
    // None of these burned the id.
    f.trigger(&trigger("trg-1"), NOW).unwrap();
}

#[test]
fn signed_garbage_trigger_is_malformed() {
    let mut f = Fixture::new();
    let env = f.sign_raw(Domain::Trigger, b"[]".to_vec());
    assert!(matches!(f.store.accept_trigger(&env, NOW), Err(TriggerRejected::Malformed(_))));
}

#[test]
fn trigger_for_other_tenant_or_device_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let mut t = trigger("trg-1");
    t.tenant = TenantId::new("fabrikam").unwrap();
    assert!(matches!(f.trigger(&t, NOW), Err(TriggerRejected::OtherTenant { .. })));
    let mut t = trigger("trg-2");
    t.device = Some(DeviceId::new("desktop-7").unwrap());
    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::NotForThisDevice { .. }), "{err}");
    t.device = Some(DeviceId::new("laptop-42").unwrap());
    f.trigger(&t, NOW).unwrap();
}

#[test]
fn trigger_for_unapproved_user_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let mut t = trigger("trg-1");
    t.user = p("bob@contoso.example");
    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::UserNotApproved { why: "not listed", .. }), "{err}");
}

#[test]
fn trigger_under_a_capture_disabled_policy_is_refused() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.capture.enabled = false;
    f.accept(&pol).unwrap();
    let err = f.trigger(&trigger("trg-1"), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            TriggerRejected::UserNotApproved { why: "capture is disabled in the policy", .. }
        ),
        "{err}"
    );
}

#[test]
fn trigger_for_event_before_the_approval_is_refused() {
    let mut f = Fixture::new();
    let mut pol = policy(1);
    pol.users[0].approval.approved_at = datetime!(2026-11-22 02:28 UTC);
    f.accept(&pol).unwrap();
    let err = f.trigger(&trigger("trg-1"), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            TriggerRejected::UserNotApproved { why: "approval not in force at the event time", .. }
        ),
        "{err}"
    );
}

#[test]
fn trigger_after_the_approval_expired_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let now = datetime!(2026-12-01 00:10 UTC);
    let mut t = trigger("trg-1");
    t.event_at = datetime!(2026-11-30 23:59 UTC);
    t.issued_at = datetime!(2026-12-01 00:00 UTC);
    t.expires_at = datetime!(2026-12-01 01:00 UTC);
    let err = f.trigger(&t, now).unwrap_err();
    assert!(
        matches!(err, TriggerRejected::UserNotApproved { why: "approval not in force now", .. }),
        "{err}"
    );
}

#[test]
fn trigger_window_beyond_policy_bounds_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let mut t = trigger("trg-1");
    t.before_secs = 301;
    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::WindowTooLong { max_before_secs: 300, .. }), "{err}");
    let mut t = trigger("trg-2");
    t.after_secs = 601;
    let err = f.trigger(&t, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::WindowTooLong { max_after_secs: 600, .. }), "{err}");
    assert!(err.to_string().contains("601"), "{err}");
}

#[test]
fn expired_or_future_trigger_is_refused() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let t = trigger("trg-1");
    let err = f.trigger(&t, t.expires_at).unwrap_err();
    assert!(matches!(err, TriggerRejected::Expired { .. }), "{err}");
    let early = t.issued_at - Duration::minutes(10);
    let err = f.trigger(&t, early).unwrap_err();
    assert!(matches!(err, TriggerRejected::NotYetValid { .. }), "{err}");
}

#[test]
fn structurally_invalid_trigger_is_refused_even_if_signed() {
    let mut f = Fixture::new();
    f.accept(&policy(1)).unwrap();
    let mut t = trigger("trg-1");
    t.expires_at = t.issued_at + Duration::days(30);
    assert!(sign_trigger(&f.key, &t).is_err(), "console refuses to sign");
    let env = f.sign_raw(Domain::Trigger, t.to_json().unwrap());
    let err = f.store.accept_trigger(&env, NOW).unwrap_err();
    assert!(matches!(err, TriggerRejected::Invalid { .. }), "{err}");
}
