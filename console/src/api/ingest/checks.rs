//! What a device may claim in a clip manifest: checked against the console's own records of
//! approvals and triggers, since a device could otherwise upload any user, any window, any mode.
//!
//! Times are the device's (Unix ms); one segment of the policy (`capture.segment_secs`, the
//! *slack* below) is allowed wherever device and console instants meet, since the ring cuts
//! whole segments around a window and clocks differ a little.
//!
//! ```text
//! every clip     its segments and missing ranges lie in [start_ms, end_ms] ± slack
//! triggered      the trigger exists, was issued to this device, names this user, and its
//!                window [event − before, event + after] holds the clip's ± slack
//! untriggered    all-activities: no longer than the policy's longest window
//!                (window.max_before_secs + max_after_secs); specific-activities: only as
//!                the agent opens one offline from the policy's local indicator rules, no
//!                longer than the longest of them; either starts at most MAX_EVENT_AHEAD
//!                (5 min) ahead of the console's clock
//! approval       the clip's first recording (its first segment; an untriggered clip's start
//!                when it names none) falls in an approval of the user: decided at most
//!                slack after it, and not revoked or expired more than slack before it.
//!                all-activities clips need an all-activities approval; specific-activities
//!                ones either mode (capturing everything includes capturing on a trigger).
//!                A triggered clip naming no segment recorded nothing; its trigger was
//!                checked against the approval when issued.
//! ```
//!
//! Only the start matters for the approval: a clip recorded while the approval held stays
//! valid when the approval is later revoked or expires (the device may learn of a revocation
//! late, and evidence already recorded is kept), but nothing recorded after it ended is taken.

use crate::error::ApiError;
use crate::policy::{same_principal, Bounds};
use crate::store::Tx;
use rearview_config::MAX_EVENT_AHEAD;
use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::{CaptureMode, ClipManifest};

/// The console's verdict on a manifest.
pub enum Verdict {
    /// Taken; a triggered clip belongs to its trigger's alert.
    Accepted { alert_id: Option<i64> },
    /// Refused (409 to the device, `clip.refused` in the audit log), and why.
    Refused(String),
}

/// Checks `m` (already [`super::validate`]d) of `device_id` at console time `now`.
pub fn check_manifest(
    tx: &Tx<'_>,
    bounds: &Bounds,
    device_id: &str,
    m: &ClipManifest,
    now: i64,
) -> Result<Verdict, ApiError> {
    let slack = bounds.segment_ms();
    let (from, to) =
        (m.start_ms.millis().saturating_sub(slack), m.end_ms.millis().saturating_add(slack));
    let spans = m
        .segments
        .iter()
        .map(|s| (format!("segment {}", s.sha256), s.start_ms.millis(), s.end_ms.millis()))
        .chain(
            m.missing
                .iter()
                .map(|r| ("a missing range".to_owned(), r.start_ms.millis(), r.end_ms.millis())),
        );
    for (what, start, end) in spans {
        if start > end {
            return Ok(Verdict::Refused(format!("{what} ends ({end}) before it starts ({start})")));
        }
        if start < from || end > to {
            return Ok(Verdict::Refused(format!(
                "{what} ({start}..{end}) lies outside the clip's window ({}..{}) by more than \
                 one segment ({} s)",
                m.start_ms.millis(),
                m.end_ms.millis(),
                slack / 1000
            )));
        }
    }
    let first_recorded = m.segments.iter().map(|s| s.start_ms.millis()).min();
    let alert_id = match &m.trigger_id {
        Some(t) => match trigger_verdict(tx, t, device_id, m, slack)? {
            Ok(alert) => Some(alert),
            Err(why) => return Ok(Verdict::Refused(why)),
        },
        None => {
            if let Some(why) = untriggered_refusal(bounds, m, slack, now) {
                return Ok(Verdict::Refused(why));
            }
            None
        }
    };
    let at = match (first_recorded, &m.trigger_id) {
        (Some(at), _) => Some(at),
        (None, None) => Some(m.start_ms.millis()),
        (None, Some(_)) => None,
    };
    if let Some(at) = at {
        let all = m.mode == CaptureMode::AllActivities;
        if !approved_at(tx, &m.user, all, at, slack)? {
            let mode = if all { capture_mode_name(m.mode) } else { "capture" };
            return Ok(Verdict::Refused(format!(
                "{:?} had no {mode} approval in force at {at} (the clip's first recording): \
                 nobody may be recorded without an approved request",
                m.user
            )));
        }
    }
    Ok(Verdict::Accepted { alert_id })
}

/// The trigger's alert, or why `m` does not answer trigger `t`.
fn trigger_verdict(
    tx: &Tx<'_>,
    t: &str,
    device_id: &str,
    m: &ClipManifest,
    slack: i64,
) -> Result<Result<i64, String>, ApiError> {
    let Some(w) = tx.trigger_window(t)?.filter(|w| w.device_id == device_id) else {
        return Ok(Err(format!("trigger {t} was not issued to this device")));
    };
    let (user, event, alert) = (w.user, w.event_time_ms, w.alert_id);
    let (before, after) = (w.before_secs, w.after_secs);
    if !same_principal(&user, &m.user) {
        return Ok(Err(format!("trigger {t} is for {user:?}, not {:?}", m.user)));
    }
    let (from, to) = (event.saturating_sub(before * 1000), event.saturating_add(after * 1000));
    if m.start_ms.millis() < from.saturating_sub(slack)
        || m.end_ms.millis() > to.saturating_add(slack)
    {
        return Ok(Err(format!(
            "the clip's window ({}..{}) is not within trigger {t}'s ({from}..{to}) give or take \
             one segment ({} s)",
            m.start_ms.millis(),
            m.end_ms.millis(),
            slack / 1000
        )));
    }
    Ok(Ok(alert))
}

/// Why an untriggered clip `m` is not one a device may send, if it is not.
fn untriggered_refusal(bounds: &Bounds, m: &ClipManifest, slack: i64, now: i64) -> Option<String> {
    let longest_secs =
        if m.mode == CaptureMode::AllActivities {
            u64::from(bounds.window.max_before_secs) + u64::from(bounds.window.max_after_secs)
        } else {
            match bounds
                .indicators
                .iter()
                .map(|r| u64::from(r.before_secs) + u64::from(r.after_secs))
                .max()
            {
                Some(longest) => longest,
                None => return Some(
                    "a specific-activities clip needs a trigger: it names none, and the policy \
                     has no local indicator rule a device could have opened it by"
                        .into(),
                ),
            }
        };
    let longest_ms = i64::try_from(longest_secs * 1000).unwrap_or(i64::MAX);
    let length = m.end_ms.millis().saturating_sub(m.start_ms.millis());
    if length > longest_ms.saturating_add(slack) {
        let by = if m.mode == CaptureMode::AllActivities {
            "the policy's longest window"
        } else {
            "its longest local rule"
        };
        return Some(format!(
            "an untriggered {} clip covers at most {} s ({by}); this one covers {} s",
            capture_mode_name(m.mode),
            longest_secs,
            length / 1000
        ));
    }
    let ahead = MAX_EVENT_AHEAD.whole_milliseconds() as i64;
    if m.start_ms.millis() > now.saturating_add(ahead) {
        return Some(format!(
            "the clip starts at {}, more than {} s ahead of the console's clock ({now})",
            m.start_ms.millis(),
            ahead / 1000
        ));
    }
    None
}

/// Whether `user` had an approval (of mode all-activities when `all`) in force at `at`, give
/// or take `slack`: decided by then, and not revoked or expired before it.
fn approved_at(tx: &Tx<'_>, user: &str, all: bool, at: i64, slack: i64) -> Result<bool, ApiError> {
    let rows = tx.approved_between(at.saturating_add(slack), at.saturating_sub(slack))?;
    Ok(rows.iter().any(|a| {
        same_principal(&a.user, user)
            && (!all || a.mode == capture_mode_name(CaptureMode::AllActivities))
    }))
}
