//! The fast X11 path: MIT-SHM `ShmGetImage`, falling back to `GetImage`.
//!
//! With SHM the server writes the monitor rectangle straight into a System V shared-memory
//! segment we attached to it, and the reply is a few bytes; we then copy the pixels once into the
//! [`Frame`]. Without SHM (extension missing, a remote or namespaced server that cannot attach our
//! segment, or [`X11Options::use_shm`] off) the pixels travel in the `GetImage` reply over the
//! socket, which costs several times more for a 1080p frame.
//!
//! Monitors come from RandR 1.5 `GetMonitors` (so `xrandr --setmonitor` splits show up), clipped
//! to the root window; without RandR monitors the whole root window is one monitor. At most
//! [`MAX_MONITORS`] are reported.
//!
//! The source connects to the display string it is given and never reads `DISPLAY`, so one
//! process can capture several displays (one per session) at once.

// MIT-SHM needs shmget/shmat/shmdt and a raw view of the shared pages; each block says why
// it is sound.
#![allow(unsafe_code)]

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::{ConnectionError, ReplyError, ReplyOrIdError};
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat, ImageOrder, Window};
use x11rb::rust_connection::RustConnection;

use super::{FrameSource, SourceError, MAX_MONITORS};
use crate::frame::{Frame, MonitorInfo, Timestamp, BYTES_PER_PIXEL};

/// Knobs of [`X11ShmSource`].
#[derive(Clone, Copy, Debug)]
pub struct X11Options {
    /// Try MIT-SHM first (default). Off forces plain `GetImage`, e.g. to measure or test it.
    pub use_shm: bool,
}

impl Default for X11Options {
    fn default() -> Self {
        Self { use_shm: true }
    }
}

/// Captures monitors of one X display; see the module docs.
pub struct X11ShmSource {
    display: String,
    options: X11Options,
    /// `None` after the connection broke; the next call reconnects.
    state: Option<Connected>,
    monitors: Vec<MonitorInfo>,
    /// Set when a capture failed in a way that suggests the geometry changed.
    monitors_stale: bool,
}

struct Connected {
    conn: RustConnection,
    root: Window,
    /// `None` when SHM is off or the server cannot use our segments.
    shm: Option<ShmSegment>,
}

impl X11ShmSource {
    /// Connect to `display` (e.g. `":42"`) with SHM when the server offers it.
    pub fn connect(display: &str) -> Result<Self, SourceError> {
        Self::connect_with(display, X11Options::default())
    }

    /// Connect with explicit options.
    pub fn connect_with(display: &str, options: X11Options) -> Result<Self, SourceError> {
        let state = Connected::open(display, options)?;
        Ok(Self {
            display: display.to_string(),
            options,
            state: Some(state),
            monitors: Vec::new(),
            monitors_stale: true,
        })
    }

    /// Whether captures currently go through shared memory.
    pub fn uses_shm(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.shm.is_some())
    }

    /// The display this source captures.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn connected(&mut self) -> Result<&mut Connected, SourceError> {
        if self.state.is_none() {
            self.state = Some(Connected::open(&self.display, self.options)?);
            self.monitors_stale = true;
        }
        // Just ensured above.
        self.state.as_mut().ok_or_else(|| SourceError::Connect {
            display: self.display.clone(),
            reason: "not connected".into(),
        })
    }

    /// Turn an x11rb failure into ours, dropping a broken connection so the next call reconnects.
    fn fail(&mut self, e: ReplyError) -> SourceError {
        match e {
            ReplyError::ConnectionError(e) => self.lost(e),
            ReplyError::X11Error(e) => {
                self.monitors_stale = true;
                SourceError::Capture(format!("X server refused the request: {:?}", e.error_kind))
            }
        }
    }

    fn lost(&mut self, e: ConnectionError) -> SourceError {
        self.state = None;
        SourceError::ConnectionLost { display: self.display.clone(), reason: e.to_string() }
    }

    fn refresh_monitors(&mut self) -> Result<(), SourceError> {
        let state = self.connected()?;
        match state.enumerate() {
            Ok(monitors) => {
                self.monitors = monitors;
                self.monitors_stale = false;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl FrameSource for X11ShmSource {
    fn name(&self) -> &'static str {
        if self.uses_shm() {
            "x11-shm"
        } else {
            "x11-getimage"
        }
    }

    fn monitors(&mut self) -> Result<Vec<MonitorInfo>, SourceError> {
        self.refresh_monitors()?;
        Ok(self.monitors.clone())
    }

    fn capture(&mut self, monitor_id: u32) -> Result<Frame, SourceError> {
        if self.monitors_stale || self.state.is_none() {
            self.refresh_monitors()?;
        }
        let monitor = self
            .monitors
            .iter()
            .find(|m| m.id == monitor_id)
            .cloned()
            .ok_or(SourceError::NoSuchMonitor { id: monitor_id, count: self.monitors.len() })?;
        let state = self.connected()?;
        let result = state.capture(&monitor);
        match result {
            Ok(frame) => Ok(frame),
            Err(CaptureFailure::Reply(e)) => Err(self.fail(e)),
            Err(CaptureFailure::Other(e)) => Err(e),
        }
    }
}

enum CaptureFailure {
    Reply(ReplyError),
    Other(SourceError),
}

impl From<ReplyError> for CaptureFailure {
    fn from(e: ReplyError) -> Self {
        CaptureFailure::Reply(e)
    }
}

impl From<ConnectionError> for CaptureFailure {
    fn from(e: ConnectionError) -> Self {
        CaptureFailure::Reply(ReplyError::ConnectionError(e))
    }
}

impl Connected {
    fn open(display: &str, options: X11Options) -> Result<Self, SourceError> {
        let connect_err =
            |reason: String| SourceError::Connect { display: display.to_string(), reason };
        check_display(display).map_err(connect_err)?;
        let (conn, screen_num) =
            RustConnection::connect(Some(display)).map_err(|e| connect_err(e.to_string()))?;
        let setup = conn.setup();
        let screen = setup
            .roots
            .get(screen_num)
            .ok_or_else(|| connect_err(format!("the server has no screen {screen_num}")))?;
        check_pixel_format(setup, screen)?;
        let root = screen.root;
        let root_bytes = root_size(screen);
        let mut state = Connected { conn, root, shm: None };
        if options.use_shm {
            // Any failure here only means "no SHM": the GetImage path still works.
            state.shm = state.try_shm(root_bytes).ok().flatten();
        }
        Ok(state)
    }

    /// Attach a segment big enough for `bytes`, or `None` when the server has no MIT-SHM or
    /// cannot attach our segment (it runs in another IPC namespace or on another machine).
    fn try_shm(&self, bytes: usize) -> Result<Option<ShmSegment>, ReplyOrIdError> {
        if self.conn.extension_information(shm::X11_EXTENSION_NAME)?.is_none() {
            return Ok(None);
        }
        self.conn.shm_query_version()?.reply()?;
        Ok(ShmSegment::create(&self.conn, bytes))
    }

    fn root_geometry(&self) -> Result<(u32, u32), ReplyError> {
        let g = self.conn.get_geometry(self.root)?.reply()?;
        Ok((u32::from(g.width), u32::from(g.height)))
    }

    fn enumerate(&self) -> Result<Vec<MonitorInfo>, ReplyError> {
        let (root_w, root_h) = self.root_geometry()?;
        let mut monitors = Vec::new();
        if let Some(randr_monitors) = self.randr_monitors()? {
            for m in randr_monitors {
                // Clip to the root window: a monitor set with `xrandr --setmonitor` may reach
                // past it, and GetImage of pixels outside the root is an error.
                let x0 = i64::from(m.x).clamp(0, i64::from(root_w));
                let y0 = i64::from(m.y).clamp(0, i64::from(root_h));
                let x1 = (i64::from(m.x) + i64::from(m.width)).clamp(0, i64::from(root_w));
                let y1 = (i64::from(m.y) + i64::from(m.height)).clamp(0, i64::from(root_h));
                if x1 <= x0 || y1 <= y0 {
                    continue;
                }
                let name = match self.conn.get_atom_name(m.name) {
                    Ok(cookie) => match cookie.reply() {
                        Ok(reply) => String::from_utf8_lossy(&reply.name).into_owned(),
                        Err(ReplyError::X11Error(_)) => format!("monitor-{}", monitors.len()),
                        Err(e) => return Err(e),
                    },
                    Err(e) => return Err(e.into()),
                };
                monitors.push(MonitorInfo {
                    id: monitors.len() as u32,
                    name,
                    x: x0 as i32,
                    y: y0 as i32,
                    width: (x1 - x0) as u32,
                    height: (y1 - y0) as u32,
                    primary: m.primary,
                });
                if monitors.len() == MAX_MONITORS {
                    break;
                }
            }
        }
        if monitors.is_empty() {
            monitors.push(MonitorInfo {
                id: 0,
                name: "screen".into(),
                x: 0,
                y: 0,
                width: root_w,
                height: root_h,
                primary: true,
            });
        }
        Ok(monitors)
    }

    /// RandR monitors, or `None` when the server lacks RandR 1.5.
    fn randr_monitors(&self) -> Result<Option<Vec<randr::MonitorInfo>>, ReplyError> {
        if self.conn.extension_information(randr::X11_EXTENSION_NAME)?.is_none() {
            return Ok(None);
        }
        let version = self.conn.randr_query_version(1, 5)?.reply()?;
        if (version.major_version, version.minor_version) < (1, 5) {
            return Ok(None);
        }
        match self.conn.randr_get_monitors(self.root, true)?.reply() {
            Ok(reply) => Ok(Some(reply.monitors)),
            Err(ReplyError::X11Error(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn capture(&mut self, m: &MonitorInfo) -> Result<Frame, CaptureFailure> {
        let (x, y) = (m.x as i16, m.y as i16);
        let (w, h) = (m.width as u16, m.height as u16);
        let stride = m.width as usize * BYTES_PER_PIXEL;
        let bytes = stride * m.height as usize;
        let captured_at = Timestamp::now();

        if let Some(seg) = &self.shm {
            if seg.size < bytes {
                // A monitor grew: replace the segment (the old one is detached on drop).
                let old = self.shm.take();
                if let Some(old) = old {
                    old.release(&self.conn);
                }
                self.shm = ShmSegment::create(&self.conn, bytes);
            }
        }
        let data = match &self.shm {
            Some(seg) => {
                let reply = self
                    .conn
                    .shm_get_image(
                        self.root,
                        x,
                        y,
                        w,
                        h,
                        !0,
                        ImageFormat::Z_PIXMAP.into(),
                        seg.seg,
                        0,
                    )?
                    .reply()?;
                if reply.size as usize != bytes {
                    return Err(CaptureFailure::Other(SourceError::Unsupported(format!(
                        "ShmGetImage returned {} bytes for {}x{} at depth {}",
                        reply.size, w, h, reply.depth
                    ))));
                }
                seg.copy_out(bytes)
            }
            None => {
                let reply = self
                    .conn
                    .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, w, h, !0)?
                    .reply()?;
                if reply.data.len() != bytes {
                    return Err(CaptureFailure::Other(SourceError::Unsupported(format!(
                        "GetImage returned {} bytes for {}x{} at depth {}",
                        reply.data.len(),
                        w,
                        h,
                        reply.depth
                    ))));
                }
                reply.data
            }
        };
        Ok(Frame { width: m.width, height: m.height, stride, data, captured_at })
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(seg) = self.shm.take() {
            seg.release(&self.conn);
        }
    }
}

/// x11rb 0.13 panics (u16 overflow) on display numbers above 65535 - 6000 while computing the TCP
/// port; a display string can come from configuration, so refuse those first.
pub(crate) fn check_display(display: &str) -> Result<(), String> {
    let number = display.rsplit(':').next().and_then(|rest| rest.split('.').next());
    match number.map(str::parse::<u32>) {
        Some(Ok(n)) if n > 59_535 => Err(format!("display number {n} is out of range")),
        _ => Ok(()),
    }
}

fn root_size(screen: &xproto::Screen) -> usize {
    usize::from(screen.width_in_pixels) * usize::from(screen.height_in_pixels) * BYTES_PER_PIXEL
}

/// We hand out BGRX without converting: that needs 32 bits per pixel, LSB first, and a TrueColor
/// visual with red in bits 16-23, green 8-15, blue 0-7.
fn check_pixel_format(setup: &xproto::Setup, screen: &xproto::Screen) -> Result<(), SourceError> {
    let depth = screen.root_depth;
    let bpp = setup.pixmap_formats.iter().find(|f| f.depth == depth).map(|f| f.bits_per_pixel);
    if bpp != Some(32) || setup.image_byte_order != ImageOrder::LSB_FIRST {
        return Err(SourceError::Unsupported(format!(
            "root depth {depth} with {bpp:?} bits per pixel, byte order {:?}; \
             only 24/32-bit depth with 32 bits per pixel, LSB first, is supported",
            setup.image_byte_order
        )));
    }
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual);
    match visual {
        Some(v) if (v.red_mask, v.green_mask, v.blue_mask) == (0xff_0000, 0xff00, 0xff) => Ok(()),
        Some(v) => Err(SourceError::Unsupported(format!(
            "root visual masks r={:#x} g={:#x} b={:#x}; only BGRX (r=0xff0000) is supported",
            v.red_mask, v.green_mask, v.blue_mask
        ))),
        None => Err(SourceError::Unsupported("root visual not found in setup".into())),
    }
}

/// A private System V shared-memory segment attached to us and to the X server.
struct ShmSegment {
    seg: shm::Seg,
    addr: *mut u8,
    size: usize,
}

// SAFETY: the mapping belongs to the process, not to a thread; `ShmSegment` is its only owner
// and hands out no aliases, so moving it to another thread (with its source) is sound.
unsafe impl Send for ShmSegment {}

impl ShmSegment {
    /// Create, map and attach a segment of `size` bytes; `None` when any step fails.
    fn create(conn: &RustConnection, size: usize) -> Option<ShmSegment> {
        // SAFETY: shmget with IPC_PRIVATE creates a fresh segment and touches no memory of ours.
        let shmid = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
        if shmid < 0 {
            return None;
        }
        // SAFETY: `shmid` is the segment just created; a null address lets the kernel choose
        // where to map it, so no existing mapping of ours is affected.
        let addr = unsafe { libc::shmat(shmid, std::ptr::null(), 0) };
        let remove = || {
            // SAFETY: marks our own segment for removal once everyone detached; the buffer
            // argument is unused for IPC_RMID.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        };
        if addr as isize == -1 {
            remove();
            return None;
        }
        let detach_local = || {
            // SAFETY: `addr` is the address shmat returned and nothing refers into it yet.
            unsafe { libc::shmdt(addr) };
        };
        let attached = conn.generate_id().ok().and_then(|seg| {
            let ok = conn.shm_attach(seg, shmid as u32, false).ok()?.check().is_ok();
            ok.then_some(seg)
        });
        // Removal now means the kernel frees the segment as soon as both we and the server
        // detach, even if this process is killed: no leaked segments.
        remove();
        match attached {
            Some(seg) => Some(ShmSegment { seg, addr: addr.cast(), size }),
            None => {
                detach_local();
                None
            }
        }
    }

    /// The first `len` bytes, copied out. Call only after the reply to a ShmGetImage into this
    /// segment arrived.
    fn copy_out(&self, len: usize) -> Vec<u8> {
        assert!(len <= self.size, "copy_out beyond the segment");
        // SAFETY: `addr..addr+size` is our live mapping (detached only in `release`, which
        // consumes self) and `len <= size`. The segment is private (IPC_PRIVATE, mode 0600, marked
        // removed right after the server attached), so only the server writes to it, and only
        // while it handles our ShmGetImage — whose reply has arrived, and the connection is
        // borrowed by us so no other request into the segment is in flight.
        let pixels = unsafe { std::slice::from_raw_parts(self.addr, len) };
        pixels.to_vec()
    }

    /// Detach from the server and unmap.
    fn release(self, conn: &RustConnection) {
        if let Ok(cookie) = conn.shm_detach(self.seg) {
            // Wait for the server to have detached before unmapping: a detach still queued
            // while the server writes would otherwise race with our unmapping — harmless to
            // us, but the round trip also surfaces a dead connection quietly.
            let _ = cookie.check();
        }
        // SAFETY: `addr` came from shmat and no slice into it outlives `copy_out`.
        unsafe { libc::shmdt(self.addr.cast()) };
    }
}
