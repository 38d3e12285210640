//! Starting the daemon: the state it opens (uploader, ring, the clips being collected), the admin socket,
//! and the watchers (sessions, indicators) whose events the loop handles.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the uploader state in {dir}: {source}")]
    Uploader { dir: PathBuf, source: rearview_uploader::UploadError },
    #[error("cannot open the ring in {dir}: {source}")]
    Ring { dir: PathBuf, source: rearview_capture::ring::RingError },
    #[error("cannot read the clip records in the spool under {dir}: {source}")]
    ClipRecords { dir: PathBuf, source: rearview_uploader::UploadError },
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot bind the admin socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("enrollment failed: {0}")]
    Enroll(rearview_uploader::UploadError),
    #[error("cannot start the evidence store's thread: {0}")]
    StoreThread(std::io::Error),
    #[error("the evidence store's thread stopped (it panicked); restart to recover the ring and the clips")]
    StoreStopped,
}

impl DaemonError {
    /// Whether starting again later may work (a busy disk, a console that was down).
    pub fn is_retryable(&self) -> bool {
        match self {
            DaemonError::Uploader { source, .. }
            | DaemonError::ClipRecords { source, .. }
            | DaemonError::Enroll(source) => source.is_retryable(),
            DaemonError::Ring { source, .. } => source.is_retryable(),
            // A restart recovers the ring and the clip records.
            DaemonError::StoreThread(_) | DaemonError::StoreStopped => true,
            DaemonError::DataDir { .. } | DaemonError::Socket { .. } | DaemonError::Signals(_) => {
                false
            }
        }
    }
}

/// How to build the daemon.
#[derive(Clone, Debug)]
pub struct Options {
    pub config: AgentConfig,
    /// Re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// The executable started as `<exe> __worker` (normally `rearviewd` itself).
    pub worker_exe: PathBuf,
    /// Enroll with this one-time token at start if not enrolled yet.
    pub enroll_token: Option<String>,
}

impl Options {
    pub fn new(config: AgentConfig, worker_exe: PathBuf) -> Self {
        Self { config, config_path: None, worker_exe, enroll_token: None }
    }
}

impl Daemon {
    /// Opens state, binds the socket and starts the watchers; nothing is captured until
    /// [`run`](Self::run) has checked the policy.
    pub async fn start(opts: Options) -> Result<Daemon, DaemonError> {
        let config = &opts.config;
        let data_dir = config.data_dir().to_path_buf();
        std::fs::create_dir_all(&data_dir)
            .map_err(|source| DaemonError::DataDir { dir: data_dir.clone(), source })?;
        let uploader = open_uploader(config, &data_dir)?;
        if let Some(token) = &opts.enroll_token {
            if !uploader.is_enrolled() {
                let host = hostname();
                let id = uploader.enroll(token, &host).await.map_err(DaemonError::Enroll)?;
                tracing::info!(device = id.device_id, tenant = id.tenant_id, "enrolled");
            }
        }
        let commands = uploader.subscribe();
        let uploader_running = start_uploader(&uploader);
        let policy = uploader.policy();
        let ring_retention = ring_retention(config, policy.as_ref());
        let mut ring = open_ring(config, ring_retention)?;
        let (clips, problems) = ClipBook::load(uploader.spool(), &mut ring, &data_dir)
            .map_err(|source| DaemonError::ClipRecords { dir: data_dir.clone(), source })?;
        let errors = startup_errors(problems);

        let rule = admin::AccessRule::new(config.admin_group());
        let listener = admin::bind(config.socket_path(), rule.admin_gid()).map_err(|e| {
            DaemonError::Socket { path: config.socket_path().to_path_buf(), source: e }
        })?;
        let (admin_tx, admin_rx) = mpsc::channel(16);
        tokio::spawn(admin::serve(listener, rule, admin_tx));

        let (sessions_tx, sessions_rx) = watch::channel(SessionsState::default());
        tokio::spawn(sessions::watch(config.fixed_sessions().to_vec(), sessions_tx));

        let (activity_tx, activity_rx) = mpsc::channel(64);
        let places = Places {
            removable_roots: config.removable_roots().to_vec(),
            watched_folders: config.watched_folders().to_vec(),
        };
        if let Err(e) = indicators::spawn(places, activity_tx) {
            tracing::warn!(error = %e, "file-copy indicators unavailable");
        }

        let (worker_tx, worker_rx) = crate::worker::inbox();
        let (completed_tx, completed_rx) = mpsc::unbounded_channel();
        let cpu = cpu_settings(policy.as_ref());
        let pace = Pace {
            segment_secs: policy.as_ref().map_or(10, |p| p.payload().capture.segment_secs),
            base_fps_milli: cpu.base_fps_milli,
        };
        let held = store::Held { ring, ring_retention, clips };
        let (store, store_events) = spawn_store(config, &uploader, held, pace)?;
        Ok(Daemon {
            opts,
            uploader,
            uploader_running,
            commands,
            policy,
            store,
            store_events,
            sessions: HashMap::new(),
            sessions_rx,
            worker_tx,
            worker_rx,
            admin_rx,
            activity_rx,
            completed_tx,
            completed_rx,
            cpu: CpuMeter::new(),
            throttle: Throttle::new(cpu.limit_percent, cpu.base_fps_milli),
            rate_milli: cpu.base_fps_milli,
            cpu_percent: None,
            errors,
            indicators_seen: 0,
            draining: false,
            next_worker: 0,
        })
    }
}

/// Problems found at start, logged and kept for `rearview status`.
fn startup_errors(problems: Vec<String>) -> Vec<ErrorRecord> {
    problems
        .into_iter()
        .map(|p| {
            tracing::warn!("{p}");
            ErrorRecord { at_utc_micros: now_micros(), what: p }
        })
        .collect()
}

/// Starts the evidence store's thread with what it takes over; its handle and its events.
fn spawn_store(
    config: &AgentConfig,
    uploader: &Arc<Uploader>,
    held: store::Held,
    pace: Pace,
) -> Result<(StoreHandle, mpsc::UnboundedReceiver<store::Event>), DaemonError> {
    let (events, store_events) = mpsc::unbounded_channel();
    let store = Store::new(config.clone(), uploader.clone(), held, pace, events)
        .spawn()
        .map_err(DaemonError::StoreThread)?;
    Ok((store, store_events))
}

pub(super) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Starts the uploader's stream and send loops once enrolled; a failure is logged (the daemon
/// runs, records and spools without them).
pub(super) fn start_uploader(uploader: &Arc<Uploader>) -> Option<rearview_uploader::Running> {
    if !uploader.is_enrolled() {
        return None;
    }
    uploader.start().map_err(|e| tracing::warn!(error = %e, "uploader not started")).ok()
}

/// Opens the uploader's state in `data_dir`, with the agent's ceiling on the offline cache.
pub(super) fn open_uploader(
    config: &AgentConfig,
    data_dir: &std::path::Path,
) -> Result<Arc<Uploader>, DaemonError> {
    let mut uc = UploaderConfig::new(config.server_url(), data_dir);
    uc.spool_max_bytes = config.spool_max_bytes();
    Uploader::open(uc)
        .map_err(|source| DaemonError::Uploader { dir: data_dir.to_path_buf(), source })
}

pub(super) fn ring_retention(config: &AgentConfig, policy: Option<&VerifiedPolicy>) -> Duration {
    let max = config.ring_max_retention();
    policy.map(|p| p.payload().capture.ring_retention().min(max)).unwrap_or(max)
}

pub(super) fn open_ring(config: &AgentConfig, retention: Duration) -> Result<Ring, DaemonError> {
    let dir = config.ring_dir();
    let mut rc = RingConfig::new(&dir);
    rc.retention = retention;
    rc.max_bytes = config.ring_max_bytes();
    let (ring, report) = Ring::open(rc).map_err(|source| DaemonError::Ring { dir, source })?;
    if !report.is_clean() {
        tracing::warn!(?report, "ring recovered after an unclean stop");
    }
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's `[spool] max_bytes` reaches the uploader: from the config file's text to
    /// the offline cache `rearview status` reports (no policy yet: the policy default of
    /// 500 MB, capped to the agent's 2 MB).
    #[test]
    fn the_agent_spool_ceiling_caps_the_offline_cache() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "server_url = \"https://console.invalid\"\ndata_dir = \"{}\"\n[spool]\nmax_bytes = \"2 MB\"\n",
            dir.path().display()
        );
        let config = AgentConfig::from_toml_str(&toml).unwrap();
        let uploader = open_uploader(&config, config.data_dir()).unwrap();
        assert_eq!(uploader.status().unwrap().offline_cache_bytes, 2_000_000);

        let roomy = AgentConfig::from_toml_str(&toml.replace("2 MB", "2 GB")).unwrap();
        drop(uploader);
        let uploader = open_uploader(&roomy, roomy.data_dir()).unwrap();
        assert_eq!(uploader.status().unwrap().offline_cache_bytes, 500_000_000, "the policy's");
    }
}
