//! How a replica handshake ends when it does not authenticate: a
//! [`Refusal`] (the acceptor's status byte) or a [`Failure`] (which costs a
//! `Goodbye(HandshakeFailed)`), and the one mapping from each to what the
//! peer sees.

use bus_core::{Command, FrameError, Goodbye, GoodbyeReason};

/// Why an acceptor refused a `ReplicaHello`: the non-zero status of its
/// `ReplicaChallenge` (spec §4). A refusal is not a failure of
/// authentication; the dialer closes and, for a transient one
/// ([`Duplicate`](Self::Duplicate)), tries again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Status 1: the `replica` id is not one of the acceptor's configured
    /// peers.
    #[error("refused with status 1: the acceptor does not know this replica id")]
    UnknownReplica,
    /// Status 2: the `cluster` differs from the acceptor's.
    #[error("refused with status 2: the acceptor belongs to another cluster")]
    WrongCluster,
    /// Status 3: the acceptor already has a live authenticated connection
    /// from this id.
    #[error("refused with status 3: the acceptor already has a connection from this replica")]
    Duplicate,
    /// Status 4: the dialer's id is not lower than the acceptor's (the lower
    /// id of each pair dials).
    #[error("refused with status 4: the lower id of each pair dials, not this one")]
    WrongDirection,
    /// A status this version does not know (5..=255), kept so that a newer
    /// peer's reason is reported rather than lost.
    #[error("refused with unknown status {0}")]
    Unknown(u8),
}

impl Refusal {
    /// The status byte (`command_area[64]`), never 0.
    pub const fn status(self) -> u8 {
        match self {
            Self::UnknownReplica => 1,
            Self::WrongCluster => 2,
            Self::Duplicate => 3,
            Self::WrongDirection => 4,
            Self::Unknown(status) => status,
        }
    }

    /// The refusal a status byte means; `None` for 0 (ok).
    pub const fn from_status(status: u8) -> Option<Self> {
        match status {
            0 => None,
            1 => Some(Self::UnknownReplica),
            2 => Some(Self::WrongCluster),
            3 => Some(Self::Duplicate),
            4 => Some(Self::WrongDirection),
            other => Some(Self::Unknown(other)),
        }
    }
}

/// Why a handshake failed. Every failure is answered with
/// `Goodbye(HandshakeFailed)` and a close (spec §4), except
/// [`PeerGoodbye`](Self::PeerGoodbye): a peer that said Goodbye has stopped
/// reading (spec §3), so nothing is sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The frame breaks a rule of spec §1 (size, protocol, command, a
    /// checksum), or is not sealed; handshake frames always are.
    #[error("invalid handshake frame: {0}")]
    Malformed(FrameError),
    /// A frame other than the next handshake message: an application frame,
    /// a `Ping`, or a handshake message out of order.
    #[error("expected {expected:?} (command {}), got command {got}", expected.as_u8())]
    UnexpectedCommand {
        /// The message the state machine waited for.
        expected: Command,
        /// The command byte that arrived.
        got: u8,
    },
    /// The peer sent `Goodbye` instead of the next message.
    #[error("the peer closed the handshake: {}", describe(.0))]
    PeerGoodbye(Goodbye),
    /// The frame's `cluster` differs from ours.
    #[error("cluster {got:#x} differs from ours ({expected:#x})")]
    WrongCluster {
        /// Our cluster id.
        expected: u128,
        /// The frame's.
        got: u128,
    },
    /// The frame's `replica` is not the id this handshake is with.
    #[error("replica id {got} where this handshake is with {expected}")]
    WrongReplica {
        /// The peer's id as this handshake knows it.
        expected: u8,
        /// The frame's `replica`.
        got: u8,
    },
    /// The peer's MAC verifies with none of our keys: a different PSK, a
    /// relay (another TLS binding), or a replayed message.
    #[error("the peer's MAC verifies with none of our keys (wrong PSK, relay or replay)")]
    BadMac,
}

impl Failure {
    /// The Goodbye reason we send for this failure: `HandshakeFailed`, or
    /// `None` when the peer already said Goodbye.
    pub const fn goodbye_reason(&self) -> Option<GoodbyeReason> {
        match self {
            Self::PeerGoodbye(_) => None,
            _ => Some(GoodbyeReason::HandshakeFailed),
        }
    }
}

fn describe(goodbye: &Goodbye) -> String {
    if goodbye.detail.is_empty() {
        goodbye.reason.to_string()
    } else {
        format!("{} ({})", goodbye.reason, goodbye.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        assert_eq!(Refusal::from_status(0), None);
        for status in 1..=u8::MAX {
            assert_eq!(
                Refusal::from_status(status).map(Refusal::status),
                Some(status)
            );
        }
        assert_eq!(Refusal::from_status(3), Some(Refusal::Duplicate));
        assert_eq!(Refusal::from_status(9), Some(Refusal::Unknown(9)));
    }

    #[test]
    fn every_failure_but_a_goodbye_answers_handshake_failed() {
        let goodbye = Goodbye {
            reason: GoodbyeReason::ShuttingDown,
            detail: String::new(),
        };
        assert_eq!(Failure::PeerGoodbye(goodbye).goodbye_reason(), None);
        assert_eq!(
            Failure::BadMac.goodbye_reason(),
            Some(GoodbyeReason::HandshakeFailed)
        );
        assert_eq!(
            Failure::Malformed(FrameError::NotSealed).goodbye_reason(),
            Some(GoodbyeReason::HandshakeFailed)
        );
    }
}
