//! Segment intake on the store's thread: a worker's segment is parsed in full, checked against
//! what the daemon assigned that worker ([`check_segment`], pure), sealed to the tenant key and
//! stored in the ring; then clips that want it take it and all-activities users queue it.

use rearview_capture::seal::{seal, SealBinding};
use rearview_capture::segment::{Segment, SegmentHeader, SegmentId};
use rearview_config::CaptureMode;
use rearview_uploader::{NewClip, NewSegment, SegmentBytes};

use super::super::clips;
use super::{Intake, Store};

/// Whose a segment must say it is: the tenant and device this agent enrolled as, and the
/// principal and session the daemon started the worker for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in super::super) struct Expected {
    pub tenant: String,
    pub device: String,
    pub principal: String,
    pub session: String,
}

/// Whether a worker's segment carries the tenant, device, principal and session the daemon
/// assigned it; `Err` names the first field that differs (its values are not shown: a
/// misbehaving worker's output is not echoed into logs).
pub(in super::super) fn check_segment(
    header: &SegmentHeader,
    expected: &Expected,
) -> Result<(), &'static str> {
    let c = &header.context;
    if c.tenant != expected.tenant {
        Err("tenant")
    } else if c.device != expected.device {
        Err("device")
    } else if c.user != expected.principal {
        Err("user")
    } else if c.session != expected.session {
        Err("session")
    } else {
        Ok(())
    }
}

impl Store {
    /// Checks, seals and stores one segment from a worker, then gives it to clips and uploads.
    pub(super) fn segment(&mut self, intake: Intake) {
        let Intake { session_key: key, expected, mode, seal_to, plaintext, stop } = intake;
        let header = match Segment::parse(&plaintext) {
            Ok(s) => s.header().clone(),
            Err(e) => {
                self.error(format!("session {key}: worker sent an invalid segment ({e}); dropped"));
                return;
            }
        };
        if let Err(field) = check_segment(&header, &expected) {
            self.error(format!(
                "session {key}: worker sent a segment for another {field} than its own; dropped"
            ));
            return;
        }
        let binding = SealBinding {
            tenant: &expected.tenant,
            device: &expected.device,
            segment_id: header.id,
        };
        let sealed = match seal(&seal_to, &binding, &plaintext) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("sealing failed, segment dropped: {e}"));
                return;
            }
        };
        drop(plaintext);
        // Signed into its chain before it is kept: nothing unsigned enters the ring. A ring
        // write that fails after this leaves an entry whose segment clips note as absent.
        let sha256 = rearview_evidence::sha256(&sealed);
        let chained = match self.chain_segment(&header, &expected, &sha256, stop, self.frame_gap())
        {
            Ok(entries) => entries,
            Err(e) => {
                self.error(format!("session {key}: segment {} not kept: {e}", header.id));
                return;
            }
        };
        if let Err(e) = self.ring.insert(&header, &sealed) {
            self.error(format!("ring: segment not stored: {e}"));
            return;
        }
        let (start, end) = (header.start.utc_micros, header.end.utc_micros);
        let taken = self.take_for_clips(&expected.principal, header.id, start, end);
        // Handed over from memory, not read back from the ring.
        for i in taken {
            self.spool_clip(i, false, Some((header.id, &sealed)));
        }
        self.clips.sweep();
        if mode == CaptureMode::AllActivities {
            self.queue_continuous(&expected.principal, &header.id, start, end, sealed, chained);
        }
    }

    /// Lists segment `id` of `principal` in every collecting clip that wants it, then pins it;
    /// the indices of the clips that took it. A clip whose listing failed takes it on a later
    /// tick ([`Store::finish_clips`]).
    fn take_for_clips(
        &mut self,
        principal: &str,
        id: SegmentId,
        start: i64,
        end: i64,
    ) -> Vec<usize> {
        let mut taken = Vec::new();
        for i in 0..self.clips.collecting().len() {
            if !clips::wants(&self.clips.collecting()[i], principal, start, end) {
                continue;
            }
            // Listed in the clip's record, then pinned. A crash after the ring insert but
            // before the listing leaves a segment the clip takes again at the restart.
            match self.clips.take(self.uploader.spool(), &mut self.ring, i, id) {
                Ok(()) => taken.push(i),
                Err(e) => {
                    let clip = self.clips.collecting()[i].id.clone();
                    self.retake.insert(clip.clone());
                    self.error(format!("segment {id} not taken for clip {clip}: {e}"));
                }
            }
        }
        taken
    }

    /// Queues an all-activities user's segment at once, as a one-segment clip carrying `chain`
    /// (its entry and the gap before it) (the uploader applies the daily limit).
    fn queue_continuous(
        &mut self,
        user: &str,
        id: &SegmentId,
        start: i64,
        end: i64,
        sealed: Vec<u8>,
        chain: Vec<rearview_protocol::ChainEntry>,
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
            chain,
            absent: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rearview_capture::segment::SegmentContext;
    use rearview_capture::{MonitorInfo, Timestamp};

    fn header(tenant: &str, device: &str, user: &str, session: &str) -> SegmentHeader {
        SegmentHeader {
            id: SegmentId::from_bytes([7; 16]),
            context: SegmentContext {
                tenant: tenant.into(),
                device: device.into(),
                user: user.into(),
                session: session.into(),
                monitor: MonitorInfo {
                    id: 0,
                    name: "screen".into(),
                    x: 0,
                    y: 0,
                    width: 64,
                    height: 64,
                    primary: true,
                },
            },
            start: Timestamp { utc_micros: 1, mono_micros: 1 },
            end: Timestamp { utc_micros: 2, mono_micros: 2 },
            frame_count: 1,
            event_count: 0,
        }
    }

    fn expected() -> Expected {
        Expected {
            tenant: "t".into(),
            device: "d".into(),
            principal: "alice@corp.example".into(),
            session: "3".into(),
        }
    }

    #[test]
    fn a_segment_must_carry_every_field_the_daemon_assigned() {
        let want = expected();
        assert_eq!(check_segment(&header("t", "d", "alice@corp.example", "3"), &want), Ok(()));
        assert_eq!(
            check_segment(&header("x", "d", "alice@corp.example", "3"), &want),
            Err("tenant")
        );
        assert_eq!(
            check_segment(&header("t", "x", "alice@corp.example", "3"), &want),
            Err("device")
        );
        assert_eq!(check_segment(&header("t", "d", "alice", "3"), &want), Err("user"));
        assert_eq!(
            check_segment(&header("t", "d", "alice@corp.example", "4"), &want),
            Err("session")
        );
    }
}
