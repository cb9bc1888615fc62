//! TOML configuration of `bus`.
#![deny(missing_docs)]

mod error;
mod units;

pub use error::Error;
pub use units::{ByteSize, format_duration, parse_duration, parse_optional_duration};
