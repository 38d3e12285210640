//! Untrusted segments: any bytes parse to a segment or an error, never a panic; a segment that
//! parses keeps the limits its format promises, and its frames decode or fail cleanly.
//!
//! Input: the bytes of a plaintext segment, as a console sees them after opening a sealed file
//! from a device that may be compromised (seeds in `seeds/segment` are real `SegmentWriter`
//! output; `cargo test -p rearview-capture --test segment_format -- --ignored` rewrites them).
//! The same bytes also go through the sealed file header parser, the other untrusted entry
//! point of a stored segment. Frames are decoded with a decoder capped at 1024x1024 so one
//! input cannot make it allocate gigabytes: the 16384² cap is the same code with a larger bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rearview_capture::codec::Decoder;
use rearview_capture::seal::SealedHeader;
use rearview_capture::segment::{Segment, MAX_EVENTS, MAX_FRAMES};

fuzz_target!(|data: &[u8]| {
    let _ = SealedHeader::parse(data);
    let Ok(segment) = Segment::parse(data) else { return };
    let header = segment.header();
    assert_eq!(segment.frames().len(), header.frame_count as usize);
    assert_eq!(segment.events().len(), header.event_count as usize);
    assert!(header.frame_count >= 1 && header.frame_count <= MAX_FRAMES);
    assert!(header.event_count <= MAX_EVENTS);
    assert!(header.start.utc_micros <= header.end.utc_micros);
    let mut decoder = Decoder::with_max_dimensions(1024);
    for record in segment.frames() {
        match decoder.decode(record.packet) {
            Ok(frame) => {
                assert!(frame.width <= 1024 && frame.height <= 1024);
                assert_eq!(frame.data.len(), frame.width as usize * frame.height as usize * 4);
            }
            // Later deltas would decode against the wrong picture (as in decode_frames).
            Err(_) => break,
        }
    }
});
