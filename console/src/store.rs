//! The console's metadata in one SQLite file (`DATA/console.db`, WAL), and the blob directory.
//!
//! # Tables
//!
//! ```text
//! meta             key → value (tenant_id, policy_version, capture settings, indicator rules)
//! people           id, name (unique), name_key (canonical form, one person per key),
//!                  token_sha256, created_ms
//! role_grants      id, person_id, role, granted_by, granted_ms, state (pending|active),
//!                  confirmed_by, confirmed_ms; one row per person and role. A person's
//!                  effective roles are the active ones; an approver grant stays pending until
//!                  a second person confirms it (see api::roles)
//! enrollment_tokens token_sha256, created_by, created_ms, expires_ms, used_ms, device_id
//! devices          id, public_key, token_sha256, hostname, enrolled_ms, last_seen_ms,
//!                  policy_version (last reported), health_json, users_json
//! approvals        id, user, mode, justification, requested_by, requested_ms, expires_ms,
//!                  state (pending|approved|rejected|revoked), decided_by, decided_ms (who
//!                  approved or rejected, and when), revoked_by, revoked_ms,
//!                  approver_granted_by, approver_granted_ms, approver_confirmed_by,
//!                  approver_confirmed_ms (the decider's approver grant, copied at the decision),
//!                  excluded_reason, excluded_ms (set when the signer left the record out of
//!                  the bundle because it breaks a rule; never cleared)
//! alerts           id, user, reason, source (manual|rule:<kind>), created_by, created_ms
//! triggers         id, alert_id, device_id, user, event_time_ms, before_secs, after_secs,
//!                  reason, issued_ms, expires_ms, signed_json, acked_ms
//! activity         id, device_id, user, kind, time_ms, details_json, received_ms,
//!                  outcome (what the console did with it: stored|not_approved|rate_limited|
//!                  triggered|trigger_refused, NULL before consoles recorded it; the
//!                  per-device indicator rate limit counts `triggered` rows)
//! clips            id, device_id, trigger_id, alert_id, user, mode, start_ms, end_ms,
//!                  manifest_json, created_ms, complete_ms   (rowid: the listing's cursor)
//! clip_segments    clip_id, sha256, size              (which segments a clip names, and the
//!                                                      size it names, which bounds the upload;
//!                                                      NULL in rows of older consoles)
//! segments         device_id, sha256, size, stored_ms (which blobs are stored)
//! audit            id, time_ms, actor, action, target, details_json
//! ```
//!
//! Secrets are never stored: people and device tokens are kept as SHA-256 only.
//!
//! # Modes
//!
//! ```text
//! DATA/                          0700   (made so on every open)
//! DATA/console.db, -wal, -shm    0600   (SQLite gives WAL and SHM the database's mode)
//! DATA/blobs/ and below          0700 directories, 0600 blobs
//! ```
//!
//! whatever the umask of whoever runs the console (see [`crate::private`]).
//!
//! # Migrations
//!
//! [`Store::open`] brings an older database up to date in one transaction: columns added since
//! are added; the `roles` column of `people` ("admin,approver") becomes active `role_grants`
//! granted and confirmed by `legacy` at the person's creation time (each audited as
//! `role.migrate`) and is dropped; `name_key` is filled; decided approvals get their approver's
//! grant copied; the policy version is raised, so the next bundle is signed under the rules of
//! `api::approvals`. Opening an up-to-date database changes nothing.
//!
//! # Blobs
//!
//! ```text
//! DATA/blobs/<device_id>/<sha256[0..2]>/<sha256>     sealed segment bytes, exactly as uploaded
//! DATA/blobs/.incoming/<random>.part                 an upload in flight
//! ```
//!
//! An upload is streamed into a file in `.incoming/` while it is hashed (never held in
//! memory), fsynced, and renamed to its place only when its bytes hash to its name; only then
//! is it recorded in `segments`. A crash leaves either nothing or a complete blob (a complete
//! blob without a row is simply written again by the next upload of the same hash), plus at
//! most some `.part` files, which `serve` removes when it starts.
//! Segments are stored per device so one device can never learn, by the console answering
//! "already have it", what another device uploaded.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::ConsoleError;
use crate::private;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, name_key TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS role_grants (
    id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people (id), role TEXT NOT NULL,
    granted_by TEXT NOT NULL, granted_ms INTEGER NOT NULL, state TEXT NOT NULL,
    confirmed_by TEXT, confirmed_ms INTEGER, UNIQUE (person_id, role));
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_sha256 TEXT PRIMARY KEY, created_by TEXT NOT NULL, created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, used_ms INTEGER, device_id TEXT);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, public_key TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE,
    hostname TEXT NOT NULL, enrolled_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
    policy_version INTEGER NOT NULL DEFAULT 0, health_json TEXT NOT NULL DEFAULT '{}',
    users_json TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, justification TEXT NOT NULL,
    requested_by TEXT NOT NULL, requested_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    state TEXT NOT NULL, decided_by TEXT, decided_ms INTEGER, revoked_by TEXT, revoked_ms INTEGER,
    approver_granted_by TEXT, approver_granted_ms INTEGER, approver_confirmed_by TEXT,
    approver_confirmed_ms INTEGER, excluded_reason TEXT, excluded_ms INTEGER);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, user TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL,
    created_by TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS triggers (
    id TEXT PRIMARY KEY, alert_id INTEGER NOT NULL, device_id TEXT NOT NULL, user TEXT NOT NULL,
    event_time_ms INTEGER NOT NULL, before_secs INTEGER NOT NULL, after_secs INTEGER NOT NULL,
    reason TEXT NOT NULL, issued_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    signed_json TEXT NOT NULL, acked_ms INTEGER);
CREATE INDEX IF NOT EXISTS triggers_device ON triggers (device_id, acked_ms);
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL,
    time_ms INTEGER NOT NULL, details_json TEXT NOT NULL, received_ms INTEGER NOT NULL,
    outcome TEXT);
CREATE INDEX IF NOT EXISTS activity_device_time ON activity (device_id, received_ms);
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY, device_id TEXT NOT NULL, trigger_id TEXT, alert_id INTEGER,
    user TEXT NOT NULL, mode TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    manifest_json TEXT NOT NULL, created_ms INTEGER NOT NULL, complete_ms INTEGER);
CREATE INDEX IF NOT EXISTS clips_alert ON clips (alert_id);
CREATE INDEX IF NOT EXISTS clips_trigger ON clips (trigger_id);
CREATE TABLE IF NOT EXISTS clip_segments (
    clip_id TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER, PRIMARY KEY (clip_id, sha256));
CREATE INDEX IF NOT EXISTS clip_segments_hash ON clip_segments (sha256);
CREATE TABLE IF NOT EXISTS segments (
    device_id TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    stored_ms INTEGER NOT NULL, PRIMARY KEY (device_id, sha256));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, details_json TEXT NOT NULL);
"#;

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, ConsoleError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        params![table, column],
        |r| r.get(0),
    )?)
}

/// Brings a database made by an older console up to [`SCHEMA`] (see "Migrations").
fn migrate(conn: &mut Connection) -> Result<(), ConsoleError> {
    let tx = conn.transaction()?;
    for (column, kind) in [
        ("revoked_by", "TEXT"),
        ("revoked_ms", "INTEGER"),
        ("approver_granted_by", "TEXT"),
        ("approver_granted_ms", "INTEGER"),
        ("approver_confirmed_by", "TEXT"),
        ("approver_confirmed_ms", "INTEGER"),
        ("excluded_reason", "TEXT"),
        ("excluded_ms", "INTEGER"),
    ] {
        if !has_column(&tx, "approvals", column)? {
            tx.execute_batch(&format!("ALTER TABLE approvals ADD COLUMN {column} {kind};"))?;
        }
    }
    if !has_column(&tx, "people", "name_key")? {
        tx.execute_batch("ALTER TABLE people ADD COLUMN name_key TEXT NOT NULL DEFAULT '';")?;
        let names: Vec<(i64, String)> = tx
            .prepare("SELECT id, name FROM people")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, name) in names {
            tx.execute(
                "UPDATE people SET name_key = ?1 WHERE id = ?2",
                params![rearview_config::canonical_name(&name), id],
            )?;
        }
    }
    if has_column(&tx, "people", "roles")? {
        let people: Vec<(i64, String, String, i64)> = tx
            .prepare("SELECT id, name, roles, created_ms FROM people ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        for (id, name, roles, created_ms) in people {
            let mut migrated = Vec::new();
            for role in roles.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                // A role this console does not know grants nothing; the audit line keeps it.
                if crate::auth::Role::parse(role).is_none() {
                    continue;
                }
                tx.execute(
                    "INSERT INTO role_grants (person_id, role, granted_by, granted_ms, state,
                                              confirmed_by, confirmed_ms)
                     VALUES (?1, ?2, ?3, ?4, 'active', ?3, ?4) ON CONFLICT DO NOTHING",
                    params![id, role, LEGACY, created_ms],
                )?;
                migrated.push(role);
            }
            audit_in(
                &tx,
                "console",
                "role.migrate",
                &name,
                serde_json::json!({ "roles_column": roles, "granted": migrated, "granted_by": LEGACY }),
            )?;
        }
        tx.execute_batch("ALTER TABLE people DROP COLUMN roles;")?;
        // Decisions taken before grants were recorded: the decider's (now legacy) grant.
        tx.execute_batch(
            "UPDATE approvals SET
                 (approver_granted_by, approver_granted_ms, approver_confirmed_by, approver_confirmed_ms) =
                 (SELECT g.granted_by, g.granted_ms, g.confirmed_by, g.confirmed_ms
                  FROM role_grants g JOIN people p ON p.id = g.person_id
                  WHERE p.name = approvals.decided_by AND g.role = 'approver' AND g.state = 'active')
             WHERE decided_by IS NOT NULL AND approver_granted_by IS NULL;",
        )?;
        // The stored bundle was signed under the old rules: the next one is signed under the
        // new ones (records that break them left out), and devices take it as a newer version.
        tx.execute_batch(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'policy_version';",
        )?;
    }
    for (table, column, kind) in
        [("activity", "outcome", "TEXT"), ("clip_segments", "size", "INTEGER")]
    {
        if !has_column(&tx, table, column)? {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
        }
    }
    // Not unique: an older console may hold two people whose names differ only in case; the
    // console refuses new ones (api::people) and treats such pairs as one person everywhere.
    tx.execute_batch("CREATE INDEX IF NOT EXISTS people_name_key ON people (name_key);")?;
    tx.commit()?;
    Ok(())
}

/// The granter and confirmer named by grants carried over from a console before grants.
pub const LEGACY: &str = "legacy";

/// The metadata database. One connection behind a mutex: every statement is short, and one
/// writer is what SQLite wants anyway.
pub struct Store {
    conn: Mutex<Connection>,
    blob_dir: PathBuf,
    /// The last time handed out by [`Store::event_ms`].
    last_event_ms: Mutex<i64>,
}

impl Store {
    /// Opens (creating if needed) the database and blob directory under `data`, all of them
    /// private to the console's user (see [`crate::private`]), also when an older version
    /// left them readable.
    pub fn open(data: &Path) -> Result<Store, ConsoleError> {
        let io = ConsoleError::io;
        private::create_dir(data).map_err(|e| io(data, e))?;
        let db = data.join("console.db");
        // SQLite gives a new database its default mode (0644 less the umask), and the WAL and
        // shared-memory files the database's mode: so the database is made 0600 first.
        private::ensure_file(&db).map_err(|e| io(&db, e))?;
        for side in ["console.db-wal", "console.db-shm"] {
            let path = data.join(side);
            private::tighten_file(&path).map_err(|e| io(&path, e))?;
        }
        let mut conn = Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&mut conn)?;
        let last_event_ms: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(granted_ms) FROM role_grants), 0),
                        COALESCE((SELECT MAX(confirmed_ms) FROM role_grants), 0),
                        COALESCE((SELECT MAX(requested_ms) FROM approvals), 0))",
            [],
            |r| r.get(0),
        )?;
        let blob_dir = data.join("blobs");
        private::create_dir(&blob_dir).map_err(|e| io(&blob_dir, e))?;
        Ok(Store { conn: Mutex::new(conn), blob_dir, last_event_ms: Mutex::new(last_event_ms) })
    }

    /// The time of an event whose order against others of its kind decides something: role
    /// grants and their confirmations, approval requests. Wall-clock milliseconds, but always
    /// above the last one handed out (here or, before this process, in the database), so "the
    /// approver held the role before the request was filed" never hinges on two events sharing
    /// a millisecond.
    pub fn event_ms(&self) -> i64 {
        let mut last = self.last_event_ms.lock().unwrap_or_else(|p| p.into_inner());
        *last = now_ms().max(last.saturating_add(1));
        *last
    }

    /// The connection, for the queries of the modules that own each table.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (statements are
        // atomic), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, ConsoleError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), ConsoleError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Raises the policy version by one and returns the new value.
    pub fn bump_policy_version(&self) -> Result<u64, ConsoleError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('policy_version', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            [],
        )?;
        let v: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'policy_version'", [], |r| {
                r.get(0)
            })?;
        v.parse()
            .map_err(|_| ConsoleError::corrupt("policy_version", format!("{v:?} is not a number")))
    }

    pub fn policy_version(&self) -> Result<u64, ConsoleError> {
        match self.meta_get("policy_version")? {
            Some(v) => v.parse().map_err(|_| {
                ConsoleError::corrupt("policy_version", format!("{v:?} is not a number"))
            }),
            None => Ok(0),
        }
    }

    /// Appends one line to the audit log.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), ConsoleError> {
        audit_in(&self.conn(), actor, action, target, details)
    }

    pub fn blob_path(&self, device_id: &str, sha256: &str) -> PathBuf {
        self.blob_dir.join(device_id).join(&sha256[..2]).join(sha256)
    }

    /// Where uploads in flight are written (same file system as the blobs, so a rename
    /// publishes one atomically).
    pub fn incoming_dir(&self) -> PathBuf {
        self.blob_dir.join(".incoming")
    }
}

/// Appends one line to the audit log on `conn`, so it can be part of the transaction that
/// does what it records (an alert and its triggers are audited, or none of them exist).
pub fn audit_in(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ConsoleError> {
    conn.execute(
        "INSERT INTO audit (time_ms, actor, action, target, details_json) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), actor, action, target, details.to_string()],
    )?;
    Ok(())
}

/// Wall-clock time, Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// True for a 64-character lowercase hex string (a SHA-256 name); guards paths built from it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
