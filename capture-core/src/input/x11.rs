//! Keyboard and pointer on an explicit X display, through the RECORD extension.
//!
//! RECORD hands us every device event the server processes (real devices and XTEST alike) without
//! grabbing anything, so the user's session behaves exactly as without us. As the RECORD
//! specification advises we use two connections: one to control the recording context, one that
//! blocks reading the recorded data; stopping disables the context from the control connection,
//! which ends the data stream.
//!
//! Besides device events we record `ChangeKeyboardMapping` requests: tools like `xdotool type`
//! remap a spare keycode to a character, press it and restore the map, and recording the request
//! in the same stream as the key press is the only race-free way to know what that key typed.
//! (XKB map changes, e.g. `setxkbmap`, are not followed; the core map read at start stays.)

use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::record::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

use super::keys::Keymap;
use super::{spawn_pump, InputError, InputSource};
use crate::event::{InputEvent, InputKind};
use crate::frame::Timestamp;

/// Core request opcode of ChangeKeyboardMapping.
const CHANGE_KEYBOARD_MAPPING: u8 = 100;
/// Categories of recorded data (RECORD protocol, "EnableContext").
const FROM_SERVER: u8 = 0;
const FROM_CLIENT: u8 = 1;
const START_OF_DATA: u8 = 4;
const END_OF_DATA: u8 = 5;
/// How long the server may take to start recording.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Records keys, buttons, wheel and pointer of one display; see the module docs.
pub struct X11InputSource {
    display: String,
    ctrl: RustConnection,
    context: record::Context,
    reader: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
}

impl X11InputSource {
    /// Start recording `display` (e.g. `":42"`) into `out`.
    pub fn start(display: &str, out: Sender<InputEvent>) -> Result<Self, InputError> {
        crate::source::x11::check_display(display)
            .map_err(|reason| InputError::Connect { display: display.to_string(), reason })?;
        let connect = || {
            RustConnection::connect(Some(display)).map(|(c, _)| c).map_err(|e| {
                InputError::Connect { display: display.to_string(), reason: e.to_string() }
            })
        };
        let ctrl = connect()?;
        let data = connect()?;
        let proto = |e: &dyn std::fmt::Display| InputError::Protocol(e.to_string());
        if ctrl.extension_information(record::X11_EXTENSION_NAME).map_err(|e| proto(&e))?.is_none()
        {
            return Err(InputError::MissingExtension("RECORD"));
        }
        ctrl.record_query_version(1, 13).map_err(|e| proto(&e))?.reply().map_err(|e| proto(&e))?;

        let setup = ctrl.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let mapping = ctrl
            .get_keyboard_mapping(min, max - min + 1)
            .map_err(|e| proto(&e))?
            .reply()
            .map_err(|e| proto(&e))?;
        let keymap = Keymap::new(min, mapping.keysyms_per_keycode, mapping.keysyms);

        let context = ctrl.generate_id().map_err(|e| proto(&e))?;
        let none = record::Range8 { first: 0, last: 0 };
        let no_ext = record::ExtRange { major: none, minor: record::Range16 { first: 0, last: 0 } };
        let range = record::Range {
            core_requests: record::Range8 {
                first: CHANGE_KEYBOARD_MAPPING,
                last: CHANGE_KEYBOARD_MAPPING,
            },
            core_replies: none,
            ext_requests: no_ext,
            ext_replies: no_ext,
            delivered_events: none,
            device_events: record::Range8 {
                first: xproto::KEY_PRESS_EVENT,
                last: xproto::MOTION_NOTIFY_EVENT,
            },
            errors: none,
            client_started: false,
            client_died: false,
        };
        ctrl.record_create_context(context, 0, &[record::CS::ALL_CLIENTS.into()], &[range])
            .map_err(|e| proto(&e))?
            .check()
            .map_err(|e| proto(&e))?;

        let (raw, pump) = spawn_pump("x11-record", out)?;
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("x11-record".into())
            .spawn(move || read_records(data, context, keymap, raw, started_tx))
            .map_err(InputError::Thread)?;
        // Return only once recording runs: callers act right after start (tests type at once),
        // and a stop() that disabled the context before the reader enabled it would leave the
        // reader blocked for ever.
        if started_rx.recv_timeout(START_TIMEOUT).is_err() {
            let _ = ctrl.record_free_context(context).map(|c| c.check());
            return Err(InputError::Protocol(format!(
                "recording did not start within {START_TIMEOUT:?}"
            )));
        }
        Ok(Self {
            display: display.to_string(),
            ctrl,
            context,
            reader: Some(reader),
            pump: Some(pump),
        })
    }

    /// The display being recorded.
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl InputSource for X11InputSource {
    fn name(&self) -> &'static str {
        "x11-record"
    }

    fn stop(&mut self) {
        let Some(reader) = self.reader.take() else { return };
        // Disabling the context makes the server end the data stream; if the server is gone
        // the reader has already ended with the broken connection.
        if let Ok(cookie) = self.ctrl.record_disable_context(self.context) {
            let _ = cookie.check();
        }
        let _ = reader.join();
        if let Ok(cookie) = self.ctrl.record_free_context(self.context) {
            let _ = cookie.check();
        }
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }
}

impl Drop for X11InputSource {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reader thread: blocks on the recorded stream until the context is disabled or the
/// connection breaks.
fn read_records(
    data: RustConnection,
    context: record::Context,
    mut keymap: Keymap,
    raw: Sender<InputEvent>,
    started: Sender<()>,
) {
    let Ok(replies) = data.record_enable_context(context) else { return };
    for reply in replies {
        let Ok(reply) = reply else { return };
        if reply.client_swapped {
            // Another byte order than ours: a client on a big-endian machine. Its requests
            // are not ours to parse; device events come from the server and are fine.
            if reply.category == FROM_CLIENT {
                continue;
            }
        }
        match reply.category {
            FROM_SERVER => {
                for ev in reply.data.chunks_exact(32) {
                    if let Some(kind) = device_event(ev, &mut keymap) {
                        let event = InputEvent { at: Timestamp::now(), kind };
                        if raw.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
            FROM_CLIENT => apply_mapping_requests(&reply.data, &mut keymap),
            START_OF_DATA => {
                let _ = started.send(());
            }
            END_OF_DATA => return,
            _ => {}
        }
    }
}

/// One recorded core device event (32 bytes, our byte order) as an input event.
fn device_event(ev: &[u8], keymap: &mut Keymap) -> Option<InputKind> {
    let detail = ev[1];
    let root_x = i16::from_le_bytes([ev[20], ev[21]]);
    let root_y = i16::from_le_bytes([ev[22], ev[23]]);
    match ev[0] & 0x7f {
        xproto::KEY_PRESS_EVENT => {
            let (key, text) = keymap.press(detail);
            Some(InputKind::KeyPress { key, text })
        }
        xproto::KEY_RELEASE_EVENT => Some(InputKind::KeyRelease { key: keymap.release(detail) }),
        // Buttons 4-7 are the wheel: 4 up (away from the user), 5 down, 6 left, 7 right. One
        // notch is one press; the releases carry nothing more.
        xproto::BUTTON_PRESS_EVENT => Some(match detail {
            4 => InputKind::Wheel { dx: 0, dy: 1 },
            5 => InputKind::Wheel { dx: 0, dy: -1 },
            6 => InputKind::Wheel { dx: -1, dy: 0 },
            7 => InputKind::Wheel { dx: 1, dy: 0 },
            b => InputKind::ButtonPress { button: b },
        }),
        xproto::BUTTON_RELEASE_EVENT => match detail {
            4..=7 => None,
            b => Some(InputKind::ButtonRelease { button: b }),
        },
        xproto::MOTION_NOTIFY_EVENT => {
            Some(InputKind::PointerMove { x: f64::from(root_x), y: f64::from(root_y) })
        }
        _ => None,
    }
}

/// Recorded client requests (only ChangeKeyboardMapping is selected), applied to the keymap.
fn apply_mapping_requests(mut data: &[u8], keymap: &mut Keymap) {
    while data.len() >= 8 {
        let len = usize::from(u16::from_le_bytes([data[2], data[3]])) * 4;
        if len < 8 || len > data.len() {
            return;
        }
        let (request, rest) = data.split_at(len);
        if request[0] == CHANGE_KEYBOARD_MAPPING {
            let (count, first, per) = (request[1], request[4], request[5]);
            let keysyms: Vec<u32> = request[8..]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            keymap.change(first, count, per, &keysyms);
        }
        data = rest;
    }
}
