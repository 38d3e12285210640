//! Segment intake: a worker's segment is parsed, checked against what the daemon assigned that
//! worker, sealed to the tenant key and stored in the ring; then clips that want it pin it and
//! all-activities users queue it.

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

    /// Checks, seals and stores one segment from a worker, then gives it to clips and uploads.
    pub(super) fn segment(&mut self, key: &str, plaintext: Zeroizing<Vec<u8>>) {
        let Some(t) = self.sessions.get(key) else { return };
        let (principal, mode) = match &t.gate {
            Gate::Capture { principal, mode } | Gate::Idle { principal, mode } => {
                (principal.clone(), *mode)
            }
            // Revoked while the segment was on its way: it is not kept.
            _ => return,
        };
        let session_id = t.session.id.clone();
        let Some(SealingTarget { tenant, device, key: key_pub }) = self.sealing_target() else {
            return;
        };
        let parsed = match Segment::parse(&plaintext) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("session {key}: worker sent an invalid segment ({e}); dropped"));
                return;
            }
        };
        let header = parsed.header().clone();
        drop(parsed);
        let c = &header.context;
        if c.tenant != tenant
            || c.device != device
            || c.user != principal
            || c.session != session_id
        {
            self.error(format!(
                "session {key}: worker sent a segment for another tenant, device, user or session; dropped"
            ));
            return;
        }
        let binding = SealBinding { tenant: &tenant, device: &device, segment_id: header.id };
        let sealed = match seal(&key_pub, &binding, &plaintext) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("sealing failed, segment dropped: {e}"));
                return;
            }
        };
        drop(plaintext);
        if let Err(e) = self.ring.insert(&header, &sealed) {
            self.error(format!("ring: segment not stored: {e}"));
            return;
        }
        let (start, end) = (header.start.utc_micros, header.end.utc_micros);
        let mut taken = Vec::new();
        for i in 0..self.clips.collecting().len() {
            if !clips::wants(&self.clips.collecting()[i], &principal, start, end) {
                continue;
            }
            // Listed in the clip's record, then pinned. A crash after the ring insert but
            // before the listing leaves a segment the clip takes again at the restart.
            match self.clips.take(self.uploader.spool(), &mut self.ring, i, header.id) {
                Ok(()) => taken.push(i),
                Err(e) => {
                    let clip = self.clips.collecting()[i].id.clone();
                    self.error(format!("segment {} not taken for clip {clip}: {e}", header.id));
                }
            }
        }
        // Handed over from memory, not read back from the ring.
        for i in taken {
            self.spool_clip(i, false, Some((header.id, &sealed)));
        }
        self.clips.sweep();
        if mode == CaptureMode::AllActivities {
            self.queue_continuous(&principal, &header.id, start, end, sealed);
        }
    }

    pub(super) fn queue_continuous(
        &mut self,
        user: &str,
        id: &SegmentId,
        start: i64,
        end: i64,
        sealed: Vec<u8>,
    ) {
        let clip = NewClip {
            clip_id: format!("seg-{id}"),
            trigger_id: None,
            mode: CaptureMode::AllActivities,
            user: user.to_string(),
            start_ms: start / 1000,
            end_ms: end / 1000,
            missing: Vec::new(),
            open: false,
        };
        let segment = NewSegment {
            start_ms: start / 1000,
            end_ms: end / 1000,
            bytes: SegmentBytes::Bytes(sealed),
        };
        if let Err(e) = self.uploader.enqueue_clip(clip, vec![segment]) {
            self.error(format!("all-activities segment not queued: {e}"));
        }
    }
}
