//! Runtime configuration of the TCP transport.

use std::{net::SocketAddr, time::Duration};

/// Default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Default bound on dialing a peer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-side TCP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpListenerConfig {
    /// Address to bind; port 0 picks an ephemeral port.
    pub listen: SocketAddr,
    /// Length of the kernel's accept queue (`listen(2)` backlog).
    pub backlog: u32,
    /// Set `TCP_NODELAY` on accepted sockets (on by default: frames are
    /// batched by the writer, so Nagle only adds latency).
    pub nodelay: bool,
    /// Most handshakes (TLS handshakes, WebSocket upgrades) in flight on
    /// this listener at once; beyond it a new connection is closed right
    /// after accept. Applied by the shard layer.
    pub max_handshakes: usize,
}

impl TcpListenerConfig {
    /// Settings for `listen` with every other field at its default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            backlog: DEFAULT_BACKLOG,
            nodelay: true,
            max_handshakes: bus_core::limits::DEFAULT_MAX_HANDSHAKES,
        }
    }
}

/// Client-side TCP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConnectorConfig {
    /// Bound on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Set `TCP_NODELAY` on the dialed socket.
    pub nodelay: bool,
}

impl Default for TcpConnectorConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            nodelay: true,
        }
    }
}
