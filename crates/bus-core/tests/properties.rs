//! Property tests of the pure framing code (proptest): the stream decoder
//! and the header encoding. Case counts are bounded so the suite stays
//! quick; `PROPTEST_CASES` raises them for a longer hunt.

use bus_core::{Command, DecodeLimits, Decoder, Frame, FrameError, FrameMut, Header};
use proptest::prelude::*;

const LIMITS: DecodeLimits = DecodeLimits {
    max_message_size_bytes: 64 << 10,
    require_sealed: false,
};

/// What decoding a byte stream produced: the frames, in order, and the
/// error that stopped it, if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
    /// The decoder ended exactly between frames (no partial frame held).
    between_frames: bool,
}

/// Feeds `chunks` to a fresh decoder one after the other, taking out every
/// frame each yields, stopping at the first error. After an error, checks
/// the decoder stays poisoned: every later call fails the same way and
/// consumes nothing, whatever it is given (a valid frame included).
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = Decoder::new(LIMITS);
    let mut frames = Vec::new();
    for chunk in chunks {
        let mut input = chunk;
        loop {
            let before = input.len();
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => frames.push(frame.as_bytes().to_vec()),
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) only once the input is used up");
                    break;
                }
                Err(error) => {
                    assert_poisoned(&mut decoder, error);
                    return Outcome {
                        frames,
                        error: Some(error),
                        between_frames: false,
                    };
                }
            }
            assert!(input.len() < before || input.is_empty(), "progress");
            if input.is_empty() {
                break;
            }
        }
    }
    Outcome {
        frames,
        error: None,
        between_frames: decoder.is_between_frames(),
    }
}

fn assert_poisoned(decoder: &mut Decoder, error: FrameError) {
    assert!(!decoder.is_between_frames());
    let valid = sealed_frame(16, 1, &[1, 2, 3]);
    for attempt in [&[][..], &[0xFF; 300][..], valid.as_bytes()] {
        let mut input = attempt;
        assert_eq!(decoder.decode(&mut input), Err(error), "stays poisoned");
        assert_eq!(
            input.len(),
            attempt.len(),
            "a poisoned decoder consumes nothing"
        );
    }
}

fn sealed_frame(command: u8, request: u64, body: &[u8]) -> Frame {
    let mut frame = FrameMut::with_body(Command::from_u8(command), body);
    frame.header_mut().set_request(request);
    frame.seal();
    frame.freeze()
}

/// Cuts `bytes` at the given points (taken modulo its length, sorted).
fn cut<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points
        .iter()
        .map(|p| {
            if bytes.is_empty() {
                0
            } else {
                p % (bytes.len() + 1)
            }
        })
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        chunks.push(&bytes[start..point]);
        start = point;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// One frame as the strategies build it: an application or bus command,
/// sealed or not, with a body.
fn frame_strategy() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![16u8..=255, Just(1u8), Just(2u8)],
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..1200),
        any::<bool>(),
    )
        .prop_map(|(command, request, body, seal)| {
            let mut frame = FrameMut::with_body(Command::from_u8(command), &body);
            frame.header_mut().set_request(request);
            if seal {
                frame.seal();
            }
            frame.freeze()
        })
}

/// Damage done to a stream of valid frames.
#[derive(Debug, Clone)]
enum Damage {
    None,
    /// XOR one byte (at an index modulo the length) with a non-zero mask.
    Flip(usize, u8),
    /// Cut the stream short.
    Truncate(usize),
    /// Append arbitrary bytes.
    Garbage(Vec<u8>),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        any::<usize>().prop_map(Damage::Truncate),
        proptest::collection::vec(any::<u8>(), 1..600).prop_map(Damage::Garbage),
    ]
}

fn apply(mut wire: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Flip(at, mask) if !wire.is_empty() => {
            let at = at % wire.len();
            wire[at] ^= mask;
        }
        Damage::None | Damage::Flip(..) => {}
        Damage::Truncate(at) => wire.truncate(at % (wire.len() + 1)),
        Damage::Garbage(bytes) => wire.extend_from_slice(bytes),
    }
    wire
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes at all, in any chunking: no panic, and exactly what the
    /// whole buffer decodes to at once.
    #[test]
    fn arbitrary_bytes_in_any_chunking_decode_as_the_whole(
        bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        points in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = decode_chunks([&bytes[..]]);
        let chunked = decode_chunks(cut(&bytes, &points));
        prop_assert_eq!(chunked, whole);
    }

    /// Valid frames, possibly damaged, in any chunking (one byte at a time
    /// included): the same frames and the same error as the whole buffer;
    /// undamaged, exactly the frames that were sent, ending between frames.
    #[test]
    fn frame_streams_in_any_chunking_decode_as_the_whole(
        frames in proptest::collection::vec(frame_strategy(), 0..6),
        damage in damage_strategy(),
        points in proptest::collection::vec(any::<usize>(), 0..12),
        bytewise in any::<bool>(),
    ) {
        let clean: Vec<u8> = frames.iter().flat_map(|f| f.as_bytes().to_vec()).collect();
        let wire = apply(clean, &damage);
        let whole = decode_chunks([&wire[..]]);
        let chunked = if bytewise {
            decode_chunks(wire.chunks(1))
        } else {
            decode_chunks(cut(&wire, &points))
        };
        prop_assert_eq!(&chunked, &whole);
        let sent: Vec<Vec<u8>> = frames.iter().map(|f| f.as_bytes().to_vec()).collect();
        let total: usize = sent.iter().map(Vec::len).sum();
        // The index of the frame holding byte `at` of the clean stream.
        let frame_at = |at: usize| {
            let mut end = 0;
            sent.iter().position(|f| {
                end += f.len();
                at < end
            })
        };
        let got = &whole.frames;
        match &damage {
            Damage::None => {
                prop_assert_eq!(got, &sent);
                prop_assert_eq!(whole.error, None);
                prop_assert!(whole.between_frames);
            }
            Damage::Flip(at, _) if total > 0 => {
                // Everything before the damaged frame arrives as sent; a
                // sealed frame's damage is always caught: it and nothing
                // after it is delivered (an error, or a frame that now
                // waits for bytes that never come).
                let k = frame_at(at % total).expect("inside the stream");
                prop_assert!(got.len() >= k);
                prop_assert_eq!(&got[..k], &sent[..k]);
                if frames[k].header().is_sealed() {
                    prop_assert_eq!(got.len(), k, "a damaged sealed frame is never delivered");
                    prop_assert!(whole.error.is_some() || !whole.between_frames);
                }
            }
            Damage::Flip(..) => prop_assert!(got.is_empty()),
            Damage::Truncate(at) => {
                let cut_at = at % (total + 1);
                let complete = sent
                    .iter()
                    .scan(0, |end, f| {
                        *end += f.len();
                        Some(*end)
                    })
                    .take_while(|&end| end <= cut_at)
                    .count();
                prop_assert_eq!(got, &sent[..complete].to_vec());
                prop_assert_eq!(whole.error, None);
                let at_boundary = frame_at(cut_at).is_none_or(|k| {
                    sent[..k].iter().map(Vec::len).sum::<usize>() == cut_at
                });
                prop_assert_eq!(whole.between_frames, at_boundary);
            }
            Damage::Garbage(_) => {
                prop_assert!(got.len() >= sent.len());
                prop_assert_eq!(&got[..sent.len()], &sent[..]);
            }
        }
    }

    /// Every header field round-trips through the 256 wire bytes, and each
    /// setter touches its own bytes only.
    #[test]
    fn header_fields_round_trip_through_the_wire_bytes(
        (checksum, checksum_body, cluster, client) in any::<(u128, u128, u128, u128)>(),
        (size, view, release) in any::<(u32, u32, u32)>(),
        (command, replica, protocol, request) in any::<(u8, u8, u16, u64)>(),
        reserved in proptest::collection::vec(any::<u8>(), 40),
        area in proptest::collection::vec(any::<u8>(), 128),
    ) {
        let mut h = Header::zeroed();
        h.set_checksum(checksum);
        h.set_checksum_body(checksum_body);
        h.set_cluster(cluster);
        h.set_size(size);
        h.set_view(view);
        h.set_release(release);
        h.set_command(Command::from_u8(command));
        h.set_replica(replica);
        h.set_protocol(protocol);
        h.set_client(client);
        h.set_request(request);
        h.reserved_frame_mut().copy_from_slice(&reserved);
        h.command_area_mut().copy_from_slice(&area);
        let back = Header::from_bytes(h.as_bytes());
        prop_assert_eq!(back.checksum(), checksum);
        prop_assert_eq!(back.checksum_body(), checksum_body);
        prop_assert_eq!(back.cluster(), cluster);
        prop_assert_eq!(back.size(), size);
        prop_assert_eq!(back.view(), view);
        prop_assert_eq!(back.release(), release);
        prop_assert_eq!(back.command_raw(), command);
        prop_assert_eq!(back.command(), Command::from_u8(command));
        prop_assert_eq!(back.replica(), replica);
        prop_assert_eq!(back.protocol(), protocol);
        prop_assert_eq!(back.client(), client);
        prop_assert_eq!(back.request(), request);
        prop_assert_eq!(&back.reserved_frame()[..], &reserved[..]);
        prop_assert_eq!(&back.command_area()[..], &area[..]);
        prop_assert_eq!(back.as_bytes(), h.as_bytes());
    }

    /// Any 256 bytes are a header whose fields re-encode to the same bytes.
    #[test]
    fn any_256_bytes_decode_to_fields_that_encode_back(
        bytes in proptest::collection::vec(any::<u8>(), 256),
    ) {
        let bytes: [u8; 256] = bytes.try_into().expect("256 bytes");
        let h = Header::from_bytes(&bytes);
        let mut rebuilt = Header::zeroed();
        rebuilt.set_checksum(h.checksum());
        rebuilt.set_checksum_body(h.checksum_body());
        rebuilt.set_cluster(h.cluster());
        rebuilt.set_size(h.size());
        rebuilt.set_view(h.view());
        rebuilt.set_release(h.release());
        rebuilt.set_command(h.command());
        rebuilt.set_replica(h.replica());
        rebuilt.set_protocol(h.protocol());
        rebuilt.set_client(h.client());
        rebuilt.set_request(h.request());
        rebuilt.reserved_frame_mut().copy_from_slice(h.reserved_frame());
        rebuilt.command_area_mut().copy_from_slice(h.command_area());
        prop_assert_eq!(rebuilt.as_bytes(), &bytes);
    }

    /// Sealing then validating succeeds for any header contents a sender
    /// may choose, and any single flipped bit of a sealed header is caught.
    #[test]
    fn a_sealed_header_verifies_and_any_flipped_bit_is_caught(
        frame in frame_strategy(),
        bit in 0usize..(256 * 8),
    ) {
        let mut sealed = frame.to_mut();
        sealed.seal();
        prop_assert_eq!(sealed.header().validate(LIMITS.max_message_size_bytes), Ok(()));
        prop_assert_eq!(sealed.verify_body(), Ok(()));
        let mut bytes = *sealed.header().as_bytes();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let damaged = Header::from_bytes(&bytes);
        prop_assert!(damaged.validate(u32::MAX).is_err(), "bit {} flipped", bit);
    }
}
