//! Errors of the QUIC transport.

use std::net::SocketAddr;

/// What can go wrong setting up QUIC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// A setting is out of range.
    #[error("invalid QUIC setting `{field}` = {value}: expected {expected}")]
    InvalidConfig {
        /// The field, as named in [`QuicTuning`](crate::QuicTuning) and the
        /// `[quic]` config section.
        field: &'static str,
        /// What it was.
        value: String,
        /// What it must be.
        expected: String,
    },
    /// Binding the UDP socket failed.
    #[error("cannot bind UDP {addr} for QUIC: {source}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS material could not be used for QUIC.
    #[error("TLS for QUIC: {0}")]
    Tls(#[from] bus_tls::TlsError),
    /// The rustls config cannot carry QUIC (needs TLS 1.3 with
    /// `TLS13_AES_128_GCM_SHA256`).
    #[error("the TLS config cannot carry QUIC: {0}")]
    Crypto(String),
    /// A client's QUIC handshake failed.
    #[error("QUIC handshake with {peer} failed: {source}")]
    Handshake {
        /// The client.
        peer: SocketAddr,
        /// Why.
        source: compio_quic::ConnectionError,
    },
    /// A client finished the handshake without ALPN `bus.v1`.
    #[error("QUIC peer {peer} did not negotiate ALPN bus.v1")]
    NoAlpn {
        /// The client.
        peer: SocketAddr,
    },
    /// A client's connection ended before it opened the bus stream.
    #[error("QUIC peer {peer} opened no stream: {source}")]
    NoStream {
        /// The client.
        peer: SocketAddr,
        /// Why.
        source: compio_quic::ConnectionError,
    },
    /// A client opened the bus stream with 0-RTT data (refused, spec §7).
    #[error("QUIC peer {peer} sent 0-RTT data")]
    ZeroRtt {
        /// The client.
        peer: SocketAddr,
    },
    /// The name to verify the server's certificate against is not valid.
    #[error("server name `{name}` is not valid: {source}")]
    ServerName {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The client certificate and key cannot be used together.
    #[error("client certificate with key {}: {source}", key.display())]
    ClientCertificate {
        /// The key file.
        key: std::path::PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// Connecting to a server failed.
    #[error("cannot connect to {addr} over QUIC: {problem}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// Why.
        problem: String,
    },
}
