//! Segment intake on the loop: a worker's segment is let through only while its session may
//! still be captured, with whose it must say it is; the store's thread checks, seals and keeps
//! it ([`store`](super::store), "intake").

use super::store::{Expected, Intake, Job};
use super::*;

/// Where this device's segments are sealed to and whose they say they are.
pub(super) struct SealingTarget {
    pub(super) tenant: String,
    pub(super) device: String,
    pub(super) key: TenantPublicKey,
}

impl Daemon {
    /// `None` until enrolled (then nothing is captured).
    pub(super) fn sealing_target(&self) -> Option<SealingTarget> {
        let id = self.uploader.identity()?;
        let key = id.sealing_public_key.parse::<TenantPublicKey>().ok()?;
        Some(SealingTarget { tenant: id.tenant_id.clone(), device: id.device_id.clone(), key })
    }

    /// Passes one segment from the worker of session `key` to the store, unless the session
    /// may no longer be captured (revoked while the segment was on its way: it is not kept).
    pub(super) async fn segment(&mut self, key: &str, plaintext: Zeroizing<Vec<u8>>) {
        let Some(t) = self.sessions.get(key) else { return };
        let (principal, mode) = match &t.gate {
            Gate::Capture { principal, mode } | Gate::Idle { principal, mode } => {
                (principal.clone(), *mode)
            }
            _ => return,
        };
        let session = t.session.id.clone();
        let Some(SealingTarget { tenant, device, key: seal_to }) = self.sealing_target() else {
            return;
        };
        let expected = Expected { tenant, device, principal, session };
        let stop = t.stopped;
        let intake =
            Intake { session_key: key.to_string(), expected, mode, seal_to, plaintext, stop };
        self.hand_to_store(Job::Segment(intake)).await;
    }
}
