//! The frame buffers and the header view through their public API, aimed at
//! the `unsafe` code under them: the byte-slice casts of `buf.rs` (aligned
//! block storage, initialised length, writes into the uninitialised tail
//! through compio's buffer traits), the in-place `Header` view of
//! `header.rs` and `buf.rs`, and the bounds checks in front of each.
//!
//! These are the tests `cargo xtask miri` runs under Miri, or, where Miri
//! is missing, under `AddressSanitizer`: an out-of-bounds access, a read of
//! uninitialised memory (Miri) or a use after free shows there, even when
//! the values happen to come out right.

use std::{mem::MaybeUninit, sync::Arc};

use bus_core::{Command, DecodeLimits, Decoder, Frame, FrameMut, Header, Progress};
// compio's buffer traits are named at each call: in scope they would shadow
// slice methods such as `is_empty`.
use compio::buf as io;

/// Body lengths around every 16-byte block edge, plus a few large ones.
fn body_lengths() -> impl Iterator<Item = usize> {
    (0..=48).chain([63, 64, 65, 255, 256, 257, 4095, 4096, 4097, 70_000])
}

fn pattern(i: usize) -> u8 {
    u8::try_from(i % 251).expect("below 251")
}

#[test]
fn every_size_is_aligned_and_holds_exactly_its_bytes() {
    for len in body_lengths() {
        let mut frame = FrameMut::new(Command::Application(20), len);
        assert_eq!(frame.as_bytes().as_ptr() as usize % 16, 0, "body {len}");
        assert_eq!(frame.len(), 256 + len);
        assert_eq!(frame.capacity(), 256 + len);
        assert!(frame.body().iter().all(|&b| b == 0), "a zeroed body");
        for (i, b) in frame.body_mut().iter_mut().enumerate() {
            *b = pattern(i);
        }
        frame.header_mut().set_request(len as u64);
        frame.header_mut().command_area_mut()[127] = 0xEE;
        frame.seal();
        let frozen = frame.freeze();
        assert_eq!(frozen.len(), 256 + len);
        assert_eq!(frozen.header().request(), len as u64);
        assert_eq!(frozen.header().command_area()[127], 0xEE);
        assert!(
            frozen
                .body()
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i))
        );
        assert_eq!(frozen.header().validate(u32::MAX), Ok(()));
        assert_eq!(frozen.to_mut().verify_body(), Ok(()));
    }
}

#[test]
fn with_body_copies_exactly_the_body() {
    for len in body_lengths() {
        let body: Vec<u8> = (0..len).map(pattern).collect();
        let frame = FrameMut::with_body(Command::Application(21), &body);
        assert_eq!(frame.body(), &body[..]);
        assert_eq!(frame.header().size() as usize, 256 + len);
        assert_eq!(frame.freeze().body(), &body[..]);
    }
}

/// A receiver's path: an empty buffer of the frame's size, filled through
/// the uninitialised tail (`IoBufMut`) and `SetLen`, as compio's reads do.
#[test]
fn a_buffer_filled_through_the_io_traits_reads_back() {
    for len in body_lengths() {
        let mut source = FrameMut::with_body(Command::Application(22), &vec![0x5A; len]);
        source.seal();
        let wire = source.freeze();
        let mut frame = FrameMut::with_capacity(wire.len());
        assert!(frame.is_empty());
        // Fill in two reads: the header, then the rest.
        for range in [0..256, 256..wire.len()] {
            let filled = frame.len();
            assert_eq!(filled, range.start);
            let tail: &mut [MaybeUninit<u8>] = &mut io::IoBufMut::as_uninit(&mut frame)[filled..];
            assert!(tail.len() >= range.len());
            for (dst, src) in tail.iter_mut().zip(&wire.as_bytes()[range.clone()]) {
                dst.write(*src);
            }
            // SAFETY: the bytes up to `range.end` were just written above.
            unsafe { io::SetLen::set_len(&mut frame, range.end) };
        }
        assert_eq!(io::IoBuf::as_init(&frame), wire.as_bytes());
        assert_eq!(frame.header().size() as usize, wire.len());
        assert_eq!(frame.verify_body(), Ok(()));
        let frozen = frame.freeze();
        assert_eq!(frozen, wire);
        assert_eq!(io::IoBuf::as_init(&frozen), wire.as_bytes());
    }
}

#[test]
fn extend_from_slice_in_pieces_then_view_the_header() {
    let body: Vec<u8> = (0..1000).map(pattern).collect();
    let whole = FrameMut::with_body(Command::Application(23), &body).freeze();
    for piece in [1, 7, 16, 255, 256, 257, 999] {
        let mut frame = FrameMut::with_capacity(whole.len());
        for chunk in whole.as_bytes().chunks(piece) {
            frame.extend_from_slice(chunk);
        }
        assert_eq!(frame.header().command(), Command::Application(23));
        assert_eq!(frame.as_bytes(), whole.as_bytes());
    }
}

#[test]
#[should_panic(expected = "frame shorter than its header")]
fn viewing_the_header_of_a_short_buffer_panics_instead_of_reading_past_it() {
    let mut frame = FrameMut::with_capacity(512);
    frame.extend_from_slice(&[1; 255]);
    let _ = frame.header();
}

#[test]
#[should_panic(expected = "frame shorter than its header")]
fn writing_the_header_of_a_short_buffer_panics_instead_of_writing_past_it() {
    let mut frame = FrameMut::with_capacity(512);
    frame.extend_from_slice(&[1; 100]);
    frame.header_mut().set_view(1);
}

#[test]
#[should_panic(expected = "past capacity")]
fn extending_past_the_capacity_panics_instead_of_writing_past_it() {
    let mut frame = FrameMut::with_capacity(256);
    frame.extend_from_slice(&[0; 256]);
    frame.extend_from_slice(&[0; 1]);
}

#[test]
fn body_of_a_buffer_shorter_than_a_header_is_empty() {
    let mut frame = FrameMut::with_capacity(300);
    frame.extend_from_slice(&[9; 200]);
    assert!(frame.body().is_empty());
    assert!(frame.body_mut().is_empty());
    assert_eq!(frame.as_bytes().len(), 200);
}

#[test]
fn into_mut_reuses_a_unique_frame_and_copies_a_shared_one() {
    let frame = FrameMut::with_body(Command::Application(24), b"hello").freeze();
    let shared = frame.clone();
    let copy = shared.into_mut();
    assert_ne!(
        copy.as_bytes().as_ptr(),
        frame.as_bytes().as_ptr(),
        "shared: copied"
    );
    let address = frame.as_bytes().as_ptr();
    let mut unique = frame.into_mut();
    assert_eq!(unique.as_bytes().as_ptr(), address, "unique: no copy");
    unique.body_mut()[0] = b'j';
    assert_eq!(unique.freeze().body(), b"jello");
    assert_eq!(copy.body(), b"hello");
}

#[test]
fn header_bytes_view_and_copy_agree() {
    let mut header = Header::new(Command::Application(25), 10);
    for (i, b) in header.as_bytes_mut().iter_mut().enumerate().skip(64) {
        *b = pattern(i);
    }
    let copy = Header::from_bytes(header.as_bytes());
    assert_eq!(copy.as_bytes(), header.as_bytes());
    assert_eq!(copy.size(), header.size());
    assert_eq!(copy.command_area(), header.command_area());
    // The view of a frame's header is the frame's first 256 bytes.
    let mut frame = FrameMut::new(Command::Application(25), 10);
    frame.header_mut().as_bytes_mut()[64..].copy_from_slice(&header.as_bytes()[64..]);
    assert_eq!(&frame.as_bytes()[..256], &header.as_bytes()[..]);
}

/// Frames shared between threads (`Frame` is an `Arc`): clones dropped on
/// other threads while the original is read.
#[test]
fn frames_shared_across_threads_are_dropped_once() {
    let frame = FrameMut::with_body(Command::Application(26), &[3; 5000]).freeze();
    let frames: Arc<Vec<Frame>> = Arc::new((0..8).map(|_| frame.clone()).collect());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let frames = frames.clone();
            std::thread::spawn(move || {
                frames
                    .iter()
                    .map(|f| f.body().iter().map(|&b| u64::from(b)).sum::<u64>())
                    .sum::<u64>()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("reader"), 8 * 3 * 5000);
    }
    drop(frames);
    assert_eq!(frame.ref_count(), 1);
}

/// A frame larger than the decoder's read buffer is read into its own
/// storage: that storage, filled through the I/O traits as a socket read
/// would, completes into the same frame.
#[test]
fn a_partial_frame_filled_in_place_completes() {
    let limits = DecodeLimits {
        max_message_size_bytes: 1 << 20,
        require_sealed: true,
    };
    let mut source = FrameMut::with_body(Command::Application(27), &[0xC3; 9000]);
    source.seal();
    let wire = source.freeze();
    let mut decoder = Decoder::with_buffer(limits, 1024, None);
    let mut input = &wire.as_bytes()[..300];
    assert_eq!(decoder.decode(&mut input), Ok(None));
    let space = decoder.read_space();
    assert_eq!(space.len(), 300);
    assert_eq!(
        space.capacity(),
        wire.len(),
        "sized exactly: a read never over-reads"
    );
    let filled = space.len();
    for (dst, src) in io::IoBufMut::as_uninit(space)[filled..]
        .iter_mut()
        .zip(&wire.as_bytes()[filled..])
    {
        dst.write(*src);
    }
    // SAFETY: every byte up to the capacity was written just above.
    unsafe { io::SetLen::set_len(space, wire.len()) };
    let Ok(Progress::Frame(frame)) = decoder.next_frame() else {
        panic!("a complete frame")
    };
    assert_eq!(frame, wire);
    assert!(decoder.is_between_frames());
}
