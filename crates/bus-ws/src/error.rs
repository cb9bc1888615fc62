//! Errors of the WebSocket transports.

use std::{net::SocketAddr, time::Duration};

use bus_tcp::TcpError;

/// What can go wrong setting up a WebSocket listener or client.
///
/// Failures of an accepted connection's handshake are not reported here:
/// the bus counts them (`BusStats::handshake_failures`) and logs them at
/// debug level.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The TCP layer failed (bind, dial, dial timeout); names the address.
    #[error(transparent)]
    Tcp(#[from] TcpError),
    /// TLS setup failed (WSS).
    #[cfg(feature = "wss")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
    #[error(transparent)]
    Tls(#[from] bus_tls::TlsError),
    /// The WebSocket upgrade with a server failed or was refused.
    #[error("WebSocket upgrade with {addr} failed: {reason}")]
    Upgrade {
        /// The server.
        addr: SocketAddr,
        /// Why, including the HTTP status when the server refused.
        reason: String,
    },
    /// The upgrade did not complete in time.
    #[error("WebSocket upgrade with {addr} did not complete within {timeout:?}")]
    UpgradeTimeout {
        /// The server.
        addr: SocketAddr,
        /// The bound that ran out.
        timeout: Duration,
    },
    /// A setting is out of range.
    #[error("invalid WebSocket setting {field} = {value}: allowed {allowed}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

impl WsError {
    pub(crate) fn config(
        field: &'static str,
        value: impl std::fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        Self::Config {
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}
