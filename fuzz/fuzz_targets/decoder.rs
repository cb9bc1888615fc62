//! The stream decoder (bus-core `framing::Decoder`) against the reference
//! model of spec §1: arbitrary bytes, arriving in arbitrary chunks, give the
//! same frames and the same error.
#![no_main]

use bus_core::{DecodeLimits, Decoder, Error, FrameError};
use bus_fuzz::{DecoderInput, End, frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = DecoderInput::parse(data) else {
        return;
    };
    let limits = DecodeLimits {
        max_message_size_bytes: input.rules.max,
        require_sealed: input.rules.require_sealed,
    };
    let mut decoder = Decoder::with_buffer(limits, input.read_buffer, None);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut error: Option<FrameError> = None;
    let mut at = 0;
    'feed: for &n in &input.chunks {
        let mut chunk = &input.stream[at..at + n];
        at += n;
        loop {
            match decoder.decode(&mut chunk) {
                Ok(Some(frame)) => got.push(frame.as_bytes().to_vec()),
                Ok(None) => break,
                Err(err) => {
                    error = Some(err);
                    break 'feed;
                }
            }
            if chunk.is_empty() {
                // A frame may have ended exactly at the chunk's end.
                match decoder.decode(&mut chunk) {
                    Ok(Some(frame)) => got.push(frame.as_bytes().to_vec()),
                    Ok(None) => {}
                    Err(err) => {
                        error = Some(err);
                        break 'feed;
                    }
                }
                break;
            }
        }
    }
    let (want, end) = frames(&input.stream, input.rules);
    assert_eq!(
        got.len(),
        want.len(),
        "frame count; end {end:?}, error {error:?}"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_slice(), *w, "frame bytes");
    }
    match (&end, error) {
        (End::Clean, None) => {
            assert!(decoder.is_between_frames());
            assert_eq!(decoder.buffered(), 0);
            assert!(matches!(decoder.end_of_stream(), Error::Closed));
        }
        (End::Partial, None) => {
            let consumed: usize = want.iter().map(|f| f.len()).sum();
            assert!(!decoder.is_between_frames());
            assert_eq!(decoder.buffered(), input.stream.len() - consumed);
            assert!(matches!(decoder.end_of_stream(), Error::Io(_)));
        }
        (End::Error { error: want, .. }, Some(got)) => {
            assert_eq!(got, *want);
            // Poisoned: the same error again, nothing more decoded.
            assert_eq!(decoder.decode(&mut &[0u8; 300][..]).err(), Some(got));
            assert!(!decoder.is_between_frames());
        }
        // A header verdict on an incomplete frame may wait for its body,
        // except the size rules, which are checked before anything is
        // allocated for the frame.
        (
            End::Error {
                error: want,
                complete: false,
                from_header: true,
            },
            None,
        ) => {
            assert!(
                !matches!(
                    want,
                    FrameError::TooLarge { .. } | FrameError::TooSmall { .. }
                ),
                "size error {want:?} not reported"
            );
            assert!(!decoder.is_between_frames());
        }
        (end, got) => panic!("model says {end:?}, decoder says {got:?}"),
    }
});
