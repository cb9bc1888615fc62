//! The three handshake messages on the wire (spec §4) and the Goodbye that
//! ends a failed handshake.
//!
//! Each message is a bare 256-byte frame: its fields ride in
//! `command_area`, the header carries `cluster` and the sender's `replica`,
//! and the frame is sealed. Decoding applies spec §1's receiver rules itself
//! (a frame handed over by any transport is checked again), insists on a
//! sealed frame, and ignores the bytes of `command_area` that the message
//! does not define, and any body. This module makes no decision about
//! whether a message is acceptable: that is [`crate::handshake`]'s job.
//!
//! | message | command | `command_area` |
//! |---------|--------:|----------------|
//! | `ReplicaHello` | 3 | `[0..32]` `nonce_d` |
//! | `ReplicaChallenge` | 4 | `[0..32]` `nonce_a`, `[32..64]` `mac_a`, `[64]` status (0 = ok); a refusal carries only the status |
//! | `ReplicaFinish` | 5 | `[32..64]` `mac_d` |

use bus_core::{Command, Frame, FrameError, FrameMut, Goodbye, GoodbyeReason, header};

use crate::{
    error::{Failure, Refusal},
    limits::{MAC_AT, MAC_BYTES, NONCE_AT, NONCE_BYTES, STATUS_AT},
};

/// `ReplicaHello` (dialer → acceptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's cluster id (header `cluster`).
    pub cluster: u128,
    /// The dialer's replica id (header `replica`).
    pub replica: u8,
    /// The dialer's fresh nonce.
    pub nonce_d: [u8; NONCE_BYTES],
}

/// `ReplicaChallenge` (acceptor → dialer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor's cluster id.
    pub cluster: u128,
    /// The acceptor's replica id.
    pub replica: u8,
    /// 0 = ok; otherwise a [`Refusal`].
    pub status: u8,
    /// The acceptor's fresh nonce (zero in a refusal).
    pub nonce_a: [u8; NONCE_BYTES],
    /// The acceptor's MAC (zero in a refusal).
    pub mac_a: [u8; MAC_BYTES],
}

/// `ReplicaFinish` (dialer → acceptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The dialer's cluster id.
    pub cluster: u128,
    /// The dialer's replica id.
    pub replica: u8,
    /// The dialer's MAC.
    pub mac_d: [u8; MAC_BYTES],
}

impl Hello {
    /// The sealed frame.
    pub fn encode(&self) -> Frame {
        frame(Command::ReplicaHello, self.cluster, self.replica, |area| {
            area[NONCE_AT..NONCE_AT + NONCE_BYTES].copy_from_slice(&self.nonce_d);
        })
    }

    /// Reads a `ReplicaHello` out of `frame`.
    pub fn decode(frame: &Frame) -> Result<Self, Failure> {
        let area = check(frame, Command::ReplicaHello)?;
        Ok(Self {
            cluster: frame.header().cluster(),
            replica: frame.header().replica(),
            nonce_d: field(area, NONCE_AT),
        })
    }
}

impl Challenge {
    /// An ok challenge (status 0).
    pub fn accept(
        cluster: u128,
        replica: u8,
        nonce_a: [u8; NONCE_BYTES],
        mac_a: [u8; MAC_BYTES],
    ) -> Self {
        Self {
            cluster,
            replica,
            status: 0,
            nonce_a,
            mac_a,
        }
    }

    /// A refusal: only the status, nonce and MAC zero.
    pub fn refuse(cluster: u128, replica: u8, refusal: Refusal) -> Self {
        Self {
            cluster,
            replica,
            status: refusal.status(),
            nonce_a: [0; NONCE_BYTES],
            mac_a: [0; MAC_BYTES],
        }
    }

    /// The refusal the status means, `None` when the challenge is ok.
    pub const fn refusal(&self) -> Option<Refusal> {
        Refusal::from_status(self.status)
    }

    /// The sealed frame.
    pub fn encode(&self) -> Frame {
        frame(
            Command::ReplicaChallenge,
            self.cluster,
            self.replica,
            |area| {
                area[NONCE_AT..NONCE_AT + NONCE_BYTES].copy_from_slice(&self.nonce_a);
                area[MAC_AT..MAC_AT + MAC_BYTES].copy_from_slice(&self.mac_a);
                area[STATUS_AT] = self.status;
            },
        )
    }

    /// Reads a `ReplicaChallenge` out of `frame`.
    pub fn decode(frame: &Frame) -> Result<Self, Failure> {
        let area = check(frame, Command::ReplicaChallenge)?;
        Ok(Self {
            cluster: frame.header().cluster(),
            replica: frame.header().replica(),
            status: area[STATUS_AT],
            nonce_a: field(area, NONCE_AT),
            mac_a: field(area, MAC_AT),
        })
    }
}

impl Finish {
    /// The sealed frame.
    pub fn encode(&self) -> Frame {
        frame(Command::ReplicaFinish, self.cluster, self.replica, |area| {
            area[MAC_AT..MAC_AT + MAC_BYTES].copy_from_slice(&self.mac_d);
        })
    }

    /// Reads a `ReplicaFinish` out of `frame`.
    pub fn decode(frame: &Frame) -> Result<Self, Failure> {
        let area = check(frame, Command::ReplicaFinish)?;
        Ok(Self {
            cluster: frame.header().cluster(),
            replica: frame.header().replica(),
            mac_d: field(area, MAC_AT),
        })
    }
}

/// A sealed `Goodbye` for the replica plane, with `cluster` and `replica`
/// set like every other frame on it. `detail` is cut to 122 bytes.
pub fn goodbye(cluster: u128, replica: u8, reason: GoodbyeReason, detail: &str) -> Frame {
    let mut frame = Goodbye::frame(reason, detail).into_mut();
    let header = frame.header_mut();
    header.set_cluster(cluster);
    header.set_replica(replica);
    frame.seal();
    frame.freeze()
}

/// A sealed, body-less frame of `command` whose `command_area` `fill` writes.
fn frame(command: Command, cluster: u128, replica: u8, fill: impl FnOnce(&mut [u8; 128])) -> Frame {
    let mut frame = FrameMut::new(command, 0);
    let header = frame.header_mut();
    header.set_cluster(cluster);
    header.set_replica(replica);
    fill(header.command_area_mut());
    frame.seal();
    frame.freeze()
}

/// The receiver's checks every handshake frame passes, in this order: spec
/// §1's rules (with no size limit of its own: the transport applied its
/// `max_message_size`), a peer's Goodbye, the expected command, sealed.
fn check(frame: &Frame, expected: Command) -> Result<&[u8; 128], Failure> {
    let header = frame.header();
    header.validate(u32::MAX).map_err(Failure::Malformed)?;
    header::verify_body(header, frame.body()).map_err(Failure::Malformed)?;
    match header.command() {
        Command::Goodbye => Err(Failure::PeerGoodbye(Goodbye::decode(header.command_area()))),
        command if command != expected => Err(Failure::UnexpectedCommand {
            expected,
            got: header.command_raw(),
        }),
        _ if !header.is_sealed() => Err(Failure::Malformed(FrameError::NotSealed)),
        _ => Ok(header.command_area()),
    }
}

/// The 32 bytes of `area` from `at`.
fn field(area: &[u8; 128], at: usize) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(&area[at..at + 32]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_sit_where_spec_4_puts_them() {
        let hello = Hello {
            cluster: 0x0102,
            replica: 7,
            nonce_d: [0xd0; 32],
        }
        .encode();
        let header = hello.header();
        assert_eq!(header.command_raw(), 3);
        assert_eq!(header.cluster(), 0x0102);
        assert_eq!(header.replica(), 7);
        assert!(header.is_sealed());
        assert_eq!(hello.len(), 256);
        assert_eq!(&header.command_area()[0..32], &[0xd0; 32]);
        assert_eq!(&header.command_area()[32..], &[0; 96]);

        let challenge = Challenge::accept(1, 2, [0xa0; 32], [0xaa; 32]).encode();
        let area = challenge.header().command_area();
        assert_eq!(challenge.header().command_raw(), 4);
        assert_eq!(&area[0..32], &[0xa0; 32]);
        assert_eq!(&area[32..64], &[0xaa; 32]);
        assert_eq!(area[64], 0);
        assert_eq!(&area[65..], &[0; 63]);

        let finish = Finish {
            cluster: 1,
            replica: 1,
            mac_d: [0xdd; 32],
        }
        .encode();
        let area = finish.header().command_area();
        assert_eq!(finish.header().command_raw(), 5);
        assert_eq!(&area[0..32], &[0; 32]);
        assert_eq!(&area[32..64], &[0xdd; 32]);
        assert_eq!(&area[64..], &[0; 64]);
    }

    #[test]
    fn a_refusal_carries_only_its_status() {
        let frame = Challenge::refuse(5, 9, Refusal::WrongDirection).encode();
        let mut expected = [0; 128];
        expected[64] = 4;
        assert_eq!(frame.header().command_area(), &expected);
        let decoded = Challenge::decode(&frame).unwrap();
        assert_eq!(decoded.refusal(), Some(Refusal::WrongDirection));
        assert_eq!((decoded.cluster, decoded.replica), (5, 9));
    }

    #[test]
    fn messages_round_trip() {
        let hello = Hello {
            cluster: u128::MAX,
            replica: 255,
            nonce_d: [1; 32],
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let challenge = Challenge::accept(3, 4, [5; 32], [6; 32]);
        assert_eq!(Challenge::decode(&challenge.encode()), Ok(challenge));
        let finish = Finish {
            cluster: 3,
            replica: 2,
            mac_d: [7; 32],
        };
        assert_eq!(Finish::decode(&finish.encode()), Ok(finish));
    }

    #[test]
    fn the_replica_goodbye_is_sealed_and_stamped() {
        let frame = goodbye(0x2a, 3, GoodbyeReason::HandshakeFailed, "bad mac");
        let header = frame.header();
        assert_eq!(header.validate(u32::MAX), Ok(()));
        assert!(header.is_sealed());
        assert_eq!((header.cluster(), header.replica()), (0x2a, 3));
        assert_eq!(
            Goodbye::decode(header.command_area()),
            Goodbye {
                reason: GoodbyeReason::HandshakeFailed,
                detail: "bad mac".to_owned()
            }
        );
    }
}
