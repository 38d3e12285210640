//! `alerts` and `triggers`: an alert opened by a person or an indicator rule, and the signed
//! trigger sent to each of its devices, until the device acknowledges it (see
//! [`crate::policy`]).

use super::sql::args;
use super::Tx;
use crate::api::page::{PageRequest, MAX_LIMIT};
use crate::error::ConsoleError;
use crate::policy::AlertView;
use rearview_protocol::TriggerMessage;

/// A new alert as stored.
pub struct NewAlert<'a> {
    pub user: &'a str,
    pub reason: &'a str,
    /// `manual` or `rule:<kind>`.
    pub source: &'a str,
    pub created_by: &'a str,
    pub created_ms: i64,
}

/// A signed trigger as stored.
pub struct TriggerRow<'a> {
    pub id: &'a str,
    pub alert_id: i64,
    pub device_id: &'a str,
    pub user: &'a str,
    pub event_time_ms: i64,
    pub before_secs: u32,
    pub after_secs: u32,
    pub reason: &'a str,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub signed_json: &'a str,
}

/// What a clip answering a trigger is checked against.
pub struct TriggerWindow {
    pub device_id: String,
    pub user: String,
    pub event_time_ms: i64,
    pub before_secs: i64,
    pub after_secs: i64,
    pub alert_id: i64,
}

impl Tx<'_> {
    /// Opens an alert; its id.
    pub fn insert_alert(&self, a: &NewAlert<'_>) -> Result<i64, ConsoleError> {
        self.one(
            "INSERT INTO alerts (user_name, reason, source, created_by, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            args![a.user, a.reason, a.source, a.created_by, a.created_ms],
            |r| r.get(0),
        )
    }

    /// Stores a signed trigger and wakes the replica streaming from its device (see
    /// [`crate::push`]).
    pub fn insert_trigger(&self, t: &TriggerRow<'_>) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO triggers (id, alert_id, device_id, user_name, event_time_ms, before_secs, after_secs, reason,
                                   issued_ms, expires_ms, signed_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            args![
                t.id,
                t.alert_id,
                t.device_id,
                t.user,
                t.event_time_ms,
                t.before_secs,
                t.after_secs,
                t.reason,
                t.issued_ms,
                t.expires_ms,
                t.signed_json
            ],
        )?;
        self.notify(crate::push::CHANNEL, &crate::push::trigger_payload(t.device_id))
    }

    /// Marks trigger `id` of `device_id` acknowledged (once); false when the device has no
    /// such trigger.
    pub fn ack_trigger(&self, id: &str, device_id: &str, now: i64) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "UPDATE triggers SET acked_ms = COALESCE(acked_ms, ?1) WHERE id = ?2 AND device_id = ?3",
            args![now, id, device_id],
        )?;
        Ok(changed > 0)
    }

    /// Triggers for `device_id` that it has not acknowledged and that have not expired by
    /// `now`, oldest first.
    pub fn pending_triggers(
        &self,
        device_id: &str,
        now: i64,
    ) -> Result<Vec<TriggerMessage>, ConsoleError> {
        let rows: Vec<(String, String)> = self.rows(
            "SELECT id, signed_json FROM triggers
             WHERE device_id = ?1 AND acked_ms IS NULL AND expires_ms > ?2 ORDER BY issued_ms, id",
            args![device_id, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.into_iter()
            .map(|(trigger_id, json)| {
                let signed = serde_json::from_str(&json)
                    .map_err(|e| ConsoleError::corrupt(format!("trigger {trigger_id}"), e))?;
                Ok(TriggerMessage { trigger_id, signed })
            })
            .collect()
    }

    /// Trigger `id` as a clip answering it is checked against.
    pub fn trigger_window(&self, id: &str) -> Result<Option<TriggerWindow>, ConsoleError> {
        self.opt(
            "SELECT device_id, user_name, event_time_ms, before_secs, after_secs, alert_id
             FROM triggers WHERE id = ?1",
            args![id],
            |r| {
                Ok(TriggerWindow {
                    device_id: r.get(0)?,
                    user: r.get(1)?,
                    event_time_ms: r.get(2)?,
                    before_secs: r.get(3)?,
                    after_secs: r.get(4)?,
                    alert_id: r.get(5)?,
                })
            },
        )
    }

    /// When trigger `id`'s activity happened, and why it was issued (the player's marker).
    pub fn trigger_time_and_reason(&self, id: &str) -> Result<Option<(i64, String)>, ConsoleError> {
        self.opt("SELECT event_time_ms, reason FROM triggers WHERE id = ?1", args![id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// A page of alerts, oldest first, each with its cursor (its id) and its clips.
    pub fn alerts_page(&self, page: PageRequest) -> Result<Vec<(i64, AlertView)>, ConsoleError> {
        let mut alerts = self.page_of(
            "SELECT id, user_name, reason, source, created_by, created_ms FROM alerts
             WHERE CAST(?1 AS BIGINT) IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
            page,
            |r| {
                Ok(AlertView {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    reason: r.get(2)?,
                    source: r.get(3)?,
                    created_by: r.get(4)?,
                    created_ms: r.get(5)?,
                    clips: vec![],
                })
            },
        )?;
        for (_, a) in &mut alerts {
            // An alert's clips are one per device that held the window; bounded like a page.
            a.clips = self.rows(
                "SELECT id FROM clips WHERE alert_id = ?1 ORDER BY created_ms, id LIMIT ?2",
                args![a.id, MAX_LIMIT],
                |r| r.get(0),
            )?;
        }
        Ok(alerts)
    }
}

impl Tx<'_> {
    /// Unacknowledged triggers issued after `since_ms`: id, device, issued time (what the
    /// replica poller wakes streams for, see [`crate::replicas`]).
    pub fn triggers_issued_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, String, i64)>, ConsoleError> {
        self.rows(
            "SELECT id, device_id, issued_ms FROM triggers
             WHERE issued_ms > ?1 AND acked_ms IS NULL ORDER BY issued_ms, id",
            args![since_ms],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }
}
