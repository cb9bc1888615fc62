//! QUIC transport of `bus` (spec §7): frames back to back on one
//! bidirectional QUIC stream, with compio-quic on quinn-proto and rustls on
//! the ring provider.
//!
//! - [`QuicListener`] owns a UDP endpoint. [`accept`](bus_core::transport::Listener::accept)
//!   never waits on a handshake: each attempt is handed to the bus, whose
//!   [`establish`](bus_core::transport::Connection::establish) runs the
//!   handshake and waits for the client's stream on the connection's own
//!   task, bounded by `handshake_grace`.
//! - Admission: beyond `max_connections` open connections or
//!   `max_handshakes` handshakes in flight, attempts are refused before any
//!   crypto work; from `retry_threshold` handshakes in flight on, an attempt
//!   from an address not yet validated gets a stateless Retry instead of a
//!   slot, so spoofed or never-completing Initials cannot fill the
//!   handshake slots. [`totals`] counts both over the process.
//! - [`ClientQuic`] connects (ALPN `bus.v1`, 0-RTT off), opens the stream
//!   with a `Ping` and waits for the `Pong`.
//!
//! Policy, fixed by the spec: ALPN `bus.v1` required; 0-RTT off in the TLS
//! config (never left to compio-quic's builders, which turn it on) and any
//! 0-RTT stream refused; one bidirectional stream: the server gives the
//! client credit for exactly one and no unidirectional stream, so a second
//! cannot be opened at all (no task per connection watches for one). Close: `Goodbye`
//! where applicable, stream finish, the peer's acknowledgement (bounded),
//! then `CONNECTION_CLOSE` with the code of [`codes::for_goodbye`].
//! Certificates come from [`bus_tls::ServerTls`], reloads included.
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admission;
mod client;
pub mod codes;
mod config;
mod error;
mod listener;
mod setup;
mod stream;

use std::time::Duration;

pub use admission::{AdmissionStats, QuicTotals, totals};
pub use client::{ClientQuic, OPENING_PING_REQUEST, opening_ping};
pub use compio_quic;
pub use config::{
    MAX_INITIAL_MTU, MIN_INITIAL_MTU, QuicClientConfig, QuicListenerConfig, QuicTuning,
    UDP_BUFFER_RANGE, WINDOW_RANGE,
};
pub use error::QuicError;
pub use listener::{QuicIncoming, QuicListener};
pub use stream::{QuicReader, QuicSource, QuicWriter};

/// Closes every connection of `endpoint` with `code` and waits, at most
/// `bound`, for the endpoint to finish (dependencies.md #8: compio-quic's
/// shutdown waits for every connection and stream handle to be dropped, so
/// drop them first). Returns whether it finished in time.
///
/// # Cancel safety
/// Cancel safe: the close is already sent; the endpoint stops when its
/// last handle is dropped.
pub async fn shutdown_endpoint(
    endpoint: compio_quic::Endpoint,
    code: compio_quic::VarInt,
    bound: Duration,
) -> bool {
    endpoint.close(code, b"");
    compio::runtime::time::timeout(bound, endpoint.shutdown())
        .await
        .is_ok()
}
