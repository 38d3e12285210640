//! The codec on real captured frames: a private Xvfb with a terminal streaming text and one
//! being moved around, captured through the X11 source, encoded and decoded bit-exact.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rearview_capture::codec::{Decoder, Encoder, PacketKind};
use rearview_capture::source::x11::X11ShmSource;
use rearview_capture::source::FrameSource;
use rearview_capture::Frame;
use rearview_testkit::xvfb::Xvfb;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(x: &Xvfb, program: &str, args: &[&str]) -> Killed {
    Killed(
        x.command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}")),
    )
}

fn distinct_colours(f: &Frame) -> usize {
    let mut seen = std::collections::HashSet::new();
    for y in (0..f.height).step_by(3) {
        for x in (0..f.width).step_by(3) {
            seen.insert(f.rgb(x, y));
        }
    }
    seen.len()
}

#[test]
fn captured_desktop_frames_round_trip_bit_exact() {
    let x = Xvfb::start(1024, 768).unwrap();
    let _root = x.command("xsetroot").args(["-solid", "#3a6ea5"]).status();
    let _log = spawn(
        &x,
        "xterm",
        &[
            "-geometry",
            "100x30+10+10",
            "-e",
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo \"line $i: $(date +%T.%N) status ok\"; sleep 0.03; done",
        ],
    );
    let _other = spawn(&x, "xterm", &["-geometry", "40x10+600+420", "-e", "top", "-d", "0.2"]);
    let mut source = X11ShmSource::connect(x.display()).unwrap();

    // Wait until both terminals have painted something.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f = source.capture(0).unwrap();
        if distinct_colours(&f) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "terminals never appeared on {}", x.display());
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut frames = Vec::new();
    for i in 0..14 {
        if i == 7 {
            // Move the second terminal: a dragged window for the motion search.
            let _ = x.command("xdotool").args(["search", "--name", "top"]).output().map(|o| {
                if let Some(id) = String::from_utf8_lossy(&o.stdout).lines().next() {
                    let _ = x.command("xdotool").args(["windowmove", id, "533", "371"]).status();
                }
            });
        }
        frames.push(source.capture(0).unwrap());
        std::thread::sleep(Duration::from_millis(120));
    }
    // The text kept streaming: consecutive captures differ.
    assert!(frames.windows(2).any(|w| !w[0].same_pixels(&w[1])), "screen never changed");

    let mut enc = Encoder::new(frames[0].width, frames[0].height).unwrap();
    let mut dec = Decoder::new();
    let (mut raw, mut coded) = (0usize, 0usize);
    for (i, f) in frames.iter().enumerate() {
        if i % 5 == 0 {
            enc.force_keyframe();
        }
        let mut packet = Vec::new();
        let kind = enc.encode(f, &mut packet).unwrap();
        assert_eq!(kind == PacketKind::Key, i % 5 == 0, "frame {i}: {kind:?}");
        let back = dec.decode(&packet).unwrap();
        assert!(back.same_pixels(f), "captured frame {i} ({kind:?}) differs after decoding");
        raw += f.width as usize * f.height as usize * 3;
        coded += packet.len();
    }
    assert!(coded * 20 < raw, "{coded} bytes for {raw} bytes of pixels");
}
