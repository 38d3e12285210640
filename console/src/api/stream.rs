//! The device push stream (server-sent events) and the one-shot policy fetch.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use rearview_protocol::{PolicyMessage, TriggerMessage};
use tokio::sync::broadcast;

use crate::auth::Device;
use crate::error::ApiError;
use crate::policy;
use crate::push::Push;
use crate::state::AppState;

/// `GET /api/v1/device/policy`: the bundle, the same for every device (the extractor only
/// authenticates the caller as one).
pub async fn policy(
    State(state): State<Arc<AppState>>,
    _device: Device,
) -> Result<Json<PolicyMessage>, ApiError> {
    policy::bundle_for(&state).await.map(Json)
}

fn policy_event(p: &PolicyMessage) -> Option<Event> {
    Event::default().event("policy").json_data(p).ok()
}

fn trigger_event(t: &TriggerMessage) -> Option<Event> {
    Event::default().event("trigger").id(t.trigger_id.clone()).json_data(t).ok()
}

/// One device's push stream: what it listens to and what it has sent. Its events are made as
/// the connection asks for them (no task or channel of its own: a held stream is this struct,
/// its two receivers and hyper's connection, which is what 10,000 of them cost).
struct DeviceStream {
    state: Arc<AppState>,
    id: String,
    own: broadcast::Receiver<Push>,
    all: broadcast::Receiver<Push>,
    /// The trigger ids this stream has sent, so a wake-up re-reading the pending ones sends
    /// each once.
    sent: HashSet<String>,
    /// Events made and not yet taken by the connection.
    ready: VecDeque<Event>,
    /// Whether the policy and the pending triggers were read (on connect).
    started: bool,
    /// When to read them again, after a read that failed (the database was down, say): no
    /// wake-up may come for what was missed.
    retry: Option<tokio::time::Instant>,
}

/// How long a stream whose read of the database failed waits before it reads again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

impl DeviceStream {
    /// Queues the current policy (when `with_policy`) and every unacknowledged trigger this
    /// stream has not sent yet; used on connect, after lag, and when woken.
    async fn pending(&mut self, with_policy: bool) {
        if with_policy {
            self.policy().await;
        }
        match policy::pending_triggers(&self.state, &self.id).await {
            Ok(ts) => {
                for t in ts {
                    if self.sent.insert(t.trigger_id.clone()) {
                        self.ready.extend(trigger_event(&t));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(device = ?self.id, error = ?e.message, "cannot list triggers for stream");
                self.retry_soon();
            }
        }
    }

    fn retry_soon(&mut self) {
        self.retry.get_or_insert_with(|| tokio::time::Instant::now() + RETRY);
    }

    async fn policy(&mut self) {
        match policy::bundle_for(&self.state).await {
            Ok(p) => self.ready.extend(policy_event(&p)),
            Err(e) => {
                tracing::warn!(device = ?self.id, error = ?e.message, "cannot build policy for stream");
                self.retry_soon();
            }
        }
    }

    /// The next event, waiting for a push when none is ready; None when the hub is gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if !self.started {
                // Subscribed before this read, so nothing issued in between is missed.
                self.started = true;
                self.pending(true).await;
                continue;
            }
            let retry = self.retry;
            let push = tokio::select! {
                p = self.own.recv() => p,
                p = self.all.recv() => p,
                () = sleep_until(retry) => {
                    self.retry = None;
                    self.pending(true).await;
                    continue;
                }
            };
            match push {
                Ok(Push::Policy(p)) => self.ready.extend(policy_event(&p)),
                Ok(Push::Trigger(t)) => {
                    if self.sent.insert(t.trigger_id.clone()) {
                        self.ready.extend(trigger_event(&t));
                    }
                }
                Ok(Push::Wake) => self.pending(false).await,
                Ok(Push::PolicyChanged) => self.policy().await,
                // Pushes were dropped: everything is read again from the database.
                Err(broadcast::error::RecvError::Lagged(_)) => self.pending(true).await,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Until `at`, or for ever when there is none.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `GET /api/v1/device/stream` (a device, by its token): the policy, then every pending trigger,
/// then whatever is pushed, as server-sent events with a keep-alive ping. The stream ends when
/// the connection does.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    device: Device,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ping = state.stream_ping;
    // Subscribe before reading the database, so nothing issued in between is missed.
    let (own, all) = state.hub.subscribe(&device.id);
    let stream = DeviceStream {
        state,
        id: device.id,
        own,
        all,
        sent: HashSet::new(),
        ready: VecDeque::new(),
        started: false,
        retry: None,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let event = s.next().await?;
        Some((Ok(event), s))
    });
    Sse::new(events).keep_alive(
        KeepAlive::new().interval(ping).event(Event::default().event("ping").data("{}")),
    )
}
