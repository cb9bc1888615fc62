//! What the mesh looks like at one moment ([`MeshStatus`]): every peer's
//! state, and the node-wide counters. Operators read it through the admin
//! endpoint's `/replicaz` and `/metrics`.

use std::{net::SocketAddr, time::SystemTime};

use crate::error::FailureReason;

/// Which end of the pair a node is for one peer (the lower id dials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkDirection {
    /// This node dials the peer (its id is higher than ours).
    Dial,
    /// The peer dials this node (its id is lower).
    Accept,
}

impl LinkDirection {
    /// `"dial"` or `"accept"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dial => "dial",
            Self::Accept => "accept",
        }
    }
}

/// Where one peer's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerState {
    /// An authenticated connection is live.
    Connected,
    /// Dialing: the TCP dial, TLS or the replica handshake is under way
    /// (dial direction); or waiting for the peer to dial us (accept
    /// direction).
    Connecting,
    /// The last dial failed or the connection was lost; the next dial waits
    /// for its backoff delay (dial direction only).
    Backoff,
    /// The last handshake was turned down: the peer refused us (a non-zero
    /// status, a MAC that did not verify), or we refused the peer. The
    /// dialer keeps retrying with backoff; `last_error` says why.
    Refused,
}

impl PeerState {
    /// `"connected"`, `"connecting"`, `"backoff"` or `"refused"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Connecting => "connecting",
            Self::Backoff => "backoff",
            Self::Refused => "refused",
        }
    }
}

/// One configured peer, now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStatus {
    /// Its replica id.
    pub id: u8,
    /// Where it listens (from the configuration).
    pub addr: SocketAddr,
    /// Who dials.
    pub direction: LinkDirection,
    /// Where its link stands.
    pub state: PeerState,
    /// When it entered `state`.
    pub since: SystemTime,
    /// The shard that owns the live connection, when connected.
    pub shard: Option<u16>,
    /// Why the last attempt or connection ended, if one did.
    pub last_error: Option<String>,
    /// Dials to it so far (dial direction).
    pub dials: u64,
    /// Authenticated connections with it so far.
    pub connections: u64,
}

/// The whole mesh of this node, now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStatus {
    /// This node's replica id.
    pub self_id: u8,
    /// The cluster id.
    pub cluster: u128,
    /// Whether the replica plane runs over TLS.
    pub tls: bool,
    /// Every configured peer, in configuration order.
    pub peers: Vec<PeerStatus>,
    /// Dials made (all peers).
    pub dials: u64,
    /// Dials made after a failed dial, a refusal or a lost connection.
    pub reconnects: u64,
    /// Handshakes that authenticated and registered a connection.
    pub handshakes: u64,
    /// Handshakes that failed, by reason (every reason, in
    /// [`FailureReason::ALL`] order).
    pub handshake_failures: Vec<(FailureReason, u64)>,
    /// Application frames from an authenticated replica whose `cluster` or
    /// `replica` field was not its own; each closed that connection.
    pub frames_rejected: u64,
}

impl MeshStatus {
    /// How many peers are connected now.
    pub fn connected(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.state == PeerState::Connected)
            .count()
    }

    /// The peer with replica id `id`, if configured.
    pub fn peer(&self, id: u8) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Failures counted for `reason`.
    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.handshake_failures
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}
