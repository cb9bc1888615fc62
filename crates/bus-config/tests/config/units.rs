//! Property tests of the config units (proptest): sizes and durations print
//! in a spelling that parses back to the same value, every accepted
//! spelling means what it says, and no input makes a parser panic.

use std::time::Duration;

use bus_config::{ByteSize, format_duration, parse_duration, parse_optional_duration};
use proptest::prelude::*;

const SIZE_UNITS: [(&str, u64); 8] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

const DURATION_UNITS: [(&str, u64); 4] =
    [("ms", 1), ("s", 1_000), ("min", 60_000), ("h", 3_600_000)];

fn space() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("  ")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any size prints in a unit that parses back to the same bytes.
    #[test]
    fn every_size_prints_and_parses_back(bytes in any::<u64>()) {
        let shown = ByteSize(bytes).to_string();
        let parsed: ByteSize = shown
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{shown:?}: {e}")))?;
        prop_assert_eq!(parsed.bytes(), bytes, "{}", shown);
    }

    /// `N unit` means N times the unit, with or without a space; a product
    /// beyond u64 is refused as too large, never wrapped.
    #[test]
    fn every_size_spelling_means_what_it_says(
        number in prop_oneof![0u64..=100_000, any::<u64>()],
        unit in 0..SIZE_UNITS.len(),
        gap in space(),
    ) {
        let (name, factor) = SIZE_UNITS[unit];
        let text = format!("{number}{gap}{name}");
        if let Some(bytes) = number.checked_mul(factor) {
            let parsed = text.parse::<ByteSize>().map(ByteSize::bytes).ok();
            prop_assert_eq!(parsed, Some(bytes), "{}", text);
        } else {
            let err = text.parse::<ByteSize>().expect_err("overflow").to_string();
            prop_assert!(err.contains("too large"), "{}: {}", text, err);
        }
        // A plain number is bytes.
        let plain = number.to_string().parse::<ByteSize>().map(ByteSize::bytes);
        prop_assert_eq!(plain.ok(), Some(number));
    }

    /// Any whole number of milliseconds prints in a unit that parses back
    /// to the same duration.
    #[test]
    fn every_duration_prints_and_parses_back(
        millis in prop_oneof![0u64..=10_000_000, any::<u64>()],
    ) {
        let duration = Duration::from_millis(millis);
        let shown = format_duration(duration);
        let parsed = parse_duration(&shown)
            .map_err(|e| TestCaseError::fail(format!("{shown:?}: {e}")))?;
        prop_assert_eq!(parsed, duration, "{}", shown);
        let optional = parse_optional_duration(&shown)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(optional, Some(duration).filter(|d| !d.is_zero()), "zero means off");
    }

    /// `N unit` means N of the unit; beyond what a `Duration` of whole
    /// seconds can say it is refused as too large.
    #[test]
    fn every_duration_spelling_means_what_it_says(
        number in prop_oneof![0u64..=100_000, any::<u64>()],
        unit in 0..DURATION_UNITS.len(),
        gap in space(),
    ) {
        let (name, millis) = DURATION_UNITS[unit];
        let text = format!("{number}{gap}{name}");
        let expected = match name {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            _ => number.checked_mul(millis / 1_000).map(Duration::from_secs),
        };
        if let Some(duration) = expected {
            prop_assert_eq!(parse_duration(&text).ok(), Some(duration), "{}", text);
        } else {
            let err = parse_duration(&text).expect_err("overflow").to_string();
            prop_assert!(err.contains("too large"), "{}: {}", text, err);
        }
        // The unit is required.
        prop_assert!(parse_duration(&number.to_string()).is_err());
    }

    /// Arbitrary text never makes a parser panic, and whatever parses
    /// prints back to something that parses to the same value.
    #[test]
    fn arbitrary_text_never_panics_and_what_parses_round_trips(
        text in "\\PC{0,24}|[0-9 .,a-zA-Z]{0,12}",
    ) {
        if let Ok(size) = text.parse::<ByteSize>() {
            prop_assert_eq!(size.to_string().parse::<ByteSize>().ok(), Some(size));
        }
        if let Ok(duration) = parse_duration(&text) {
            prop_assert_eq!(parse_duration(&format_duration(duration)).ok(), Some(duration));
        }
        let _ = parse_optional_duration(&text);
    }
}
