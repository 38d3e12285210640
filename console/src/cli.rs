//! The `rearview-console` subcommands. Local ones work on `--data DIR` directly (init, serve,
//! clip list/export); the others are API calls made with a person's token, printing the
//! console's JSON answer on stdout so scripts (the demo) can read it. `clip export` works on
//! the data directory but still acts as a person: it takes an investigator's token and checks
//! it against that directory's database (see [`crate::export`]).
//!
//! The console address comes from `--server URL`, else `$REARVIEW_CONSOLE`, else the
//! `console.url` file that `serve` writes into its data directory (`--data DIR`). The token
//! comes from `--token`, else `$REARVIEW_TOKEN`. Where the sealed segments are (`serve` and
//! `clip export`): `--blobs LOC` (or `$REARVIEW_BLOBS`), else where `init --blobs` recorded
//! them in `DATA/backends.json`, else `files` (see [`crate::blobs`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::AdminClient;

#[derive(Parser, Debug)]
#[command(name = "rearview-console", version, about = "Rearview reference console")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a tenant (keys, database, the first admin and the first approver: two people)
    /// in an empty directory. Prints each token once, on its own labelled line.
    Init {
        #[arg(long)]
        data: PathBuf,
        /// Tenant id (letters, digits, `._:@-`).
        #[arg(long, default_value = "rearview")]
        tenant: String,
        /// Name of the first admin.
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Name of the first approver (a different person from the admin).
        #[arg(long, default_value = crate::server::DEFAULT_APPROVER)]
        approver: String,
        /// Where the metadata lives: `sqlite` (DATA/console.db) or a
        /// `postgres://user@host:port/name` URL (password in it or in PGPASSWORD). Recorded in
        /// DATA/backends.json, so every later command on DATA opens it.
        #[arg(long, env = "REARVIEW_DATABASE", default_value = "sqlite", value_parser = parse_database)]
        database: crate::store::Database,
        /// Where sealed segments are kept: `files` (DATA/blobs), `file:///DIR`, or
        /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]` with credentials from the AWS
        /// variables. Recorded in DATA/backends.json as the database is.
        #[arg(long, env = "REARVIEW_BLOBS", value_name = "LOC", default_value = "files")]
        blobs: String,
    },
    /// Bring the database of DATA to this console's schema version (serve does it too, at
    /// start), and print the version; refuses a database newer than this console knows.
    Migrate {
        #[arg(long, env = "REARVIEW_DATA")]
        data: PathBuf,
        /// The database, if not the one DATA records (see `init --database`).
        #[arg(long, env = "REARVIEW_DATABASE", value_parser = parse_database)]
        database: Option<crate::store::Database>,
    },
    /// Run the server.
    Serve {
        #[arg(long, env = "REARVIEW_DATA")]
        data: PathBuf,
        /// Address to listen on; port 0 picks a free one (printed, and written to DATA/console.url).
        #[arg(long, env = "REARVIEW_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// The metadata database, if not the one DATA records (see `init --database`). Every
        /// replica of a tenant gives the same PostgreSQL database.
        #[arg(long, env = "REARVIEW_DATABASE", value_parser = parse_database)]
        database: Option<crate::store::Database>,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy only).
        #[arg(long)]
        insecure_http: bool,
        /// Seconds a client has to send a request head (and to finish the TLS handshake);
        /// also how long a keep-alive connection may wait between requests.
        #[arg(long, value_name = "SECS", default_value_t = crate::ServerConfig::HEADER_READ_TIMEOUT.as_secs())]
        header_timeout: u64,
        /// Seconds without a byte moving either way before a connection is closed (push
        /// streams ping more often than this).
        #[arg(long, value_name = "SECS", default_value_t = crate::ServerConfig::IDLE_TIMEOUT.as_secs())]
        idle_timeout: u64,
        /// Open connections at most (push streams included); more are refused at once.
        #[arg(long, value_name = "N", default_value_t = crate::ServerConfig::MAX_CONNECTIONS)]
        max_connections: usize,
        /// Segment uploads one device may have in flight; more are answered 429.
        #[arg(long, default_value_t = crate::IngestLimits::default().uploads_per_device)]
        max_uploads_per_device: usize,
        /// Indicator events per device per minute that may issue triggers; the rest are
        /// stored, counted and reported, not acted on.
        #[arg(long, default_value_t = crate::IngestLimits::default().indicator_triggers_per_minute)]
        indicator_triggers_per_minute: u32,
        /// Where sealed segments are kept: `files` (DATA/blobs), `file:///DIR`, or
        /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]` with credentials from the AWS
        /// variables (default: where DATA records them, else files).
        #[arg(long, env = "REARVIEW_BLOBS", value_name = "LOC")]
        blobs: Option<String>,
        /// Single sign-on: the OpenID provider's issuer URL (its discovery document is
        /// ISSUER/.well-known/openid-configuration). Needs --oidc-client-id, the client secret
        /// and --public-url.
        #[arg(long, env = "REARVIEW_OIDC_ISSUER", requires_all = ["oidc_client_id", "public_url"])]
        oidc_issuer: Option<String>,
        #[arg(long, env = "REARVIEW_OIDC_CLIENT_ID")]
        oidc_client_id: Option<String>,
        /// A file holding the client secret (or set $REARVIEW_OIDC_CLIENT_SECRET); never a flag,
        /// so it stays out of process listings.
        #[arg(long, value_name = "FILE")]
        oidc_client_secret_file: Option<PathBuf>,
        /// The claim a console person's name is matched to: email (which the provider must
        /// mark verified) or sub.
        #[arg(long, env = "REARVIEW_OIDC_CLAIM", default_value = "email")]
        oidc_claim: String,
        /// The console's URL as browsers reach it (the OIDC redirect URI is
        /// URL/signin/oidc/callback).
        #[arg(long, env = "REARVIEW_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// Clips: list, wait for one, export one, delete.
    #[command(subcommand)]
    Clip(ClipCommand),
    /// Legal holds.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Retention: how long clips are kept, and the job that deletes them.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// People and their roles.
    #[command(subcommand)]
    Person(PersonCommand),
    /// One-time device enrollment tokens.
    #[command(subcommand, name = "enrollment-token")]
    EnrollmentToken(EnrollmentTokenCommand),
    /// Capture approvals.
    #[command(subcommand)]
    Approval(ApprovalCommand),
    /// Triggers.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Policy capture settings.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Enrolled devices with last-seen, policy version and health.
    Devices(Api),
    /// The audit log.
    Audit(Api),
    /// Alerts and the clips attached to them.
    Alerts(Api),
    /// Indicator rules (which activity kinds issue triggers).
    #[command(subcommand)]
    Rules(RulesCommand),
}

/// Where the API is and who calls it.
#[derive(Args, Debug, Clone)]
pub struct Api {
    /// Console URL (default: $REARVIEW_CONSOLE).
    #[arg(long)]
    pub server: Option<String>,
    /// API token (default: $REARVIEW_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Data directory of a local console (its console.url gives the address).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// PEM of a CA to trust (a self-signed console certificate).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ClipCommand {
    /// List clips from the local database (no server needed).
    List {
        #[arg(long)]
        data: PathBuf,
    },
    /// Wait until a clip is complete (by id, trigger, alert or user) and print it.
    Wait {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long)]
        alert: Option<i64>,
        #[arg(long)]
        user: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Open a clip with the tenant key: frames as PNG, events as JSON Lines (0600, in a 0700
    /// directory). Or, with `--evidence DIR`, write an evidence package that anyone can check
    /// offline with `rearview-verify DIR`: the sealed segments as received, the device's signed
    /// chain, the console's signed records and custody log (see `rearview_evidence::package`).
    /// Investigators only (admin, approver and siem tokens are refused): the token is checked
    /// against DATA's database, and every export is audited (who, which clip, where, how many
    /// frames) and recorded in the clip's custody log.
    Export {
        id: String,
        #[arg(long)]
        data: PathBuf,
        /// Where the opened clip goes (a new or empty directory).
        #[arg(long, required_unless_present = "evidence", conflicts_with = "evidence")]
        out: Option<PathBuf>,
        /// Write an evidence package into this new (or empty) directory; the clip must be
        /// complete.
        #[arg(long, value_name = "DIR")]
        evidence: Option<PathBuf>,
        /// With --evidence: add the decoded frames (PNG) and events (JSON Lines) under open/,
        /// opened with the tenant secret key. Plaintext: handle the package accordingly.
        #[arg(long, requires = "evidence")]
        open: bool,
        /// An investigator's API token (default: $REARVIEW_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Where the console keeps sealed segments, as `serve --blobs` (default: where DATA
        /// records them, else files).
        #[arg(long, env = "REARVIEW_BLOBS", value_name = "LOC")]
        blobs: Option<String>,
    },
    /// Delete one clip (investigator), or with `--user` every clip of that user (admin, when
    /// the tenant's retention settings allow bulk deletion). Clips under a legal hold are
    /// kept; every deletion is audited and written to the clip's custody log.
    Delete {
        #[command(flatten)]
        api: Api,
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Why (required; kept in the audit and custody logs).
        #[arg(long)]
        reason: String,
    },
}

/// Legal holds: a hold on a clip or a user stops the clip's deletion.
#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Place a hold on a clip (`--clip`) or on every clip of a user, now and to come (`--user`).
    Place {
        #[command(flatten)]
        api: Api,
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        clip: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Release a hold.
    Release {
        #[command(flatten)]
        api: Api,
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Active holds (`--all`: released ones too).
    List {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        all: bool,
    },
}

/// How long clips are kept.
#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    Show(Api),
    /// Change the tenant's settings (admin).
    Set {
        #[command(flatten)]
        api: Api,
        /// Days a clip is kept after its window ends.
        #[arg(long)]
        days: Option<u32>,
        /// Whether an admin may delete all clips of one user at once: on or off.
        #[arg(long, value_parser = ["on", "off"])]
        bulk_delete: Option<String>,
    },
    /// Run the retention job now (admin); prints what it did.
    Run(Api),
}

#[derive(Subcommand, Debug)]
pub enum PersonCommand {
    /// Add a person (admin); prints their token once. An approver role stays pending until
    /// another approver confirms it (`person confirm`).
    Add {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        name: String,
        /// Comma-separated: admin, approver, investigator.
        #[arg(long)]
        role: String,
    },
    /// People, their roles and grants (admin or approver).
    List(Api),
    /// Set your own password for signing in to the web UI (any person, with their own
    /// token). Read from standard input (one line), never from the command line; at least
    /// 12 characters. Ends your open browser sessions.
    Password(Api),
    /// Grant a role to an existing person (admin). An approver grant stays pending until
    /// another approver confirms it.
    Grant {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        name: String,
        /// admin, approver or investigator.
        #[arg(long)]
        role: String,
    },
    /// Confirm a pending approver grant (an approver who neither made nor holds the grant).
    Confirm {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnrollmentTokenCommand {
    Create {
        #[command(flatten)]
        api: Api,
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalCommand {
    /// Ask for capture of a user (admin).
    Request {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        user: String,
        /// specific-activities or all-activities.
        #[arg(long, default_value = "specific-activities")]
        mode: String,
        #[arg(long)]
        justification: String,
        /// Lifetime in seconds (default 30 days).
        #[arg(long, default_value_t = 30 * 86400)]
        ttl: i64,
    },
    Approve {
        #[command(flatten)]
        api: Api,
        id: i64,
    },
    Reject {
        #[command(flatten)]
        api: Api,
        id: i64,
    },
    Revoke {
        #[command(flatten)]
        api: Api,
        id: i64,
    },
    List(Api),
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Ask the user's devices for the window around an event.
    Issue {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        user: String,
        /// Unix ms, or `now`.
        #[arg(long, default_value = "now")]
        event_time: String,
        #[arg(long, default_value_t = 60)]
        before: u32,
        #[arg(long, default_value_t = 30)]
        after: u32,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Show the capture settings.
    Show(Api),
    /// Replace the capture settings with a JSON document
    /// (`{"capture": {"enabled": true, "fps": 1}, "limits": {...}, ...}`).
    Set {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        json: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    Show(Api),
    /// Replace the rules: `[{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10}]`.
    Set {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        json: String,
    },
}

impl Api {
    fn client(&self) -> anyhow::Result<AdminClient> {
        let server = match (
            self.server.clone().or_else(|| std::env::var("REARVIEW_CONSOLE").ok()),
            &self.data,
        ) {
            (Some(s), _) => s,
            (None, Some(d)) => read_url(d)?,
            (None, None) => {
                bail!("say where the console is: --server URL, $REARVIEW_CONSOLE or --data DIR")
            }
        };
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("REARVIEW_TOKEN").ok())
            .context("an API token is needed: --token or $REARVIEW_TOKEN")?;
        Ok(AdminClient::new(&server, &token, self.ca_cert.as_deref())?)
    }
}

/// Where the sealed segments of the console in `data` are: `--blobs` (`arg`, or
/// `$REARVIEW_BLOBS`), else where `data` records them (`init --blobs`), else files.
pub fn blob_location(arg: Option<&str>, data: &Path) -> anyhow::Result<crate::blobs::BlobLocation> {
    Ok(match arg {
        Some(text) => crate::blobs::BlobLocation::parse(text, data)?,
        None => crate::store::recorded_blobs(data)?,
    })
}

/// The file `serve` writes with its URL.
pub fn url_file(data: &Path) -> PathBuf {
    data.join("console.url")
}

fn read_url(data: &Path) -> anyhow::Result<String> {
    let path = url_file(data);
    let url = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} not found: is 'rearview-console serve --data {}' running?",
            path.display(),
            data.display()
        )
    })?;
    Ok(url.trim().to_owned())
}

fn parse_database(text: &str) -> Result<crate::store::Database, String> {
    crate::store::Database::parse(text).map_err(|e| e.to_string())
}

/// The id of the person called `name` (in canonical form, as the console compares names).
async fn person_id(c: &AdminClient, name: &str) -> anyhow::Result<i64> {
    let people: Vec<crate::api::people::PersonView> = c.get("/api/v1/people").await?;
    let key = rearview_config::canonical_name(name);
    people
        .iter()
        .find(|p| rearview_config::canonical_name(&p.name) == key)
        .map(|p| p.id)
        .with_context(|| format!("no person named {name:?}; 'person list' shows who there is"))
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs an API subcommand (everything but init and serve, which `main` runs itself).
pub async fn run_api(command: Command) -> anyhow::Result<()> {
    let v: Value = match command {
        Command::Init { .. } | Command::Serve { .. } | Command::Migrate { .. } => {
            bail!("init, migrate and serve are run by main")
        }
        Command::Clip(ClipCommand::List { data }) => {
            let store = crate::store::Store::open(&data)?;
            let rows = store.read_now(|tx| tx.clip_summaries())?;
            Value::Array(rows)
        }
        Command::Clip(ClipCommand::Export { id, data, out, evidence, open, token, blobs }) => {
            let token = token.or_else(|| std::env::var("REARVIEW_TOKEN").ok());
            let blobs = blob_location(blobs.as_deref(), &data)?;
            match (evidence, out) {
                (Some(dir), _) => serde_json::to_value(crate::export::export_evidence_with_blobs(
                    &data,
                    &blobs,
                    token.as_deref(),
                    &id,
                    &dir,
                    open,
                )?)?,
                (None, Some(out)) => serde_json::to_value(crate::export::export_clip_with_blobs(
                    &data,
                    &blobs,
                    token.as_deref(),
                    &id,
                    &out,
                )?)?,
                (None, None) => bail!("say where the clip goes: --out DIR, or --evidence DIR"),
            }
        }
        Command::Clip(ClipCommand::Wait { api, id, trigger, alert, user, timeout }) => {
            let c = api.client()?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                if let Some(clip) = wait_step(&c, &id, &trigger, alert, &user).await? {
                    break clip;
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!("no complete clip matching the filter within {timeout} s");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Command::Person(PersonCommand::Add { api, name, role }) => {
            let roles: Vec<&str> = role.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
            api.client()?.post("/api/v1/people", &json!({ "name": name, "roles": roles })).await?
        }
        Command::Person(PersonCommand::List(api)) => api.client()?.get("/api/v1/people").await?,
        Command::Person(PersonCommand::Password(api)) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("read the password from stdin")?;
            let password = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
            api.client()?
                .put("/api/v1/people/me/password", &json!({ "password": password.as_str() }))
                .await?
        }
        Command::Person(PersonCommand::Grant { api, name, role }) => {
            let c = api.client()?;
            let id = person_id(&c, &name).await?;
            c.post(&format!("/api/v1/people/{id}/roles/{}", role.trim()), &json!({})).await?
        }
        Command::Person(PersonCommand::Confirm { api, name }) => {
            let c = api.client()?;
            let id = person_id(&c, &name).await?;
            c.post(&format!("/api/v1/people/{id}/roles/approver/confirm"), &json!({})).await?
        }
        Command::EnrollmentToken(EnrollmentTokenCommand::Create { api, ttl }) => {
            api.client()?.post("/api/v1/enrollment-tokens", &json!({ "ttl_secs": ttl })).await?
        }
        Command::Approval(ApprovalCommand::Request { api, user, mode, justification, ttl }) => {
            api.client()?
                .post(
                    "/api/v1/approvals",
                    &json!({ "user": user, "mode": mode, "justification": justification, "ttl_secs": ttl }),
                )
                .await?
        }
        Command::Approval(ApprovalCommand::Approve { api, id }) => {
            api.client()?.post(&format!("/api/v1/approvals/{id}/approve"), &json!({})).await?
        }
        Command::Approval(ApprovalCommand::Reject { api, id }) => {
            api.client()?.post(&format!("/api/v1/approvals/{id}/reject"), &json!({})).await?
        }
        Command::Approval(ApprovalCommand::Revoke { api, id }) => {
            api.client()?.post(&format!("/api/v1/approvals/{id}/revoke"), &json!({})).await?
        }
        Command::Approval(ApprovalCommand::List(api)) => {
            Value::Array(api.client()?.get_all("/api/v1/approvals").await?)
        }
        Command::Trigger(TriggerCommand::Issue { api, user, event_time, before, after, reason, device }) => {
            let event_time: i64 = if event_time == "now" {
                crate::store::now_ms()
            } else {
                event_time.parse().context("--event-time must be Unix milliseconds or 'now'")?
            };
            api.client()?
                .post(
                    "/api/v1/triggers",
                    &json!({ "user": user, "event_time": event_time, "before": before, "after": after,
                             "reason": reason, "device": device }),
                )
                .await?
        }
        Command::Policy(PolicyCommand::Show(api)) => api.client()?.get("/api/v1/policy/settings").await?,
        Command::Policy(PolicyCommand::Set { api, json }) => {
            let body: Value = serde_json::from_str(&json).context("--json is not JSON")?;
            api.client()?.put("/api/v1/policy/settings", &body).await?
        }
        Command::Rules(RulesCommand::Show(api)) => api.client()?.get("/api/v1/rules").await?,
        Command::Rules(RulesCommand::Set { api, json }) => {
            let body: Value = serde_json::from_str(&json).context("--json is not JSON")?;
            api.client()?.put("/api/v1/rules", &body).await?
        }
        Command::Clip(ClipCommand::Delete { api, id, user, reason }) => {
            let body = json!({ "reason": reason });
            match (id, user) {
                (Some(id), _) => {
                    api.client()?.post(&format!("/api/v1/clips/{}/delete", encode(&id)), &body).await?
                }
                (None, Some(user)) => {
                    let path = format!("/api/v1/users/{}/clips/delete", encode(&user));
                    api.client()?.post(&path, &body).await?
                }
                (None, None) => bail!("name a clip, or --user"),
            }
        }
        Command::Hold(HoldCommand::Place { api, clip, user, reason }) => {
            let body = match (clip, user) {
                (Some(clip), _) => json!({ "clip": clip, "reason": reason }),
                (None, Some(user)) => json!({ "user": user, "reason": reason }),
                (None, None) => bail!("name --clip or --user"),
            };
            api.client()?.post("/api/v1/holds", &body).await?
        }
        Command::Hold(HoldCommand::Release { api, id, reason }) => {
            let path = format!("/api/v1/holds/{}/release", encode(&id));
            api.client()?.post(&path, &json!({ "reason": reason })).await?
        }
        Command::Hold(HoldCommand::List { api, all }) => {
            api.client()?.get(&format!("/api/v1/holds?all={all}")).await?
        }
        Command::Retention(RetentionCommand::Show(api)) => {
            api.client()?.get("/api/v1/retention/settings").await?
        }
        Command::Retention(RetentionCommand::Set { api, days, bulk_delete }) => {
            let c = api.client()?;
            let mut settings: Value = c.get("/api/v1/retention/settings").await?;
            if let Some(days) = days {
                settings["days"] = json!(days);
            }
            if let Some(bulk) = bulk_delete {
                settings["bulk_delete"] = json!(bulk == "on");
            }
            c.put("/api/v1/retention/settings", &settings).await?
        }
        Command::Retention(RetentionCommand::Run(api)) => {
            api.client()?.post("/api/v1/retention/run", &json!({})).await?
        }
        // Lists print every item, page after page, as they did before lists had pages.
        Command::Devices(api) => Value::Array(api.client()?.get_all("/api/v1/devices").await?),
        Command::Audit(api) => Value::Array(api.client()?.get_all("/api/v1/audit").await?),
        Command::Alerts(api) => Value::Array(api.client()?.get_all("/api/v1/alerts").await?),
    };
    print(&v);
    Ok(())
}

/// One look for the clip `clip wait` waits for: by id, that clip alone
/// (`GET /api/v1/clips/{id}`, a 404 meaning not there yet); otherwise the oldest complete clip
/// matching the filters (`GET /api/v1/clips?complete=true&limit=1&…`), never the whole list.
async fn wait_step(
    c: &AdminClient,
    id: &Option<String>,
    trigger: &Option<String>,
    alert: Option<i64>,
    user: &Option<String>,
) -> anyhow::Result<Option<Value>> {
    let matches = |clip: &Value| {
        clip["complete"] == json!(true)
            && trigger.as_ref().is_none_or(|v| clip["trigger_id"] == json!(v))
            && alert.is_none_or(|v| clip["alert_id"] == json!(v))
            && user.as_ref().is_none_or(|v| {
                clip["user"].as_str().is_some_and(|u| crate::policy::same_principal(u, v))
            })
    };
    if let Some(id) = id {
        return match c.get::<Value>(&format!("/api/v1/clips/{}", encode(id))).await {
            Ok(clip) => Ok(Some(clip).filter(matches)),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
    let mut query = String::from("/api/v1/clips?complete=true&limit=1");
    if let Some(t) = trigger {
        query.push_str(&format!("&trigger={}", encode(t)));
    }
    if let Some(a) = alert {
        query.push_str(&format!("&alert={a}"));
    }
    if let Some(u) = user {
        query.push_str(&format!("&user={}", encode(u)));
    }
    let clips: Vec<Value> = c.get(&query).await?;
    Ok(clips.into_iter().find(matches))
}

/// Percent-encodes a path segment or query value (ids and principal names may hold `@`, `\`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
