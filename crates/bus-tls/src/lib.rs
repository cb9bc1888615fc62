//! TLS 1.3 transport of `bus` (spec §7): frames back to back on a TLS 1.3
//! session over TCP, with rustls on the ring provider.
//!
//! - [`ServerTls`] holds the server's certificate, key and optional client
//!   CA (mutual TLS), loaded from PEM files or generated as a self-signed
//!   development certificate; [`ServerTls::reload`] swaps them for new
//!   handshakes without touching established connections.
//! - [`TlsListener`] accepts TCP; the handshake runs in
//!   [`Connection::establish`](bus_core::transport::Connection::establish) on
//!   the connection's own task, so the bus bounds it by `handshake_grace`
//!   and a silent peer never delays another.
//! - [`ClientTls`] connects (TLS 1.3 only, ALPN `bus.v1`, a CA file as the
//!   root store).
//!
//! Policy, fixed by the spec: TLS 1.3 only (1.2 is refused), ALPN `bus.v1`
//! offered (a client offering ALPN without it fails; one offering none is
//! accepted), 0-RTT off, no client authentication unless a client CA is
//! configured. Reads are cancel safe; close sends `close_notify` before the
//! TCP FIN.
//!
//! Two drivers carry the records:
//!
//! - The bus's own connections ([`TlsIncoming`], [`TlsOutgoing`]) run on
//!   rustls' unbuffered API over compio's owned buffers: one receive buffer
//!   decrypted in place, plaintext copied once into the decoder's space (the
//!   frame itself for large frames), a batch of frames packed into records
//!   and encrypted into one bounded send buffer handed to one write, the
//!   socket read kept in flight by a per-connection pump so a dropped read
//!   loses nothing. rustls 0.23 still copies each record's plaintext once
//!   inside itself, each way.
//! - [`TlsStream`] ([`ServerTls::accept`], [`ClientTls::handshake`],
//!   [`ClientTls::connect`]) is the buffered futures-rustls session over
//!   compio's adapter: a `futures-io` byte stream with the
//!   keying-material exporter (replica links bind to it; rustls 0.23's
//!   unbuffered connections have none). [`frame_halves`] splits it.
//! - [`TlsHalves`] ([`ServerTls::accept_halves`],
//!   [`ClientTls::handshake_halves`]) is the records driver for a protocol
//!   layered on TLS (WSS runs on it): a [`TlsSource`] of decrypted bytes and
//!   a [`TlsSink`] that packs plaintext into records.
//!
//! `examples/echo_bench.rs` is a bounded in-process echo for instruction
//! counts (`valgrind --tool=callgrind`).
//!
//! This crate does no certificate issuance beyond the development
//! certificate, and no revocation checking.
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod certs;
mod client;
mod error;
mod identity;
mod listener;
mod plaintext;
mod provider;
mod records;
mod server;
mod stream;

/// Smallest socket buffer the transport uses, whatever is configured: one
/// full TLS record plus overhead fits.
pub const MIN_BUFFER_BYTES: usize = bus_core::limits::TLS_MIN_BUFFER_BYTES;

pub use certs::{
    SELF_SIGNED_NAMES, SelfSignedPaths, ensure_self_signed, load_certificate_chain,
    load_certified_key, load_private_key, load_roots,
};
pub use client::{
    ClientTls, DEFAULT_BUFFER_BYTES, DEFAULT_HANDSHAKE_TIMEOUT, TlsClientConfig, TlsOutgoing,
    frame_halves,
};
pub use error::TlsError;
pub use identity::identity_of;
pub use listener::{TlsIncoming, TlsListener};
pub use plaintext::{TlsHalves, TlsSink};
pub use provider::{crypto_provider, install_default_provider};
pub use rustls;
pub use server::{
    ALPN_BUS, ALPN_HTTP1, CertificateSource, ServedCertificate, ServerTls, TlsServerConfig,
    build_server_config, self_signed_dir,
};
pub use stream::{TlsReader, TlsSource, TlsStream, TlsWriter};
