//! The worker process itself (`rearviewd __worker`): capture loop, input, segment cutting.

use std::io::{self, BufRead, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rearview_capture::input::window::ActiveWindowWatcher;
use rearview_capture::input::x11::X11InputSource;
use rearview_capture::input::InputSource;
use rearview_capture::segment::{SegmentContext, SegmentWriter};
use rearview_capture::source::x11::X11ShmSource;
use rearview_capture::source::FrameSource;
use rearview_capture::{InputEvent, MonitorInfo};
use zeroize::Zeroizing;

use super::{
    write_message, Control, WorkerMessage, WorkerSpec, WorkerStatus, MAX_SEGMENT_PLAINTEXT,
};

/// How long to wait before trying an unreachable display again.
const RECONNECT: Duration = Duration::from_secs(2);
/// Longest time between two status messages while capturing.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Room kept for the segment header (five names of at most 256 bytes and fixed fields).
const HEADER_ROOM: usize = 4096;

/// The most one frame of `monitor` can add to a segment: its record and a codec packet no
/// larger than the raw pixels plus the packet's own framing.
fn frame_bound(monitor: &MonitorInfo) -> usize {
    4 * monitor.width as usize * monitor.height as usize + 4096
}

/// Whether `writer` must be closed before it takes another frame of `monitor`, so the segment
/// stays within what the daemon accepts ([`MAX_SEGMENT_PLAINTEXT`]).
fn full_for_frame(writer: &SegmentWriter, monitor: &MonitorInfo) -> bool {
    writer.frame_count() > 0
        && writer.len_bytes() + frame_bound(monitor) + HEADER_ROOM > MAX_SEGMENT_PLAINTEXT
}

/// Runs the worker on this process's stdin/stdout; returns the exit code.
pub fn main() -> i32 {
    let stdin = io::stdin();
    let mut first = String::new();
    if stdin.lock().read_line(&mut first).is_err() {
        return 2;
    }
    let spec = match serde_json::from_str::<Control>(&first) {
        Ok(Control::Start(spec)) => spec,
        _ => {
            tracing::error!("capture worker: the first control line must be a start");
            return 2;
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Control>(&line) {
                Ok(c) => {
                    if tx.send(c).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "capture worker: bad control line ignored"),
            }
        }
        let _ = tx.send(Control::Stop);
    });
    let mut out = io::stdout().lock();
    match Worker::new(spec).run(&rx, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "capture worker: cannot reach the daemon");
            1
        }
    }
}

struct Open {
    monitor: MonitorInfo,
    writer: Option<SegmentWriter>,
}

struct Worker {
    spec: WorkerSpec,
    fps_milli: u32,
    source: Option<X11ShmSource>,
    open: Vec<Open>,
    events: Option<Receiver<InputEvent>>,
    inputs: Vec<Box<dyn InputSource>>,
    status: WorkerStatus,
    frame_ms: Vec<f64>,
    notice_sent: bool,
    /// Status also goes out periodically, so long segments do not leave the daemon blind.
    last_status: Instant,
}

impl Worker {
    fn new(spec: WorkerSpec) -> Self {
        let fps_milli = spec.fps_milli;
        Self {
            spec,
            fps_milli,
            source: None,
            open: Vec::new(),
            events: None,
            inputs: Vec::new(),
            status: WorkerStatus { state: "starting".into(), fps_milli, ..Default::default() },
            frame_ms: Vec::new(),
            notice_sent: false,
            last_status: Instant::now(),
        }
    }

    fn run(mut self, control: &Receiver<Control>, out: &mut impl Write) -> io::Result<()> {
        self.send_status(out)?;
        let mut next = Instant::now();
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let timeout = if self.fps_milli == 0 { Duration::from_secs(3600) } else { wait };
            match control.recv_timeout(timeout) {
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.flush(out)?;
                    self.stop_inputs();
                    return Ok(());
                }
                Ok(Control::Rate { fps_milli }) => {
                    if fps_milli == 0 && self.fps_milli != 0 {
                        self.flush(out)?;
                        self.status.state = "paused".into();
                    }
                    self.fps_milli = fps_milli;
                    self.status.fps_milli = fps_milli;
                    self.send_status(out)?;
                    next = Instant::now();
                    continue;
                }
                Ok(Control::Start(_)) => continue,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.fps_milli == 0 {
                continue;
            }
            let interval = Duration::from_micros(1_000_000_000 / u64::from(self.fps_milli));
            next += interval;
            if next < Instant::now() {
                // Fell behind (slow capture, suspend): skip ahead rather than burst.
                next = Instant::now() + interval;
            }
            self.tick(out)?;
        }
    }

    fn tick(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.source.is_none() && !self.connect(out)? {
            return Ok(());
        }
        self.drain_events();
        let segment_len = Duration::from_secs(u64::from(self.spec.segment_secs.max(1)));
        let mut failure = None;
        for i in 0..self.open.len() {
            let started = Instant::now();
            let id = self.open[i].monitor.id;
            let frame = match self.source.as_mut().map(|s| s.capture(id)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    failure = Some((e.is_retryable(), e.to_string()));
                    break;
                }
                None => return Ok(()),
            };
            if frame.width != self.open[i].monitor.width
                || frame.height != self.open[i].monitor.height
            {
                failure = Some((true, "monitor geometry changed".to_string()));
                break;
            }
            let monitor = &self.open[i].monitor;
            if self.open[i].writer.as_ref().is_some_and(|w| {
                w.is_due(frame.captured_at, segment_len) || full_for_frame(w, monitor)
            }) {
                self.finish(i, out)?;
            }
            if self.open[i].writer.is_none() {
                self.open[i].writer = self.new_writer(&self.open[i].monitor.clone());
            }
            let Some(writer) = self.open[i].writer.as_mut() else { continue };
            match writer.push_frame(&frame) {
                Ok(_) => {
                    self.status.frames += 1;
                    self.frame_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                Err(e) => {
                    // A full segment is closed early; anything else is reported.
                    tracing::warn!(error = %e, "capture worker: frame not stored");
                    self.status.error = Some(format!("encoder: {e}"));
                    self.finish(i, out)?;
                }
            }
        }
        match failure {
            None => {
                if self.status.state != "capturing" || self.last_status.elapsed() >= STATUS_EVERY {
                    self.status.state = "capturing".into();
                    self.status.error = None;
                    self.send_status(out)?;
                }
                if !self.notice_sent {
                    self.notice_sent = true;
                    if let Some(text) = self.spec.notice.clone() {
                        std::thread::spawn(move || crate::notice::show_blocking(&text));
                    }
                }
            }
            Some((_, error)) => {
                // Close what we have, re-enumerate on the next tick: monitors may have changed
                // or the display gone away.
                tracing::warn!(error, "capture worker: capture failed");
                self.flush(out)?;
                self.source = None;
                self.status.state = "capture_failing".into();
                self.status.error = Some(error);
                self.send_status(out)?;
            }
        }
        Ok(())
    }

    /// Connects the frame source and input; `false` when the display is not reachable yet.
    fn connect(&mut self, out: &mut impl Write) -> io::Result<bool> {
        let dpy = self.spec.display.clone();
        let monitors = X11ShmSource::connect(&dpy).and_then(|mut s| {
            let m = s.monitors()?;
            Ok((s, m))
        });
        let (source, monitors) = match monitors {
            Ok(v) => v,
            Err(e) => {
                if self.status.state != "display_unreachable" {
                    tracing::warn!(display = %dpy, error = %e, "capture worker: display unreachable");
                    self.status.state = "display_unreachable".into();
                    self.status.error = Some(e.to_string());
                    self.send_status(out)?;
                }
                std::thread::sleep(RECONNECT);
                return Ok(false);
            }
        };
        let max = usize::from(self.spec.max_monitors.max(1));
        self.open =
            monitors.into_iter().take(max).map(|m| Open { monitor: m, writer: None }).collect();
        self.status.monitors = self.open.len() as u32;
        self.source = Some(source);
        if self.inputs.is_empty() {
            self.start_inputs();
        }
        Ok(true)
    }

    fn start_inputs(&mut self) {
        let (tx, rx) = rearview_capture::input::channel();
        let display = &self.spec.display;
        let mut names = Vec::new();
        match X11InputSource::start(display, tx.clone()) {
            Ok(s) => {
                names.push(s.name());
                self.inputs.push(Box::new(s));
            }
            Err(e) => names.push(report_unavailable("input unavailable", &e)),
        }
        match ActiveWindowWatcher::start(display, tx) {
            Ok(s) => {
                names.push(s.name());
                self.inputs.push(Box::new(s));
            }
            Err(e) => names.push(report_unavailable("window tracking unavailable", &e)),
        }
        self.status.input = names.join(", ");
        self.events = Some(rx);
    }

    fn stop_inputs(&mut self) {
        for s in &mut self.inputs {
            s.stop();
        }
    }

    fn drain_events(&mut self) {
        let Some(rx) = &self.events else { return };
        while let Ok(event) = rx.try_recv() {
            // Every monitor's segment carries the session's events, so each decodes alone
            // with the keys and windows of its span.
            for open in &mut self.open {
                if let Some(w) = open.writer.as_mut() {
                    // A burst of events may not push the segment past what can be sent; the
                    // next frame closes it anyway.
                    let room = MAX_SEGMENT_PLAINTEXT.saturating_sub(HEADER_ROOM);
                    if w.len_bytes() + rearview_capture::segment::MAX_EVENT_LEN > room {
                        tracing::warn!("capture worker: segment full, event not stored");
                        continue;
                    }
                    if let Err(e) = w.push_event(event.clone()) {
                        tracing::warn!(error = %e, "capture worker: event not stored");
                    }
                }
            }
        }
    }

    fn new_writer(&mut self, monitor: &MonitorInfo) -> Option<SegmentWriter> {
        let context = SegmentContext {
            tenant: self.spec.tenant.clone(),
            device: self.spec.device.clone(),
            user: self.spec.user.clone(),
            session: self.spec.session.clone(),
            monitor: monitor.clone(),
        };
        match SegmentWriter::new(context) {
            Ok(w) => Some(w),
            Err(e) => {
                self.status.error = Some(format!("segment: {e}"));
                None
            }
        }
    }

    fn finish(&mut self, i: usize, out: &mut impl Write) -> io::Result<()> {
        let Some(writer) = self.open[i].writer.take() else { return Ok(()) };
        if writer.frame_count() == 0 {
            return Ok(());
        }
        match writer.finish() {
            Ok(done) if done.plaintext.len() > MAX_SEGMENT_PLAINTEXT => {
                // Only a single frame larger than that gets here (a monitor beyond 16
                // megapixels of noise): sending it would break the protocol.
                tracing::warn!(
                    bytes = done.plaintext.len(),
                    "capture worker: segment too large, dropped"
                );
                self.status.error = Some(format!(
                    "a segment of {} bytes exceeds the {MAX_SEGMENT_PLAINTEXT} bytes that can be sent; dropped",
                    done.plaintext.len()
                ));
                self.send_status(out)
            }
            Ok(done) => {
                write_message(
                    out,
                    &WorkerMessage::Segment(Zeroizing::new(done.plaintext.to_vec())),
                )?;
                self.status.segments += 1;
                self.status.ms_per_frame = median(&mut self.frame_ms);
                self.frame_ms.clear();
                self.send_status(out)
            }
            Err(e) => {
                tracing::warn!(error = %e, "capture worker: segment could not be finished");
                Ok(())
            }
        }
    }

    /// Finishes and sends every open segment.
    fn flush(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.drain_events();
        for i in 0..self.open.len() {
            self.finish(i, out)?;
        }
        Ok(())
    }

    fn send_status(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.last_status = Instant::now();
        write_message(out, &WorkerMessage::Status(self.status.clone()))
    }
}

fn report_unavailable(what: &'static str, e: &dyn std::fmt::Display) -> &'static str {
    tracing::warn!(error = %e, "capture worker: {what}");
    what
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}
