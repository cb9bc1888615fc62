//! RFC 6455 framing, sans-IO: frame headers parsed and encoded, masking,
//! close payloads checked, and the mask keys of the client side.
//!
//! Nothing here reads or writes a socket or holds a message: the reader and
//! writer of `stream.rs` drive it. [`apply_mask`] works in place on the
//! buffer bytes were read into; [`copy_masked`] unmasks while it copies, for
//! the one copy a message's payload takes into its frame.

use bus_core::limits::WS_MAX_CONTROL_PAYLOAD_BYTES;

/// Continuation of a fragmented message.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// A text message (refused: frames travel in binary messages).
pub(crate) const OP_TEXT: u8 = 0x1;
/// A binary message.
pub(crate) const OP_BINARY: u8 = 0x2;
/// Close.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// Ping.
pub(crate) const OP_PING: u8 = 0x9;
/// Pong.
pub(crate) const OP_PONG: u8 = 0xA;

/// Longest frame header: 2 bytes, a 64-bit length, a mask key.
pub(crate) const MAX_HEADER_BYTES: usize = 14;

/// A close code the peer may not send or that is not defined (RFC 6455
/// §7.4): sent in no close frame.
const NO_STATUS: u16 = 1005;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Last frame of its message.
    pub(crate) fin: bool,
    /// One of the `OP_*` codes.
    pub(crate) opcode: u8,
    /// Payload length as announced (up to 2^64 - 1: the reader refuses
    /// anything above its limit from this number alone).
    pub(crate) len: u64,
    /// The mask key, when the frame is masked.
    pub(crate) mask: Option<[u8; 4]>,
}

impl FrameHead {
    /// Whether this is a control frame (close, ping, pong).
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A broken frame header: RFC 6455 says "fail the connection".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Broken {
    /// A reserved bit is set (no extension is ever negotiated).
    #[error("WebSocket frame with a reserved bit set")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("WebSocket frame with a reserved opcode")]
    UnknownOpcode,
    /// A control frame without FIN.
    #[error("fragmented WebSocket control frame")]
    FragmentedControl,
    /// A control frame with more than 125 payload bytes.
    #[error("WebSocket control frame over 125 bytes")]
    ControlTooLong,
    /// A client frame without a mask, or a server frame with one.
    #[error("WebSocket frame masked the wrong way for its direction")]
    Masking,
    /// A continuation frame outside a message, or a new message inside one.
    #[error("WebSocket continuation frame out of sequence")]
    Sequence,
    /// A close frame with a one-byte payload or a code that may not be sent.
    #[error("WebSocket close frame with an invalid code")]
    CloseCode,
}

/// The length of the whole header, known from its second byte.
pub(crate) fn header_len(second: u8) -> usize {
    let length = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 == 0 { 0 } else { 4 };
    2 + length + mask
}

/// Parses a complete header (`bytes.len() == header_len(..)`), checking the
/// rules RFC 6455 §5.2 and §5.5 put on it. `masked` is what this side
/// requires: a server requires masked frames, a client unmasked ones.
pub(crate) fn parse_header(bytes: &[u8], masked: bool) -> Result<FrameHead, Broken> {
    let (first, second) = (bytes[0], bytes[1]);
    if first & 0x70 != 0 {
        return Err(Broken::ReservedBits);
    }
    let opcode = first & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(Broken::UnknownOpcode);
    }
    let fin = first & 0x80 != 0;
    let has_mask = second & 0x80 != 0;
    if has_mask != masked {
        return Err(Broken::Masking);
    }
    let (len, rest) = match second & 0x7F {
        126 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => {
            let mut wide = [0; 8];
            wide.copy_from_slice(&bytes[2..10]);
            (u64::from_be_bytes(wide), 10)
        }
        short => (u64::from(short), 2),
    };
    let head = FrameHead {
        fin,
        opcode,
        len,
        mask: has_mask.then(|| {
            [
                bytes[rest],
                bytes[rest + 1],
                bytes[rest + 2],
                bytes[rest + 3],
            ]
        }),
    };
    if head.is_control() {
        if !fin {
            return Err(Broken::FragmentedControl);
        }
        if len > WS_MAX_CONTROL_PAYLOAD_BYTES as u64 {
            return Err(Broken::ControlTooLong);
        }
    }
    Ok(head)
}

/// Encodes a header with FIN set into `out`; returns its length.
pub(crate) fn encode_header(
    out: &mut [u8; MAX_HEADER_BYTES],
    opcode: u8,
    len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = 0x80 | opcode;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = 2;
    if len < 126 {
        // Fits in seven bits.
        #[allow(clippy::cast_possible_truncation, reason = "below 126")]
        let short = len as u8;
        out[1] = mask_bit | short;
    } else if let Ok(medium) = u16::try_from(len) {
        out[1] = mask_bit | 0x7E;
        out[2..4].copy_from_slice(&medium.to_be_bytes());
        at = 4;
    } else {
        out[1] = mask_bit | 0x7F;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        at = 10;
    }
    if let Some(key) = mask {
        out[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// XORs `data` with `key` in place; `offset` is the position of `data[0]`
/// in the frame's payload (masking runs on across reads).
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let mut key = key;
    #[allow(clippy::cast_possible_truncation, reason = "reduced modulo 4")]
    key.rotate_left((offset % 4) as usize);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key is in phase.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Copies `src` into `dst` (of the same length) and XORs the copy with
/// `key` when there is one: unmasking (or masking) in the same pass as the
/// copy. `offset` is the position of `src[0]` in the frame's payload.
pub(crate) fn copy_masked(dst: &mut [u8], src: &[u8], key: Option<[u8; 4]>, offset: u64) {
    debug_assert_eq!(dst.len(), src.len());
    let Some(key) = key else {
        dst.copy_from_slice(src);
        return;
    };
    // The key in phase with `offset`, as a little-endian word: byte `i` of
    // `phased` is `key[(i + offset) % 4]`.
    #[allow(clippy::cast_possible_truncation, reason = "reduced modulo 4")]
    let phased = u32::from_le_bytes(key).rotate_right(8 * (offset % 4) as u32);
    let wide = u64::from(phased) | (u64::from(phased) << 32);
    let mut to = dst.chunks_exact_mut(8);
    let mut from = src.chunks_exact(8);
    for (out, word) in (&mut to).zip(&mut from) {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        out.copy_from_slice(&(word ^ wide).to_le_bytes());
    }
    // The remainders start at a multiple of 8, so the key is in phase.
    let key = phased.to_le_bytes();
    let tail = to.into_remainder().iter_mut().zip(from.remainder());
    for ((out, byte), k) in tail.zip(key.iter().cycle()) {
        *out = byte ^ k;
    }
}

/// What a received close frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseBody {
    /// No payload: no status code.
    Empty,
    /// A valid code and a UTF-8 reason.
    Code(u16),
    /// A valid code whose reason is not UTF-8 (close 1007, RFC 6455 §8.1).
    BadReason(u16),
}

/// Checks a close frame's payload (RFC 6455 §5.5.1, §7.4).
pub(crate) fn parse_close(payload: &[u8]) -> Result<CloseBody, Broken> {
    match payload {
        [] => Ok(CloseBody::Empty),
        [_] => Err(Broken::CloseCode),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid || code == NO_STATUS {
                return Err(Broken::CloseCode);
            }
            if std::str::from_utf8(reason).is_err() {
                return Ok(CloseBody::BadReason(code));
            }
            Ok(CloseBody::Code(code))
        }
    }
}

/// The mask keys of a client: xorshift64*, seeded from the operating
/// system once per connection. RFC 6455 §5.3 asks for keys a script in a
/// browser cannot predict; this client runs no foreign scripts, so a fast
/// generator seeded unpredictably is enough.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskKeys(u64);

impl MaskKeys {
    /// A generator seeded from the OS (or, should that fail, from the
    /// address of a fresh allocation and the clock).
    pub(crate) fn new() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            let here = Box::new(0u8);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            (std::ptr::from_ref(&*here) as u64) ^ u64::from(nanos).rotate_left(32)
        });
        // Never zero: xorshift stays at zero.
        Self(seed | 1)
    }

    /// The next key.
    pub(crate) fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        #[allow(clippy::cast_possible_truncation, reason = "the high half")]
        let high = (out >> 32) as u32;
        high.to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], masked: bool) -> Result<FrameHead, Broken> {
        assert_eq!(bytes.len(), header_len(bytes[1]));
        parse_header(bytes, masked)
    }

    #[test]
    fn headers_round_trip_at_every_length_class() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 16 << 20] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = [0; MAX_HEADER_BYTES];
                let n = encode_header(&mut out, OP_BINARY, len, mask);
                let parsed = head(&out[..n], mask.is_some()).unwrap();
                assert_eq!(
                    parsed,
                    FrameHead {
                        fin: true,
                        opcode: OP_BINARY,
                        len: len as u64,
                        mask
                    }
                );
            }
        }
    }

    #[test]
    fn header_rules() {
        let masked = [0x82, 0x80, 1, 2, 3, 4];
        assert_eq!(head(&[0x82, 0x00], true), Err(Broken::Masking));
        assert_eq!(head(&masked, false), Err(Broken::Masking));
        assert_eq!(
            head(&[0xC2, 0x80, 1, 2, 3, 4], true),
            Err(Broken::ReservedBits)
        );
        assert_eq!(
            head(&[0x83, 0x80, 1, 2, 3, 4], true),
            Err(Broken::UnknownOpcode)
        );
        assert_eq!(
            head(&[0x09, 0x80, 1, 2, 3, 4], true),
            Err(Broken::FragmentedControl)
        );
        assert_eq!(
            head(&[0x89, 0xFE, 0, 126, 1, 2, 3, 4], true),
            Err(Broken::ControlTooLong)
        );
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(head(&huge, true).unwrap().len, 1 << 63, "not truncated");
    }

    #[test]
    fn masking_is_an_involution_at_any_offset() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for (i, byte) in whole.iter().enumerate() {
            assert_eq!(*byte, data[i] ^ key[i % 4]);
        }
        // In pieces, each with its payload offset.
        let mut pieces = data.clone();
        let mut at = 0;
        for len in [3, 8, 13, 1, 500, 476] {
            apply_mask(&mut pieces[at..at + len], key, at as u64);
            at += len;
        }
        assert_eq!(pieces, whole);
        apply_mask(&mut whole, key, 0);
        assert_eq!(whole, data);
    }

    #[test]
    fn copying_masked_equals_masking_a_copy_at_any_offset() {
        let key = [0x5E, 0x01, 0xF0, 0x9C];
        let data: Vec<u8> = (0..=255u8).cycle().take(777).collect();
        for (from, len) in [(0, 777), (1, 7), (3, 16), (5, 300), (770, 7)] {
            let src = &data[from..from + len];
            let mut want = src.to_vec();
            apply_mask(&mut want, key, from as u64);
            let mut got = vec![0; len];
            copy_masked(&mut got, src, Some(key), from as u64);
            assert_eq!(got, want, "from {from}, {len} bytes");
            copy_masked(&mut got, src, None, 0);
            assert_eq!(got, src, "no key: a plain copy");
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]), Ok(CloseBody::Empty));
        assert_eq!(parse_close(&[3]), Err(Broken::CloseCode));
        assert_eq!(
            parse_close(&[0x03, 0xE8, b'o', b'k']),
            Ok(CloseBody::Code(1000))
        );
        assert_eq!(parse_close(&[0x03, 0xED]), Err(Broken::CloseCode), "1005");
        assert_eq!(parse_close(&[0x03, 0xEC]), Err(Broken::CloseCode), "1004");
        assert_eq!(parse_close(&[0x0B, 0xB8]), Ok(CloseBody::Code(3000)));
        assert_eq!(
            parse_close(&[0x03, 0xE8, 0xFF, 0xFE]),
            Ok(CloseBody::BadReason(1000))
        );
    }

    #[test]
    fn mask_keys_vary() {
        let mut keys = MaskKeys::new();
        let a = keys.next_key();
        let b = keys.next_key();
        assert_ne!(a, b);
    }
}
