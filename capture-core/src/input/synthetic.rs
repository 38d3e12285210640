//! A scripted input source for logic tests: plays `(delay, event)` pairs on its own thread
//! through the same pump as the real backends (so pointer moves are coalesced the same way).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{spawn_pump, InputError, InputSource};
use crate::event::{InputEvent, InputKind};
use crate::frame::Timestamp;

/// Plays a script; see the module docs.
pub struct SyntheticInput {
    stop: Arc<AtomicBool>,
    player: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
}

impl SyntheticInput {
    /// Send each event of `script` after waiting its delay (relative to the previous one),
    /// timestamped when sent.
    pub fn start(
        script: Vec<(Duration, InputKind)>,
        out: Sender<InputEvent>,
    ) -> Result<Self, InputError> {
        let (raw, pump) = spawn_pump("synthetic-input", out)?;
        let stop = Arc::new(AtomicBool::new(false));
        let player = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("synthetic-input".into())
                .spawn(move || {
                    for (delay, kind) in script {
                        // Sleep in small steps so stop() is prompt even for long delays.
                        let until = std::time::Instant::now() + delay;
                        while let Some(left) =
                            until.checked_duration_since(std::time::Instant::now())
                        {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(left.min(Duration::from_millis(20)));
                        }
                        if stop.load(Ordering::Relaxed)
                            || raw.send(InputEvent { at: Timestamp::now(), kind }).is_err()
                        {
                            return;
                        }
                    }
                })
                .map_err(InputError::Thread)?
        };
        Ok(Self { stop, player: Some(player), pump: Some(pump) })
    }

    /// Wait until the whole script was played (or the source stopped).
    pub fn wait(&mut self) {
        if let Some(p) = self.player.take() {
            let _ = p.join();
        }
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

impl InputSource for SyntheticInput {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wait();
    }
}

impl Drop for SyntheticInput {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_the_script_in_order_with_moves_coalesced() {
        let (tx, rx) = crate::input::channel();
        let mut script = vec![(Duration::ZERO, InputKind::ButtonPress { button: 1 })];
        for i in 0..100 {
            script
                .push((Duration::from_micros(100), InputKind::PointerMove { x: i as f64, y: 0.0 }));
        }
        script.push((Duration::ZERO, InputKind::ButtonRelease { button: 1 }));
        let mut input = SyntheticInput::start(script, tx).unwrap();
        input.wait();
        let kinds: Vec<InputKind> = rx.try_iter().map(|e| e.kind).collect();
        assert_eq!(kinds.first(), Some(&InputKind::ButtonPress { button: 1 }));
        assert_eq!(kinds.last(), Some(&InputKind::ButtonRelease { button: 1 }));
        let moves = kinds.len() - 2;
        // 100 moves within ~10-30 ms: far fewer survive, and the last position is kept.
        assert!(moves < 100, "{moves} moves");
        assert_eq!(kinds[kinds.len() - 2], InputKind::PointerMove { x: 99.0, y: 0.0 });
    }
}
