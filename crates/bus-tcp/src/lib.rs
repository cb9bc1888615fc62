//! Plain TCP transport of `bus`.
#![deny(missing_docs)]

pub mod config;

pub use config::{TcpConnectorConfig, TcpListenerConfig};
