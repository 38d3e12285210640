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
//! poller    every POLL, the unacknowledged triggers issued in the last WINDOW: for each one
//!           this poller has not seen before, the stream of its device, if here, is woken (it
//!           sends only ids it has not sent); a policy version other than the last seen wakes
//!           every stream. This is what makes a lost notification cost at most POLL. Each
//!           trigger wakes a stream once this way (a device that does not acknowledge is not
//!           woken every POLL for ever); a stream that could not read the database when woken
//!           tries again by itself (`api::stream`).
//! ```
//!
//! Background work that must run once across replicas (approval expiry) is guarded by a lease
//! in the database ([`crate::store::lease`]); see `server::tick`.
//!
//! On SQLite there is one process; none of this runs, and the hub alone wakes streams.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use crate::push::{CHANNEL, POLICY_PAYLOAD};
use crate::state::AppState;
use crate::store::now_ms;

/// How often the poller reads the database.
pub const POLL: Duration = Duration::from_secs(2);

/// How far back a poll looks for unacknowledged triggers (longer than a trigger waits for its
/// device's stream in practice; a device that reconnects reads every pending one anyway).
const WINDOW_MS: i64 = 10 * 60_000;

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
    let mut version = None;
    // The unacknowledged triggers of the window this poller has woken a stream for, and when
    // each was issued (to forget it once it leaves the window).
    let mut woken: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let since = now_ms() - WINDOW_MS;
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
        let mut devices = std::collections::BTreeSet::new();
        for (id, device, issued_ms) in issued {
            if woken.insert(id, issued_ms).is_none() {
                devices.insert(device);
            }
        }
        woken.retain(|_, issued_ms| *issued_ms > since);
        for device in devices {
            state.hub.send(&device, crate::push::Push::Wake);
        }
        if version.is_some_and(|v| v != now_version) {
            state.hub.policy_changed();
        }
        version = Some(now_version);
    }
}
