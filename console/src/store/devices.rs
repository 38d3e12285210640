//! `devices` and `activity`: enrolled devices (their token hash, last health report, the users
//! they saw) and the activity (indicator) events they report, with what the console did with
//! each (see [`crate::api::devices`]).

use super::sql::args;
use super::{json_or_null, Tx};
use crate::api::devices::{ActivityView, DeviceView};
use crate::api::page::PageRequest;
use crate::error::ConsoleError;
use rearview_protocol::ActivityOutcome;

/// A device as enrollment stores it.
pub struct NewDevice<'a> {
    pub id: &'a str,
    /// Ed25519, hex.
    pub public_key: &'a str,
    pub token_sha256: &'a str,
    pub hostname: &'a str,
    pub enrolled_ms: i64,
}

/// A device and the users its last health report named.
pub struct DeviceUsers {
    pub id: String,
    pub users: Vec<String>,
}

/// Why an enrollment token could not be used.
pub enum TokenRefusal {
    Unknown,
    Used,
    Expired,
}

/// One device's health report as stored.
pub struct HealthRow<'a> {
    pub health_json: &'a str,
    pub users_json: &'a str,
    pub policy_version: i64,
    pub seen_ms: i64,
}

/// One activity event as stored (its outcome is set by [`Tx::set_activity_outcome`]).
pub struct ActivityRow<'a> {
    pub device_id: &'a str,
    pub user: &'a str,
    pub kind: &'a str,
    pub time_ms: i64,
    pub details_json: &'a str,
    pub received_ms: i64,
}

/// How stale a device's `last_seen_ms` may get before a request of it writes a new one.
pub const SEEN_EVERY_MS: i64 = 30_000;

impl Tx<'_> {
    /// The device whose token hashes to `hash`, and when it was last marked seen.
    pub fn device_by_token(&self, hash: &str) -> Result<Option<(String, i64)>, ConsoleError> {
        self.opt("SELECT id, last_seen_ms FROM devices WHERE token_sha256 = ?1", args![hash], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// Marks device `id` seen at `now` (never back in time).
    pub fn mark_device_seen(&self, id: &str, now: i64) -> Result<(), ConsoleError> {
        self.exec(
            "UPDATE devices SET last_seen_ms = ?1 WHERE id = ?2 AND last_seen_ms < ?1",
            args![now, id],
        )?;
        Ok(())
    }

    /// Uses up the enrollment token `token_sha256` for `device_id` at `now`, unless it is
    /// unknown, used or expired.
    pub fn use_enrollment_token(
        &self,
        token_sha256: &str,
        device_id: &str,
        now: i64,
    ) -> Result<Result<(), TokenRefusal>, ConsoleError> {
        let consumed = self.exec(
            "UPDATE enrollment_tokens SET used_ms = ?1, device_id = ?2
             WHERE token_sha256 = ?3 AND used_ms IS NULL AND expires_ms > ?1",
            args![now, device_id, token_sha256],
        )?;
        if consumed == 1 {
            return Ok(Ok(()));
        }
        let used: Option<Option<i64>> = self.opt(
            "SELECT used_ms FROM enrollment_tokens WHERE token_sha256 = ?1",
            args![token_sha256],
            |r| r.get(0),
        )?;
        Ok(Err(match used {
            None => TokenRefusal::Unknown,
            Some(Some(_)) => TokenRefusal::Used,
            Some(None) => TokenRefusal::Expired,
        }))
    }

    pub fn insert_device(&self, d: &NewDevice<'_>) -> Result<(), ConsoleError> {
        self.exec(
            "INSERT INTO devices (id, public_key, token_sha256, hostname, enrolled_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            args![d.id, d.public_key, d.token_sha256, d.hostname, d.enrolled_ms],
        )?;
        Ok(())
    }

    pub fn set_health(&self, device_id: &str, h: &HealthRow<'_>) -> Result<(), ConsoleError> {
        self.exec(
            "UPDATE devices SET health_json = ?1, users_json = ?2, policy_version = ?3, last_seen_ms = ?4 WHERE id = ?5",
            args![h.health_json, h.users_json, h.policy_version, h.seen_ms, device_id],
        )?;
        Ok(())
    }

    /// Whether device `id` is enrolled.
    pub fn device_exists(&self, id: &str) -> Result<bool, ConsoleError> {
        self.one("SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)", args![id], |r| r.get(0))
    }

    /// Every device, in id order, with the users it last reported.
    pub fn device_users(&self) -> Result<Vec<DeviceUsers>, ConsoleError> {
        self.rows("SELECT id, users_json FROM devices ORDER BY id", args![], |r| {
            let users: String = r.get(1)?;
            // A list that does not parse names nobody (it came from the device).
            Ok(DeviceUsers {
                id: r.get(0)?,
                users: serde_json::from_str(&users).unwrap_or_default(),
            })
        })
    }

    /// A page of devices in enrollment order, each with its cursor; `connected` and the
    /// current version are the caller's to fill in.
    pub fn devices_page(&self, page: PageRequest) -> Result<Vec<(i64, DeviceView)>, ConsoleError> {
        let sql = format!(
            "SELECT rowid, id, hostname, enrolled_ms, last_seen_ms, policy_version, health_json,
                    (SELECT COUNT(*) FROM activity a WHERE a.device_id = devices.id AND a.outcome = '{}')
             FROM devices WHERE CAST(?1 AS BIGINT) IS NULL OR rowid > ?1 ORDER BY rowid LIMIT ?2",
            ActivityOutcome::RateLimited.as_str()
        );
        self.page_of(&sql, page, |r| {
            Ok(DeviceView {
                id: r.get(1)?,
                hostname: r.get(2)?,
                enrolled_ms: r.get(3)?,
                last_seen_ms: r.get(4)?,
                policy_version: r.get(5)?,
                current_policy_version: 0,
                connected: false,
                health: json_or_null(&r.get::<String>(6)?),
                indicators_over_limit: r.get(7)?,
            })
        })
    }

    /// Stores one activity event; its id.
    pub fn insert_activity(&self, a: &ActivityRow<'_>) -> Result<i64, ConsoleError> {
        self.one(
            "INSERT INTO activity (device_id, user_name, kind, time_ms, details_json, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            args![a.device_id, a.user, a.kind, a.time_ms, a.details_json, a.received_ms],
            |r| r.get(0),
        )
    }

    pub fn set_activity_outcome(
        &self,
        id: i64,
        outcome: ActivityOutcome,
    ) -> Result<(), ConsoleError> {
        self.exec("UPDATE activity SET outcome = ?1 WHERE id = ?2", args![outcome.as_str(), id])?;
        Ok(())
    }

    /// Events of `device_id` received since `since_ms` that issued a trigger (the indicator
    /// rate limit's count; the database holds it, so it holds across restarts and replicas).
    pub fn triggered_since(&self, device_id: &str, since_ms: i64) -> Result<u32, ConsoleError> {
        let n: i64 = self.one(
            "SELECT COUNT(*) FROM activity WHERE device_id = ?1 AND received_ms > ?2 AND outcome = ?3",
            args![device_id, since_ms, ActivityOutcome::Triggered.as_str()],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// A page of activity, newest first, each event with its cursor (its id).
    pub fn activity_page(
        &self,
        page: PageRequest,
    ) -> Result<Vec<(i64, ActivityView)>, ConsoleError> {
        self.page_of(
            "SELECT id, device_id, user_name, kind, time_ms, details_json, outcome FROM activity
             WHERE CAST(?1 AS BIGINT) IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
            page,
            |r| {
                Ok(ActivityView {
                    id: r.get(0)?,
                    device_id: r.get(1)?,
                    user: r.get(2)?,
                    kind: r.get(3)?,
                    time_ms: r.get(4)?,
                    details: json_or_null(&r.get::<String>(5)?),
                    outcome: r.get(6)?,
                })
            },
        )
    }
}
