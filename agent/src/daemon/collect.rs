//! Clips being collected: a trigger's clip is recorded (durably, before the trigger counts as
//! seen), pins what the ring holds for its window, takes segments as they close, and is handed
//! to the spool — open while its window runs, closed with its missing ranges once it ended.

use super::*;

impl Daemon {
    /// Records the clip of a verified trigger durably (its record in `clips.json`), or finds
    /// the one already recorded for the same trigger id: a trigger the uploader could not mark
    /// seen before a crash comes again, and must not open a second clip. `Err` says why nothing
    /// is recorded; the trigger then stays unseen and the console sends it again.
    pub(super) fn trigger(&mut self, t: &VerifiedTrigger) -> Result<(), String> {
        let p = t.payload();
        let trigger_id = p.id.as_str();
        if let Some(clip) =
            self.clips.clips.iter().find(|c| c.trigger_id.as_deref() == Some(trigger_id))
        {
            tracing::info!(
                clip = clip.id,
                trigger = trigger_id,
                "trigger seen again: its clip is already recorded"
            );
            // Saved again: the first time may have failed, and "recorded" must mean durable.
            return self.clips.save().map_err(|e| format!("clip state not saved: {e}"));
        }
        rearview_uploader::fault::point("trigger:before-intent");
        let (from, to) = p.window();
        let reason = format!("{}: {}", p.reason.indicator.describe(), p.reason.object);
        self.open_clip(
            Some(trigger_id.to_string()),
            p.user.as_str().to_string(),
            reason,
            from.unix_timestamp_nanos() as i64 / 1000,
            to.unix_timestamp_nanos() as i64 / 1000,
        )
        .map(|_| ())
    }

    /// Opens a clip: pins what the ring already holds for the window; the rest is added as
    /// segments close, until the window has ended. Returns the clip id once its record is
    /// saved, or why it is not (then the clip may still be kept in memory and saved later).
    pub(super) fn open_clip(
        &mut self,
        trigger_id: Option<String>,
        user: String,
        reason: String,
        from: i64,
        to: i64,
    ) -> Result<String, String> {
        let id = match clips::random_id() {
            Ok(id) => id,
            Err(e) => {
                let why = format!("clip not opened (no randomness): {e}");
                self.error(why.clone());
                return Err(why);
            }
        };
        // Segments carry the principal their session's approval named; the clip takes those
        // that name the trigger's user by the one rule (`clips::same_principal`), never a
        // namesake's whose local part happens to match.
        let held: Vec<SegmentId> = self
            .ring
            .entries()
            .filter(|e| e.overlaps(from, to) && clips::same_principal(&e.user, &user))
            .map(|e| e.id)
            .collect();
        // The record first, then the pins: a crash in between leaves a known clip whose pins
        // the restart adopts (`reconcile_pins`), never pins of a clip nobody remembers.
        self.clips.clips.push(Clip {
            id: id.clone(),
            trigger_id: trigger_id.clone(),
            user,
            reason,
            mode: CaptureMode::SpecificActivities,
            from_utc_micros: from,
            to_utc_micros: to,
            segments: Vec::new(),
            spooled: Vec::new(),
            in_spool: false,
            state: "collecting".into(),
            missing: Vec::new(),
            error: None,
        });
        let intent = self.clips.save().map_err(|e| format!("clip state not saved: {e}"));
        if let Err(why) = &intent {
            self.error(format!("clip {id}: {why}"));
        }
        let mut segments = Vec::new();
        for sid in held {
            if self.ring.pin(sid, &id).is_ok() {
                segments.push(sid.to_string());
            }
        }
        tracing::info!(clip = id, trigger = ?trigger_id, segments = segments.len(), "clip opened");
        if let Some(i) = self.clips.clips.iter().position(|c| c.id == id) {
            self.clips.clips[i].segments = segments;
            self.spool_clip(i, false, None);
        }
        self.save_clips();
        intent.map(|()| id)
    }

    /// Closes clips whose window has ended (and whose last segment had time to close), and
    /// retries hand-overs that failed earlier (or were cut short by a restart).
    pub(super) fn finish_clips(&mut self) {
        let segment_secs = self.policy_payload().map(|p| p.capture.segment_secs).unwrap_or(10);
        let grace = (i64::from(segment_secs) + 3) * 1_000_000;
        let now = now_micros();
        let mut changed = false;
        for i in 0..self.clips.clips.len() {
            let clip = &self.clips.clips[i];
            if !clip.collecting() {
                continue;
            }
            if now >= clip.to_utc_micros + grace {
                changed |= self.spool_clip(i, true, None);
            } else if !clip.in_spool || !clip.unspooled().is_empty() {
                changed |= self.spool_clip(i, false, None);
            }
        }
        if changed {
            self.save_clips();
        }
    }

    /// Hands collecting clip `i` to the spool: the segments it has not handed over yet, as an
    /// open clip, or with `close` as the finished clip with the parts of its window nothing
    /// covers (then its pins are released). A failure that may pass (console, disk) keeps the
    /// pins and is retried on the next tick; only a clip larger than the whole offline cache,
    /// or one the spool no longer takes (dropped from a full cache, refused by the console),
    /// fails. `just_sealed` is a segment whose sealed bytes are still in memory (it need not be
    /// read back from the ring). Returns whether the record changed.
    pub(super) fn spool_clip(
        &mut self,
        i: usize,
        close: bool,
        just_sealed: Option<(SegmentId, &[u8])>,
    ) -> bool {
        let clip = &self.clips.clips[i];
        let fresh = clip.unspooled();
        if !close && clip.in_spool && fresh.is_empty() {
            return false;
        }
        let (segments, handed) = self.read_for_spool(fresh, just_sealed);
        let clip = &self.clips.clips[i];
        let missing = if close { self.uncovered(clip) } else { Vec::new() };
        let new = NewClip {
            clip_id: clip.id.clone(),
            trigger_id: clip.trigger_id.clone(),
            mode: clip.mode,
            user: clip.user.clone(),
            start_ms: clip.from_utc_micros / 1000,
            end_ms: clip.to_utc_micros / 1000,
            missing: missing
                .iter()
                .map(|m| MissingRange {
                    start_ms: m.from_utc_micros / 1000,
                    end_ms: m.to_utc_micros / 1000,
                    reason: m.reason.clone(),
                })
                .collect(),
            open: !close,
        };
        let result = self.uploader.enqueue_clip(new, segments);
        self.settle_handover(i, close, result, handed, missing);
        true
    }

    /// The sealed bytes of segments `ids` for the spool (`just_sealed` from memory, the rest
    /// read back from the ring), and the ids of those that could be read.
    fn read_for_spool(
        &self,
        ids: Vec<String>,
        just_sealed: Option<(SegmentId, &[u8])>,
    ) -> (Vec<NewSegment>, Vec<String>) {
        let mut segments = Vec::new();
        let mut handed = Vec::new();
        for sid in ids {
            let Ok(id) = sid.parse::<SegmentId>() else { continue };
            let Some(entry) = self.ring.get(id).cloned() else { continue };
            let bytes = match just_sealed {
                Some((sealed_id, bytes)) if sealed_id == id => Ok(bytes.to_vec()),
                _ => self.ring.read(id),
            };
            match bytes {
                Ok(bytes) => {
                    segments.push(NewSegment {
                        start_ms: entry.start.utc_micros / 1000,
                        end_ms: entry.end.utc_micros / 1000,
                        bytes: SegmentBytes::Bytes(bytes),
                    });
                    handed.push(sid);
                }
                Err(e) => tracing::warn!(segment = sid, error = %e, "pinned segment unreadable"),
            }
        }
        (segments, handed)
    }

    /// The parts of `clip`'s window none of its segments covers (gaps longer than two frames).
    fn uncovered(&self, clip: &Clip) -> Vec<clips::Missing> {
        let spans: Vec<(i64, i64)> = clip
            .segments
            .iter()
            .filter_map(|sid| sid.parse::<SegmentId>().ok())
            .filter_map(|id| self.ring.get(id))
            .map(|e| (e.start.utc_micros, e.end.utc_micros))
            .collect();
        let frame_gap = 1_000_000_000 / i64::from(self.throttle_base().max(1)) * 2 + 1_000_000;
        clips::missing_ranges(clip.from_utc_micros, clip.to_utc_micros, &spans, frame_gap)
    }

    /// Records what the spool made of clip `i`'s hand-over: handed segments, a close (pins
    /// released), a retry on the next tick, or a failure.
    fn settle_handover(
        &mut self,
        i: usize,
        close: bool,
        result: Result<rearview_uploader::spool::Enqueued, rearview_uploader::UploadError>,
        handed: Vec<String>,
        missing: Vec<clips::Missing>,
    ) {
        let clip = &mut self.clips.clips[i];
        let failure = match result {
            Ok(done) if done.state == "pending" || done.state == "sent" => {
                clip.in_spool = true;
                clip.spooled.extend(handed);
                clip.error = None;
                if close {
                    clip.missing = missing;
                    clip.state = "pending".into();
                    tracing::info!(
                        clip = clip.id,
                        segments = clip.segments.len(),
                        missing = clip.missing.len(),
                        "clip window ended: closed for upload"
                    );
                    let _ = self.ring.unpin_all(&clip.id);
                }
                None
            }
            Ok(done) if done.state == "lost" => {
                Some("dropped from the full offline cache before its window ended".to_string())
            }
            Ok(done) => Some(format!("the spool holds it as {}", done.state)),
            Err(e @ rearview_uploader::UploadError::TooLarge(_)) => Some(e.to_string()),
            Err(e) => {
                tracing::warn!(clip = clip.id, error = %e, "clip not handed to the spool; will retry");
                clip.error = Some(e.to_string());
                None
            }
        };
        if let Some(reason) = failure {
            let clip = &mut self.clips.clips[i];
            clip.state = "failed".into();
            clip.error = Some(reason.clone());
            let _ = self.ring.unpin_all(&clip.id);
            let id = clip.id.clone();
            self.error(format!("clip {id} failed: {reason}"));
        }
    }

    pub(super) fn save_clips(&mut self) {
        if let Err(e) = self.clips.save() {
            self.error(format!("clip state not saved: {e}"));
        }
    }
}
