//! Shared pieces of the fuzz targets: a reference model of spec §1's
//! receiver rules, written from the spec alone (with an independent
//! XXH3-128), and the layout of the decoder target's input.
//!
//! The model answers, for a byte stream and a set of limits, which frames a
//! receiver hands out and how the stream ends; the targets check bus-core
//! against it.

use bus_core::FrameError;
use twox_hash::XxHash3_128;

/// Length of a frame header (spec §1).
pub const HEADER: usize = 256;

/// What a receiver accepts (spec §1), as the model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Largest accepted `size`.
    pub max: u32,
    /// Frames with `checksum == 0` are refused.
    pub require_sealed: bool,
}

/// How a stream ends, according to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Exactly after the last frame.
    Clean,
    /// Inside a frame that breaks no rule seen so far.
    Partial,
    /// A frame broke a rule. `early` is true when the verdict needs only
    /// the header (a receiver may give it before the body has arrived).
    Error {
        /// The rule broken.
        error: FrameError,
        /// Whether the frame's bytes are all there.
        complete: bool,
        /// Whether the verdict is known from the first 256 bytes.
        from_header: bool,
    },
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// The header verdict of spec §1, in the spec's order: size range,
/// protocol, command, header checksum, then the sealing policy.
pub fn check_header(head: &[u8], rules: Rules) -> Result<(), FrameError> {
    let size = u32_at(head, 48);
    if size > rules.max {
        return Err(FrameError::TooLarge {
            size: size.into(),
            max: rules.max,
        });
    }
    if (size as usize) < HEADER {
        return Err(FrameError::TooSmall { size });
    }
    let protocol = u16::from_le_bytes([head[62], head[63]]);
    if protocol != 1 {
        return Err(FrameError::BadProtocol { protocol });
    }
    let command = head[60];
    if command == 0 || (7..=15).contains(&command) {
        return Err(FrameError::BadCommand { command });
    }
    let checksum = u128_at(head, 0);
    if checksum != 0 && XxHash3_128::oneshot(&head[16..HEADER]) != checksum {
        return Err(FrameError::HeaderChecksum);
    }
    if rules.require_sealed && checksum == 0 {
        return Err(FrameError::NotSealed);
    }
    Ok(())
}

/// The body verdict: a sealed frame's `checksum_body` is the XXH3-128 of
/// its body.
pub fn check_body(frame: &[u8]) -> Result<(), FrameError> {
    let sealed = u128_at(frame, 0) != 0;
    if sealed && XxHash3_128::oneshot(&frame[HEADER..]) != u128_at(frame, 16) {
        return Err(FrameError::BodyChecksum);
    }
    Ok(())
}

/// Splits `stream` into the frames a receiver delivers and how it ends.
pub fn frames(stream: &[u8], rules: Rules) -> (Vec<&[u8]>, End) {
    let mut out = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (out, End::Clean);
        }
        if rest.len() < HEADER {
            return (out, End::Partial);
        }
        let size = u32_at(rest, 48) as usize;
        let complete = rest.len() >= size;
        if let Err(error) = check_header(&rest[..HEADER], rules) {
            return (
                out,
                End::Error {
                    error,
                    complete,
                    from_header: true,
                },
            );
        }
        if !complete {
            return (out, End::Partial);
        }
        let (frame, tail) = rest.split_at(size);
        if let Err(error) = check_body(frame) {
            return (
                out,
                End::Error {
                    error,
                    complete,
                    from_header: false,
                },
            );
        }
        out.push(frame);
        rest = tail;
    }
}

/// Seals, in place, the frame that starts at `frame[0]` and is exactly
/// `frame.len()` bytes (sender side of spec §1).
pub fn seal(frame: &mut [u8]) {
    let body = XxHash3_128::oneshot(&frame[HEADER..]);
    frame[16..32].copy_from_slice(&body.to_le_bytes());
    let head = XxHash3_128::oneshot(&frame[16..HEADER]);
    frame[0..16].copy_from_slice(&head.to_le_bytes());
}

/// Walks `stream` frame by frame (by `size` fields, while they lie within
/// 256..=remaining) and seals every frame whose `checksum` is not zero,
/// so the fuzzer reaches sealed frames that verify.
pub fn reseal(stream: &mut [u8]) {
    let mut at = 0;
    while stream.len() - at >= HEADER {
        let size = u32_at(&stream[at..], 48) as usize;
        if size < HEADER || size > stream.len() - at {
            return;
        }
        if u128_at(&stream[at..], 0) != 0 {
            seal(&mut stream[at..at + size]);
        }
        at += size;
    }
}

/// The decoder target's input: a 4-byte prefix of settings, then the
/// stream.
///
/// | byte | meaning |
/// |-----:|---------|
/// | 0 | bit 0: require sealed frames; bit 1: [`reseal`] the stream first; bits 2–3: read buffer 512 / 1 KiB / 4 KiB / 64 KiB |
/// | 1–2 | `max_message_size` = 256 + 4 × (u16 LE) |
/// | 3 | chunking: chunks of 1 ..= 2^(byte % 13) bytes from a generator seeded with it |
#[derive(Debug)]
pub struct DecoderInput {
    /// The receiver's rules.
    pub rules: Rules,
    /// The decoder's read buffer.
    pub read_buffer: usize,
    /// The stream, after the optional reseal.
    pub stream: Vec<u8>,
    /// Lengths of the pieces the stream arrives in (they sum to its length).
    pub chunks: Vec<usize>,
}

impl DecoderInput {
    /// Reads the settings and the stream out of a fuzzer input.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (&[flags, lo, hi, chunking], stream) = data.split_first_chunk::<4>()?;
        let rules = Rules {
            max: 256 + 4 * u32::from(u16::from_le_bytes([lo, hi])),
            require_sealed: flags & 1 != 0,
        };
        let read_buffer = [512, 1 << 10, 4 << 10, 64 << 10][usize::from((flags >> 2) & 3)];
        let mut stream = stream.to_vec();
        if flags & 2 != 0 {
            reseal(&mut stream);
        }
        let widest = 1usize << (chunking % 13);
        let mut state = u32::from(chunking).wrapping_mul(0x9E37_79B9) | 1;
        let mut chunks = Vec::new();
        let mut left = stream.len();
        while left > 0 {
            // xorshift32: cheap, deterministic, never zero.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let n = (state as usize % widest + 1).min(left);
            chunks.push(n);
            left -= n;
        }
        Some(Self {
            rules,
            read_buffer,
            stream,
            chunks,
        })
    }
}
