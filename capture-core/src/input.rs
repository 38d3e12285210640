//! Input sources: what the user does, and which window they do it in.
//!
//! An [`InputSource`] runs on its own thread(s) and sends timestamped [`InputEvent`]s into a
//! channel the caller passes in, so several sources (keyboard and pointer, active window) can feed
//! one channel. Every source goes through the same [pump](spawn_pump), which coalesces pointer
//! moves to at most [`MAX_MOVES_PER_SECOND`] (keeping the latest position, and flushing it before
//! any other event so the order of what happened is kept).
//!
//! Backends:
//!
//! * [`x11::X11InputSource`] — the X RECORD extension on an explicit display: keys (names and
//!   typed text), buttons, wheel, pointer; stoppable; one per session display.
//! * [`window::ActiveWindowWatcher`] — `ActiveWindow` events (title, `WM_CLASS`, `_NET_WM_PID`)
//!   on an explicit display.
//! * [`rdev::RdevInputSource`] — the portable listener (`rdev::listen`). It reads `DISPLAY` from
//!   the environment and its listener thread can never be stopped, so it exists once per process.
//! * [`synthetic::SyntheticInput`] — plays a script, for logic tests.
//!
//! Events hold what people type: they are never logged (their `Debug` hides the content).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::event::{InputEvent, InputKind};
use crate::frame::Timestamp;

// The X11 keymap in it is only used by the `x11` source; the key names are for everyone.
#[cfg_attr(not(feature = "x11"), allow(dead_code))]
pub mod keys;
#[cfg(feature = "rdev")]
pub mod rdev;
pub mod synthetic;
#[cfg(feature = "x11")]
pub mod window;
#[cfg(feature = "x11")]
pub mod x11;

/// Pointer moves delivered per second, at most.
pub const MAX_MOVES_PER_SECOND: u64 = 30;

/// A running producer of input events. Dropping it stops it too.
pub trait InputSource: Send {
    /// Short backend name (`"x11-record"`, `"x11-window"`, `"rdev"`, `"synthetic"`).
    fn name(&self) -> &'static str;

    /// Stop producing and wait for the source's threads (where they can be stopped). Events
    /// already sent stay in the channel; a pending pointer move is flushed first. Idempotent.
    fn stop(&mut self);
}

/// Why an input source could not start.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Retryable: the display may appear later.
    #[error("cannot connect to display {display:?}: {reason}")]
    Connect { display: String, reason: String },
    /// Permanent on this server: the extension the backend needs is missing.
    #[error("the X server lacks the {0} extension (start Xorg/Xvfb with it enabled)")]
    MissingExtension(&'static str),
    /// Retryable: a request failed or the connection broke while setting up.
    #[error("X11 request failed while starting: {0}")]
    Protocol(String),
    /// Retryable once the other instance stopped: rdev can listen only once per process.
    #[error("an rdev input source is already running in this process; stop it first")]
    Busy,
    /// Permanent for this process: rdev's listener failed (no display, no RECORD).
    #[error("rdev cannot listen: {0}")]
    Rdev(String),
    /// Retryable: the OS refused a thread.
    #[error("cannot spawn the input thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl InputError {
    /// Whether starting again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, InputError::MissingExtension(_) | InputError::Rdev(_))
    }
}

/// A new channel for input events (a plain std channel; any number of sources may share it).
pub fn channel() -> (Sender<InputEvent>, Receiver<InputEvent>) {
    mpsc::channel()
}

/// Keeps at most one pointer move per `1 / MAX_MOVES_PER_SECOND` slot, the latest one.
///
/// Pure and clock-free (times are the events' monotonic microseconds and a `now` the caller
/// passes), so it is tested without threads.
#[derive(Debug, Default)]
pub(crate) struct MoveCoalescer {
    /// Earliest monotonic time at which the next move may go out.
    next_slot: u64,
    pending: Option<InputEvent>,
}

const SLOT_MICROS: u64 = 1_000_000 / MAX_MOVES_PER_SECOND;

impl MoveCoalescer {
    /// Take an event in; return what must go out now, in order.
    pub(crate) fn push(&mut self, ev: InputEvent) -> Vec<InputEvent> {
        let mut out = Vec::new();
        if matches!(ev.kind, InputKind::PointerMove { .. }) {
            let t = ev.at.mono_micros;
            if self.pending.is_none() && t >= self.next_slot {
                self.next_slot = t + SLOT_MICROS;
                out.push(ev);
            } else {
                self.pending = Some(ev);
            }
        } else {
            // Where the pointer was matters for what a click or key did: the move goes first.
            if let Some(p) = self.take_pending() {
                out.push(p);
            }
            out.push(ev);
        }
        out
    }

    /// When the pending move is due, if there is one.
    pub(crate) fn due(&self) -> Option<u64> {
        self.pending.as_ref().map(|_| self.next_slot)
    }

    /// The pending move if its slot has come at `now`.
    pub(crate) fn poll(&mut self, now: u64) -> Option<InputEvent> {
        if self.due().is_some_and(|due| now >= due) {
            self.take_pending()
        } else {
            None
        }
    }

    /// The pending move regardless of its slot.
    pub(crate) fn take_pending(&mut self) -> Option<InputEvent> {
        let p = self.pending.take()?;
        self.next_slot = self.next_slot.max(p.at.mono_micros) + SLOT_MICROS;
        Some(p)
    }
}

/// Start the pump thread every backend sends its raw events through: coalesces pointer moves
/// and forwards everything to `out`. It ends (after flushing) when every raw sender is dropped
/// or `out`'s receiver is gone.
pub(crate) fn spawn_pump(
    name: &str,
    out: Sender<InputEvent>,
) -> Result<(Sender<InputEvent>, JoinHandle<()>), InputError> {
    let (raw_tx, raw_rx) = mpsc::channel::<InputEvent>();
    let handle = thread::Builder::new()
        .name(format!("{name}-pump"))
        .spawn(move || pump(raw_rx, out))
        .map_err(InputError::Thread)?;
    Ok((raw_tx, handle))
}

fn pump(raw: Receiver<InputEvent>, out: Sender<InputEvent>) {
    let mut coalescer = MoveCoalescer::default();
    loop {
        let received = match coalescer.due() {
            Some(due) => {
                let now = Timestamp::now().mono_micros;
                raw.recv_timeout(Duration::from_micros(due.saturating_sub(now)))
            }
            None => raw.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let ready = match received {
            Ok(ev) => coalescer.push(ev),
            Err(RecvTimeoutError::Timeout) => {
                coalescer.poll(Timestamp::now().mono_micros).into_iter().collect()
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(p) = coalescer.take_pending() {
                    let _ = out.send(p);
                }
                return;
            }
        };
        for ev in ready {
            if out.send(ev).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono_micros: u64) -> Timestamp {
        Timestamp { utc_micros: mono_micros as i64, mono_micros }
    }

    fn mv(t: u64, x: f64) -> InputEvent {
        InputEvent { at: at(t), kind: InputKind::PointerMove { x, y: 0.0 } }
    }

    #[test]
    fn moves_are_capped_per_second_and_the_latest_wins() {
        let mut c = MoveCoalescer::default();
        let mut out = Vec::new();
        // A 1 kHz mouse for one second, polled every millisecond like the pump would.
        for i in 0..1000u64 {
            let t = 1_000_000 + i * 1000;
            out.extend(c.poll(t));
            out.extend(c.push(mv(t, i as f64)));
        }
        out.extend(c.take_pending());
        assert!(out.len() <= MAX_MOVES_PER_SECOND as usize + 1, "{} moves", out.len());
        assert!(out.len() >= MAX_MOVES_PER_SECOND as usize - 1, "{} moves", out.len());
        match out.last().unwrap().kind {
            InputKind::PointerMove { x, .. } => assert_eq!(x, 999.0),
            _ => panic!("not a move"),
        }
        let times: Vec<u64> = out.iter().map(|e| e.at.mono_micros).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn other_events_flush_the_pending_move_first() {
        let mut c = MoveCoalescer::default();
        assert_eq!(c.push(mv(100, 1.0)).len(), 1);
        assert!(c.push(mv(200, 2.0)).is_empty());
        let key = InputEvent {
            at: at(300),
            kind: InputKind::KeyPress { key: "KeyA".into(), text: Some("a".into()) },
        };
        let out = c.push(key.clone());
        assert_eq!(out, vec![mv(200, 2.0), key]);
        assert!(c.due().is_none());
    }

    #[test]
    fn pump_forwards_in_order_and_flushes_on_close() {
        let (tx, rx) = channel();
        let (raw, handle) = spawn_pump("test", tx).unwrap();
        let now = Timestamp::now().mono_micros;
        raw.send(mv(now, 1.0)).unwrap();
        raw.send(mv(now + 1, 2.0)).unwrap();
        raw.send(mv(now + 2, 3.0)).unwrap();
        drop(raw);
        handle.join().unwrap();
        let got: Vec<InputEvent> = rx.try_iter().collect();
        assert_eq!(got, vec![mv(now, 1.0), mv(now + 2, 3.0)]);
    }
}
