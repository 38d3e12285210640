//! Sessions and their capture workers: bringing workers in line with sessions, policy and the
//! clock ([`Daemon::reconcile`]), what a worker reports, the CPU limit, and the drain on SIGTERM.

use super::*;
use rearview_evidence::chain::reason;

/// A session the daemon follows: its gate, its worker (if any) and what the worker said last.
pub(super) struct Tracked {
    pub(super) session: Session,
    pub(super) gate: Gate,
    pub(super) worker: Option<WorkerHandle>,
    pub(super) spec: Option<WorkerSpec>,
    pub(super) status: WorkerStatus,
    pub(super) died_at: Option<Instant>,
    /// `<session>#<n>`: tells this worker's messages from those of one being replaced.
    pub(super) worker_key: String,
    /// Why capture last stopped here: a chain gap's reason when it resumes.
    pub(super) stopped: Option<StopNote>,
}

/// The CPU bounds the policy sets (or the defaults without one).
pub(super) struct CpuSettings {
    /// Percent of the whole machine the workers may use together.
    pub(super) limit_percent: f64,
    /// The policy's frame rate, in frames per 1000 s, before any throttling.
    pub(super) base_fps_milli: u32,
}

/// The CPU bounds of `policy`: 5 % of the machine at 1 fps without one.
pub(super) fn cpu_settings(policy: Option<&VerifiedPolicy>) -> CpuSettings {
    match policy {
        Some(p) => {
            let pl = p.payload();
            CpuSettings {
                limit_percent: f64::from(pl.limits.cpu_limit_percent),
                base_fps_milli: pl.capture.fps.saturating_mul(1000),
            }
        }
        None => CpuSettings { limit_percent: 5.0, base_fps_milli: 1000 },
    }
}

impl Daemon {
    /// SIGTERM: workers hand over their open segments, which go to the store (sealed and
    /// stored once [`StoreHandle::finish`] returns).
    pub(super) async fn drain(&mut self) {
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
        if let Some(r) = self.uploader_running.take() {
            r.stop();
        }
        let _ = std::fs::remove_file(self.opts.config.socket_path());
    }

    /// Brings workers in line with sessions, policy and the clock.
    pub(super) async fn reconcile(&mut self) {
        if self.draining {
            return;
        }
        let state = self.sessions_rx.borrow().clone();
        self.forget_ended_sessions(&state);
        let enrolled = self.sealing_target().is_some();
        let now = now();
        for session in state.sessions {
            let accounts = self.opts.config.local_accounts();
            let gate = gate::decide(enrolled, self.policy_payload(), accounts, &session, now);
            let spec = match &gate {
                Gate::Capture { principal, .. } => self.spec_for(&session, principal),
                _ => None,
            };
            let key = session.id.clone();
            self.track(session, &gate);
            match (&gate, spec) {
                (Gate::Capture { .. }, Some(spec)) => self.keep_capturing(&key, spec).await,
                _ => self.stop_capturing(&key, &gate).await,
            }
        }
    }

    /// Sessions that ended lose their workers (which hand over their open segments).
    fn forget_ended_sessions(&mut self, state: &SessionsState) {
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
    }

    /// Records `session` and the gate's decision for it (logged when it changes).
    fn track(&mut self, session: Session, gate: &Gate) {
        let key = session.id.clone();
        let t = self.sessions.entry(key.clone()).or_insert_with(|| Tracked {
            session: session.clone(),
            gate: Gate::NoPolicy,
            worker: None,
            spec: None,
            status: WorkerStatus::default(),
            died_at: None,
            worker_key: String::new(),
            stopped: None,
        });
        t.session = session;
        let was = std::mem::replace(&mut t.gate, gate.clone());
        if was != *gate {
            tracing::info!(
                session = key,
                user = t.session.user,
                gate = gate.describe(),
                "capture decision"
            );
        }
    }

    /// Session `key` may be captured with `spec`: a worker on other settings is restarted, a
    /// dead one replaced (not sooner than [`RESPAWN_AFTER`] after it died).
    async fn keep_capturing(&mut self, key: &str, spec: WorkerSpec) {
        let Some(t) = self.sessions.get_mut(key) else { return };
        if t.worker.is_some() && t.spec.as_ref() != Some(&spec) {
            // Settings changed (fps, segment length, monitors): restart cleanly.
            if let Some(w) = t.worker.take() {
                t.stopped = Some(StopNote::now(reason::SETTINGS_CHANGED));
                tokio::spawn(w.stop(DRAIN_DEADLINE));
            }
        }
        if t.worker.as_mut().is_some_and(|w| w.exited()) {
            t.worker = None;
        }
        let may_start = t.died_at.is_none_or(|d| d.elapsed() >= RESPAWN_AFTER);
        if t.worker.is_none() && may_start {
            self.start_worker(key, spec).await;
        }
    }

    async fn start_worker(&mut self, key: &str, spec: WorkerSpec) {
        let base_fps = self.throttle_base();
        let Some(t) = self.sessions.get(key) else { return };
        let run_as = RunAs { uid: t.session.uid, gid: t.session.gid, env: t.session.env.clone() };
        let mut spec = spec;
        spec.fps_milli = self.rate_milli;
        self.next_worker += 1;
        let worker_key = format!("{key}#{}", self.next_worker);
        let spawned = WorkerHandle::spawn(
            &self.opts.worker_exe,
            spec.clone(),
            &run_as,
            worker_key.clone(),
            self.worker_tx.clone(),
        )
        .await;
        let Some(t) = self.sessions.get_mut(key) else { return };
        match spawned {
            Ok(w) => {
                tracing::info!(session = key, pid = w.pid(), "capture worker started");
                t.worker = Some(w);
                t.worker_key = worker_key;
                // What the spec asks, before throttling: a throttled rate is no new setting.
                spec.fps_milli = base_fps;
                t.spec = Some(spec);
                t.status = WorkerStatus { state: "starting".into(), ..Default::default() };
            }
            Err(e) => {
                t.died_at = Some(Instant::now());
                self.error(format!("cannot start capture worker for session {key}: {e}"));
            }
        }
    }

    /// Session `key` may not be captured (any more): its worker stops at once — killed, so
    /// what is in flight is dropped, unless the gate only idles it.
    async fn stop_capturing(&mut self, key: &str, gate: &Gate) {
        let Some(t) = self.sessions.get_mut(key) else { return };
        if let Some(w) = t.worker.take() {
            tracing::info!(session = key, gate = gate.describe(), "capture stopped");
            t.stopped = Some(StopNote::now(gate.gap_reason(t.session.locked)));
            t.spec = None;
            if matches!(gate, Gate::Idle { .. }) {
                tokio::spawn(w.stop(DRAIN_DEADLINE));
            } else {
                w.kill().await;
            }
        }
    }

    pub(super) fn throttle_base(&self) -> u32 {
        cpu_settings(self.policy.as_ref()).base_fps_milli
    }

    pub(super) fn spec_for(&self, session: &Session, principal: &str) -> Option<WorkerSpec> {
        let SealingTarget { tenant, device, .. } = self.sealing_target()?;
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
    pub(super) async fn worker_message(&mut self, item: FromWorker) {
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
                        t.stopped = Some(StopNote::now(reason::WORKER_CRASHED));
                        let msg = format!("capture worker of session {key} exited; restarting");
                        self.error(msg);
                    }
                }
            }
            WorkerEvent::Message(WorkerMessage::Status(s)) => {
                if let Some(t) = self.sessions.get_mut(&key) {
                    if let Some(e) = s.error.clone().filter(|e| t.status.error.as_ref() != Some(e))
                    {
                        let what = format!("session {key}: {e}");
                        self.note_error(ErrorRecord { at_utc_micros: now_micros(), what });
                    }
                    if let Some(t) = self.sessions.get_mut(&key) {
                        t.status = s;
                    }
                }
            }
            WorkerEvent::Message(WorkerMessage::Segment(bytes)) => self.segment(&key, bytes).await,
        }
    }

    pub(super) async fn cpu_step(&mut self) {
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
                    // Only where capture runs: a locked session keeps its own reason.
                    if decision.paused() {
                        t.stopped = Some(StopNote::now(reason::CPU_PAUSED));
                    }
                    let _ = w.set_rate(decision.fps_milli).await;
                }
            }
        }
    }

    pub(crate) fn sessions_for_doctor(&self) -> Vec<SessionView> {
        self.sessions
            .values()
            .map(|t| SessionView {
                session: t.session.clone(),
                status: t.status.clone(),
                worker_running: t.worker.is_some(),
            })
            .collect()
    }
}

/// One session as `doctor` sees it.
pub(crate) struct SessionView {
    pub session: Session,
    pub status: WorkerStatus,
    pub worker_running: bool,
}
