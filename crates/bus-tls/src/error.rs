//! Errors of the TLS transport. Every error about a file names the file.

use std::{io, net::SocketAddr, path::PathBuf, time::Duration};

/// What can go wrong setting up or running TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// What the file should hold ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file was read but its contents are unusable.
    #[error("{what} file {path}: {problem}")]
    Invalid {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and, where possible, how to fix it.
        problem: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "private key {key} does not match certificate {cert} ({problem}); \
         use the key the certificate was issued for"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' description.
        problem: String,
    },
    /// A self-signed certificate could not be generated or stored.
    #[error("cannot create a self-signed certificate in {dir}: {problem}")]
    SelfSigned {
        /// Where it was to be written.
        dir: PathBuf,
        /// Why.
        problem: String,
    },
    /// A configuration value is unusable.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// The name to verify the server's certificate against is not a valid
    /// DNS name or IP address.
    #[error("server name `{name}` is not valid: {source}")]
    ServerName {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// Dialing the TCP connection failed.
    #[error(transparent)]
    Tcp(#[from] bus_tcp::TcpError),
    /// The TLS handshake with a server failed.
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// The server.
        addr: SocketAddr,
        /// Why (certificate, protocol version, ALPN, ...).
        source: io::Error,
    },
    /// The TLS handshake with a server did not finish in time.
    #[error("TLS handshake with {addr} timed out after {timeout:?}")]
    HandshakeTimeout {
        /// The server.
        addr: SocketAddr,
        /// The bound that ran out.
        timeout: Duration,
    },
}
