//! The mesh's errors: [`MeshError`] for setting it up and reloading it,
//! [`HandshakeError`] for one connection attempt that did not become a
//! replica link, and [`FailureReason`], the one mapping from the latter to
//! the label operators see (`/metrics`, `/replicaz`).

use std::time::Duration;

use bus_replica::{Failure, Refusal};

/// The mesh cannot start, or a reload was refused (the running keys and
/// certificates stay in use).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The replica settings break a rule of the mesh.
    #[error(transparent)]
    Config(#[from] bus_replica::ConfigError),
    /// A key file was refused; the message names the field, the file and
    /// the fix.
    #[error(transparent)]
    Key(#[from] bus_replica::KeyFileError),
    /// `tls = true` without the node's certificate.
    #[error("replicas.tls is on but no server certificate was given to the mesh")]
    NoCertificate,
    /// The CA bundle (`replicas.ca_file`) or a peer's name could not be used.
    #[error("replica TLS: {0}")]
    Tls(#[from] bus_tls::TlsError),
}

/// Why one connection attempt (dialed or accepted) did not become an
/// authenticated replica link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The TCP dial failed or timed out.
    #[error("dial failed: {0}")]
    Connect(String),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The TLS session gave no exporter value to bind the MACs to.
    #[error("no TLS exporter value for the replica binding: {0}")]
    NoExporter(String),
    /// No TLS client setup exists for this dialed peer.
    #[error("no TLS client for replica {replica}")]
    NoTlsClient {
        /// The peer.
        replica: u8,
    },
    /// The whole handshake did not finish within `handshake_grace`.
    #[error("handshake did not complete within {0:?}")]
    Timeout(Duration),
    /// The peer closed, or the socket failed, in the middle.
    #[error("connection lost during the handshake: {0}")]
    Io(String),
    /// The acceptor refused with a non-zero status (or we refused the
    /// dialer's Hello).
    #[error("{0}")]
    Refused(Refusal),
    /// Authentication failed (or a message was malformed or out of place);
    /// `Goodbye(HandshakeFailed)` went to the peer where it could.
    #[error("{0}")]
    Failed(Failure),
    /// Both ends authenticated, but by then another connection from the
    /// same replica had been registered (two handshakes raced).
    #[error("replica {0} connected through another connection meanwhile")]
    Raced(u8),
    /// No nonce could be drawn from the OS.
    #[error("{0}")]
    Nonce(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl HandshakeError {
    /// The label of this failure.
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::Connect(_) => FailureReason::Connect,
            Self::Tls(_) | Self::NoExporter(_) | Self::NoTlsClient { .. } => FailureReason::Tls,
            Self::Timeout(_) => FailureReason::Timeout,
            Self::Io(_) | Self::ShuttingDown => FailureReason::Io,
            Self::Refused(refusal) => match refusal {
                Refusal::UnknownReplica => FailureReason::UnknownReplica,
                Refusal::WrongCluster => FailureReason::WrongCluster,
                Refusal::Duplicate => FailureReason::Duplicate,
                Refusal::WrongDirection => FailureReason::WrongDirection,
                _ => FailureReason::UnknownStatus,
            },
            Self::Failed(failure) => match failure {
                Failure::Malformed(_) => FailureReason::Malformed,
                Failure::UnexpectedCommand { .. } => FailureReason::UnexpectedCommand,
                Failure::PeerGoodbye(_) => FailureReason::PeerGoodbye,
                Failure::WrongCluster { .. } => FailureReason::WrongCluster,
                Failure::WrongReplica { .. } => FailureReason::WrongReplica,
                _ => FailureReason::BadMac,
            },
            Self::Raced(_) => FailureReason::Duplicate,
            Self::Nonce(_) => FailureReason::Rng,
        }
    }

    /// Whether the peer (or we, as acceptor) actively turned the
    /// connection down, as opposed to the network failing: `/replicaz`
    /// shows such a peer as `refused`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Failed(_) | Self::Raced(_))
    }
}

/// What a failed handshake is counted as (`bus_replica_handshake_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The TCP dial failed.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// `handshake_grace` ran out.
    Timeout,
    /// The connection broke or closed mid-handshake.
    Io,
    /// Status 1, or a Hello from an id that is not a configured peer.
    UnknownReplica,
    /// Status 2, or a handshake frame of another cluster.
    WrongCluster,
    /// Status 3: a live connection from that replica exists.
    Duplicate,
    /// Status 4: the dialer's id was not the lower one.
    WrongDirection,
    /// A status this version does not know.
    UnknownStatus,
    /// A frame that breaks spec §1 or is unsealed.
    Malformed,
    /// A frame other than the expected handshake message.
    UnexpectedCommand,
    /// The peer said `Goodbye` instead of the next message.
    PeerGoodbye,
    /// The frame's `replica` is not the one this handshake is with.
    WrongReplica,
    /// A MAC that verifies with none of our keys (wrong key, relay, replay).
    BadMac,
    /// The OS random number generator failed.
    Rng,
}

impl FailureReason {
    /// Every reason, in the order of the counters.
    pub const ALL: [Self; 15] = [
        Self::Connect,
        Self::Tls,
        Self::Timeout,
        Self::Io,
        Self::UnknownReplica,
        Self::WrongCluster,
        Self::Duplicate,
        Self::WrongDirection,
        Self::UnknownStatus,
        Self::Malformed,
        Self::UnexpectedCommand,
        Self::PeerGoodbye,
        Self::WrongReplica,
        Self::BadMac,
        Self::Rng,
    ];

    /// The label, in `snake_case`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::UnknownReplica => "unknown_replica",
            Self::WrongCluster => "wrong_cluster",
            Self::Duplicate => "duplicate",
            Self::WrongDirection => "wrong_direction",
            Self::UnknownStatus => "unknown_status",
            Self::Malformed => "malformed",
            Self::UnexpectedCommand => "unexpected_command",
            Self::PeerGoodbye => "peer_goodbye",
            Self::WrongReplica => "wrong_replica",
            Self::BadMac => "bad_mac",
            Self::Rng => "rng",
        }
    }

    /// The index of this reason in [`FailureReason::ALL`].
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
