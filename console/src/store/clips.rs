//! `clips`, `clip_segments` and `segments`: the manifests devices send, the segments each
//! names (with the size it names), and which sealed segments are stored for which device (see
//! [`crate::api::ingest`]).

use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::{CaptureMode, ClipManifest, UnixMillis};
use rusqlite::{params, OptionalExtension};

use super::Tx;
use crate::api::clips::ClipView;
use crate::api::page::PageRequest;
use crate::error::ConsoleError;

const COLUMNS: &str = "rowid, id, device_id, user, mode, trigger_id, alert_id, start_ms, end_ms, \
                       created_ms, complete_ms, manifest_json";

/// A clip of [`COLUMNS`] whose manifest is still the stored text.
struct ClipRow {
    cursor: i64,
    view: ClipView,
    manifest_json: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClipRow> {
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
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM clips
             WHERE (?1 IS NULL OR rowid > ?1) AND (?2 IS NULL OR alert_id = ?2)
               AND (?3 IS NULL OR trigger_id = ?3) AND (?4 IS NULL OR user = ?4 COLLATE NOCASE)
               AND (?5 IS NULL OR device_id = ?5) AND (?6 IS NULL OR (complete_ms IS NOT NULL) = ?6)
             ORDER BY rowid LIMIT ?7"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    page.after,
                    filter.alert,
                    filter.trigger,
                    filter.user.as_deref().map(str::trim),
                    filter.device,
                    filter.complete,
                    page.sql_limit()
                ],
                row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(ClipRow::parsed).collect()
    }

    /// Clip `id`, if there is one.
    pub fn clip(&self, id: &str) -> Result<Option<ClipView>, ConsoleError> {
        let found = self
            .conn
            .query_row(&format!("SELECT {COLUMNS} FROM clips WHERE id = ?1"), [id], row)
            .optional()?;
        found.map(|r| r.parsed().map(|(_, v)| v)).transpose()
    }

    /// Clip `id` as stored, for judging a new manifest of it.
    pub fn stored_clip(&self, id: &str) -> Result<Option<StoredClip>, ConsoleError> {
        let row: Option<(String, String, bool)> = self
            .conn
            .query_row(
                "SELECT device_id, manifest_json, complete_ms IS NOT NULL FROM clips WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(device_id, json, complete)| {
            let manifest = serde_json::from_str(&json)
                .map_err(|e| ConsoleError::corrupt(format!("clip {id}"), e))?;
            Ok(StoredClip { device_id, manifest, complete })
        })
        .transpose()
    }

    /// The device clip `id` belongs to.
    pub fn clip_owner(&self, id: &str) -> Result<Option<String>, ConsoleError> {
        Ok(self
            .conn
            .query_row("SELECT device_id FROM clips WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// Stores a new clip and names its segments.
    pub fn insert_clip(&self, c: &NewClip<'_>) -> Result<(), ConsoleError> {
        let m = c.manifest;
        self.conn.execute(
            "INSERT INTO clips (id, device_id, trigger_id, alert_id, user, mode, start_ms, end_ms, manifest_json, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
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
        self.conn.execute(
            "UPDATE clips SET manifest_json = ?1 WHERE id = ?2",
            params![manifest_json(m)?, m.clip_id],
        )?;
        self.name_segments(m)?;
        let mut unname = self
            .conn
            .prepare_cached("DELETE FROM clip_segments WHERE clip_id = ?1 AND sha256 = ?2")?;
        for sha in unnamed {
            unname.execute(params![m.clip_id, sha])?;
        }
        Ok(())
    }

    /// Names `m`'s segments as the clip's, with their sizes (already named ones are kept).
    fn name_segments(&self, m: &ClipManifest) -> Result<(), ConsoleError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO clip_segments (clip_id, sha256, size) VALUES (?1, ?2, ?3)",
        )?;
        for s in &m.segments {
            insert.execute(params![m.clip_id, s.sha256, s.size as i64])?;
        }
        Ok(())
    }

    /// Hashes clip `clip_id` (of `device_id`) names that are not stored yet, in order.
    pub fn missing_segments(
        &self,
        device_id: &str,
        clip_id: &str,
    ) -> Result<Vec<String>, ConsoleError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT cs.sha256 FROM clip_segments cs
             LEFT JOIN segments s ON s.device_id = ?1 AND s.sha256 = cs.sha256
             WHERE cs.clip_id = ?2 AND s.sha256 IS NULL ORDER BY cs.sha256",
        )?;
        let rows = stmt
            .query_map(params![device_id, clip_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// Whether clip `clip_id`'s manifest says it is still open.
    pub fn clip_is_open(&self, clip_id: &str) -> Result<bool, ConsoleError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(json_extract(manifest_json, '$.open'), 0) FROM clips WHERE id = ?1",
            [clip_id],
            |r| r.get(0),
        )?)
    }

    /// Marks clip `clip_id` complete at `now` and countersigns it (its signed clip record and
    /// `completed` in its custody log, see [`super::evidence`]); false when it was complete
    /// already.
    pub fn mark_complete(&self, clip_id: &str, now: i64) -> Result<bool, ConsoleError> {
        let changed = self.conn.execute(
            "UPDATE clips SET complete_ms = ?1 WHERE id = ?2 AND complete_ms IS NULL",
            params![now, clip_id],
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
        Ok(self.conn.query_row(
            "SELECT COUNT(*) > 0, MAX(COALESCE(cs.size, ?3)) FROM clip_segments cs
             JOIN clips c ON c.id = cs.clip_id WHERE cs.sha256 = ?1 AND c.device_id = ?2",
            params![sha256, device_id, size_unknown],
            |r| Ok(if r.get::<_, bool>(0)? { Some(r.get(1)?) } else { None }),
        )?)
    }

    /// Whether segment `sha256` of `device_id` is stored.
    pub fn segment_stored(&self, device_id: &str, sha256: &str) -> Result<bool, ConsoleError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM segments WHERE device_id = ?1 AND sha256 = ?2)",
            params![device_id, sha256],
            |r| r.get(0),
        )?)
    }

    /// Records that segment `sha256` of `device_id` is stored (once), with `received` in the
    /// custody log of each clip it is the first stored segment of.
    pub fn insert_segment(
        &self,
        device_id: &str,
        sha256: &str,
        size: u64,
        now: i64,
    ) -> Result<(), ConsoleError> {
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO segments (device_id, sha256, size, stored_ms) VALUES (?1, ?2, ?3, ?4)",
            params![device_id, sha256, size as i64, now],
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id FROM clips c JOIN clip_segments cs ON cs.clip_id = c.id
             WHERE cs.sha256 = ?1 AND c.device_id = ?2 AND c.complete_ms IS NULL",
        )?;
        let rows = stmt
            .query_map(params![sha256, device_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// Every clip in creation order as `clip list` prints it.
    pub fn clip_summaries(&self) -> Result<Vec<serde_json::Value>, ConsoleError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, device_id, user, mode, trigger_id, alert_id, start_ms, end_ms, complete_ms,
                    (SELECT COUNT(*) FROM clip_segments cs WHERE cs.clip_id = clips.id),
                    COALESCE(json_extract(manifest_json, '$.open'), 0),
                    (SELECT MAX(json_extract(value, '$.end_ms')) FROM json_each(manifest_json, '$.segments'))
             FROM clips ORDER BY created_ms",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(serde_json::json!({
                    "id": r.get::<_, String>(0)?, "device_id": r.get::<_, String>(1)?, "user": r.get::<_, String>(2)?,
                    "mode": r.get::<_, String>(3)?, "trigger_id": r.get::<_, Option<String>>(4)?,
                    "alert_id": r.get::<_, Option<i64>>(5)?, "start_ms": r.get::<_, i64>(6)?, "end_ms": r.get::<_, i64>(7)?,
                    "complete": r.get::<_, Option<i64>>(8)?.is_some(), "segments": r.get::<_, i64>(9)?,
                    // An open clip's window still runs; its segments so far reach this far.
                    "open": r.get::<_, bool>(10)?, "covered_until_ms": r.get::<_, Option<i64>>(11)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
