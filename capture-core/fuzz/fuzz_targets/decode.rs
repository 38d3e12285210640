//! Untrusted codec packets: any sequence of packets decodes to frames or errors, never a panic,
//! and a decoded frame always has the size its stream declared.
//!
//! Input: packets, each prefixed by its length as u16 LE (seeds in `seeds/decode` are real
//! encoder output in this framing). The decoder is capped at 1024x1024 so one input cannot
//! make it allocate gigabytes: the 16384² cap is the same code with a larger bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rearview_capture::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::with_max_dimensions(1024);
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let packet = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        if let Ok(frame) = decoder.decode(packet) {
            assert!(
                frame.width >= 1
                    && frame.width <= 1024
                    && frame.height >= 1
                    && frame.height <= 1024
            );
            assert_eq!(frame.data.len(), frame.width as usize * frame.height as usize * 4);
        }
    }
});
