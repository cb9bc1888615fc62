//! Serde glue: how the schema reads sizes, durations, addresses and the
//! cluster id out of TOML values.
//!
//! Each reader turns a bad value into a message that says what was expected;
//! the TOML crate appends the dotted key (such as `bus.read_buffer`).

use std::{fmt, marker::PhantomData, net::SocketAddr, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, Unexpected, Visitor},
};

use crate::{ByteSize, Error, units};

/// Reads a TOML string with `parse`; anything else is a type error that
/// says what was expected.
struct TextVisitor<T> {
    parse: fn(&str) -> Result<T, String>,
    expecting: &'static str,
    output: PhantomData<T>,
}

impl<T> TextVisitor<T> {
    fn new(parse: fn(&str) -> Result<T, String>, expecting: &'static str) -> Self {
        Self {
            parse,
            expecting,
            output: PhantomData,
        }
    }
}

impl<T> Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

/// A duration with a unit (`"5 s"`); `"off"` and other words are refused.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(TextVisitor::new(
        |text| units::parse_duration(text).map_err(|e| e.to_string()),
        "a duration such as \"5 s\" or \"250 ms\"",
    ))
}

/// A duration, or `"off"` (or zero) for `None`.
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_str(TextVisitor::new(
        |text| units::parse_optional_duration(text).map_err(|e| e.to_string()),
        "a duration such as \"5 s\", or \"off\"",
    ))
}

/// An `IP:port` address. Host names are refused rather than resolved: a
/// config file must not depend on DNS at start-up.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    deserializer.deserialize_str(TextVisitor::new(
        |text| {
            text.parse().map_err(|_| {
                format!(
                    "invalid address {text:?}: expected IP:port such as \"127.0.0.1:7070\" \
                     or \"[::1]:7070\" (host names are not resolved)"
                )
            })
        },
        "an address such as \"127.0.0.1:7070\"",
    ))
}

/// A u128 cluster id: a decimal or `0x` hex string, or a non-negative TOML
/// integer (TOML integers stop at `i64::MAX`, hence the strings).
pub(crate) fn cluster<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
    struct ClusterVisitor;

    impl Visitor<'_> for ClusterVisitor {
        type Value = u128;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a cluster id such as \"0x2a\" or \"42\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u128, E> {
            parse_cluster(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u128, E> {
            Ok(u128::from(n))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u128, E> {
            u128::try_from(n).map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
        }
    }

    deserializer.deserialize_any(ClusterVisitor)
}

fn parse_cluster(text: &str) -> Result<u128, String> {
    let trimmed = text.trim();
    let parsed = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u128::from_str_radix(&hex.replace('_', ""), 16),
        None => trimmed.replace('_', "").parse(),
    };
    // `from_str_radix` accepts a leading '+'; a cluster id has no sign.
    match parsed {
        Ok(id) if !trimmed.contains('+') => Ok(id),
        _ => Err(format!(
            "invalid cluster id {text:?}: expected a decimal or 0x-prefixed hex number \
             of at most 128 bits"
        )),
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    /// A size string (`"64 MiB"`) or a non-negative integer of bytes.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64 MiB\", or a whole number of bytes")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(|e: Error| E::custom(e))
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(bytes), &self))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cluster;

    #[test]
    fn cluster_ids_in_hex_and_decimal() {
        assert_eq!(parse_cluster("0x1"), Ok(1));
        assert_eq!(parse_cluster("0X2a"), Ok(42));
        assert_eq!(parse_cluster("42"), Ok(42));
        assert_eq!(
            parse_cluster("0xffff_ffff_ffff_ffff_ffff_ffff_ffff_ffff"),
            Ok(u128::MAX)
        );
        assert_eq!(parse_cluster(&u128::MAX.to_string()), Ok(u128::MAX));
    }

    #[test]
    fn bad_cluster_ids_are_refused() {
        for text in [
            "",
            "0x",
            "-1",
            "+1",
            "0x+1",
            "0xg",
            "1_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000",
        ] {
            let error = parse_cluster(text).expect_err(text);
            assert!(error.starts_with("invalid cluster id"), "{error}");
        }
    }
}
