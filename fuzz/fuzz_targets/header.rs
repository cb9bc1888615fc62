//! Header validation (bus-core `Header::validate` and
//! `DecodeLimits::check_header`) against the reference model of spec §1,
//! and the accessors against the wire layout.
#![no_main]

use bus_core::{Command, DecodeLimits, GoodbyeReason, Header};
use bus_fuzz::{Rules, check_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, a, b, c, d], rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let Some(bytes) = rest.first_chunk::<256>() else {
        return;
    };
    let max = u32::from_le_bytes([a, b, c, d]);
    let require_sealed = flags & 1 != 0;
    let mut bytes = *bytes;
    if flags & 2 != 0 && bytes[..16] != [0; 16] {
        // Seal the header so the checksum can verify.
        bus_fuzz::seal(&mut bytes);
    }
    let header = Header::from_bytes(&bytes);
    assert_eq!(header.as_bytes(), &bytes);
    assert_eq!(
        header.size(),
        u32::from_le_bytes(bytes[48..52].try_into().unwrap())
    );
    assert_eq!(
        header.request(),
        u64::from_le_bytes(bytes[80..88].try_into().unwrap())
    );
    assert_eq!(header.command(), Command::from_u8(bytes[60]));
    assert_eq!(Command::from_u8(bytes[60]).as_u8(), bytes[60]);
    assert_eq!(header.is_sealed(), bytes[..16] != [0; 16]);
    let rules = Rules {
        max,
        require_sealed,
    };
    let limits = DecodeLimits {
        max_message_size_bytes: max,
        require_sealed,
    };
    assert_eq!(limits.check_header(&header), check_header(&bytes, rules));
    let plain = check_header(
        &bytes,
        Rules {
            max,
            require_sealed: false,
        },
    );
    assert_eq!(header.validate(max), plain);
    // The size rules alone agree with the full check's first verdicts.
    if let Err(err) = limits.check_size(header.size()) {
        assert_eq!(limits.check_header(&header), Err(err));
    }
    if let Err(err) = limits.check_header(&header) {
        // Every refusal maps to a Goodbye reason (spec §3), never Normal.
        assert_ne!(err.goodbye_reason(), GoodbyeReason::Normal);
    }
});
