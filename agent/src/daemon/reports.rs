//! What the daemon tells about itself: `rearview status`, `buffer` and `clips`, and the health
//! report the console gets every [`HEALTH_EVERY`].

use super::*;
use rearview_protocol::kinds::capture_mode_name;
use rearview_protocol::HealthState;

impl Daemon {
    pub(super) fn send_health(&self) {
        if !self.uploader.is_enrolled() {
            return;
        }
        let report = self.status_report();
        let state = if report.cpu.paused {
            HealthState::PausedCpuLimit
        } else if report.sessions.iter().any(|s| s.capture == "capturing") {
            HealthState::Capturing
        } else {
            HealthState::Idle
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

    pub(crate) fn status_report(&self) -> StatusReport {
        let up = self.uploader.status().unwrap_or_default();
        let identity = self.uploader.identity();
        let decision = self.throttle.decision();
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
            policy: self.policy_info(now()),
            sessions: self.session_reports(decision.paused()),
            sessions_problem: self.sessions_rx.borrow().problem.clone(),
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
            cpu: status::CpuReport {
                percent_of_machine: self.cpu_percent,
                limit_percent: cpu_settings(self.policy.as_ref()).limit_percent,
                throttled: decision.throttled,
                paused: decision.paused(),
            },
            last_errors: self.errors.clone(),
            indicators_seen: self.indicators_seen,
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

    fn ring_report(&self) -> status::RingReport {
        let stats = self.ring.stats();
        status::RingReport {
            dir: self.opts.config.ring_dir().display().to_string(),
            segments: stats.segments,
            bytes: stats.bytes,
            pinned_segments: stats.pinned_segments,
            pinned_bytes: stats.pinned_bytes,
            max_bytes: self.opts.config.ring_max_bytes(),
            retention_secs: self.ring_retention.as_secs(),
            oldest_utc_micros: self.ring.entries().map(|e| e.start.utc_micros).min(),
            newest_utc_micros: self.ring.entries().map(|e| e.end.utc_micros).max(),
            pin_failures: self.clips.pin_failures.count,
            last_pin_failure: self.clips.pin_failures.last.clone(),
        }
    }

    pub(super) fn buffer(&self) -> Vec<status::BufferEntry> {
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

    pub(super) fn clip_reports(&self) -> Vec<status::ClipReport> {
        let up = self.uploader.status().unwrap_or_default();
        let records = match self.uploader.spool().clip_records() {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "clip records unreadable");
                Vec::new()
            }
        };
        records
            .into_iter()
            .map(|c| {
                // Handed to the spool: what the spool says (pending, sent, refused, lost).
                let state = if c.state == RecordState::Pending {
                    if up.uploading.as_deref() == Some(c.id.as_str()) {
                        "uploading".to_string()
                    } else {
                        // (Never a second Spool::open here: opening reconciles, and would
                        // delete a segment file the uploader is about to commit.)
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
            })
            .collect()
    }
}
