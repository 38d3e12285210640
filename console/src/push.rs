//! The push hub: one channel per connected device, fed by whoever changes policy or issues a
//! trigger, drained by that device's event stream (`GET /api/v1/device/stream`).
//!
//! Delivery is at-least-once: the stream subscribes *before* it reads the current policy and
//! the unacknowledged triggers from the database, so nothing issued in between is missed; a
//! stream sends each trigger id once, and the device drops repeats by trigger id too.
//!
//! # Replicas
//!
//! The database is the source of truth: a trigger is a row before anyone is told of it, and a
//! stream that (re)connects reads every pending one. Several console processes on one
//! PostgreSQL database wake each other's streams ([`crate::replicas`]):
//!
//! ```text
//! NOTIFY rearview_push 'trigger:<device_id>'   in the transaction that stores a trigger
//! NOTIFY rearview_push 'policy'                in the transaction that raises the version
//! ```
//!
//! delivered on commit to every process listening; each wakes its own stream of that device
//! ([`Push::Wake`]: read the pending triggers, send those not sent yet) or every stream
//! (policy). A notification is only a wake-up: one lost (a listener reconnecting) costs speed,
//! not a trigger, because the listener then wakes every stream, and a poll of the database
//! every few seconds wakes the streams of devices with triggers issued since (see
//! [`crate::replicas`]). On SQLite there is one process, and the hub alone does this.

use std::collections::HashMap;
use std::sync::Mutex;

use rearview_protocol::{PolicyMessage, TriggerMessage};
use tokio::sync::broadcast;

/// Something a device must learn now.
#[derive(Debug, Clone)]
pub enum Push {
    Policy(PolicyMessage),
    Trigger(TriggerMessage),
    /// Policy changed for everyone; the stream signs a fresh bundle for its own device.
    PolicyChanged,
    /// The database may hold triggers for this device that its stream has not sent (another
    /// replica issued them): the stream reads the pending ones and sends the new ones.
    Wake,
}

/// The PostgreSQL channel replicas wake each other on.
pub const CHANNEL: &str = "rearview_push";

/// The notification payload for "policy changed".
pub const POLICY_PAYLOAD: &str = "policy";

/// The notification payload for "a trigger for `device_id` was stored".
pub fn trigger_payload(device_id: &str) -> String {
    format!("trigger:{device_id}")
}

/// How many pushes to one device may wait for its stream before it is told it lagged (it then
/// reloads everything from the database, so lagging loses nothing). Small: every connected
/// device holds this many slots, and a stream drains its pushes as they come.
const DEVICE_QUEUE: usize = 8;

/// The same for the pushes to every device (one channel for all).
const ALL_QUEUE: usize = 64;

#[derive(Default)]
pub struct Hub {
    devices: Mutex<HashMap<String, broadcast::Sender<Push>>>,
    all: Mutex<Option<broadcast::Sender<Push>>>,
}

impl Hub {
    /// Listens for pushes to `device_id` (and to every device).
    pub fn subscribe(
        &self,
        device_id: &str,
    ) -> (broadcast::Receiver<Push>, broadcast::Receiver<Push>) {
        let own = {
            let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(device_id.to_owned())
                .or_insert_with(|| broadcast::channel(DEVICE_QUEUE).0)
                .subscribe()
        };
        let all = {
            let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
            all.get_or_insert_with(|| broadcast::channel(ALL_QUEUE).0).subscribe()
        };
        (own, all)
    }

    /// Sends to one device if it is connected; otherwise it gets it from the database on its
    /// next connect.
    pub fn send(&self, device_id: &str, push: Push) {
        let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(device_id) {
            if tx.send(push).is_err() {
                // Nobody listens any more: forget the channel so the map does not grow.
                map.remove(device_id);
            }
        }
    }

    /// Tells every connected device that policy changed.
    pub fn policy_changed(&self) {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = all.as_ref() {
            let _ = tx.send(Push::PolicyChanged);
        }
    }

    /// Wakes every connected stream (after a replica may have missed notifications).
    pub fn wake_all(&self) {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        for tx in map.values() {
            let _ = tx.send(Push::Wake);
        }
    }

    /// The devices holding a stream here now.
    pub fn connected_ids(&self) -> Vec<String> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, t)| t.receiver_count() > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether `device_id` holds a stream now.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .is_some_and(|t| t.receiver_count() > 0)
    }

    /// Number of devices with a channel (connected, or disconnected since the last send).
    pub fn connected(&self) -> usize {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.receiver_count() > 0)
            .count()
    }
}
