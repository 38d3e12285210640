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
//!   uploader verifies ─► loop records the clip (spool database) ─► uploader marks the id
//!   seen (trust.json) ─► uploader acknowledges to the console
//!   ```
//!
//!   A crash before "seen" makes the console send it again; the loop finds the clip it holds
//!   for that trigger id and answers "recorded" without opening another. After "seen", the
//!   resend is a replay, only acknowledged. A restart continues collecting the clips the
//!   spool database holds as collecting; the ring's pins follow those records
//!   ([`clips::ClipBook::load`]).
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

mod activity;
// One module per job; each adds the methods of its job to `Daemon` (the loop above only
// dispatches): `startup` (opening state, binding the socket), `workers` (sessions and capture
// workers, the CPU limit, the drain), `intake` (a worker's segment), `collect` (trigger clips
// into the spool), `requests` (the admin socket), `reports` (status, buffer, clips, health),
// `activity` (indicators).
pub mod clips;
mod collect;
pub mod doctor;
pub mod gate;
mod intake;
mod reports;
mod requests;
mod startup;
mod workers;

use startup::{hostname, open_ring, ring_retention};
pub use startup::{DaemonError, Options};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rearview_capture::ring::{Ring, RingConfig};
use rearview_capture::seal::{seal, SealBinding, TenantPublicKey};
use rearview_capture::segment::{Segment, SegmentId};
use rearview_config::time::OffsetDateTime;
use rearview_config::{AgentConfig, CaptureMode, SignedEnvelope, VerifiedPolicy, VerifiedTrigger};
use rearview_protocol::{ActivityEvent, ClipState, HealthReport, MissingRange, UnixMillis};
use rearview_uploader::{
    Command, NewClip, NewSegment, SegmentBytes, TriggerAccepted, Uploader, UploaderConfig,
};
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
use clips::{Clip, ClipBook, RecordState};
use gate::Gate;
use intake::SealingTarget;
use rearview_uploader::spool::{ClipChange, ClipWindow};
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
    ring: Ring,
    ring_retention: Duration,
    clips: ClipBook,
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
                Some(done) = self.completed_rx.recv() => self.on_completed(done).await,
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
                self.open_offline_clip(&activity, principal)
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
