//! The replica handshake of spec §4 as two sans-IO state machines: a
//! [`Dialer`] and an [`Acceptor`].
//!
//! Each takes the frames the transport received and returns the frame to
//! send and what happened; it does no I/O, reads no clock and spawns
//! nothing, so any transport can drive it and the tests drive it without a
//! socket. What stays with the caller: the `handshake_grace` bound around
//! the whole exchange, closing the connection after a refusal or failure,
//! and the registry that answers "is there a live connection from this id?".
//!
//! ```text
//!  Dialer::start ── Hello ──────────────▶ Acceptor::receive_hello
//!                                           1 command 3, valid, sealed  else Failed
//!                                           2 cluster equal             else Refused(2)
//!                                           3 configured peer id        else Refused(1)
//!                                           4 id lower than ours        else Refused(4)
//!                                           5 no live connection        else Refused(3)
//!  Dialer::receive ◀── Challenge(ok) ───── (next: AwaitingFinish)
//!    status != 0      → Refused
//!    mac_a verifies   → Authenticated ── Finish ──▶ AwaitingFinish::receive_finish
//!    otherwise        → Failed                        mac_d verifies → Authenticated
//!                                                     otherwise      → Failed
//! ```
//!
//! The state machines consume themselves at each step, so a message can
//! only be taken in its place, and a finished handshake cannot be fed
//! again. Each handshake draws its own nonce when it starts, which is what
//! makes a recorded `ReplicaFinish` useless against a later handshake.

use bus_core::Frame;

use crate::{
    auth::{Binding, Direction, KeySlot, Keys, Transcript, TranscriptFields},
    error::{Failure, Refusal},
    limits::NONCE_BYTES,
    message::{self, Challenge, Finish, Hello},
    nonce::{NonceError, NonceSource},
};

/// What a node brings to every handshake.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// The cluster id stamped into every frame and checked on the peer's.
    pub cluster: u128,
    /// This node's replica id.
    pub self_id: u8,
    /// The ids the acceptor takes connections from (the configured peers).
    pub peers: PeerSet,
    /// The signing key and the optional verify-only key.
    pub keys: Keys,
}

impl HandshakeConfig {
    /// A configuration from its parts.
    pub fn new(cluster: u128, self_id: u8, peers: PeerSet, keys: Keys) -> Self {
        Self {
            cluster,
            self_id,
            peers,
            keys,
        }
    }
}

/// Whether `self_id` dials `peer`: the lower id of each pair dials (spec §4).
pub const fn dials(self_id: u8, peer: u8) -> bool {
    self_id < peer
}

/// A set of replica ids, 0 ..= 255, in 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerSet([u64; 4]);

impl PeerSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self([0; 4])
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: u8) -> bool {
        let (word, bit) = Self::slot(id);
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }

    /// Whether `id` is in the set.
    pub const fn contains(&self, id: u8) -> bool {
        let (word, bit) = Self::slot(id);
        self.0[word] & bit != 0
    }

    /// How many ids the set holds.
    pub const fn len(&self) -> usize {
        let mut count = 0;
        let mut i = 0;
        while i < self.0.len() {
            count += self.0[i].count_ones() as usize;
            i += 1;
        }
        count
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|id| self.contains(*id))
    }

    const fn slot(id: u8) -> (usize, u64) {
        ((id / 64) as usize, 1 << (id % 64))
    }
}

impl FromIterator<u8> for PeerSet {
    fn from_iter<I: IntoIterator<Item = u8>>(ids: I) -> Self {
        let mut set = Self::new();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

impl std::fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A peer that proved it holds one of our keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    /// The peer's replica id, which keys the connection from now on.
    pub peer: u8,
    /// Which of our keys verified the peer's MAC: `VerifyOnly` means the
    /// peer still signs with a key this node is rotating to or away from.
    pub verified_with: KeySlot,
}

/// A failed handshake: why, and the `Goodbye(HandshakeFailed)` to send
/// before closing (none when the peer said Goodbye itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// What went wrong.
    pub failure: Failure,
    /// The sealed Goodbye, with our `cluster` and `replica`, to send where
    /// the transport still can.
    pub goodbye: Option<Frame>,
}

impl Failed {
    fn new(failure: Failure, cluster: u128, self_id: u8) -> Self {
        let goodbye = failure
            .goodbye_reason()
            .map(|reason| message::goodbye(cluster, self_id, reason, &failure.to_string()));
        Self { failure, goodbye }
    }
}

// The outcome enums are exhaustive on purpose: a driver must handle every
// way a handshake step can end, and a new one should break its `match`.

/// How the dialer's handshake ended, from the Challenge it received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum DialerOutcome {
    /// `mac_a` verified: send `finish`; the connection belongs to `peer`
    /// from our side. (If the acceptor then refuses our MAC, its
    /// `Goodbye(HandshakeFailed)` arrives as the first frame after.)
    Authenticated {
        /// The sealed `ReplicaFinish` to send.
        finish: Frame,
        /// Who we are connected to.
        peer: Authenticated,
    },
    /// The acceptor refused with a non-zero status: close, send nothing.
    Refused(Refusal),
    /// Send the Goodbye, if any, and close.
    Failed(Failed),
}

/// What the acceptor does with a `ReplicaHello`.
#[derive(Debug)]
#[must_use]
pub enum HelloOutcome {
    /// Send `challenge` (status 0), then give the next frame to `next`.
    Challenge {
        /// The sealed `ReplicaChallenge` carrying `nonce_a` and `mac_a`.
        challenge: Frame,
        /// The handshake, waiting for the dialer's `ReplicaFinish`.
        next: AwaitingFinish,
    },
    /// Send `challenge` (carrying only the status), then close.
    Refused {
        /// The sealed refusal.
        challenge: Frame,
        /// Why.
        refusal: Refusal,
    },
    /// Send the Goodbye, if any, and close.
    Failed(Failed),
}

/// What the acceptor does with the frame after its Challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum FinishOutcome {
    /// `mac_d` verified: register the connection under `peer.peer`.
    Authenticated(Authenticated),
    /// Send the Goodbye, if any, and close.
    Failed(Failed),
}

/// The dialing side of one handshake, waiting for the acceptor's
/// `ReplicaChallenge`.
#[derive(Debug)]
pub struct Dialer {
    cluster: u128,
    self_id: u8,
    peer: u8,
    keys: Keys,
    binding: Binding,
    nonce_d: [u8; NONCE_BYTES],
}

impl Dialer {
    /// Starts a handshake with replica `peer` over a connection whose
    /// channel binding is `binding`: draws `nonce_d` and returns the sealed
    /// `ReplicaHello` to send first.
    ///
    /// The mesh dials only higher ids ([`dials`]); a lower one refuses with
    /// [`Refusal::WrongDirection`].
    pub fn start(
        config: &HandshakeConfig,
        peer: u8,
        binding: Binding,
        nonces: &mut impl NonceSource,
    ) -> Result<(Self, Frame), NonceError> {
        let nonce_d = nonces.nonce()?;
        let hello = Hello {
            cluster: config.cluster,
            replica: config.self_id,
            nonce_d,
        }
        .encode();
        let dialer = Self {
            cluster: config.cluster,
            self_id: config.self_id,
            peer,
            keys: config.keys.clone(),
            binding,
            nonce_d,
        };
        Ok((dialer, hello))
    }

    /// The replica this handshake dials.
    pub fn peer(&self) -> u8 {
        self.peer
    }

    /// Takes the first frame the acceptor sent.
    pub fn receive(self, frame: &Frame) -> DialerOutcome {
        match self.check_challenge(frame) {
            Ok(Ok((slot, transcript))) => {
                let finish = Finish {
                    cluster: self.cluster,
                    replica: self.self_id,
                    mac_d: self.keys.sign(&transcript, Direction::Dialer),
                }
                .encode();
                DialerOutcome::Authenticated {
                    finish,
                    peer: Authenticated {
                        peer: self.peer,
                        verified_with: slot,
                    },
                }
            }
            Ok(Err(refusal)) => DialerOutcome::Refused(refusal),
            Err(failure) => DialerOutcome::Failed(Failed::new(failure, self.cluster, self.self_id)),
        }
    }

    /// The checks on the Challenge, in order: the frame, the status (a
    /// refusal carries the acceptor's own cluster, so it comes before the
    /// cluster check), cluster, replica, `mac_a`.
    fn check_challenge(
        &self,
        frame: &Frame,
    ) -> Result<Result<(KeySlot, Transcript), Refusal>, Failure> {
        let challenge = Challenge::decode(frame)?;
        if let Some(refusal) = challenge.refusal() {
            return Ok(Err(refusal));
        }
        if challenge.cluster != self.cluster {
            return Err(Failure::WrongCluster {
                expected: self.cluster,
                got: challenge.cluster,
            });
        }
        if challenge.replica != self.peer {
            return Err(Failure::WrongReplica {
                expected: self.peer,
                got: challenge.replica,
            });
        }
        let transcript = Transcript::new(&TranscriptFields {
            cluster: self.cluster,
            dialer_id: self.self_id,
            acceptor_id: self.peer,
            nonce_d: &self.nonce_d,
            nonce_a: &challenge.nonce_a,
            binding: &self.binding,
        });
        let slot = self
            .keys
            .verify(&transcript, Direction::Acceptor, &challenge.mac_a)
            .ok_or(Failure::BadMac)?;
        Ok(Ok((slot, transcript)))
    }
}

/// The accepting side of one handshake, waiting for the dialer's
/// `ReplicaHello`.
#[derive(Debug)]
pub struct Acceptor {
    config: HandshakeConfig,
    binding: Binding,
    nonce_a: [u8; NONCE_BYTES],
}

impl Acceptor {
    /// Starts a handshake on an accepted connection whose channel binding is
    /// `binding`, drawing `nonce_a` now.
    pub fn new(
        config: &HandshakeConfig,
        binding: Binding,
        nonces: &mut impl NonceSource,
    ) -> Result<Self, NonceError> {
        Ok(Self {
            config: config.clone(),
            binding,
            nonce_a: nonces.nonce()?,
        })
    }

    /// Takes the first frame the dialer sent. `is_live(id)` says whether a
    /// live authenticated connection from replica `id` exists; it is asked
    /// only when every earlier check passed.
    pub fn receive_hello(self, frame: &Frame, is_live: impl FnOnce(u8) -> bool) -> HelloOutcome {
        let config = &self.config;
        let hello = match Hello::decode(frame) {
            Ok(hello) => hello,
            Err(failure) => {
                return HelloOutcome::Failed(Failed::new(failure, config.cluster, config.self_id));
            }
        };
        // Spec §4's order of checks.
        let refusal = if hello.cluster != config.cluster {
            Some(Refusal::WrongCluster)
        } else if !config.peers.contains(hello.replica) {
            Some(Refusal::UnknownReplica)
        } else if !dials(hello.replica, config.self_id) {
            Some(Refusal::WrongDirection)
        } else if is_live(hello.replica) {
            Some(Refusal::Duplicate)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return HelloOutcome::Refused {
                challenge: Challenge::refuse(config.cluster, config.self_id, refusal).encode(),
                refusal,
            };
        }
        let transcript = Transcript::new(&TranscriptFields {
            cluster: config.cluster,
            dialer_id: hello.replica,
            acceptor_id: config.self_id,
            nonce_d: &hello.nonce_d,
            nonce_a: &self.nonce_a,
            binding: &self.binding,
        });
        let mac_a = config.keys.sign(&transcript, Direction::Acceptor);
        let challenge =
            Challenge::accept(config.cluster, config.self_id, self.nonce_a, mac_a).encode();
        HelloOutcome::Challenge {
            challenge,
            next: AwaitingFinish {
                cluster: config.cluster,
                self_id: config.self_id,
                peer: hello.replica,
                keys: self.config.keys,
                transcript,
            },
        }
    }
}

/// The accepting side after an ok Challenge, waiting for the dialer's
/// `ReplicaFinish`.
#[derive(Debug)]
pub struct AwaitingFinish {
    cluster: u128,
    self_id: u8,
    peer: u8,
    keys: Keys,
    transcript: Transcript,
}

impl AwaitingFinish {
    /// The replica id the Hello claimed, not yet proven.
    pub fn peer(&self) -> u8 {
        self.peer
    }

    /// Takes the first frame after our Challenge: it must be a
    /// `ReplicaFinish` from the same replica whose `mac_d` verifies.
    pub fn receive_finish(self, frame: &Frame) -> FinishOutcome {
        match self.check_finish(frame) {
            Ok(slot) => FinishOutcome::Authenticated(Authenticated {
                peer: self.peer,
                verified_with: slot,
            }),
            Err(failure) => FinishOutcome::Failed(Failed::new(failure, self.cluster, self.self_id)),
        }
    }

    fn check_finish(&self, frame: &Frame) -> Result<KeySlot, Failure> {
        let finish = Finish::decode(frame)?;
        if finish.cluster != self.cluster {
            return Err(Failure::WrongCluster {
                expected: self.cluster,
                got: finish.cluster,
            });
        }
        if finish.replica != self.peer {
            return Err(Failure::WrongReplica {
                expected: self.peer,
                got: finish.replica,
            });
        }
        self.keys
            .verify(&self.transcript, Direction::Dialer, &finish.mac_d)
            .ok_or(Failure::BadMac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_sets_hold_every_id() {
        let mut set = PeerSet::new();
        assert!(set.is_empty());
        for id in [0, 63, 64, 127, 128, 255] {
            assert!(set.insert(id));
        }
        assert!(!set.insert(64));
        assert_eq!(set.len(), 6);
        assert!(set.contains(255) && set.contains(0) && !set.contains(1));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 127, 128, 255]);
        assert_eq!(
            format!("{:?}", [3, 1].into_iter().collect::<PeerSet>()),
            "{1, 3}"
        );
    }

    #[test]
    fn the_lower_id_dials() {
        assert!(dials(0, 1));
        assert!(!dials(1, 0));
        assert!(!dials(2, 2));
    }
}
