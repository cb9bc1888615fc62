//! `Goodbye` (spec §3): the reason codes and the frame that carries them.

use crate::{
    buf::{Frame, FrameMut},
    header::Command,
    limits::GOODBYE_DETAIL_MAX_BYTES,
};

/// Why a connection is being closed on purpose (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GoodbyeReason {
    /// 0: ordinary close requested by the application.
    Normal,
    /// 1: the node is shutting down gracefully.
    ShuttingDown,
    /// 2: a received `size` exceeded `max_message_size`.
    FrameTooLarge,
    /// 3: bad `size` (< 256), `protocol`, or `command`.
    MalformedFrame,
    /// 4: a sealed frame failed verification.
    ChecksumMismatch,
    /// 5: nothing was received within the idle timeout.
    IdleTimeout,
    /// 6: the peer's outbound queue overflowed.
    SlowConsumer,
    /// 7: replica authentication or cluster check failed.
    HandshakeFailed,
    /// 8: a bus command arrived where it is not allowed.
    ProtocolViolation,
    /// 9: the application closed this client on purpose.
    Evicted,
    /// A code this version does not know; kept so a newer peer's reason is
    /// reported rather than lost.
    Unknown(u32),
}

impl GoodbyeReason {
    /// The wire code.
    pub const fn code(self) -> u32 {
        match self {
            Self::Normal => 0,
            Self::ShuttingDown => 1,
            Self::FrameTooLarge => 2,
            Self::MalformedFrame => 3,
            Self::ChecksumMismatch => 4,
            Self::IdleTimeout => 5,
            Self::SlowConsumer => 6,
            Self::HandshakeFailed => 7,
            Self::ProtocolViolation => 8,
            Self::Evicted => 9,
            Self::Unknown(code) => code,
        }
    }

    /// The reason for a wire code.
    pub const fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Normal,
            1 => Self::ShuttingDown,
            2 => Self::FrameTooLarge,
            3 => Self::MalformedFrame,
            4 => Self::ChecksumMismatch,
            5 => Self::IdleTimeout,
            6 => Self::SlowConsumer,
            7 => Self::HandshakeFailed,
            8 => Self::ProtocolViolation,
            9 => Self::Evicted,
            other => Self::Unknown(other),
        }
    }
}

impl std::fmt::Display for GoodbyeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown reason {code}"),
            known => write!(f, "{known:?}"),
        }
    }
}

/// A decoded `Goodbye`: reason and detail text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Why the peer closed.
    pub reason: GoodbyeReason,
    /// Human-readable detail (at most 122 bytes of UTF-8; invalid UTF-8 is
    /// replaced, an over-long length is clamped).
    pub detail: String,
}

impl Goodbye {
    /// Builds a sealed `Goodbye` frame. `detail` is cut to 122 bytes on a
    /// character boundary.
    pub fn frame(reason: GoodbyeReason, detail: &str) -> Frame {
        let mut end = detail.len().min(GOODBYE_DETAIL_MAX_BYTES);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        let detail = &detail.as_bytes()[..end];
        let mut frame = FrameMut::new(Command::Goodbye, 0);
        let area = frame.header_mut().command_area_mut();
        area[0..4].copy_from_slice(&reason.code().to_le_bytes());
        #[allow(clippy::cast_possible_truncation, reason = "end <= 122")]
        area[4..6].copy_from_slice(&(end as u16).to_le_bytes());
        area[6..6 + end].copy_from_slice(detail);
        frame.seal();
        frame.freeze()
    }

    /// Decodes the `command_area` of a `Goodbye` frame.
    pub fn decode(command_area: &[u8; 128]) -> Self {
        let code = u32::from_le_bytes([
            command_area[0],
            command_area[1],
            command_area[2],
            command_area[3],
        ]);
        let len = usize::from(u16::from_le_bytes([command_area[4], command_area[5]]))
            .min(GOODBYE_DETAIL_MAX_BYTES);
        Self {
            reason: GoodbyeReason::from_code(code),
            detail: String::from_utf8_lossy(&command_area[6..6 + len]).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=12 {
            assert_eq!(GoodbyeReason::from_code(code).code(), code);
        }
        assert_eq!(GoodbyeReason::from_code(9), GoodbyeReason::Evicted);
    }

    #[test]
    fn goodbye_frame_round_trips_and_clamps_detail() {
        let long = "é".repeat(100); // 200 bytes
        let frame = Goodbye::frame(GoodbyeReason::SlowConsumer, &long);
        let header = frame.header();
        assert_eq!(header.command(), Command::Goodbye);
        assert!(header.is_sealed());
        let decoded = Goodbye::decode(header.command_area());
        assert_eq!(decoded.reason, GoodbyeReason::SlowConsumer);
        assert_eq!(decoded.detail.len(), 122);
        assert!(long.starts_with(&decoded.detail));
    }
}
