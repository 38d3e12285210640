//! A real OpenID Connect provider in its own process, for the console's sign-in tests: npm's
//! `oidc-provider` (pinned, [`OIDC_PROVIDER_VERSION`]) run by `node` with a script of ours
//! (`testkit/assets/oidc-provider.js`) that adds a login form checking the configured
//! passwords, and grants the one client what it asks for (no consent screen).
//!
//! ```text
//! start()    node DIR/oidc-provider.mjs DIR/config.json (free loopback port), NODE_PATH at
//!            NODE_DIR/node_modules; ready once /.well-known/openid-configuration answers
//!            a reaper (`process.rs`) kills it when the test process dies
//! sign-in    client → /auth?...&code_challenge=..  303 → /interaction/UID: the login form
//!            (LOGIN_FIELD, PASSWORD_FIELD, SUBMIT_BUTTON); a wrong password shows it again
//!            with LOGIN_ERROR (401); a right one 303s on to redirect_uri?code=..&state=..&iss=..
//! provider   issuer http://127.0.0.1:PORT; one confidential client (authorization_code,
//!            response_type code, PKCE S256 required, the secret sent as TokenAuth says);
//!            scopes openid email profile; ID tokens (RS256, a key made at start) carry sub,
//!            email, email_verified, nonce
//! drop       SIGKILL and reap (the reaper too), remove DIR
//! ```
//!
//! Everything the provider holds (sessions, codes) is in its memory: a new one knows nobody.
//! [`NODE_DIR`] is where scripts/setup-debian.sh installs the package; `REARVIEW_TEST_NODE_DIR`
//! overrides it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{Browser, BrowserError};
use crate::process::{self, Guarded};

/// The `oidc-provider` version the script is written for (8.x runs on node 18 and 20).
pub const OIDC_PROVIDER_VERSION: &str = "8.8.1";
/// Where scripts/setup-debian.sh installs it (`NODE_DIR/node_modules/oidc-provider`).
pub const NODE_DIR: &str = "/usr/local/lib/rearview-test-node";
/// The environment variable that overrides [`NODE_DIR`].
pub const NODE_DIR_ENV: &str = "REARVIEW_TEST_NODE_DIR";

/// The login form.
pub const LOGIN_FORM: &str = "#login-form";
/// The login (user name) input of the form.
pub const LOGIN_FIELD: &str = "#login";
/// The password input of the form.
pub const PASSWORD_FIELD: &str = "#password";
/// The form's submit button.
pub const SUBMIT_BUTTON: &str = "#login-submit";
/// What the form shows after a wrong login or password.
pub const LOGIN_ERROR: &str = "#login-error";

/// The script, written to the provider's directory at start.
const SCRIPT: &str = include_str!("../assets/oidc-provider.js");
/// How long node may take to answer the discovery document.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The script's exit status when its port was taken.
const EXIT_PORT_TAKEN: i32 = 2;
/// How long the login form may take to show, in [`sign_in`].
const FORM_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum OidcLaunchError {
    /// Permanent: a test's configuration cannot work.
    #[error("invalid OIDC provider configuration: {0}")]
    Config(String),
    /// Permanent until someone installs it.
    #[error(
        "cannot run node (install the Debian packages `nodejs npm`; scripts/setup-debian.sh \
         does): {0}"
    )]
    Spawn(#[source] std::io::Error),
    /// Permanent until someone installs it.
    #[error(
        "oidc-provider {OIDC_PROVIDER_VERSION} is not installed in {dir} ({found}); run \
         scripts/setup-debian.sh (or npm install --prefix {dir} \
         oidc-provider@{OIDC_PROVIDER_VERSION})", dir = dir.display()
    )]
    NotInstalled { dir: PathBuf, found: String },
    /// Retryable: resource exhaustion.
    #[error("no free loopback port or temp dir: {0}")]
    Resources(#[source] std::io::Error),
    /// Retryable when the machine is merely overloaded; otherwise the provider's own words are
    /// in `stderr`.
    #[error(
        "the OIDC provider on port {port} did not answer its discovery document within \
         {limit:?} (exit status: {status:?}); its stderr ends with: {stderr}"
    )]
    NotAnswering {
        port: u16,
        limit: Duration,
        status: Option<std::process::ExitStatus>,
        stderr: String,
    },
}

/// A person who can sign in at the provider.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcAccount {
    /// What they type in [`LOGIN_FIELD`].
    pub login: String,
    /// What they type in [`PASSWORD_FIELD`].
    pub password: String,
    /// The `sub` claim of their tokens.
    pub sub: String,
    /// The `email` claim (always `email_verified: true`).
    pub email: String,
}

impl fmt::Debug for OidcAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcAccount")
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .field("sub", &self.sub)
            .field("email", &self.email)
            .finish()
    }
}

/// How the client authenticates at the token endpoint. oidc-provider binds one method to a
/// client and refuses the other, so the test says which its client uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenAuth {
    /// `Authorization: Basic base64(urlencode(id):urlencode(secret))`, the OIDC default.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl TokenAuth {
    fn name(self) -> &'static str {
        match self {
            TokenAuth::ClientSecretBasic => "client_secret_basic",
            TokenAuth::ClientSecretPost => "client_secret_post",
        }
    }
}

/// The provider's one client and its accounts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OidcConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Exact URLs the client may be sent back to (`redirect_uri` must be one of them).
    pub redirect_uris: Vec<String>,
    pub accounts: Vec<OidcAccount>,
    pub token_auth: TokenAuth,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .field("accounts", &self.accounts)
            .field("token_auth", &self.token_auth)
            .finish()
    }
}

/// A running provider, killed and reaped on drop.
pub struct OidcProvider {
    _process: Guarded,
    port: u16,
    /// Holds the script, its config and its stderr; removed after the provider is gone (fields
    /// drop in order, `process` first).
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// The provider on a free loopback port, once its discovery document answers (see the
    /// module docs).
    pub fn start(config: OidcConfig) -> Result<OidcProvider, OidcLaunchError> {
        validate(&config)?;
        let node_modules = node_dir().join("node_modules");
        installed(&node_modules)?;
        let dir = tempfile::Builder::new()
            .prefix("rearview-oidc-")
            .tempdir()
            .map_err(OidcLaunchError::Resources)?;
        let script = dir.path().join("oidc-provider.mjs");
        fs::write(&script, SCRIPT).map_err(OidcLaunchError::Resources)?;
        let config_path = dir.path().join("config.json");
        let log_path = dir.path().join("stderr.log");
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
        // Another port only when the script says this one was taken meanwhile.
        let taken = |e: &OidcLaunchError| {
            matches!(e, OidcLaunchError::NotAnswering { status: Some(s), .. }
                if s.code() == Some(EXIT_PORT_TAKEN))
        };
        process::on_a_free_port(OidcLaunchError::Resources, taken, |port| {
            let issuer = format!("http://127.0.0.1:{port}");
            let accounts: Vec<Value> = config
                .accounts
                .iter()
                .map(|a| {
                    json!({ "login": a.login, "password": a.password, "sub": a.sub, "email": a.email })
                })
                .collect();
            let script_config = json!({
                "port": port,
                "issuer": issuer,
                "version": OIDC_PROVIDER_VERSION,
                "client": {
                    "client_id": config.client_id,
                    "client_secret": config.client_secret,
                    "redirect_uris": config.redirect_uris,
                    "token_endpoint_auth_method": config.token_auth.name(),
                },
                "accounts": accounts,
            });
            fs::write(&config_path, script_config.to_string())
                .map_err(OidcLaunchError::Resources)?;
            let log = fs::File::create(&log_path).map_err(OidcLaunchError::Resources)?;
            let mut server = Guarded::spawn(
                Command::new("node")
                    .arg(&script)
                    .arg(&config_path)
                    .env("NODE_PATH", &node_modules)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .map_err(OidcLaunchError::Spawn)?;
            // On failure, dropping `server` kills it.
            wait_ready(&agent, &mut server, port, &log_path)?;
            Ok((server, port))
        })
        .map(|(process, port)| OidcProvider { _process: process, port, _dir: dir })
    }

    /// `http://127.0.0.1:PORT`, the `iss` of its tokens (no trailing slash).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ISSUER/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// The port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Fills and submits the provider's login form in `browser` (which a client's redirect has
/// brought there, or is on its way): waits for [`LOGIN_FIELD`], types `login` and `password`,
/// clicks [`SUBMIT_BUTTON`], and returns once the page that answers has loaded. Whether that
/// signed in is for the caller to see: the browser is then at the client's redirect URI, or
/// back at the form showing [`LOGIN_ERROR`].
pub fn sign_in(browser: &Browser, login: &str, password: &str) -> Result<(), BrowserError> {
    let field = browser.wait_for(LOGIN_FIELD, FORM_TIMEOUT)?;
    field.clear()?;
    field.send_keys(login)?;
    let secret = browser.find(PASSWORD_FIELD)?;
    secret.clear()?;
    secret.send_keys(password)?;
    // Marks this document, so that the wait below sees the next one, not this one (a form
    // showing LOGIN_ERROR looks just like the one that answers a wrong password again).
    browser.execute("window.__rearviewSignIn = true;", Value::Null)?;
    browser.find(SUBMIT_BUTTON)?.click()?;
    let end = Instant::now() + FORM_TIMEOUT;
    let next = "return !window.__rearviewSignIn && document.readyState === 'complete';";
    loop {
        // Errors while the old document goes away are expected: ask again.
        let last = match browser.execute(next, Value::Null) {
            Ok(Value::Bool(true)) => return Ok(()),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        if Instant::now() >= end {
            let what = "the page after the login form".to_owned();
            return Err(BrowserError::Timeout { what, limit: FORM_TIMEOUT, last });
        }
        std::thread::sleep(crate::POLL);
    }
}

fn validate(config: &OidcConfig) -> Result<(), OidcLaunchError> {
    let refuse = |why: &str| Err(OidcLaunchError::Config(why.to_owned()));
    if config.client_id.is_empty() || config.client_secret.is_empty() {
        return refuse("the client needs a client_id and a client_secret");
    }
    if config.redirect_uris.is_empty() {
        return refuse("the client needs at least one redirect_uri");
    }
    if let Some(bad) = config.redirect_uris.iter().find(|u| !u.starts_with("http")) {
        return Err(OidcLaunchError::Config(format!("redirect_uri {bad:?} is not an http(s) URL")));
    }
    let mut logins: Vec<&str> = config.accounts.iter().map(|a| a.login.as_str()).collect();
    logins.sort_unstable();
    if let Some(twice) = logins.windows(2).find(|w| w[0] == w[1]) {
        return Err(OidcLaunchError::Config(format!("two accounts have the login {:?}", twice[0])));
    }
    if config.accounts.iter().any(|a| a.sub.is_empty() || a.login.is_empty()) {
        return refuse("every account needs a login and a sub");
    }
    Ok(())
}

/// [`NODE_DIR`], or what [`NODE_DIR_ENV`] says.
fn node_dir() -> PathBuf {
    std::env::var_os(NODE_DIR_ENV).map_or_else(|| PathBuf::from(NODE_DIR), PathBuf::from)
}

/// Checks that `node_modules` holds oidc-provider at [`OIDC_PROVIDER_VERSION`].
fn installed(node_modules: &Path) -> Result<(), OidcLaunchError> {
    let manifest = node_modules.join("oidc-provider/package.json");
    let dir = node_modules.parent().unwrap_or(node_modules).to_owned();
    let found = match fs::read(&manifest) {
        Err(e) => format!("{}: {e}", manifest.display()),
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v["version"] == OIDC_PROVIDER_VERSION => return Ok(()),
            Ok(v) => format!("version {} is there", v["version"]),
            Err(e) => format!("{}: {e}", manifest.display()),
        },
    };
    Err(OidcLaunchError::NotInstalled { dir, found })
}

/// Polls the discovery document until it answers with this issuer, or node died, or
/// [`START_TIMEOUT`].
fn wait_ready(
    agent: &ureq::Agent,
    server: &mut Guarded,
    port: u16,
    log: &Path,
) -> Result<(), OidcLaunchError> {
    let issuer = format!("http://127.0.0.1:{port}");
    let url = format!("{issuer}/.well-known/openid-configuration");
    let answers = || {
        agent
            .get(&url)
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .is_some_and(|d| d["issuer"] == issuer.as_str())
    };
    server.wait_ready(START_TIMEOUT, answers).map_err(|status| {
        let stderr = process::tail(log);
        OidcLaunchError::NotAnswering { port, limit: START_TIMEOUT, status, stderr }
    })
}
