//! Requests on the admin socket (`rearview` CLI): one function per request. Requests that
//! would wait on the network (enrollment, doctor's probe, a trigger the uploader must see
//! recorded) run in tasks that answer the caller themselves; the loop never waits.

use super::store::Ask;
use super::*;

impl Daemon {
    pub(super) fn reload(&mut self) {
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

    pub(super) async fn admin(&mut self, inc: Incoming) {
        let Incoming { request, reply } = inc;
        let response = match request {
            // The store's part is awaited in a task: the loop does not wait on the disk.
            Request::Status => {
                let report = self.status_report();
                let store = self.ask_store(Ask::Status);
                tokio::spawn(async move {
                    let _ = reply.send(json_reply(&report.with_store(store.await)));
                });
                return;
            }
            Request::Buffer => {
                self.answer_from_store(Ask::Buffer, reply);
                return;
            }
            Request::Clips => {
                self.answer_from_store(Ask::Clips, reply);
                return;
            }
            Request::Doctor => {
                // Its console probe may wait; the loop must not (segments, triggers).
                let doctor = doctor::prepare(self);
                tokio::spawn(async move {
                    let _ = reply.send(json_reply(&doctor.run().await));
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
                self.enroll(&server, token, reply);
                return;
            }
        };
        let _ = reply.send(response);
    }

    /// Enrolls with `server` (it must be the configured one) in a task that answers `reply`.
    fn enroll(&self, server: &str, token: String, reply: tokio::sync::oneshot::Sender<Response>) {
        let refusal = if self.uploader.is_enrolled() {
            Some(AdminError::new(
                ErrorKind::Rejected,
                "this device is already enrolled; remove the identity in the data directory to re-enroll",
            ))
        } else if server.trim_end_matches('/')
            != self.opts.config.server_url().trim_end_matches('/')
        {
            Some(AdminError::new(
                ErrorKind::BadRequest,
                format!(
                    "the agent config names server {}; set server_url to {server} in the config (then reload) or enroll with that server",
                    self.opts.config.server_url()
                ),
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let _ = reply.send(Response::err(refusal));
            return;
        }
        let up = self.uploader.clone();
        let tx = self.completed_tx.clone();
        tokio::spawn(async move {
            let response = match up.enroll(&token, &hostname()).await {
                Ok(id) => {
                    let _ = tx.send(Completed::Enrolled);
                    Response::ok(
                        serde_json::json!({ "device": id.device_id, "tenant": id.tenant_id }),
                    )
                }
                Err(e) => Response::err(AdminError::new(
                    if e.is_retryable() { ErrorKind::Unavailable } else { ErrorKind::Rejected },
                    format!("enrollment failed: {e}"),
                )),
            };
            let _ = tx.send(Completed::Reply { reply, response });
        });
    }

    pub(super) async fn apply_policy(&mut self, envelope: &str) -> Response {
        let envelope = match SignedEnvelope::from_json(envelope.as_bytes()) {
            Ok(e) => e,
            Err(e) => return bad_request(format!("not a signed policy envelope: {e}")),
        };
        let result = self.uploader.accept_policy_envelope(&envelope);
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
    /// uploader waits for the loop, so it runs in a task and answers through [`Completed::Reply`]
    /// once the clip is recorded.
    pub(super) fn apply_trigger(
        &mut self,
        envelope: &str,
        reply: tokio::sync::oneshot::Sender<Response>,
    ) {
        let envelope = match SignedEnvelope::from_json(envelope.as_bytes()) {
            Ok(e) => e,
            Err(e) => {
                let _ = reply.send(bad_request(format!("not a signed trigger envelope: {e}")));
                return;
            }
        };
        let up = self.uploader.clone();
        let tx = self.completed_tx.clone();
        tokio::spawn(async move {
            let response = match up.accept_trigger_envelope(&envelope).await {
                Ok(TriggerAccepted { id, acknowledged: Ok(()) }) => {
                    Response::ok(serde_json::json!({ "accepted": id }))
                }
                // Recorded and marked seen; only the console's acknowledgement failed (it
                // resends until it gets one).
                Ok(TriggerAccepted { id, acknowledged: Err(e) }) => Response::ok(
                    serde_json::json!({ "accepted": id, "note": format!("console not told: {e}") }),
                ),
                // The verifier's classification: a trigger before any policy is "try later".
                Err(rearview_uploader::UploadError::Rejected { what, reason }) => {
                    let kind = if reason.is_retryable() {
                        ErrorKind::Unavailable
                    } else {
                        ErrorKind::Rejected
                    };
                    Response::err(AdminError::new(kind, format!("{what} refused: {reason}")))
                }
                // Not recorded (yet), or not enrolled: try later.
                Err(e) => Response::err(AdminError::new(ErrorKind::Unavailable, e.to_string())),
            };
            let _ = tx.send(Completed::Reply { reply, response });
        });
    }
}

impl Daemon {
    /// Answers `reply` with the store's report `ask`, from a task.
    fn answer_from_store<T: serde::Serialize + Send + 'static>(
        &self,
        ask: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Ask,
        reply: tokio::sync::oneshot::Sender<Response>,
    ) {
        let answer = self.ask_store(ask);
        tokio::spawn(async move {
            let response = match answer.await {
                Some(v) => json_reply(&v),
                None => Response::err(AdminError::new(
                    ErrorKind::Unavailable,
                    "the evidence store did not answer in time (busy on a slow disk, or stopping); try again",
                )),
            };
            let _ = reply.send(response);
        });
    }
}

fn json_reply<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(AdminError::new(ErrorKind::Internal, e.to_string())),
    }
}

fn bad_request(message: String) -> Response {
    Response::err(AdminError::new(ErrorKind::BadRequest, message))
}
