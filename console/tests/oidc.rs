//! Single sign-on against a real OpenID provider process (node's `oidc-provider`, started by
//! the test kit) in real headless Chromium: the console binary sends the browser to the
//! provider, the person signs in on the provider's form, and comes back signed in as the
//! console person their verified email names, with the console's roles. Someone the provider
//! knows but the console does not is refused and audited; a callback replayed is refused.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use rearview_console::client::AdminClient;
use rearview_testkit::browser::Browser;
use rearview_testkit::console::{init, serve_command, served_url};
use rearview_testkit::oidc::{self, OidcAccount, OidcConfig, OidcProvider, LOGIN_FORM};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rearview-console");
const WAIT: Duration = Duration::from_secs(20);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn account(login: &str, email: &str) -> OidcAccount {
    OidcAccount {
        login: login.into(),
        password: format!("{login} password"),
        sub: format!("sub-{login}"),
        email: email.into(),
    }
}

/// A console on a port chosen first (the provider must know the redirect URI), signing in
/// with `provider`.
fn console(dir: &Path, port: u16, provider: &OidcProvider) -> (Killed, String) {
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = serve_command(Path::new(BIN), dir, &format!("127.0.0.1:{port}"));
    cmd.envs([
        ("REARVIEW_OIDC_ISSUER", provider.issuer().as_str()),
        ("REARVIEW_OIDC_CLIENT_ID", "rearview-console"),
        ("REARVIEW_OIDC_CLIENT_SECRET", "console secret"),
        ("REARVIEW_PUBLIC_URL", url.as_str()),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let served = served_url(dir, &mut child).unwrap();
    assert_eq!(served, url);
    (Killed(child), url)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_signs_in_at_the_provider_and_comes_back_with_the_consoles_roles() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let provider = OidcProvider::start(OidcConfig {
        client_id: "rearview-console".into(),
        client_secret: "console secret".into(),
        redirect_uris: vec![format!("http://127.0.0.1:{port}/signin/oidc/callback")],
        accounts: vec![
            account("ines", "ines@corp.example"),
            account("mallory", "mallory@corp.example"),
        ],
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = init(
        Path::new(BIN),
        dir.path(),
        &["--tenant", "t", "--admin", "ivan", "--approver", "rita"],
    )
    .unwrap();
    let (_console, url) = console(dir.path(), port, &provider);
    let admin = AdminClient::new(&url, &tokens.admin_token, None).unwrap();
    let _: Value = admin
        .post("/api/v1/people", &json!({"name": "ines@corp.example", "roles": ["investigator"]}))
        .await
        .unwrap();

    let b = Browser::start().unwrap();
    b.goto(&format!("{url}/clips")).unwrap();
    b.wait_for("#sso", WAIT).unwrap().click().unwrap();
    b.wait_for(LOGIN_FORM, WAIT).unwrap();
    assert!(b.current_url().unwrap().starts_with(&provider.issuer()), "at the provider");
    oidc::sign_in(&b, "ines", "ines password").unwrap();
    b.wait_for("nav .who", WAIT).unwrap();
    assert_eq!(b.current_url().unwrap(), format!("{url}/clips"), "back where they were going");
    let who = b.find("nav .who").unwrap().text().unwrap();
    assert_eq!(who, "ines@corp.example (investigator)", "the console's person and roles");
    assert!(b.cookies().unwrap().iter().any(|c| c.name == "rv_session" && c.http_only));

    // Someone the provider knows but the console does not.
    let other = Browser::start().unwrap();
    other.goto(&format!("{url}/signin/oidc?next=/clips")).unwrap();
    oidc::sign_in(&other, "mallory", "mallory password").unwrap();
    let error = other.wait_for("#signin-error", WAIT).unwrap().text().unwrap();
    assert!(error.contains("no console person is named \"mallory@corp.example\""), "{error}");
    assert!(!other.cookies().unwrap().iter().any(|c| c.name == "rv_session"));

    let lines: Vec<Value> = admin.get_all("/api/v1/audit").await.unwrap();
    let signin = lines.iter().find(|l| l["action"] == "signin").expect("the sign-in is audited");
    assert_eq!(signin["actor"], "person:ines@corp.example");
    assert_eq!(signin["details"]["via"], "oidc");
    let failed =
        lines.iter().find(|l| l["action"] == "signin.failed").expect("the refusal is audited");
    assert!(failed["details"]["reason"].as_str().unwrap().contains("mallory@corp.example"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_the_console_did_not_start_signs_nobody_in() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let provider = OidcProvider::start(OidcConfig {
        client_id: "rearview-console".into(),
        client_secret: "console secret".into(),
        redirect_uris: vec![format!("http://127.0.0.1:{port}/signin/oidc/callback")],
        accounts: vec![account("ines", "ines@corp.example")],
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    init(Path::new(BIN), dir.path(), &["--tenant", "t", "--admin", "ivan", "--approver", "rita"])
        .unwrap();
    let (_console, url) = console(dir.path(), port, &provider);
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for query in ["code=forged&state=st_forged", "state=st_x", "error=access_denied"] {
        let r = client.get(format!("{url}/signin/oidc/callback?{query}")).send().await.unwrap();
        assert_eq!(r.status(), 303, "{query}");
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/signin?error="), "{query} → {to}");
        assert!(r.headers().get("set-cookie").is_none(), "{query}: no session");
    }
    // The sign-in page offers single sign-on.
    let page = client.get(format!("{url}/signin")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"sso\""));
}
