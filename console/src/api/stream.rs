//! The device push stream (server-sent events) and the one-shot policy fetch.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use rearview_protocol::{PolicyMessage, TriggerMessage};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

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

/// Sends the current policy (when `with_policy`) and every unacknowledged trigger this stream
/// has not sent yet (`sent`); used on connect, after lag, and when woken.
async fn send_pending(
    state: &Arc<AppState>,
    device_id: &str,
    tx: &mpsc::Sender<Result<Event, Infallible>>,
    sent: &mut HashSet<String>,
    with_policy: bool,
) -> Result<(), ()> {
    let mut events = Vec::new();
    if with_policy {
        match policy::bundle_for(state).await {
            Ok(p) => events.extend(policy_event(&p)),
            Err(e) => {
                tracing::warn!(device = ?device_id, error = ?e.message, "cannot build policy for stream")
            }
        }
    }
    match policy::pending_triggers(state, device_id).await {
        Ok(ts) => events.extend(
            ts.iter().filter(|t| sent.insert(t.trigger_id.clone())).filter_map(trigger_event),
        ),
        Err(e) => {
            tracing::warn!(device = ?device_id, error = ?e.message, "cannot list triggers for stream")
        }
    }
    for e in events {
        tx.send(Ok(e)).await.map_err(|_| ())?;
    }
    Ok(())
}

pub async fn stream(
    State(state): State<Arc<AppState>>,
    device: Device,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ping = state.stream_ping;
    let (tx, rx) = mpsc::channel(32);
    // Subscribe before reading the database, so nothing issued in between is missed.
    let (mut own, mut all) = state.hub.subscribe(&device.id);
    tokio::spawn(async move {
        let id = device.id;
        // The trigger ids this stream has sent, so a wake-up re-reading the pending ones sends
        // each once.
        let mut sent = HashSet::new();
        if send_pending(&state, &id, &tx, &mut sent, true).await.is_err() {
            return;
        }
        loop {
            let push = tokio::select! {
                _ = tx.closed() => return,
                p = own.recv() => p,
                p = all.recv() => p,
            };
            let event = match push {
                Ok(Push::Policy(p)) => policy_event(&p),
                Ok(Push::Trigger(t)) => {
                    sent.insert(t.trigger_id.clone()).then(|| trigger_event(&t)).flatten()
                }
                Ok(Push::Wake) => {
                    if send_pending(&state, &id, &tx, &mut sent, false).await.is_err() {
                        return;
                    }
                    None
                }
                Ok(Push::PolicyChanged) => match policy::bundle_for(&state).await {
                    Ok(p) => policy_event(&p),
                    Err(e) => {
                        tracing::warn!(device = ?id, error = ?e.message, "cannot build policy for stream");
                        None
                    }
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if send_pending(&state, &id, &tx, &mut sent, true).await.is_err() {
                        return;
                    }
                    None
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Some(event) = event {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new().interval(ping).event(Event::default().event("ping").data("{}")),
    )
}
