//! Errors of the TCP transport.

use std::{net::SocketAddr, time::Duration};

/// What can go wrong setting up TCP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// Binding or listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Dialing failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address we tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Dialing did not complete in time.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The address we tried.
        addr: SocketAddr,
        /// The bound that ran out.
        timeout: Duration,
    },
}
