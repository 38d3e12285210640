//! `clips`, `clip_segments` and `segments`: the manifests devices send, the segments each
//! names (with the size it names), and which sealed segments are stored for which device (see
//! [`crate::api::ingest`]).

use super::sql::{args, Row};
use super::Tx;
use crate::api::clips::ClipView;
use crate::api::page::PageRequest;
use crate::error::ConsoleError;
use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::{CaptureMode, ClipManifest, UnixMillis};

const COLUMNS: &str =
    "rowid, id, device_id, user_name, mode, trigger_id, alert_id, start_ms, end_ms, \
                       created_ms, complete_ms, manifest_json";

/// A clip of [`COLUMNS`] whose manifest is still the stored text.
struct ClipRow {
    cursor: i64,
    view: ClipView,
    manifest_json: String,
}

fn row(r: &Row<'_>) -> Result<ClipRow, ConsoleError> {
    let complete_ms: Option<i64> = r.get(10)?;
    Ok(ClipRow {
        cursor: r.get(0)?,
        view: ClipView {
            id: r.get(1)?,
            device_id: r.get(2)?,
            user: r.get(3)?,
            mode: r.get(4)?,
            trigger_id: r.get(5)?,
            alert_id: r.get(6)?,
            start_ms: r.get(7)?,
            end_ms: r.get(8)?,
            created_ms: r.get(9)?,
            complete: complete_ms.is_some(),
            complete_ms,
            manifest: ClipManifest {
                clip_id: String::new(),
                trigger_id: None,
                // A placeholder, as every field here: the stored manifest replaces it.
                mode: CaptureMode::SpecificActivities,
                user: String::new(),
                device_id: String::new(),
                start_ms: UnixMillis(0),
                end_ms: UnixMillis(0),
                segments: vec![],
                missing: vec![],
                open: false,
                chain: Vec::new(),
                absent: Vec::new(),
            },
        },
        manifest_json: r.get(11)?,
    })
}

impl ClipRow {
    fn parsed(mut self) -> Result<(i64, ClipView), ConsoleError> {
        self.view.manifest = serde_json::from_str(&self.manifest_json)
            .map_err(|e| ConsoleError::corrupt(format!("clip {}", self.view.id), e))?;
        Ok((self.cursor, self.view))
    }
}

/// The filters of the clip listing (`None`: any).
#[derive(Debug, Default, Clone)]
pub struct ClipFilter {
    pub alert: Option<i64>,
    pub trigger: Option<String>,
    /// Compared case-insensitively.
    pub user: Option<String>,
    pub device: Option<String>,
    pub complete: Option<bool>,
}

/// A stored clip as a new manifest for it is judged.
pub struct StoredClip {
    pub device_id: String,
    pub manifest: ClipManifest,
    pub complete: bool,
}

/// A new clip as stored.
pub struct NewClip<'a> {
    pub manifest: &'a ClipManifest,
    pub alert_id: Option<i64>,
    pub created_ms: i64,
}

fn manifest_json(m: &ClipManifest) -> Result<String, ConsoleError> {
    serde_json::to_string(m).map_err(|e| ConsoleError::Invalid(format!("manifest: {e}")))
}

impl Tx<'_> {
    /// A page of clips (oldest first, cursor: the rowid) that pass `filter`.
    pub fn clips_page(
        &self,
        page: PageRequest,
        filter: &ClipFilter,
    ) -> Result<Vec<(i64, ClipView)>, ConsoleError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM clips
             WHERE (CAST(?1 AS BIGINT) IS NULL OR rowid > ?1)
               AND (CAST(?2 AS BIGINT) IS NULL OR alert_id = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR trigger_id = ?3)
               AND (CAST(?4 AS TEXT) IS NULL OR LOWER(user_name) = LOWER(?4))
               AND (CAST(?5 AS TEXT) IS NULL OR device_id = ?5)
               AND (CAST(?6 AS BIGINT) IS NULL
                    OR (CASE WHEN complete_ms IS NULL THEN 0 ELSE 1 END) = ?6)
             ORDER BY rowid LIMIT ?7"
        );
        let rows = self.rows(
            &sql,
            args![
                page.after,
                filter.alert,
                filter.trigger,
                filter.user.as_deref().map(str::trim),
                filter.device,
                filter.complete,
                page.sql_limit()
            ],
            row,
        )?;
        rows.into_iter().map(ClipRow::parsed).collect()
    }

    /// Clip `id`, if there is one.
    pub fn clip(&self, id: &str) -> Result<Option<ClipView>, ConsoleError> {
        let found =
            self.opt(&format!("SELECT {COLUMNS} FROM clips WHERE id = ?1"), args![id], row)?;
        found.map(|r| r.parsed().map(|(_, v)| v)).transpose()
    }

    /// Clip `id` as stored, for judging a new manifest of it.
    pub fn stored_clip(&self, id: &str) -> Result<Option<StoredClip>, ConsoleError> {
        let row: Option<(String, String, bool)> = self.opt(
            "SELECT device_id, manifest_json, complete_ms IS NOT NULL FROM clips WHERE id = ?1",
            args![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        row.map(|(device_id, json, complete)| {
            let manifest = serde_json::from_str(&json)
                .map_err(|e| ConsoleError::corrupt(format!("clip {id}"), e))?;
            Ok(StoredClip { device_id, manifest, complete })
        })
        .transpose()
    }

    /// The device clip `id` belongs to.
    pub fn clip_owner(&self, id: &str) -> Result<Option<String>, ConsoleError> {
        self.opt("SELECT device_id FROM clips WHERE id = ?1", args![id], |r| r.get(0))
    }

    /// Stores a new clip and names its segments.
    pub fn insert_clip(&self, c: &NewClip<'_>) -> Result<(), ConsoleError> {
        let m = c.manifest;
        self.exec(
            "INSERT INTO clips (id, device_id, trigger_id, alert_id, user_name, mode, start_ms, end_ms, manifest_json, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            args![
                m.clip_id,
                m.device_id,
                m.trigger_id,
                c.alert_id,
                m.user,
                capture_mode_name(m.mode),
                m.start_ms.millis(),
                m.end_ms.millis(),
                manifest_json(m)?,
                c.created_ms
            ],
        )?;
        self.name_segments(m)
    }

    /// Replaces the stored manifest of `m.clip_id` by `m`, naming its segments (already named
    /// ones are kept) and no longer naming `unnamed`.
    pub fn update_manifest(
        &self,
        m: &ClipManifest,
        unnamed: &[String],
    ) -> Result<(), ConsoleError> {
        self.exec(
            "UPDATE clips SET manifest_json = ?1 WHERE id = ?2",
            args![manifest_json(m)?, m.clip_id],
        )?;
        self.name_segments(m)?;
        for sha in unnamed {
            self.exec(
                "DELETE FROM clip_segments WHERE clip_id = ?1 AND sha256 = ?2",
                args![m.clip_id, sha],
            )?;
        }
        Ok(())
    }

    /// Names `m`'s segments as the clip's, with their sizes (already named ones are kept).
    fn name_segments(&self, m: &ClipManifest) -> Result<(), ConsoleError> {
        for s in &m.segments {
            self.exec(
                "INSERT INTO clip_segments (clip_id, sha256, size) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                args![m.clip_id, s.sha256, s.size],
            )?;
        }
        Ok(())
    }

    /// Hashes clip `clip_id` (of `device_id`) names that are not stored yet, in order.
    pub fn missing_segments(
        &self,
        device_id: &str,
        clip_id: &str,
    ) -> Result<Vec<String>, ConsoleError> {
        self.rows(
            "SELECT cs.sha256 FROM clip_segments cs
             LEFT JOIN segments s ON s.device_id = ?1 AND s.sha256 = cs.sha256
             WHERE cs.clip_id = ?2 AND s.sha256 IS NULL ORDER BY cs.sha256",
            args![device_id, clip_id],
            |r| r.get(0),
        )
    }

    /// Whether clip `clip_id`'s manifest says it is still open.
    pub fn clip_is_open(&self, clip_id: &str) -> Result<bool, ConsoleError> {
        let json: Option<String> =
            self.opt("SELECT manifest_json FROM clips WHERE id = ?1", args![clip_id], |r| {
                r.get(0)
            })?;
        Ok(json.is_some_and(|j| manifest_open(&j)))
    }

    /// Marks clip `clip_id` complete at `now` and countersigns it (its signed clip record and
    /// `completed` in its custody log, see [`super::evidence`]); false when it was complete
    /// already.
    pub fn mark_complete(&self, clip_id: &str, now: i64) -> Result<bool, ConsoleError> {
        let changed = self.exec(
            "UPDATE clips SET complete_ms = ?1 WHERE id = ?2 AND complete_ms IS NULL",
            args![now, clip_id],
        )?;
        if changed == 1 {
            self.countersign_clip(clip_id, now)?;
        }
        Ok(changed == 1)
    }

    /// The largest size a manifest of `device_id` names for segment `sha256` (`size_unknown` for
    /// names older consoles kept without one); `None` when none names it.
    pub fn named_segment_size(
        &self,
        device_id: &str,
        sha256: &str,
        size_unknown: i64,
    ) -> Result<Option<i64>, ConsoleError> {
        self.one(
            "SELECT COUNT(*) > 0, MAX(COALESCE(cs.size, ?3)) FROM clip_segments cs
             JOIN clips c ON c.id = cs.clip_id WHERE cs.sha256 = ?1 AND c.device_id = ?2",
            args![sha256, device_id, size_unknown],
            |r| Ok(if r.get::<bool>(0)? { Some(r.get(1)?) } else { None }),
        )
    }

    /// Whether segment `sha256` of `device_id` is stored.
    pub fn segment_stored(&self, device_id: &str, sha256: &str) -> Result<bool, ConsoleError> {
        self.one(
            "SELECT EXISTS (SELECT 1 FROM segments WHERE device_id = ?1 AND sha256 = ?2)",
            args![device_id, sha256],
            |r| r.get(0),
        )
    }

    /// Records that segment `sha256` of `device_id` is stored (once), with the id its sealed
    /// header carries (`None` for bytes that are no sealed segment), and `received` in the
    /// custody log of each clip it is the first stored segment of.
    pub fn insert_segment(
        &self,
        device_id: &str,
        sha256: &str,
        size: u64,
        segment_id: Option<&str>,
        now: i64,
    ) -> Result<(), ConsoleError> {
        let inserted = self.exec(
            "INSERT INTO segments (device_id, sha256, size, stored_ms, segment_id)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            args![device_id, sha256, size, now, segment_id],
        )?;
        if inserted == 1 {
            self.custody_segment_stored(device_id, sha256, now)?;
        }
        Ok(())
    }

    /// Incomplete clips of `device_id` that name segment `sha256`.
    pub fn incomplete_clips_naming(
        &self,
        device_id: &str,
        sha256: &str,
    ) -> Result<Vec<String>, ConsoleError> {
        self.rows(
            "SELECT c.id FROM clips c JOIN clip_segments cs ON cs.clip_id = c.id
             WHERE cs.sha256 = ?1 AND c.device_id = ?2 AND c.complete_ms IS NULL ORDER BY c.id",
            args![sha256, device_id],
            |r| r.get(0),
        )
    }

    /// Every clip in creation order as `clip list` prints it.
    pub fn clip_summaries(&self) -> Result<Vec<serde_json::Value>, ConsoleError> {
        self.rows(
            "SELECT id, device_id, user_name, mode, trigger_id, alert_id, start_ms, end_ms,
                    complete_ms, (SELECT COUNT(*) FROM clip_segments cs WHERE cs.clip_id = clips.id),
                    manifest_json
             FROM clips ORDER BY created_ms, rowid",
            args![],
            |r| {
                let manifest: serde_json::Value =
                    serde_json::from_str(&r.get::<String>(10)?).unwrap_or_default();
                let covered_until = manifest["segments"]
                    .as_array()
                    .and_then(|s| s.iter().filter_map(|s| s["end_ms"].as_i64()).max());
                Ok(serde_json::json!({
                    "id": r.get::<String>(0)?, "device_id": r.get::<String>(1)?,
                    "user": r.get::<String>(2)?, "mode": r.get::<String>(3)?,
                    "trigger_id": r.get::<Option<String>>(4)?, "alert_id": r.get::<Option<i64>>(5)?,
                    "start_ms": r.get::<i64>(6)?, "end_ms": r.get::<i64>(7)?,
                    "complete": r.get::<Option<i64>>(8)?.is_some(), "segments": r.get::<i64>(9)?,
                    // An open clip's window still runs; its segments so far reach this far.
                    "open": manifest["open"].as_bool().unwrap_or(false),
                    "covered_until_ms": covered_until,
                }))
            },
        )
    }
}

/// Whether a stored manifest says its clip is still open (text that does not parse: no).
fn manifest_open(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|m| m["open"].as_bool())
        .unwrap_or(false)
}

/// The filters of the review list ([`Tx::clips_review`]); empty lists and `None`: any.
#[derive(Debug, Default, Clone)]
pub struct ReviewFilter {
    /// Only clips of these users (stored names, compared case-insensitively).
    pub users: Vec<String>,
    /// Only clips of devices whose hostname (or id) contains one of these (any case).
    pub devices: Vec<String>,
    /// `specific-activities` or `all-activities`.
    pub mode: Option<String>,
    pub alert: Option<i64>,
    /// Only clips whose window overlaps [from_ms, to_ms).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub complete: Option<bool>,
    /// Only clips whose window ended before this (the ones retention deletes soonest).
    pub ends_before: Option<i64>,
}

/// One row of the review list: the clip and its device's hostname.
#[derive(Debug, Clone)]
pub struct ReviewRow {
    pub cursor: i64,
    pub clip: ClipView,
    pub hostname: Option<String>,
    /// Why the trigger the clip answers was issued.
    pub trigger_reason: Option<String>,
}

/// `text` as a LIKE pattern matching it anywhere, its own `%`, `_` and `\` taken literally.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Tx<'_> {
    /// A page of the review list, newest first (cursor: the rowid; `before` the last cursor of
    /// the page before), that passes `filter`; a user list that is given but empty matches
    /// nothing.
    pub fn clips_review(
        &self,
        filter: &ReviewFilter,
        users_given: bool,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReviewRow>, ConsoleError> {
        if users_given && filter.users.is_empty() {
            return Ok(Vec::new());
        }
        let lowered: Vec<String> = filter.users.iter().map(|u| u.to_lowercase()).collect();
        let patterns: Vec<String> = filter.devices.iter().map(|d| contains_pattern(d)).collect();
        let mut args: Vec<super::sql::Value<'_>> = Vec::new();
        fn next<'v>(v: super::sql::Value<'v>, args: &mut Vec<super::sql::Value<'v>>) -> String {
            args.push(v);
            format!("?{}", args.len())
        }
        use super::sql::IntoValue;
        let mut sql = format!(
            "SELECT c.{}, d.hostname, t.reason FROM clips c LEFT JOIN devices d ON d.id = c.device_id
             LEFT JOIN triggers t ON t.id = c.trigger_id WHERE 1 = 1",
            COLUMNS.replace(", ", ", c.")
        );
        if let Some(b) = before {
            sql += &format!(" AND c.rowid < {}", next(super::sql::Value::Int(b), &mut args));
        }
        if !lowered.is_empty() {
            let marks: Vec<String> = lowered.iter().map(|u| next(u.value(), &mut args)).collect();
            sql += &format!(" AND LOWER(c.user_name) IN ({})", marks.join(", "));
        }
        if !patterns.is_empty() {
            let any: Vec<String> = patterns
                .iter()
                .map(|p| {
                    let m = next(p.value(), &mut args);
                    format!(
                        "LOWER(COALESCE(d.hostname, '')) LIKE {m} ESCAPE '\\' OR LOWER(c.device_id) LIKE {m} ESCAPE '\\'"
                    )
                })
                .collect();
            sql += &format!(" AND ({})", any.join(" OR "));
        }
        if let Some(m) = &filter.mode {
            sql += &format!(" AND c.mode = {}", next(m.value(), &mut args));
        }
        if let Some(a) = filter.alert {
            sql += &format!(" AND c.alert_id = {}", next(super::sql::Value::Int(a), &mut args));
        }
        if let Some(f) = filter.from_ms {
            sql += &format!(" AND c.end_ms > {}", next(super::sql::Value::Int(f), &mut args));
        }
        if let Some(t) = filter.to_ms {
            sql += &format!(" AND c.start_ms < {}", next(super::sql::Value::Int(t), &mut args));
        }
        if let Some(e) = filter.ends_before {
            sql += &format!(" AND c.end_ms < {}", next(super::sql::Value::Int(e), &mut args));
        }
        match filter.complete {
            Some(true) => sql += " AND c.complete_ms IS NOT NULL",
            Some(false) => sql += " AND c.complete_ms IS NULL",
            None => {}
        }
        sql += &format!(
            " ORDER BY c.rowid DESC LIMIT {}",
            next(super::sql::Value::Int(limit), &mut args)
        );
        let rows = self.rows(&sql, &args, |r| {
            Ok((row(r)?, r.get::<Option<String>>(12)?, r.get::<Option<String>>(13)?))
        })?;
        rows.into_iter()
            .map(|(r, hostname, trigger_reason)| {
                let (cursor, clip) = r.parsed()?;
                Ok(ReviewRow { cursor, clip, hostname, trigger_reason })
            })
            .collect()
    }

    /// The hostname device `id` enrolled with.
    pub fn device_hostname(&self, id: &str) -> Result<Option<String>, ConsoleError> {
        self.opt("SELECT hostname FROM devices WHERE id = ?1", args![id], |r| r.get(0))
    }

    /// Every user name some clip is of (as stored), for matching pseudonyms.
    pub fn clip_users(&self) -> Result<Vec<String>, ConsoleError> {
        self.rows("SELECT DISTINCT user_name FROM clips ORDER BY user_name", args![], |r| r.get(0))
    }
}
