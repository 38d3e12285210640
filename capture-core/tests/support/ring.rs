//! Segment headers and sealed bodies for the ring tests (included with `#[path]`). The ring
//! stores what it is given; these make that small and valid.
#![allow(dead_code)]

use rearview_capture::seal::{seal, SealBinding, TenantSecretKey};
use rearview_capture::segment::{SegmentContext, SegmentHeader, SegmentId};
use rearview_capture::{MonitorInfo, Timestamp};

pub const TENANT: &str = "contoso";
pub const DEVICE: &str = "laptop-17";

/// A header of alice's `session` on `monitor`, spanning `[start, end]` UTC micros.
pub fn header(id: SegmentId, session: &str, monitor: u32, start: i64, end: i64) -> SegmentHeader {
    SegmentHeader {
        id,
        context: SegmentContext {
            tenant: TENANT.into(),
            device: DEVICE.into(),
            user: "alice".into(),
            session: session.into(),
            monitor: MonitorInfo {
                id: monitor,
                name: format!("m{monitor}"),
                x: 0,
                y: 0,
                width: 8,
                height: 8,
                primary: monitor == 0,
            },
        },
        start: Timestamp { utc_micros: start, mono_micros: start as u64 },
        end: Timestamp { utc_micros: end, mono_micros: end as u64 },
        frame_count: 1,
        event_count: 0,
    }
}

/// The binding a segment of this tenant and device is sealed with.
pub fn binding(id: SegmentId) -> SealBinding<'static> {
    SealBinding { tenant: TENANT, device: DEVICE, segment_id: id }
}

/// `plaintext` sealed to `key` for segment `id`.
pub fn seal_bytes(key: &TenantSecretKey, id: SegmentId, plaintext: &[u8]) -> Vec<u8> {
    seal(&key.public_key(), &binding(id), plaintext).unwrap()
}

/// `len` bytes of filler, sealed to `key` for segment `id`.
pub fn sealed(key: &TenantSecretKey, id: SegmentId, len: usize) -> Vec<u8> {
    seal_bytes(key, id, &vec![0x5a; len])
}
