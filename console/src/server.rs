//! Creating a tenant (`init`) and running the server (`serve`), as a library so tests can run
//! it in-process and the binary is a thin shell around it.
//!
//! Every connection is bounded ([`ServerConfig`], `serve` flags): a request head must arrive
//! within `header_read_timeout`, a connection on which nothing moves for `idle_timeout` is
//! closed, and at most `max_connections` are open at once (see [`conn`]).

mod conn;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api;
use crate::api::ingest::{IngestLimits, IngestState};
use crate::api::roles::{Granter, INIT};
use crate::auth::Role;
use crate::blobs::BlobLocation;
use crate::error::{ApiError, ConsoleError};
use crate::push::Hub;
use crate::state::AppState;
use crate::store::{now_ms, Database, Store, Tx};
use crate::tenant::Tenant;

/// What `init` produced. Each token is shown once and stored only as a hash.
#[derive(Debug)]
pub struct InitOutput {
    pub tenant_id: String,
    pub admin_name: String,
    pub admin_token: String,
    /// The first approver: a second person, so that capture can be approved at all without
    /// the admin making (and vouching for) an approver account.
    pub approver_name: String,
    pub approver_token: String,
    pub sealing_public_key: String,
    pub signing_key_id: String,
}

/// The first approver's name when `init` is not given one.
pub const DEFAULT_APPROVER: &str = "approver";

/// Creates a tenant in the empty (or absent) directory `data`, with the first admin
/// `admin_name` and the first approver [`DEFAULT_APPROVER`].
pub fn init(data: &Path, tenant_id: &str, admin_name: &str) -> Result<InitOutput, ConsoleError> {
    init_with_approver(data, tenant_id, admin_name, DEFAULT_APPROVER)
}

/// Creates a tenant in the empty (or absent) directory `data`: keys, database, the first admin
/// and the first approver, two different people (names differing in canonical form), each
/// with their own token. Both roles are granted by `console:init`; the approver's is active at
/// once, as nobody could confirm it yet.
pub fn init_with_approver(
    data: &Path,
    tenant_id: &str,
    admin_name: &str,
    approver_name: &str,
) -> Result<InitOutput, ConsoleError> {
    let backends = Backends::defaults(data);
    init_on(data, &backends, tenant_id, admin_name, approver_name)
}

/// Where a tenant's metadata and sealed segments are kept.
#[derive(Debug, Clone)]
pub struct Backends {
    pub database: Database,
    pub blobs: BlobLocation,
}

impl Backends {
    /// SQLite in `DATA/console.db`, files in `DATA/blobs`.
    pub fn defaults(data: &Path) -> Backends {
        Backends { database: Database::Sqlite, blobs: BlobLocation::Files(data.join("blobs")) }
    }
}

/// [`init_with_approver`] on `backends`, which are recorded in `data` (`DATA/backends.json`)
/// so that every later command on `data` opens them. A database that holds a tenant already is
/// refused, as a directory that does. Callable from anywhere (on PostgreSQL it connects on a
/// thread of its own when called inside an async runtime).
pub fn init_on(
    data: &Path,
    backends: &Backends,
    tenant_id: &str,
    admin_name: &str,
    approver_name: &str,
) -> Result<InitOutput, ConsoleError> {
    if rearview_config::canonical_name(admin_name) == rearview_config::canonical_name(approver_name)
    {
        return Err(ConsoleError::Config(format!(
            "the first admin ({admin_name:?}) and the first approver ({approver_name:?}) must be \
             two different people: give another --approver name"
        )));
    }
    crate::private::create_dir(data).map_err(|e| ConsoleError::io(data, e))?;
    if data.join("console.db").exists() || data.join("keys").exists() {
        return Err(ConsoleError::Config(format!(
            "{} already holds a tenant; use another directory or 'serve' this one",
            data.display()
        )));
    }
    init_into(data, backends, tenant_id, admin_name, approver_name).inspect_err(|_| {
        // Nothing of this init was here (checked above): what it made goes, so the same
        // command, corrected, can run again.
        for made in ["backends.json", "console.db", "console.db-wal", "console.db-shm"] {
            let _ = std::fs::remove_file(data.join(made));
        }
        let _ = std::fs::remove_dir_all(data.join("keys"));
    })
}

/// [`init_on`] past its checks of the directory: whatever fails here leaves things for it to
/// remove.
fn init_into(
    data: &Path,
    backends: &Backends,
    tenant_id: &str,
    admin_name: &str,
    approver_name: &str,
) -> Result<InitOutput, ConsoleError> {
    let database = &backends.database;
    let store = Store::open_with(data, database, &backends.blobs)?;
    if let Some(held) = store.read_now(|tx| tx.meta_get("tenant_id"))? {
        return Err(ConsoleError::Config(format!(
            "the database {} already holds tenant {held:?}; give another database, or copy the \
             data directory (keys and backends.json) of the console that made it to serve it",
            database.shown()
        )));
    }
    crate::store::record_backends(data, database, &backends.blobs)?;
    let tenant = Tenant::create(data, tenant_id)?;
    let granter = Granter { name: INIT, actor: INIT, confirms: true };
    let person = |tx: &Tx<'_>, name: &str, role: Role| {
        let now = tx.event_ms()?;
        api::people::create_person(tx, granter, name, &[role], now)
            .map_err(|e| ConsoleError::Config(format!("{name:?}: {}", e.message)))
    };
    // The tenant, its first two people and their audit lines: all of them, or none.
    let (admin, approver) = store.write_now(|tx| {
        // Under the one writer: of two inits racing on one database, the second finds the
        // first's tenant here and stops, writing nothing.
        if let Some(held) = tx.meta_get("tenant_id")? {
            return Err(ConsoleError::Config(format!(
                "the database {} already holds tenant {held:?}",
                database.shown()
            )));
        }
        tx.meta_set("tenant_id", tenant_id)?;
        tx.bump_policy_version()?;
        let admin = person(tx, admin_name, Role::Admin)?;
        let approver = person(tx, approver_name, Role::Approver)?;
        tx.audit(
            INIT,
            "tenant.create",
            tenant_id,
            serde_json::json!({ "admin": admin.name, "approver": approver.name }),
        )?;
        Ok::<_, ConsoleError>((admin, approver))
    })?;
    Ok(InitOutput {
        tenant_id: tenant_id.to_owned(),
        admin_name: admin.name,
        admin_token: admin.token,
        approver_name: approver.name,
        approver_token: approver.token,
        sealing_public_key: tenant.sealing_public_hex.clone(),
        signing_key_id: tenant.signing_key_id(),
    })
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    /// PEM certificate chain and private key; HTTPS when given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    pub insecure_http: bool,
    /// How long a client has to send a whole request head, counted from when the connection
    /// waits for one (so it also closes keep-alive connections idle between requests); it
    /// bounds the TLS handshake too. Default [`ServerConfig::HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (a body that
    /// stalls, a client that stops reading). Push streams ping more often than this.
    /// Default [`ServerConfig::IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Open connections at most, push streams included; more are refused at once. Keep the
    /// open-file limit above it (`LimitNOFILE` in the unit). Default
    /// [`ServerConfig::MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// What one device may ask of the console at once.
    pub ingest: IngestLimits,
    /// Where the metadata is; `None`: as the data directory records it (`init` wrote it),
    /// else SQLite in the data directory.
    pub database: Option<Database>,
    /// Where sealed segments are kept; `None`: as the data directory records it, else files
    /// in the data directory (`DATA/blobs`).
    pub blobs: Option<BlobLocation>,
    /// Single sign-on over OpenID Connect (`--oidc-*`); `None`: passwords only.
    pub oidc: Option<crate::web::oidc::OidcSettings>,
}

impl ServerConfig {
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Room for a few thousand devices (one push stream each, plus uploads).
    pub const MAX_CONNECTIONS: usize = 8192;

    /// Plain HTTP on `listen` (refused at start unless it is a loopback address): tests, the
    /// demo, a console behind nothing.
    pub fn plain(data: impl Into<PathBuf>, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data: data.into(),
            listen,
            tls: None,
            insecure_http: false,
            header_read_timeout: Self::HEADER_READ_TIMEOUT,
            idle_timeout: Self::IDLE_TIMEOUT,
            max_connections: Self::MAX_CONNECTIONS,
            ingest: IngestLimits::default(),
            database: None,
            blobs: None,
            oidc: None,
        }
    }

    /// Refuses bounds that would make the server unusable, naming the flag.
    fn check(&self) -> Result<(), ConsoleError> {
        if self.header_read_timeout.is_zero() {
            return Err(ConsoleError::Config("--header-timeout must be at least 1 second".into()));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConsoleError::Config("--idle-timeout must be at least 1 second".into()));
        }
        if self.max_connections == 0 {
            return Err(ConsoleError::Config("--max-connections must be at least 1".into()));
        }
        if let Some(nofile) = open_file_limit() {
            // A few dozen descriptors for the database, blobs being written, the log.
            if (nofile as usize) < self.max_connections.saturating_add(64) {
                tracing::warn!(
                    nofile,
                    max_connections = self.max_connections,
                    "the open-file limit is below --max-connections: past it, new connections \
                     fail to be accepted; raise it (LimitNOFILE=, ulimit -n) or lower --max-connections"
                );
            }
        }
        Ok(())
    }
}

/// The soft limit of open files of this process, when it can be read.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass, which lives on our stack.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some(lim.rlim_cur)
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    handle: axum_server::Handle,
    task: tokio::task::JoinHandle<Result<(), ConsoleError>>,
    ticker: tokio::task::JoinHandle<()>,
    /// The replica listener and poller (PostgreSQL only), stopped with the server.
    replicas: Option<crate::replicas::Replicas>,
    state: Arc<AppState>,
    pub scheme: &'static str,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// This process's replica id (what leases name).
    pub fn replica_id(&self) -> &str {
        &self.state.replica_id
    }

    /// The store this server runs on.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Stops at once: open connections (push streams, uploads) are cut, as in a crash of the
    /// network side. The database is consistent after every statement.
    pub async fn shutdown(self) -> Result<(), ConsoleError> {
        self.handle.shutdown();
        self.ticker.abort();
        drop(self.replicas);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ConsoleError::Task { what: "server task", source: e }),
        }
    }

    /// Stops taking new connections and gives open ones `grace` to finish.
    pub async fn graceful_shutdown(self, grace: Duration) -> Result<(), ConsoleError> {
        self.handle.graceful_shutdown(Some(grace));
        self.ticker.abort();
        drop(self.replicas);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ConsoleError::Task { what: "server task", source: e }),
        }
    }

    /// Waits until the server stops by itself (an I/O error).
    pub async fn wait(&mut self) -> Result<(), ConsoleError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ConsoleError::Task { what: "server task", source: e }),
        }
    }
}

pub struct Server;

/// The browser side's state: the tenant's pseudonym key (made on the first start that needs
/// it), the keys the player opens segments and checks records with.
async fn web_state(
    config: &ServerConfig,
    store: &Store,
    tenant_id: &str,
) -> Result<crate::state::WebState, ConsoleError> {
    let pseudonyms = store.write(crate::web::pseudonym::Pseudonyms::load_or_create).await?;
    let key = crate::tenant::load_sealing_key(&config.data)?;
    let record_key = crate::tenant::load_record_signer(&config.data)?.public_key();
    Ok(crate::state::WebState {
        secure_cookies: config.tls.is_some() || config.insecure_http,
        hashing: tokio::sync::Semaphore::new(crate::web::session::HASHING_AT_ONCE),
        pseudonyms,
        viewer: crate::web::viewer::Viewer::new(key, tenant_id),
        record_key,
        oidc: config.oidc.clone().map(crate::web::oidc::Oidc::new).transpose()?,
    })
}

impl Server {
    /// Opens the tenant in `config.data` and starts serving; returns once the socket is bound.
    pub async fn start(config: ServerConfig) -> Result<ServerHandle, ConsoleError> {
        if config.tls.is_none() && !config.insecure_http && !config.listen.ip().is_loopback() {
            return Err(ConsoleError::Config(format!(
                "refusing plain HTTP on {}: give --tls-cert and --tls-key, listen on 127.0.0.1, \
                 or pass --insecure-http behind a TLS-terminating proxy",
                config.listen
            )));
        }
        config.check()?;
        config.ingest.validate().map_err(ConsoleError::Config)?;
        let (data, database, blobs) =
            (config.data.clone(), config.database.clone(), config.blobs.clone());
        let store = tokio::task::spawn_blocking(move || {
            let database = match database {
                Some(db) => db,
                None => Database::recorded(&data)?,
            };
            let blobs = match blobs {
                Some(b) => b,
                None => crate::store::recorded_blobs(&data)?,
            };
            Store::open_with(&data, &database, &blobs)
        })
        .await
        .map_err(|e| ConsoleError::Task { what: "opening the store", source: e })??;
        if let Err(why) = store.blobs().health().await {
            tracing::warn!(%why, "blob store not usable at start: uploads answer 503 until it is");
        }
        let tenant_id = store.read(|tx| tx.meta_get("tenant_id")).await?.ok_or_else(|| {
            ConsoleError::Config(format!(
                "{} holds no tenant: run 'rearview-console init --data {}' first",
                config.data.display(),
                config.data.display()
            ))
        })?;
        let tenant = Tenant::load(&config.data, &tenant_id)?;
        let web = web_state(&config, &store, &tenant_id).await?;
        let state = Arc::new(AppState {
            store,
            tenant,
            hub: Hub::default(),
            policy_cache: Mutex::new(None),
            stream_ping: conn::stream_ping(config.idle_timeout),
            ingest: IngestState::new(config.ingest.clone()),
            replica_id: crate::replicas::replica_id(),
            web,
            retention: Default::default(),
        });
        api::ingest::clear_incoming(&state);
        let app = api::router(state.clone());

        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| ConsoleError::Io { what: format!("bind {}", config.listen), source: e })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ConsoleError::Io { what: "listening socket".into(), source: e })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ConsoleError::Io { what: "listening socket".into(), source: e })?;
        let handle = axum_server::Handle::new();
        let service = app.into_make_service();
        let limit =
            |plain| conn::LimitAcceptor::new(config.max_connections, config.idle_timeout, plain);
        let (scheme, task) = match &config.tls {
            Some((cert, key)) => {
                let tls = tls_config(cert, key)?;
                let mut server = axum_server::from_tcp_rustls(listener, tls)
                    .map(|tls| {
                        tls.handshake_timeout(config.header_read_timeout).acceptor(limit(false))
                    })
                    .handle(handle.clone());
                bound_heads(server.http_builder(), config.header_read_timeout);
                (
                    "https",
                    tokio::spawn(async move {
                        server
                            .serve(service)
                            .await
                            .map_err(|e| ConsoleError::Io { what: "serving".into(), source: e })
                    }),
                )
            }
            None => {
                let mut server =
                    axum_server::from_tcp(listener).acceptor(limit(true)).handle(handle.clone());
                bound_heads(server.http_builder(), config.header_read_timeout);
                (
                    "http",
                    tokio::spawn(async move {
                        server
                            .serve(service)
                            .await
                            .map_err(|e| ConsoleError::Io { what: "serving".into(), source: e })
                    }),
                )
            }
        };
        let ticker = tokio::spawn(tick(state.clone()));
        let replicas = crate::replicas::start(&state);
        tracing::info!(%addr, scheme, tenant = ?tenant_id, replica = ?state.replica_id, "console serving");
        Ok(ServerHandle { addr, handle, task, ticker, replicas, state, scheme })
    }
}

/// hyper's own bound on request heads; it needs a timer to run at all, which axum-server does
/// not set (without one a client could send half a request line and hold the connection).
fn bound_heads(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    header_read_timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
}

fn tls_config(
    cert: &Path,
    key: &Path,
) -> Result<axum_server::tls_rustls::RustlsConfig, ConsoleError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConsoleError::Config(format!("TLS certificate {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConsoleError::Config(format!("TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConsoleError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConsoleError::Config(format!("TLS certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)))
}

/// The lease the time-driven policy work runs under (see [`crate::store::lease`]).
pub const EXPIRY_LEASE: &str = "policy-expiry";

/// How long the expiry lease lasts; its holder renews it when half has passed, and another
/// replica takes it over this long after the holder stopped.
pub const EXPIRY_LEASE_MS: i64 = 10_000;

/// Time-driven policy changes: approvals reaching their expiry (each written to the audit log),
/// and a daily re-signing so devices never run into the bundle's own expiry. One process does
/// them, whichever holds the expiry lease; the others only read who holds it.
///
/// Expiries are looked for since the stored bundle was signed (or since the last expiry handled,
/// if later), as the database records both, not since this process started: an approval that
/// expired while the console was down must still raise the version, or the stored bundle (which
/// devices refuse for carrying an expired approval) would be served on; and a replica taking
/// the lease over handles exactly what the last holder did not.
/// How often ended web sessions are swept away.
const WEB_SWEEP_EVERY_MS: i64 = 60_000;
/// How long a sign-in may wait at the OpenID provider.
const WEB_PENDING_MS: i64 = 10 * 60_000;

async fn tick(state: Arc<AppState>) {
    let mut held_until = 0i64;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        let now = now_ms();
        if held_until - now < EXPIRY_LEASE_MS / 2 {
            match take_expiry_lease(&state, now).await {
                Ok(true) => held_until = now + EXPIRY_LEASE_MS,
                Ok(false) => {
                    held_until = 0;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = ?e.to_string(), "could not take the expiry lease; trying again");
                    held_until = 0;
                    continue;
                }
            }
        }
        if now % WEB_SWEEP_EVERY_MS < 1000 {
            // Ended sessions, views and abandoned SSO sign-ins, once a minute, by the lease
            // holder.
            let oidc_before = now - WEB_PENDING_MS;
            if let Err(e) = state.store.write(move |tx| tx.sweep_web(now, oidc_before)).await {
                tracing::warn!(error = ?e.to_string(), "could not sweep ended web sessions; trying again");
            }
            // The daily retention job (crate::retention), when due, in a task of its own: a
            // long run holds up nothing here.
            let st = state.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::retention::run_if_due(&st.store, &st.retention, now).await {
                    tracing::warn!(error = ?e.to_string(), "retention run failed; the next check tries again");
                }
            });
        }
        // A read first: most seconds nothing expires, and nothing is written.
        match state.store.read(move |tx| expiry_due(tx, now)).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(error = ?e.to_string(), "could not look for expired approvals; trying again");
                continue;
            }
        }
        let signer = state.clone();
        match state.store.write(move |tx| expire_and_sign(tx, &signer, now)).await {
            Ok(true) => state.hub.policy_changed(),
            Ok(false) => {}
            // Nothing recorded: the next tick tries the same window again.
            Err(e) => {
                tracing::warn!(error = ?e.message, "could not handle expired approvals; trying again")
            }
        }
    }
}

/// Takes or renews the expiry lease for this process; false when another holds it. Who holds
/// it is read first, so a process that does not hold a live lease writes nothing.
async fn take_expiry_lease(state: &Arc<AppState>, now: i64) -> Result<bool, ConsoleError> {
    let me = state.replica_id.clone();
    let held = state.store.read(|tx| tx.lease_holder(EXPIRY_LEASE)).await?;
    if held.as_ref().is_some_and(|(holder, until)| *holder != me && *until > now) {
        return Ok(false);
    }
    state.store.write(move |tx| tx.take_lease(EXPIRY_LEASE, &me, now, EXPIRY_LEASE_MS)).await
}

/// Whether [`expire_in`] has anything to do at `now`.
fn expiry_due(tx: &Tx<'_>, now: i64) -> Result<bool, ConsoleError> {
    let last = signed_or_handled_ms(tx)?.unwrap_or(0);
    let signed = tx.meta_get("policy_signed_ms")?.and_then(|v| v.parse::<i64>().ok());
    let stale = now - signed.unwrap_or(now) > 24 * 3600 * 1000;
    Ok(stale || !tx.approvals_expiring(last, now)?.is_empty())
}

/// When the stored bundle was signed or the last expiries were handled, whichever is later.
fn signed_or_handled_ms(tx: &Tx<'_>) -> Result<Option<i64>, ConsoleError> {
    let ms = |key: &str| -> Result<Option<i64>, ConsoleError> {
        Ok(tx.meta_get(key)?.and_then(|v| v.parse().ok()))
    };
    Ok(ms("policy_signed_ms")?.max(ms("expiries_handled_ms")?))
}

/// [`expire_in`], and when it raised the version, the bundle of the new version signed and
/// stored in the same write: a tick must not find the old bundle stale again (and raise the
/// version again) just because no device asked for the new one.
fn expire_and_sign(tx: &Tx<'_>, state: &AppState, now: i64) -> Result<bool, ApiError> {
    let raised = expire_in(tx, now)?;
    if raised {
        crate::policy::stored_or_signed(tx, state)?;
    }
    Ok(raised)
}

/// One tick in `tx`: approvals that expired in `(last, now]` (`last`: when the bundle was
/// signed or expiries were last handled) are audited (`approval.expire`) and recorded as
/// handled, and the policy version is raised for them or for a bundle signed over a day ago,
/// all together or not at all. True when the version was raised.
fn expire_in(tx: &Tx<'_>, now: i64) -> Result<bool, ConsoleError> {
    let last = signed_or_handled_ms(tx)?.unwrap_or(0);
    if last >= now {
        return Ok(false);
    }
    let expired = tx.approvals_expiring(last, now)?;
    let signed = tx.meta_get("policy_signed_ms")?.and_then(|v| v.parse::<i64>().ok());
    let stale = now - signed.unwrap_or(now) > 24 * 3600 * 1000;
    if expired.is_empty() && !stale {
        return Ok(false);
    }
    tx.bump_policy_version()?;
    for a in &expired {
        let details = serde_json::json!({ "user": a.user, "mode": a.mode });
        tx.audit("console", "approval.expire", &format!("approval:{}", a.id), details)?;
    }
    if !expired.is_empty() {
        // A restart must not announce these expiries again.
        tx.meta_set("expiries_handled_ms", &now.to_string())?;
    }
    Ok(true)
}
