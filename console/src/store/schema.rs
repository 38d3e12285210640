//! The schema (see [`super`] for what each table holds) and its versioned migrations, one list
//! per backend.
//!
//! # Versions
//!
//! ```text
//! schema_migrations   version, name, applied_ms     one row per migration applied
//!
//! 1  base      SQLite only: the tables as consoles before versioned migrations made them,
//!              and the carry-over of older databases still (columns added since, `roles`
//!              into grants; see "Migrations" in the store docs). Idempotent: it is how a
//!              database from before this table is brought to version 1.
//! 2  portable  SQLite: the `user` columns renamed `user_name` (a reserved word in
//!              PostgreSQL), `segments.segment_id` (the id the sealed header carries, read at
//!              ingest), `leases`. PostgreSQL: the whole schema as of this version, created
//!              in one go (no PostgreSQL database predates it).
//! 3  web       both: `passwords` (argon2id hashes, failed attempts, lockout), `web_sessions`
//!              (signed-in browsers, by the SHA-256 of their cookie, with their CSRF token),
//!              `clip_views` (a player opened: what its frame fetches are bound to),
//!              `oidc_logins` (sign-ins waiting at the OpenID provider). Written once, in
//!              words both engines take ([`WEB_V3`]).
//! 4  retention both: `legal_holds`, `deleted_clips`, `blob_deletions` (see
//!              `store::retention`), and an index of clips by the end of their window, which
//!              the daily retention job reads ([`RETENTION_V4`]).
//! ```
//!
//! A version means the same tables on both backends; a later migration is written once for
//! each. [`SCHEMA_VERSION`] is the newest this console knows. Opening a database runs the
//! migrations it lacks, in order, in one transaction (on PostgreSQL under an advisory lock, so
//! replicas starting together migrate once); a database at a newer version than this console
//! knows is refused, untouched, with a message naming both versions.

use rusqlite::{params, Connection};

use super::{audit_in, now_ms, LEGACY};
use crate::error::ConsoleError;

/// The newest schema version this console knows.
pub const SCHEMA_VERSION: i64 = 4;

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)";

/// The advisory lock migrations run under on PostgreSQL.
const PG_MIGRATE_LOCK: i64 = 0x7265_6172_6d69_6772;

fn newer(found: i64) -> ConsoleError {
    ConsoleError::Config(format!(
        "the database is at schema version {found}, newer than this console knows \
         ({SCHEMA_VERSION}): run the newer console (or restore a backup taken before it \
         migrated); nothing was changed"
    ))
}

/// One SQLite migration, run in the migrating transaction.
type SqliteStep<'a> = dyn Fn(&Connection) -> Result<(), ConsoleError> + 'a;

/// Brings the SQLite database on `conn` to [`SCHEMA_VERSION`] (see "Versions").
pub(super) fn migrate_sqlite(
    conn: &mut Connection,
    data: &std::path::Path,
) -> Result<(), ConsoleError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(MIGRATIONS_TABLE)?;
    let at: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    if at > SCHEMA_VERSION {
        return Err(newer(at));
    }
    let steps: [(i64, &str, &SqliteStep<'_>); 4] = [
        (1, "base", &|c| {
            c.execute_batch(SCHEMA)?;
            migrate_legacy(c)
        }),
        (2, "portable", &|c| sqlite_v2(c, data)),
        (3, "web", &|c| Ok(c.execute_batch(WEB_V3)?)),
        (4, "retention", &|c| Ok(c.execute_batch(RETENTION_V4)?)),
    ];
    for (version, name, step) in steps {
        if version > at {
            step(&tx)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                params![version, name, now_ms()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Version 2 on SQLite (see "Versions"): the ids of segments already stored are read from
/// their sealed headers in the blob directory, so clips completing after the upgrade name them.
fn sqlite_v2(c: &Connection, data: &std::path::Path) -> Result<(), ConsoleError> {
    for table in ["approvals", "alerts", "triggers", "activity", "clips"] {
        c.execute_batch(&format!("ALTER TABLE {table} RENAME COLUMN user TO user_name;"))?;
    }
    c.execute_batch(
        "ALTER TABLE segments ADD COLUMN segment_id TEXT;
         CREATE INDEX IF NOT EXISTS triggers_issued ON triggers (issued_ms);
         CREATE TABLE IF NOT EXISTS leases (
             name TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms INTEGER NOT NULL);",
    )?;
    let stored: Vec<(String, String)> = c
        .prepare("SELECT device_id, sha256 FROM segments")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (device, sha) in stored {
        if !super::is_sha256_hex(&sha) {
            continue;
        }
        let path = data.join("blobs").join(&device).join(&sha[..2]).join(&sha);
        if let Some(id) = super::sealed_segment_id(&path) {
            c.execute(
                "UPDATE segments SET segment_id = ?1 WHERE device_id = ?2 AND sha256 = ?3",
                params![id, device, sha],
            )?;
        }
    }
    Ok(())
}

/// Brings the PostgreSQL database on `client` to [`SCHEMA_VERSION`] (see "Versions").
pub(super) fn migrate_postgres(client: &mut postgres::Client) -> Result<(), ConsoleError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATE_LOCK])?;
    tx.batch_execute(MIGRATIONS_TABLE)?;
    let at: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?.get(0);
    if at > SCHEMA_VERSION {
        return Err(newer(at));
    }
    let steps: [(i64, &str, &str); 3] =
        [(2, "portable", PG_V2), (3, "web", WEB_V3), (4, "retention", RETENTION_V4)];
    for (version, name, sql) in steps {
        if version > at {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                &[&version, &name, &now_ms()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The whole schema at version 2, in PostgreSQL's words. Every integer is BIGINT (the console's
/// integers are i64); `rowid` of `devices` and `clips` is generated, as SQLite's own is, for
/// the listings' cursors.
const PG_V2: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE people (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    name_key TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE, created_ms BIGINT NOT NULL);
CREATE INDEX people_by_name_key ON people (name_key);
CREATE TABLE role_grants (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    person_id BIGINT NOT NULL REFERENCES people (id), role TEXT NOT NULL,
    granted_by TEXT NOT NULL, granted_ms BIGINT NOT NULL, state TEXT NOT NULL,
    confirmed_by TEXT, confirmed_ms BIGINT, UNIQUE (person_id, role));
CREATE TABLE enrollment_tokens (
    token_sha256 TEXT PRIMARY KEY, created_by TEXT NOT NULL, created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, used_ms BIGINT, device_id TEXT);
CREATE TABLE devices (
    id TEXT PRIMARY KEY, rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    public_key TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE,
    hostname TEXT NOT NULL, enrolled_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
    policy_version BIGINT NOT NULL DEFAULT 0, health_json TEXT NOT NULL DEFAULT '{}',
    users_json TEXT NOT NULL DEFAULT '[]');
CREATE TABLE approvals (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_name TEXT NOT NULL,
    mode TEXT NOT NULL, justification TEXT NOT NULL,
    requested_by TEXT NOT NULL, requested_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL,
    state TEXT NOT NULL, decided_by TEXT, decided_ms BIGINT, revoked_by TEXT, revoked_ms BIGINT,
    approver_granted_by TEXT, approver_granted_ms BIGINT, approver_confirmed_by TEXT,
    approver_confirmed_ms BIGINT, excluded_reason TEXT, excluded_ms BIGINT);
CREATE TABLE alerts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_name TEXT NOT NULL,
    reason TEXT NOT NULL, source TEXT NOT NULL, created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL);
CREATE TABLE triggers (
    id TEXT PRIMARY KEY, alert_id BIGINT NOT NULL, device_id TEXT NOT NULL,
    user_name TEXT NOT NULL, event_time_ms BIGINT NOT NULL, before_secs BIGINT NOT NULL,
    after_secs BIGINT NOT NULL, reason TEXT NOT NULL, issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, signed_json TEXT NOT NULL, acked_ms BIGINT);
CREATE INDEX triggers_device ON triggers (device_id, acked_ms);
CREATE INDEX triggers_issued ON triggers (issued_ms);
CREATE TABLE activity (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, device_id TEXT NOT NULL,
    user_name TEXT NOT NULL, kind TEXT NOT NULL, time_ms BIGINT NOT NULL,
    details_json TEXT NOT NULL, received_ms BIGINT NOT NULL, outcome TEXT);
CREATE INDEX activity_device_time ON activity (device_id, received_ms);
CREATE TABLE clips (
    id TEXT PRIMARY KEY, rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    device_id TEXT NOT NULL, trigger_id TEXT, alert_id BIGINT,
    user_name TEXT NOT NULL, mode TEXT NOT NULL, start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL, manifest_json TEXT NOT NULL, created_ms BIGINT NOT NULL,
    complete_ms BIGINT);
CREATE INDEX clips_alert ON clips (alert_id);
CREATE INDEX clips_trigger ON clips (trigger_id);
CREATE TABLE clip_segments (
    clip_id TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT, PRIMARY KEY (clip_id, sha256));
CREATE INDEX clip_segments_hash ON clip_segments (sha256);
CREATE TABLE segments (
    device_id TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
    stored_ms BIGINT NOT NULL, segment_id TEXT, PRIMARY KEY (device_id, sha256));
CREATE TABLE audit (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, time_ms BIGINT NOT NULL,
    actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    details_json TEXT NOT NULL);
CREATE TABLE enrollment_records (
    device_id TEXT PRIMARY KEY, record BYTEA NOT NULL, signature BYTEA NOT NULL);
CREATE TABLE clip_records (
    clip_id TEXT PRIMARY KEY, record BYTEA NOT NULL, signature BYTEA NOT NULL);
CREATE TABLE custody (
    clip_id TEXT NOT NULL, seq BIGINT NOT NULL, line TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (clip_id, seq));
CREATE TABLE chain_entries (
    device_id TEXT NOT NULL, chain TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL,
    prev TEXT NOT NULL, clip_id TEXT NOT NULL, accepted_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, chain, seq));
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms BIGINT NOT NULL);
CREATE FUNCTION rearview_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
CREATE TRIGGER custody_no_update BEFORE UPDATE ON custody FOR EACH ROW
    EXECUTE FUNCTION rearview_refuse('the custody log is append-only: a line is never changed');
CREATE TRIGGER custody_no_delete BEFORE DELETE ON custody FOR EACH ROW
    EXECUTE FUNCTION rearview_refuse('the custody log is append-only: a line is never removed');
CREATE TRIGGER custody_no_truncate BEFORE TRUNCATE ON custody FOR EACH STATEMENT
    EXECUTE FUNCTION rearview_refuse('the custody log is append-only: a line is never removed');
CREATE TRIGGER enrollment_records_no_update BEFORE UPDATE ON enrollment_records FOR EACH ROW
    EXECUTE FUNCTION rearview_refuse('a signed enrollment record is never changed');
CREATE TRIGGER clip_records_no_update BEFORE UPDATE ON clip_records FOR EACH ROW
    EXECUTE FUNCTION rearview_refuse('a signed clip record is never changed');
"#;

/// Version 3 on both backends (see "Versions"; what each table holds: `store::web`).
const WEB_V3: &str = r#"
CREATE TABLE passwords (
    person_id BIGINT PRIMARY KEY REFERENCES people (id), hash TEXT NOT NULL,
    set_ms BIGINT NOT NULL, failures BIGINT NOT NULL DEFAULT 0,
    locked_until_ms BIGINT NOT NULL DEFAULT 0);
CREATE TABLE web_sessions (
    id_sha256 TEXT PRIMARY KEY, person_id BIGINT NOT NULL REFERENCES people (id),
    csrf TEXT NOT NULL, via TEXT NOT NULL, created_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE INDEX web_sessions_person ON web_sessions (person_id);
CREATE TABLE clip_views (
    id TEXT PRIMARY KEY, session_sha256 TEXT NOT NULL, person_id BIGINT NOT NULL,
    clip_id TEXT NOT NULL, opened_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE TABLE oidc_logins (
    state_sha256 TEXT PRIMARY KEY, verifier TEXT NOT NULL, nonce TEXT NOT NULL,
    next_path TEXT NOT NULL, created_ms BIGINT NOT NULL);
"#;

/// Version 4 on both backends (see "Versions"; what each table holds: `store::retention`).
const RETENTION_V4: &str = r#"
CREATE TABLE legal_holds (
    id TEXT PRIMARY KEY, scope TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL,
    placed_by TEXT NOT NULL, placed_ms BIGINT NOT NULL, released_by TEXT, released_ms BIGINT,
    release_reason TEXT);
CREATE INDEX legal_holds_target ON legal_holds (scope, target);
CREATE TABLE deleted_clips (
    clip_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, user_name TEXT NOT NULL,
    start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL, deleted_by TEXT NOT NULL,
    deleted_ms BIGINT NOT NULL, reason TEXT NOT NULL, segments BIGINT NOT NULL);
CREATE TABLE blob_deletions (
    device_id TEXT NOT NULL, sha256 TEXT NOT NULL, queued_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, sha256));
CREATE INDEX clips_end ON clips (end_ms);
"#;

/// Version 1 on SQLite (see "Versions").
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

/// Brings a database made by an older console up to [`SCHEMA`] (see "Migrations" in the
/// store docs), in the caller's transaction.
fn migrate_legacy(tx: &Connection) -> Result<(), ConsoleError> {
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
        if !has_column(tx, "approvals", column)? {
            tx.execute_batch(&format!("ALTER TABLE approvals ADD COLUMN {column} {kind};"))?;
        }
    }
    if !has_column(tx, "people", "name_key")? {
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
    if has_column(tx, "people", "roles")? {
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
                tx,
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
        if !has_column(tx, table, column)? {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
        }
    }
    // Not unique: an older console may hold two people whose names differ only in case; the
    // console refuses new ones (api::people) and treats such pairs as one person everywhere.
    tx.execute_batch("CREATE INDEX IF NOT EXISTS people_name_key ON people (name_key);")?;
    Ok(())
}
