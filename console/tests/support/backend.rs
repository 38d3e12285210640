//! Which backend the console's tests run on, and raw SQL on it for the tests that reach past
//! the console into its database.
//!
//! `REARVIEW_TEST_STORE` picks the metadata backend: unset or `sqlite` (the default, as the
//! demo and a small team run it), or `postgres` (a new database per console in the test kit's
//! private cluster, [`rearview_testkit::postgres::Postgres::shared`]). `REARVIEW_TEST_BLOBS`
//! picks the blob backend: unset or `files`, or `s3` (a new bucket per console on the test
//! kit's `moto_server`, [`rearview_testkit::s3::S3Server::shared`]; the credentials come from
//! the AWS variables, which `scripts/test.sh` sets for that run). `scripts/test.sh` runs the
//! console's whole suite on SQLite and files, then again on PostgreSQL and S3. Every test gets
//! its tenant from [`init_tenant`], so a test does not know which backends it runs on unless
//! it asks ([`TestDb`]).

use std::path::{Path, PathBuf};

use rearview_console::blobs::BlobLocation;
use rearview_console::{Backends, Database, InitOutput};
use rearview_testkit::postgres::{psql_url, Postgres};
use rearview_testkit::s3::S3Server;

/// The backend `REARVIEW_TEST_STORE` names, with a fresh database when it is PostgreSQL.
pub fn test_database() -> Database {
    match std::env::var("REARVIEW_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Database::Sqlite,
        Ok("postgres") => Database::Postgres(Postgres::shared().create_database()),
        Ok(other) => panic!("REARVIEW_TEST_STORE={other:?}: give sqlite or postgres"),
    }
}

/// The blob location `REARVIEW_TEST_BLOBS` names for a console in `dir`, with a fresh bucket
/// when it is S3.
pub fn test_blobs(dir: &Path) -> BlobLocation {
    match std::env::var("REARVIEW_TEST_BLOBS").as_deref() {
        Err(_) | Ok("") | Ok("files") => BlobLocation::Files(dir.join("blobs")),
        Ok("s3") => {
            static BUCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = BUCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let bucket = format!("rv-{}-{n}", std::process::id());
            let server = S3Server::shared();
            server.create_bucket(&bucket);
            BlobLocation::S3 {
                bucket,
                prefix: "tenant-a".into(),
                endpoint: Some(server.endpoint()),
                region: Some("us-east-1".into()),
            }
        }
        Ok(other) => panic!("REARVIEW_TEST_BLOBS={other:?}: give files or s3"),
    }
}

/// The backends these tests run on (see the module docs), for a console in `dir`.
pub fn test_backends(dir: &Path) -> Backends {
    Backends { database: test_database(), blobs: test_blobs(dir) }
}

/// `init` of tenant `tenant-a` (first admin `ivan`, first approver `approver`) in `dir`, on the
/// backends of [`test_backends`].
pub fn init_tenant(dir: &Path, approver: &str) -> InitOutput {
    let backends = test_backends(dir);
    rearview_console::init_on(dir, &backends, "tenant-a", "ivan", approver).unwrap_or_else(|e| {
        panic!("init on {} and {}: {e}", backends.database.shown(), backends.blobs.to_url())
    })
}

/// `init` of tenant `tenant-a` (ivan, `approver`) in `dir` on the PostgreSQL database at `url`
/// (whatever `REARVIEW_TEST_STORE` says) and the test blobs: for the tests that are about
/// PostgreSQL itself (replicas, a database that stops).
pub fn init_on_postgres(dir: &Path, url: String, approver: &str) -> InitOutput {
    let backends = Backends { database: Database::Postgres(url), blobs: test_blobs(dir) };
    rearview_console::init_on(dir, &backends, "tenant-a", "ivan", approver)
        .unwrap_or_else(|e| panic!("init on {}: {e}", backends.database.shown()))
}

/// The database of the console whose data directory is `dir`, for raw SQL beside it.
pub enum TestDb {
    Sqlite(PathBuf),
    /// The database's URL, on a test kit cluster (the shared one or a test's own).
    Postgres(String),
}

impl TestDb {
    /// The database the data directory `dir` records.
    pub fn of(dir: &Path) -> TestDb {
        match Database::recorded(dir).unwrap() {
            Database::Sqlite => TestDb::Sqlite(dir.join("console.db")),
            Database::Postgres(url) => TestDb::Postgres(url),
        }
    }

    /// Runs `sql` (statements in the SQL both backends speak).
    pub fn exec(&self, sql: &str) {
        match self {
            TestDb::Sqlite(path) => {
                rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap()
            }
            TestDb::Postgres(db) => {
                psql_url(db, sql).unwrap();
            }
        }
    }

    /// Runs `sql`, which the database must refuse; its error text.
    pub fn exec_err(&self, sql: &str) -> String {
        match self {
            TestDb::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .expect_err("the database took it")
                .to_string(),
            TestDb::Postgres(db) => {
                psql_url(db, sql).expect_err("the database took it").to_string()
            }
        }
    }

    /// The one value `query` reads, as text (NULL as "").
    pub fn text(&self, query: &str) -> String {
        match self {
            TestDb::Sqlite(path) => {
                let db = rusqlite::Connection::open(path).unwrap();
                let v: rusqlite::types::Value = db.query_row(query, [], |r| r.get(0)).unwrap();
                match v {
                    rusqlite::types::Value::Null => String::new(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                }
            }
            TestDb::Postgres(db) => psql_url(db, query).unwrap().trim_end_matches('\n').to_owned(),
        }
    }

    /// The first column of every row `query` reads, as text (values without newlines).
    pub fn texts(&self, query: &str) -> Vec<String> {
        match self {
            TestDb::Sqlite(path) => {
                let db = rusqlite::Connection::open(path).unwrap();
                let mut stmt = db.prepare(query).unwrap();
                let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
                rows.collect::<Result<_, _>>().unwrap()
            }
            TestDb::Postgres(db) => {
                let out = psql_url(db, query).unwrap();
                out.lines().map(str::to_owned).collect()
            }
        }
    }

    /// The one integer `query` reads.
    pub fn int(&self, query: &str) -> i64 {
        let text = self.text(query);
        text.parse().unwrap_or_else(|_| panic!("{query}: {text:?} is not an integer"))
    }

    /// From now on the database refuses inserts into `table` of rows where `condition` holds
    /// (SQL over `NEW`), with `message`: an operator's rule, or a full or damaged table. Named
    /// `name`, for [`TestDb::allow`].
    pub fn refuse_inserts(&self, name: &str, table: &str, condition: &str, message: &str) {
        match self {
            TestDb::Sqlite(_) => self.exec(&format!(
                "CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {condition}
                 BEGIN SELECT RAISE(ABORT, '{message}'); END;"
            )),
            TestDb::Postgres(_) => self.exec(&format!(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN IF {condition} THEN RAISE EXCEPTION '{message}'; END IF; RETURN NEW; END $$;
                 CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}();"
            )),
        }
    }

    /// Lifts the refusal `name` on `table`.
    pub fn allow(&self, name: &str, table: &str) {
        match self {
            TestDb::Sqlite(_) => self.exec(&format!("DROP TRIGGER {name};")),
            TestDb::Postgres(_) => {
                self.exec(&format!("DROP TRIGGER {name} ON {table}; DROP FUNCTION {name}();"))
            }
        }
    }
}
