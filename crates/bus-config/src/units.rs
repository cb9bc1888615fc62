//! Human units in config values: byte sizes (`"64 MiB"`) and durations
//! (`"5 s"`).
//!
//! The parsers are strict on purpose, because a config value that is read
//! differently from how it was meant is worse than one that is refused:
//!
//! - whole numbers only (`"1.5 GiB"` is refused; write `"1536 MiB"`);
//! - sizes: `B`, and 1024-based `KiB`, `MiB`, `GiB`, or 1000-based (SI) `KB`
//!   (also `kB`), `MB`, `GB`; no unit means bytes;
//! - durations: `ms`, `s`, `min`, `h`, and the unit is required (a bare `5`
//!   could mean seconds or milliseconds); `m` is refused as ambiguous;
//! - the space between number and unit is optional (`"64MiB"`, `"10s"`);
//! - overflow is an error, never a wrap.
//!
//! This module does not know TOML; the serde glue is in `de`.

use std::{fmt, str::FromStr, time::Duration};

use crate::Error;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Size units, exact spelling first. 1024-based units are listed before the
/// decimal ones because `Display` only prints the former.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];
const SIZE_UNITS_HINT: &str = "use B, KiB, MiB, GiB, or decimal KB, MB, GB";

const DURATION_UNITS_HINT: &str = "use ms, s, min, h";

/// The word that turns an optional duration off.
pub(crate) const OFF: &str = "off";

/// A number of bytes, written in config files as `"64 MiB"`, `"4 KiB"`,
/// `"512 B"`, `"1 GB"` or a plain integer.
///
/// `Display` renders the largest 1024-based unit that divides the value
/// exactly (`"64 MiB"`), else bytes (`"1000 B"`).
///
/// ```
/// use bus_config::ByteSize;
///
/// let size: ByteSize = "64 MiB".parse()?;
/// assert_eq!(size.bytes(), 64 << 20);
/// assert_eq!(size.to_string(), "64 MiB");
/// assert_eq!("1 KB".parse::<ByteSize>()?.bytes(), 1000);
/// # Ok::<(), bus_config::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB (1024 bytes each).
    ///
    /// # Panics
    ///
    /// If the result does not fit in a `u64` (at compile time in a `const`).
    pub const fn kib(n: u64) -> Self {
        Self::scaled(n, KIB)
    }

    /// `n` MiB (1024² bytes each).
    ///
    /// # Panics
    ///
    /// If the result does not fit in a `u64` (at compile time in a `const`).
    pub const fn mib(n: u64) -> Self {
        Self::scaled(n, MIB)
    }

    /// `n` GiB (1024³ bytes each).
    ///
    /// # Panics
    ///
    /// If the result does not fit in a `u64` (at compile time in a `const`).
    pub const fn gib(n: u64) -> Self {
        Self::scaled(n, GIB)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    const fn scaled(n: u64, factor: u64) -> Self {
        match n.checked_mul(factor) {
            Some(bytes) => Self(bytes),
            None => panic!("ByteSize overflows u64"),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, factor) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if bytes != 0 && bytes.is_multiple_of(factor) {
                return write!(f, "{} {unit}", bytes / factor);
            }
        }
        write!(f, "{bytes} B")
    }
}

impl FromStr for ByteSize {
    type Err = Error;

    /// Parses `"64 MiB"`, `"64MiB"`, `"1 GB"`, `"512"` and the like.
    fn from_str(text: &str) -> Result<Self, Error> {
        parse_size(text)
            .map(ByteSize)
            .map_err(|reason| Error::Parse {
                message: format!("invalid size {text:?}: {reason}"),
            })
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text.trim(), "\"64 MiB\"")?;
    if unit.is_empty() {
        return Ok(number);
    }
    let (_, factor) = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(|| format!("unknown unit {unit:?} ({SIZE_UNITS_HINT})"))?;
    number
        .checked_mul(*factor)
        .ok_or_else(|| "too large".to_owned())
}

/// Parses a duration such as `"250 ms"`, `"5 s"`, `"2 min"`, `"1 h"` or
/// `"10s"`.
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(bus_config::parse_duration("250 ms")?, Duration::from_millis(250));
/// assert!(bus_config::parse_duration("5").is_err()); // the unit is required
/// # Ok::<(), bus_config::Error>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    duration(text.trim()).map_err(|reason| Error::Parse {
        message: format!("invalid duration {text:?}: {reason}"),
    })
}

/// Parses a duration that may be turned off: `"off"` and zero give `None`,
/// anything else parses as in [`parse_duration`].
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(bus_config::parse_optional_duration("off")?, None);
/// assert_eq!(bus_config::parse_optional_duration("0 s")?, None);
/// assert_eq!(bus_config::parse_optional_duration("2 min")?, Some(Duration::from_mins(2)));
/// # Ok::<(), bus_config::Error>(())
/// ```
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, Error> {
    if text.trim() == OFF {
        return Ok(None);
    }
    parse_duration(text).map(|d| Some(d).filter(|d| !d.is_zero()))
}

fn duration(text: &str) -> Result<Duration, String> {
    if text == OFF {
        return Err(format!(
            "{OFF:?} is not allowed for this setting; give a duration"
        ));
    }
    let (number, unit) = split_number(text, "\"5 s\"")?;
    let too_large = || "too large".to_owned();
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "min" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        "h" => number
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        "" => Err(format!("missing unit ({DURATION_UNITS_HINT})")),
        "m" => Err(format!("ambiguous unit \"m\" ({DURATION_UNITS_HINT})")),
        _ => Err(format!("unknown unit {unit:?} ({DURATION_UNITS_HINT})")),
    }
}

/// Splits `"64 MiB"` into `(64, "MiB")`. `example` shows the expected shape in
/// the error.
fn split_number<'a>(text: &'a str, example: &str) -> Result<(u64, &'a str), String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "expected a whole number and a unit, such as {example}"
        ));
    }
    if rest.starts_with(['.', ',']) {
        return Err("fractions are not supported; use a smaller unit".to_owned());
    }
    let number = digits.parse::<u64>().map_err(|_| "too large".to_owned())?;
    Ok((number, rest.trim_start()))
}

/// Renders a duration in the largest unit that represents it exactly
/// (`"10 s"`, `"250 ms"`, `"2 min"`, `"1 h"`), the same spelling
/// [`parse_duration`] reads. Durations finer than a millisecond fall back to
/// `Debug` (`"1.5µs"`).
pub fn format_duration(duration: Duration) -> String {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{duration:?}");
    }
    if duration.subsec_millis() != 0 {
        return format!("{} ms", duration.as_millis());
    }
    let secs = duration.as_secs();
    if secs != 0 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Renders an optional duration: `"off"` for `None`.
pub(crate) fn format_optional_duration(duration: Option<Duration>) -> String {
    duration.map_or_else(|| OFF.to_owned(), format_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> u64 {
        text.parse::<ByteSize>()
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .bytes()
    }

    fn size_error(text: &str) -> String {
        text.parse::<ByteSize>().expect_err(text).to_string()
    }

    fn duration_error(text: &str) -> String {
        parse_duration(text).expect_err(text).to_string()
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(size("512 B"), 512);
        assert_eq!(size("4 KiB"), 4096);
        assert_eq!(size("64 MiB"), 64 << 20);
        assert_eq!(size("64MiB"), 64 << 20);
        assert_eq!(size("1 GiB"), 1 << 30);
        assert_eq!(size("  8   KiB "), 8192);
    }

    #[test]
    fn sizes_in_decimal_units() {
        assert_eq!(size("1 KB"), 1000);
        assert_eq!(size("1kB"), 1000);
        assert_eq!(size("3 MB"), 3_000_000);
        assert_eq!(size("1 GB"), 1_000_000_000);
    }

    #[test]
    fn plain_number_is_bytes() {
        assert_eq!(size("0"), 0);
        assert_eq!(size("65536"), 65536);
    }

    #[test]
    fn unknown_size_unit_names_unit_and_choices() {
        assert_eq!(
            size_error("12 XB"),
            "invalid size \"12 XB\": unknown unit \"XB\" (use B, KiB, MiB, GiB, or decimal KB, MB, GB)"
        );
        // Units are case-sensitive: "mib" is not guessed to mean MiB.
        assert!(size_error("1 mib").contains("unknown unit \"mib\""));
    }

    #[test]
    fn malformed_sizes_are_refused() {
        assert!(size_error("").contains("expected a whole number"));
        assert!(size_error("MiB").contains("expected a whole number"));
        assert!(size_error("-1 MiB").contains("expected a whole number"));
        assert!(size_error("1.5 GiB").contains("fractions are not supported"));
        assert!(size_error("1 MiB 2").contains("unknown unit \"MiB 2\""));
    }

    #[test]
    fn oversized_sizes_are_refused_not_wrapped() {
        assert!(size_error("99999999999999999999").contains("too large"));
        assert!(size_error("17179869184 GiB").contains("too large"));
        assert_eq!(size("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(64).to_string(), "64 MiB");
        assert_eq!(ByteSize::kib(1536).to_string(), "1536 KiB");
        assert_eq!(ByteSize::gib(1).to_string(), "1 GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 B");
        assert_eq!(ByteSize(0).to_string(), "0 B");
    }

    #[test]
    fn size_display_round_trips() {
        for bytes in [0, 1, 256, 1000, 4096, 1 << 20, 3 << 30, u64::MAX] {
            let shown = ByteSize(bytes).to_string();
            assert_eq!(size(&shown), bytes, "{shown}");
        }
    }

    #[test]
    fn durations_in_every_unit() {
        let parse = |text| parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(parse("250 ms"), Duration::from_millis(250));
        assert_eq!(parse("5 s"), Duration::from_secs(5));
        assert_eq!(parse("10s"), Duration::from_secs(10));
        assert_eq!(parse("2 min"), Duration::from_mins(2));
        assert_eq!(parse("1 h"), Duration::from_hours(1));
        assert_eq!(parse("0 s"), Duration::ZERO);
    }

    #[test]
    fn duration_without_unit_is_refused() {
        assert_eq!(
            duration_error("5"),
            "invalid duration \"5\": missing unit (use ms, s, min, h)"
        );
    }

    #[test]
    fn unknown_and_ambiguous_duration_units_are_refused() {
        assert_eq!(
            duration_error("3 days"),
            "invalid duration \"3 days\": unknown unit \"days\" (use ms, s, min, h)"
        );
        assert!(duration_error("5 m").contains("ambiguous unit \"m\""));
        assert!(duration_error("5 S").contains("unknown unit \"S\""));
    }

    #[test]
    fn malformed_durations_are_refused() {
        assert!(duration_error("").contains("expected a whole number"));
        assert!(duration_error("s").contains("expected a whole number"));
        assert!(duration_error("-5 s").contains("expected a whole number"));
        assert!(duration_error("1.5 s").contains("fractions are not supported"));
        assert!(duration_error("99999999999999999999 s").contains("too large"));
        assert!(duration_error("18446744073709551615 h").contains("too large"));
    }

    #[test]
    fn off_only_where_optional() {
        assert!(duration_error("off").contains("\"off\" is not allowed"));
        assert_eq!(parse_optional_duration("off").unwrap(), None);
        assert_eq!(parse_optional_duration(" off ").unwrap(), None);
        assert_eq!(parse_optional_duration("0 ms").unwrap(), None);
        assert_eq!(
            parse_optional_duration("10 s").unwrap(),
            Some(Duration::from_secs(10))
        );
        assert!(parse_optional_duration("Off").is_err());
    }

    #[test]
    fn durations_display_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(format_duration(Duration::from_mins(2)), "2 min");
        assert_eq!(format_duration(Duration::from_hours(2)), "2 h");
        assert_eq!(format_duration(Duration::ZERO), "0 s");
        assert_eq!(format_duration(Duration::from_micros(3)), "3µs");
        assert_eq!(format_optional_duration(None), "off");
    }

    #[test]
    fn duration_display_round_trips() {
        for d in [0, 1, 250, 1000, 1500, 60_000, 3_600_000, 90_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
