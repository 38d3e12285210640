//! Separation of duties and approvals that could block the policy, through the real console
//! (in process, on 127.0.0.1:0) and its SQLite file:
//!
//! * who may decide a capture request: an approver who held the role before the request was
//!   filed and was not given it by the requester; granting the approver role takes a second
//!   person; names are one person in canonical form (case-insensitive, trimmed);
//! * an approval the signer would refuse is refused at the API, naming the field, and one
//!   planted by an older console is left out of the bundle (flagged, audited) instead of
//!   blocking it, so revocations still reach devices.
//!
//! What the real uploader then gets is in `tests/tests/protocol/duties.rs`.
//!
//! Older consoles are simulated with real old-schema database files and rows written into the
//! console's own database; nothing asserts a duration.

use std::path::Path;

use rearview_console::client::AdminClient;
use rearview_console::{Server, ServerConfig};
use rearview_testkit::console;
use serde_json::{json, Value};

mod support;

use support::duties::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_approve_their_own_request_through_an_approver_account_they_create() {
    let c = start().await;
    let id = request(&c.admin, "alice", "case 1").await.unwrap();
    let (alt_id, alt) = c.add(&c.admin, "ivan-alt", &["approver"]).await.unwrap();

    let msg = refused(decide(&alt, id, "approve").await, 403, "a fresh approver account approving");
    assert!(msg.contains("approver"), "{msg}");
    // Nobody confirms their own grant, and the admin who granted it cannot either.
    refused(confirm(&alt, alt_id).await, 403, "the grantee confirming");
    refused(confirm(&c.admin, alt_id).await, 403, "the granter confirming");

    // Once a second person confirms the grant, the account still may not decide ivan's request:
    // it did not hold the role when the request was filed, and ivan gave it the role.
    let _ = confirm(&c.rita, alt_id).await.unwrap();
    let msg = refused(decide(&alt, id, "approve").await, 403, "approving an older request");
    assert!(msg.contains("before"), "{msg}");
    let later = request(&c.admin, "alice", "case 2").await.unwrap();
    let msg = refused(decide(&alt, later, "approve").await, 403, "approving for its granter");
    assert!(msg.contains("granted"), "{msg}");
    refused(decide(&alt, later, "reject").await, 403, "rejecting for its granter");
    assert!(bundle(&c.admin).await.unwrap().1.is_empty());

    // rita held the role since init, given by nobody in this play: she may, and the record and
    // the signed bundle say how she came to be an approver.
    let a = decide(&c.rita, id, "approve").await.unwrap();
    assert_eq!(a["decided_by"], json!("rita"));
    assert_eq!(a["approver_grant"]["granted_by"], json!("console:init"));
    assert!(a["approver_grant"]["confirmed_ms"].as_i64() < a["requested_ms"].as_i64());
    let (_, users) = bundle(&c.admin).await.unwrap();
    assert_eq!(principals(&users), ["alice"]);
    let grant = &users[0]["approval"]["approver_grant"];
    assert_eq!(grant["granted_by"], json!("console:init"));
    assert!(grant["granted_at"].is_string(), "{grant}");
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_the_approver_role_takes_a_second_person_and_every_role_change_is_audited() {
    let c = start().await;
    let (inv_id, inv) = c.add(&c.admin, "ingrid", &["investigator"]).await.unwrap();
    let created: Value = c
        .admin
        .post("/api/v1/people", &json!({"name": "vera", "roles": ["approver", "investigator"]}))
        .await
        .unwrap();
    assert_eq!(created["roles"], json!(["investigator"]), "only the investigator role is active");
    assert_eq!(created["pending"], json!(["approver"]));
    let vera_id = created["id"].as_i64().unwrap();
    let vera = c.client(created["token"].as_str().unwrap());
    // Pending is not held: vera cannot decide anything yet.
    let id = request(&c.admin, "alice", "case 3").await.unwrap();
    refused(decide(&vera, id, "approve").await, 403, "a pending approver approving");

    // Only an admin grants; only an approver who is neither granter nor grantee confirms.
    for (who, name) in [(&c.rita, "approver"), (&inv, "investigator"), (&vera, "pending approver")]
    {
        refused(grant(who, inv_id, "approver").await, 403, &format!("grant by {name}"));
    }
    for (who, name) in [(&c.admin, "admin"), (&inv, "investigator"), (&vera, "grantee")] {
        refused(confirm(who, vera_id).await, 403, &format!("confirm by {name}"));
    }
    let g = grant(&c.admin, inv_id, "approver").await.unwrap();
    assert_eq!(g["state"], json!("pending"));
    refused(grant(&c.admin, inv_id, "approver").await, 409, "granting twice");
    let msg = refused(grant(&c.admin, inv_id, "root").await, 400, "an unknown role");
    assert!(msg.contains("root"), "{msg}");

    let v = confirm(&c.rita, vera_id).await.unwrap();
    assert_eq!((v["state"].clone(), v["confirmed_by"].clone()), (json!("active"), json!("rita")));
    refused(confirm(&c.rita, vera_id).await, 409, "confirming twice");
    // vera, an approver now, confirms ingrid's grant (she neither granted nor holds it).
    let _ = confirm(&vera, inv_id).await.unwrap();
    // An admin who is an approver too still cannot confirm a grant they made.
    let (boss_id, boss) = c.add(&c.admin, "boss", &["admin", "approver"]).await.unwrap();
    let _ = confirm(&c.rita, boss_id).await.unwrap();
    let (dan_id, _) = c.add(&boss, "dan", &["approver"]).await.unwrap();
    let msg = refused(confirm(&boss, dan_id).await, 403, "the granter, an approver, confirming");
    assert!(msg.contains("granted"), "{msg}");

    let people: Vec<Value> = c.rita.get("/api/v1/people").await.unwrap();
    let roles = |name: &str| {
        let p = people.iter().find(|p| p["name"] == json!(name)).unwrap();
        (p["roles"].as_str().unwrap().to_owned(), p["grants"].as_array().unwrap().len())
    };
    assert_eq!(roles("vera"), ("approver,investigator".into(), 2));
    assert_eq!(roles("dan"), ("".into(), 1));

    let vera_audit = audit_of(&c.admin, "vera").await;
    let actions: Vec<(&str, &str)> =
        vera_audit.iter().map(|(w, a, _)| (w.as_str(), a.as_str())).collect();
    assert_eq!(
        actions,
        [
            ("person:ivan", "person.create"),
            ("person:ivan", "role.grant"),
            ("person:ivan", "role.grant"),
            ("person:rita", "role.confirm"),
        ]
    );
    assert_eq!(vera_audit[3].2["role"], json!("approver"));
    assert_eq!(vera_audit[3].2["granted_by"], json!("ivan"));
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_one_person_in_canonical_form() {
    let c = start().await;
    for name in ["IVAN", " Ivan ", "Rita", "RITA\t"] {
        let msg = refused(
            c.admin.post("/api/v1/people", &json!({"name": name, "roles": ["approver"]})).await,
            409,
            name,
        );
        assert!(msg.contains("already"), "{msg}");
    }
    for name in ["ma\u{1}llory", "leg\racy", "legacy", "console:init"] {
        let msg = refused(
            c.admin.post("/api/v1/people", &json!({"name": name, "roles": ["investigator"]})).await,
            400,
            name,
        );
        assert!(msg.contains("name"), "{msg}");
    }
    let people: Vec<Value> = c.admin.get("/api/v1/people").await.unwrap();
    assert_eq!(people.len(), 2, "{people:?}");
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_signer_would_refuse_are_refused_at_the_api_naming_the_field() {
    let c = start().await;
    let long = "j".repeat(rearview_config::MAX_TEXT_LEN + 1);
    for (user, justification, field) in [
        ("alice", long.as_str(), "justification"),
        ("alice", "case 4711\r\nforged line", "justification"),
        ("alice", "case \u{1b}[31m4711", "justification"),
        ("al\u{7}ice", "case 4711", "user"),
        ("bob\u{0}", "case 4711", "user"),
    ] {
        let r = c
            .admin
            .post::<_, Value>(
                "/api/v1/approvals",
                &json!({"user": user, "mode": "all-activities", "justification": justification}),
            )
            .await;
        let shown: String = justification.chars().take(12).collect();
        let msg = refused(r, 400, &format!("{user:?} / {shown:?}"));
        assert!(msg.contains(field), "{msg}");
    }
    let all: Vec<Value> = c.admin.get("/api/v1/approvals").await.unwrap();
    assert!(all.is_empty(), "nothing stored: {all:?}");
    // Exactly at the limit is fine.
    let ok = "j".repeat(rearview_config::MAX_TEXT_LEN);
    let id = request(&c.admin, "alice", &ok).await.unwrap();
    let _ = decide(&c.rita, id, "approve").await.unwrap();
    assert_eq!(principals(&bundle(&c.admin).await.unwrap().1), ["alice"]);
    c.server.shutdown().await.unwrap();
}

/// Today's console schema for the tables an older console wrote (people with a roles column,
/// approvals with revocations), as a real file.
fn old_console_db(data: &Path, people: &[(&str, &str, i64, &str)], approvals: &[String]) {
    rearview_console::tenant::Tenant::create(data, "tenant-a").unwrap();
    let db = rusqlite::Connection::open(data.join("console.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('tenant_id', 'tenant-a'), ('policy_version', '1');
         CREATE TABLE people (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, roles TEXT NOT NULL,
            token_sha256 TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL);
         CREATE TABLE approvals (
            id INTEGER PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, justification TEXT NOT NULL,
            requested_by TEXT NOT NULL, requested_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
            state TEXT NOT NULL, decided_by TEXT, decided_ms INTEGER, revoked_by TEXT, revoked_ms INTEGER);
         CREATE TABLE audit (
            id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
            target TEXT NOT NULL, details_json TEXT NOT NULL);",
    )
    .unwrap();
    for (name, roles, created_ms, token) in people {
        db.execute(
            "INSERT INTO people (name, roles, token_sha256, created_ms) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                name,
                roles,
                rearview_console::store::sha256_hex(token.as_bytes()),
                created_ms
            ],
        )
        .unwrap();
    }
    for a in approvals {
        db.execute_batch(a).unwrap();
    }
}

fn token(n: u8) -> String {
    format!("rvp_{}", hex::encode([n; 32]))
}

/// An older console let `Carol` exist next to `carol` (and `ADMIN` next to `admin`) and let one
/// approve the other's request. After the upgrade that approval is left out of the bundle
/// (which is served), the roles became active grants "by legacy", and neither can approve the
/// other's new requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_keeps_its_roles_but_names_equal_in_canonical_form_are_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let now = support::now_ms();
    let expires = now + DAY_MS;
    old_console_db(
        dir.path(),
        &[
            ("admin", "admin", 1000, &token(1)),
            ("ADMIN", "approver", 2000, &token(2)),
            ("carol", "admin", 3000, &token(3)),
            ("Carol", "approver", 4000, &token(4)),
            ("rita", "approver,investigator", 5000, &token(5)),
        ],
        &[
            format!(
                "INSERT INTO approvals VALUES (1, 'alice', 'all-activities', 'case 7', 'carol', 6000,
                   {expires}, 'approved', 'Carol', 7000, NULL, NULL)"
            ),
            format!(
                "INSERT INTO approvals VALUES (2, 'bob', 'all-activities', 'case 8', 'carol', 6000,
                   {expires}, 'approved', 'rita', 7000, NULL, NULL)"
            ),
        ],
    );
    let server = Server::start(ServerConfig::plain(dir.path(), "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let as_ = |n: u8| AdminClient::new(&server.url(), &token(n), None).unwrap();
    let (admin, admin_upper, carol, carol_upper, rita) = (as_(1), as_(2), as_(3), as_(4), as_(5));

    let (version, users) = bundle(&admin).await.expect("the policy is served");
    assert!(version > 1, "the upgrade publishes a bundle signed under the new rules");
    assert_eq!(principals(&users), ["bob"], "the self-approval is left out");
    assert_eq!(users[0]["approval"]["approver_grant"]["granted_by"], json!("legacy"));
    let a = approval(&admin, 1).await;
    assert!(a["excluded"].as_str().expect("flagged").contains("approved_by"), "{a}");

    for (requester, approver, user) in
        [(&carol, &carol_upper, "dave"), (&admin, &admin_upper, "erin")]
    {
        let id = request(requester, user, "case 9").await.unwrap();
        let msg = refused(decide(approver, id, "approve").await, 400, user);
        assert!(msg.contains("approved_by"), "{msg}");
        let _ = decide(&rita, id, "approve").await.unwrap();
    }
    let (_, users) = bundle(&admin).await.unwrap();
    assert_eq!(principals(&users), ["bob", "dave", "erin"]);

    // The old roles column became grants, each audited.
    let people: Vec<Value> = admin.get("/api/v1/people").await.unwrap();
    let rita_row = people.iter().find(|p| p["name"] == json!("rita")).unwrap();
    assert_eq!(rita_row["roles"], json!("approver,investigator"));
    let g = &rita_row["grants"][0];
    assert_eq!((g["granted_by"].clone(), g["granted_ms"].clone()), (json!("legacy"), json!(5000)));
    let audit = audit_of(&admin, "Carol").await;
    assert_eq!(audit.iter().map(|(_, a, _)| a.as_str()).collect::<Vec<_>>(), ["role.migrate"]);
    server.shutdown().await.unwrap();
    // Opening again migrates nothing twice.
    drop(rearview_console::store::Store::open(dir.path()).unwrap());
    let db = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    let grants: i64 = db.query_row("SELECT COUNT(*) FROM role_grants", [], |r| r.get(0)).unwrap();
    assert_eq!(grants, 6);
}

/// The binary: `init --approver` prints both tokens on labelled lines; `person grant` and
/// `person confirm` drive the grants.
#[test]
fn cli_init_makes_two_people_and_person_grant_and_confirm_work() {
    let exe = env!("CARGO_BIN_EXE_rearview-console");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens =
        console::init(exe.as_ref(), &data, &["--admin", "ivan", "--approver", "rita"]).unwrap();
    assert_eq!((tokens.admin_name.as_str(), tokens.approver_name.as_str()), ("ivan", "rita"));
    let (ivan, rita) = (tokens.admin_token, tokens.approver_token);
    assert!(ivan.starts_with("rvp_") && rita.starts_with("rvp_") && ivan != rita, "{ivan} {rita}");

    let serve = console::ServedConsole::start(exe.as_ref(), &data, &[]).unwrap();
    let run = |token: &str, args: &[&str]| {
        std::process::Command::new(exe)
            .args(args)
            .arg("--data")
            .arg(&data)
            .env("REARVIEW_TOKEN", token)
            .output()
            .unwrap()
    };
    let ok = |token: &str, args: &[&str]| -> Value {
        let out = run(token, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let vera = ok(&ivan, &["person", "add", "--name", "vera", "--role", "approver"]);
    assert_eq!(vera["pending"], json!(["approver"]));
    let out = run(&ivan, &["person", "confirm", "--name", "vera"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("403"));
    let confirmed = ok(&rita, &["person", "confirm", "--name", "VERA"]);
    assert_eq!(confirmed["state"], json!("active"));
    let _ = ok(&ivan, &["person", "add", "--name", "ingrid", "--role", "investigator"]);
    let granted = ok(&ivan, &["person", "grant", "--name", "ingrid", "--role", "approver"]);
    assert_eq!(granted["state"], json!("pending"));
    let people = ok(&rita, &["person", "list"]);
    let roles: Vec<(&str, &str)> = people
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["roles"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("ivan", "admin"), ("rita", "approver"), ("vera", "approver"), ("ingrid", "investigator")]
    );
    drop(serve);
}
