//! Which window the user works in: `ActiveWindow` events on an explicit X display.
//!
//! With a window manager that follows EWMH, the active window is the root's
//! `_NET_ACTIVE_WINDOW`, and a change of it wakes us at once (PropertyNotify on the root).
//! Without one (a bare Xvfb, some kiosks) it is the X input focus, which sends no event to an
//! observer, so we also poll every [`POLL`]. The focused window may be a subwindow (xterm's
//! text area) or a window manager's frame; we report the client window carrying `WM_CLASS`
//! around or inside it. Title changes of the active window are reported too.
//!
//! When nothing is focused (focus on the root or `None`), one `ActiveWindow` with an empty
//! title and application is sent, so a timeline shows that the desktop itself had focus.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use x11rb::connection::Connection;
use x11rb::errors::ReplyError;
use x11rb::protocol::xproto::{
    AtomEnum, ChangeWindowAttributesAux, ConnectionExt as _, EventMask, Window,
};
use x11rb::rust_connection::RustConnection;

use super::{spawn_pump, InputError, InputSource};
use crate::event::{InputEvent, InputKind};
use crate::frame::Timestamp;

/// How often the input focus is polled when no event wakes us.
pub const POLL: Duration = Duration::from_millis(200);

/// Emits `ActiveWindow` events for one display; see the module docs.
pub struct ActiveWindowWatcher {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
}

struct Atoms {
    net_active_window: u32,
    net_wm_name: u32,
    net_wm_pid: u32,
    utf8_string: u32,
}

#[derive(Clone, Debug, PartialEq)]
struct Active {
    window: Window,
    title: String,
    app: String,
    pid: Option<u32>,
}

impl ActiveWindowWatcher {
    /// Start watching `display` (e.g. `":42"`), sending into `out`.
    pub fn start(display: &str, out: Sender<InputEvent>) -> Result<Self, InputError> {
        crate::source::x11::check_display(display)
            .map_err(|reason| InputError::Connect { display: display.to_string(), reason })?;
        let (conn, screen) = RustConnection::connect(Some(display)).map_err(|e| {
            InputError::Connect { display: display.to_string(), reason: e.to_string() }
        })?;
        let proto = |e: &dyn std::fmt::Display| InputError::Protocol(e.to_string());
        let root = conn.setup().roots.get(screen).map(|s| s.root).ok_or_else(|| {
            InputError::Connect { display: display.to_string(), reason: "no such screen".into() }
        })?;
        let intern = |name: &str| -> Result<u32, InputError> {
            Ok(conn
                .intern_atom(false, name.as_bytes())
                .map_err(|e| proto(&e))?
                .reply()
                .map_err(|e| proto(&e))?
                .atom)
        };
        let atoms = Atoms {
            net_active_window: intern("_NET_ACTIVE_WINDOW")?,
            net_wm_name: intern("_NET_WM_NAME")?,
            net_wm_pid: intern("_NET_WM_PID")?,
            utf8_string: intern("UTF8_STRING")?,
        };
        conn.change_window_attributes(
            root,
            &ChangeWindowAttributesAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )
        .map_err(|e| proto(&e))?
        .check()
        .map_err(|e| proto(&e))?;

        let (raw, pump) = spawn_pump("x11-window", out)?;
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("x11-window".into())
                .spawn(move || watch(conn, root, atoms, raw, stop))
                .map_err(InputError::Thread)?
        };
        Ok(Self { stop, worker: Some(worker), pump: Some(pump) })
    }
}

impl InputSource for ActiveWindowWatcher {
    fn name(&self) -> &'static str {
        "x11-window"
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

impl Drop for ActiveWindowWatcher {
    fn drop(&mut self) {
        InputSource::stop(self);
    }
}

fn watch(
    conn: RustConnection,
    root: Window,
    atoms: Atoms,
    raw: Sender<InputEvent>,
    stop: Arc<AtomicBool>,
) {
    let mut last: Option<Active> = None;
    let mut watched_client: Option<Window> = None;
    while !stop.load(Ordering::Relaxed) {
        let current = match active(&conn, root, &atoms) {
            Ok(a) => a,
            // A window vanished between two requests: look again next round.
            Err(ReplyError::X11Error(_)) => None,
            Err(ReplyError::ConnectionError(_)) => return,
        };
        let current = current.unwrap_or(Active {
            window: 0,
            title: String::new(),
            app: String::new(),
            pid: None,
        });
        if last.as_ref() != Some(&current) {
            if current.window != 0 && watched_client != Some(current.window) {
                // Title changes of the active window wake us; a failure only means polling.
                let _ = conn.change_window_attributes(
                    current.window,
                    &ChangeWindowAttributesAux::new().event_mask(EventMask::PROPERTY_CHANGE),
                );
                let _ = conn.flush();
                watched_client = Some(current.window);
            }
            let event = InputEvent {
                at: Timestamp::now(),
                kind: InputKind::ActiveWindow {
                    title: current.title.clone(),
                    app: current.app.clone(),
                    pid: current.pid,
                },
            };
            if raw.send(event).is_err() {
                return;
            }
            last = Some(current);
        }
        if !wait_for_event(&conn, POLL) {
            return;
        }
    }
}

/// Sleep until the connection has data or `timeout` passed, then drain events. False when the
/// connection is gone.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn wait_for_event(conn: &RustConnection, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: conn.stream().as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, count 1; poll writes only `revents`.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    loop {
        match conn.poll_for_event() {
            Ok(Some(_)) => continue,
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fn active(
    conn: &RustConnection,
    root: Window,
    atoms: &Atoms,
) -> Result<Option<Active>, ReplyError> {
    let net_active = conn
        // Any type: EWMH says WINDOW, but tools and some managers write CARDINAL or INTEGER.
        .get_property(false, root, atoms.net_active_window, AtomEnum::ANY, 0, 1)?
        .reply()?;
    let mut window = net_active.value32().and_then(|mut v| v.next()).unwrap_or(0);
    if window == 0 {
        window = conn.get_input_focus()?.reply()?.focus;
    }
    // 0 is None, 1 is PointerRoot: no window has the focus.
    if window <= 1 || window == root {
        return Ok(None);
    }
    let Some(client) = find_client(conn, root, window)? else { return Ok(None) };
    let class = conn.get_property(false, client, AtomEnum::WM_CLASS, AtomEnum::STRING, 0, 256)?;
    let net_name =
        conn.get_property(false, client, atoms.net_wm_name, atoms.utf8_string, 0, 1024)?;
    let wm_name = conn.get_property(false, client, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 1024)?;
    let pid = conn.get_property(false, client, atoms.net_wm_pid, AtomEnum::CARDINAL, 0, 1)?;

    let class = class.reply()?.value;
    // WM_CLASS is "instance\0Class\0": the class names the application.
    let app = class.split(|&b| b == 0).nth(1).map(|c| String::from_utf8_lossy(c).into_owned());
    let net_name = net_name.reply()?.value;
    let title = if net_name.is_empty() {
        // WM_NAME is usually Latin-1 (STRING); map bytes to the same code points.
        wm_name.reply()?.value.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(&net_name).into_owned()
    };
    let pid = pid.reply()?.value32().and_then(|mut v| v.next());
    Ok(Some(Active { window: client, title, app: app.unwrap_or_default(), pid }))
}

fn has_class(conn: &RustConnection, w: Window) -> Result<bool, ReplyError> {
    let r = conn.get_property(false, w, AtomEnum::WM_CLASS, AtomEnum::STRING, 0, 0)?.reply()?;
    Ok(r.type_ != u32::from(AtomEnum::NONE))
}

/// The client window (with `WM_CLASS`) for a focused window: itself, an ancestor below the root
/// (focused subwindow), or a descendant of the top-level (window-manager frame).
fn find_client(
    conn: &RustConnection,
    root: Window,
    w: Window,
) -> Result<Option<Window>, ReplyError> {
    let mut cur = w;
    let mut top = w;
    for _ in 0..32 {
        if has_class(conn, cur)? {
            return Ok(Some(cur));
        }
        let tree = conn.query_tree(cur)?.reply()?;
        if tree.parent == root || tree.parent == 0 {
            top = cur;
            break;
        }
        cur = tree.parent;
    }
    // A frame: breadth-first through a few levels of children.
    let mut level = vec![top];
    for _ in 0..3 {
        let mut next = Vec::new();
        for parent in level {
            for child in conn.query_tree(parent)?.reply()?.children {
                if has_class(conn, child)? {
                    return Ok(Some(child));
                }
                next.push(child);
            }
        }
        level = next;
    }
    Ok(None)
}
