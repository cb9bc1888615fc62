//! The WebSocket message path: a binary message must be exactly one valid
//! frame (bus-core `DecodeLimits::check_message`, the one check bus-ws
//! applies to every message), against the reference model of spec §1 and
//! §7. The close-code mapping is checked for every refusal.
//!
//! bus-ws's reader runs over a socket and has no pure entry; the rules it
//! applies to a whole message are bus-core's `DecodeLimits::check_received`,
//! which `check_message` calls after its copy, so this target reaches them.
#![no_main]

use bus_core::{DecodeLimits, FrameError};
use bus_fuzz::{HEADER, Rules, check_body, check_header};
use libfuzzer_sys::fuzz_target;

fn model(message: &[u8], rules: Rules) -> Result<(), FrameError> {
    let len = message.len();
    if len < HEADER {
        let size = message
            .get(48..52)
            .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()));
        return Err(FrameError::MessageLength {
            len: len as u64,
            size,
        });
    }
    check_header(&message[..HEADER], rules)?;
    let size = u32::from_le_bytes(message[48..52].try_into().unwrap());
    if size as usize != len {
        return Err(FrameError::MessageLength {
            len: len as u64,
            size,
        });
    }
    check_body(message)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, lo, hi], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let rules = Rules {
        max: 256 + 4 * u32::from(u16::from_le_bytes([lo, hi])),
        require_sealed: flags & 1 != 0,
    };
    let mut message = rest.to_vec();
    if flags & 2 != 0 && message.len() >= HEADER {
        // Make the size field match, and seal when the checksum is set.
        let len = u32::try_from(message.len()).unwrap();
        message[48..52].copy_from_slice(&len.to_le_bytes());
        if message[..16] != [0; 16] {
            bus_fuzz::seal(&mut message);
        }
    }
    let limits = DecodeLimits {
        max_message_size_bytes: rules.max,
        require_sealed: rules.require_sealed,
    };
    let got = limits.check_message(&message);
    match (&got, model(&message, rules)) {
        (Ok(frame), Ok(())) => assert_eq!(frame.as_bytes(), message.as_slice()),
        (Err(got), Err(want)) => {
            assert_eq!(*got, want);
            let _ = got.goodbye_reason();
        }
        (got, want) => panic!("check_message {got:?}, model {want:?}"),
    }
});
