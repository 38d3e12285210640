//! The evidence store: one thread owns the ring, the clips being collected and their hand-over
//! to the spool, so that parsing, sealing, fsyncs and SQLite never run on the daemon's event
//! loop (admin requests, worker messages and triggers keep being answered while a disk is slow).
//!
//! ```text
//!  Daemon::run (async loop)                          store thread (blocking)
//!  ────────────────────────                          ───────────────────────
//!  worker segment, gate passed ─── Job::Segment ───► check, seal, sign into its chain
//!                                                    ([`chain`]), ring insert, clips take it,
//!                                                    spool hand-over, all-activities queue
//!  verified trigger ────────────── Job::Trigger ───► record its clip, then tell the uploader
//!  indicator's offline rule ────── Job::OpenClip ──► record the clip
//!  1 s tick ────────────────────── Job::Tick ──────► close ended clips, retry hand-overs,
//!                                                    evict expired segments (every 10 s)
//!  new policy ──────────────────── Job::Retention ─► reopen the ring with its retention
//!  status, buffer, clips ───────── Job::Ask ───────► answers on a oneshot (ring, spool and
//!                                                    upload figures, the clip records)
//!  error list ◄──────────────────── Event::Error ─── what went wrong, for `rearview status`
//! ```
//!
//! * Jobs run one at a time, in the order sent, so everything the daemon promised about order
//!   still holds: a trigger's clip is stored before the uploader marks the trigger seen
//!   ([`Job::Trigger`] carries the delivery and answers it), a segment is in the ring before a
//!   clip lists it, a clip is listed before it is pinned.
//! * The queue is bounded ([`QUEUE`] jobs). When the disk cannot keep up the queue fills; the
//!   loop then stops reading workers' messages (their inboxes, bounded in bytes, fill, see
//!   [`crate::worker`], and the workers wait) and keeps answering the admin socket. At most
//!   one tick waits in the queue (the next one does the same work). A policy, trigger or
//!   offline clip that comes while the queue is full waits on the loop for the next free
//!   place, the end of the store's current job (keeping their order); so may a segment whose
//!   place a report's task took first. Plaintext does not pile up in memory.
//! * The loop never waits for a job's result: reports are awaited by a task that then answers
//!   the admin caller.
//! * Stopping: after the drain the loop hands over its last segments and calls
//!   [`StoreHandle::finish`], which closes the queue and waits until the thread has done every
//!   job in it. A thread that died (a panic) closes the queue too; the loop then stops with
//!   [`DaemonError::StoreStopped`](super::DaemonError::StoreStopped), and the service manager
//!   restarts the daemon, whose start recovers the ring and the clip records.

mod chain;
mod collect;
mod intake;

pub(super) use intake::Expected;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rearview_capture::ring::Ring;
use rearview_capture::seal::TenantPublicKey;
use rearview_config::{AgentConfig, CaptureMode};
use rearview_protocol::ClipState;
use rearview_uploader::{TriggerDelivery, Uploader};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::clips::{self, ClipBook, RecordState};
use super::startup::open_ring;
use super::{now_micros, ClipWindow};
use crate::status::{self, ErrorRecord};

/// Jobs the queue holds before the loop waits to add one.
pub const QUEUE: usize = 32;
/// Expired segments are evicted this often.
const EVICT_EVERY: Duration = Duration::from_secs(10);

/// What the loop asks of the store.
pub(super) enum Job {
    /// A worker's segment, to check, seal and keep.
    Segment(Intake),
    /// A verified trigger: record its clip, then answer the delivery.
    Trigger(Arc<TriggerDelivery>),
    /// Open a clip the daemon decided on itself (an indicator's offline rule).
    OpenClip { user: String, reason: String, window: ClipWindow },
    /// Once a second: close clips whose window ended, retry hand-overs, evict now and then.
    Tick(Pace),
    /// The policy's ring retention (the ring is reopened when it changes).
    Retention(Duration),
    /// A report for the admin socket or the console.
    Ask(Ask),
}

/// A report the store answers.
pub(super) enum Ask {
    Status(oneshot::Sender<status::StorePart>),
    Buffer(oneshot::Sender<Vec<status::BufferEntry>>),
    Clips(oneshot::Sender<Vec<status::ClipReport>>),
}

/// What the store tells the loop.
pub(super) enum Event {
    /// Something went wrong; it belongs in `rearview status`'s error list.
    Error(ErrorRecord),
}

/// A worker's segment as the loop passes it on: whose the daemon says it is, how its user is
/// captured, and the tenant key to seal it to.
pub(super) struct Intake {
    /// The session's key, for messages.
    pub session_key: String,
    pub expected: Expected,
    pub mode: CaptureMode,
    pub seal_to: TenantPublicKey,
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The session's last stop of capture, for the gap before this segment (if there is one).
    pub stop: Option<StopNote>,
}

/// Why capture last stopped in a session, and when, as the loop saw it: the reason a chain's
/// gap entry gives when capture resumes (see [`Gate::gap_reason`](super::gate::Gate::gap_reason)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StopNote {
    pub reason: &'static str,
    pub at_utc_micros: i64,
}

impl StopNote {
    pub(super) fn now(reason: &'static str) -> StopNote {
        StopNote { reason, at_utc_micros: now_micros() }
    }
}

/// The pace of capture that clip closing depends on: how long segments are, and the frame rate
/// that tells a gap from the time between two frames.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    pub segment_secs: u32,
    pub base_fps_milli: u32,
}

/// The loop's end of the store: a bounded queue to its thread.
pub(super) struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
    /// A tick is in the queue (ticks do not pile up behind a slow job).
    tick_queued: Arc<AtomicBool>,
}

impl StoreHandle {
    /// Queues `job`, waiting while the queue is full. `false`: the store thread is gone.
    pub(super) async fn send(&self, job: Job) -> bool {
        self.jobs.send(job).await.is_ok()
    }

    /// Queues a tick unless one is still queued or the queue is full (the next tick does the
    /// same work). `false`: the store thread is gone.
    pub(super) fn tick(&self, pace: Pace) -> bool {
        if self.tick_queued.swap(true, Ordering::AcqRel) {
            return true;
        }
        match self.jobs.try_send(Job::Tick(pace)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.tick_queued.store(false, Ordering::Release);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the queue has room for another job: the loop reads workers' messages only
    /// then, so a store that cannot keep up slows the workers, not the loop.
    pub(super) fn has_room(&self) -> bool {
        self.jobs.capacity() > 0
    }

    /// A sender of jobs, for a task that asks for a report.
    pub(super) fn sender(&self) -> mpsc::Sender<Job> {
        self.jobs.clone()
    }

    /// Whether the store thread has stopped taking jobs (it panicked).
    pub(super) fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }

    /// Closes the queue and waits until the thread has done every job in it.
    pub(super) async fn finish(self) {
        let StoreHandle { jobs, thread, .. } = self;
        drop(jobs);
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the evidence store thread panicked"),
            Err(e) => tracing::error!(error = %e, "waiting for the evidence store failed"),
        }
    }
}

/// The store's state; lives on its thread.
pub(super) struct Store {
    config: AgentConfig,
    uploader: Arc<Uploader>,
    ring: Ring,
    ring_retention: Duration,
    clips: ClipBook,
    pace: Pace,
    events: mpsc::UnboundedSender<Event>,
    last_evict: Instant,
    /// Clips that failed to list a segment at intake; they take it on the next tick.
    retake: BTreeSet<String>,
    /// The chains' heads in use and the key that signs them.
    chains: chain::Chains,
}

/// What the store takes over at start: the ring the daemon opened, its retention, and the
/// collecting clips loaded from the spool database.
pub(super) struct Held {
    pub ring: Ring,
    pub ring_retention: Duration,
    pub clips: ClipBook,
}

impl Store {
    pub(super) fn new(
        config: AgentConfig,
        uploader: Arc<Uploader>,
        held: Held,
        pace: Pace,
        events: mpsc::UnboundedSender<Event>,
    ) -> Store {
        let Held { ring, ring_retention, clips } = held;
        Store {
            config,
            uploader,
            ring,
            ring_retention,
            clips,
            pace,
            events,
            last_evict: Instant::now(),
            retake: BTreeSet::new(),
            chains: chain::Chains::default(),
        }
    }

    /// Starts the store's thread.
    pub(super) fn spawn(self) -> std::io::Result<StoreHandle> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let tick_queued = Arc::new(AtomicBool::new(false));
        let ticked = tick_queued.clone();
        let thread = std::thread::Builder::new()
            .name("evidence-store".into())
            .spawn(move || self.run(queue, &ticked))?;
        Ok(StoreHandle { jobs, thread, tick_queued })
    }

    fn run(mut self, mut queue: mpsc::Receiver<Job>, tick_queued: &AtomicBool) {
        while let Some(job) = queue.blocking_recv() {
            if matches!(job, Job::Tick(_)) {
                tick_queued.store(false, Ordering::Release);
            }
            self.handle(job);
        }
        tracing::debug!("evidence store: queue closed, every job done");
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Segment(intake) => {
                rearview_uploader::fault::stall("store:segment");
                self.segment(intake)
            }
            Job::Trigger(delivery) => match self.trigger(delivery.trigger()) {
                Ok(()) => {
                    rearview_uploader::fault::point("trigger:after-intent");
                    delivery.recorded();
                }
                Err(why) => delivery.not_recorded(why),
            },
            Job::OpenClip { user, reason, window } => {
                // A failure is in the error list already; nothing resends an indicator.
                let _ = self.open_clip(None, user, reason, window);
            }
            Job::Tick(pace) => {
                self.pace = pace;
                self.finish_clips();
                if self.last_evict.elapsed() >= EVICT_EVERY {
                    self.last_evict = Instant::now();
                    self.ring.evict_expired(now_micros());
                    self.prune_chains(now_micros());
                }
            }
            Job::Retention(wanted) => self.set_retention(wanted),
            Job::Ask(Ask::Status(reply)) => {
                let _ = reply.send(self.status());
            }
            Job::Ask(Ask::Buffer(reply)) => {
                let _ = reply.send(self.buffer());
            }
            Job::Ask(Ask::Clips(reply)) => {
                let _ = reply.send(self.clip_reports());
            }
        }
    }

    fn error(&self, what: String) {
        tracing::warn!("{what}");
        let _ = self.events.send(Event::Error(ErrorRecord { at_utc_micros: now_micros(), what }));
    }

    fn set_retention(&mut self, wanted: Duration) {
        if wanted == self.ring_retention {
            return;
        }
        match open_ring(&self.config, wanted) {
            Ok(ring) => {
                self.ring = ring;
                self.ring_retention = wanted;
            }
            Err(e) => self.error(format!("ring retention not changed: {e}")),
        }
    }

    fn status(&self) -> status::StorePart {
        let up = self.uploader.status().unwrap_or_default();
        let mut today: Vec<(String, u64)> = up.bytes_today.into_iter().collect();
        today.sort();
        status::StorePart {
            ring: self.ring_report(),
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
        }
    }

    fn ring_report(&self) -> status::RingReport {
        let stats = self.ring.stats();
        status::RingReport {
            dir: self.config.ring_dir().display().to_string(),
            segments: stats.segments,
            bytes: stats.bytes,
            pinned_segments: stats.pinned_segments,
            pinned_bytes: stats.pinned_bytes,
            max_bytes: self.config.ring_max_bytes(),
            retention_secs: self.ring_retention.as_secs(),
            oldest_utc_micros: self.ring.entries().map(|e| e.start.utc_micros).min(),
            newest_utc_micros: self.ring.entries().map(|e| e.end.utc_micros).max(),
            pin_failures: self.clips.pin_failures.count,
            last_pin_failure: self.clips.pin_failures.last.clone(),
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
        let records = match self.uploader.spool().clip_records() {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "clip records unreadable");
                Vec::new()
            }
        };
        records.into_iter().map(|c| self.clip_report(c, up.uploading.as_deref())).collect()
    }

    fn clip_report(&self, c: clips::Clip, uploading: Option<&str>) -> status::ClipReport {
        // Handed to the spool: what the spool says (pending, sent, refused, lost).
        let state = if c.state == RecordState::Pending {
            if uploading == Some(c.id.as_str()) {
                "uploading".to_string()
            } else {
                // (Never a second Spool::open here: opening reconciles, and would delete a
                // segment file the uploader is about to commit.)
                self.uploader
                    .clip_state(&c.id)
                    .ok()
                    .flatten()
                    .map_or("pending", ClipState::as_str)
                    .to_string()
            }
        } else {
            c.state.as_str().to_string()
        };
        status::ClipReport {
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
            id: c.id,
            trigger_id: c.trigger_id,
            user: c.user,
            reason: c.reason,
            from_utc_micros: c.from_utc_micros,
            to_utc_micros: c.to_utc_micros,
        }
    }
}
