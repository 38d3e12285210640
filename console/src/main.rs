//! `rearview-console`: parse the command line, then either run the server until a signal or
//! make one API call (see `cli`).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rearview_console::cli::{self, Cli, Command};
use rearview_console::{IngestLimits, Server, ServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Init { data, tenant, admin, approver, database, blobs } => {
            let blobs = rearview_console::blobs::BlobLocation::parse(&blobs, &data)?;
            let backends = rearview_console::Backends { database, blobs };
            // On a thread of its own: PostgreSQL's driver blocks, and this is a runtime's.
            let (dir, chosen) = (data.clone(), backends.clone());
            let out = tokio::task::spawn_blocking(move || {
                rearview_console::init_on(&dir, &chosen, &tenant, &admin, &approver)
            })
            .await??;
            println!("tenant {} created in {}", out.tenant_id, data.display());
            println!("database {}", backends.database.shown());
            println!("blobs {}", backends.blobs.to_url());
            println!("signing key id {}", out.signing_key_id);
            println!("sealing public key {}", out.sealing_public_key);
            println!("tokens below are shown once: give each only to its person, keep it secret");
            println!("admin token ({}): {}", out.admin_name, out.admin_token);
            println!("approver token ({}): {}", out.approver_name, out.approver_token);
            Ok(())
        }
        Command::Migrate { data, database } => {
            let version = tokio::task::spawn_blocking(move || {
                let db = match database {
                    Some(db) => db,
                    None => rearview_console::Database::recorded(&data)?,
                };
                let blobs = rearview_console::store::recorded_blobs(&data)?;
                let store = rearview_console::store::Store::open_with(&data, &db, &blobs)?;
                Ok::<_, rearview_console::ConsoleError>((db.shown(), store.schema_version()?))
            })
            .await??;
            println!("database {} at schema version {}", version.0, version.1);
            Ok(())
        }
        Command::Serve {
            data,
            listen,
            database,
            tls_cert,
            tls_key,
            insecure_http,
            header_timeout,
            idle_timeout,
            max_connections,
            max_uploads_per_device,
            indicator_triggers_per_minute,
            blobs,
            oidc_issuer,
            oidc_client_id,
            oidc_client_secret_file,
            oidc_claim,
            public_url,
        } => {
            let oidc = match oidc_issuer {
                None => None,
                Some(issuer) => {
                    let client_secret = match oidc_client_secret_file {
                        Some(path) => std::fs::read_to_string(&path)
                            .with_context(|| format!("read {}", path.display()))?
                            .trim()
                            .to_owned(),
                        None => std::env::var("REARVIEW_OIDC_CLIENT_SECRET").context(
                            "--oidc-issuer needs the client secret: --oidc-client-secret-file or $REARVIEW_OIDC_CLIENT_SECRET",
                        )?,
                    };
                    Some(rearview_console::web::oidc::OidcSettings {
                        issuer,
                        client_id: oidc_client_id.unwrap_or_default(),
                        client_secret,
                        public_url: public_url.unwrap_or_default(),
                        claim: oidc_claim,
                    })
                }
            };
            let ingest = IngestLimits {
                uploads_per_device: max_uploads_per_device,
                indicator_triggers_per_minute,
            };
            let config = ServerConfig {
                tls: tls_cert.zip(tls_key),
                insecure_http,
                header_read_timeout: Duration::from_secs(header_timeout),
                idle_timeout: Duration::from_secs(idle_timeout),
                max_connections,
                ingest,
                database,
                blobs: Some(cli::blob_location(blobs.as_deref(), &data)?),
                oidc,
                ..ServerConfig::plain(data.clone(), listen)
            };
            let mut server = Server::start(config).await?;
            let url_file = cli::url_file(&data);
            std::fs::write(&url_file, format!("{}\n", server.url()))
                .with_context(|| format!("write {}", url_file.display()))?;
            println!("listening on {}", server.url());
            notify_systemd("READY=1");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let stopped_by_itself = tokio::select! {
                r = server.wait() => Some(r),
                _ = tokio::signal::ctrl_c() => None,
                _ = term.recv() => None,
            };
            notify_systemd("STOPPING=1");
            match stopped_by_itself {
                Some(r) => r?,
                None => server.graceful_shutdown(Duration::from_secs(5)).await?,
            }
            let _ = std::fs::remove_file(&url_file);
            Ok(())
        }
        command => cli::run_api(command).await,
    }
}

/// Tells systemd (`Type=notify`) about a state change when it started us; a no-op otherwise.
/// Failure only costs systemd's view of readiness, so it is logged, never fatal.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|sock| sock.send_to(state.as_bytes(), &path));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}
