//! TOML configuration of a whole `bus` node: the schema, the embedded
//! defaults, human units and validation.
//!
//! ```
//! use std::time::Duration;
//!
//! use bus_config::{ByteSize, Config};
//!
//! // A user file only needs the keys it changes; the rest comes from the
//! // embedded defaults.
//! let config = Config::from_toml_str(
//!     r#"
//!     [bus]
//!     max_message_size = "1 MiB"
//!     idle_timeout = "2 min"
//!
//!     [tcp]
//!     listen = "0.0.0.0:7070"
//!     "#,
//! )?;
//! assert_eq!(config.bus.max_message_size, ByteSize::mib(1));
//! assert_eq!(config.bus.max_batch_frames, 64); // a default
//!
//! // Convert into the runtime types the bus and its transports take.
//! let bus = config.bus_config(0);
//! assert_eq!(bus.idle_timeout, Some(Duration::from_secs(120)));
//! assert_eq!(config.tcp_listener_config().listen.port(), 7070);
//!
//! // Errors name the field, the value and what is allowed.
//! let error = Config::from_toml_str("[bus]\nmax_batch_frames = 0").unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "bus.max_batch_frames = 0 is out of range: allowed 1 ..= 512"
//! );
//! # Ok::<(), bus_config::Error>(())
//! ```
//!
//! # How a config is built
//!
//! Every default lives in one embedded file, `defaults.toml`
//! ([`Config::default_toml`] prints it, with a comment on each key). Loading
//! parses the defaults and the user's file to TOML tables, merges the user's
//! table over the defaults key by key (arrays are replaced whole),
//! deserializes the result into [`Config`], whose structs deny unknown keys,
//! and [validates](Config::validate) it. The Rust structs carry no defaults
//! of their own, so the file and the code cannot drift apart.
//!
//! # Units
//!
//! - Sizes: `"512 B"`, `"4 KiB"`, `"64 MiB"`, `"1 GiB"` are 1024-based;
//!   `"4 KB"` (or `"4 kB"`), `"64 MB"`, `"1 GB"` are 1000-based, as in SI; a
//!   plain integer (`65536` or `"65536"`) is bytes. See [`ByteSize`].
//! - Durations: `"250 ms"`, `"5 s"`, `"2 min"`, `"1 h"`; the unit is
//!   required. Where a duration can be turned off (`bus.idle_timeout`,
//!   `quic.keep_alive`), `"off"` or zero turns it off.
//! - Whole numbers only, the space before the unit is optional, units are
//!   case-sensitive, and overflow is an error.
//! - Addresses are `IP:port` (`"127.0.0.1:7070"`, `"[::1]:7070"`); host
//!   names are not resolved.
//!
//! # What this crate does not do
//!
//! It does no IO besides reading the file given to [`Config::load`]: it does
//! not read certificates or key files, bind addresses or resolve names. It
//! only checks that what those steps will need is present and in range.

#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod convert;
mod de;
mod error;
mod load;
mod schema;
mod units;
mod validate;

pub use error::Error;
pub use schema::{
    AdminSection, BusSection, Config, DEFAULT_WS_MAX_FRAME_SIZE, LogLevel, LogSection, PeerSection,
    Placement, QuicSection, ReplicasSection, ShardsSection, SlowConsumer, TcpSection, TlsSection,
    WsSection,
};
pub use units::{ByteSize, format_duration, parse_duration, parse_optional_duration};
