//! Segment intake: a worker's segment is parsed, checked against what the daemon assigned that
//! worker, sealed to the tenant key and stored in the ring; then clips that want it pin it and
//! all-activities users queue it.

use super::*;

impl Daemon {
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
        let mut pinned = Vec::new();
        for (i, clip) in self.clips.clips.iter_mut().enumerate() {
            if !clip.wants(&principal, start, end) {
                continue;
            }
            match self.ring.pin(header.id, &clip.id) {
                Ok(()) => {
                    clip.segments.push(header.id.to_string());
                    pinned.push(i);
                }
                Err(e) => tracing::warn!(clip = clip.id, error = %e, "segment not pinned"),
            }
        }
        if !pinned.is_empty() {
            // Handed over from memory, not read back from the ring. A crash before the save
            // leaves a pin the restart adopts and a hand-over it repeats (the spool names a
            // segment once).
            for i in pinned {
                self.spool_clip(i, false, Some((header.id, &sealed)));
            }
            self.save_clips();
        }
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
