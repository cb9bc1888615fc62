//! WebSocket transport of `bus` (spec §7): each binary WebSocket message
//! carries exactly one frame.
//!
//! [`WsListener`] accepts TCP connections and runs the HTTP/1.1 upgrade
//! inside the bus's `handshake_grace` (path, `Sec-WebSocket-Protocol:
//! bus.v1`, optional Origin allow-list; see [Upgrade](#upgrade));
//! [`connect`] dials a server. Both yield a [`WsConnection`] implementing
//! the transport traits of `bus-core`. With feature `wss`,
//! `WsListener::bind_tls` and `connect_tls` run the same over TLS 1.3
//! (`bus-tls`, ALPN `http/1.1`); the TLS handshake happens in `establish`
//! too, under the same bound. [`WsAcceptor`] holds what a listener's
//! connections share and is `Send + Sync`, for runtimes that accept TCP
//! themselves (`bus-shard` hands sockets between shards before the
//! handshake).
//!
//! ```no_run
//! use bus_core::{Bus, BusConfig, Frame, Peer};
//! use bus_ws::{WsListener, WsListenerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! compio::runtime::Runtime::new()?.block_on(async {
//!     let echo = |bus: &Bus, from: Peer, frame: Frame| {
//!         if let Peer::Client(id) = from {
//!             let _ = bus.send_to_client(id, frame);
//!         }
//!     };
//!     let config = BusConfig::default();
//!     let ws = WsListenerConfig::new("127.0.0.1:0".parse()?);
//!     ws.validate(config.max_message_size_bytes)?;
//!     let bus = Bus::new(config, echo)?;
//!     bus.serve(WsListener::bind(&ws)?)?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Upgrade
//! A bad upgrade gets an HTTP status and a short body: `405` for a method
//! other than GET, `400` for HTTP/1.0 or a missing key, `426` (with
//! `Sec-WebSocket-Version: 13`) for another WebSocket version, `404` for
//! another path, `400` (naming `bus.v1`) when the client does not offer the
//! subprotocol, and `403` when an Origin allow-list is set and the
//! request's `Origin` is not on it.
//!
//! # Framing and limits
//! The data path is this crate's own RFC 6455 framing on compio's owned
//! buffers (no compat adapter, no `futures-io`): plain WS reads with one
//! `io_uring` read into the connection's read buffer and writes through one
//! pooled write buffer (large frames from their own storage, vectored); WSS
//! runs on `bus-tls`'s unbuffered records driver
//! (`bus_tls::TlsHalves`). A message that is one frame and fits the read
//! buffer is copied once into its own frame and unmasked in the same pass;
//! any other goes through bus-core's frame decoder, which holds a message
//! larger than the read buffer against the node's inbound budget and
//! receives it in its own storage, unmasked in place. The message limit is
//! the bus's `max_message_size`: a larger message is refused from its
//! WebSocket header, before it is buffered (close 1009), and a message as
//! soon as its bytes show it longer than the `size` its frame header
//! announced (close 1002). `max_frame_size_bytes` must not exceed the limit
//! ([`WsLimits::validate`]). A text message closes with 1003, a close reason
//! that is not UTF-8 with 1007; the mapping of every close cause to a close
//! code is in [`close`]. Pings are answered one pong at a time: a peer that
//! sends pings without reading the pongs stops being read.
//!
//! # Feature flags
//!
//! | feature | enables |
//! |---------|---------|
//! | `wss`   | WebSocket over TLS 1.3 on `bus-tls`: `WsListener::bind_tls`, `connect_tls` |
//!
//! # What this crate does not do
//! No `permessage-deflate`, no HTTP beyond the upgrade, no TLS of its own
//! (certificates, reload and mutual TLS are `bus-tls`'s).
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod close;
mod codec;
pub mod config;
mod connector;
mod error;
mod handshake;
mod io;
mod listener;
mod shared;
mod stream;
mod upgrade;

pub use config::{WsConnectorConfig, WsLimits, WsListenerConfig};
pub use connector::connect;
#[cfg(feature = "wss")]
#[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
pub use connector::connect_tls;
pub use error::WsError;
pub use listener::{WsAcceptor, WsListener};
pub use stream::{WsConnection, WsReader, WsWriter};
