//! TOML configuration of `bus`: schema, embedded defaults, validation and
//! conversion into the runtime config types.
#![deny(missing_docs)]

mod convert;
mod de;
mod error;
mod load;
mod schema;
mod units;
mod validate;

pub use error::Error;
pub use schema::{
    AdminSection, BusSection, Config, LogLevel, LogSection, PeerSection, Placement, QuicSection,
    ReplicasSection, ShardsSection, SlowConsumer, TcpSection, TlsSection, WsSection,
};
pub use units::{ByteSize, format_duration, parse_duration, parse_optional_duration};
