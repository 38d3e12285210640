//! The private PostgreSQL cluster: start, databases, stop and restart, cleanup on drop and by the
//! reaper when the process dies without dropping it. Needs PostgreSQL installed
//! (scripts/setup-debian.sh); without it these tests fail, they do not skip.

use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use rearview_testkit::postgres::Postgres;
use rearview_testkit::wait_until;

#[path = "support/child_test.rs"]
mod child_test;

/// How long cleanup after a dead parent may take: the reaper's stop and `rm -rf`.
const REAP_LIMIT: Duration = Duration::from_secs(60);

/// Set in the child process of the reaper test: how that child should end.
const CHILD_ENV: &str = "REARVIEW_PG_REAPER_CHILD";

/// What the child prints before its cluster's port and directory.
const MARKER: &str = "rearview-pg-cluster";

/// A private cluster, or a panic that says why not (PostgreSQL missing, say: these tests fail
/// rather than skip without it).
fn start() -> Postgres {
    Postgres::start().unwrap_or_else(|e| panic!("cannot start a private PostgreSQL cluster: {e}"))
}

fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// The database name a `create_database` URL ends in, after checking the URL's shape.
fn database_name(pg: &Postgres, url: &str) -> String {
    let prefix = format!("postgres://rearview@127.0.0.1:{}/", pg.port());
    let name =
        url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url} does not start with {prefix}"));
    assert!(!name.is_empty() && !name.contains('/'), "bad database name in {url}");
    name.to_owned()
}

#[test]
fn start_databases_stop_restart_drop() {
    let pg = start();
    let dir = pg.dir().to_owned();
    assert!(dir.join("data/PG_VERSION").is_file(), "no cluster in {}", dir.display());

    let a = database_name(&pg, &pg.create_database());
    let b = database_name(&pg, &pg.create_database());
    assert_ne!(a, b, "two databases got one name");

    // A table in one database is not in the other: they are really separate databases.
    pg.psql(&a, "CREATE TABLE t (v int); INSERT INTO t VALUES (41), (1)").expect("write in a");
    assert_eq!(pg.psql(&a, "SELECT sum(v) FROM t").expect("query a").trim(), "42");
    let err = pg.psql(&b, "SELECT sum(v) FROM t").expect_err("t exists only in a");
    assert!(err.to_string().contains("does not exist"), "{err}");
    // The superuser is the one the URLs name.
    assert_eq!(pg.psql(&b, "SELECT current_user").expect("query b").trim(), "rearview");

    // Committed just before an immediate stop: it must survive the restart.
    pg.psql(&a, "INSERT INTO t VALUES (100)").expect("write in a before the stop");
    pg.stop();
    assert!(refused(pg.port()), "port {} still accepts connections after stop", pg.port());
    let err = pg.psql(&a, "SELECT 1").expect_err("a stopped server answered");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");

    pg.restart();
    assert!(!refused(pg.port()), "nothing listens after restart");
    assert_eq!(pg.psql(&a, "SELECT sum(v) FROM t").expect("query a after restart").trim(), "142");
    let c = database_name(&pg, &pg.create_database());
    assert!(c != a && c != b, "a database name was handed out twice");

    drop(pg);
    assert!(!dir.exists(), "{} left behind after drop", dir.display());
}

#[test]
fn clusters_run_side_by_side() {
    let one = start();
    let two = start();
    assert_ne!(one.port(), two.port());
    assert_ne!(one.dir(), two.dir());
    let db = database_name(&one, &one.create_database());
    one.psql(&db, "CREATE TABLE only_here (v int)").expect("create a table in one");
    two.stop();
    // Stopping one leaves the other serving.
    assert_eq!(one.psql(&db, "SELECT count(*) FROM only_here").expect("query one").trim(), "0");
}

#[test]
fn shared_is_one_cluster_per_process() {
    let first = Postgres::shared();
    let second = Postgres::shared();
    assert_eq!(first.port(), second.port());
    assert_eq!(first.dir(), second.dir());
    let db = database_name(first, &second.create_database());
    assert_eq!(first.psql(&db, "SELECT 1").expect("query the shared cluster").trim(), "1");
}

/// The child side of the `reaper_cleans_up_after_*` tests: starts the shared cluster, prints
/// its directory and port, and then ends as the parent says: `exit` (no destructors run) or
/// `hang` (the parent SIGKILLs it). Run by hand it does nothing.
#[test]
#[ignore = "the child process of the reaper_cleans_up_after_* tests"]
fn reaper_child() {
    let Ok(how) = std::env::var(CHILD_ENV) else { return };
    let pg = Postgres::shared();
    // On a line of its own: the harness has printed "test reaper_child ... " without a newline.
    println!("\n{MARKER} {} {}", pg.port(), pg.dir().display());
    match how.as_str() {
        "exit" => std::process::exit(0),
        _ => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
    }
}

/// Starts the child test, reads the cluster it started, lets it end as `how` says, and checks
/// that the server and its directory are gone.
fn reaped_after(how: &str) {
    let limit = rearview_testkit::postgres::START_TIMEOUT * 2;
    let (mut child, line) = child_test::start("reaper_child", (CHILD_ENV, how), MARKER, limit);
    let mut words = line.split(' ');
    let port: u16 = words.next().and_then(|p| p.parse().ok()).expect("a port");
    let dir = PathBuf::from(words.next().expect("a directory"));
    assert!(
        dir.join("data/PG_VERSION").is_file(),
        "the child's cluster is not in {}",
        dir.display()
    );
    assert!(!refused(port), "the child's cluster does not listen on {port}");

    if how != "exit" {
        child.kill().expect("SIGKILL the child");
    }
    // Reaped, so the child is gone rather than a zombie.
    child.wait().expect("wait for the child");

    wait_until("the reaper to remove the dead child's cluster", REAP_LIMIT, || {
        (!dir.exists()).then_some(())
    });
    wait_until("the dead child's server to stop", REAP_LIMIT, || refused(port).then_some(()));
}

#[test]
fn reaper_cleans_up_after_a_parent_that_exits() {
    reaped_after("exit");
}

#[test]
fn reaper_cleans_up_after_a_parent_killed_with_sigkill() {
    reaped_after("hang");
}
