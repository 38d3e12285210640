//! The trigger payload: "upload the window around this event of this user".
//!
//! Sent as JSON inside a [`crate::SignedEnvelope`] (domain `rearview-trigger-v1`). Unknown fields
//! are refused.
//!
//! ```text
//! {
//!   "id": "6f1c2a9e-…",                       TriggerId, unique per tenant (replay protection)
//!   "tenant": "contoso",                      must be the agent's own
//!   "user": "alice@contoso.example",          must be approved in the policy in force
//!   "device": "laptop-42",                    optional: only this device acts on it
//!   "event_at": "2026-11-22T02:10:00Z",       when the event happened
//!   "before_secs": 300, "after_secs": 600,    window [event_at - before, event_at + after],
//!                                             within the policy's window bounds
//!   "reason": {"indicator": "removable_media_copy", "object": "roadmap.docx"},
//!   "alert": "alert-981",                     console alert the clip belongs to
//!   "issued_at":  "2026-11-22T02:10:05Z",
//!   "expires_at": "2026-11-22T03:10:05Z"      refused from then on; at most 7 days after issued_at
//! }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AlertId, DeviceId, Principal, TenantId, TriggerId};
use crate::policy::{
    check_range, check_text, check_time, field_err, IndicatorKind, PayloadError, ValidationError,
    MAX_WINDOW_SECS,
};

/// Longest a trigger may stay valid. Bounds how long an agent must remember its id.
pub const MAX_TRIGGER_LIFETIME: time::Duration = time::Duration::days(7);

/// Slack allowed between a trigger's event time and its issue time for the event to lie
/// "in the future" (clocks of the console and of the systems reporting events differ a little).
pub const MAX_EVENT_AHEAD: time::Duration = time::Duration::minutes(5);

/// A trigger's payload. Build one (console), sign it with [`crate::sign_trigger`]; an agent gets
/// it back only through [`crate::TrustStore::accept_trigger`] as a [`crate::VerifiedTrigger`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerPayload {
    /// Unique id; an agent acts on each id at most once.
    pub id: TriggerId,
    /// Tenant it belongs to; an agent refuses other tenants' triggers.
    pub tenant: TenantId,
    /// Whose recording to upload. Must have an approval in force, in the policy in force, both at
    /// `event_at` and when the agent receives the trigger.
    pub user: Principal,
    /// Only this device acts on the trigger; absent means every device of the tenant where the
    /// user has a session.
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub event_at: OffsetDateTime,
    /// Seconds of recording before the event, at most the policy's `window.max_before_secs`.
    pub before_secs: u32,
    /// Seconds of recording after the event, at most the policy's `window.max_after_secs`.
    pub after_secs: u32,
    /// Why: what happened, to what. Shown next to the clip.
    pub reason: TriggerReason,
    /// Console alert the clip belongs to.
    pub alert: AlertId,
    /// When the console signed it.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Refused from this instant on; at most [`MAX_TRIGGER_LIFETIME`] after `issued_at`.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Why a trigger was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerReason {
    /// The kind of event.
    pub indicator: IndicatorKind,
    /// What it concerned, e.g. a file name (1..=2000 bytes, no control characters).
    pub object: String,
}

impl std::fmt::Display for TriggerReason {
    /// E.g. `file copied to removable media: roadmap.docx`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.indicator.describe(), self.object)
    }
}

impl TriggerPayload {
    /// Parses payload bytes (as found inside a verified envelope). Size is capped by the envelope.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes)
            .map_err(|e| PayloadError { what: "trigger", why: e.to_string() })
    }

    /// The JSON bytes that get signed. Fails only for timestamps RFC 3339 cannot write, which
    /// [`TriggerPayload::validate`] refuses.
    pub fn to_json(&self) -> Result<Vec<u8>, PayloadError> {
        serde_json::to_vec(self).map_err(|e| PayloadError { what: "trigger", why: e.to_string() })
    }

    /// Recording to include before the event.
    pub fn before(&self) -> Duration {
        Duration::from_secs(self.before_secs.into())
    }

    /// Recording to include after the event.
    pub fn after(&self) -> Duration {
        Duration::from_secs(self.after_secs.into())
    }

    /// The clip's time range `[event_at - before, event_at + after)`.
    pub fn window(&self) -> (OffsetDateTime, OffsetDateTime) {
        (
            self.event_at.saturating_sub(time::Duration::seconds(self.before_secs.into())),
            self.event_at.saturating_add(time::Duration::seconds(self.after_secs.into())),
        )
    }

    /// Checks the rules that depend neither on the clock nor on the policy: window shape,
    /// lifetime, reason text. The console calls it before signing; the agent again after verifying.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_time("event_at", self.event_at)?;
        check_time("issued_at", self.issued_at)?;
        check_time("expires_at", self.expires_at)?;
        check_range("before_secs", self.before_secs, 0, MAX_WINDOW_SECS)?;
        check_range("after_secs", self.after_secs, 0, MAX_WINDOW_SECS)?;
        if self.before_secs == 0 && self.after_secs == 0 {
            return Err(field_err("after_secs", "window must not be empty"));
        }
        if self.expires_at <= self.issued_at {
            return Err(field_err("expires_at", "must be after issued_at"));
        }
        if self.expires_at - self.issued_at > MAX_TRIGGER_LIFETIME {
            return Err(field_err("expires_at", "must be at most 7 days after issued_at"));
        }
        if self.event_at > self.issued_at.saturating_add(MAX_EVENT_AHEAD) {
            return Err(field_err("event_at", "must not be more than 5 minutes after issued_at"));
        }
        check_text("reason.object", &self.reason.object, false)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn sample() -> TriggerPayload {
        TriggerPayload {
            id: TriggerId::new("trg-1").unwrap(),
            tenant: TenantId::new("contoso").unwrap(),
            user: Principal::new("alice@contoso.example").unwrap(),
            device: None,
            event_at: datetime!(2026-11-22 02:10 UTC),
            before_secs: 300,
            after_secs: 600,
            reason: TriggerReason {
                indicator: IndicatorKind::RemovableMediaCopy,
                object: "roadmap.docx".into(),
            },
            alert: AlertId::new("alert-981").unwrap(),
            issued_at: datetime!(2026-11-22 02:10:05 UTC),
            expires_at: datetime!(2026-11-22 03:10:05 UTC),
        }
    }

    #[test]
    fn json_round_trip_and_reason_wording() {
        let t = sample();
        t.validate().unwrap();
        assert_eq!(TriggerPayload::from_json(&t.to_json().unwrap()).unwrap(), t);
        assert_eq!(t.reason.to_string(), "file copied to removable media: roadmap.docx");
        let (from, to) = t.window();
        assert_eq!(from, datetime!(2026-11-22 02:05 UTC));
        assert_eq!(to, datetime!(2026-11-22 02:20 UTC));
    }

    #[test]
    fn extreme_but_parseable_times_do_not_panic() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["event_at"] = "9999-12-31T23:59:59.999999999Z".into();
        v["issued_at"] = "9999-12-31T23:59:59.999999999-23:59".into();
        v["expires_at"] = "0000-01-01T00:00:00+23:59".into();
        let t = TriggerPayload::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(t.validate().is_err());
        let _ = t.window();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["priority"] = 1.into();
        assert!(TriggerPayload::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn each_structural_rule_is_enforced() {
        type Break = fn(&mut TriggerPayload);
        let cases: &[(&str, Break)] = &[
            ("before_secs", |t| t.before_secs = MAX_WINDOW_SECS + 1),
            ("after_secs", |t| t.after_secs = MAX_WINDOW_SECS + 1),
            ("after_secs", |t| {
                t.before_secs = 0;
                t.after_secs = 0
            }),
            ("expires_at", |t| t.expires_at = t.issued_at),
            ("expires_at", |t| t.expires_at = t.issued_at + time::Duration::days(8)),
            ("event_at", |t| t.event_at = t.issued_at + time::Duration::minutes(6)),
            ("reason.object", |t| t.reason.object = String::new()),
            ("event_at", |t| t.event_at = t.event_at.replace_year(-5).unwrap()),
            ("reason.object", |t| t.reason.object = "a\u{0}b".into()),
        ];
        for (field, break_it) in cases {
            let mut t = sample();
            break_it(&mut t);
            match t.validate() {
                Err(ValidationError::Field { field: f, .. }) => assert_eq!(&f, field),
                other => panic!("breaking {field}: got {other:?}"),
            }
        }
    }
}
