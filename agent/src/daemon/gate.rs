//! Whether a session may be recorded: the one rule everything else obeys.
//!
//! No approval, no capture: a session is recorded only when the device is enrolled (there is a
//! tenant key to seal to), a verified policy is in force, it turns capture on, it lists the
//! session's user with an approval in force *now*, and the screen is in use (active, unlocked).
//! Anything else means no worker runs for that session, so nothing of it reaches the ring.
//!
//! The session's owner is a login name; the policy lists principals. Which principal names the
//! login is [`LocalAccounts::names`]' rule (the agent config's `[identity] domain`), and the
//! principal found is the label the session's segments carry, so that clips for that principal
//! find them.

use rearview_config::time::OffsetDateTime;
use rearview_config::{CaptureMode, LocalAccounts, PolicyPayload};

use crate::sessions::Session;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    NotEnrolled,
    NoPolicy,
    Disabled,
    NotApproved,
    /// Approved, but the screen is locked or switched away.
    Idle {
        /// The policy's principal for the session's login, as the policy spells it.
        principal: String,
        mode: CaptureMode,
    },
    Capture {
        principal: String,
        mode: CaptureMode,
    },
}

impl Gate {
    /// Wording for `status`.
    pub fn describe(&self) -> &'static str {
        match self {
            Gate::NotEnrolled => "not enrolled",
            Gate::NoPolicy => "no policy in force",
            Gate::Disabled => "capture disabled by policy",
            Gate::NotApproved => "not approved",
            Gate::Idle { .. } => "locked or inactive",
            Gate::Capture { .. } => "capturing",
        }
    }

    /// Why capture stops when a session's gate becomes this one: the reason of the gap the
    /// session's chains record when capture resumes ([`rearview_protocol::chain`]).
    pub fn gap_reason(&self, locked: bool) -> &'static str {
        use rearview_evidence::chain::reason;
        match self {
            Gate::Idle { .. } if locked => reason::LOCKED,
            Gate::Idle { .. } => reason::INACTIVE,
            Gate::Disabled => reason::CAPTURE_DISABLED,
            Gate::NotEnrolled | Gate::NoPolicy | Gate::NotApproved => reason::NO_APPROVAL,
            Gate::Capture { .. } => reason::NOT_RECORDED,
        }
    }

    /// The approval's mode, when there is one.
    pub fn mode(&self) -> Option<CaptureMode> {
        match self {
            Gate::Idle { mode, .. } | Gate::Capture { mode, .. } => Some(*mode),
            _ => None,
        }
    }
}

/// Decides for one session at `now`; `accounts` maps its login onto the policy's principals.
pub fn decide(
    enrolled: bool,
    policy: Option<&PolicyPayload>,
    accounts: &LocalAccounts,
    session: &Session,
    now: OffsetDateTime,
) -> Gate {
    if !enrolled {
        return Gate::NotEnrolled;
    }
    let Some(policy) = policy.filter(|p| p.in_force_at(now)) else { return Gate::NoPolicy };
    if !policy.capture.enabled {
        return Gate::Disabled;
    }
    let Some(scope) = policy.approved_account(accounts, &session.user, now) else {
        return Gate::NotApproved;
    };
    let principal = scope.principal.as_str().to_string();
    if session.capturable() {
        Gate::Capture { principal, mode: scope.mode }
    } else {
        Gate::Idle { principal, mode: scope.mode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rearview_config::time::Duration;
    use rearview_config::{Approval, Principal, TenantId, UserScope};

    fn session(user: &str) -> Session {
        Session {
            id: "s1".into(),
            user: user.into(),
            uid: 1000,
            gid: 1000,
            display: ":0".into(),
            active: true,
            locked: false,
            env: vec![],
        }
    }

    fn policy(now: OffsetDateTime) -> PolicyPayload {
        let mut p = PolicyPayload::new(
            TenantId::new("t").unwrap(),
            1,
            now - Duration::hours(1),
            now + Duration::days(1),
        );
        p.capture.enabled = true;
        p.users.push(UserScope {
            principal: Principal::new("alice@corp.example").unwrap(),
            mode: CaptureMode::SpecificActivities,
            approval: Approval {
                requested_by: Principal::new("ivan").unwrap(),
                approved_by: Principal::new("ann").unwrap(),
                justification: "case 7".into(),
                approved_at: now - Duration::hours(1),
                expires_at: now + Duration::minutes(10),
                approver_grant: None,
            },
        });
        p
    }

    /// The policy names `alice@corp.example`: the login `alice` is that person only on a device
    /// whose `[identity] domain` is `corp.example`.
    #[test]
    fn a_domain_principal_is_the_login_only_where_the_domain_is_configured() {
        let now = OffsetDateTime::now_utc();
        let p = policy(now);
        let bare = LocalAccounts::bare();
        assert_eq!(decide(true, Some(&p), &bare, &session("alice"), now), Gate::NotApproved);
        let partner = LocalAccounts::with_domain("partner.example").unwrap();
        assert_eq!(decide(true, Some(&p), &partner, &session("alice"), now), Gate::NotApproved);
    }

    #[test]
    fn only_an_approved_user_on_an_active_screen_is_captured() {
        let now = OffsetDateTime::now_utc();
        let p = policy(now);
        let corp = LocalAccounts::with_domain("corp.example").unwrap();
        let decide = |enrolled, policy, session: &Session, now| {
            decide(enrolled, policy, &corp, session, now)
        };
        let alice = session("alice");
        assert_eq!(
            decide(true, Some(&p), &alice, now),
            Gate::Capture {
                principal: "alice@corp.example".into(),
                mode: CaptureMode::SpecificActivities
            }
        );
        assert_eq!(decide(true, Some(&p), &session("bob"), now), Gate::NotApproved);
        assert_eq!(decide(false, Some(&p), &alice, now), Gate::NotEnrolled);
        assert_eq!(decide(true, None, &alice, now), Gate::NoPolicy);
        // The approval runs out: capture stops.
        assert_eq!(decide(true, Some(&p), &alice, now + Duration::minutes(11)), Gate::NotApproved);
        // The bundle itself expires.
        assert_eq!(decide(true, Some(&p), &alice, now + Duration::days(2)), Gate::NoPolicy);
        let mut off = p.clone();
        off.capture.enabled = false;
        assert_eq!(decide(true, Some(&off), &alice, now), Gate::Disabled);
        let mut locked = alice.clone();
        locked.locked = true;
        assert!(matches!(decide(true, Some(&p), &locked, now), Gate::Idle { .. }));
    }
}
