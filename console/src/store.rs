//! The console's metadata in one SQLite file (`DATA/console.db`, WAL), and its blob store
//! ([`crate::blobs`]: sealed segments in a directory or a bucket).
//!
//! All SQL of the console lives here, one module per subject ([`meta`], [`audit`], [`people`],
//! [`approvals`], [`devices`], [`triggers`], [`clips`], [`evidence`], [`web`], [`retention`]; `schema` holds the tables and the
//! migrations). Nothing else sees a connection: callers pass a closure to [`Store::read`] or
//! [`Store::write`], which runs it on the blocking pool with a [`Tx`] — one transaction — and
//! the closure calls the methods `Tx` has per operation.
//!
//! # Connections
//!
//! ```text
//! writer    one connection behind a mutex; every write is one BEGIN IMMEDIATE transaction,
//!           committed when the closure returns Ok, rolled back when it returns Err (so a
//!           change and its audit line are written together or not at all)
//! readers   up to READERS connections (PRAGMA query_only), each read one deferred
//!           transaction: one consistent snapshot, and never waiting for the writer (WAL)
//! ```
//!
//! Closures run on tokio's blocking pool (`spawn_blocking`), never on an async task;
//! [`Store::write_now`]/[`Store::read_now`] run them on the calling thread, for the commands that
//! are not a server (`init`, `clip export`, `clip list`).
//!
//! # Two backends
//!
//! ```text
//! sqlite      DATA/console.db (default): the writer and readers above
//! postgres    a postgres://… database: a pool of up to PG_CONNECTIONS connections, shared by
//!             reads and writes; every write transaction first takes one advisory lock
//!             (pg_advisory_xact_lock), so writes are one at a time across every replica as
//!             they are on one SQLite file, and what a write reads stays true until it commits;
//!             every read is one REPEATABLE READ, READ ONLY snapshot
//! ```
//!
//! What callers see is the same on both: `read`/`write` with a closure and the methods of
//! [`Tx`]. Each method is written once, in the SQL both engines speak ([`sql`] gives the rules
//! and the typed arguments and columns). Which backend a data directory uses is recorded in
//! `DATA/backends.json` by `init` (with the blob location), so `serve`, `migrate` and `clip`
//! commands open the same; `serve --database/--blobs` override it. On PostgreSQL a statement
//! waits at most 30 s, a lock 10 s, a pooled connection 5 s, and a connection 5 s to be made:
//! past those the database is "unavailable" (503, retried by devices), never a hung request. A
//! connection that broke is dropped from the pool and a new one made, so a database that comes
//! back is used again without restarting the console.
//!
//! The PostgreSQL driver is synchronous (its client runs a small runtime of its own): store
//! calls run on the blocking pool anyway, and the `*_now` forms move to a thread of their own
//! when called inside an async runtime.
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
//! approvals        id, user_name, mode, justification, requested_by, requested_ms, expires_ms,
//!                  state (pending|approved|rejected|revoked), decided_by, decided_ms (who
//!                  approved or rejected, and when), revoked_by, revoked_ms,
//!                  approver_granted_by, approver_granted_ms, approver_confirmed_by,
//!                  approver_confirmed_ms (the decider's approver grant, copied at the decision),
//!                  excluded_reason, excluded_ms (set when the signer left the record out of
//!                  the bundle because it breaks a rule; never cleared)
//! alerts           id, user_name, reason, source (manual|rule:<kind>), created_by, created_ms
//! triggers         id, alert_id, device_id, user_name, event_time_ms, before_secs, after_secs,
//!                  reason, issued_ms, expires_ms, signed_json, acked_ms
//! activity         id, device_id, user_name, kind, time_ms, details_json, received_ms,
//!                  outcome (what the console did with it: stored|not_approved|rate_limited|
//!                  triggered|trigger_refused, NULL before consoles recorded it; the
//!                  per-device indicator rate limit counts `triggered` rows)
//! clips            id, device_id, trigger_id, alert_id, user_name, mode, start_ms, end_ms,
//!                  manifest_json, created_ms, complete_ms   (rowid: the listing's cursor)
//! clip_segments    clip_id, sha256, size              (which segments a clip names, and the
//!                                                      size it names, which bounds the upload;
//!                                                      NULL in rows of older consoles)
//! segments         device_id, sha256, size, stored_ms, segment_id (which blobs are stored;
//!                  the id their sealed header carries, read at ingest, NULL for bytes that
//!                  are no sealed segment)
//! leases           name, holder, until_ms        (who runs background work, see [`lease`])
//! schema_migrations version, name, applied_ms    (see [`schema`])
//! audit            id, time_ms, actor, action, target, details_json
//! enrollment_records device_id, record, signature   (console-signed, as stored; see [`evidence`])
//! clip_records     clip_id, record, signature        (console-signed at completion)
//! custody          clip_id, seq, line, hash          (per clip, hash-chained, append-only)
//! chain_entries    device_id, chain, seq, hash, prev, clip_id, accepted_ms (the device-signed
//!                  chain entries ingest accepted; see [`chain`])
//! passwords        person_id, hash (argon2id PHC string), set_ms, failures, locked_until_ms
//! web_sessions     id_sha256, person_id, csrf, via (password|oidc), created_ms, last_ms,
//!                  expires_ms                        (signed-in browsers; see [`web`])
//! clip_views       id, session_sha256, person_id, clip_id, opened_ms, expires_ms
//! oidc_logins      state_sha256, verifier, nonce, next_path, created_ms
//! legal_holds      id, scope (clip|user), target, reason, placed_by, placed_ms, released_by,
//!                  released_ms, release_reason    (see [`retention`])
//! deleted_clips    clip_id, device_id, user_name, start_ms, end_ms, deleted_by, deleted_ms,
//!                  reason, segments               (what was deleted, and why)
//! blob_deletions   device_id, sha256, queued_ms   (blobs waiting to be removed)
//! ```
//!
//! Secrets are never stored: people and device tokens are kept as SHA-256 only.
//!
//! # Modes
//!
//! ```text
//! DATA/                          0700   (made so on every open)
//! DATA/console.db, -wal, -shm    0600   (SQLite gives WAL and SHM the database's mode)
//! DATA/blobs/ and below          0700 directories, 0600 blobs (see crate::blobs)
//! ```
//!
//! whatever the umask of whoever runs the console (see [`crate::private`]).
//!
//! # Migrations
//!
//! Versioned, one list per backend ([`schema`] documents each version); [`Store::open`] runs
//! what a database lacks and refuses one newer than this console knows (`rearview-console
//! migrate` does the same and prints the version). Version 1 on SQLite is the carry-over of
//! databases from before versions, in one transaction: columns added since are added; the `roles` column of `people` ("admin,approver") becomes active `role_grants`
//! granted and confirmed by `legacy` at the person's creation time (each audited as
//! `role.migrate`) and is dropped; `name_key` is filled; decided approvals get their approver's
//! grant copied; the policy version is raised, so the next bundle is signed under the rules of
//! `api::approvals`. Opening an up-to-date database changes nothing.
//!
//! # Blobs
//!
//! Their layout, publishing and failures are [`crate::blobs`]'s: the store holds the
//! [`Blobs`] it was opened with ([`Store::blobs`]); a segment is recorded in `segments` only
//! once its blob is published.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::blobs::{BlobLocation, Blobs};
use crate::error::{ConsoleError, DbError};
use crate::private;

pub mod approvals;
pub mod audit;
pub mod chain;
pub mod clips;
pub mod devices;
pub mod evidence;
pub mod lease;
pub mod meta;
pub mod people;
pub mod retention;
mod schema;
pub(crate) mod sql;
pub mod triggers;
pub mod web;

use audit::audit_in;
use sql::{args, Row, Value};

pub use schema::SCHEMA_VERSION;

/// The granter and confirmer named by grants carried over from a console before grants.
pub const LEGACY: &str = "legacy";

/// Most SQLite read connections open at once (reads beyond wait for one).
const READERS: usize = 4;

/// Most PostgreSQL connections one console process holds (reads and writes share them).
const PG_CONNECTIONS: usize = 16;

/// How long a statement waits for a lock another process holds, or for a pooled connection,
/// before the database is "unavailable" (a retryable 503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to PostgreSQL may take before the database is unavailable.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock every PostgreSQL write transaction takes (see "Two backends").
const PG_WRITE_LOCK: i64 = 0x7265_6172_7669_6577; // "rearview"

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `DATA/console.db` (the default).
    Sqlite,
    /// A PostgreSQL database, as a `postgres://user@host:port/name` URL (a password may be in
    /// it or in `PGPASSWORD`).
    Postgres(String),
}

/// What `DATA/backends.json` records (written by `init` when a backend is not the default, read
/// by every command that opens the store, overridden by `serve --database`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct BackendsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blobs: Option<String>,
}

fn read_backends(data: &Path) -> Result<BackendsFile, ConsoleError> {
    let path = data.join("backends.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ConsoleError::corrupt(path.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BackendsFile::default()),
        Err(e) => Err(ConsoleError::io(&path, e)),
    }
}

/// Records where the metadata and the blobs of `data` are (`DATA/backends.json`, 0600: a URL
/// may hold a password), so that every later command on `data` opens them; nothing is written
/// when both are the defaults.
pub fn record_backends(
    data: &Path,
    database: &Database,
    blobs: &BlobLocation,
) -> Result<(), ConsoleError> {
    let file = BackendsFile {
        database: match database {
            Database::Sqlite => None,
            Database::Postgres(url) => Some(url.clone()),
        },
        blobs: (*blobs != BlobLocation::Files(data.join("blobs"))).then(|| blobs.to_url()),
    };
    if file.database.is_none() && file.blobs.is_none() {
        return Ok(());
    }
    let path = data.join("backends.json");
    let bytes = serde_json::to_vec_pretty(&file)
        .map_err(|e| ConsoleError::Config(format!("backends.json: {e}")))?;
    private::write_file(&path, &bytes).map_err(|e| ConsoleError::io(&path, e))
}

/// Where `data` records its blobs (`DATA/backends.json`), else files in `DATA/blobs`.
pub fn recorded_blobs(data: &Path) -> Result<BlobLocation, ConsoleError> {
    match read_backends(data)?.blobs {
        Some(text) => BlobLocation::parse(&text, data),
        None => Ok(BlobLocation::Files(data.join("blobs"))),
    }
}

impl Database {
    /// `sqlite` or a `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str) -> Result<Database, ConsoleError> {
        let text = text.trim();
        if text == "sqlite" {
            return Ok(Database::Sqlite);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            pg_config(text)?;
            return Ok(Database::Postgres(text.to_owned()));
        }
        Err(ConsoleError::Config(
            "database: give `sqlite` (DATA/console.db) or a postgres://user@host:port/name URL \
             (what was given is not repeated: it may hold a password)"
                .into(),
        ))
    }

    /// The database `data` records (`DATA/backends.json`), else SQLite.
    pub fn recorded(data: &Path) -> Result<Database, ConsoleError> {
        read_backends(data)?.database.as_deref().map_or(Ok(Database::Sqlite), Database::parse)
    }

    /// The database as it may be shown (a password in the URL is replaced by `***`).
    pub fn shown(&self) -> String {
        match self {
            Database::Sqlite => "sqlite (DATA/console.db)".into(),
            Database::Postgres(url) => match url.parse::<postgres::Config>() {
                Ok(c) => shown_config(&c),
                Err(_) => "postgres (a URL that does not parse)".into(),
            },
        }
    }
}

/// A PostgreSQL connection's user, hosts, ports and database: never its password, wherever
/// the URL put it.
fn shown_config(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
    format!(
        "postgres://{}@{}:{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        ports.join(","),
        c.get_dbname().unwrap_or("")
    )
}

/// The connection settings of `url`: bounded connect, keepalives so a dead server is noticed,
/// the password from `PGPASSWORD` when the URL has none.
fn pg_config(url: &str) -> Result<postgres::Config, ConsoleError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| ConsoleError::Config(format!("database URL does not parse: {e}")))?;
    if config.get_password().is_none() {
        if let Some(password) = std::env::var_os("PGPASSWORD") {
            config.password(password.as_encoded_bytes());
        }
    }
    config
        .connect_timeout(PG_CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        // A server that stops answering (a partition, not a refusal) fails the call within
        // this, rather than after the kernel's minutes of retransmissions.
        .tcp_user_timeout(Duration::from_secs(30))
        .application_name("rearview-console");
    Ok(config)
}

/// The metadata database and the blob store. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data: PathBuf,
    db: Db,
    blobs: Blobs,
}

enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

struct SqlitePool {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Readers>,
    /// Signalled when a read connection is given back.
    reader_free: Condvar,
}

/// A reader taken from the pool; dropping it gives the connection back, also when the read
/// panicked (the transaction is rolled back as it unwinds), so the pool never runs dry.
struct ReaderLease<'a> {
    pool: &'a SqlitePool,
    conn: Option<Connection>,
}

impl Drop for ReaderLease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.pool.readers).idle.push(conn);
            self.pool.reader_free.notify_one();
        }
    }
}

/// The read connections: idle ones, and how many exist (at most [`READERS`]).
#[derive(Default)]
struct Readers {
    idle: Vec<Connection>,
    open: usize,
}

/// PostgreSQL connections, each with the statements prepared on it.
struct PgPool {
    config: postgres::Config,
    idle: Mutex<PgIdle>,
    free: Condvar,
    /// Held by this process's one write in progress: writes queue here, not on pooled
    /// connections waiting for the database's write lock, so reads always find a connection.
    writer: Mutex<()>,
}

#[derive(Default)]
struct PgIdle {
    conns: Vec<PgConn>,
    open: usize,
}

struct PgConn {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

/// A PostgreSQL connection taken from the pool; given back on drop unless it broke.
struct PgLease<'a> {
    pool: &'a PgPool,
    conn: Option<PgConn>,
}

impl Drop for PgLease<'_> {
    fn drop(&mut self) {
        let mut idle = lock(&self.pool.idle);
        match self.conn.take() {
            Some(conn) if !conn.client.is_closed() => idle.conns.push(conn),
            // A broken connection (or one lost in a panic) is forgotten; a new one is made.
            _ => idle.open -= 1,
        }
        self.pool.free.notify_one();
    }
}

impl Drop for PgPool {
    /// A PostgreSQL client closes its connection by blocking on a runtime of its own, which
    /// cannot run on a thread that drives async tasks (where the last store handle may well be
    /// dropped): the idle connections are closed on a thread of their own.
    fn drop(&mut self) {
        let conns = std::mem::take(&mut lock(&self.idle).conns);
        if !conns.is_empty() {
            let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(conns));
        }
    }
}

impl PgPool {
    fn connect(&self) -> Result<PgConn, ConsoleError> {
        let mut client = self.config.connect(postgres::NoTls)?;
        // A statement never waits for ever: not for a lock (the write lock included), not on a
        // server that stopped answering, not in a transaction a crashed caller left open.
        client.batch_execute(
            "SET statement_timeout = '30s'; SET lock_timeout = '10s';
             SET idle_in_transaction_session_timeout = '60s';",
        )?;
        Ok(PgConn { client, statements: HashMap::new() })
    }

    fn lease(&self) -> Result<PgLease<'_>, ConsoleError> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mut idle = lock(&self.idle);
        loop {
            if let Some(conn) = idle.conns.pop() {
                if conn.client.is_closed() {
                    idle.open -= 1;
                    continue;
                }
                return Ok(PgLease { pool: self, conn: Some(conn) });
            }
            if idle.open < PG_CONNECTIONS {
                idle.open += 1;
                drop(idle);
                return match self.connect() {
                    Ok(conn) => Ok(PgLease { pool: self, conn: Some(conn) }),
                    Err(e) => {
                        lock(&self.idle).open -= 1;
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ConsoleError::Unavailable(crate::error::DbError::message(format!(
                    "all {PG_CONNECTIONS} database connections are busy"
                ))));
            }
            idle = self.free.wait_timeout(idle, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// One transaction of the store, for the operations of its subject modules. Only this module
/// and its children reach the connection inside.
pub struct Tx<'c> {
    conn: TxConn<'c>,
    /// The data directory (keys are beside the database there).
    data: &'c Path,
    /// The first statement of this transaction the database failed, outside a savepoint that
    /// undid it (see [`Tx::noting`]): a write that holds one does not commit.
    failed: RefCell<Option<Failed>>,
}

/// A failed statement, kept to be told again at commit: how to make its error, and its text.
#[derive(Clone)]
struct Failed {
    error: fn(DbError) -> ConsoleError,
    text: String,
}

impl Failed {
    /// The error a write that holds this failure ends with.
    fn error(self) -> ConsoleError {
        (self.error)(DbError::message(format!(
            "{}; a statement of this write failed, so none of it was written",
            self.text
        )))
    }
}

enum TxConn<'c> {
    Sqlite(&'c Connection),
    Postgres(RefCell<PgTx<'c>>),
}

struct PgTx<'c> {
    tx: postgres::Transaction<'c>,
    statements: &'c mut HashMap<String, postgres::Statement>,
}

impl PgTx<'_> {
    /// `sql`'s statement prepared on this connection (once per connection).
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, ConsoleError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.tx.prepare(&sql::to_postgres(sql))?;
        self.statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }
}

/// Which engine holds the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A poisoned lock still guards a usable connection: SQLite statements are atomic, and an
/// open transaction is rolled back when its guard drops during the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn connect(db: &Path) -> Result<Connection, ConsoleError> {
    let conn = Connection::open(db)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

impl Store {
    /// Opens the store of the data directory `data` on the database and blobs it records
    /// (`DATA/backends.json`, else SQLite in `DATA/console.db` and files in `DATA/blobs`); see
    /// [`Store::open_with`].
    pub fn open(data: &Path) -> Result<Store, ConsoleError> {
        Store::open_with(data, &Database::recorded(data)?, &recorded_blobs(data)?)
    }

    /// As [`Store::open`], with the blobs at `blobs` instead of where `data` records them.
    pub fn open_with_blobs(data: &Path, blobs: &BlobLocation) -> Result<Store, ConsoleError> {
        Store::open_with(data, &Database::recorded(data)?, blobs)
    }

    /// Opens (creating if needed) the data directory `data`, the metadata in `database` and the
    /// blobs at `blobs` ([`Blobs::open`]: no network I/O), all local files private to the
    /// console's user (see [`crate::private`]), also when an older version left them readable;
    /// brings the schema up to date (see "Migrations"), and refuses a schema newer than this
    /// console knows.
    pub fn open_with(
        data: &Path,
        database: &Database,
        blobs: &BlobLocation,
    ) -> Result<Store, ConsoleError> {
        if matches!(database, Database::Postgres(_))
            && tokio::runtime::Handle::try_current().is_ok()
        {
            // PostgreSQL's driver cannot block a runtime's thread: connect on one of our own.
            return std::thread::scope(|s| {
                s.spawn(|| Store::open_here(data, database, blobs)).join()
            })
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        Store::open_here(data, database, blobs)
    }

    fn open_here(
        data: &Path,
        database: &Database,
        blobs: &BlobLocation,
    ) -> Result<Store, ConsoleError> {
        let io = ConsoleError::io;
        private::create_dir(data).map_err(|e| io(data, e))?;
        let db = match database {
            Database::Sqlite => Db::Sqlite(open_sqlite(data)?),
            Database::Postgres(url) => Db::Postgres(open_postgres(url)?),
        };
        let blobs = Blobs::open(blobs, data)?;
        Ok(Store { inner: Arc::new(Inner { data: data.to_path_buf(), db, blobs }) })
    }

    /// Which engine holds the metadata.
    pub fn backend(&self) -> Backend {
        match self.inner.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL connection settings, for the replica wake-up listener; None on SQLite.
    pub fn postgres_config(&self) -> Option<postgres::Config> {
        match &self.inner.db {
            Db::Postgres(pool) => Some(pool.config.clone()),
            Db::Sqlite(_) => None,
        }
    }

    /// Runs `f` in one write transaction on the blocking pool: committed when it returns Ok,
    /// rolled back when it returns Err.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<ConsoleError> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || store.write_here(f)).await
    }

    /// Runs `f` in one read transaction (a snapshot) on the blocking pool.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<ConsoleError> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || store.read_here(f)).await
    }

    /// [`Store::write`] without the blocking pool, for commands that are not the server (and
    /// tests): on the calling thread, or, on PostgreSQL when called inside an async runtime
    /// (whose thread the driver must not block on), on a scoped thread it waits for.
    pub fn write_now<T: Send, E: From<ConsoleError> + Send>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        if self.needs_own_thread() {
            return std::thread::scope(|s| s.spawn(|| self.write_here(f)).join())
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        self.write_here(f)
    }

    /// [`Store::read`] without the blocking pool (see [`Store::write_now`]).
    pub fn read_now<T: Send, E: From<ConsoleError> + Send>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        if self.needs_own_thread() {
            return std::thread::scope(|s| s.spawn(|| self.read_here(f)).join())
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        self.read_here(f)
    }

    /// Whether a transaction must leave this thread: PostgreSQL's driver runs a runtime of its
    /// own, which cannot start on a thread already inside one.
    fn needs_own_thread(&self) -> bool {
        matches!(self.inner.db, Db::Postgres(_)) && tokio::runtime::Handle::try_current().is_ok()
    }

    /// One write transaction on the calling thread.
    fn write_here<T, E: From<ConsoleError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let data = self.inner.data.as_path();
        match &self.inner.db {
            Db::Sqlite(pool) => {
                let mut conn = lock(&pool.writer);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(ConsoleError::from)?;
                let t = Tx::new(TxConn::Sqlite(&tx), data);
                let out = f(&t)?;
                if let Some(failed) = t.failed.take() {
                    return Err(failed.error().into());
                }
                drop(t);
                tx.commit().map_err(ConsoleError::from)?;
                Ok(out)
            }
            Db::Postgres(pool) => {
                let _one_writer = lock(&pool.writer);
                let mut lease = pool.lease()?;
                let Some(PgConn { client, statements }) = lease.conn.as_mut() else {
                    return Err(ConsoleError::corrupt(
                        "database pool",
                        "a lease without its connection",
                    )
                    .into());
                };
                let mut tx = client.transaction().map_err(ConsoleError::from)?;
                // One writer at a time across every replica, as SQLite has one per file: what a
                // write reads stays true until it commits.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_WRITE_LOCK])
                    .map_err(ConsoleError::from)?;
                let tx = Tx::new(TxConn::Postgres(RefCell::new(PgTx { tx, statements })), data);
                let out = f(&tx)?;
                // PostgreSQL ends a transaction at its first failed statement, and answers its
                // COMMIT with a rollback, not an error: the caller must hear of it.
                if let Some(failed) = tx.failed.take() {
                    return Err(failed.error().into());
                }
                let TxConn::Postgres(pg) = tx.conn else { unreachable!("built as Postgres above") };
                pg.into_inner().tx.commit().map_err(ConsoleError::from)?;
                Ok(out)
            }
        }
    }

    /// One read transaction on the calling thread.
    fn read_here<T, E: From<ConsoleError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let data = self.inner.data.as_path();
        match &self.inner.db {
            Db::Sqlite(pool) => {
                let mut lease = ReaderLease { pool, conn: Some(pool.reader()?) };
                let Some(conn) = lease.conn.as_mut() else {
                    return Err(ConsoleError::corrupt(
                        "reader pool",
                        "a lease without its connection",
                    )
                    .into());
                };
                let tx = conn.transaction().map_err(ConsoleError::from)?;
                let out = f(&Tx::new(TxConn::Sqlite(&tx), data));
                // A read changes nothing; ending it releases the snapshot.
                drop(tx);
                out
            }
            Db::Postgres(pool) => {
                let mut lease = pool.lease()?;
                let Some(PgConn { client, statements }) = lease.conn.as_mut() else {
                    return Err(ConsoleError::corrupt(
                        "database pool",
                        "a lease without its connection",
                    )
                    .into());
                };
                // One snapshot for the whole read, as SQLite's deferred transaction gives.
                let tx = client
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(ConsoleError::from)?;
                let tx = Tx::new(TxConn::Postgres(RefCell::new(PgTx { tx, statements })), data);
                f(&tx)
            }
        }
    }

    /// Whether the database answers now (for `/healthz`); the reason when it does not.
    pub async fn check(&self) -> Result<(), ConsoleError> {
        self.read(|tx| tx.one("SELECT 1", args![], |r| r.get::<i64>(0)).map(drop)).await
    }

    /// The schema version of the database (see [`schema`]).
    pub fn schema_version(&self) -> Result<i64, ConsoleError> {
        self.read_now(|tx| {
            tx.one("SELECT MAX(version) FROM schema_migrations", args![], |r| r.get(0))
        })
    }

    /// Where the sealed segments are.
    pub fn blobs(&self) -> &Blobs {
        &self.inner.blobs
    }
}

impl SqlitePool {
    /// An idle read connection, a new one while fewer than [`READERS`] exist, else the next
    /// one given back.
    fn reader(&self) -> Result<Connection, ConsoleError> {
        let mut readers = lock(&self.readers);
        loop {
            if let Some(conn) = readers.idle.pop() {
                return Ok(conn);
            }
            if readers.open < READERS {
                readers.open += 1;
                drop(readers);
                let made = connect(&self.path).and_then(|conn| {
                    conn.execute_batch("PRAGMA query_only=ON;")?;
                    Ok(conn)
                });
                if made.is_err() {
                    lock(&self.readers).open -= 1;
                }
                return made;
            }
            readers = self.reader_free.wait(readers).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// `DATA/console.db`, made private, migrated.
fn open_sqlite(data: &Path) -> Result<SqlitePool, ConsoleError> {
    let io = ConsoleError::io;
    let db = data.join("console.db");
    // SQLite gives a new database its default mode (0644 less the umask), and the WAL and
    // shared-memory files the database's mode: so the database is made 0600 first.
    private::ensure_file(&db).map_err(|e| io(&db, e))?;
    for side in ["console.db-wal", "console.db-shm"] {
        let path = data.join(side);
        private::tighten_file(&path).map_err(|e| io(&path, e))?;
    }
    let mut conn = connect(&db)?;
    schema::migrate_sqlite(&mut conn, data)?;
    Ok(SqlitePool {
        path: db,
        writer: Mutex::new(conn),
        readers: Mutex::new(Readers::default()),
        reader_free: Condvar::new(),
    })
}

/// The pool of the PostgreSQL database at `url`, migrated.
fn open_postgres(url: &str) -> Result<PgPool, ConsoleError> {
    let pool = PgPool {
        config: pg_config(url)?,
        idle: Mutex::new(PgIdle::default()),
        free: Condvar::new(),
        writer: Mutex::new(()),
    };
    let mut conn = pool.connect()?;
    schema::migrate_postgres(&mut conn.client)?;
    lock(&pool.idle).conns.push(conn);
    lock(&pool.idle).open = 1;
    Ok(pool)
}

impl<'c> Tx<'c> {
    fn new(conn: TxConn<'c>, data: &'c Path) -> Tx<'c> {
        Tx { conn, data, failed: RefCell::new(None) }
    }
}

impl Tx<'_> {
    /// `result` of a statement, its failure noted (the first one) so that the write does not
    /// commit, whatever the caller does with the error.
    fn noting<T>(&self, result: Result<T, ConsoleError>) -> Result<T, ConsoleError> {
        if let Err(e) = &result {
            let error: fn(DbError) -> ConsoleError = match e {
                ConsoleError::Constraint(_) => ConsoleError::Constraint,
                ConsoleError::Unavailable(_) => ConsoleError::Unavailable,
                ConsoleError::Database(_) => ConsoleError::Database,
                _ => return result,
            };
            let mut failed = self.failed.borrow_mut();
            if failed.is_none() {
                *failed = Some(Failed { error, text: e.to_string() });
            }
        }
        result
    }

    /// Which engine this transaction runs on.
    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Sqlite(_) => Backend::Sqlite,
            TxConn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one statement; how many rows it changed.
    pub(crate) fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, ConsoleError> {
        self.noting((|| match &self.conn {
            TxConn::Sqlite(conn) => {
                let changed =
                    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args.iter()))?;
                Ok(changed as u64)
            }
            TxConn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let stmt = pg.statement(sql)?;
                Ok(pg.tx.execute(&stmt, &pg_args(args))?)
            }
        })())
    }

    /// Every row of a query, each made into a `T` by `f`.
    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, ConsoleError>,
    ) -> Result<Vec<T>, ConsoleError> {
        self.noting((|| match &self.conn {
            TxConn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::sqlite(r))?);
                }
                Ok(out)
            }
            TxConn::Postgres(pg) => {
                // The rows are taken whole before `f` runs, so `f` may query this transaction.
                let rows = {
                    let mut pg = pg.borrow_mut();
                    let stmt = pg.statement(sql)?;
                    pg.tx.query(&stmt, &pg_args(args))?
                };
                rows.iter().map(|r| f(&Row::postgres(r))).collect()
            }
        })())
    }

    /// The first row of a query, if there is one.
    pub(crate) fn opt<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, ConsoleError>,
    ) -> Result<Option<T>, ConsoleError> {
        self.noting((|| match &self.conn {
            TxConn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                match rows.next()? {
                    Some(r) => f(&Row::sqlite(r)).map(Some),
                    None => Ok(None),
                }
            }
            TxConn::Postgres(pg) => {
                let row = {
                    let mut pg = pg.borrow_mut();
                    let stmt = pg.statement(sql)?;
                    // The first row, as SQLite gives it (query_opt refuses a second one).
                    pg.tx.query(&stmt, &pg_args(args))?.into_iter().next()
                };
                row.as_ref().map(|r| f(&Row::postgres(r))).transpose()
            }
        })())
    }

    /// The one row a query must give (an aggregate, or a row the caller knows exists).
    pub(crate) fn one<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        self.opt(sql, args, f)?.ok_or_else(|| {
            ConsoleError::corrupt("query result", format!("no row where one must be: {sql}"))
        })
    }

    /// Runs statements without arguments (a savepoint, a schema change).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), ConsoleError> {
        self.noting((|| match &self.conn {
            TxConn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            TxConn::Postgres(pg) => Ok(pg.borrow_mut().tx.batch_execute(sql)?),
        })())
    }

    /// Tells every replica, when this transaction commits, `payload` on `channel` (PostgreSQL
    /// `NOTIFY`: delivered on commit, never for a rolled-back change). Nothing on SQLite, whose
    /// one process wakes its own streams.
    pub(crate) fn notify(&self, channel: &str, payload: &str) -> Result<(), ConsoleError> {
        match self.backend() {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => {
                self.opt("SELECT pg_notify(?1, ?2)", args![channel, payload], |_| Ok(()))?;
                Ok(())
            }
        }
    }

    /// One page of a list: `sql` takes the cursor as `?1` and the row limit as `?2`, and
    /// `row` makes an item of a row whose first column is its cursor.
    fn page_of<T>(
        &self,
        sql: &str,
        page: crate::api::page::PageRequest,
        mut row: impl FnMut(&Row<'_>) -> Result<T, ConsoleError>,
    ) -> Result<Vec<(i64, T)>, ConsoleError> {
        self.rows(sql, args![page.after, page.sql_limit()], |r| Ok((r.get(0)?, row(r)?)))
    }

    /// Runs `f` inside a savepoint of this transaction: what it changed is kept when it returns
    /// Ok and undone when it returns Err, and the rest of the transaction goes on either way
    /// (on PostgreSQL too, where a failed statement would otherwise end the transaction).
    pub fn savepoint<T, E: From<ConsoleError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.batch("SAVEPOINT part;")?;
        let before = self.failed.borrow().clone();
        let out = f(self);
        if out.is_ok() {
            self.batch("RELEASE part;")?;
        } else {
            // What failed inside is undone, and the transaction is whole again.
            self.failed.replace(before);
            self.batch("ROLLBACK TO part; RELEASE part;")?;
        }
        out
    }

    /// The time of an event whose order against others of its kind decides something: role
    /// grants and their confirmations, approval requests. Wall-clock milliseconds, but always
    /// above the latest such time the database holds, so "the approver held the role before
    /// the request was filed" never hinges on two events sharing a millisecond, nor on two
    /// replicas' clocks (writes are one at a time, see "Two backends"). Call it in the write
    /// that stores the event.
    pub fn event_ms(&self) -> Result<i64, ConsoleError> {
        Ok(now_ms().max(self.last_event_ms()?.saturating_add(1)))
    }
}

/// The arguments as the PostgreSQL driver takes them.
fn pg_args<'a>(args: &'a [Value<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    args.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect()
}

/// A JSON column as a value; text that does not parse (a device sent it) reads as null.
fn json_or_null(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<ConsoleError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ConsoleError::Task { what: "store call", source })?
}

/// Wall-clock time, Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The segment id in the sealed header of the file at `path`, if it is a sealed segment (what
/// ingest records with a stored segment, and clip records name).
pub fn sealed_segment_id(path: &Path) -> Option<String> {
    use rearview_capture::seal::{SealedHeader, OVERHEAD};
    use std::io::Read;
    let mut head = Vec::with_capacity(OVERHEAD);
    std::fs::File::open(path).and_then(|f| f.take(OVERHEAD as u64).read_to_end(&mut head)).ok()?;
    SealedHeader::parse(&head).ok().map(|h| h.segment_id.to_string())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// True for a 64-character lowercase hex string (a SHA-256 name); guards paths built from it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConsoleError;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    /// A read that panics gives its connection back: more panics than there are readers, and
    /// the next read is still served (it used to wait forever for a connection never returned).
    #[test]
    fn a_panicking_read_does_not_drain_the_reader_pool() {
        let (_dir, store) = store();
        for _ in 0..READERS + 2 {
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _: Result<(), ConsoleError> = store.read_now(|_| panic!("a bug in a read"));
            }));
            assert!(panicked.is_err());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let s = store.clone();
        std::thread::spawn(move || {
            let _ = tx.send(s.read_now(|tx| tx.meta_get("k")).map_err(|e: ConsoleError| e));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the read never ran");
        assert!(got.unwrap().is_none());
    }

    /// A write whose closure fails leaves nothing of what it did, audit line included.
    #[test]
    fn a_write_that_fails_is_rolled_back_whole() {
        let (_dir, store) = store();
        let failed: Result<(), ConsoleError> = store.write_now(|tx| {
            tx.meta_set("k", "v")?;
            tx.audit("test", "k.set", "k", serde_json::Value::Null)?;
            Err(ConsoleError::Invalid("no".into()))
        });
        assert!(failed.is_err());
        let (value, audit) = store
            .read_now(|tx| {
                let page = crate::api::page::PageRequest { limit: 10, after: None };
                Ok::<_, ConsoleError>((tx.meta_get("k")?, tx.audit_page(page)?.len()))
            })
            .unwrap();
        assert_eq!(value, None);
        assert_eq!(audit, 0);
    }

    /// A savepoint that fails undoes its own part only.
    #[test]
    fn a_failed_savepoint_keeps_the_rest_of_the_transaction() {
        let (_dir, store) = store();
        store
            .write_now(|tx| {
                tx.meta_set("kept", "1")?;
                let part: Result<(), ConsoleError> = tx.savepoint(|sp| {
                    sp.meta_set("undone", "1")?;
                    Err(ConsoleError::Invalid("no".into()))
                });
                assert!(part.is_err());
                Ok::<_, ConsoleError>(())
            })
            .unwrap();
        let read = |key: &'static str| store.read_now(move |tx| tx.meta_get(key)).unwrap();
        assert_eq!(read("kept").as_deref(), Some("1"));
        assert_eq!(read("undone"), None);
    }

    /// Reads on the pool see what a committed write wrote, from another thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_reads_see_committed_writes() {
        let (_dir, store) = store();
        store.write(|tx| tx.meta_set("k", "v")).await.unwrap();
        let reads = (0..8).map(|_| store.read(|tx| tx.meta_get("k")));
        for value in futures_util::future::join_all(reads).await {
            assert_eq!(value.unwrap().as_deref(), Some("v"));
        }
    }
}
