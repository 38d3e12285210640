//! The portable input listener: `rdev::listen` (X RECORD through Xlib on Linux, hooks on
//! Windows, an event tap on macOS).
//!
//! Two properties of rdev shape this module:
//!
//! * It reads the display from the environment (`DISPLAY`) when it starts listening, and cannot
//!   be pointed at another one; the X11 backend ([`super::x11`]) can, and is the one to use for
//!   several sessions in one process.
//! * `rdev::listen` never returns once it runs, and there is no way to stop it. So the listener
//!   thread is started once per process and lives as long as the process; an
//!   [`RdevInputSource`] connects to it and disconnects on [`stop`](InputSource::stop). At most
//!   one source is connected at a time ([`InputError::Busy`] otherwise). Events seen while no
//!   source is connected are dropped.
//!
//! Caveat: Xlib ends the process when the X server goes away under a live connection. Start this
//! source only on a display that outlives the process (the user's session), never on a test
//! display that is torn down while the process runs on.

use std::sync::mpsc::Sender;
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{spawn_pump, InputError, InputSource};
use crate::event::{InputEvent, InputKind};
use crate::frame::Timestamp;

/// How long `start` waits for rdev to report that it cannot listen (it reports failures at
/// once; success is silence).
const FAILURE_GRACE: Duration = Duration::from_millis(1500);

/// The process-wide listener's state.
struct Listener {
    /// Where events go now (`None`: no source connected, events are dropped).
    target: Option<Sender<InputEvent>>,
    /// Set when `rdev::listen` failed; the listener is then dead for good.
    failed: Option<String>,
}

fn listener() -> &'static Mutex<Listener> {
    static LISTENER: OnceLock<Mutex<Listener>> = OnceLock::new();
    LISTENER.get_or_init(|| Mutex::new(Listener { target: None, failed: None }))
}

/// Whether the listener thread was started; it is started at most once.
static STARTED: OnceLock<()> = OnceLock::new();

/// Input from rdev; see the module docs.
pub struct RdevInputSource {
    pump: Option<JoinHandle<()>>,
}

impl RdevInputSource {
    /// Connect to the process-wide listener (starting it on first use) and send into `out`.
    pub fn start(out: Sender<InputEvent>) -> Result<Self, InputError> {
        let lock = || listener().lock().unwrap_or_else(|e| e.into_inner());
        {
            let state = lock();
            if let Some(reason) = &state.failed {
                return Err(InputError::Rdev(reason.clone()));
            }
            if state.target.is_some() {
                return Err(InputError::Busy);
            }
        }
        let (raw, pump) = spawn_pump("rdev", out)?;
        lock().target = Some(raw);

        let mut spawned = Ok(());
        let mut first = false;
        STARTED.get_or_init(|| {
            first = true;
            spawned = std::thread::Builder::new()
                .name("rdev-listen".into())
                .spawn(run_listener)
                .map(drop);
        });
        if let Err(e) = spawned {
            lock().target = None;
            return Err(InputError::Thread(e));
        }
        if first {
            // rdev fails fast (no display, no RECORD) or blocks for ever: wait out the failure.
            let deadline = std::time::Instant::now() + FAILURE_GRACE;
            while std::time::Instant::now() < deadline {
                if let Some(reason) = lock().failed.clone() {
                    return Err(InputError::Rdev(reason));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self { pump: Some(pump) })
    }
}

fn run_listener() {
    let result = rdev::listen(|event| {
        let Some(kind) = convert(&event) else { return };
        let at = Timestamp::now();
        let state = listener().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = &state.target {
            let _ = target.send(InputEvent { at, kind });
        }
    });
    let reason = match result {
        Ok(()) => "rdev::listen returned".to_string(),
        Err(e) => format!("{e:?} (is DISPLAY set to a server with the RECORD extension?)"),
    };
    let mut state = listener().lock().unwrap_or_else(|e| e.into_inner());
    state.failed = Some(reason);
    state.target = None;
}

fn convert(event: &rdev::Event) -> Option<InputKind> {
    use rdev::EventType;
    let button = |b: &rdev::Button| match b {
        rdev::Button::Left => 1,
        rdev::Button::Middle => 2,
        rdev::Button::Right => 3,
        rdev::Button::Unknown(n) => *n,
    };
    Some(match &event.event_type {
        EventType::KeyPress(key) => {
            InputKind::KeyPress { key: format!("{key:?}"), text: event.name.clone() }
        }
        EventType::KeyRelease(key) => InputKind::KeyRelease { key: format!("{key:?}") },
        EventType::ButtonPress(b) => InputKind::ButtonPress { button: button(b) },
        EventType::ButtonRelease(b) => match button(b) {
            // rdev reports releases of the wheel buttons 6 and 7; the press was the notch.
            6 | 7 => return None,
            n => InputKind::ButtonRelease { button: n },
        },
        EventType::MouseMove { x, y } => InputKind::PointerMove { x: *x, y: *y },
        EventType::Wheel { delta_x, delta_y } => InputKind::Wheel { dx: *delta_x, dy: *delta_y },
    })
}

impl InputSource for RdevInputSource {
    fn name(&self) -> &'static str {
        "rdev"
    }

    fn stop(&mut self) {
        let Some(pump) = self.pump.take() else { return };
        // Dropping the only raw sender ends the pump after it flushed.
        listener().lock().unwrap_or_else(|e| e.into_inner()).target = None;
        let _ = pump.join();
    }
}

impl Drop for RdevInputSource {
    fn drop(&mut self) {
        self.stop();
    }
}
