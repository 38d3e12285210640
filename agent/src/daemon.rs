//! The daemon: one task owns all state and reacts to what happens.
//!
//! ```text
//!  admin socket ─┐   uploader commands ─┐   sessions (logind/fixed) ─┐
//!  indicators ───┼──► Daemon::run (select loop, 1 s tick) ◄───────────┘
//!  worker msgs ──┘        │ gate → spawn/kill workers, throttle rate
//!                         │ segment → parse, check, seal, ring; pin for clips; queue
//!                         ▼
//!                   ring (sealed) ──► clips ──► uploader spool ──► console
//! ```
//!
//! * Gating ([`gate`]) runs on every policy, session change and tick: a session that is no
//!   longer allowed loses its worker at once (killed: its open segment is discarded), so a
//!   revocation stops capture as soon as the new policy arrives.
//! * A segment a worker sends is parsed in full and must carry the tenant, device, principal
//!   and session the daemon assigned; it is then sealed to the tenant key and stored. Workers'
//!   messages arrive through one inbox bounded in messages and bytes ([`crate::worker`],
//!   "Bounds"); a worker that breaks the protocol is killed and the reason recorded.
//! * Triggers open [`clips`]: existing segments in the window are pinned, later ones as they
//!   close; when the window has ended the clip goes to the spool. A trigger is accepted in
//!   this order, so that a crash at any point yields exactly one clip for it:
//!
//!   ```text
//!   uploader verifies ─► loop records the clip (clips.json saved) ─► uploader marks the id
//!   seen (trust.json) ─► uploader acknowledges to the console
//!   ```
//!
//!   A crash before "seen" makes the console send it again; the loop finds the clip it holds
//!   for that trigger id and answers "recorded" without opening another. After "seen", the
//!   resend is a replay, only acknowledged. A restart pins what a recorded clip's window
//!   finds in the ring (`reconcile_pins`).
//! * The loop never waits on the network: `doctor`'s console probe and triggers sent over
//!   the admin socket run in tasks that answer the caller themselves.
//! * All-activities users: each stored segment is queued at once as a one-segment clip (the
//!   uploader applies the daily limit).
//! * Indicators are reported to the console; when that fails (offline) and the policy has a
//!   rule for the kind, the daemon opens the clip itself.
//! * SIGTERM: workers finish and send their open segments, which are sealed and stored, within
//!   [`DRAIN_DEADLINE`]; then the daemon exits. SIGHUP re-reads the config file (log level,
//!   watched folders, display and `[identity] domain` take effect; socket and data directory
//!   need a restart).

pub mod clips;
pub mod doctor;
pub mod gate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rearview_capture::ring::{Ring, RingConfig};
use rearview_capture::seal::{seal, SealBinding, TenantPublicKey};
use rearview_capture::segment::{Segment, SegmentId};
use rearview_config::time::OffsetDateTime;
use rearview_config::{AgentConfig, CaptureMode, VerifiedPolicy, VerifiedTrigger};
use rearview_uploader::wire::{
    ActivityEvent, HealthReport, MissingRange, PolicyMessage, TriggerMessage,
};
use rearview_uploader::{Command, NewClip, NewSegment, SegmentBytes, Uploader, UploaderConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

use crate::admin::{self, AdminError, ErrorKind, Incoming, Request, Response};
use crate::cpu::{CpuMeter, Throttle};
use crate::indicators::{self, Activity, Places};
use crate::sessions::{self, Session, SessionsState};
use crate::status::{self, ErrorRecord, StatusReport};
use crate::worker::{
    FromWorker, RunAs, WorkerEvent, WorkerHandle, WorkerMessage, WorkerSender, WorkerSpec,
    WorkerStatus,
};
use clips::{Clip, ClipBook};
use gate::Gate;

/// How long SIGTERM waits for workers to hand over their open segments.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Health goes to the console this often.
pub const HEALTH_EVERY: Duration = Duration::from_secs(60);
/// CPU is sampled this often.
const CPU_EVERY: Duration = Duration::from_secs(2);
/// A crashed worker is restarted after this long.
const RESPAWN_AFTER: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the uploader state in {dir}: {source}")]
    Uploader { dir: PathBuf, source: rearview_uploader::UploadError },
    #[error("cannot open the ring in {dir}: {source}")]
    Ring { dir: PathBuf, source: rearview_capture::ring::RingError },
    #[error("cannot bind the admin socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("enrollment failed: {0}")]
    Enroll(rearview_uploader::UploadError),
}

impl DaemonError {
    /// Whether starting again later may work (a busy disk, a console that was down).
    pub fn is_retryable(&self) -> bool {
        match self {
            DaemonError::Uploader { source, .. } | DaemonError::Enroll(source) => {
                source.is_retryable()
            }
            DaemonError::Ring { source, .. } => source.is_retryable(),
            DaemonError::Socket { .. } | DaemonError::Signals(_) => false,
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

struct Tracked {
    session: Session,
    gate: Gate,
    worker: Option<WorkerHandle>,
    spec: Option<WorkerSpec>,
    status: WorkerStatus,
    died_at: Option<Instant>,
    /// `<session>#<n>`: tells this worker's messages from those of one being replaced.
    worker_key: String,
}

enum Internal {
    Enrolled,
    /// An indicator the console could not be told about.
    Unreported(Activity, String),
    /// The answer to an admin request worked out off the loop (enrollment, a trigger).
    Reply(tokio::sync::oneshot::Sender<Response>, Response),
}

pub struct Daemon {
    opts: Options,
    uploader: Arc<Uploader>,
    uploader_running: Option<rearview_uploader::Running>,
    commands: mpsc::UnboundedReceiver<Command>,
    policy: Option<VerifiedPolicy>,
    ring: Ring,
    ring_retention: Duration,
    clips: ClipBook,
    sessions: HashMap<String, Tracked>,
    sessions_rx: watch::Receiver<SessionsState>,
    worker_tx: WorkerSender,
    worker_rx: mpsc::Receiver<FromWorker>,
    admin_rx: mpsc::Receiver<Incoming>,
    activity_rx: mpsc::Receiver<Activity>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    cpu: CpuMeter,
    throttle: Throttle,
    rate_milli: u32,
    cpu_percent: Option<f64>,
    errors: Vec<ErrorRecord>,
    indicators_seen: u64,
    draining: bool,
    next_worker: u64,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn now_micros() -> i64 {
    rearview_capture::Timestamp::now().utc_micros
}

impl Daemon {
    /// Opens state, binds the socket and starts the watchers; nothing is captured until
    /// [`run`](Self::run) has checked the policy.
    pub async fn start(opts: Options) -> Result<Daemon, DaemonError> {
        let config = &opts.config;
        let data_dir = config.data_dir().to_path_buf();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| DaemonError::Socket { path: data_dir.clone(), source: e })?;
        let uploader = open_uploader(config.server_url(), &data_dir)?;
        if let Some(token) = &opts.enroll_token {
            if !uploader.is_enrolled() {
                let host = hostname();
                let id = uploader.enroll(token, &host).await.map_err(DaemonError::Enroll)?;
                tracing::info!(device = id.device_id, tenant = id.tenant_id, "enrolled");
            }
        }
        let commands = uploader.subscribe();
        let mut uploader_running = None;
        if uploader.is_enrolled() {
            match uploader.start() {
                Ok(r) => uploader_running = Some(r),
                Err(e) => tracing::warn!(error = %e, "uploader not started"),
            }
        }
        let policy = uploader.policy();
        let ring_retention = ring_retention(config, policy.as_ref());
        let ring = open_ring(config, ring_retention)?;

        let (mut clips, problem) = ClipBook::load(&data_dir.join("clips.json"));
        let mut errors = Vec::new();
        if let Some(p) = problem {
            tracing::warn!("{p}");
            errors.push(ErrorRecord { at_utc_micros: now_micros(), what: p });
        }
        let mut ring = ring;
        reconcile_pins(&mut ring, &mut clips);

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
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (limit, fps_milli) = cpu_settings(policy.as_ref());
        Ok(Daemon {
            opts,
            uploader,
            uploader_running,
            commands,
            policy,
            ring,
            ring_retention,
            clips,
            sessions: HashMap::new(),
            sessions_rx,
            worker_tx,
            worker_rx,
            admin_rx,
            activity_rx,
            internal_tx,
            internal_rx,
            cpu: CpuMeter::new(),
            throttle: Throttle::new(limit, fps_milli),
            rate_milli: fps_milli,
            cpu_percent: None,
            errors,
            indicators_seen: 0,
            draining: false,
            next_worker: 0,
        })
    }

    /// Runs until SIGTERM/SIGINT, then drains.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
        if self.uploader.is_enrolled() {
            self.spawn_policy_sync();
        }
        self.reconcile().await;
        let _ = crate::service::sd_notify("READY=1");
        tracing::info!(socket = %self.opts.config.socket_path().display(), "rearviewd ready");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_cpu = Instant::now();
        let mut last_health = Instant::now() - HEALTH_EVERY + Duration::from_secs(5);
        let mut last_evict = Instant::now();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.reload(),
                Some(inc) = self.admin_rx.recv() => self.admin(inc).await,
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                Ok(()) = self.sessions_rx.changed() => self.reconcile().await,
                Some(item) = self.worker_rx.recv() => self.worker_message(item).await,
                Some(activity) = self.activity_rx.recv() => self.activity(activity),
                Some(internal) = self.internal_rx.recv() => self.internal(internal).await,
                _ = tick.tick() => {
                    self.reconcile().await;
                    if last_cpu.elapsed() >= CPU_EVERY {
                        last_cpu = Instant::now();
                        self.cpu_step().await;
                    }
                    self.finish_clips();
                    if last_evict.elapsed() >= Duration::from_secs(10) {
                        last_evict = Instant::now();
                        self.ring.evict_expired(now_micros());
                    }
                    if last_health.elapsed() >= HEALTH_EVERY {
                        last_health = Instant::now();
                        self.send_health();
                    }
                }
            }
        }
        self.drain().await;
        Ok(())
    }

    /// SIGTERM: workers hand over their open segments; those are sealed and stored.
    async fn drain(&mut self) {
        let _ = crate::service::sd_notify("STOPPING=1");
        self.draining = true;
        tracing::info!("stopping: sealing open segments");
        let deadline = Instant::now() + DRAIN_DEADLINE;
        let mut stopping = Vec::new();
        for t in self.sessions.values_mut() {
            if let Some(w) = t.worker.take() {
                stopping.push(t.worker_key.clone());
                // The worker flushes on stdin EOF; stop() waits in a task so all stop together.
                tokio::spawn(w.stop(DRAIN_DEADLINE));
            }
        }
        let mut open = stopping.len();
        while open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.worker_rx.recv()).await {
                Ok(Some(item)) => {
                    if matches!(item.event, WorkerEvent::Ended { .. })
                        && stopping.contains(&item.key)
                    {
                        open -= 1;
                    }
                    self.worker_message(item).await;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if open > 0 {
            tracing::warn!(workers = open, "some capture workers did not hand over in time");
        }
        self.save_clips();
        if let Some(r) = self.uploader_running.take() {
            r.stop();
        }
        let _ = std::fs::remove_file(self.opts.config.socket_path());
        tracing::info!("stopped");
    }

    fn reload(&mut self) {
        let _ = crate::service::sd_notify("RELOADING=1");
        let Some(path) = self.opts.config_path.clone() else {
            tracing::info!("SIGHUP: no config file to re-read");
            let _ = crate::service::sd_notify("READY=1");
            return;
        };
        match AgentConfig::load(&path) {
            Ok(config) => {
                if config.socket_path() != self.opts.config.socket_path()
                    || config.data_dir() != self.opts.config.data_dir()
                {
                    tracing::warn!("SIGHUP: socket and data_dir changes need a restart");
                }
                tracing::info!(path = %path.display(), "configuration reloaded");
                self.opts.config = config;
            }
            Err(e) => self.error(format!("SIGHUP: config not reloaded, keeping the old one: {e}")),
        }
        let _ = crate::service::sd_notify("READY=1");
    }

    fn error(&mut self, what: String) {
        tracing::warn!("{what}");
        self.errors.push(ErrorRecord { at_utc_micros: now_micros(), what });
        let excess = self.errors.len().saturating_sub(status::MAX_ERRORS);
        self.errors.drain(..excess);
    }

    fn spawn_policy_sync(&self) {
        let up = self.uploader.clone();
        tokio::spawn(async move {
            if let Err(e) = up.sync_policy().await {
                tracing::warn!(error = %e, "policy sync failed; the push stream will retry");
            }
        });
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Policy(p) => self.new_policy(p).await,
            Command::Trigger(delivery) => match self.trigger(delivery.trigger()) {
                Ok(()) => {
                    rearview_uploader::fault::point("trigger:after-intent");
                    delivery.recorded();
                }
                Err(why) => delivery.not_recorded(why),
            },
        }
    }

    async fn new_policy(&mut self, p: VerifiedPolicy) {
        tracing::info!(version = p.version(), "policy in force");
        self.policy = Some(p);
        let wanted = ring_retention(&self.opts.config, self.policy.as_ref());
        if wanted != self.ring_retention {
            match open_ring(&self.opts.config, wanted) {
                Ok(r) => {
                    self.ring = r;
                    self.ring_retention = wanted;
                }
                Err(e) => self.error(format!("ring retention not changed: {e}")),
            }
        }
        let (limit, fps) = cpu_settings(self.policy.as_ref());
        self.throttle.set(limit, fps);
        self.rate_milli = self.throttle.decision().fps_milli;
        self.reconcile().await;
    }

    fn policy_payload(&self) -> Option<&rearview_config::PolicyPayload> {
        self.policy.as_ref().map(|p| p.payload())
    }

    fn identity_binding(&self) -> Option<(String, String, TenantPublicKey)> {
        let id = self.uploader.identity()?;
        let key = id.sealing_public_key.parse::<TenantPublicKey>().ok()?;
        Some((id.tenant_id.clone(), id.device_id.clone(), key))
    }

    /// Brings workers in line with sessions, policy and the clock.
    async fn reconcile(&mut self) {
        if self.draining {
            return;
        }
        let state = self.sessions_rx.borrow().clone();
        let enrolled = self.identity_binding().is_some();
        let now = now();
        // Sessions that ended.
        let gone: Vec<String> = self
            .sessions
            .keys()
            .filter(|k| !state.sessions.iter().any(|s| &s.id == *k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut t) = self.sessions.remove(&key) {
                if let Some(w) = t.worker.take() {
                    tracing::info!(session = key, "session ended: stopping capture");
                    tokio::spawn(w.stop(DRAIN_DEADLINE));
                }
            }
        }
        let base_fps = self.throttle_base();
        for session in state.sessions {
            let accounts = self.opts.config.local_accounts();
            let gate = gate::decide(enrolled, self.policy_payload(), accounts, &session, now);
            let spec = match &gate {
                Gate::Capture { principal, .. } => self.spec_for(&session, principal),
                _ => None,
            };
            let key = session.id.clone();
            let t = self.sessions.entry(key.clone()).or_insert_with(|| Tracked {
                session: session.clone(),
                gate: Gate::NoPolicy,
                worker: None,
                spec: None,
                status: WorkerStatus::default(),
                died_at: None,
                worker_key: String::new(),
            });
            t.session = session;
            let was = std::mem::replace(&mut t.gate, gate.clone());
            if was != gate {
                tracing::info!(
                    session = key,
                    user = t.session.user,
                    gate = gate.describe(),
                    "capture decision"
                );
            }
            match (&gate, spec) {
                (Gate::Capture { .. }, Some(spec)) => {
                    if t.worker.is_some() && t.spec.as_ref() != Some(&spec) {
                        // Settings changed (fps, segment length, monitors): restart cleanly.
                        if let Some(w) = t.worker.take() {
                            tokio::spawn(w.stop(DRAIN_DEADLINE));
                        }
                    }
                    if let Some(w) = t.worker.as_mut() {
                        if w.exited() {
                            t.worker = None;
                        }
                    }
                    let may_start = t.died_at.is_none_or(|d| d.elapsed() >= RESPAWN_AFTER);
                    if t.worker.is_none() && may_start {
                        let run_as = RunAs {
                            uid: t.session.uid,
                            gid: t.session.gid,
                            env: t.session.env.clone(),
                        };
                        let mut spec = spec.clone();
                        spec.fps_milli = self.rate_milli;
                        self.next_worker += 1;
                        let worker_key = format!("{key}#{}", self.next_worker);
                        match WorkerHandle::spawn(
                            &self.opts.worker_exe,
                            spec.clone(),
                            &run_as,
                            worker_key.clone(),
                            self.worker_tx.clone(),
                        )
                        .await
                        {
                            Ok(w) => {
                                tracing::info!(
                                    session = key,
                                    pid = w.pid(),
                                    "capture worker started"
                                );
                                t.worker = Some(w);
                                t.worker_key = worker_key;
                                spec.fps_milli = base_fps;
                                t.spec = Some(spec);
                                t.status =
                                    WorkerStatus { state: "starting".into(), ..Default::default() };
                            }
                            Err(e) => {
                                t.died_at = Some(Instant::now());
                                let msg =
                                    format!("cannot start capture worker for session {key}: {e}");
                                self.error(msg);
                            }
                        }
                    }
                }
                _ => {
                    if let Some(w) = t.worker.take() {
                        // Not allowed any more: stop at once; what is in flight is dropped.
                        tracing::info!(session = key, gate = gate.describe(), "capture stopped");
                        let graceful = matches!(gate, Gate::Idle { .. });
                        t.spec = None;
                        if graceful {
                            tokio::spawn(w.stop(DRAIN_DEADLINE));
                        } else {
                            w.kill().await;
                        }
                    }
                }
            }
        }
    }

    fn throttle_base(&self) -> u32 {
        cpu_settings(self.policy.as_ref()).1
    }

    fn spec_for(&self, session: &Session, principal: &str) -> Option<WorkerSpec> {
        let (tenant, device, _) = self.identity_binding()?;
        let p = self.policy_payload()?;
        let notice = p.notify.enabled.then(|| {
            p.notify.text.clone().unwrap_or_else(|| crate::notice::DEFAULT_TEXT.to_string())
        });
        Some(WorkerSpec {
            display: session.display.clone(),
            tenant,
            device,
            user: principal.to_string(),
            session: session.id.clone(),
            fps_milli: self.throttle_base(),
            segment_secs: p.capture.segment_secs,
            max_monitors: p.capture.max_monitors,
            notice,
        })
    }

    /// One event from a worker's reader. `item` holds its message's share of the inbox's byte
    /// budget until this returns (so a segment counts until it is sealed and stored).
    async fn worker_message(&mut self, item: FromWorker) {
        let worker_key = item.key.as_str();
        let key = worker_key.rsplit_once('#').map(|(s, _)| s.to_string()).unwrap_or_default();
        let current = self.sessions.get(&key).is_some_and(|t| t.worker_key == worker_key);
        match &item.event {
            WorkerEvent::Ended { violation: Some(why) } => {
                self.error(format!(
                    "capture worker of session {key} broke the protocol ({why}); killed"
                ));
            }
            WorkerEvent::Ended { violation: None } => {}
            WorkerEvent::Message(_) => {}
        }
        match item.event {
            // A replaced worker finishing: nothing to track.
            WorkerEvent::Ended { .. } | WorkerEvent::Message(WorkerMessage::Status(_))
                if !current => {}
            WorkerEvent::Ended { .. } => {
                if let Some(t) = self.sessions.get_mut(&key) {
                    // Its output ended: it exited or will be killed when the handle drops.
                    if t.worker.take().is_some() {
                        t.died_at = Some(Instant::now());
                    }
                    if matches!(t.gate, Gate::Capture { .. }) && !self.draining {
                        let msg = format!("capture worker of session {key} exited; restarting");
                        self.error(msg);
                    }
                }
            }
            WorkerEvent::Message(WorkerMessage::Status(s)) => {
                if let Some(t) = self.sessions.get_mut(&key) {
                    if let Some(e) = s.error.clone().filter(|e| t.status.error.as_ref() != Some(e))
                    {
                        let msg = format!("session {key}: {e}");
                        self.errors.push(ErrorRecord { at_utc_micros: now_micros(), what: msg });
                        let excess = self.errors.len().saturating_sub(status::MAX_ERRORS);
                        self.errors.drain(..excess);
                    }
                    if let Some(t) = self.sessions.get_mut(&key) {
                        t.status = s;
                    }
                }
            }
            WorkerEvent::Message(WorkerMessage::Segment(bytes)) => self.segment(&key, bytes),
        }
    }

    /// Checks, seals and stores one segment from a worker, then gives it to clips and uploads.
    fn segment(&mut self, key: &str, plaintext: Zeroizing<Vec<u8>>) {
        let Some(t) = self.sessions.get(key) else { return };
        let (principal, mode) = match &t.gate {
            Gate::Capture { principal, mode } | Gate::Idle { principal, mode } => {
                (principal.clone(), *mode)
            }
            // Revoked while the segment was on its way: it is not kept.
            _ => return,
        };
        let session_id = t.session.id.clone();
        let Some((tenant, device, key_pub)) = self.identity_binding() else { return };
        let parsed = match Segment::parse(&plaintext) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("session {key}: worker sent an invalid segment ({e}); dropped"));
                return;
            }
        };
        let header = parsed.header().clone();
        drop(parsed);
        let c = &header.context;
        if c.tenant != tenant
            || c.device != device
            || c.user != principal
            || c.session != session_id
        {
            self.error(format!(
                "session {key}: worker sent a segment for another tenant, device, user or session; dropped"
            ));
            return;
        }
        let binding = SealBinding { tenant: &tenant, device: &device, segment_id: header.id };
        let sealed = match seal(&key_pub, &binding, &plaintext) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("sealing failed, segment dropped: {e}"));
                return;
            }
        };
        drop(plaintext);
        if let Err(e) = self.ring.insert(&header, &sealed) {
            self.error(format!("ring: segment not stored: {e}"));
            return;
        }
        let (start, end) = (header.start.utc_micros, header.end.utc_micros);
        let mut pinned = Vec::new();
        for (i, clip) in self.clips.clips.iter_mut().enumerate() {
            if !clip.wants(&principal, start, end) {
                continue;
            }
            match self.ring.pin(header.id, &clip.id) {
                Ok(()) => {
                    clip.segments.push(header.id.to_string());
                    pinned.push(i);
                }
                Err(e) => tracing::warn!(clip = clip.id, error = %e, "segment not pinned"),
            }
        }
        if !pinned.is_empty() {
            // Handed over from memory, not read back from the ring. A crash before the save
            // leaves a pin the restart adopts and a hand-over it repeats (the spool names a
            // segment once).
            for i in pinned {
                self.spool_clip(i, false, Some((header.id, &sealed)));
            }
            self.save_clips();
        }
        if mode == CaptureMode::AllActivities {
            self.queue_continuous(&principal, &header.id, start, end, sealed);
        }
    }

    fn queue_continuous(
        &mut self,
        user: &str,
        id: &SegmentId,
        start: i64,
        end: i64,
        sealed: Vec<u8>,
    ) {
        let clip = NewClip {
            clip_id: format!("seg-{id}"),
            trigger_id: None,
            mode: gate::mode_name(CaptureMode::AllActivities).into(),
            user: user.to_string(),
            start_ms: start / 1000,
            end_ms: end / 1000,
            missing: Vec::new(),
            open: false,
        };
        let segment = NewSegment {
            start_ms: start / 1000,
            end_ms: end / 1000,
            bytes: SegmentBytes::Bytes(sealed),
        };
        if let Err(e) = self.uploader.enqueue_clip(clip, vec![segment]) {
            self.error(format!("all-activities segment not queued: {e}"));
        }
    }

    /// Records the clip of a verified trigger durably (its record in `clips.json`), or finds
    /// the one already recorded for the same trigger id: a trigger the uploader could not mark
    /// seen before a crash comes again, and must not open a second clip. `Err` says why nothing
    /// is recorded; the trigger then stays unseen and the console sends it again.
    fn trigger(&mut self, t: &VerifiedTrigger) -> Result<(), String> {
        let p = t.payload();
        let trigger_id = p.id.as_str();
        if let Some(clip) =
            self.clips.clips.iter().find(|c| c.trigger_id.as_deref() == Some(trigger_id))
        {
            tracing::info!(
                clip = clip.id,
                trigger = trigger_id,
                "trigger seen again: its clip is already recorded"
            );
            // Saved again: the first time may have failed, and "recorded" must mean durable.
            return self.clips.save().map_err(|e| format!("clip state not saved: {e}"));
        }
        rearview_uploader::fault::point("trigger:before-intent");
        let (from, to) = p.window();
        let reason = format!("{}: {}", p.reason.indicator.describe(), p.reason.object);
        self.open_clip(
            Some(trigger_id.to_string()),
            p.user.as_str().to_string(),
            reason,
            from.unix_timestamp_nanos() as i64 / 1000,
            to.unix_timestamp_nanos() as i64 / 1000,
        )
        .map(|_| ())
    }

    /// Opens a clip: pins what the ring already holds for the window; the rest is added as
    /// segments close, until the window has ended. Returns the clip id once its record is
    /// saved, or why it is not (then the clip may still be kept in memory and saved later).
    fn open_clip(
        &mut self,
        trigger_id: Option<String>,
        user: String,
        reason: String,
        from: i64,
        to: i64,
    ) -> Result<String, String> {
        let id = match clips::random_id() {
            Ok(id) => id,
            Err(e) => {
                let why = format!("clip not opened (no randomness): {e}");
                self.error(why.clone());
                return Err(why);
            }
        };
        // Segments carry the principal their session's approval named; the clip takes those
        // that name the trigger's user by the one rule (`clips::same_principal`), never a
        // namesake's whose local part happens to match.
        let held: Vec<SegmentId> = self
            .ring
            .entries()
            .filter(|e| e.overlaps(from, to) && clips::same_principal(&e.user, &user))
            .map(|e| e.id)
            .collect();
        // The record first, then the pins: a crash in between leaves a known clip whose pins
        // the restart adopts (`reconcile_pins`), never pins of a clip nobody remembers.
        self.clips.clips.push(Clip {
            id: id.clone(),
            trigger_id: trigger_id.clone(),
            user,
            reason,
            mode: gate::mode_name(CaptureMode::SpecificActivities).into(),
            from_utc_micros: from,
            to_utc_micros: to,
            segments: Vec::new(),
            spooled: Vec::new(),
            in_spool: false,
            state: "collecting".into(),
            missing: Vec::new(),
            error: None,
        });
        let intent = self.clips.save().map_err(|e| format!("clip state not saved: {e}"));
        if let Err(why) = &intent {
            self.error(format!("clip {id}: {why}"));
        }
        let mut segments = Vec::new();
        for sid in held {
            if self.ring.pin(sid, &id).is_ok() {
                segments.push(sid.to_string());
            }
        }
        tracing::info!(clip = id, trigger = ?trigger_id, segments = segments.len(), "clip opened");
        if let Some(i) = self.clips.clips.iter().position(|c| c.id == id) {
            self.clips.clips[i].segments = segments;
            self.spool_clip(i, false, None);
        }
        self.save_clips();
        intent.map(|()| id)
    }

    /// Closes clips whose window has ended (and whose last segment had time to close), and
    /// retries hand-overs that failed earlier (or were cut short by a restart).
    fn finish_clips(&mut self) {
        let segment_secs = self.policy_payload().map(|p| p.capture.segment_secs).unwrap_or(10);
        let grace = (i64::from(segment_secs) + 3) * 1_000_000;
        let now = now_micros();
        let mut changed = false;
        for i in 0..self.clips.clips.len() {
            let clip = &self.clips.clips[i];
            if !clip.collecting() {
                continue;
            }
            if now >= clip.to_utc_micros + grace {
                changed |= self.spool_clip(i, true, None);
            } else if !clip.in_spool || !clip.unspooled().is_empty() {
                changed |= self.spool_clip(i, false, None);
            }
        }
        if changed {
            self.save_clips();
        }
    }

    /// Hands collecting clip `i` to the spool: the segments it has not handed over yet, as an
    /// open clip, or with `close` as the finished clip with the parts of its window nothing
    /// covers (then its pins are released). A failure that may pass (console, disk) keeps the
    /// pins and is retried on the next tick; only a clip larger than the whole offline cache,
    /// or one the spool no longer takes (dropped from a full cache, refused by the console),
    /// fails. `just_sealed` is a segment whose sealed bytes are still in memory (it need not be
    /// read back from the ring). Returns whether the record changed.
    fn spool_clip(
        &mut self,
        i: usize,
        close: bool,
        just_sealed: Option<(SegmentId, &[u8])>,
    ) -> bool {
        let clip = &self.clips.clips[i];
        let fresh = clip.unspooled();
        if !close && clip.in_spool && fresh.is_empty() {
            return false;
        }
        let mut segments = Vec::new();
        let mut handed = Vec::new();
        for sid in fresh {
            let Ok(id) = sid.parse::<SegmentId>() else { continue };
            let Some(entry) = self.ring.get(id).cloned() else { continue };
            let bytes = match just_sealed {
                Some((sealed_id, bytes)) if sealed_id == id => Ok(bytes.to_vec()),
                _ => self.ring.read(id),
            };
            match bytes {
                Ok(bytes) => {
                    segments.push(NewSegment {
                        start_ms: entry.start.utc_micros / 1000,
                        end_ms: entry.end.utc_micros / 1000,
                        bytes: SegmentBytes::Bytes(bytes),
                    });
                    handed.push(sid);
                }
                Err(e) => tracing::warn!(segment = sid, error = %e, "pinned segment unreadable"),
            }
        }
        let missing = if close {
            let spans: Vec<(i64, i64)> = clip
                .segments
                .iter()
                .filter_map(|sid| sid.parse::<SegmentId>().ok())
                .filter_map(|id| self.ring.get(id))
                .map(|e| (e.start.utc_micros, e.end.utc_micros))
                .collect();
            let frame_gap = 1_000_000_000 / i64::from(self.throttle_base().max(1)) * 2 + 1_000_000;
            clips::missing_ranges(clip.from_utc_micros, clip.to_utc_micros, &spans, frame_gap)
        } else {
            Vec::new()
        };
        let new = NewClip {
            clip_id: clip.id.clone(),
            trigger_id: clip.trigger_id.clone(),
            mode: clip.mode.clone(),
            user: clip.user.clone(),
            start_ms: clip.from_utc_micros / 1000,
            end_ms: clip.to_utc_micros / 1000,
            missing: missing
                .iter()
                .map(|m| MissingRange {
                    start_ms: m.from_utc_micros / 1000,
                    end_ms: m.to_utc_micros / 1000,
                    reason: m.reason.clone(),
                })
                .collect(),
            open: !close,
        };
        let result = self.uploader.enqueue_clip(new, segments);
        let clip = &mut self.clips.clips[i];
        let failure = match result {
            Ok(done) if done.state == "pending" || done.state == "sent" => {
                clip.in_spool = true;
                clip.spooled.extend(handed);
                clip.error = None;
                if close {
                    clip.missing = missing;
                    clip.state = "pending".into();
                    tracing::info!(
                        clip = clip.id,
                        segments = clip.segments.len(),
                        missing = clip.missing.len(),
                        "clip window ended: closed for upload"
                    );
                    let _ = self.ring.unpin_all(&clip.id);
                }
                None
            }
            Ok(done) if done.state == "lost" => {
                Some("dropped from the full offline cache before its window ended".to_string())
            }
            Ok(done) => Some(format!("the spool holds it as {}", done.state)),
            Err(e @ rearview_uploader::UploadError::TooLarge(_)) => Some(e.to_string()),
            Err(e) => {
                tracing::warn!(clip = clip.id, error = %e, "clip not handed to the spool; will retry");
                clip.error = Some(e.to_string());
                None
            }
        };
        if let Some(reason) = failure {
            let clip = &mut self.clips.clips[i];
            clip.state = "failed".into();
            clip.error = Some(reason.clone());
            let _ = self.ring.unpin_all(&clip.id);
            let id = clip.id.clone();
            self.error(format!("clip {id} failed: {reason}"));
        }
        true
    }

    fn save_clips(&mut self) {
        if let Err(e) = self.clips.save() {
            self.error(format!("clip state not saved: {e}"));
        }
    }

    async fn cpu_step(&mut self) {
        let pids: Vec<u32> =
            self.sessions.values().filter_map(|t| t.worker.as_ref().map(|w| w.pid())).collect();
        let Some(percent) = self.cpu.sample(&pids) else { return };
        self.cpu_percent = Some(percent);
        if pids.is_empty() {
            return;
        }
        let decision = self.throttle.observe(percent);
        if decision.fps_milli != self.rate_milli {
            tracing::info!(
                percent,
                fps_milli = decision.fps_milli,
                "CPU limit: changing frame rate"
            );
            self.rate_milli = decision.fps_milli;
            for t in self.sessions.values_mut() {
                if let Some(w) = t.worker.as_mut() {
                    let _ = w.set_rate(decision.fps_milli).await;
                }
            }
        }
    }

    fn activity(&mut self, a: Activity) {
        self.indicators_seen += 1;
        let now = now();
        let accounts = self.opts.config.local_accounts();
        let Some(scope) =
            self.policy_payload().and_then(|p| p.approved_account(accounts, &a.user, now))
        else {
            // Users outside the policy are not reported: no approval, no evidence.
            return;
        };
        let principal = scope.principal.as_str().to_string();
        let event = ActivityEvent {
            user: principal.clone(),
            kind: serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            time_ms: a.at_utc_micros / 1000,
            details: serde_json::json!({
                "file": a.file,
                "size": a.size,
                "destination": a.destination,
            }),
        };
        let up = self.uploader.clone();
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = up.report_activity(vec![event]).await {
                tracing::info!(error = %e, "indicator not reported; applying local rules");
                let _ = tx.send(Internal::Unreported(a, principal));
            }
        });
    }

    async fn internal(&mut self, i: Internal) {
        match i {
            Internal::Enrolled => {
                if self.uploader_running.is_none() {
                    match self.uploader.start() {
                        Ok(r) => self.uploader_running = Some(r),
                        Err(e) => self.error(format!("uploader not started: {e}")),
                    }
                }
                self.spawn_policy_sync();
                self.reconcile().await;
            }
            Internal::Unreported(a, principal) => {
                let rule = self.policy_payload().and_then(|p| p.indicator(a.kind)).cloned();
                if let Some(rule) = rule {
                    let reason = format!("{}: {} (opened offline)", a.kind.describe(), a.file);
                    let before = i64::from(rule.before_secs) * 1_000_000;
                    let after = i64::from(rule.after_secs) * 1_000_000;
                    // A failure is in the error list already; nothing resends an indicator.
                    let _ = self.open_clip(
                        None,
                        principal,
                        reason,
                        a.at_utc_micros - before,
                        a.at_utc_micros + after,
                    );
                }
            }
            Internal::Reply(reply, response) => {
                let _ = reply.send(response);
            }
        }
    }

    fn send_health(&self) {
        if !self.uploader.is_enrolled() {
            return;
        }
        let report = self.status_report();
        let state = if report.cpu.paused {
            "paused: cpu limit".to_string()
        } else if report.sessions.iter().any(|s| s.capture == "capturing") {
            "capturing".to_string()
        } else {
            "idle".to_string()
        };
        let health = HealthReport {
            state,
            policy_version: report.policy.as_ref().map(|p| p.version).unwrap_or(0),
            users: report.sessions.iter().map(|s| s.user.clone()).collect(),
            errors: report.last_errors.iter().map(|e| e.what.clone()).collect(),
            details: serde_json::json!({ "agent": report }),
        };
        let up = self.uploader.clone();
        tokio::spawn(async move {
            if let Err(e) = up.report_health(health).await {
                tracing::debug!(error = %e, "health not reported");
            }
        });
    }

    async fn admin(&mut self, inc: Incoming) {
        let Incoming { request, reply } = inc;
        let response = match request {
            Request::Status => json(&self.status_report()),
            Request::Buffer => json(&self.buffer()),
            Request::Clips => json(&self.clip_reports()),
            Request::Doctor => {
                // Its console probe may wait; the loop must not (segments, triggers).
                let doctor = doctor::prepare(self);
                tokio::spawn(async move {
                    let _ = reply.send(json(&doctor.run().await));
                });
                return;
            }
            Request::Reload => {
                self.reload();
                Response::ok(serde_json::json!("reloaded"))
            }
            Request::ApplyPolicy { envelope } => self.apply_policy(&envelope).await,
            Request::Trigger { envelope } => {
                self.apply_trigger(&envelope, reply);
                return;
            }
            Request::Enroll { server, token } => {
                if self.uploader.is_enrolled() {
                    Response::err(AdminError::new(
                        ErrorKind::Rejected,
                        "this device is already enrolled; remove the identity in the data directory to re-enroll",
                    ))
                } else if server.trim_end_matches('/')
                    != self.opts.config.server_url().trim_end_matches('/')
                {
                    Response::err(AdminError::new(
                        ErrorKind::BadRequest,
                        format!(
                            "the agent config names server {}; set server_url to {server} in the config (then reload) or enroll with that server",
                            self.opts.config.server_url()
                        ),
                    ))
                } else {
                    let up = self.uploader.clone();
                    let tx = self.internal_tx.clone();
                    tokio::spawn(async move {
                        let response = match up.enroll(&token, &hostname()).await {
                            Ok(id) => {
                                let _ = tx.send(Internal::Enrolled);
                                Response::ok(serde_json::json!({
                                    "device": id.device_id, "tenant": id.tenant_id
                                }))
                            }
                            Err(e) => Response::err(AdminError::new(
                                if e.is_retryable() {
                                    ErrorKind::Unavailable
                                } else {
                                    ErrorKind::Rejected
                                },
                                format!("enrollment failed: {e}"),
                            )),
                        };
                        let _ = tx.send(Internal::Reply(reply, response));
                    });
                    return;
                }
            }
        };
        let _ = reply.send(response);
    }

    async fn apply_policy(&mut self, envelope: &str) -> Response {
        let signed = match serde_json::from_str::<serde_json::Value>(envelope) {
            Ok(v) => v,
            Err(e) => return bad(format!("policy envelope is not JSON: {e}")),
        };
        let version = signed_version(&signed);
        let result = self.uploader.accept_policy(&PolicyMessage { version, signed });
        // Act on it before answering, so "accepted" means workers already follow it.
        while let Ok(cmd) = self.commands.try_recv() {
            self.command(cmd).await;
        }
        match result {
            Ok(Some(p)) => Response::ok(serde_json::json!({ "accepted": p.version() })),
            Ok(None) => Response::ok(
                serde_json::json!({ "accepted": null, "note": "not newer than the policy in force" }),
            ),
            Err(e) => Response::err(AdminError::new(ErrorKind::Rejected, e.to_string())),
        }
    }

    /// A trigger from the admin socket goes the way a pushed one does: verified by the uploader,
    /// recorded by this loop (as a [`Command::Trigger`]), then marked seen and acknowledged. The
    /// uploader waits for the loop, so it runs in a task and answers through [`Internal::Reply`]
    /// once the clip is recorded.
    fn apply_trigger(&mut self, envelope: &str, reply: tokio::sync::oneshot::Sender<Response>) {
        let signed = match serde_json::from_str::<serde_json::Value>(envelope) {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(bad(format!("trigger envelope is not JSON: {e}")));
                return;
            }
        };
        let trigger_id = trigger_id_of(&signed).unwrap_or_default();
        let msg = TriggerMessage { trigger_id: trigger_id.clone(), signed };
        let up = self.uploader.clone();
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let response = match up.accept_trigger(&msg).await {
                Ok(()) => Response::ok(serde_json::json!({ "accepted": trigger_id })),
                Err(rearview_uploader::UploadError::Rejected { what, reason }) => Response::err(
                    AdminError::new(ErrorKind::Rejected, format!("{what} refused: {reason}")),
                ),
                Err(
                    e @ (rearview_uploader::UploadError::NotRecorded { .. }
                    | rearview_uploader::UploadError::NotEnrolled),
                ) => Response::err(AdminError::new(ErrorKind::Unavailable, e.to_string())),
                // Recorded and marked seen; only the console's acknowledgement failed (it
                // resends until it gets one).
                Err(e) => Response::ok(serde_json::json!({
                    "accepted": trigger_id, "note": format!("console not told: {e}")
                })),
            };
            let _ = tx.send(Internal::Reply(reply, response));
        });
    }

    pub(crate) fn status_report(&self) -> StatusReport {
        let up = self.uploader.status().unwrap_or_default();
        let identity = self.uploader.identity();
        let now = now();
        let policy = self.policy.as_ref().map(|p| {
            let pl = p.payload();
            let age = (now - pl.issued_at).whole_seconds();
            status::PolicyInfo {
                version: p.version(),
                age_secs: age,
                stale: age > status::POLICY_STALE_SECS,
                in_force: pl.in_force_at(now),
                capture_enabled: pl.capture.enabled,
                fps: pl.capture.fps,
                segment_secs: pl.capture.segment_secs,
                users_in_scope: pl.users.len(),
                expires_at: pl
                    .expires_at
                    .format(&rearview_config::time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            }
        });
        let decision = self.throttle.decision();
        let mut sessions: Vec<status::SessionReport> = self
            .sessions
            .values()
            .map(|t| {
                let capture = match (&t.gate, &t.worker) {
                    (Gate::Capture { .. }, Some(_)) if decision.paused() => {
                        "paused (cpu limit)".to_string()
                    }
                    (Gate::Capture { .. }, Some(_)) => t.status.state.replace('_', " "),
                    (Gate::Capture { .. }, None) => "worker not running".to_string(),
                    (g, _) => g.describe().to_string(),
                };
                status::SessionReport {
                    id: t.session.id.clone(),
                    user: t.session.user.clone(),
                    display: t.session.display.clone(),
                    active: t.session.active,
                    locked: t.session.locked,
                    capture,
                    mode: t.gate.mode().map(|m| gate::mode_name(m).to_string()),
                    worker_pid: t.worker.as_ref().map(|w| w.pid()),
                    monitors: t.status.monitors,
                    fps: f64::from(t.status.fps_milli) / 1000.0,
                    frames: t.status.frames,
                    segments: t.status.segments,
                    input: t.status.input.clone(),
                    ms_per_frame: t.status.ms_per_frame,
                    error: t.status.error.clone(),
                }
            })
            .collect();
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        let stats = self.ring.stats();
        let mut today: Vec<(String, u64)> = up.bytes_today.into_iter().collect();
        today.sort();
        StatusReport {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            enrollment: status::Enrollment {
                enrolled: identity.is_some(),
                server: self.opts.config.server_url().to_string(),
                tenant: identity.as_ref().map(|i| i.tenant_id.clone()),
                device: identity.as_ref().map(|i| i.device_id.clone()),
            },
            policy,
            sessions,
            sessions_problem: self.sessions_rx.borrow().problem.clone(),
            ring: status::RingReport {
                dir: self.opts.config.ring_dir().display().to_string(),
                segments: stats.segments,
                bytes: stats.bytes,
                pinned_segments: stats.pinned_segments,
                pinned_bytes: stats.pinned_bytes,
                max_bytes: self.opts.config.ring_max_bytes(),
                retention_secs: self.ring_retention.as_secs(),
                oldest_utc_micros: self.ring.entries().map(|e| e.start.utc_micros).min(),
                newest_utc_micros: self.ring.entries().map(|e| e.end.utc_micros).max(),
            },
            spool: status::SpoolReport {
                pending_clips: up.spool.pending_clips,
                sent_clips: up.spool.sent_clips,
                bytes: up.spool.spooled_bytes,
                max_bytes: up.offline_cache_bytes,
                lost_clips: up.spool.lost_clips,
            },
            upload: status::UploadReport {
                limit_per_user_per_day: up.upload_limit_per_user_per_day,
                today,
                warnings: up.warnings,
            },
            server: status::ServerReport {
                reachable: up.server_reachable,
                stream_connected: up.stream_connected,
                uploading: up.uploading,
                last_error: up.last_error,
            },
            cpu: status::CpuReport {
                percent_of_machine: self.cpu_percent,
                limit_percent: cpu_settings(self.policy.as_ref()).0,
                throttled: decision.throttled,
                paused: decision.paused(),
            },
            last_errors: self.errors.clone(),
            indicators_seen: self.indicators_seen,
        }
    }

    fn buffer(&self) -> Vec<status::BufferEntry> {
        self.ring
            .entries()
            .map(|e| status::BufferEntry {
                id: e.id.to_string(),
                user: e.user.clone(),
                session: e.session.clone(),
                monitor: e.monitor,
                start_utc_micros: e.start.utc_micros,
                end_utc_micros: e.end.utc_micros,
                frames: e.frame_count,
                sealed_bytes: e.sealed_len,
                pinned_by: self.ring.pins(e.id).unwrap_or_default(),
            })
            .collect()
    }

    fn clip_reports(&self) -> Vec<status::ClipReport> {
        let up = self.uploader.status().unwrap_or_default();
        self.clips
            .clips
            .iter()
            .map(|c| {
                // Handed to the spool: what the spool says (pending, sent, refused, lost).
                let state = if c.state == "pending" {
                    if up.uploading.as_deref() == Some(c.id.as_str()) {
                        "uploading".to_string()
                    } else {
                        // (Never a second Spool::open here: opening reconciles, and would
                        // delete a segment file the uploader is about to commit.)
                        self.uploader
                            .clip_state(&c.id)
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "pending".to_string())
                    }
                } else {
                    c.state.clone()
                };
                status::ClipReport {
                    id: c.id.clone(),
                    trigger_id: c.trigger_id.clone(),
                    user: c.user.clone(),
                    reason: c.reason.clone(),
                    from_utc_micros: c.from_utc_micros,
                    to_utc_micros: c.to_utc_micros,
                    state,
                    segments: c.segments.len(),
                    missing: c
                        .missing
                        .iter()
                        .map(|m| {
                            format!(
                                "{:.1} s from {}: {}",
                                (m.to_utc_micros - m.from_utc_micros) as f64 / 1e6,
                                m.from_utc_micros,
                                m.reason
                            )
                        })
                        .collect(),
                }
            })
            .collect()
    }

    pub(crate) fn sessions_for_doctor(&self) -> Vec<(Session, WorkerStatus, bool)> {
        self.sessions
            .values()
            .map(|t| (t.session.clone(), t.status.clone(), t.worker.is_some()))
            .collect()
    }

    pub(crate) fn uploader(&self) -> &Arc<Uploader> {
        &self.uploader
    }

    pub(crate) fn config(&self) -> &AgentConfig {
        &self.opts.config
    }

    pub(crate) fn policy(&self) -> Option<&VerifiedPolicy> {
        self.policy.as_ref()
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(AdminError::new(ErrorKind::Internal, e.to_string())),
    }
}

fn bad(message: String) -> Response {
    Response::err(AdminError::new(ErrorKind::BadRequest, message))
}

/// The version inside a signed policy envelope, for the message wrapper (the trust store
/// reads the verified payload; this is only a label).
fn signed_version(signed: &serde_json::Value) -> u64 {
    payload_json(signed).and_then(|p| p.get("version").and_then(|v| v.as_u64())).unwrap_or(0)
}

fn trigger_id_of(signed: &serde_json::Value) -> Option<String> {
    payload_json(signed)?.get("id")?.as_str().map(str::to_string)
}

fn payload_json(signed: &serde_json::Value) -> Option<serde_json::Value> {
    let text = serde_json::to_vec(signed).ok()?;
    let env = rearview_config::SignedEnvelope::from_json(&text).ok()?;
    serde_json::from_slice(env.payload()).ok()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn open_uploader(server: &str, data_dir: &std::path::Path) -> Result<Arc<Uploader>, DaemonError> {
    Uploader::open(UploaderConfig::new(server, data_dir))
        .map_err(|source| DaemonError::Uploader { dir: data_dir.to_path_buf(), source })
}

fn ring_retention(config: &AgentConfig, policy: Option<&VerifiedPolicy>) -> Duration {
    let max = config.ring_max_retention();
    policy.map(|p| p.payload().capture.ring_retention().min(max)).unwrap_or(max)
}

fn open_ring(config: &AgentConfig, retention: Duration) -> Result<Ring, DaemonError> {
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

/// `(limit percent of the machine, base frames per 1000 s)` from the policy or the defaults.
fn cpu_settings(policy: Option<&VerifiedPolicy>) -> (f64, u32) {
    match policy {
        Some(p) => {
            let pl = p.payload();
            (f64::from(pl.limits.cpu_limit_percent), pl.capture.fps.saturating_mul(1000))
        }
        None => (5.0, 1000),
    }
}

/// Brings pins and the clip state file back in line after a restart. A crash can fall between
/// pinning a segment and saving `clips.json`, or between saving a new clip's record and pinning
/// what the ring held for it: pins of a clip the file does not know (or no longer collects for)
/// are released, segments pinned by a collecting clip, or that it [wants](Clip::wants), but
/// missing from its list are pinned and adopted, and listed segments the ring no longer holds
/// are forgotten.
fn reconcile_pins(ring: &mut Ring, book: &mut ClipBook) {
    let known: std::collections::BTreeSet<String> =
        book.clips.iter().filter(|c| c.collecting()).map(|c| c.id.clone()).collect();
    let owners: std::collections::BTreeSet<String> =
        ring.entries().filter_map(|e| ring.pins(e.id)).flatten().collect();
    for owner in owners.difference(&known) {
        let _ = ring.unpin_all(owner);
    }
    for clip in book.clips.iter_mut().filter(|c| c.collecting()) {
        clip.segments.retain(|sid| sid.parse::<SegmentId>().is_ok_and(|id| ring.get(id).is_some()));
        let mut adopt = Vec::new();
        for e in ring.entries() {
            let pinned = ring.pins(e.id).is_some_and(|p| p.contains(&clip.id));
            let wanted = clip.wants(&e.user, e.start.utc_micros, e.end.utc_micros);
            if (pinned || wanted) && !clip.segments.contains(&e.id.to_string()) {
                adopt.push((e.id, pinned));
            }
        }
        for (id, pinned) in adopt {
            if pinned || ring.pin(id, &clip.id).is_ok() {
                clip.segments.push(id.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rearview_capture::seal::{SealBinding, TenantSecretKey};
    use rearview_capture::segment::{SegmentContext, SegmentHeader};
    use rearview_capture::{MonitorInfo, Timestamp};

    use super::*;

    fn insert(ring: &mut Ring, key: &TenantSecretKey, n: u8) -> SegmentId {
        let id = SegmentId::from_bytes([n; 16]);
        let now = now_micros();
        let t = |s: i64| Timestamp { utc_micros: now + s * 1_000_000, mono_micros: 0 };
        let header = SegmentHeader {
            id,
            context: SegmentContext {
                tenant: "contoso".into(),
                device: "dev-1".into(),
                user: "alice".into(),
                session: "s".into(),
                monitor: MonitorInfo {
                    id: 0,
                    name: "m0".into(),
                    x: 0,
                    y: 0,
                    width: 8,
                    height: 8,
                    primary: true,
                },
            },
            start: t(i64::from(n)),
            end: t(i64::from(n) + 1),
            frame_count: 1,
            event_count: 0,
        };
        let binding = SealBinding { tenant: "contoso", device: "dev-1", segment_id: id };
        ring.insert(&header, &seal(&key.public_key(), &binding, &[7; 64]).unwrap()).unwrap();
        id
    }

    fn clip(id: &str, segments: &[SegmentId]) -> Clip {
        Clip {
            id: id.into(),
            trigger_id: None,
            user: "alice".into(),
            reason: "test".into(),
            mode: "specific-activities".into(),
            from_utc_micros: 0,
            to_utc_micros: i64::MAX,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            spooled: Vec::new(),
            in_spool: false,
            state: "collecting".into(),
            missing: Vec::new(),
            error: None,
        }
    }

    /// A crash between pinning and saving clips.json, in both orders of damage: on a real ring
    /// in a temp directory, reconciling adopts the unlisted pin, forgets the vanished segment
    /// and releases the pin of a clip nobody remembers.
    #[test]
    fn restart_reconciles_pins_with_the_clip_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = TenantSecretKey::generate().unwrap();
        let mut ring = Ring::open(RingConfig::new(dir.path().join("ring"))).unwrap().0;
        let (listed, unlisted, foreign) =
            (insert(&mut ring, &key, 1), insert(&mut ring, &key, 2), insert(&mut ring, &key, 3));
        ring.pin(listed, "clip-a").unwrap();
        ring.pin(unlisted, "clip-a").unwrap();
        ring.pin(foreign, "clip-unknown").unwrap();
        let vanished = SegmentId::from_bytes([9; 16]);
        let (mut book, problem) = ClipBook::load(&dir.path().join("clips.json"));
        assert!(problem.is_none(), "{problem:?}");
        // Bob's clip: alice's segments are not wanted by it, only its own pins count.
        let mut a = clip("clip-a", &[listed, vanished]);
        a.user = "bob".into();
        book.clips.push(a);

        reconcile_pins(&mut ring, &mut book);

        let mut got = book.clips[0].segments.clone();
        got.sort();
        let mut want = vec![listed.to_string(), unlisted.to_string()];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(ring.pins(foreign).unwrap_or_default(), Vec::<String>::new());
        assert_eq!(ring.pins(unlisted).unwrap(), vec!["clip-a".to_string()]);
    }

    /// A crash after a trigger's clip was recorded but before the ring's segments of its window
    /// were pinned: the restart pins and lists them, so the clip is not left without the part
    /// of its window the ring still holds.
    #[test]
    fn restart_pins_what_a_recorded_clip_wants() {
        let dir = tempfile::tempdir().unwrap();
        let key = TenantSecretKey::generate().unwrap();
        let mut ring = Ring::open(RingConfig::new(dir.path().join("ring"))).unwrap().0;
        let held = insert(&mut ring, &key, 1);
        let (mut book, _) = ClipBook::load(&dir.path().join("clips.json"));
        let mut other = clip("clip-bob", &[]);
        other.user = "bob".into();
        book.clips.push(clip("clip-alice", &[]));
        book.clips.push(other);

        reconcile_pins(&mut ring, &mut book);

        assert_eq!(book.clips[0].segments, vec![held.to_string()]);
        assert!(book.clips[1].segments.is_empty());
        assert_eq!(ring.pins(held).unwrap(), vec!["clip-alice".to_string()]);
    }
}
