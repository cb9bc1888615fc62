//! The replica handshake (bus-replica, spec §4): arbitrary frames as
//! `ReplicaHello`, `ReplicaChallenge` and `ReplicaFinish`, through the
//! message parsers and both state machines. No panic; a parsed message
//! encodes back to itself; a side authenticates only with the right MAC.
//!
//! Input: a flags byte, then three frames, the first two prefixed by a u16
//! LE length. Each frame's `size` is set to its length (short ones are
//! padded to a header). Flag bits 0 and 1 plant the honest MAC into the
//! Finish and the Challenge and reseal them, so the fuzzer reaches the
//! paths after the MAC check too.
#![no_main]

use bus_core::{Frame, FrameMut};
use bus_replica::{
    Acceptor, Binding, Dialer, DialerOutcome, Direction, FinishOutcome, HandshakeConfig,
    HelloOutcome, Key, Keys, NonceError, NonceSource, PeerSet, Transcript,
    auth::TranscriptFields,
    message::{Challenge, Finish, Hello},
};
use libfuzzer_sys::fuzz_target;

const CLUSTER: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
const ACCEPTOR: u8 = 5;
const DIALER: u8 = 2;
const NONCE_A: [u8; 32] = [0xA5; 32];
const NONCE_D: [u8; 32] = [0x5A; 32];

struct Fixed([u8; 32]);

impl NonceSource for Fixed {
    fn nonce(&mut self) -> Result<[u8; 32], NonceError> {
        Ok(self.0)
    }
}

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return std::mem::take(data);
    };
    let (piece, rest) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    *data = rest;
    piece
}

/// A frame of exactly these bytes, with `size` made to match; `mac` is
/// planted at `command_area[32..64]` and the frame resealed when given.
fn frame(bytes: &[u8], mac: Option<[u8; 32]>) -> Frame {
    let mut raw = bytes.to_vec();
    raw.resize(raw.len().max(256), 0);
    let len = u32::try_from(raw.len()).unwrap();
    raw[48..52].copy_from_slice(&len.to_le_bytes());
    if let Some(mac) = mac {
        raw[160..192].copy_from_slice(&mac);
        bus_fuzz::seal(&mut raw);
    }
    let mut frame = FrameMut::with_capacity(raw.len());
    frame.extend_from_slice(&raw);
    frame.freeze()
}

fn roundtrips(frame: &Frame) {
    if let Ok(hello) = Hello::decode(frame) {
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
    }
    if let Ok(challenge) = Challenge::decode(frame) {
        assert_eq!(Challenge::decode(&challenge.encode()), Ok(challenge));
    }
    if let Ok(finish) = Finish::decode(frame) {
        assert_eq!(Finish::decode(&finish.encode()), Ok(finish));
    }
}

fn mac(keys: &Keys, nonce_d: &[u8; 32], direction: Direction) -> [u8; 32] {
    let transcript = Transcript::new(&TranscriptFields {
        cluster: CLUSTER,
        dialer_id: DIALER,
        acceptor_id: ACCEPTOR,
        nonce_d,
        nonce_a: &NONCE_A,
        binding: &Binding::PLAIN_TCP,
    });
    keys.sign(&transcript, direction)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut data)) = data.split_first() else {
        return;
    };
    let keys = Keys::new(Key::derive(b"fuzz psk"));
    let peers: PeerSet = [0, 1, DIALER, 7].into_iter().collect();
    let hello_bytes = take(&mut data);
    let finish_bytes = take(&mut data);
    let challenge_bytes = data;

    // The acceptor: Hello, then Finish.
    let acceptor_config = HandshakeConfig::new(CLUSTER, ACCEPTOR, peers, keys.clone());
    let hello = frame(hello_bytes, None);
    roundtrips(&hello);
    let acceptor =
        Acceptor::new(&acceptor_config, Binding::PLAIN_TCP, &mut Fixed(NONCE_A)).unwrap();
    match acceptor.receive_hello(&hello, |id| id == 0) {
        HelloOutcome::Challenge { challenge, next } => {
            let parsed = Hello::decode(&hello).expect("a Hello the acceptor took parses");
            assert_eq!((parsed.cluster, parsed.replica), (CLUSTER, DIALER));
            let decoded = Challenge::decode(&challenge).expect("our Challenge parses");
            assert_eq!(
                decoded.mac_a,
                mac(&keys, &parsed.nonce_d, Direction::Acceptor)
            );
            let honest = mac(&keys, &parsed.nonce_d, Direction::Dialer);
            let finish = frame(finish_bytes, (flags & 1 != 0).then_some(honest));
            roundtrips(&finish);
            match next.receive_finish(&finish) {
                FinishOutcome::Authenticated(peer) => {
                    let f = Finish::decode(&finish).unwrap();
                    assert_eq!((f.cluster, f.replica, f.mac_d), (CLUSTER, DIALER, honest));
                    assert_eq!(peer.peer, DIALER);
                }
                FinishOutcome::Failed(failed) => {
                    if let Some(goodbye) = failed.goodbye {
                        assert!(goodbye.header().validate(u32::MAX).is_ok());
                    }
                }
            }
        }
        HelloOutcome::Refused { challenge, .. } => {
            assert!(Challenge::decode(&challenge).is_ok());
        }
        HelloOutcome::Failed(failed) => {
            if let Some(goodbye) = failed.goodbye {
                assert!(goodbye.header().validate(u32::MAX).is_ok());
            }
        }
    }

    // The dialer: its Hello, then a Challenge.
    let dialer_config = HandshakeConfig::new(CLUSTER, DIALER, peers, keys.clone());
    let (dialer, _hello) = Dialer::start(
        &dialer_config,
        ACCEPTOR,
        Binding::PLAIN_TCP,
        &mut Fixed(NONCE_D),
    )
    .unwrap();
    let honest = mac(&keys, &NONCE_D, Direction::Acceptor);
    let mut challenge = challenge_bytes.to_vec();
    if flags & 2 != 0 {
        // The acceptor's nonce and MAC sit at [0..32] and [32..64].
        challenge.resize(challenge.len().max(256), 0);
        challenge[128..160].copy_from_slice(&NONCE_A);
    }
    let challenge = frame(&challenge, (flags & 2 != 0).then_some(honest));
    roundtrips(&challenge);
    match dialer.receive(&challenge) {
        DialerOutcome::Authenticated { finish, peer } => {
            let c = Challenge::decode(&challenge).unwrap();
            assert_eq!((c.cluster, c.replica, c.status), (CLUSTER, ACCEPTOR, 0));
            assert_eq!((c.nonce_a, c.mac_a), (NONCE_A, honest));
            assert_eq!(peer.peer, ACCEPTOR);
            assert_eq!(
                Finish::decode(&finish).unwrap().mac_d,
                mac(&keys, &NONCE_D, Direction::Dialer)
            );
        }
        DialerOutcome::Refused(_) => {
            assert_ne!(Challenge::decode(&challenge).unwrap().status, 0);
        }
        DialerOutcome::Failed(failed) => {
            if let Some(goodbye) = failed.goodbye {
                assert!(goodbye.header().validate(u32::MAX).is_ok());
            }
        }
    }
});
