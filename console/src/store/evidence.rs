//! The console's signed records and the custody log (formats: `rearview_evidence::record` and
//! `rearview_evidence::custody`), each written in the same transaction as the fact it records.
//!
//! # Tables
//!
//! ```text
//! enrollment_records  device_id, record, signature
//!     record: the EnrollmentRecord JSON bytes exactly as signed; signature: the bytes of its
//!     `.sig` file ({"key", "signature"}, kind `enrollment`). Written with the device row.
//! clip_records        clip_id, record, signature
//!     the ClipRecord JSON bytes and their `.sig` (kind `clip`). Written when the clip
//!     completes, in that transaction.
//! custody             clip_id, seq, line, hash
//!     per clip, seq 0, 1, … without holes; line: the entry's JSON exactly as hashed (no
//!     newline); hash: 64 hex, the line's hash (what the next line's `prev` names).
//! ```
//!
//! Records and lines are kept as the bytes that were signed or hashed and are never
//! re-serialised, so an export hands out exactly those bytes. Database triggers refuse every
//! UPDATE of the three tables and every DELETE from `custody`: the log only grows, and the
//! deletion of a clip ([`crate::store::retention`]) appends `deleted` rather than removing its
//! history.
//!
//! # Who signs
//!
//! The tenant signing key (`DATA/keys/signing.pk8`, [`crate::tenant::load_record_signer`]),
//! the key devices already trust for policies and triggers. It is read from beside the
//! database each time a record is signed (a device enrolls once, a clip completes once), so the
//! store keeps no copy of it. A console that cannot read its key signs nothing and therefore
//! enrolls and completes nothing: the transaction fails and the device asks again.
//!
//! # Custody actions and what appends them
//!
//! ```text
//! received            device:<id>    the first segment of the clip is stored (when every
//!                                    segment was already held for an earlier clip: at its
//!                                    completion, just before `completed`)
//! completed           device:<id>    the clip is complete and its record signed
//! opened              person:<name>  frames decoded: `clip export`, `clip export --evidence
//!                                    --open` (appended before any plaintext is written)
//! exported            person:<name>  `clip export --evidence` (before any file is written)
//! legal-hold-set      person:<name>  a legal hold placed on the clip or its user
//! legal-hold-cleared  person:<name>  that hold released
//! deleted             person:<name>  the clip deleted (by an investigator, or in bulk by an
//!                     or console:retention       admin; or expired), with the reason
//! ```

use super::sql::args;
use super::Tx;
use crate::error::ConsoleError;
use rearview_evidence::package::{CLIP_KIND, ENROLLMENT_KIND};
use rearview_evidence::record::{
    self, ApprovalRef, ClipRecord, EnrollmentRecord, MissingSpan, ReceivedSegment, TriggerRef,
    Window,
};
use rearview_evidence::{custody, PublicKey, Signer};
use rearview_protocol::ClipManifest;

/// What happened to a clip, as its custody log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustodyAction {
    Received,
    Completed,
    Opened,
    Exported,
    LegalHoldSet,
    LegalHoldCleared,
    Deleted,
}

impl CustodyAction {
    /// The `action` of the custody entry.
    pub fn name(self) -> &'static str {
        match self {
            CustodyAction::Received => "received",
            CustodyAction::Completed => "completed",
            CustodyAction::Opened => "opened",
            CustodyAction::Exported => "exported",
            CustodyAction::LegalHoldSet => "legal-hold-set",
            CustodyAction::LegalHoldCleared => "legal-hold-cleared",
            CustodyAction::Deleted => "deleted",
        }
    }
}

/// A record and its detached signature, the bytes as stored (and as exported).
#[derive(Debug, Clone)]
pub struct SignedRecord {
    pub record: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A clip's custody log as stored: `custody.jsonl`'s bytes, how many entries, the last hash.
#[derive(Debug, Clone)]
pub struct CustodyLog {
    pub text: String,
    pub entries: u64,
    /// The hash of the last entry (the genesis hash of an empty log).
    pub head: [u8; 32],
}

/// Everything an evidence package takes from the store about one complete clip.
#[derive(Debug, Clone)]
pub struct ClipEvidence {
    pub device_id: String,
    /// The stored manifest's JSON bytes (what the clip record's `manifest_sha256` hashes).
    pub manifest_json: String,
    pub manifest: ClipManifest,
    /// The record's segments: id and hash, in the manifest's order.
    pub segments: Vec<ReceivedSegment>,
    pub enrollment: SignedRecord,
    pub clip_record: SignedRecord,
    pub custody: CustodyLog,
}

/// Unix milliseconds as RFC 3339 UTC, as the records and the custody log carry times.
pub fn utc_text(ms: i64) -> String {
    crate::tenant::ms_to_time(ms)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn json_bytes<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>, ConsoleError> {
    serde_json::to_vec(value).map_err(|e| ConsoleError::Signing(format!("{what}: {e}")))
}

fn hash_from_hex(clip_id: &str, text: &str) -> Result<[u8; 32], ConsoleError> {
    let bytes = hex::decode(text).map_err(|e| ConsoleError::corrupt("custody hash", e))?;
    bytes.try_into().map_err(|_| {
        ConsoleError::corrupt(format!("custody log of clip {clip_id}"), "a hash is not 32 bytes")
    })
}

impl Tx<'_> {
    fn record_signer(&self) -> Result<Signer, ConsoleError> {
        crate::tenant::load_record_signer(self.data)
    }

    fn tenant_id(&self) -> Result<String, ConsoleError> {
        self.meta_get("tenant_id")?
            .ok_or_else(|| ConsoleError::Config("the database holds no tenant".into()))
    }

    /// Signs and stores the enrollment record of `device_id`, just enrolled at `now` with
    /// `public_key_hex` (32 bytes, checked by the caller) and the enrollment token used for
    /// it: `enrolled_by` is the person who created that token.
    pub fn insert_enrollment_record(
        &self,
        device_id: &str,
        public_key_hex: &str,
        now: i64,
    ) -> Result<(), ConsoleError> {
        let enrolled_by: String = self.one(
            "SELECT created_by FROM enrollment_tokens WHERE device_id = ?1",
            args![device_id],
            |r| r.get(0),
        )?;
        let key: [u8; 32] = hex::decode(public_key_hex)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| ConsoleError::Invalid("public_key must be 32 bytes of hex".into()))?;
        let record = EnrollmentRecord {
            tenant: self.tenant_id()?,
            device: device_id.to_owned(),
            device_public_key: PublicKey::from_bytes(key).to_base64(),
            enrolled_utc: utc_text(now),
            enrolled_by,
        };
        let bytes = json_bytes("enrollment record", &record)?;
        let signature = json_bytes(
            "signature",
            &record::sign(&self.record_signer()?, ENROLLMENT_KIND, &bytes),
        )?;
        self.exec(
            "INSERT INTO enrollment_records (device_id, record, signature) VALUES (?1, ?2, ?3)",
            args![device_id, bytes, signature],
        )?;
        Ok(())
    }

    /// The enrollment record of `device_id`, if the console signed one (devices enrolled
    /// before consoles did have none).
    pub fn enrollment_record(&self, device_id: &str) -> Result<Option<SignedRecord>, ConsoleError> {
        self.opt(
            "SELECT record, signature FROM enrollment_records WHERE device_id = ?1",
            args![device_id],
            |r| Ok(SignedRecord { record: r.get(0)?, signature: r.get(1)? }),
        )
    }

    /// The clip record of `clip_id`, if it completed.
    pub fn clip_record(&self, clip_id: &str) -> Result<Option<SignedRecord>, ConsoleError> {
        self.opt(
            "SELECT record, signature FROM clip_records WHERE clip_id = ?1",
            args![clip_id],
            |r| Ok(SignedRecord { record: r.get(0)?, signature: r.get(1)? }),
        )
    }

    /// Countersigns clip `clip_id`, which just became complete at `now`: its clip record, and
    /// `completed` in its custody log (after `received` if no segment of it was stored since
    /// its manifest came: every one was held already).
    pub fn countersign_clip(&self, clip_id: &str, now: i64) -> Result<(), ConsoleError> {
        let record = self.build_clip_record(clip_id, now)?;
        let bytes = json_bytes("clip record", &record)?;
        let signature =
            json_bytes("signature", &record::sign(&self.record_signer()?, CLIP_KIND, &bytes))?;
        self.exec(
            "INSERT INTO clip_records (clip_id, record, signature) VALUES (?1, ?2, ?3)",
            args![clip_id, bytes, signature],
        )?;
        let actor = format!("device:{}", record.device);
        let logged: bool = self.one(
            "SELECT EXISTS (SELECT 1 FROM custody WHERE clip_id = ?1)",
            args![clip_id],
            |r| r.get(0),
        )?;
        if !logged {
            let detail = "every segment was already held for an earlier clip";
            self.append_custody(clip_id, now, &actor, CustodyAction::Received, detail)?;
        }
        let detail = format!("{} segments; clip record signed", record.segments.len());
        self.append_custody(clip_id, now, &actor, CustodyAction::Completed, &detail)
    }

    /// The clip record of the stored clip `clip_id`, completed at `now`.
    fn build_clip_record(&self, clip_id: &str, now: i64) -> Result<ClipRecord, ConsoleError> {
        let (device, manifest_json): (String, String) = self.one(
            "SELECT device_id, manifest_json FROM clips WHERE id = ?1",
            args![clip_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let m: ClipManifest = serde_json::from_str(&manifest_json)
            .map_err(|e| ConsoleError::corrupt(format!("clip {clip_id}"), e))?;
        let mut segments = Vec::with_capacity(m.segments.len());
        for s in &m.segments {
            segments.push(self.received_segment(&device, &m, &s.sha256)?);
        }
        let trigger = match &m.trigger_id {
            Some(id) => self.trigger_ref(id)?,
            None => None,
        };
        let approval = match &trigger {
            Some(_) => None,
            None => self.approval_at(&m.user, m.start_ms.millis())?,
        };
        Ok(ClipRecord {
            clip: clip_id.to_owned(),
            tenant: self.tenant_id()?,
            device,
            user: m.user.clone(),
            manifest_sha256: rearview_evidence::sha256_hex(manifest_json.as_bytes()),
            window: Window {
                from_utc_micros: m.start_ms.millis().saturating_mul(1000),
                to_utc_micros: m.end_ms.millis().saturating_mul(1000),
            },
            trigger,
            approval,
            segments,
            missing: missing_spans(&m),
            completed_utc: utc_text(now),
        })
    }

    /// A stored segment as the clip record names it: its id, its hash, and when the console
    /// stored it. The id is the one its sealed header carries, read when it was stored. Bytes
    /// that are no sealed segment (ingest stores what hashes to its name, it does not open
    /// it) get the id the device's chain gives them, else none (`""`): the record still says
    /// what was received, and an evidence export refuses such a clip.
    fn received_segment(
        &self,
        device: &str,
        m: &ClipManifest,
        sha256: &str,
    ) -> Result<ReceivedSegment, ConsoleError> {
        let (stored_ms, header_id): (i64, Option<String>) = self.one(
            "SELECT stored_ms, segment_id FROM segments WHERE device_id = ?1 AND sha256 = ?2",
            args![device, sha256],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let chained = || {
            m.chain
                .iter()
                .filter_map(|e| e.segment.as_ref())
                .find(|s| s.sha256 == sha256)
                .map(|s| s.id.clone())
        };
        let id = match header_id {
            Some(id) => id,
            None => {
                tracing::warn!(segment = ?sha256, "stored segment has no sealed header");
                chained().unwrap_or_default()
            }
        };
        Ok(ReceivedSegment { id, sha256: sha256.to_owned(), received_utc: utc_text(stored_ms) })
    }

    /// Trigger `id` and the approval it was issued under: the user's approval in force at the
    /// trigger's event time (the one the console checked when it signed the trigger), the
    /// latest decided if several were.
    fn trigger_ref(&self, id: &str) -> Result<Option<TriggerRef>, ConsoleError> {
        let Some((user, event_ms, reason)) = self.opt(
            "SELECT user_name, event_time_ms, reason FROM triggers WHERE id = ?1",
            args![id],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<String>(2)?)),
        )?
        else {
            return Ok(None);
        };
        let approval = self.approval_at(&user, event_ms)?;
        Ok(Some(TriggerRef { id: id.to_owned(), reason, approval }))
    }

    /// The approval of `user` in force at `at_ms` (the latest decided if several were).
    fn approval_at(&self, user: &str, at_ms: i64) -> Result<Option<ApprovalRef>, ConsoleError> {
        let sql = format!(
            "SELECT id, user_name, requested_by, decided_by FROM approvals
             WHERE state IN ('approved', 'revoked') AND decided_ms IS NOT NULL
               AND decided_ms <= ?1 AND {} > ?1
             ORDER BY decided_ms DESC, id DESC",
            super::approvals::ENDED_MS
        );
        let rows: Vec<(i64, String, String, String)> =
            self.rows(&sql, args![at_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.into_iter().find(|(_, u, _, _)| crate::policy::same_principal(u, user)).map(
            |(id, _, requested_by, approved_by)| ApprovalRef {
                id: id.to_string(),
                requested_by,
                approved_by,
            },
        ))
    }

    /// Appends `received` to the custody log of every clip of `device_id` naming segment
    /// `sha256` that has no entry yet: that segment, just stored at `now`, is its first.
    pub fn custody_segment_stored(
        &self,
        device_id: &str,
        sha256: &str,
        now: i64,
    ) -> Result<(), ConsoleError> {
        let clips: Vec<String> = self.rows(
            "SELECT c.id FROM clips c JOIN clip_segments cs ON cs.clip_id = c.id
             WHERE cs.sha256 = ?1 AND c.device_id = ?2
               AND NOT EXISTS (SELECT 1 FROM custody k WHERE k.clip_id = c.id) ORDER BY c.id",
            args![sha256, device_id],
            |r| r.get(0),
        )?;
        let (actor, detail) =
            (format!("device:{device_id}"), format!("first segment {sha256} stored"));
        for clip in clips {
            self.append_custody(&clip, now, &actor, CustodyAction::Received, &detail)?;
        }
        Ok(())
    }

    /// Appends one entry to clip `clip_id`'s custody log, in this transaction.
    pub fn append_custody(
        &self,
        clip_id: &str,
        at_ms: i64,
        actor: &str,
        action: CustodyAction,
        detail: &str,
    ) -> Result<(), ConsoleError> {
        let last: Option<(i64, String)> = self.opt(
            "SELECT seq, hash FROM custody WHERE clip_id = ?1 ORDER BY seq DESC LIMIT 1",
            args![clip_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last = match last {
            Some((seq, hash)) => Some((seq as u64, hash_from_hex(clip_id, &hash)?)),
            None => None,
        };
        let (line, hash) =
            custody::next_line(clip_id, last, &utc_text(at_ms), actor, action.name(), detail)
                .map_err(|e| ConsoleError::Signing(format!("custody entry: {e}")))?;
        let seq = last.map_or(0, |(seq, _)| seq + 1);
        self.exec(
            "INSERT INTO custody (clip_id, seq, line, hash) VALUES (?1, ?2, ?3, ?4)",
            args![clip_id, seq, line, hex::encode(hash)],
        )?;
        Ok(())
    }

    /// Clip `clip_id`'s custody log, oldest entry first.
    pub fn custody_log(&self, clip_id: &str) -> Result<CustodyLog, ConsoleError> {
        let rows: Vec<(String, String)> = self.rows(
            "SELECT line, hash FROM custody WHERE clip_id = ?1 ORDER BY seq",
            args![clip_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut log =
            CustodyLog { text: String::new(), entries: 0, head: custody::genesis(clip_id) };
        for (line, hash) in rows {
            log.text.push_str(&line);
            log.text.push('\n');
            log.entries += 1;
            log.head = hash_from_hex(clip_id, &hash)?;
        }
        Ok(log)
    }

    /// What an evidence package of clip `clip_id` takes from the store. Refuses a clip that
    /// does not exist or is not complete, naming why.
    pub fn clip_evidence(&self, clip_id: &str) -> Result<ClipEvidence, ConsoleError> {
        let row: Option<(String, String, bool)> = self.opt(
            "SELECT device_id, manifest_json, complete_ms IS NOT NULL FROM clips WHERE id = ?1",
            args![clip_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some((device_id, manifest_json, complete)) = row else {
            return Err(ConsoleError::NotFound {
                what: format!("no clip {clip_id}; 'clip list' shows them"),
            });
        };
        if !complete {
            let missing = self.missing_segments(&device_id, clip_id)?.len();
            return Err(ConsoleError::Conflict {
                what: format!(
                    "clip {clip_id} is not complete ({missing} segments not received yet, or its \
                     window still open): an evidence package holds a complete clip only; \
                     'clip wait --id {clip_id}' waits for it"
                ),
            });
        }
        let manifest = serde_json::from_str(&manifest_json)
            .map_err(|e| ConsoleError::corrupt(format!("clip {clip_id}"), e))?;
        let clip_record = self.clip_record(clip_id)?.ok_or_else(|| ConsoleError::Conflict {
            what: format!(
                "clip {clip_id} completed before the console signed clip records: there is no \
                 signed record of it to put in the package"
            ),
        })?;
        let parsed: ClipRecord = serde_json::from_slice(&clip_record.record)
            .map_err(|e| ConsoleError::corrupt(format!("clip record of {clip_id}"), e))?;
        let enrollment =
            self.enrollment_record(&device_id)?.ok_or_else(|| ConsoleError::Conflict {
                what: format!(
                    "device {device_id} enrolled before the console signed enrollment records: \
                     there is no signed record of its key to put in the package"
                ),
            })?;
        Ok(ClipEvidence {
            device_id,
            manifest_json,
            manifest,
            segments: parsed.segments,
            enrollment,
            clip_record,
            custody: self.custody_log(clip_id)?,
        })
    }
}

/// The clip's missing spans: the manifest's missing ranges, then one per device-signed
/// absence note (the span of the chain entry it names).
fn missing_spans(m: &ClipManifest) -> Vec<MissingSpan> {
    let mut out: Vec<MissingSpan> = m
        .missing
        .iter()
        .map(|r| MissingSpan {
            from_utc_micros: r.start_ms.millis().saturating_mul(1000),
            to_utc_micros: r.end_ms.millis().saturating_mul(1000),
            reason: r.reason.clone(),
        })
        .collect();
    let by_hash: std::collections::HashMap<String, &rearview_protocol::ChainEntry> =
        m.chain.iter().filter_map(|e| Some((hex::encode(e.hash().ok()?), e))).collect();
    for note in &m.absent {
        if let Some(e) = by_hash.get(&note.entry) {
            out.push(MissingSpan {
                from_utc_micros: e.from_utc_micros,
                to_utc_micros: e.to_utc_micros,
                reason: note.reason.clone(),
            });
        }
    }
    out
}
