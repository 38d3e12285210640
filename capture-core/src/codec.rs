//! The lossless screen codec: a keyframe, then delta frames that copy unchanged and *moved*
//! regions from the previous frame, with the rest predicted and handed to zstd.
//!
//! Screen content is not camera content: most of a frame is the same as the frame before, what
//! changes is often something that merely moved (a terminal or document scrolled, a window
//! dragged), and what is new is flat colour and text. So a frame is cut into tiles, and each tile
//! is, from cheapest to dearest: *the same* as before, an exact *copy* of some rectangle of the
//! previous frame (a scroll), a *residual* against such a rectangle (a scroll that did not line
//! up with the tile, a clock digit that changed), or coded on its own (*intra*). Intra and
//! residual pixels go through a colour transform (G, B−G, R−G: grey text becomes one plane of
//! data and two planes of zeros) and a left/up predictor, are written as three planes, and the
//! whole body goes through one zstd frame.
//!
//! # Stream
//!
//! A stream is a sequence of packets, one per frame. The first packet, and the first after
//! [`Encoder::force_keyframe`], is a keyframe, which needs nothing before it: a segment starts with
//! one and so decodes alone. A delta packet is relative to the frame decoded just before it.
//!
//! # Packet
//!
//! All integers are little-endian.
//!
//! ```text
//! offset size field
//!      0    1 version      format version, 1. A decoder refuses any other value, so a future
//!                          format can never be misread as this one.
//!      1    1 kind         b'K' keyframe, b'D' delta, b'S' same (identical to the previous frame)
//!      2    4 width        frame width in pixels, 1..=16384; a delta or same packet must repeat
//!                          the width of the keyframe it follows (a resolution change needs a
//!                          new keyframe)
//!      6    4 height       frame height in pixels, 1..=16384, same rule
//!   ---- a `same` packet ends here: 10 bytes ----
//!     10    1 tile_w       tile width in pixels, 8..=128 (the grid is fixed for one packet;
//!                          the encoder may change it at a keyframe)
//!     11    1 tile_h       tile height in pixels, 8..=128
//!     12    1 predictor    spatial predictor of intra tiles: 0 = left (first column from
//!                          above), 1 = none, 2 = up (the frame's top row from the left),
//!                          3 = palette (keyframes only: the body is a palette body, below)
//!     13    4 body_len     exact length of the body once decompressed; the decoder checks it
//!                          against the most the declared dimensions allow before allocating
//!     17    … zstd         one zstd frame holding the body, running to the end of the packet
//! ```
//!
//! # Body
//!
//! The frame is a grid of `tiles_x = ceil(width / tile_w)` by `tiles_y = ceil(height / tile_h)`
//! tiles, numbered row-major; tiles on the right and bottom edges are cut to the frame.
//!
//! ```text
//! modes     tiles_x*tiles_y bytes, one per tile in tile order:
//!             0 same      pixels of the previous frame at the same place
//!             1 copy      pixels of the previous frame at (x + dx, y + dy)
//!             2 intra     pixels coded on their own, in the planes below
//!             3 residual  previous frame at (x + dx, y + dy) plus a residual from the planes
//!           a keyframe uses mode 2 only (it has no previous frame).
//! vectors   4 bytes per tile of mode 1 or 3, in tile order: i16 dx, i16 dy. The moved source
//!           rectangle (same size as the tile) must lie inside the previous frame.
//! plane 0   one byte per coded pixel (tiles of mode 2 or 3)  G
//! plane 1   same count                                      B − G (mod 256)
//! plane 2   same count                                      R − G (mod 256)
//! ```
//!
//! Coded pixels are ordered like a raster scan restricted to the coded tiles: for each row of
//! tiles, for each pixel row `y` of it, for each coded tile of that row from left to right, the
//! tile's pixels of row `y` left to right. Neighbouring coded tiles thus form long runs of a
//! screen row, which is what lets zstd find repeated words and glyph rows across tile borders
//! (a keyframe is plainly the frame in raster order).
//!
//! The value stored for a pixel is the transformed pixel minus its prediction, per plane, mod 256:
//! * intra, predictor 0: the transformed pixel to the left within the tile; in the tile's first
//!   column, the pixel above within the tile; the tile's top-left pixel is predicted by 0;
//! * intra, predictor 1: 0 (the transformed pixel itself);
//! * intra, predictor 2: the transformed pixel above it in the frame (`(x, y − 1)`, which the
//!   decoder always holds by then: the tile above was decoded in an earlier row of tiles, or is
//!   a same or copy tile); on the frame's top row, the pixel to the left within the tile, and
//!   the tile's first pixel is predicted by 0. Screen text is mostly rows repeating the row
//!   above (blank lines, glyph stems, window borders, flat panels), which "up" turns into runs
//!   of zeros where "left" leaves a nonzero at every glyph edge: on the bench's desktop
//!   keyframes came out 45 % smaller at the same zstd level and time. Added in the same
//!   version 1: a stream using 0 or 1 decodes as before; a decoder older than predictor 2
//!   refuses it with an error (it checks this byte), it never misreads it.
//! * residual: the transformed pixel of the previous frame at `(x + dx, y + dy)`.
//!
//! The body must be consumed exactly: its length must equal
//! `tiles + 4 * moved_tiles + 3 * coded_pixels`. The X byte of BGRX is not coded; the decoder
//! sets it to 0.
//!
//! # Palette body (predictor 3)
//!
//! A keyframe whose frame has at most 255 distinct colours (B, G, R) may be sent as a palette:
//! flat panels and unsmoothed text are a handful of colours, and one byte per pixel that
//! mostly says "as above" is a third of the planes' bytes before zstd even starts. A decoder
//! refuses predictor 3 in a delta packet.
//!
//! ```text
//! modes     tiles_x*tiles_y bytes, all 2 (intra), as in any keyframe
//! count     1 byte: colours − 1 (a value of 255, 256 colours, is refused)
//! colours   3 bytes per colour: B, G, R
//! values    one byte per pixel in raster order:
//!             0      the colour of the pixel above (refused on the frame's top row)
//!             k ≥ 1  colours[k − 1] (k must not exceed the count)
//! ```
//!
//! The body must be consumed exactly: `tiles + 1 + 3 * colours + width * height` bytes. The
//! encoder lists colours most frequent first, so the common ones get small values, and falls
//! back to the planes (predictor 2) as soon as a keyframe shows a 256th colour. Added in
//! version 1 like predictor 2, with the same rule for older decoders.
//!
//! # Untrusted input
//!
//! [`Decoder::decode`] takes bytes from anywhere. It checks dimensions against its limits
//! (16384x16384 unless [`Decoder::with_max_dimensions`] says less), then `body_len` against the
//! largest body the declared grid allows:
//!
//! ```text
//! body_len <= 5 * tiles_x * tiles_y          a mode byte and a vector for every tile
//!           + 3 * width * height             every pixel coded, three planes
//!           + 1 + 3 * 255                    room for a palette's count and colours
//! ```
//!
//! (the palette body, `tiles + 1 + 3 * colours + width * height`, is always within it). It
//! decompresses into a buffer of exactly `body_len` bytes (zstd fails rather than write past
//! it) and checks every mode, vector and length against the grid.
//!
//! zstd frames are written with a window of at most 2^27 bytes (128 MiB; keyframes use
//! long-distance matching, which asks for that window), zstd's default limit for decoders: a
//! reader that decompresses in streaming mode must allow `windowLogMax` 27; one that
//! decompresses the whole body in one call into a `body_len` buffer, as this decoder does,
//! needs no window buffer of its own. A body never needs a dictionary. Any failure is a [`CodecError`]; it never panics, and a failed packet leaves the
//! decoder's reference frame as it was.

mod decode;
mod encode;
mod palette;
mod pixels;

pub use decode::Decoder;
pub use encode::{Encoder, EncoderConfig, Predictor, MAX_WINDOW_LOG};

/// Format version written in byte 0 of every packet.
pub const VERSION: u8 = 1;
/// Largest width or height a stream may declare.
pub const MAX_DIMENSION: u32 = 16384;

const KIND_KEY: u8 = b'K';
const KIND_DELTA: u8 = b'D';
const KIND_SAME: u8 = b'S';

const MODE_SAME: u8 = 0;
const MODE_COPY: u8 = 1;
const MODE_INTRA: u8 = 2;
const MODE_RESIDUAL: u8 = 3;

const PREDICTOR_LEFT: u8 = 0;
const PREDICTOR_NONE: u8 = 1;
const PREDICTOR_UP: u8 = 2;
const PREDICTOR_PALETTE: u8 = 3;

const SAME_PACKET_LEN: usize = 10;
const HEADER_LEN: usize = 17;
const MIN_TILE: u8 = 8;
const MAX_TILE: u8 = 128;

/// What a packet is; returned by [`Encoder::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// Decodes alone.
    Key,
    /// Relative to the previous frame.
    Delta,
    /// The frame is identical to the previous one (B, G, R of every pixel).
    Same,
}

/// What went wrong encoding or decoding. None of these is retryable: the same input fails the
/// same way (see [`CodecError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame dimensions {width}x{height} are outside 1..={max} on each side")]
    InvalidDimensions { width: u32, height: u32, max: u32 },
    #[error(
        "frame is {got_width}x{got_height} but the stream is {width}x{height}; \
         a resolution change needs a new encoder or a keyframe"
    )]
    SizeMismatch { width: u32, height: u32, got_width: u32, got_height: u32 },
    #[error("frame buffer too small: stride {stride}, {len} bytes for {width}x{height} BGRX")]
    BadFrameBuffer { width: u32, height: u32, stride: usize, len: usize },
    #[error("packet truncated: {needed} bytes needed, {got} present")]
    Truncated { needed: usize, got: usize },
    #[error("unsupported codec version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown packet kind {0:#04x}")]
    UnknownKind(u8),
    #[error("delta packet without a keyframe before it")]
    DeltaWithoutKeyframe,
    #[error("corrupt packet: {0}")]
    Corrupt(&'static str),
    #[error("zstd failed: {0}")]
    Zstd(#[source] std::io::Error),
}

impl CodecError {
    /// Whether trying again could succeed. Never for this codec: errors come from the data.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

fn check_dimensions(width: u32, height: u32, max: u32) -> Result<(), CodecError> {
    if width == 0 || height == 0 || width > max || height > max {
        return Err(CodecError::InvalidDimensions { width, height, max });
    }
    Ok(())
}
