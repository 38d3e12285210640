//! What the daemon tells about itself: `rearview status`, `buffer` and `clips`, and the health
//! report the console gets every [`HEALTH_EVERY`].

use super::*;
use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::HealthState;
use tokio::sync::oneshot;

use super::store::{Ask, Job};

/// How long a report waits for the store's part: a store stuck on a slow disk must not keep
/// `rearview status` from showing the rest.
pub const STORE_ANSWERS_WITHIN: Duration = Duration::from_secs(3);

impl Daemon {
    pub(super) fn send_health(&self) {
        if !self.uploader.is_enrolled() {
            return;
        }
        let report = self.status_report();
        let store = self.ask_store(Ask::Status);
        let up = self.uploader.clone();
        tokio::spawn(async move {
            let health = health_report(report.with_store(store.await));
            if let Err(e) = up.report_health(health).await {
                tracing::debug!(error = %e, "health not reported");
            }
        });
    }

    /// Asks the store for a report (see [`Ask`]); the answer is awaited off the loop (`None`:
    /// the store did not answer within [`STORE_ANSWERS_WITHIN`], or is gone).
    pub(super) fn ask_store<T: Send + 'static>(
        &self,
        ask: impl FnOnce(oneshot::Sender<T>) -> Ask,
    ) -> impl std::future::Future<Output = Option<T>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let job = Job::Ask(ask(reply));
        let jobs = self.store.sender();
        let asked = async move {
            jobs.send(job).await.ok()?;
            answer.await.ok()
        };
        async move { tokio::time::timeout(STORE_ANSWERS_WITHIN, asked).await.ok().flatten() }
    }

    /// Everything `rearview status` shows but what the store adds (ring, spool, upload and
    /// server figures: disk and database reads, [`StatusReport::with_store`]).
    pub(crate) fn status_report(&self) -> StatusReport {
        let identity = self.uploader.identity();
        let decision = self.throttle.decision();
        StatusReport {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            enrollment: status::Enrollment {
                enrolled: identity.is_some(),
                server: self.opts.config.server_url().to_string(),
                tenant: identity.as_ref().map(|i| i.tenant_id.clone()),
                device: identity.as_ref().map(|i| i.device_id.clone()),
            },
            policy: self.policy_info(now()),
            sessions: self.session_reports(decision.paused()),
            sessions_problem: self.sessions_rx.borrow().problem.clone(),
            cpu: status::CpuReport {
                percent_of_machine: self.cpu_percent,
                limit_percent: cpu_settings(self.policy.as_ref()).limit_percent,
                throttled: decision.throttled,
                paused: decision.paused(),
            },
            last_errors: self.errors.clone(),
            indicators_seen: self.indicators_seen,
            ..StatusReport::default()
        }
    }

    fn policy_info(&self, now: OffsetDateTime) -> Option<status::PolicyInfo> {
        self.policy.as_ref().map(|p| {
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
        })
    }

    fn session_reports(&self, cpu_paused: bool) -> Vec<status::SessionReport> {
        let mut sessions: Vec<status::SessionReport> = self
            .sessions
            .values()
            .map(|t| {
                let capture = match (&t.gate, &t.worker) {
                    (Gate::Capture { .. }, Some(_)) if cpu_paused => {
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
                    mode: t.gate.mode().map(|m| capture_mode_name(m).to_string()),
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
        sessions
    }
}

/// The health report the console gets, made of `report`.
fn health_report(report: StatusReport) -> HealthReport {
    let state = if report.cpu.paused {
        HealthState::PausedCpuLimit
    } else if report.sessions.iter().any(|s| s.capture == "capturing") {
        HealthState::Capturing
    } else {
        HealthState::Idle
    };
    HealthReport {
        state,
        policy_version: report.policy.as_ref().map(|p| p.version).unwrap_or(0),
        users: report.sessions.iter().map(|s| s.user.clone()).collect(),
        errors: report.last_errors.iter().map(|e| e.what.clone()).collect(),
        details: serde_json::json!({ "agent": report }),
    }
}
