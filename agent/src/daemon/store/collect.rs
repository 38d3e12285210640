//! Clips being collected: a trigger's clip is recorded (durably, before the trigger counts as
//! seen), pins what the ring holds for its window, takes segments as they close, and is handed
//! to the spool — open while its window runs, closed with its missing ranges once it ended.

use rearview_capture::segment::SegmentId;
use rearview_config::VerifiedTrigger;
use rearview_protocol::{ClipState, MissingRange, UnixMillis};
use rearview_uploader::spool::ClipChange;
use rearview_uploader::{NewClip, NewSegment, SegmentBytes};

use super::super::clips::{self, Clip, RecordState};
use super::super::{now_micros, ClipWindow};
use super::Store;

impl Store {
    /// Records the clip of a verified trigger durably (its record in the spool database), or
    /// finds the one already recorded for the same trigger id: a trigger the uploader could not
    /// mark seen before a crash comes again, and must not open a second clip. `Err` says why
    /// nothing is recorded; the trigger then stays unseen and the console sends it again.
    pub(super) fn trigger(&mut self, t: &VerifiedTrigger) -> Result<(), String> {
        let p = t.payload();
        let trigger_id = p.id.as_str();
        match self.uploader.spool().clip_record_for_trigger(trigger_id) {
            Ok(Some(clip)) => {
                tracing::info!(
                    clip = clip.id,
                    trigger = trigger_id,
                    "trigger seen again: its clip is already recorded"
                );
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(format!("clip records unreadable: {e}")),
        }
        rearview_uploader::fault::point("trigger:before-intent");
        let (from, to) = p.window();
        let reason = format!("{}: {}", p.reason.indicator.describe(), p.reason.object);
        let window = ClipWindow {
            from_utc_micros: (from.unix_timestamp_nanos() / 1000) as i64,
            to_utc_micros: (to.unix_timestamp_nanos() / 1000) as i64,
        };
        self.open_clip(Some(trigger_id.to_string()), p.user.as_str().to_string(), reason, window)
            .map(|_| ())
    }

    /// Opens a clip: stores its record with what the ring already holds for the window, then
    /// pins that; the rest is added as segments close, until the window has ended. Returns the
    /// clip id once its record is stored, or why it is not (then nothing is kept).
    pub(super) fn open_clip(
        &mut self,
        trigger_id: Option<String>,
        user: String,
        reason: String,
        window: ClipWindow,
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
        let mut clip = Clip::collecting(id.clone(), trigger_id.clone(), user, reason, window);
        clip.segments = clips::held_for(&self.ring, &clip).iter().map(|s| s.to_string()).collect();
        let segments = clip.segments.len();
        let i = match self.clips.open(self.uploader.spool(), &mut self.ring, clip) {
            Ok(i) => i,
            Err(e) => {
                let why = format!("clip not recorded: {e}");
                self.error(format!("clip {id}: {why}"));
                return Err(why);
            }
        };
        tracing::info!(clip = id, trigger = ?trigger_id, segments, "clip opened");
        self.spool_clip(i, false, None);
        self.clips.sweep();
        Ok(id)
    }

    /// Closes clips whose window has ended (and whose last segment had time to close), and
    /// retries hand-overs that failed earlier (or were cut short by a restart).
    pub(super) fn finish_clips(&mut self) {
        self.retake_held();
        let grace = (i64::from(self.pace.segment_secs) + 3) * 1_000_000;
        let now = now_micros();
        for i in 0..self.clips.collecting().len() {
            let clip = &self.clips.collecting()[i];
            if !clip.is_collecting() {
                continue;
            }
            if now >= clip.to_utc_micros + grace {
                self.spool_clip(i, true, None);
            } else if !clip.in_spool || clip.has_unspooled() {
                self.spool_clip(i, false, None);
            }
        }
        self.clips.sweep();
    }

    /// Hands collecting clip `i` to the spool: the segments it has not handed over yet, as an
    /// open clip, or with `close` as the finished clip with the parts of its window nothing
    /// covers (then its pins are released). A failure that may pass (console, disk) keeps the
    /// pins and is retried on the next tick; only a clip larger than the whole offline cache,
    /// or one the spool no longer takes (dropped from a full cache, refused by the console),
    /// fails. `just_sealed` is a segment whose sealed bytes are still in memory (it need not be
    /// read back from the ring).
    pub(super) fn spool_clip(
        &mut self,
        i: usize,
        close: bool,
        just_sealed: Option<(SegmentId, &[u8])>,
    ) {
        let clip = &self.clips.collecting()[i];
        let fresh = clip.unspooled();
        if !close && clip.in_spool && fresh.is_empty() {
            return;
        }
        let ForSpool { mut segments, mut handed, gone } = self.read_for_spool(fresh, just_sealed);
        // Evicted before it was handed over (a pin that could not be made): the clip forgets
        // it, so it is not looked for on every tick; its entry gets an absence note.
        self.forget(i, &gone, "the ring lost");
        let clip = self.clips.collecting()[i].clone();
        let chain = match self.clip_chain(&clip) {
            Ok(chain) => chain,
            Err(e) => {
                // Nothing handed over: the next tick tries again.
                self.error(format!("clip {}: not handed to the spool: {e}", clip.id));
                return;
            }
        };
        // Recorded before this agent signed its segments: no entry vouches for them, so they
        // are not sent (the console refuses what no entry names); their span is missing.
        let unchained: Vec<String> =
            clip.segments.iter().filter(|s| !chain.named.contains(*s)).cloned().collect();
        if !unchained.is_empty() {
            self.forget(i, &unchained, "no chain entry names");
            let keep: Vec<bool> = handed.iter().map(|s| !unchained.contains(s)).collect();
            let mut keep_handed = keep.iter();
            handed.retain(|_| *keep_handed.next().unwrap_or(&true));
            let mut keep_segments = keep.iter();
            segments.retain(|_| *keep_segments.next().unwrap_or(&true));
        }
        let clip = &self.clips.collecting()[i];
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
                    start_ms: UnixMillis(m.from_utc_micros / 1000),
                    end_ms: UnixMillis(m.to_utc_micros / 1000),
                    reason: m.reason.clone(),
                })
                .collect(),
            open: !close,
            chain: chain.entries,
            absent: chain.absent,
        };
        let result = self.uploader.enqueue_clip(new, segments);
        self.settle_handover(i, close, result, handed, missing);
    }

    /// The sealed bytes of segments `ids` for the spool (`just_sealed` from memory, the rest
    /// read back from the ring), the ids of those that could be read, and those the ring no
    /// longer holds.
    fn read_for_spool(
        &self,
        ids: Vec<String>,
        just_sealed: Option<(SegmentId, &[u8])>,
    ) -> ForSpool {
        let mut out = ForSpool::default();
        for sid in ids {
            let Some(entry) = sid.parse::<SegmentId>().ok().and_then(|id| self.ring.get(id)) else {
                out.gone.push(sid);
                continue;
            };
            let bytes = match just_sealed {
                Some((sealed_id, bytes)) if sealed_id == entry.id => Ok(bytes.to_vec()),
                _ => self.ring.read(entry.id),
            };
            match bytes {
                Ok(bytes) => {
                    out.segments.push(NewSegment {
                        start_ms: entry.start.utc_micros / 1000,
                        end_ms: entry.end.utc_micros / 1000,
                        bytes: SegmentBytes::Bytes(bytes),
                    });
                    out.handed.push(sid);
                }
                // Still held: tried again on the next tick.
                Err(e) => tracing::warn!(segment = sid, error = %e, "pinned segment unreadable"),
            }
        }
        out
    }

    /// Clip `i` forgets segments `ids` (`why` names what happened to them, for the log).
    fn forget(&mut self, i: usize, ids: &[String], why: &str) {
        if ids.is_empty() {
            return;
        }
        tracing::info!(
            clip = self.clips.collecting()[i].id,
            segments = ids.len(),
            "clip forgets segments {why}"
        );
        if let Err(e) = self.clips.forget(self.uploader.spool(), i, ids) {
            let id = &self.clips.collecting()[i].id;
            self.error(format!("clip {id}: segments {why} not forgotten: {e}"));
        }
    }

    /// Clips that failed to list a new segment (a database error at intake) take what the
    /// ring holds for them now; one still failing is tried again on the next tick.
    fn retake_held(&mut self) {
        if self.retake.is_empty() {
            return;
        }
        let retake = std::mem::take(&mut self.retake);
        for i in 0..self.clips.collecting().len() {
            let clip = &self.clips.collecting()[i];
            if !retake.contains(&clip.id) {
                continue;
            }
            let id = clip.id.clone();
            for segment in clips::held_for(&self.ring, clip) {
                if let Err(e) = self.clips.take(self.uploader.spool(), &mut self.ring, i, segment) {
                    self.error(format!("segment {segment} not taken for clip {id}: {e}"));
                    self.retake.insert(id);
                    break;
                }
            }
        }
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
        clips::missing_ranges(clip.from_utc_micros, clip.to_utc_micros, &spans, self.frame_gap())
    }

    /// The longest pause between two frames that is still recording (twice the frame interval
    /// and a second, micros): a longer one is a gap.
    pub(super) fn frame_gap(&self) -> i64 {
        1_000_000_000 / i64::from(self.pace.base_fps_milli.max(1)) * 2 + 1_000_000
    }

    /// Stores what the spool made of clip `i`'s hand-over: handed segments, a close (pins
    /// released), a retry on the next tick, or a failure.
    fn settle_handover(
        &mut self,
        i: usize,
        close: bool,
        result: Result<rearview_uploader::spool::Enqueued, rearview_uploader::UploadError>,
        handed: Vec<String>,
        missing: Vec<clips::Missing>,
    ) {
        let clip = &self.clips.collecting()[i];
        let id = clip.id.clone();
        let handover = match result {
            Ok(done) if matches!(done.state, ClipState::Pending | ClipState::Sent) => {
                Handover::Done
            }
            Ok(done) if done.state == ClipState::Lost => Handover::Failed(
                "dropped from the full offline cache before its window ended".to_string(),
            ),
            Ok(done) => Handover::Failed(format!("the spool holds it as {}", done.state.as_str())),
            Err(e @ rearview_uploader::UploadError::TooLarge(_)) => Handover::Failed(e.to_string()),
            Err(e) => {
                tracing::warn!(clip = id, error = %e, "clip not handed to the spool; will retry");
                Handover::Retry(e.to_string())
            }
        };
        let done = matches!(handover, Handover::Done);
        let change = ClipChange {
            spooled: if done { &handed } else { &[] },
            in_spool: done || clip.in_spool,
            state: match &handover {
                Handover::Done if close => RecordState::Pending,
                Handover::Done | Handover::Retry(_) => RecordState::Collecting,
                Handover::Failed(_) => RecordState::Failed,
            },
            missing: (done && close).then_some(missing.as_slice()),
            error: match &handover {
                Handover::Done => None,
                Handover::Retry(why) | Handover::Failed(why) => Some(why.as_str()),
            },
        };
        if let Err(e) = self.clips.settle(self.uploader.spool(), &mut self.ring, i, &change) {
            // Nothing changed, here or in the database: the next tick hands over again (the
            // spool names a segment once) and stores the outcome then.
            self.error(format!("clip {id}: state not stored ({e}); retried on the next tick"));
            return;
        }
        match handover {
            Handover::Done if close => tracing::info!(
                clip = id,
                segments = self.clips.collecting()[i].segments.len(),
                missing = missing.len(),
                "clip window ended: closed for upload"
            ),
            Handover::Failed(reason) => self.error(format!("clip {id} failed: {reason}")),
            _ => {}
        }
    }
}

/// What a hand-over to the spool came to.
enum Handover {
    /// The spool took it (pending, or already sent).
    Done,
    /// A failure that may pass (disk, database): the next tick tries again.
    Retry(String),
    /// The spool will not take it; the clip fails.
    Failed(String),
}

/// What [`Store::read_for_spool`] found.
#[derive(Default)]
struct ForSpool {
    segments: Vec<NewSegment>,
    handed: Vec<String>,
    gone: Vec<String>,
}
