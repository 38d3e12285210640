//! Segments: what goes in comes out (frames pixel-exact with their timestamps, events), and
//! the parser turns every malformed input into an error, never a panic.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rearview_capture::codec::PacketKind;
use rearview_capture::segment::{
    Segment, SegmentContext, SegmentError, SegmentId, SegmentWriter, MAX_NAME_LEN,
};
use rearview_capture::{Frame, InputEvent, InputKind, MonitorInfo, Timestamp};

const W: u32 = 96;
const H: u32 = 64;

fn context() -> SegmentContext {
    SegmentContext {
        tenant: "contoso".into(),
        device: "laptop-17".into(),
        user: "alice@contoso.example".into(),
        session: "c2".into(),
        monitor: MonitorInfo {
            id: 1,
            name: "DP-1".into(),
            x: 1920,
            y: 0,
            width: W,
            height: H,
            primary: false,
        },
    }
}

fn at(i: u64) -> Timestamp {
    Timestamp {
        utc_micros: 1_700_000_000_000_000 + i as i64 * 1_000_000,
        mono_micros: 5_000_000 + i * 1_000_000,
    }
}

/// A picture that changes a little every frame: a moving block on a gradient, like a window
/// being dragged, plus one frame identical to the one before.
fn frame(i: u64) -> Frame {
    let mut f = Frame::black(W, H, at(i));
    let shown = if i == 3 { 2 } else { i };
    for y in 0..H {
        for x in 0..W {
            let p = &mut f.row_mut(y)[x as usize * 4..x as usize * 4 + 4];
            let inside = (x as u64).wrapping_sub(shown * 7) < 20 && y > 10 && y < 40;
            p[0] = if inside { 200 } else { (x * 2) as u8 };
            p[1] = if inside { 30 } else { (y * 3) as u8 };
            p[2] = (shown * 11) as u8;
        }
    }
    f
}

fn events() -> Vec<InputEvent> {
    vec![
        InputEvent {
            at: at(0),
            kind: InputKind::ActiveWindow {
                title: "roadmap.docx — Writer".into(),
                app: "soffice".into(),
                pid: Some(4242),
            },
        },
        InputEvent {
            at: at(1),
            kind: InputKind::KeyPress { key: "KeyA".into(), text: Some("a".into()) },
        },
        InputEvent { at: at(1), kind: InputKind::KeyRelease { key: "KeyA".into() } },
        InputEvent { at: at(2), kind: InputKind::PointerMove { x: 10.5, y: -3.0 } },
        InputEvent { at: at(5), kind: InputKind::Wheel { dx: 0, dy: -2 } },
    ]
}

fn build(frames: u64) -> (Vec<u8>, SegmentId) {
    let mut w = SegmentWriter::new(context()).unwrap();
    for i in 0..frames {
        w.push_frame(&frame(i)).unwrap();
    }
    for e in events() {
        w.push_event(e).unwrap();
    }
    let id = w.id();
    let done = w.finish().unwrap();
    (done.plaintext.to_vec(), id)
}

#[test]
fn frames_and_events_roundtrip() {
    let mut w = SegmentWriter::new(context()).unwrap();
    let kinds: Vec<PacketKind> = (0..6).map(|i| w.push_frame(&frame(i)).unwrap()).collect();
    assert_eq!(kinds[0], PacketKind::Key);
    for e in events() {
        w.push_event(e).unwrap();
    }
    assert!(w.is_due(at(10), std::time::Duration::from_secs(10)));
    assert!(!w.is_due(at(9), std::time::Duration::from_secs(10)));
    let done = w.finish().unwrap();
    assert_eq!(done.header.frame_count, 6);
    assert_eq!(done.header.event_count, 5);
    assert_eq!(done.header.start, at(0));
    assert_eq!(done.header.end, at(5));

    let seg = Segment::parse(&done.plaintext).unwrap();
    assert_eq!(seg.header(), &done.header);
    assert_eq!(seg.frames().len(), 6);
    assert_eq!(seg.frames()[0].kind, PacketKind::Key);
    assert_eq!(seg.frames().iter().map(|f| f.kind).collect::<Vec<_>>(), kinds);
    let decoded: Vec<Frame> = seg.decode_frames().collect::<Result<_, _>>().unwrap();
    for (i, f) in decoded.iter().enumerate() {
        assert!(f.same_pixels(&frame(i as u64)), "frame {i} differs");
        assert_eq!(f.captured_at, at(i as u64));
    }
    assert!(seg.events() == events().as_slice());
}

/// Replaces the first `from` in `bytes` with `to` (same length), as a newer device's writer
/// or a damaged file would have written it.
fn patched(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// A newer device adds an event kind: an older reader keeps every frame and every event,
/// holds the unknown one as it came, and writes it back byte for byte.
#[test]
fn an_unknown_event_kind_keeps_the_segment() {
    let (bytes, _) = build(3);
    let newer = patched(&bytes, r#""type":"wheel""#, r#""type":"swipe""#);
    let seg = Segment::parse(&newer).expect("a segment with an unknown event kind parses");
    assert_eq!(seg.frames().len(), 3);
    assert_eq!(seg.decode_frames().filter(|f| f.is_ok()).count(), 3);
    assert_eq!(seg.events().len(), events().len());
    let unknown = &seg.events()[4];
    assert_eq!(unknown.kind.tag(), "swipe");
    let InputKind::Other(raw) = &unknown.kind else { panic!("{unknown:?}") };
    assert_eq!(raw["dy"], -2);
    assert_eq!(unknown.at, at(5));
    let json = serde_json::to_string(unknown).unwrap();
    assert!(json.contains(r#""type":"swipe""#) && json.contains(r#""dy":-2"#), "{json}");
    assert!(seg.events()[..4] == events()[..4]);
    assert!(!format!("{unknown:?}").contains("dy"), "Debug shows only the tag");
}

/// A known kind with a broken field is damage, not a newer kind: refused, naming the event.
#[test]
fn a_known_event_kind_with_broken_fields_is_refused() {
    let (bytes, _) = build(3);
    let broken = patched(&bytes, r#""key":"KeyA","text""#, r#""kez":"KeyA","text""#);
    match Segment::parse(&broken) {
        Err(e @ SegmentError::BadEventKind { index: 1, .. }) => {
            assert!(e.to_string().contains("\"key_press\" has missing or mistyped"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_segment_decodes_alone_after_a_previous_one() {
    // A second segment of the same monitor starts with its own keyframe.
    let (first, _) = build(4);
    let (second, _) = build(2);
    assert_ne!(first, second);
    let seg = Segment::parse(&second).unwrap();
    assert_eq!(seg.frames()[0].kind, PacketKind::Key);
    assert_eq!(seg.decode_frames().filter(|f| f.is_ok()).count(), 2);
}

#[test]
fn writer_refuses_bad_input_without_losing_the_segment() {
    let mut long = context();
    long.user = "x".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(
        SegmentWriter::new(long),
        Err(SegmentError::NameTooLong { field: "user", .. })
    ));
    let mut flat = context();
    flat.monitor.height = 0;
    assert!(matches!(SegmentWriter::new(flat), Err(SegmentError::BadGeometry { .. })));

    let w = SegmentWriter::new(context()).unwrap();
    assert!(matches!(w.finish(), Err(SegmentError::NoFrames)));

    let mut w = SegmentWriter::new(context()).unwrap();
    w.push_frame(&frame(0)).unwrap();
    let wrong_size = Frame::black(W + 1, H, at(1));
    assert!(matches!(w.push_frame(&wrong_size), Err(SegmentError::Codec(_))));
    w.push_frame(&frame(1)).unwrap();
    let done = w.finish().unwrap();
    let seg = Segment::parse(&done.plaintext).unwrap();
    let decoded: Vec<Frame> = seg.decode_frames().collect::<Result<_, _>>().unwrap();
    assert_eq!(decoded.len(), 2);
    assert!(decoded[1].same_pixels(&frame(1)));
}

#[test]
fn parser_names_what_is_wrong() {
    let (bytes, _) = build(3);
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(Segment::parse(&bad), Err(SegmentError::BadMagic(_))));
    let mut bad = bytes.clone();
    bad[4] = 2;
    assert!(matches!(Segment::parse(&bad), Err(SegmentError::UnsupportedVersion(2))));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(Segment::parse(&longer), Err(SegmentError::TrailingBytes(1))));
    let err = Segment::parse(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // Make the first frame claim to be a delta.
    let header_len = bytes.len()
        - Segment::parse(&bytes)
            .unwrap()
            .frames()
            .iter()
            .map(|f| f.packet.len() + 21)
            .sum::<usize>()
        - events().iter().map(|e| serde_json::to_vec(e).unwrap().len() + 4).sum::<usize>();
    let mut delta_first = bytes.clone();
    delta_first[header_len + 16] = b'D';
    assert!(matches!(Segment::parse(&delta_first), Err(SegmentError::FirstFrameNotKeyframe)));
    // A huge frame count is refused before anything is allocated for it.
    let mut many = bytes.clone();
    many[header_len - 8..header_len - 4].copy_from_slice(&5_000u32.to_le_bytes());
    assert!(Segment::parse(&many).is_err());
}

#[test]
fn every_truncation_is_an_error() {
    let (bytes, _) = build(3);
    for cut in 0..bytes.len() {
        assert!(Segment::parse(&bytes[..cut]).is_err(), "prefix of {cut} bytes parsed");
    }
}

#[test]
fn debug_output_shows_no_content() {
    let mut w = SegmentWriter::new(context()).unwrap();
    w.push_frame(&frame(0)).unwrap();
    w.push_event(events().remove(1)).unwrap();
    let done = w.finish().unwrap();
    let seg = Segment::parse(&done.plaintext).unwrap();
    for text in [format!("{done:?}"), format!("{seg:?}"), format!("{:?}", seg.events())] {
        assert!(!text.contains("KeyA") && !text.contains("\"a\""), "{text}");
    }
}

/// Rewrites the seeds of the `segment` fuzz target (`fuzz/seeds/segment`) from real writer
/// output: run with `--ignored` after a format change.
#[test]
#[ignore = "writes fuzz seeds into the source tree"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new("fuzz/seeds/segment");
    std::fs::create_dir_all(dir).unwrap();
    for frames in [1, 3, 6] {
        let (bytes, _) = build(frames);
        std::fs::write(dir.join(format!("segment-{W}x{H}-{frames}-frames")), bytes).unwrap();
    }
    let mut w = SegmentWriter::new(context()).unwrap();
    w.push_frame(&frame(0)).unwrap();
    let done = w.finish().unwrap();
    std::fs::write(dir.join(format!("segment-{W}x{H}-no-events")), &done.plaintext[..]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs beside them, so name the committed file directly
        // (cargo runs tests from the package root).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/segment_format.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Damaged bytes never panic the parser or the decoder.
    #[test]
    fn damaged_segments_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (mut bytes, _) = build(3);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(seg) = Segment::parse(&bytes) {
            for f in seg.decode_frames() {
                let _ = f;
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_magic = b"RVSG\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        prop_assert!(Segment::parse(&bytes).is_err() || bytes.starts_with(b"RVSG"));
        let _ = Segment::parse(&with_magic);
    }
}
