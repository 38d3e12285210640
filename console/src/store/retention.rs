//! Retention: how long clips are kept, legal holds that stop their deletion, and deleting a
//! clip (by the daily retention job, by an investigator, or in bulk for one user by an admin).
//!
//! ```text
//! meta "retention_settings"  {"days": 120, "bulk_delete": false}   (the tenant's; see Settings)
//! legal_holds    id, scope (clip|user), target (clip id | user name), reason, placed_by,
//!                placed_ms, released_by, released_ms, release_reason   (a hold is active while
//!                released_ms is NULL; a released hold stays as the record of it)
//! deleted_clips  clip_id, device_id, user_name, start_ms, end_ms, deleted_by, deleted_ms,
//!                reason, segments        (what was deleted, so a device sending the clip again
//!                                         is told it was deleted, not given a new one)
//! blob_deletions device_id, sha256, queued_ms   (blobs to remove from the blob store)
//! ```
//!
//! # When a clip expires
//!
//! A clip expires `days` after its window ends (`end_ms`: its last frame was captured then),
//! unless a hold is active on it or on its user (users compare case-insensitively, as
//! principals do). Holds are placed and released by people, with a reason, audited
//! (`hold.place`, `hold.release`) and written to the custody log of each clip they cover
//! (`legal-hold-set`, `legal-hold-cleared`).
//!
//! # Deleting a clip ([`Tx::delete_clip`]), in one transaction
//!
//! 1. refused when a hold covers it (the error names the hold);
//! 2. the clip's rows go (`clips`, `clip_segments`, `clip_views`); `deleted_clips` gets its
//!    row; the custody log gets `deleted` (the log, the console-signed clip record and the
//!    device chain entries stay: they prove what existed and that it was deleted);
//! 3. each segment the clip named that no other clip of its device names leaves `segments`
//!    and joins `blob_deletions`;
//! 4. the audit line `clip.delete` (who, why, how many segments).
//!
//! The blobs themselves are removed after the commit ([`crate::retention`]), each checked
//! again first: a blob that is in `segments` again (the device sent the same bytes for a
//! newer clip) is kept. A blob removed in the instant its bytes were being published again is
//! noticed after the removal: its `segments` row is dropped too, so the console asks the device
//! for it (see `missing_segments`); nothing a clip names is left recorded without its bytes.
//! A crash between the commit and the removal leaves the queue, which the next run finishes.
//!
//! Segments no clip names and stored longer than `days` ago (uploads whose clip never came)
//! are queued by the daily job as well: any clip that named them would have expired.

use serde::{Deserialize, Serialize};

use super::evidence::CustodyAction;
use super::sql::args;
use super::Tx;
use crate::error::ConsoleError;

/// Days a clip is kept by default.
pub const DEFAULT_DAYS: u32 = 120;
/// The longest retention a tenant may set (ten years).
pub const MAX_DAYS: u32 = 3650;
/// Longest reason for a hold or a deletion, in characters.
pub const MAX_REASON: usize = 500;
/// A day, in ms.
pub const DAY_MS: i64 = 86_400_000;

const SETTINGS_KEY: &str = "retention_settings";

/// The tenant's retention settings (`GET/PUT /api/v1/retention/settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days a clip is kept after its window ends (1 to [`MAX_DAYS`]).
    #[serde(default = "default_days")]
    pub days: u32,
    /// Whether an admin may delete all clips of one user at once.
    #[serde(default)]
    pub bulk_delete: bool,
}

fn default_days() -> u32 {
    DEFAULT_DAYS
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings { days: DEFAULT_DAYS, bulk_delete: false }
    }
}

impl RetentionSettings {
    /// The settings if they are within bounds, else what is wrong.
    pub fn checked(self) -> Result<RetentionSettings, ConsoleError> {
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(ConsoleError::Invalid(format!(
                "days must be 1 to {MAX_DAYS}, not {}",
                self.days
            )));
        }
        Ok(self)
    }

    /// How long a clip is kept, in ms.
    pub fn keep_ms(&self) -> i64 {
        i64::from(self.days) * DAY_MS
    }
}

/// What a hold covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldScope {
    Clip,
    User,
}

impl HoldScope {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldScope::Clip => "clip",
            HoldScope::User => "user",
        }
    }

    fn parse(s: &str) -> Result<HoldScope, ConsoleError> {
        match s {
            "clip" => Ok(HoldScope::Clip),
            "user" => Ok(HoldScope::User),
            other => Err(ConsoleError::corrupt("legal hold scope", other)),
        }
    }
}

/// A legal hold as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hold {
    pub id: String,
    pub scope: HoldScope,
    pub target: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_ms: i64,
    pub released_by: Option<String>,
    pub released_ms: Option<i64>,
    pub release_reason: Option<String>,
}

impl Hold {
    pub fn active(&self) -> bool {
        self.released_ms.is_none()
    }
}

/// Why a clip is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteCause {
    /// The retention job: the clip expired.
    Expired,
    /// An investigator deleted it.
    Person,
    /// An admin deleted all clips of its user.
    Bulk,
}

impl DeleteCause {
    fn as_str(self) -> &'static str {
        match self {
            DeleteCause::Expired => "expired",
            DeleteCause::Person => "investigator",
            DeleteCause::Bulk => "bulk",
        }
    }
}

/// What deleting one clip did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Deleted {
    pub clip_id: String,
    pub user: String,
    pub device_id: String,
    /// Segments the clip named.
    pub segments: usize,
    /// Of those, the ones queued for removal (no other clip names them).
    pub blobs_queued: usize,
}

/// A clip deleted earlier (`deleted_clips`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tombstone {
    pub clip_id: String,
    pub deleted_by: String,
    pub deleted_ms: i64,
    pub reason: String,
}

/// A reason as given by a person: trimmed, required, bounded.
pub fn reason(text: &str, what: &str) -> Result<String, ConsoleError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConsoleError::Invalid(format!("{what} needs a reason")));
    }
    if text.chars().count() > MAX_REASON {
        return Err(ConsoleError::Invalid(format!(
            "the reason is longer than {MAX_REASON} characters"
        )));
    }
    Ok(text.to_owned())
}

const HOLD_COLUMNS: &str = "id, scope, target, reason, placed_by, placed_ms, released_by, \
                            released_ms, release_reason";

fn hold_row(r: &super::sql::Row<'_>) -> Result<Hold, ConsoleError> {
    Ok(Hold {
        id: r.get(0)?,
        scope: HoldScope::parse(&r.get::<String>(1)?)?,
        target: r.get(2)?,
        reason: r.get(3)?,
        placed_by: r.get(4)?,
        placed_ms: r.get(5)?,
        released_by: r.get(6)?,
        released_ms: r.get(7)?,
        release_reason: r.get(8)?,
    })
}

impl Tx<'_> {
    /// The tenant's retention settings (the defaults until an admin sets them).
    pub fn retention_settings(&self) -> Result<RetentionSettings, ConsoleError> {
        match self.meta_get(SETTINGS_KEY)? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| ConsoleError::corrupt("retention settings", e)),
            None => Ok(RetentionSettings::default()),
        }
    }

    /// Stores the settings, audited (`retention.settings`) as `actor`.
    pub fn set_retention_settings(
        &self,
        settings: RetentionSettings,
        actor: &str,
    ) -> Result<RetentionSettings, ConsoleError> {
        let settings = settings.checked()?;
        let before = self.retention_settings()?;
        let text = serde_json::to_string(&settings)
            .map_err(|e| ConsoleError::Invalid(format!("settings: {e}")))?;
        self.meta_set(SETTINGS_KEY, &text)?;
        self.audit(
            actor,
            "retention.settings",
            "tenant",
            serde_json::json!({ "days": settings.days, "bulk_delete": settings.bulk_delete,
                                "was": { "days": before.days, "bulk_delete": before.bulk_delete } }),
        )?;
        Ok(settings)
    }

    /// Every hold, newest first; only the active ones when `active_only`.
    pub fn holds(&self, active_only: bool) -> Result<Vec<Hold>, ConsoleError> {
        let filter = if active_only { "WHERE released_ms IS NULL" } else { "" };
        self.rows(
            &format!("SELECT {HOLD_COLUMNS} FROM legal_holds {filter} ORDER BY placed_ms DESC, id"),
            args![],
            hold_row,
        )
    }

    /// Hold `id`, if there is one.
    pub fn hold(&self, id: &str) -> Result<Option<Hold>, ConsoleError> {
        self.opt(
            &format!("SELECT {HOLD_COLUMNS} FROM legal_holds WHERE id = ?1"),
            args![id],
            hold_row,
        )
    }

    /// The active holds covering clip `clip_id` of user `user` (on the clip or on the user).
    pub fn holds_covering(&self, clip_id: &str, user: &str) -> Result<Vec<Hold>, ConsoleError> {
        self.rows(
            &format!(
                "SELECT {HOLD_COLUMNS} FROM legal_holds WHERE released_ms IS NULL AND \
                 ((scope = 'clip' AND target = ?1) OR (scope = 'user' AND LOWER(target) = LOWER(?2)))
                 ORDER BY placed_ms, id"
            ),
            args![clip_id, user],
            hold_row,
        )
    }

    /// The ids of the clips a hold covers now.
    fn clips_of_hold(&self, scope: HoldScope, target: &str) -> Result<Vec<String>, ConsoleError> {
        match scope {
            HoldScope::Clip => {
                self.rows("SELECT id FROM clips WHERE id = ?1", args![target], |r| r.get(0))
            }
            HoldScope::User => self.rows(
                "SELECT id FROM clips WHERE LOWER(user_name) = LOWER(?1) ORDER BY id",
                args![target],
                |r| r.get(0),
            ),
        }
    }

    /// Places a hold (`id` new) on a clip that exists, or on a user (who need not have clips
    /// yet: a hold placed before capture keeps what comes). Audited (`hold.place`), and in the
    /// custody log of each clip it covers.
    pub fn place_hold(
        &self,
        id: &str,
        scope: HoldScope,
        target: &str,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<Hold, ConsoleError> {
        let reason = self::reason(reason, "a legal hold")?;
        let target = target.trim();
        if target.is_empty() {
            return Err(ConsoleError::Invalid("a legal hold needs a clip or a user".into()));
        }
        let clips = self.clips_of_hold(scope, target)?;
        if scope == HoldScope::Clip && clips.is_empty() {
            return Err(ConsoleError::NotFound { what: format!("no clip {target}") });
        }
        self.exec(
            "INSERT INTO legal_holds (id, scope, target, reason, placed_by, placed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![id, scope.as_str(), target, reason.as_str(), actor, now],
        )?;
        let detail = format!("legal hold {id}: {reason}");
        for clip in &clips {
            self.append_custody(clip, now, actor, CustodyAction::LegalHoldSet, &detail)?;
        }
        self.audit(
            actor,
            "hold.place",
            &format!("{}:{target}", scope.as_str()),
            serde_json::json!({ "hold": id, "reason": reason, "clips": clips.len() }),
        )?;
        self.hold(id)?.ok_or_else(|| ConsoleError::corrupt("legal hold", "not found after insert"))
    }

    /// Releases active hold `id`, audited (`hold.release`) and in the custody log of each clip
    /// it covered.
    pub fn release_hold(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<Hold, ConsoleError> {
        let reason = self::reason(reason, "releasing a legal hold")?;
        let Some(hold) = self.hold(id)? else {
            return Err(ConsoleError::NotFound { what: format!("no legal hold {id}") });
        };
        if !hold.active() {
            return Err(ConsoleError::Conflict {
                what: format!("legal hold {id} was already released"),
            });
        }
        self.exec(
            "UPDATE legal_holds SET released_by = ?2, released_ms = ?3, release_reason = ?4
             WHERE id = ?1 AND released_ms IS NULL",
            args![id, actor, now, reason.as_str()],
        )?;
        let clips = self.clips_of_hold(hold.scope, &hold.target)?;
        let detail = format!("legal hold {id} released: {reason}");
        for clip in &clips {
            self.append_custody(clip, now, actor, CustodyAction::LegalHoldCleared, &detail)?;
        }
        self.audit(
            actor,
            "hold.release",
            &format!("{}:{}", hold.scope.as_str(), hold.target),
            serde_json::json!({ "hold": id, "reason": reason, "clips": clips.len() }),
        )?;
        self.hold(id)?.ok_or_else(|| ConsoleError::corrupt("legal hold", "gone after release"))
    }

    /// Clip `clip_id` if it was deleted.
    pub fn deleted_clip(&self, clip_id: &str) -> Result<Option<Tombstone>, ConsoleError> {
        self.opt(
            "SELECT clip_id, deleted_by, deleted_ms, reason FROM deleted_clips WHERE clip_id = ?1",
            args![clip_id],
            |r| {
                Ok(Tombstone {
                    clip_id: r.get(0)?,
                    deleted_by: r.get(1)?,
                    deleted_ms: r.get(2)?,
                    reason: r.get(3)?,
                })
            },
        )
    }

    /// Deletes clip `clip_id` (see "Deleting a clip"), as `actor` for `cause`, with the
    /// person's `why` (the retention job's is its rule).
    pub fn delete_clip(
        &self,
        clip_id: &str,
        cause: DeleteCause,
        why: &str,
        actor: &str,
        now: i64,
    ) -> Result<Deleted, ConsoleError> {
        let found: Option<(String, String, i64, i64)> = self.opt(
            "SELECT device_id, user_name, start_ms, end_ms FROM clips WHERE id = ?1",
            args![clip_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let Some((device, user, start_ms, end_ms)) = found else {
            return Err(ConsoleError::NotFound { what: format!("no clip {clip_id}") });
        };
        if let Some(hold) = self.holds_covering(clip_id, &user)?.first() {
            return Err(ConsoleError::Conflict {
                what: format!(
                    "clip {clip_id} is under legal hold {} ({} {}, placed by {}: {}); release \
                     the hold first",
                    hold.id,
                    hold.scope.as_str(),
                    hold.target,
                    hold.placed_by,
                    hold.reason
                ),
            });
        }
        let shas: Vec<String> = self.rows(
            "SELECT sha256 FROM clip_segments WHERE clip_id = ?1 ORDER BY sha256",
            args![clip_id],
            |r| r.get(0),
        )?;
        self.exec("DELETE FROM clip_segments WHERE clip_id = ?1", args![clip_id])?;
        self.exec("DELETE FROM clip_views WHERE clip_id = ?1", args![clip_id])?;
        self.exec("DELETE FROM clips WHERE id = ?1", args![clip_id])?;
        let mut queued = 0;
        for sha in &shas {
            let named: bool = self.one(
                "SELECT EXISTS (SELECT 1 FROM clip_segments cs JOIN clips c ON c.id = cs.clip_id
                                WHERE cs.sha256 = ?1 AND c.device_id = ?2)",
                args![sha.as_str(), device.as_str()],
                |r| r.get(0),
            )?;
            if !named {
                queued += self.queue_blob_deletion(&device, sha, now)?;
            }
        }
        let why = why.trim();
        self.exec(
            "INSERT INTO deleted_clips (clip_id, device_id, user_name, start_ms, end_ms,
                                        deleted_by, deleted_ms, reason, segments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                clip_id,
                device.as_str(),
                user.as_str(),
                start_ms,
                end_ms,
                actor,
                now,
                why,
                shas.len() as i64
            ],
        )?;
        let detail = format!("deleted ({}): {why}", cause.as_str());
        self.append_custody(clip_id, now, actor, CustodyAction::Deleted, &detail)?;
        self.audit(
            actor,
            "clip.delete",
            &format!("clip:{clip_id}"),
            serde_json::json!({ "cause": cause.as_str(), "reason": why, "user": user,
                                "device": device, "segments": shas.len(),
                                "blobs_queued": queued }),
        )?;
        Ok(Deleted {
            clip_id: clip_id.to_owned(),
            user,
            device_id: device,
            segments: shas.len(),
            blobs_queued: queued,
        })
    }

    /// Moves segment `sha256` of `device_id` from `segments` to `blob_deletions`; 1 when it
    /// was stored, 0 when not.
    fn queue_blob_deletion(
        &self,
        device: &str,
        sha: &str,
        now: i64,
    ) -> Result<usize, ConsoleError> {
        let gone = self.exec(
            "DELETE FROM segments WHERE device_id = ?1 AND sha256 = ?2",
            args![device, sha],
        )?;
        if gone == 0 {
            return Ok(0);
        }
        self.exec(
            "INSERT INTO blob_deletions (device_id, sha256, queued_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (device_id, sha256) DO NOTHING",
            args![device, sha, now],
        )?;
        Ok(1)
    }

    /// Up to `limit` clips whose window ended before `cutoff_ms` and that no hold covers,
    /// oldest first.
    pub fn clips_expired(&self, cutoff_ms: i64, limit: i64) -> Result<Vec<String>, ConsoleError> {
        self.rows(
            "SELECT c.id FROM clips c WHERE c.end_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.released_ms IS NULL AND
                   ((h.scope = 'clip' AND h.target = c.id) OR
                    (h.scope = 'user' AND LOWER(h.target) = LOWER(c.user_name))))
             ORDER BY c.end_ms, c.id LIMIT ?2",
            args![cutoff_ms, limit],
            |r| r.get(0),
        )
    }

    /// How many clips that no hold covers expire before `cutoff_ms`, and how many held clips
    /// would have (for the job's record).
    pub fn clips_expiring_count(&self, cutoff_ms: i64) -> Result<(i64, i64), ConsoleError> {
        self.one(
            "SELECT
               CAST(COALESCE(SUM(CASE WHEN held THEN 0 ELSE 1 END), 0) AS BIGINT),
               CAST(COALESCE(SUM(CASE WHEN held THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM (SELECT EXISTS (SELECT 1 FROM legal_holds h WHERE h.released_ms IS NULL AND
                     ((h.scope = 'clip' AND h.target = c.id) OR
                      (h.scope = 'user' AND LOWER(h.target) = LOWER(c.user_name)))) AS held
                   FROM clips c WHERE c.end_ms < ?1) x",
            args![cutoff_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Queues up to `limit` stored segments that no clip names and that were stored before
    /// `cutoff_ms`; how many.
    pub fn queue_orphan_segments(
        &self,
        cutoff_ms: i64,
        now: i64,
        limit: i64,
    ) -> Result<usize, ConsoleError> {
        let orphans: Vec<(String, String)> = self.rows(
            "SELECT s.device_id, s.sha256 FROM segments s WHERE s.stored_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM clip_segments cs JOIN clips c ON c.id = cs.clip_id
                               WHERE cs.sha256 = s.sha256 AND c.device_id = s.device_id)
             ORDER BY s.stored_ms, s.sha256 LIMIT ?2",
            args![cutoff_ms, limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut queued = 0;
        for (device, sha) in &orphans {
            queued += self.queue_blob_deletion(device, sha, now)?;
        }
        Ok(queued)
    }

    /// Up to `limit` queued blob deletions, oldest first.
    pub fn blob_deletions(&self, limit: i64) -> Result<Vec<(String, String)>, ConsoleError> {
        self.rows(
            "SELECT device_id, sha256 FROM blob_deletions ORDER BY queued_ms, device_id, sha256
             LIMIT ?1",
            args![limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Ends queued deletion of the blob. `removed`: the bytes are gone, so a `segments` row
    /// that appeared meanwhile is dropped too (the console asks for the bytes again); true
    /// when that happened.
    pub fn finish_blob_deletion(
        &self,
        device: &str,
        sha: &str,
        removed: bool,
    ) -> Result<bool, ConsoleError> {
        self.exec(
            "DELETE FROM blob_deletions WHERE device_id = ?1 AND sha256 = ?2",
            args![device, sha],
        )?;
        if !removed {
            return Ok(false);
        }
        let raced = self.exec(
            "DELETE FROM segments WHERE device_id = ?1 AND sha256 = ?2",
            args![device, sha],
        )?;
        Ok(raced > 0)
    }

    /// Ids of the clips of `user` (case-insensitively), oldest first.
    pub fn clips_of_user(&self, user: &str) -> Result<Vec<String>, ConsoleError> {
        self.rows(
            "SELECT id FROM clips WHERE LOWER(user_name) = LOWER(?1) ORDER BY end_ms, id",
            args![user],
            |r| r.get(0),
        )
    }
}
