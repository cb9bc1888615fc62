//! Golden bytes: the transcript of spec §4 for fixed inputs, written out
//! byte by byte, and the MACs on the wire recomputed from those bytes with
//! BLAKE3 directly.

use bus_core::FrameMut;
use bus_replica::{
    Acceptor, Binding, Dialer, DialerOutcome, Direction, HandshakeConfig, Key, Keys, PeerSet,
    Transcript,
    auth::{KEY_CONTEXT, TranscriptFields},
};

use crate::common::{Nonces, challenged};

const CLUSTER: u128 = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
const PSK: &[u8; 32] = b"bus.v1 golden pre-shared key 32B";

fn counting(from: u8) -> [u8; 32] {
    std::array::from_fn(|i| from + u8::try_from(i).unwrap())
}

/// The transcript for dialer 3, acceptor 7, `nonce_d` = 0x20..=0x3f,
/// `nonce_a` = 0x40..=0x5f, binding = 0x60..=0x7f, written out.
#[rustfmt::skip]
const GOLDEN: [u8; 133] = [
    // "bus.v1 replica-auth" (19 bytes)
    b'b', b'u', b's', b'.', b'v', b'1', b' ',
    b'r', b'e', b'p', b'l', b'i', b'c', b'a', b'-', b'a', b'u', b't', b'h',
    // cluster, 16 bytes little-endian
    0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09,
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    // dialer_id, acceptor_id
    0x03,
    0x07,
    // nonce_d
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
    0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    // nonce_a
    0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f,
    0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57,
    0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
    // binding
    0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
    0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f,
];

/// `keyed_hash(derive_key("bus.v1 replica-auth key", PSK), GOLDEN || dir)`,
/// straight from BLAKE3.
fn spec_mac(dir: u8) -> [u8; 32] {
    let key = blake3::derive_key("bus.v1 replica-auth key", PSK);
    let mut input = GOLDEN.to_vec();
    input.push(dir);
    *blake3::keyed_hash(&key, &input).as_bytes()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;

    bytes.iter().fold(String::new(), |mut text, b| {
        write!(text, "{b:02x}").unwrap();
        text
    })
}

#[test]
fn the_transcript_is_laid_out_byte_by_byte_as_spec_4_says() {
    let transcript = Transcript::new(&TranscriptFields {
        cluster: CLUSTER,
        dialer_id: 3,
        acceptor_id: 7,
        nonce_d: &counting(0x20),
        nonce_a: &counting(0x40),
        binding: &Binding::tls_exporter(counting(0x60)),
    });
    assert_eq!(transcript.as_bytes(), &GOLDEN);
    let with_dir = transcript.mac_input(Direction::Acceptor);
    assert_eq!(&with_dir[..133], &GOLDEN);
    assert_eq!(with_dir[133], 2);
    assert_eq!(transcript.mac_input(Direction::Dialer)[133], 1);
}

#[test]
fn the_key_and_macs_are_blake3_over_the_transcript_and_direction() {
    assert_eq!(KEY_CONTEXT, "bus.v1 replica-auth key");
    let key = Key::derive(PSK);
    let transcript = Transcript::new(&TranscriptFields {
        cluster: CLUSTER,
        dialer_id: 3,
        acceptor_id: 7,
        nonce_d: &counting(0x20),
        nonce_a: &counting(0x40),
        binding: &Binding::tls_exporter(counting(0x60)),
    });
    assert_eq!(key.mac(&transcript, Direction::Acceptor), spec_mac(2));
    assert_eq!(key.mac(&transcript, Direction::Dialer), spec_mac(1));
    // A known-answer vector for other implementations (also in README.md),
    // checked against a BLAKE3 written separately from its specification.
    assert_eq!(
        hex(&spec_mac(2)),
        "8f5158c03f8e6d686836920e546b044e85197e8c19f256533c6ea6671ff9b5e7"
    );
    assert_eq!(
        hex(&spec_mac(1)),
        "e6d191a8366d052efbf36f777369b7087504b1937f80d007eb78208bb82820d8"
    );
}

#[test]
fn the_macs_on_the_wire_are_the_spec_macs_of_the_golden_transcript() {
    let keys = Keys::new(Key::derive(PSK));
    let dialer = HandshakeConfig::new(CLUSTER, 3, PeerSet::from_iter([7]), keys.clone());
    let acceptor = HandshakeConfig::new(CLUSTER, 7, PeerSet::from_iter([3]), keys);
    let binding = Binding::tls_exporter(counting(0x60));
    let (dialer, hello) =
        Dialer::start(&dialer, 7, binding, &mut Nonces(vec![counting(0x20)])).unwrap();
    let acceptor = Acceptor::new(&acceptor, binding, &mut Nonces(vec![counting(0x40)])).unwrap();
    let (challenge, _) = challenged(acceptor, &hello);
    assert_eq!(&challenge.header().command_area()[32..64], &spec_mac(2));
    let DialerOutcome::Authenticated { finish, .. } = dialer.receive(&challenge) else {
        panic!("the dialer did not verify mac_a");
    };
    assert_eq!(&finish.header().command_area()[32..64], &spec_mac(1));

    // The whole Challenge header, for fixed inputs: every byte but the
    // checksums is determined by spec §1 and §4.
    let mut expected = FrameMut::new(bus_core::Command::ReplicaChallenge, 0);
    let header = expected.header_mut();
    header.set_cluster(CLUSTER);
    header.set_replica(7);
    header.command_area_mut()[0..32].copy_from_slice(&counting(0x40));
    header.command_area_mut()[32..64].copy_from_slice(&spec_mac(2));
    expected.seal();
    assert_eq!(challenge.as_bytes(), expected.as_bytes());
}
