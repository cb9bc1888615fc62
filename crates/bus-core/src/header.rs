//! The fixed 256-byte frame header (spec §1) and its commands (spec §2).
//!
//! [`Header`] is a `#[repr(C)]` view over the first 256 bytes of a frame
//! buffer: every field is stored as little-endian bytes, so any 256 bytes are
//! a valid `Header` and viewing a received buffer needs no copy and no
//! `unsafe` beyond the cast in [`crate::buf`]. Accessors decode and encode the
//! integers. This module does no I/O and knows nothing of connections.

use std::mem::{align_of, offset_of, size_of};

use xxhash_rust::xxh3::xxh3_128;

use crate::{
    goodbye::GoodbyeReason,
    limits::{HEADER_SIZE, MIN_MAX_MESSAGE_SIZE_BYTES as MIN_FRAME_SIZE, PROTOCOL_VERSION},
};

/// The 256-byte frame header, laid out exactly as on the wire.
#[repr(C, align(16))]
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    checksum: [u8; 16],
    checksum_body: [u8; 16],
    cluster: [u8; 16],
    size: [u8; 4],
    view: [u8; 4],
    release: [u8; 4],
    command: u8,
    replica: u8,
    protocol: [u8; 2],
    client: [u8; 16],
    request: [u8; 8],
    reserved_frame: [u8; 40],
    command_area: [u8; 128],
}

// The layout of spec §1, checked at compile time.
const _: () = {
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(align_of::<Header>() == 16);
    assert!(offset_of!(Header, checksum) == 0);
    assert!(offset_of!(Header, checksum_body) == 16);
    assert!(offset_of!(Header, cluster) == 32);
    assert!(offset_of!(Header, size) == 48);
    assert!(offset_of!(Header, view) == 52);
    assert!(offset_of!(Header, release) == 56);
    assert!(offset_of!(Header, command) == 60);
    assert!(offset_of!(Header, replica) == 61);
    assert!(offset_of!(Header, protocol) == 62);
    assert!(offset_of!(Header, client) == 64);
    assert!(offset_of!(Header, request) == 80);
    assert!(offset_of!(Header, reserved_frame) == 88);
    assert!(offset_of!(Header, command_area) == 128);
};

/// A frame's `command` byte, classified (spec §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0: never valid on the wire.
    Invalid,
    /// 1: liveness probe, answered by the bus itself.
    Ping,
    /// 2: answer to `Ping`, consumed by the bus.
    Pong,
    /// 3: replica handshake step 1.
    ReplicaHello,
    /// 4: replica handshake step 2.
    ReplicaChallenge,
    /// 5: replica handshake step 3.
    ReplicaFinish,
    /// 6: the sender is closing the connection.
    Goodbye,
    /// 7–15: reserved; a receiver treats them as malformed.
    Reserved(u8),
    /// 16–255: delivered to the application unchanged.
    Application(u8),
}

impl Command {
    /// First command value that belongs to the application.
    pub const FIRST_APPLICATION: u8 = 16;

    /// Classifies a raw command byte.
    pub const fn from_u8(raw: u8) -> Self {
        match raw {
            0 => Self::Invalid,
            1 => Self::Ping,
            2 => Self::Pong,
            3 => Self::ReplicaHello,
            4 => Self::ReplicaChallenge,
            5 => Self::ReplicaFinish,
            6 => Self::Goodbye,
            7..=15 => Self::Reserved(raw),
            _ => Self::Application(raw),
        }
    }

    /// The raw command byte.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Invalid => 0,
            Self::Ping => 1,
            Self::Pong => 2,
            Self::ReplicaHello => 3,
            Self::ReplicaChallenge => 4,
            Self::ReplicaFinish => 5,
            Self::Goodbye => 6,
            Self::Reserved(raw) | Self::Application(raw) => raw,
        }
    }
}

/// Why a header (or the frame it starts) is refused (spec §1).
///
/// Each variant maps to exactly one Goodbye reason through
/// [`FrameError::goodbye_reason`]; that is the only place the mapping lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// `size` exceeds the receiver's `max_message_size`.
    #[error("frame size {size} exceeds max_message_size {max}")]
    TooLarge {
        /// The size as received: the `size` field, or the length a message
        /// transport announced (a WebSocket frame header can announce up to
        /// 2^63 - 1 bytes, which must not be truncated).
        size: u64,
        /// The receiver's limit.
        max: u32,
    },
    /// `size` is smaller than the header itself.
    #[error("frame size {size} is below the 256-byte header")]
    TooSmall {
        /// The `size` field as received.
        size: u32,
    },
    /// `protocol` is not 1.
    #[error("unsupported protocol version {protocol} (expected 1)")]
    BadProtocol {
        /// The `protocol` field as received.
        protocol: u16,
    },
    /// `command` is 0 or in the reserved range 7–15.
    #[error("invalid or reserved command {command}")]
    BadCommand {
        /// The `command` field as received.
        command: u8,
    },
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The body checksum does not match.
    #[error("body checksum mismatch")]
    BodyChecksum,
    /// The frame is not sealed but this plane requires sealed frames.
    #[error("frame is not sealed but this connection requires sealed frames")]
    NotSealed,
    /// A message transport (WebSocket) carried a message that is not exactly
    /// one frame: its length differs from the frame's `size`, or it is too
    /// short to hold a header.
    #[error("a {len}-byte message does not carry exactly one frame (its size field says {size})")]
    MessageLength {
        /// Length of the message.
        len: u64,
        /// The `size` field, or 0 when the message is too short to hold it.
        size: u32,
    },
    /// A message transport carried a message of a type that never holds a
    /// frame (a WebSocket text message).
    #[error("text message: frames travel only in binary messages")]
    TextMessage,
    /// A message transport's close carried a reason that is not UTF-8 (a
    /// WebSocket close frame, RFC 6455 §8.1).
    #[error("close reason is not valid UTF-8")]
    CloseReasonUtf8,
    /// The frame is larger than the node's whole inbound budget, so it could
    /// never be received.
    #[error("frame size {size} exceeds the node's inbound budget of {budget} bytes")]
    OverBudget {
        /// The `size` field as received.
        size: u32,
        /// The node's inbound budget.
        budget: u64,
    },
}

impl FrameError {
    /// The Goodbye reason a receiver sends for this error (spec §3).
    pub const fn goodbye_reason(self) -> GoodbyeReason {
        match self {
            Self::TooLarge { .. } | Self::OverBudget { .. } => GoodbyeReason::FrameTooLarge,
            Self::TooSmall { .. }
            | Self::BadProtocol { .. }
            | Self::BadCommand { .. }
            | Self::MessageLength { .. }
            | Self::TextMessage
            | Self::CloseReasonUtf8 => GoodbyeReason::MalformedFrame,
            // Spec §4: an unsealed frame where sealing is required is a
            // checksum mismatch.
            Self::HeaderChecksum | Self::BodyChecksum | Self::NotSealed => {
                GoodbyeReason::ChecksumMismatch
            }
        }
    }
}

impl Default for Header {
    /// A header with `size = 256`, `protocol = 1` and every other field zero.
    /// Its command is 0, so it must be given one before it is sent.
    fn default() -> Self {
        let mut h = Self::zeroed();
        h.set_size(MIN_FRAME_SIZE);
        h.set_protocol(PROTOCOL_VERSION);
        h
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("checksum", &format_args!("{:#034x}", self.checksum()))
            .field(
                "checksum_body",
                &format_args!("{:#034x}", self.checksum_body()),
            )
            .field("cluster", &self.cluster())
            .field("size", &self.size())
            .field("view", &self.view())
            .field("release", &self.release())
            .field("command", &self.command())
            .field("replica", &self.replica())
            .field("protocol", &self.protocol())
            .field("client", &format_args!("{:#x}", self.client()))
            .field("request", &self.request())
            .finish_non_exhaustive()
    }
}

macro_rules! le_field {
    ($(#[$doc:meta])* $get:ident, $set:ident, $ty:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $get(&self) -> $ty {
            <$ty>::from_le_bytes(self.$get)
        }

        #[doc = concat!("Sets `", stringify!($get), "`.")]
        #[inline]
        pub fn $set(&mut self, value: $ty) {
            self.$get = value.to_le_bytes();
        }
    };
}

impl Header {
    /// 256 zero bytes. Not a valid frame header (protocol and command are 0).
    pub const fn zeroed() -> Self {
        Self {
            checksum: [0; 16],
            checksum_body: [0; 16],
            cluster: [0; 16],
            size: [0; 4],
            view: [0; 4],
            release: [0; 4],
            command: 0,
            replica: 0,
            protocol: [0; 2],
            client: [0; 16],
            request: [0; 8],
            reserved_frame: [0; 40],
            command_area: [0; 128],
        }
    }

    /// A header for a frame of `command` with a body of `body_len` bytes.
    ///
    /// # Panics
    /// If the frame would be larger than `u32::MAX` bytes.
    pub fn new(command: Command, body_len: usize) -> Self {
        let size = u32::try_from(HEADER_SIZE + body_len).expect("frame size fits in u32");
        let mut h = Self::default();
        h.set_size(size);
        h.set_command(command);
        h
    }

    le_field!(
        /// XXH3-128 of header bytes 16..256; `0` means the frame is not sealed.
        checksum, set_checksum, u128
    );
    le_field!(
        /// XXH3-128 of the body; meaningful only when the frame is sealed.
        checksum_body, set_checksum_body, u128
    );
    le_field!(
        /// Cluster id; the replica plane rejects a mismatch.
        cluster, set_cluster, u128
    );
    le_field!(
        /// Total frame length in bytes, header included.
        size, set_size, u32
    );
    le_field!(
        /// Application-defined.
        view, set_view, u32
    );
    le_field!(
        /// Application-defined.
        release, set_release, u32
    );
    le_field!(
        /// Protocol version; must be 1.
        protocol, set_protocol, u16
    );
    le_field!(
        /// Client id (spec §5); `0` when unknown to the sender.
        client, set_client, u128
    );
    le_field!(
        /// Correlation id; a reply carries the id of the frame it answers.
        request, set_request, u64
    );

    /// The raw command byte.
    #[inline]
    pub fn command_raw(&self) -> u8 {
        self.command
    }

    /// The command, classified.
    #[inline]
    pub fn command(&self) -> Command {
        Command::from_u8(self.command)
    }

    /// Sets the command.
    #[inline]
    pub fn set_command(&mut self, command: Command) {
        self.command = command.as_u8();
    }

    /// Sender's replica id on the replica plane, else 0.
    #[inline]
    pub fn replica(&self) -> u8 {
        self.replica
    }

    /// Sets `replica`.
    #[inline]
    pub fn set_replica(&mut self, replica: u8) {
        self.replica = replica;
    }

    /// Application-defined 40 bytes.
    #[inline]
    pub fn reserved_frame(&self) -> &[u8; 40] {
        &self.reserved_frame
    }

    /// Application-defined 40 bytes, mutable.
    #[inline]
    pub fn reserved_frame_mut(&mut self) -> &mut [u8; 40] {
        &mut self.reserved_frame
    }

    /// Per-command payload (128 bytes).
    #[inline]
    pub fn command_area(&self) -> &[u8; 128] {
        &self.command_area
    }

    /// Per-command payload, mutable.
    #[inline]
    pub fn command_area_mut(&mut self) -> &mut [u8; 128] {
        &mut self.command_area
    }

    /// Length of the body this header announces (`size - 256`, saturating).
    #[inline]
    pub fn body_len(&self) -> usize {
        (self.size() as usize).saturating_sub(HEADER_SIZE)
    }

    /// Whether the frame claims to be sealed (`checksum != 0`).
    #[inline]
    pub fn is_sealed(&self) -> bool {
        self.checksum != [0; 16]
    }

    /// The header as its 256 wire bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; HEADER_SIZE] {
        // SAFETY: `Header` is `repr(C)`, exactly 256 bytes (asserted above),
        // made only of byte arrays and bytes, so it has no padding and every
        // byte is initialised.
        unsafe { &*std::ptr::from_ref(self).cast::<[u8; HEADER_SIZE]>() }
    }

    /// The header as its 256 wire bytes, mutable.
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8; HEADER_SIZE] {
        // SAFETY: as in `as_bytes`; additionally every bit pattern is a valid
        // `Header`, so arbitrary writes keep it valid.
        unsafe { &mut *std::ptr::from_mut(self).cast::<[u8; HEADER_SIZE]>() }
    }

    /// Copies 256 wire bytes into a header. To view a frame's header in place,
    /// use [`crate::Frame::header`].
    #[inline]
    pub fn from_bytes(bytes: &[u8; HEADER_SIZE]) -> Header {
        let mut h = Header::zeroed();
        h.as_bytes_mut().copy_from_slice(bytes);
        h
    }

    /// Computes the header checksum over bytes 16..256 as they are now.
    #[inline]
    pub fn compute_checksum(&self) -> u128 {
        xxh3_128(&self.as_bytes()[16..])
    }

    /// Checks the rules a receiver enforces on a header before reading its
    /// body (spec §1): size range, protocol, command, and the header checksum
    /// when the frame is sealed.
    pub fn validate(&self, max_message_size_bytes: u32) -> Result<(), FrameError> {
        let size = self.size();
        if size > max_message_size_bytes {
            return Err(FrameError::TooLarge {
                size: u64::from(size),
                max: max_message_size_bytes,
            });
        }
        if (size as usize) < HEADER_SIZE {
            return Err(FrameError::TooSmall { size });
        }
        let protocol = self.protocol();
        if protocol != PROTOCOL_VERSION {
            return Err(FrameError::BadProtocol { protocol });
        }
        match self.command() {
            Command::Invalid | Command::Reserved(_) => {
                return Err(FrameError::BadCommand {
                    command: self.command,
                });
            }
            _ => {}
        }
        if self.is_sealed() && self.compute_checksum() != self.checksum() {
            return Err(FrameError::HeaderChecksum);
        }
        Ok(())
    }
}

/// Seals a frame in place: `checksum_body` over `body`, then `checksum` over
/// header bytes 16..256 (spec §1, sender side).
pub fn seal(header: &mut Header, body: &[u8]) {
    header.set_checksum_body(xxh3_128(body));
    let checksum = header.compute_checksum();
    // A sealed frame's checksum is never 0 (0 means "not sealed"); XXH3-128
    // producing exactly 0 has probability 2^-128, and we keep that case
    // unsealed rather than send a lie.
    header.set_checksum(checksum);
}

/// Verifies a sealed frame's body checksum. Call after
/// [`Header::validate`], which has already checked the header checksum.
pub fn verify_body(header: &Header, body: &[u8]) -> Result<(), FrameError> {
    if header.is_sealed() && xxh3_128(body) != header.checksum_body() {
        return Err(FrameError::BodyChecksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_every_byte() {
        for raw in 0..=u8::MAX {
            assert_eq!(Command::from_u8(raw).as_u8(), raw);
        }
        assert_eq!(Command::from_u8(7), Command::Reserved(7));
        assert_eq!(Command::from_u8(15), Command::Reserved(15));
        assert_eq!(Command::from_u8(16), Command::Application(16));
    }

    #[test]
    fn validate_checks_in_spec_order() {
        let mut h = Header::new(Command::Application(16), 0);
        assert_eq!(h.validate(1024), Ok(()));
        h.set_size(1025);
        assert_eq!(
            h.validate(1024),
            Err(FrameError::TooLarge {
                size: 1025,
                max: 1024
            })
        );
        h.set_size(255);
        assert_eq!(h.validate(1024), Err(FrameError::TooSmall { size: 255 }));
        h.set_size(256);
        h.set_protocol(2);
        assert_eq!(
            h.validate(1024),
            Err(FrameError::BadProtocol { protocol: 2 })
        );
        h.set_protocol(1);
        for bad in [0_u8, 7, 15] {
            h.set_command(Command::from_u8(bad));
            assert_eq!(
                h.validate(1024),
                Err(FrameError::BadCommand { command: bad })
            );
        }
    }

    #[test]
    fn seal_then_verify_and_detect_tampering() {
        let body = b"hello bus";
        let mut h = Header::new(Command::Application(16), body.len());
        seal(&mut h, body);
        assert!(h.is_sealed());
        assert_eq!(h.validate(1 << 20), Ok(()));
        assert_eq!(verify_body(&h, body), Ok(()));
        assert_eq!(verify_body(&h, b"hello bux"), Err(FrameError::BodyChecksum));
        h.set_view(7);
        assert_eq!(h.validate(1 << 20), Err(FrameError::HeaderChecksum));
    }

    #[test]
    fn every_frame_error_maps_to_one_goodbye_reason() {
        use GoodbyeReason as R;
        let cases = [
            (FrameError::TooLarge { size: 2, max: 1 }, R::FrameTooLarge),
            (FrameError::TooSmall { size: 1 }, R::MalformedFrame),
            (FrameError::BadProtocol { protocol: 0 }, R::MalformedFrame),
            (FrameError::BadCommand { command: 0 }, R::MalformedFrame),
            (FrameError::NotSealed, R::ChecksumMismatch),
            (
                FrameError::MessageLength {
                    len: 300,
                    size: 256,
                },
                R::MalformedFrame,
            ),
            (FrameError::TextMessage, R::MalformedFrame),
            (FrameError::HeaderChecksum, R::ChecksumMismatch),
            (FrameError::BodyChecksum, R::ChecksumMismatch),
        ];
        for (err, reason) in cases {
            assert_eq!(err.goodbye_reason(), reason, "{err}");
        }
    }
}
