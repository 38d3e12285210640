//! The workload generator: a real desktop on a private Xvfb doing what people do at work.
//!
//! On a flat desktop ([`DESKTOP`]) it runs, all real X clients driven by xdotool:
//!
//! * a terminal streaming log lines (five a second),
//! * an "editor" terminal being typed into (a few words a second, with the odd Return),
//! * `less` on a long generated document, scrolled a line or a page at a time,
//! * a small notes window moved across the screen every two seconds (`xdotool windowmove`),
//! * a clock ticking every second.
//!
//! [`Scene::Smooth`] draws the terminals' text antialiased (Xft) instead of in the core bitmap
//! font. With [`Scene::Video`], a video also plays in a window beside them: `ffplay` showing ffmpeg's
//! `testsrc2` pattern (moving colour bars, a counter, noise-like gradients) at 640x360, 25 fps,
//! the shape of a video call or a clip someone watches while working.
//!
//! Everything follows a fixed script keyed by a tick counter, so two runs show the same kind of
//! screen (exact pixels differ with timing: the log and clock carry wall-clock time). The screen
//! is mostly static with local changes, scrolling text and a moving window — the shape of real
//! work that capture and codec benchmarks need.
//!
//! Keys and text go to windows with `xdotool --window` (SendEvent), which the terminals accept
//! because they start with `allowSendEvents`; nothing depends on focus or a window manager.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rearview_capture::source::x11::X11ShmSource;
use rearview_capture::source::FrameSource;
use rearview_capture::Frame;
use rearview_testkit::xvfb::Xvfb;

/// Desktop colour.
pub const DESKTOP: &str = "#3a6ea5";
/// One step of the driver script.
const TICK: Duration = Duration::from_millis(250);
/// How long clients get to map their windows.
const STARTUP: Duration = Duration::from_secs(30);

/// What the desktop shows besides the office clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scene {
    /// Terminals, a document, a moving window, a clock.
    Office,
    /// The same with a 640x360 video playing in a window.
    Video,
    /// The office scene with antialiased text (DejaVu Sans Mono through Xft) instead of the
    /// core bitmap font: what most real desktops show, and far more colours.
    Smooth,
}

/// A running workload; its clients and driver stop on drop.
pub struct Workload {
    clients: Vec<Child>,
    stop: Arc<AtomicBool>,
    driver: Option<JoinHandle<()>>,
    _doc: tempfile::NamedTempFile,
}

/// Window ids the driver acts on.
struct Windows {
    editor: String,
    document: String,
    notes: String,
}

impl Workload {
    /// Start the clients on `x`, wait until their windows are mapped, start the driver.
    pub fn start(x: &Xvfb) -> anyhow::Result<Workload> {
        Self::start_scene(x, Scene::Office)
    }

    /// [`Workload::start`] with a choice of scene.
    pub fn start_scene(x: &Xvfb, scene: Scene) -> anyhow::Result<Workload> {
        let (w, h) = (x.width(), x.height());
        // The core "fixed" font is 6x13: size terminals in characters from the screen size.
        let cols = |px: u32| (px / 6).max(10);
        let rows = |px: u32| (px / 13).max(3);
        let mut doc = tempfile::NamedTempFile::new().context("temp file for the document")?;
        doc.write_all(document().as_bytes()).context("write the document")?;
        let display = x.display().to_string();

        run(x, "xsetroot", &["-solid", DESKTOP])?;
        let mut clients = Vec::new();
        let log_script = "i=0; while :; do i=$((i+1)); \
            echo \"$(date +%T) worker-$((i%4)) batch $i: processed $((i*37%1000)) records in $((i*13%97)) ms, status ok\"; \
            sleep 0.2; done";
        clients.push(xterm(
            x,
            scene,
            "log",
            &geometry(cols(w * 45 / 100), rows(h * 45 / 100), w / 50, h / 30),
            &["sh", "-c", log_script],
        )?);
        clients.push(xterm(
            x,
            scene,
            "editor",
            &geometry(cols(w * 40 / 100), rows(h * 40 / 100), w * 52 / 100, h / 30),
            &["cat"],
        )?);
        let doc_path = doc.path().to_string_lossy().into_owned();
        clients.push(xterm(
            x,
            scene,
            "document",
            &geometry(cols(w * 45 / 100), rows(h * 45 / 100), w / 50, h * 52 / 100),
            &["less", "-S", &doc_path],
        )?);
        clients.push(xterm(
            x,
            scene,
            "notes",
            &geometry(40, 8, w * 60 / 100, h * 60 / 100),
            &[
                "sh",
                "-c",
                "echo 'TODO: review Q3 numbers'; echo 'call back re: contract'; exec cat",
            ],
        )?);
        let clock_script =
            "while :; do printf '\\r %s ' \"$(date '+%a %d %b %H:%M:%S')\"; sleep 1; done";
        clients.push(xterm(
            x,
            scene,
            "clock",
            &geometry(26, 1, w.saturating_sub(180), 4),
            &["sh", "-c", clock_script],
        )?);

        let mut workload =
            Workload { clients, stop: Arc::new(AtomicBool::new(false)), driver: None, _doc: doc };
        let windows = Windows {
            editor: find_window(x, "editor")?,
            document: find_window(x, "document")?,
            notes: find_window(x, "notes")?,
        };
        for name in ["log", "clock"] {
            find_window(x, name)?;
        }
        if scene == Scene::Video {
            workload.clients.push(video(x, w * 52 / 100, h * 48 / 100)?);
            find_window(x, "video")?;
        }
        let stop = Arc::clone(&workload.stop);
        workload.driver = Some(
            std::thread::Builder::new()
                .name("workload-driver".into())
                .spawn(move || drive(&display, (w, h), &windows, &stop))
                .context("spawn the workload driver")?,
        );
        Ok(workload)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start Xvfb at `width` x `height`, run the workload, and capture `seconds * fps` frames of it
/// with the X11 SHM source at `fps`.
pub fn record_desktop(
    width: u32,
    height: u32,
    seconds: u64,
    fps: u32,
    scene: Scene,
) -> anyhow::Result<Vec<Frame>> {
    if fps == 0 {
        bail!("fps must be at least 1");
    }
    let x = Xvfb::start(width, height).context("start Xvfb for the workload")?;
    let _workload = Workload::start_scene(&x, scene)?;
    // Let the terminals fill before the first frame.
    std::thread::sleep(Duration::from_secs(1));
    let mut source = X11ShmSource::connect(x.display())?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(fps));
    let count = seconds * u64::from(fps);
    let mut frames = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for i in 0..count {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        frames.push(source.capture(0)?);
    }
    Ok(frames)
}

fn geometry(cols: u32, rows: u32, x: u32, y: u32) -> String {
    format!("{cols}x{rows}+{x}+{y}")
}

fn xterm(
    x: &Xvfb,
    scene: Scene,
    title: &str,
    geometry: &str,
    cmd: &[&str],
) -> anyhow::Result<Child> {
    let font: &[&str] = match scene {
        // Xft: grey-level antialiased glyphs, hundreds of colours on screen.
        Scene::Smooth => &["-fa", "DejaVu Sans Mono", "-fs", "8"],
        Scene::Office | Scene::Video => &[],
    };
    x.command("xterm")
        .args(["-title", title, "-class", "RearviewWorkload", "-geometry", geometry])
        .args(font)
        .args(["-bg", "#fdfdf5", "-fg", "#202020", "-xrm", "*allowSendEvents: true"])
        .arg("-e")
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start xterm (install the Debian package `xterm`)")
}

/// `ffplay` of a generated 640x360 test video at (`left`, `top`), without border or sound.
fn video(x: &Xvfb, left: u32, top: u32) -> anyhow::Result<Child> {
    x.command("ffplay")
        .env("SDL_AUDIODRIVER", "dummy")
        .args(["-loglevel", "error", "-an", "-noborder", "-window_title", "video"])
        .args(["-left", &left.to_string(), "-top", &top.to_string()])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start ffplay (install the Debian package `ffmpeg`)")
}

fn run(x: &Xvfb, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = x
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program} (scripts/setup-debian.sh installs it)"))?;
    if !out.status.success() {
        bail!("{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find_window(x: &Xvfb, title: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + STARTUP;
    loop {
        let out = x
            .command("xdotool")
            .args(["search", "--onlyvisible", "--name", &format!("^{title}$")])
            .output();
        if let Ok(out) = out {
            if let Some(id) = String::from_utf8_lossy(&out.stdout).lines().next() {
                return Ok(id.trim().to_string());
            }
        }
        if Instant::now() > deadline {
            bail!("window {title:?} did not appear within {STARTUP:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The driver: one step per tick until stopped. Failures of single xdotool calls are ignored
/// (a busy server may refuse one); the workload just goes on.
fn drive(display: &str, (w, h): (u32, u32), win: &Windows, stop: &AtomicBool) {
    const WORDS: &[&str] = &[
        "the",
        "quarterly",
        "report",
        "shows",
        "revenue",
        "growth",
        "of",
        "12%",
        "driven",
        "by",
        "enterprise",
        "renewals;",
        "churn",
        "fell",
        "to",
        "3.1%",
        "and",
        "pipeline",
        "coverage",
        "is",
        "healthy.",
        "Next",
        "steps:",
        "finalize",
        "pricing",
        "with",
        "legal",
        "by",
        "Friday.",
    ];
    let xdotool = |args: &[&str]| {
        let _ = Command::new("xdotool")
            .env("DISPLAY", display)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    let mut tick: u64 = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Typing: a word per tick, a line break every 12 words.
        let word = WORDS[(tick as usize) % WORDS.len()];
        xdotool(&["type", "--window", &win.editor, "--delay", "40", &format!("{word} ")]);
        if tick % 12 == 11 {
            xdotool(&["key", "--window", &win.editor, "Return"]);
        }
        // Reading: a line down every second, a page every 10 s.
        if tick % 4 == 2 {
            xdotool(&["key", "--window", &win.document, "Down"]);
        }
        if tick % 40 == 39 {
            xdotool(&["key", "--window", &win.document, "space"]);
        }
        // Moving the notes window around a rectangle every 2 s.
        if tick.is_multiple_of(8) {
            let step = (tick / 8) % 8;
            let (px, py) =
                [(60, 60), (65, 60), (70, 60), (75, 60), (75, 65), (70, 65), (65, 65), (60, 65)]
                    [step as usize];
            let (nx, ny) = ((w * px / 100).to_string(), (h * py / 100).to_string());
            xdotool(&["windowmove", &win.notes, &nx, &ny]);
        }
        tick += 1;
        next += TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
}

/// A long, deterministic, document-like text to scroll through.
fn document() -> String {
    const SENTENCES: &[&str] = &[
        "Section {n}: The parties agree that deliverables are accepted within ten business days.",
        "Payment terms are net thirty; late payments accrue interest at one percent per month.",
        "Confidential information excludes anything publicly known through no fault of the recipient.",
        "Either party may terminate for convenience with ninety days' written notice.",
        "Table {n}: region EMEA, units 1{n}40, revenue 2{n}9k, margin 3{n}%.",
        "",
        "The supplier shall maintain insurance coverage of at least two million per occurrence.",
        "All notices must be delivered in writing to the addresses listed in Schedule B.",
    ];
    let mut s = String::new();
    for n in 0..4000usize {
        let line =
            SENTENCES[(n * 7 + n / 5) % SENTENCES.len()].replace("{n}", &(n % 10).to_string());
        s.push_str(&format!("{:5}  {line}\n", n + 1));
    }
    s
}
