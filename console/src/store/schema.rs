//! The schema of `console.db` (see [`super`] for what each table holds) and the migration of a
//! database an older console made.

use rusqlite::{params, Connection};

use super::{audit_in, LEGACY};
use crate::error::ConsoleError;

pub(super) const SCHEMA: &str = r#"
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
CREATE TABLE IF NOT EXISTS enrollment_records (
    device_id TEXT PRIMARY KEY, record BLOB NOT NULL, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS clip_records (
    clip_id TEXT PRIMARY KEY, record BLOB NOT NULL, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS custody (
    clip_id TEXT NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (clip_id, seq));
CREATE TRIGGER IF NOT EXISTS custody_no_update BEFORE UPDATE ON custody
    BEGIN SELECT RAISE(ABORT, 'the custody log is append-only: a line is never changed'); END;
CREATE TRIGGER IF NOT EXISTS custody_no_delete BEFORE DELETE ON custody
    BEGIN SELECT RAISE(ABORT, 'the custody log is append-only: a line is never removed'); END;
CREATE TRIGGER IF NOT EXISTS enrollment_records_no_update BEFORE UPDATE ON enrollment_records
    BEGIN SELECT RAISE(ABORT, 'a signed enrollment record is never changed'); END;
CREATE TRIGGER IF NOT EXISTS clip_records_no_update BEFORE UPDATE ON clip_records
    BEGIN SELECT RAISE(ABORT, 'a signed clip record is never changed'); END;
CREATE TABLE IF NOT EXISTS chain_entries (
    device_id TEXT NOT NULL, chain TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
    prev TEXT NOT NULL, clip_id TEXT NOT NULL, accepted_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, chain, seq));
"#;

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, ConsoleError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        params![table, column],
        |r| r.get(0),
    )?)
}

/// Brings a database made by an older console up to [`SCHEMA`] (see "Migrations").
pub(super) fn migrate(conn: &mut Connection) -> Result<(), ConsoleError> {
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
