//! Several console processes serving one tenant from one PostgreSQL database: how a trigger
//! issued on one reaches a device streaming from another, fast, and never lost.
//!
//! Each process (a *replica*) has a random id ([`replica_id`]) and, on PostgreSQL, runs:
//!
//! ```text
//! listener  a thread with its own connection: LISTEN rearview_push; each notification wakes
//!           this process's stream of the device it names, or every stream (policy); see
//!           crate::push for the payloads. On (re)connecting it wakes every stream and
//!           announces a policy change, so what was sent while it did not listen is read
//!           from the database. A dead database: it retries, backing off to 5 s.
//! poller    every POLL, the triggers issued since a little before the last poll that are not
//!           acknowledged: the stream of each one's device, if here, is woken for the ids it
//!           has not seen; a policy version above the last seen wakes every stream. This is
//!           what makes a lost notification cost at most POLL.
//! ```
//!
//! Background work that must run once across replicas (approval expiry) is guarded by a lease
//! in the database ([`crate::store::lease`]); see `server::tick`.
//!
//! On SQLite there is one process; none of this runs, and the hub alone wakes streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use crate::push::{CHANNEL, POLICY_PAYLOAD};
use crate::state::AppState;
use crate::store::now_ms;

/// How often the poller reads the database.
pub const POLL: Duration = Duration::from_secs(2);

/// How far before the last poll a poll looks: a trigger's `issued_ms` is taken before its
/// transaction commits, and the clocks of replicas differ a little.
const SLACK_MS: i64 = 30_000;

/// How long the listener waits for a notification before it looks at its stop flag.
const LISTEN_TICK: Duration = Duration::from_millis(500);

/// A new random id for this process, as leases name their holder.
pub fn replica_id() -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("{}-{}", std::process::id(), hex::encode(bytes))
}

/// The listener and poller of one process; stopped on drop.
pub struct Replicas {
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.poller.abort();
        // The listener notices within LISTEN_TICK; it is not joined here (drop may run on the
        // runtime), it ends on its own.
        drop(self.listener.take());
    }
}

/// Starts the listener and the poller when the store is on PostgreSQL; `None` on SQLite.
pub fn start(state: &Arc<AppState>) -> Option<Replicas> {
    let config = state.store.postgres_config()?;
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let (state, stop) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name("replica-listener".into())
            .spawn(move || listen(&state, &config, &stop))
            .map_err(|e| tracing::error!(error = %e, "cannot start the replica listener"))
            .ok()
    };
    let poller = tokio::spawn(poll(state.clone()));
    Some(Replicas { stop, listener, poller })
}

/// The listener thread (see the module docs).
fn listen(state: &AppState, config: &postgres::Config, stop: &AtomicBool) {
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config
            .connect(postgres::NoTls)
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|()| c))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::error::ConsoleError::from(e), "replica listener cannot listen; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Whatever was notified while nobody listened is in the database: every stream reads.
        state.hub.wake_all();
        state.hub.policy_changed();
        while !stop.load(Ordering::Relaxed) {
            let mut lost = false;
            let mut notes = client.notifications();
            let mut waiting = notes.timeout_iter(LISTEN_TICK);
            loop {
                match waiting.next() {
                    Ok(Some(n)) => deliver(state, n.payload()),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %crate::error::ConsoleError::from(e), "replica listener lost its connection");
                        lost = true;
                        break;
                    }
                }
            }
            drop(waiting);
            drop(notes);
            if lost || client.is_closed() {
                break;
            }
        }
    }
}

/// Acts on one notification payload (see [`crate::push`]); others are ignored.
fn deliver(state: &AppState, payload: &str) {
    if payload == POLICY_PAYLOAD {
        state.hub.policy_changed();
    } else if let Some(device) = payload.strip_prefix("trigger:") {
        state.hub.send(device, crate::push::Push::Wake);
    }
}

/// The poller task (see the module docs).
async fn poll(state: Arc<AppState>) {
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut since = now_ms() - SLACK_MS;
    let mut version = None;
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let started = now_ms();
        let read = state
            .store
            .read(move |tx| {
                Ok::<_, crate::error::ConsoleError>((
                    tx.triggers_issued_since(since)?,
                    tx.policy_version()?,
                ))
            })
            .await;
        let (issued, now_version) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "replica poll failed; trying again");
                continue;
            }
        };
        for (id, device, issued_ms) in issued {
            if seen.insert(id, issued_ms).is_none() {
                state.hub.send(&device, crate::push::Push::Wake);
            }
        }
        if version.is_some_and(|v| v != now_version) {
            state.hub.policy_changed();
        }
        version = Some(now_version);
        since = started - SLACK_MS;
        seen.retain(|_, issued_ms| *issued_ms > since);
    }
}
