//! Segments: a few seconds (default [`DEFAULT_SEGMENT_DURATION`], 10 s) of one monitor of one
//! session — the codec packets of its frames, the input and window events of that span, and a
//! header saying whose screen it is. A segment is the unit of sealing, storage, eviction and
//! upload, so it must decode on its own: its first frame is always a keyframe.
//!
//! The plaintext form described here exists only in memory: [`SegmentWriter::finish`] hands it
//! out in a [`Zeroizing`] buffer that the caller seals (see [`crate::seal`]) and drops. The
//! parser ([`Segment::parse`]) reads *untrusted* bytes — a segment opened on the console came
//! from a device that may be compromised — so every count and length is checked against what
//! is left before anything is allocated, and it never panics. `fuzz/fuzz_targets/segment.rs`
//! (`cargo +nightly fuzz run segment`) holds it to that, seeded with real writer output.
//!
//! # Format, version 1
//!
//! All integers little-endian. `str` is `u16 length || UTF-8 bytes`, at most
//! [`MAX_NAME_LEN`] bytes. Nothing may follow the last event. The limits a reader enforces:
//!
//! ```text
//! MAX_NAME_LEN     256 bytes                  any str field
//! MAX_FRAMES       6,000                      frame records (10 s at 60 fps, with margin)
//! MAX_EVENTS       100,000                    event records
//! MAX_PACKET_LEN   16384 * 16384 * 4 + 4096   one codec packet (a raw 16384² BGRX frame + slack)
//! MAX_EVENT_LEN    65,536 bytes               one event's JSON
//! dimensions       1..=16384 on each side
//! ```
//!
//! ```text
//! field              size   purpose
//! ---------------------------------------------------------------------------------------------
//! magic              4      "RVSG": refuses to parse something that is not a segment
//! version            1      1; a reader refuses versions it does not know
//! segment_id         16     random 128-bit id: file name in the ring, upload name, HPKE info
//! tenant             str    tenant the device is enrolled in (binds the segment to its owner)
//! device             str    device id given at enrollment
//! user               str    principal name of the captured user (what the approval names)
//! session            str    graphical session id (logind), so clips can follow one session
//! monitor.id         u32    monitor index within the session's source
//! monitor.name       str    output name ("DP-1"), for the reviewer
//! monitor.x, .y      i32×2  position in the screen, to lay out several monitors side by side
//! monitor.width      u32    frame width in pixels, 1..=16384; every frame has this size
//! monitor.height     u32    frame height in pixels, 1..=16384
//! monitor.primary    u8     0 or 1
//! start.utc_micros   i64    earliest timestamp of any frame or event in the segment
//! start.mono_micros  u64    the same instant on the monotonic clock
//! end.utc_micros     i64    latest timestamp of any frame or event (>= start)
//! end.mono_micros    u64
//! frame_count        u32    1..=MAX_FRAMES frame records follow
//! event_count        u32    0..=MAX_EVENTS event records follow the frames
//!
//! frame record (frame_count times, in capture order; the first is a keyframe):
//! at.utc_micros      i64    when the frame was captured (the codec keeps no time)
//! at.mono_micros     u64
//! kind               u8     'K' keyframe, 'D' delta, 'S' same as previous: lets a reader
//!                           check the keyframe rule and skip without decoding
//! packet_len         u32    length of the codec packet, <= MAX_PACKET_LEN
//! packet             ...    one packet of crate::codec, opaque here
//!
//! event record (event_count times, in arrival order):
//! len                u32    length of the JSON, <= MAX_EVENT_LEN
//! json               ...    one crate::InputEvent as serde JSON (schema, units and clocks:
//!                           crate::event); self-describing, so adding an event kind does not
//!                           need a new segment version: a reader keeps kinds it does not know
//!                           as raw JSON (InputKind::Other) and still reads the whole segment
//! ```

mod wire;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::codec::{CodecError, Decoder, Encoder, PacketKind};
use crate::{Frame, InputEvent, MonitorInfo, Timestamp};

pub use wire::WireError;
pub(crate) use wire::{put_i64, put_str, put_u32, put_u64, put_u8, Reader};

/// First bytes of every plaintext segment.
pub const MAGIC: [u8; 4] = *b"RVSG";
/// The format version this build writes and the only one it reads.
pub const VERSION: u8 = 1;
/// How long a segment lasts unless policy says otherwise.
pub const DEFAULT_SEGMENT_DURATION: Duration = Duration::from_secs(10);
/// Longest tenant, device, user, session or monitor name.
pub const MAX_NAME_LEN: usize = 256;
/// Most frames in one segment: 10 s at 60 fps with a wide margin.
pub const MAX_FRAMES: u32 = 6_000;
/// Most events in one segment (pointer moves are coalesced to 30/s by the sources).
pub const MAX_EVENTS: u32 = 100_000;
/// Largest codec packet: a 16384x16384 BGRX frame that did not compress at all, plus slack.
pub const MAX_PACKET_LEN: usize = 16384 * 16384 * 4 + 4096;
/// Largest JSON of one event (window titles are the long ones).
pub const MAX_EVENT_LEN: usize = 64 * 1024;

const MAX_DIMENSION: u32 = 16384;
/// Smallest possible frame record: timestamp, kind, length, empty packet.
const MIN_FRAME_RECORD: usize = 8 + 8 + 1 + 4;
const MIN_EVENT_RECORD: usize = 4;

/// What went wrong building or reading a segment. Only [`SegmentError::Random`] can succeed on
/// a retry; everything else is about the data (see [`SegmentError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("not a segment: magic {0:02x?} is not \"RVSG\"")]
    BadMagic([u8; 4]),
    #[error("segment format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("segment is malformed: {0}")]
    Malformed(#[from] WireError),
    #[error("{field} is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong { field: &'static str, len: usize },
    #[error("monitor geometry {width}x{height} is outside 1..={MAX_DIMENSION} on each side")]
    BadGeometry { width: u32, height: u32 },
    #[error("segment has no frames; a segment must start with a keyframe")]
    NoFrames,
    #[error("segment's first frame is not a keyframe, so it cannot decode alone")]
    FirstFrameNotKeyframe,
    #[error("segment is full: {what} would exceed {max}; finish it and start a new one")]
    Full { what: &'static str, max: u64 },
    #[error("segment claims start {start} after end {end} (UTC microseconds)")]
    BadTimeRange { start: i64, end: i64 },
    #[error("{0} bytes follow the last event record")]
    TrailingBytes(usize),
    #[error("event record {index} is not a valid input event: {source}")]
    BadEvent { index: usize, source: serde_json::Error },
    #[error("event record {index}: {source}")]
    BadEventKind { index: usize, source: crate::event::KindError },
    #[error("decoded frame {index} is {got_width}x{got_height}, the header says {width}x{height}")]
    FrameSize { index: usize, width: u32, height: u32, got_width: u32, got_height: u32 },
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("the system random generator failed; try again")]
    Random,
}

impl SegmentError {
    /// Whether the same call could succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SegmentError::Random)
    }
}

/// A segment's random 128-bit name. Not secret: it appears in file names and upload requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId([u8; 16]);

impl SegmentId {
    /// A fresh id from the system CSPRNG.
    pub fn random() -> Result<Self, SegmentError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| SegmentError::Random)?;
        Ok(Self(bytes))
    }
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({self})")
    }
}

/// The id is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment id must be 32 hex digits, got {0:?}")]
pub struct ParseSegmentIdError(String);

impl FromStr for SegmentId {
    type Err = ParseSegmentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseSegmentIdError(s.to_owned()))?;
        Ok(Self(bytes))
    }
}

/// Who and what a segment records; fixed for the whole segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentContext {
    pub tenant: String,
    pub device: String,
    /// Principal name of the captured user.
    pub user: String,
    pub session: String,
    pub monitor: MonitorInfo,
}

/// Everything a segment says about itself, readable without decoding a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub id: SegmentId,
    pub context: SegmentContext,
    /// Earliest timestamp of any frame or event.
    pub start: Timestamp,
    /// Latest timestamp of any frame or event.
    pub end: Timestamp,
    pub frame_count: u32,
    pub event_count: u32,
}

/// A closed segment: its header and its plaintext bytes, wiped from memory on drop.
pub struct FinishedSegment {
    pub header: SegmentHeader,
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for FinishedSegment {
    // The plaintext is evidence: only its size shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinishedSegment")
            .field("header", &self.header)
            .field("plaintext_bytes", &self.plaintext.len())
            .finish()
    }
}

/// Builds one segment in memory: encodes frames as they come, serializes events, and lays out
/// the bytes on [`finish`](SegmentWriter::finish).
pub struct SegmentWriter {
    id: SegmentId,
    context: SegmentContext,
    encoder: Encoder,
    /// Frame records, already in their final layout.
    frames: Zeroizing<Vec<u8>>,
    /// Event records, already in their final layout.
    events: Zeroizing<Vec<u8>>,
    frame_count: u32,
    event_count: u32,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    /// Monotonic time of the first frame: segment length is measured on this clock so that a
    /// wall-clock step does not cut a segment short or make it run forever.
    first_frame_mono: Option<u64>,
    last_frame_mono: u64,
}

impl fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("id", &self.id)
            .field("frames", &self.frame_count)
            .field("events", &self.event_count)
            .finish_non_exhaustive()
    }
}

impl SegmentWriter {
    /// Starts an empty segment with a fresh random id.
    pub fn new(context: SegmentContext) -> Result<Self, SegmentError> {
        Self::with_id(SegmentId::random()?, context)
    }

    /// Starts an empty segment with a given id (tests and replays; ids must stay unique).
    pub fn with_id(id: SegmentId, context: SegmentContext) -> Result<Self, SegmentError> {
        for (field, value) in [
            ("tenant", &context.tenant),
            ("device", &context.device),
            ("user", &context.user),
            ("session", &context.session),
            ("monitor name", &context.monitor.name),
        ] {
            if value.len() > MAX_NAME_LEN {
                return Err(SegmentError::NameTooLong { field, len: value.len() });
            }
        }
        let (width, height) = (context.monitor.width, context.monitor.height);
        if !valid_geometry(width, height) {
            return Err(SegmentError::BadGeometry { width, height });
        }
        let encoder = Encoder::new(width, height)?;
        Ok(Self {
            id,
            context,
            encoder,
            frames: Zeroizing::new(Vec::new()),
            events: Zeroizing::new(Vec::new()),
            frame_count: 0,
            event_count: 0,
            start: None,
            end: None,
            first_frame_mono: None,
            last_frame_mono: 0,
        })
    }

    pub fn id(&self) -> SegmentId {
        self.id
    }

    pub fn context(&self) -> &SegmentContext {
        &self.context
    }

    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Bytes the plaintext has so far (frames and events, without the header).
    pub fn len_bytes(&self) -> usize {
        self.frames.len() + self.events.len()
    }

    /// Monotonic time between the first and the last frame.
    pub fn span(&self) -> Duration {
        let first = self.first_frame_mono.unwrap_or(self.last_frame_mono);
        Duration::from_micros(self.last_frame_mono.saturating_sub(first))
    }

    /// Whether a frame captured at `now` belongs in the next segment rather than this one.
    pub fn is_due(&self, now: Timestamp, length: Duration) -> bool {
        match self.first_frame_mono {
            Some(first) => Duration::from_micros(now.mono_micros.saturating_sub(first)) >= length,
            None => false,
        }
    }

    /// Encodes `frame` and appends it. The first frame becomes the keyframe. On error nothing
    /// is appended and the segment stays valid.
    pub fn push_frame(&mut self, frame: &Frame) -> Result<PacketKind, SegmentError> {
        if self.frame_count >= MAX_FRAMES {
            return Err(SegmentError::Full { what: "frame count", max: MAX_FRAMES.into() });
        }
        let at = frame.captured_at;
        let record_start = self.frames.len();
        put_i64(&mut self.frames, at.utc_micros);
        put_u64(&mut self.frames, at.mono_micros);
        put_u8(&mut self.frames, 0);
        put_u32(&mut self.frames, 0);
        let packet_start = self.frames.len();
        let kind = match self.encoder.encode(frame, &mut self.frames) {
            Ok(kind) => kind,
            Err(e) => {
                self.frames.truncate(record_start);
                return Err(e.into());
            }
        };
        let packet_len = self.frames.len() - packet_start;
        if packet_len > MAX_PACKET_LEN {
            self.frames.truncate(record_start);
            return Err(SegmentError::Full { what: "packet length", max: MAX_PACKET_LEN as u64 });
        }
        if self.frame_count == 0 && kind != PacketKind::Key {
            // The encoder's contract says this cannot happen; refuse rather than write a
            // segment that does not decode alone.
            self.frames.truncate(record_start);
            return Err(SegmentError::FirstFrameNotKeyframe);
        }
        self.frames[packet_start - 5] = kind_byte(kind);
        self.frames[packet_start - 4..packet_start]
            .copy_from_slice(&(packet_len as u32).to_le_bytes());
        self.frame_count += 1;
        self.first_frame_mono.get_or_insert(at.mono_micros);
        self.last_frame_mono = at.mono_micros;
        self.widen(at);
        Ok(kind)
    }

    /// Appends an input or window event of this segment's span.
    pub fn push_event(&mut self, event: InputEvent) -> Result<(), SegmentError> {
        if self.event_count >= MAX_EVENTS {
            return Err(SegmentError::Full { what: "event count", max: MAX_EVENTS.into() });
        }
        let json = Zeroizing::new(serde_json::to_vec(&event).map_err(|source| {
            SegmentError::BadEvent { index: self.event_count as usize, source }
        })?);
        if json.len() > MAX_EVENT_LEN {
            return Err(SegmentError::Full { what: "event length", max: MAX_EVENT_LEN as u64 });
        }
        put_u32(&mut self.events, json.len() as u32);
        self.events.extend_from_slice(&json);
        self.event_count += 1;
        self.widen(event.at);
        Ok(())
    }

    fn widen(&mut self, at: Timestamp) {
        let start = self.start.get_or_insert(at);
        if at.utc_micros < start.utc_micros {
            *start = at;
        }
        let end = self.end.get_or_insert(at);
        if at.utc_micros > end.utc_micros {
            *end = at;
        }
    }

    /// Lays out the segment. Fails with [`SegmentError::NoFrames`] if no frame was pushed.
    pub fn finish(self) -> Result<FinishedSegment, SegmentError> {
        let (Some(start), Some(end)) = (self.start, self.end) else {
            return Err(SegmentError::NoFrames);
        };
        if self.frame_count == 0 {
            return Err(SegmentError::NoFrames);
        }
        let header = SegmentHeader {
            id: self.id,
            context: self.context,
            start,
            end,
            frame_count: self.frame_count,
            event_count: self.event_count,
        };
        let mut out =
            Zeroizing::new(Vec::with_capacity(256 + self.frames.len() + self.events.len()));
        write_header(&mut out, &header);
        out.extend_from_slice(&self.frames);
        out.extend_from_slice(&self.events);
        Ok(FinishedSegment { header, plaintext: out })
    }
}

fn valid_geometry(width: u32, height: u32) -> bool {
    (1..=MAX_DIMENSION).contains(&width) && (1..=MAX_DIMENSION).contains(&height)
}

fn kind_byte(kind: PacketKind) -> u8 {
    match kind {
        PacketKind::Key => b'K',
        PacketKind::Delta => b'D',
        PacketKind::Same => b'S',
    }
}

fn kind_from_byte(b: u8) -> Option<PacketKind> {
    match b {
        b'K' => Some(PacketKind::Key),
        b'D' => Some(PacketKind::Delta),
        b'S' => Some(PacketKind::Same),
        _ => None,
    }
}

fn write_header(out: &mut Vec<u8>, h: &SegmentHeader) {
    let c = &h.context;
    out.extend_from_slice(&MAGIC);
    put_u8(out, VERSION);
    out.extend_from_slice(h.id.as_bytes());
    put_str(out, &c.tenant);
    put_str(out, &c.device);
    put_str(out, &c.user);
    put_str(out, &c.session);
    put_u32(out, c.monitor.id);
    put_str(out, &c.monitor.name);
    wire::put_i32(out, c.monitor.x);
    wire::put_i32(out, c.monitor.y);
    put_u32(out, c.monitor.width);
    put_u32(out, c.monitor.height);
    put_u8(out, u8::from(c.monitor.primary));
    put_i64(out, h.start.utc_micros);
    put_u64(out, h.start.mono_micros);
    put_i64(out, h.end.utc_micros);
    put_u64(out, h.end.mono_micros);
    put_u32(out, h.frame_count);
    put_u32(out, h.event_count);
}

fn read_header(r: &mut Reader<'_>) -> Result<SegmentHeader, SegmentError> {
    let magic = r.array::<4>("magic")?;
    if magic != MAGIC {
        return Err(SegmentError::BadMagic(magic));
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(SegmentError::UnsupportedVersion(version));
    }
    let id = SegmentId(r.array("segment id")?);
    let tenant = r.str("tenant", MAX_NAME_LEN)?.to_owned();
    let device = r.str("device", MAX_NAME_LEN)?.to_owned();
    let user = r.str("user", MAX_NAME_LEN)?.to_owned();
    let session = r.str("session", MAX_NAME_LEN)?.to_owned();
    let monitor_id = r.u32("monitor id")?;
    let name = r.str("monitor name", MAX_NAME_LEN)?.to_owned();
    let x = r.i32("monitor x")?;
    let y = r.i32("monitor y")?;
    let width = r.u32("monitor width")?;
    let height = r.u32("monitor height")?;
    if !valid_geometry(width, height) {
        return Err(SegmentError::BadGeometry { width, height });
    }
    let primary = match r.u8("monitor primary")? {
        0 => false,
        1 => true,
        v => return Err(WireError::Invalid { field: "monitor primary", value: v.into() }.into()),
    };
    let start = Timestamp { utc_micros: r.i64("start utc")?, mono_micros: r.u64("start mono")? };
    let end = Timestamp { utc_micros: r.i64("end utc")?, mono_micros: r.u64("end mono")? };
    if start.utc_micros > end.utc_micros {
        return Err(SegmentError::BadTimeRange { start: start.utc_micros, end: end.utc_micros });
    }
    let frame_count = r.u32("frame count")?;
    let event_count = r.u32("event count")?;
    if frame_count == 0 {
        return Err(SegmentError::NoFrames);
    }
    if frame_count > MAX_FRAMES {
        return Err(SegmentError::Full { what: "frame count", max: MAX_FRAMES.into() });
    }
    if event_count > MAX_EVENTS {
        return Err(SegmentError::Full { what: "event count", max: MAX_EVENTS.into() });
    }
    let monitor = MonitorInfo { id: monitor_id, name, x, y, width, height, primary };
    Ok(SegmentHeader {
        id,
        context: SegmentContext { tenant, device, user, session, monitor },
        start,
        end,
        frame_count,
        event_count,
    })
}

/// One stored frame: when it was captured and its codec packet, not yet decoded.
#[derive(Clone, Copy)]
pub struct FrameRecord<'a> {
    pub at: Timestamp,
    pub kind: PacketKind,
    pub packet: &'a [u8],
}

impl fmt::Debug for FrameRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameRecord")
            .field("at", &self.at)
            .field("kind", &self.kind)
            .field("packet_bytes", &self.packet.len())
            .finish()
    }
}

/// A parsed segment borrowing its bytes: header, frame records, events.
pub struct Segment<'a> {
    header: SegmentHeader,
    frames: Vec<FrameRecord<'a>>,
    events: Vec<InputEvent>,
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment").field("header", &self.header).finish_non_exhaustive()
    }
}

impl<'a> Segment<'a> {
    /// Parses untrusted plaintext. Checks the whole layout — every record boundary, the
    /// keyframe rule, every event — so iteration afterwards only fails in the codec.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SegmentError> {
        let mut r = Reader::new(bytes);
        let header = read_header(&mut r)?;
        let needed = header.frame_count as usize * MIN_FRAME_RECORD
            + header.event_count as usize * MIN_EVENT_RECORD;
        if needed > r.remaining() {
            return Err(WireError::Truncated {
                field: "frame and event records",
                needed,
                left: r.remaining(),
            }
            .into());
        }
        let mut frames = Vec::with_capacity(header.frame_count as usize);
        for i in 0..header.frame_count {
            let at =
                Timestamp { utc_micros: r.i64("frame utc")?, mono_micros: r.u64("frame mono")? };
            let kind_raw = r.u8("frame kind")?;
            let kind = kind_from_byte(kind_raw)
                .ok_or(WireError::Invalid { field: "frame kind", value: kind_raw.into() })?;
            if i == 0 && kind != PacketKind::Key {
                return Err(SegmentError::FirstFrameNotKeyframe);
            }
            let len = r.u32("packet length")? as usize;
            if len > MAX_PACKET_LEN {
                return Err(WireError::TooLong { field: "packet", len, max: MAX_PACKET_LEN }.into());
            }
            let packet = r.bytes("packet", len)?;
            frames.push(FrameRecord { at, kind, packet });
        }
        let mut events = Vec::with_capacity(header.event_count as usize);
        for index in 0..header.event_count as usize {
            let len = r.u32("event length")? as usize;
            if len > MAX_EVENT_LEN {
                return Err(WireError::TooLong { field: "event", len, max: MAX_EVENT_LEN }.into());
            }
            let json = r.bytes("event", len)?;
            let event: InputEvent = serde_json::from_slice(json)
                .map_err(|source| SegmentError::BadEvent { index, source })?;
            event.kind.check().map_err(|source| SegmentError::BadEventKind { index, source })?;
            events.push(event);
        }
        if r.remaining() != 0 {
            return Err(SegmentError::TrailingBytes(r.remaining()));
        }
        Ok(Self { header, frames, events })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The frame records in capture order, undecoded.
    pub fn frames(&self) -> &[FrameRecord<'a>] {
        &self.frames
    }

    /// The events in arrival order.
    pub fn events(&self) -> &[InputEvent] {
        &self.events
    }

    /// Decodes the frames in order, each stamped with its capture time. Stops being useful
    /// after the first error (later deltas depend on the failed frame).
    pub fn decode_frames(&self) -> DecodeFrames<'_, 'a> {
        DecodeFrames { segment: self, decoder: Decoder::new(), next: 0 }
    }
}

/// Iterator returned by [`Segment::decode_frames`].
pub struct DecodeFrames<'s, 'a> {
    segment: &'s Segment<'a>,
    decoder: Decoder,
    next: usize,
}

impl Iterator for DecodeFrames<'_, '_> {
    type Item = Result<Frame, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.segment.frames.get(self.next)?;
        let index = self.next;
        self.next += 1;
        let monitor = &self.segment.header.context.monitor;
        let result =
            self.decoder.decode(record.packet).map_err(SegmentError::from).and_then(|mut frame| {
                if frame.width != monitor.width || frame.height != monitor.height {
                    return Err(SegmentError::FrameSize {
                        index,
                        width: monitor.width,
                        height: monitor.height,
                        got_width: frame.width,
                        got_height: frame.height,
                    });
                }
                frame.captured_at = record.at;
                Ok(frame)
            });
        if result.is_err() {
            // Deltas after a failed frame would decode against the wrong picture.
            self.next = self.segment.frames.len();
        }
        Some(result)
    }
}
