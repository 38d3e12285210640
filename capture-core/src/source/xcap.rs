//! The portable path: the `xcap` crate (X11 through libxcb, Wayland through the screenshot portal
//! or wlroots, Windows, macOS).
//!
//! xcap picks its display from the process environment (`DISPLAY`, `WAYLAND_DISPLAY`,
//! `XDG_SESSION_TYPE`) and cannot be pointed at another one, so a process captures one session
//! with it; tests that use it set `DISPLAY` under a process-wide lock. Its monitors are RandR
//! *outputs* (CRTCs), not RandR monitors, so a `xrandr --setmonitor` split of one output shows as
//! one monitor here. It opens a connection per capture and returns RGBA, which we convert to BGRX
//! once; the X11 source is several times faster where it applies.
//!
//! xcap's `Monitor` is not `Send`, so this source keeps none: it re-enumerates per capture and
//! finds the monitor again by its xcap id.

use super::{FrameSource, SourceError, MAX_MONITORS};
use crate::frame::{Frame, MonitorInfo, Timestamp, BYTES_PER_PIXEL};

/// Captures through xcap; see the module docs.
#[derive(Debug, Default)]
pub struct XcapSource {
    /// xcap's own id of each of our monitor ids (index = our id).
    xcap_ids: Vec<u32>,
}

impl XcapSource {
    /// A source for the display named by the environment. Connects lazily.
    pub fn new() -> Self {
        Self::default()
    }
}

fn xcap_err(e: xcap::XCapError) -> SourceError {
    match e {
        xcap::XCapError::NotSupported => {
            SourceError::Unsupported("xcap: not supported here".into())
        }
        e => SourceError::Capture(format!("xcap: {e}")),
    }
}

impl FrameSource for XcapSource {
    fn name(&self) -> &'static str {
        "xcap"
    }

    fn monitors(&mut self) -> Result<Vec<MonitorInfo>, SourceError> {
        let all = xcap::Monitor::all().map_err(xcap_err)?;
        let mut infos = Vec::new();
        self.xcap_ids.clear();
        for m in all.iter().take(MAX_MONITORS) {
            let info = MonitorInfo {
                id: infos.len() as u32,
                name: m.name().map_err(xcap_err)?,
                x: m.x().map_err(xcap_err)?,
                y: m.y().map_err(xcap_err)?,
                width: m.width().map_err(xcap_err)?,
                height: m.height().map_err(xcap_err)?,
                primary: m.is_primary().map_err(xcap_err)?,
            };
            self.xcap_ids.push(m.id().map_err(xcap_err)?);
            infos.push(info);
        }
        Ok(infos)
    }

    fn capture(&mut self, monitor_id: u32) -> Result<Frame, SourceError> {
        if self.xcap_ids.is_empty() {
            self.monitors()?;
        }
        let count = self.xcap_ids.len();
        let xcap_id = *self
            .xcap_ids
            .get(monitor_id as usize)
            .ok_or(SourceError::NoSuchMonitor { id: monitor_id, count })?;
        let all = xcap::Monitor::all().map_err(xcap_err)?;
        let monitor = all
            .into_iter()
            .find(|m| m.id().ok() == Some(xcap_id))
            .ok_or(SourceError::NoSuchMonitor { id: monitor_id, count })?;
        let captured_at = Timestamp::now();
        let image = monitor.capture_image().map_err(xcap_err)?;
        let (width, height) = (image.width(), image.height());
        let mut data = image.into_raw();
        if data.len() != width as usize * height as usize * BYTES_PER_PIXEL {
            return Err(SourceError::Capture(format!(
                "xcap returned {} bytes for {width}x{height}",
                data.len()
            )));
        }
        // RGBA -> BGRX in place: swap R and B; the fourth byte carries no meaning.
        for px in data.chunks_exact_mut(BYTES_PER_PIXEL) {
            px.swap(0, 2);
        }
        Ok(Frame { width, height, stride: width as usize * BYTES_PER_PIXEL, data, captured_at })
    }
}
