//! The daemon: one async loop owns the sessions, the workers and the policy, and reacts to what
//! happens; one thread, the evidence store ([`store`]), owns the ring, the clips being
//! collected and their hand-over to the spool.
//!
//! ```text
//!  admin socket ─┐   uploader commands ─┐   sessions (logind/fixed) ─┐
//!  indicators ───┼──► Daemon::run (select loop, 1 s tick) ◄───────────┘
//!  worker msgs ──┘        │ gate → spawn/kill workers, throttle rate
//!                         │ segment of a session still allowed ─┐
//!                         ▼                                      ▼
//!                   store thread: parse, check, seal ──► ring (sealed) ──► clips ──► spool ──► console
//! ```
//!
//! * Gating ([`gate`]) runs on every policy, session change and tick: a session that is no
//!   longer allowed loses its worker at once (killed: its open segment is discarded), so a
//!   revocation stops capture as soon as the new policy arrives.
//! * A segment a worker sends goes to the store only while its session may be captured; there
//!   it is parsed in full and must carry the tenant, device, principal and session the daemon
//!   assigned; it is then sealed to the tenant key and stored. Workers'
//!   messages arrive through one inbox bounded in messages and bytes ([`crate::worker`],
//!   "Bounds"); a worker that breaks the protocol is killed and the reason recorded.
//! * Triggers open [`clips`]: existing segments in the window are pinned, later ones as they
//!   close; when the window has ended the clip goes to the spool. A trigger is accepted in
//!   this order, so that a crash at any point yields exactly one clip for it:
//!
//!   ```text
//!   uploader verifies ─► store records the clip (spool database) ─► uploader marks the id
//!   seen (trust.json) ─► uploader acknowledges to the console
//!   ```
//!
//!   A crash before "seen" makes the console send it again; the store finds the clip it holds
//!   for that trigger id and answers "recorded" without opening another. After "seen", the
//!   resend is a replay, only acknowledged. A restart continues collecting the clips the
//!   spool database holds as collecting; the ring's pins follow those records
//!   ([`clips::ClipBook::load`]).
//! * The loop never waits on the network, nor for the disk's work to finish: `doctor`'s
//!   console probe, triggers sent over the admin socket and the store's reports run in tasks
//!   that answer the caller themselves. It may wait for a free place in the store's queue
//!   (see [`store`], "bounded").
//! * All-activities users: each stored segment is queued at once as a one-segment clip (the
//!   uploader applies the daily limit).
//! * Indicators are reported to the console; when that fails (offline) and the policy has a
//!   rule for the kind, the daemon opens the clip itself.
//! * SIGTERM: workers finish and send their open segments within [`DRAIN_DEADLINE`]; the daemon
//!   exits once the store has sealed and stored everything queued. SIGHUP re-reads the config file (log level,
//!   watched folders, display and `[identity] domain` take effect; socket and data directory
//!   need a restart).

mod activity;
// One module per job; each adds the methods of its job to `Daemon` (the loop above only
// dispatches): `startup` (opening state, binding the socket), `workers` (sessions and capture
// workers, the CPU limit, the drain), `intake` (a worker's segment, on to the store),
// `requests` (the admin socket), `reports` (status, buffer, clips, health), `activity`
// (indicators). `store` is the thread that owns the ring and the clips (sealing, ring, spool).
pub mod clips;
pub mod doctor;
pub mod gate;
mod intake;
mod reports;
mod requests;
mod startup;
mod store;
mod workers;

use startup::{hostname, ring_retention};
pub use startup::{DaemonError, Options};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rearview_capture::ring::{Ring, RingConfig};
use rearview_capture::seal::TenantPublicKey;
use rearview_config::time::OffsetDateTime;
use rearview_config::{AgentConfig, SignedEnvelope, VerifiedPolicy};
use rearview_protocol::{ActivityEvent, HealthReport, UnixMillis};
use rearview_uploader::{Command, TriggerAccepted, Uploader, UploaderConfig};
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
use clips::ClipBook;
use gate::Gate;
use intake::SealingTarget;
use rearview_uploader::spool::ClipWindow;
use store::{Job, Pace, StopNote, Store, StoreHandle};
use workers::{cpu_settings, Tracked};

/// How long SIGTERM waits for workers to hand over their open segments.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Health goes to the console this often.
pub const HEALTH_EVERY: Duration = Duration::from_secs(60);
/// CPU is sampled this often.
const CPU_EVERY: Duration = Duration::from_secs(2);
/// A crashed worker is restarted after this long.
const RESPAWN_AFTER: Duration = Duration::from_secs(3);

/// Work done off the loop (in a task), reported back to it.
enum Completed {
    /// This device enrolled: start the uploader and fetch the policy.
    Enrolled,
    /// An indicator of `principal` the console could not be told about.
    IndicatorUnreported { activity: Activity, principal: String },
    /// The answer to an admin request worked out off the loop (enrollment, a trigger).
    Reply { reply: tokio::sync::oneshot::Sender<Response>, response: Response },
}

pub struct Daemon {
    opts: Options,
    uploader: Arc<Uploader>,
    uploader_running: Option<rearview_uploader::Running>,
    commands: mpsc::UnboundedReceiver<Command>,
    policy: Option<VerifiedPolicy>,
    /// The ring, the clips and the spool hand-over, on their own thread.
    store: StoreHandle,
    store_events: mpsc::UnboundedReceiver<store::Event>,
    sessions: HashMap<String, Tracked>,
    sessions_rx: watch::Receiver<SessionsState>,
    worker_tx: WorkerSender,
    worker_rx: mpsc::Receiver<FromWorker>,
    admin_rx: mpsc::Receiver<Incoming>,
    activity_rx: mpsc::Receiver<Activity>,
    completed_tx: mpsc::UnboundedSender<Completed>,
    completed_rx: mpsc::UnboundedReceiver<Completed>,
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
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.reload(),
                Some(inc) = self.admin_rx.recv() => self.admin(inc).await,
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                Ok(()) = self.sessions_rx.changed() => self.reconcile().await,
                // Only while the store can take a segment (see `store`, "bounded").
                Some(item) = self.worker_rx.recv(), if self.store.has_room() => {
                    self.worker_message(item).await
                }
                Some(activity) = self.activity_rx.recv() => self.activity(activity),
                Some(done) = self.completed_rx.recv() => self.on_completed(done).await,
                Some(store::Event::Error(e)) = self.store_events.recv() => self.note_error(e),
                _ = tick.tick() => {
                    if self.store.is_closed() {
                        return Err(DaemonError::StoreStopped);
                    }
                    self.reconcile().await;
                    if last_cpu.elapsed() >= CPU_EVERY {
                        last_cpu = Instant::now();
                        self.cpu_step().await;
                    }
                    if !self.store.tick(self.pace()) {
                        return Err(DaemonError::StoreStopped);
                    }
                    if last_health.elapsed() >= HEALTH_EVERY {
                        last_health = Instant::now();
                        self.send_health();
                    }
                }
            }
        }
        self.drain().await;
        self.store.finish().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Queues `job` for the store's thread (waiting while its queue is full). A store that
    /// is gone is noticed on the next tick, which stops the daemon.
    async fn hand_to_store(&mut self, job: Job) {
        if !self.store.send(job).await {
            self.error("the evidence store has stopped; the daemon stops".to_string());
        }
    }

    /// What closing clips depends on (see [`Pace`]).
    fn pace(&self) -> Pace {
        let segment_secs = self.policy_payload().map(|p| p.capture.segment_secs).unwrap_or(10);
        Pace { segment_secs, base_fps_milli: self.throttle_base() }
    }

    fn error(&mut self, what: String) {
        tracing::warn!("{what}");
        self.note_error(ErrorRecord { at_utc_micros: now_micros(), what });
    }

    /// Adds to the error list `rearview status` shows (the newest [`status::MAX_ERRORS`]).
    fn note_error(&mut self, record: ErrorRecord) {
        self.errors.push(record);
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
            // The store records its clip, then lets the uploader mark it seen.
            Command::Trigger(delivery) => self.hand_to_store(Job::Trigger(delivery)).await,
        }
    }

    async fn new_policy(&mut self, p: VerifiedPolicy) {
        tracing::info!(version = p.version(), "policy in force");
        self.policy = Some(p);
        let wanted = ring_retention(&self.opts.config, self.policy.as_ref());
        self.hand_to_store(Job::Retention(wanted)).await;
        let cpu = cpu_settings(self.policy.as_ref());
        self.throttle.set(cpu.limit_percent, cpu.base_fps_milli);
        self.rate_milli = self.throttle.decision().fps_milli;
        self.reconcile().await;
    }

    fn policy_payload(&self) -> Option<&rearview_config::PolicyPayload> {
        self.policy.as_ref().map(|p| p.payload())
    }

    async fn on_completed(&mut self, done: Completed) {
        match done {
            Completed::Enrolled => {
                if self.uploader_running.is_none() {
                    match self.uploader.start() {
                        Ok(r) => self.uploader_running = Some(r),
                        Err(e) => self.error(format!("uploader not started: {e}")),
                    }
                }
                self.spawn_policy_sync();
                self.reconcile().await;
            }
            Completed::IndicatorUnreported { activity, principal } => {
                self.open_offline_clip(&activity, principal).await
            }
            Completed::Reply { reply, response } => {
                let _ = reply.send(response);
            }
        }
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
