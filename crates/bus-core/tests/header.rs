//! The header against the spec's table, byte by byte, with checksums from an
//! independent XXH3 implementation (`twox-hash`).

use bus_core::{Command, DecodeLimits, Decoder, FrameError, FrameMut, Header};
use twox_hash::XxHash3_128;

/// A field's offset, its length, and a setter that fills it with ones.
type Case = (usize, usize, fn(&mut Header));

#[test]
fn offsets_match_the_spec_table() {
    let h = Header::zeroed();
    let base = std::ptr::from_ref(&h) as usize;
    let at = |f: &[u8]| f.as_ptr() as usize - base;
    // Offsets of the fields with slice accessors, plus the size of the whole.
    assert_eq!(at(h.reserved_frame()), 88);
    assert_eq!(at(h.command_area()), 128);
    assert_eq!(std::mem::size_of::<Header>(), 256);
    assert_eq!(std::mem::align_of::<Header>(), 16);
    // The integer fields, through their effect on the wire bytes.
    let cases: [Case; 10] = [
        (0, 16, |h| h.set_checksum(u128::MAX)),
        (16, 16, |h| h.set_checksum_body(u128::MAX)),
        (32, 16, |h| h.set_cluster(u128::MAX)),
        (48, 4, |h| h.set_size(u32::MAX)),
        (52, 4, |h| h.set_view(u32::MAX)),
        (56, 4, |h| h.set_release(u32::MAX)),
        (60, 1, |h| h.set_command(Command::Application(255))),
        (61, 1, |h| h.set_replica(255)),
        (62, 2, |h| h.set_protocol(u16::MAX)),
        (64, 16, |h| h.set_client(u128::MAX)),
    ];
    for (offset, len, set) in cases {
        let mut h = Header::zeroed();
        set(&mut h);
        let bytes = h.as_bytes();
        assert!(
            bytes[offset..offset + len].iter().all(|b| *b == 0xFF),
            "field at {offset}"
        );
        let others = bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < offset || *i >= offset + len);
        assert!(
            others.into_iter().all(|(_, b)| *b == 0),
            "only the field at {offset} changed"
        );
    }
    let mut h = Header::zeroed();
    h.set_request(u64::MAX);
    assert!(h.as_bytes()[80..88].iter().all(|b| *b == 0xFF));
}

/// A frame whose every byte is spelled out here, little-endian as the spec
/// says, with a 4-byte body.
fn golden_bytes() -> Vec<u8> {
    let mut wire = Vec::new();
    wire.extend_from_slice(&[0; 16]); // checksum: filled in below
    wire.extend_from_slice(&[0; 16]); // checksum_body: filled in below
    wire.extend_from_slice(&[
        0x10, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A, 0x09, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02,
        0x01,
    ]); // cluster = 0x0102030405060708090A0B0C0D0E0F10
    wire.extend_from_slice(&[0x04, 0x01, 0x00, 0x00]); // size = 260
    wire.extend_from_slice(&[0x04, 0x03, 0x02, 0x01]); // view = 0x01020304
    wire.extend_from_slice(&[0x0D, 0x0C, 0x0B, 0x0A]); // release = 0x0A0B0C0D
    wire.push(0x10); // command = 16
    wire.push(0x02); // replica = 2
    wire.extend_from_slice(&[0x01, 0x00]); // protocol = 1
    wire.extend_from_slice(&[
        0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0, 0, 0x07, 0x00,
    ]); // client = shard 7, sequence 0x0123456789ABCDEF
    wire.extend_from_slice(&[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]); // request
    wire.extend_from_slice(&[0x5A; 40]); // reserved_frame
    wire.extend((0..128).map(|i: u8| i)); // command_area = 0, 1, ..., 127
    wire.extend_from_slice(b"body");
    assert_eq!(wire.len(), 260);
    // Seal independently: body checksum first, then the header over 16..256.
    let body = XxHash3_128::oneshot(&wire[256..]);
    wire[16..32].copy_from_slice(&body.to_le_bytes());
    let header = XxHash3_128::oneshot(&wire[16..256]);
    wire[0..16].copy_from_slice(&header.to_le_bytes());
    wire
}

#[test]
fn golden_frame_decodes_to_its_fields_and_verifies() {
    let wire = golden_bytes();
    let mut decoder = Decoder::new(DecodeLimits {
        max_message_size_bytes: 1 << 20,
        require_sealed: true,
    });
    let mut input = &wire[..];
    let frame = decoder
        .decode(&mut input)
        .expect("valid")
        .expect("complete");
    let h = frame.header();
    assert_eq!(h.cluster(), 0x0102_0304_0506_0708_090A_0B0C_0D0E_0F10);
    assert_eq!(h.size(), 260);
    assert_eq!(h.view(), 0x0102_0304);
    assert_eq!(h.release(), 0x0A0B_0C0D);
    assert_eq!(h.command(), Command::Application(16));
    assert_eq!(h.replica(), 2);
    assert_eq!(h.protocol(), 1);
    assert_eq!(h.client() >> 112, 7);
    assert_eq!(h.client() & u128::from(u64::MAX), 0x0123_4567_89AB_CDEF);
    assert_eq!(h.request(), 0x0102_0304_0506_0708);
    assert_eq!(h.reserved_frame(), &[0x5A; 40]);
    assert_eq!(h.command_area()[127], 127);
    assert_eq!(frame.body(), b"body");
    assert_eq!(h.checksum_body(), XxHash3_128::oneshot(b"body"));
    assert_eq!(h.checksum(), XxHash3_128::oneshot(&wire[16..256]));
}

#[test]
fn our_seal_matches_the_independent_one() {
    let wire = golden_bytes();
    let mut ours = FrameMut::with_capacity(wire.len());
    ours.extend_from_slice(&wire);
    ours.header_mut().set_checksum(0);
    ours.header_mut().set_checksum_body(0);
    ours.seal();
    assert_eq!(ours.as_bytes(), &wire[..]);
}

#[test]
fn xxh3_128_of_empty_input_is_the_published_value() {
    const EMPTY: u128 = 0x99aa_06d3_0147_98d8_6001_c324_468d_497f;
    assert_eq!(XxHash3_128::oneshot(b""), EMPTY);
    assert_eq!(xxh3_of_empty_body(), EMPTY);
}

fn xxh3_of_empty_body() -> u128 {
    let mut frame = FrameMut::new(Command::Application(16), 0);
    frame.seal();
    frame.header().checksum_body()
}

#[test]
fn tampered_golden_frame_is_refused() {
    let mut wire = golden_bytes();
    wire[259] ^= 1;
    let mut decoder = Decoder::new(DecodeLimits {
        max_message_size_bytes: 1 << 20,
        require_sealed: false,
    });
    let mut input = &wire[..];
    assert_eq!(decoder.decode(&mut input), Err(FrameError::BodyChecksum));
}
