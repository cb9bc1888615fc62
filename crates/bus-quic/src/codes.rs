//! QUIC application error codes of the bus (spec §7), used in
//! `CONNECTION_CLOSE`, `STOP_SENDING` and `RESET_STREAM`.
//!
//! | code | when |
//! |---:|---|
//! | `0x0` | ordinary close: no `Goodbye`, or `Goodbye(Normal)` |
//! | `0x1000 + reason` | a `Goodbye` with that reason code (spec §3) that is not a protocol violation, e.g. `0x1001` shutting down, `0x1005` idle, `0x1009` evicted |
//! | `0x1004` | a protocol violation (`FrameTooLarge`, `MalformedFrame`, `ChecksumMismatch`, `ProtocolViolation`), after the `Goodbye` |
//! | `0x1010` | a stream refused: a further stream, or a handshake without ALPN `bus.v1` |

use bus_core::GoodbyeReason;
use compio_quic::VarInt;

/// Ordinary close.
pub const NO_ERROR: VarInt = VarInt::from_u32(0);
/// Base of the codes that mirror a `Goodbye` reason.
pub const GOODBYE_BASE: u32 = 0x1000;
/// The node is shutting down (`Goodbye(ShuttingDown)`).
pub const SHUTTING_DOWN: VarInt = VarInt::from_u32(GOODBYE_BASE + 1);
/// A protocol violation (spec §7).
pub const PROTOCOL_VIOLATION: VarInt = VarInt::from_u32(0x1004);
/// A stream refused. Not sent by this crate since the server grants credit
/// for one bidirectional stream only (a second cannot be opened); kept so
/// peers and older releases agree on its meaning.
pub const STREAM_REFUSED: VarInt = VarInt::from_u32(0x1010);

/// The `CONNECTION_CLOSE` code that goes with the `Goodbye` sent (if any).
pub const fn for_goodbye(reason: Option<GoodbyeReason>) -> VarInt {
    match reason {
        None | Some(GoodbyeReason::Normal) => NO_ERROR,
        Some(
            GoodbyeReason::FrameTooLarge
            | GoodbyeReason::MalformedFrame
            | GoodbyeReason::ChecksumMismatch
            | GoodbyeReason::ProtocolViolation,
        ) => PROTOCOL_VIOLATION,
        Some(other) => match other.code().checked_add(GOODBYE_BASE) {
            Some(code) => VarInt::from_u32(code),
            None => NO_ERROR,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbye_reasons_map_to_documented_codes() {
        assert_eq!(for_goodbye(None), NO_ERROR);
        assert_eq!(for_goodbye(Some(GoodbyeReason::Normal)), NO_ERROR);
        assert_eq!(
            for_goodbye(Some(GoodbyeReason::ShuttingDown)),
            SHUTTING_DOWN
        );
        for violation in [
            GoodbyeReason::FrameTooLarge,
            GoodbyeReason::MalformedFrame,
            GoodbyeReason::ChecksumMismatch,
            GoodbyeReason::ProtocolViolation,
        ] {
            assert_eq!(for_goodbye(Some(violation)), PROTOCOL_VIOLATION);
        }
        assert_eq!(
            for_goodbye(Some(GoodbyeReason::Evicted)),
            VarInt::from_u32(0x1009)
        );
        assert_eq!(
            for_goodbye(Some(GoodbyeReason::Unknown(u32::MAX))),
            NO_ERROR
        );
    }
}
