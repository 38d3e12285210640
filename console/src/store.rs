//! The console's metadata in one SQLite file (`DATA/console.db`, WAL), and its blob store
//! ([`crate::blobs`]: sealed segments in a directory or a bucket).
//!
//! All SQL of the console lives here, one module per subject ([`meta`], [`audit`], [`people`],
//! [`approvals`], [`devices`], [`triggers`], [`clips`], [`evidence`]; `schema` holds the tables and the
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
//! # A second backend
//!
//! What callers see is backend-neutral: `read`/`write` with a closure, and the methods of [`Tx`]
//! (typed rows in, typed rows out, [`ConsoleError`] classified). What is SQLite's is the inside:
//! the connections here and each method's body in the subject modules. PostgreSQL (issue 14)
//! comes in there and nowhere else: `Tx` over either backend, each method written once per
//! backend, the writer/readers replaced by that backend's pool. No trait or enum exists yet: with
//! one backend it would only be a second name for the same thing.
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
//! enrollment_records device_id, record, signature   (console-signed, as stored; see [`evidence`])
//! clip_records     clip_id, record, signature        (console-signed at completion)
//! custody          clip_id, seq, line, hash          (per clip, hash-chained, append-only)
//! chain_entries    device_id, chain, seq, hash, prev, clip_id, accepted_ms (the device-signed
//!                  chain entries ingest accepted; see [`chain`])
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
//! [`Store::open`] brings an older database up to date in one transaction: columns added since
//! are added; the `roles` column of `people` ("admin,approver") becomes active `role_grants`
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};

use crate::blobs::{BlobLocation, Blobs};
use crate::error::ConsoleError;
use crate::private;

pub mod approvals;
pub mod audit;
pub mod chain;
pub mod clips;
pub mod devices;
pub mod evidence;
pub mod meta;
pub mod people;
mod schema;
pub mod triggers;

use audit::audit_in;

/// The granter and confirmer named by grants carried over from a console before grants.
pub const LEGACY: &str = "legacy";

/// Most read connections open at once (reads beyond wait for one).
const READERS: usize = 4;

/// How long a statement waits for a lock another process holds before the database is
/// "unavailable" (a retryable 503).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The metadata database and the blob store. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Readers>,
    /// Signalled when a read connection is given back.
    reader_free: std::sync::Condvar,
    blobs: Blobs,
    /// The last time handed out by [`Store::event_ms`].
    last_event_ms: Mutex<i64>,
}

/// A reader taken from the pool; dropping it gives the connection back, also when the read
/// panicked (the transaction is rolled back as it unwinds), so the pool never runs dry.
struct ReaderLease<'a> {
    inner: &'a Inner,
    conn: Option<Connection>,
}

impl Drop for ReaderLease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.inner.readers).idle.push(conn);
            self.inner.reader_free.notify_one();
        }
    }
}

/// The read connections: idle ones, and how many exist (at most [`READERS`]).
#[derive(Default)]
struct Readers {
    idle: Vec<Connection>,
    open: usize,
}

/// One transaction of the store, for the operations of its subject modules. Only this module
/// and its children reach the connection inside.
pub struct Tx<'c> {
    conn: &'c Connection,
    /// The store's blobs, for the clip record (it names each segment's sealed header).
    blobs: &'c Blobs,
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
    /// Opens (creating if needed) the database and blob directory under `data`, all of them
    /// private to the console's user (see [`crate::private`]), also when an older version
    /// left them readable; brings the schema up to date (see "Migrations").
    pub fn open(data: &Path) -> Result<Store, ConsoleError> {
        Store::open_with_blobs(data, &BlobLocation::Files(data.join("blobs")))
    }

    /// As [`Store::open`], with the blobs at `blobs` ([`Blobs::open`]: no network I/O here).
    pub fn open_with_blobs(data: &Path, blobs: &BlobLocation) -> Result<Store, ConsoleError> {
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
        let mut conn = connect(&db)?;
        conn.execute_batch(schema::SCHEMA)?;
        schema::migrate(&mut conn)?;
        let blobs = Blobs::open(blobs, data)?;
        let last_event_ms = Tx { conn: &conn, blobs: &blobs }.last_event_ms()?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                writer: Mutex::new(conn),
                readers: Mutex::new(Readers::default()),
                reader_free: std::sync::Condvar::new(),
                blobs,
                last_event_ms: Mutex::new(last_event_ms),
            }),
        })
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
        blocking(move || store.write_now(f)).await
    }

    /// Runs `f` in one read transaction (a snapshot) on the blocking pool.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<ConsoleError> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || store.read_now(f)).await
    }

    /// [`Store::write`] on the calling thread (for commands that are not the server).
    pub fn write_now<T, E: From<ConsoleError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = lock(&self.inner.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ConsoleError::from)?;
        let out = f(&Tx { conn: &tx, blobs: &self.inner.blobs })?;
        tx.commit().map_err(ConsoleError::from)?;
        Ok(out)
    }

    /// [`Store::read`] on the calling thread.
    pub fn read_now<T, E: From<ConsoleError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut lease = ReaderLease { inner: &self.inner, conn: Some(self.reader()?) };
        let Some(conn) = lease.conn.as_mut() else {
            return Err(
                ConsoleError::corrupt("reader pool", "a lease without its connection").into()
            );
        };
        let tx = conn.transaction().map_err(ConsoleError::from)?;
        let out = f(&Tx { conn: &tx, blobs: &self.inner.blobs });
        // A read changes nothing; ending it releases the snapshot.
        drop(tx);
        out
    }

    /// An idle read connection, a new one while fewer than [`READERS`] exist, else the next
    /// one given back.
    fn reader(&self) -> Result<Connection, ConsoleError> {
        let inner = &self.inner;
        let mut readers = lock(&inner.readers);
        loop {
            if let Some(conn) = readers.idle.pop() {
                return Ok(conn);
            }
            if readers.open < READERS {
                readers.open += 1;
                drop(readers);
                let made = connect(&inner.db).and_then(|conn| {
                    conn.execute_batch("PRAGMA query_only=ON;")?;
                    Ok(conn)
                });
                if made.is_err() {
                    lock(&inner.readers).open -= 1;
                }
                return made;
            }
            readers = inner.reader_free.wait(readers).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The time of an event whose order against others of its kind decides something: role
    /// grants and their confirmations, approval requests. Wall-clock milliseconds, but always
    /// above the last one handed out (here or, before this process, in the database), so "the
    /// approver held the role before the request was filed" never hinges on two events sharing
    /// a millisecond.
    pub fn event_ms(&self) -> i64 {
        let mut last = lock(&self.inner.last_event_ms);
        *last = now_ms().max(last.saturating_add(1));
        *last
    }

    /// Where the sealed segments are.
    pub fn blobs(&self) -> &Blobs {
        &self.inner.blobs
    }
}

impl Tx<'_> {
    /// One page of a list: `sql` takes the cursor as `?1` and the row limit as `?2`, and
    /// `row` makes an item of a row whose first column is its cursor.
    fn page_of<T>(
        &self,
        sql: &str,
        page: crate::api::page::PageRequest,
        mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<(i64, T)>, ConsoleError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(rusqlite::params![page.after, page.sql_limit()], |r| {
                Ok((r.get(0)?, row(r)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Runs `f` inside a savepoint of this transaction: what it changed is kept when it returns
    /// Ok and undone when it returns Err, and the rest of the transaction goes on either way.
    pub fn savepoint<T, E: From<ConsoleError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.conn.execute_batch("SAVEPOINT part;").map_err(ConsoleError::from)?;
        let out = f(self);
        let end = if out.is_ok() { "RELEASE part;" } else { "ROLLBACK TO part; RELEASE part;" };
        self.conn.execute_batch(end).map_err(ConsoleError::from)?;
        out
    }
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
