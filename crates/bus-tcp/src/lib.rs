//! Plain TCP transport of `bus`: frames back to back on the byte stream
//! (spec §7).
//!
//! [`TcpListener`] accepts (with `TCP_NODELAY` and a configurable backlog),
//! [`connect`] dials with a timeout; both yield a [`TcpConnection`] that
//! implements the transport traits of `bus-core`. Each batch of queued frames
//! leaves in one `writev`, and frame bodies are never copied on the way out.
//!
//! ```no_run
//! use bus_core::{Bus, BusConfig, Peer, Frame};
//! use bus_tcp::{TcpListener, TcpListenerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! compio::runtime::Runtime::new()?.block_on(async {
//!     let echo = |bus: &Bus, from: Peer, frame: Frame| {
//!         if let Peer::Client(id) = from {
//!             let _ = bus.send_to_client(id, frame);
//!         }
//!     };
//!     let bus = Bus::new(BusConfig::default(), echo)?;
//!     let listener = TcpListener::bind(&TcpListenerConfig::new("127.0.0.1:0".parse()?))?;
//!     bus.serve(listener)?;
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod connector;
mod error;
mod listener;
mod stream;

pub use config::{TcpConnectorConfig, TcpListenerConfig};
pub use connector::connect;
pub use error::TcpError;
pub use listener::TcpListener;
pub use stream::{TcpConnection, TcpReader, TcpSource, TcpWriter};
