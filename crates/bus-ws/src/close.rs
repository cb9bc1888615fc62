//! What the peer sees when a WebSocket connection ends: the one mapping from
//! a bus close cause to a WebSocket close code (RFC 6455 §7.4.1).
//!
//! | cause | close code |
//! |-------|-----------:|
//! | `Goodbye(Normal)`, `Goodbye(IdleTimeout)`, no Goodbye (peer closed) | 1000 normal |
//! | `Goodbye(ShuttingDown)` | 1001 going away |
//! | `Goodbye(MalformedFrame)`, `Goodbye(ChecksumMismatch)`, `Goodbye(ProtocolViolation)`, `Goodbye(HandshakeFailed)`; a message whose length differs from the frame's `size` | 1002 protocol error |
//! | a text message | 1003 unsupported data |
//! | `Goodbye(SlowConsumer)`, `Goodbye(Evicted)` | 1008 policy violation |
//! | `Goodbye(FrameTooLarge)`; a message above `max_message_size` | 1009 message too big |
//! | a reason code this version does not know | 1000 normal |
//!
//! The bus sends its `Goodbye` frame first (spec §3), then the close frame
//! carries the code; the reason text of the close frame is the Goodbye
//! reason's name.

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use bus_core::{FrameError, GoodbyeReason};

/// The close code for a connection the bus closes with `reason` (`None`:
/// no Goodbye, for example after the peer closed).
pub fn close_code(reason: Option<GoodbyeReason>) -> CloseCode {
    match reason {
        Some(GoodbyeReason::ShuttingDown) => CloseCode::Away,
        Some(GoodbyeReason::FrameTooLarge) => CloseCode::Size,
        Some(
            GoodbyeReason::MalformedFrame
            | GoodbyeReason::ChecksumMismatch
            | GoodbyeReason::ProtocolViolation
            | GoodbyeReason::HandshakeFailed,
        ) => CloseCode::Protocol,
        Some(GoodbyeReason::SlowConsumer | GoodbyeReason::Evicted) => CloseCode::Policy,
        // Normal, IdleTimeout, no Goodbye, and codes this version does not know.
        _ => CloseCode::Normal,
    }
}

/// The close code for a frame the reader refused. It is more specific than
/// the Goodbye reason where WebSocket has a code for it (a text message is
/// `MalformedFrame` to the bus but 1003 to WebSocket).
pub fn violation_close_code(err: FrameError) -> CloseCode {
    match err {
        FrameError::TextMessage => CloseCode::Unsupported,
        other => close_code(Some(other.goodbye_reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_goodbye_reason_has_its_code() {
        use GoodbyeReason as R;
        let cases = [
            (None, 1000),
            (Some(R::Normal), 1000),
            (Some(R::ShuttingDown), 1001),
            (Some(R::FrameTooLarge), 1009),
            (Some(R::MalformedFrame), 1002),
            (Some(R::ChecksumMismatch), 1002),
            (Some(R::IdleTimeout), 1000),
            (Some(R::SlowConsumer), 1008),
            (Some(R::HandshakeFailed), 1002),
            (Some(R::ProtocolViolation), 1002),
            (Some(R::Evicted), 1008),
            (Some(R::Unknown(77)), 1000),
        ];
        for (reason, code) in cases {
            assert_eq!(u16::from(close_code(reason)), code, "{reason:?}");
        }
    }

    #[test]
    fn violations_map_to_their_codes() {
        let cases = [
            (FrameError::TextMessage, 1003),
            (
                FrameError::MessageLength {
                    len: 300,
                    size: 256,
                },
                1002,
            ),
            (FrameError::TooLarge { size: 2, max: 1 }, 1009),
            (FrameError::TooSmall { size: 1 }, 1002),
            (FrameError::BodyChecksum, 1002),
        ];
        for (err, code) in cases {
            assert_eq!(u16::from(violation_close_code(err)), code, "{err}");
        }
    }
}
