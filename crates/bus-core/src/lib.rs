//! Frame, framing, aligned buffers, transport traits and the per-shard bus.
#![deny(missing_docs)]

pub mod config;
pub mod limits;

pub use config::{BusConfig, ConfigError, SlowConsumerPolicy};
