//! The WebSocket listener: TCP accept (backlog, `TCP_NODELAY`) from
//! `bus-tcp`; the upgrade itself runs in [`Connection::establish`], inside
//! the bus's `handshake_grace`.
//!
//! [`WsAcceptor`] is what a listener's connections share (upgrade policy,
//! limits, TLS state); it is `Send + Sync`, so a TCP socket accepted
//! elsewhere (on another shard) can become a WebSocket connection too.
//!
//! [`Connection::establish`]: bus_core::transport::Connection::establish

use std::{io, net::SocketAddr, sync::Arc};

use bus_core::transport::{Connection as _, Listener, TransportKind};
use bus_tcp::{TcpConnection, TcpListener};

use crate::{
    WsConnection, WsError, WsLimits, WsListenerConfig, stream::Security, upgrade::UpgradePolicy,
};

/// Accepts WebSocket connections (WS, or WSS with [`WsListener::bind_tls`])
/// for the bus.
#[derive(Debug)]
pub struct WsListener {
    tcp: TcpListener,
    acceptor: WsAcceptor,
}

impl WsListener {
    /// Binds and listens. Must run inside a compio runtime.
    ///
    /// Check the config first with [`WsListenerConfig::validate`] against
    /// the bus's `max_message_size`; connections derive tungstenite's limits
    /// from the bus they are served by, whatever this config says.
    pub fn bind(config: &WsListenerConfig) -> Result<Self, WsError> {
        Self::bind_with(config, WsAcceptor::new(config))
    }

    /// Binds a WSS listener: each connection runs a TLS 1.3 handshake with
    /// `tls` (the certificate current when it starts, so
    /// [`ServerTls::reload`](bus_tls::ServerTls::reload) applies to new
    /// connections), then the upgrade, both within the bus's
    /// `handshake_grace`.
    ///
    /// `tls` must offer ALPN `http/1.1` (spec §7: browsers send it; a
    /// client offering no ALPN is accepted too): build it with
    /// `TlsServerConfig::alpn = vec![bus_tls::ALPN_HTTP1.to_vec()]`.
    #[cfg(feature = "wss")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
    pub fn bind_tls(config: &WsListenerConfig, tls: bus_tls::ServerTls) -> Result<Self, WsError> {
        Self::bind_with(config, WsAcceptor::new_tls(config, tls)?)
    }

    fn bind_with(config: &WsListenerConfig, acceptor: WsAcceptor) -> Result<Self, WsError> {
        Ok(Self {
            tcp: TcpListener::bind(&config.tcp)?,
            acceptor,
        })
    }
}

impl Listener for WsListener {
    type Connection = WsConnection;

    /// # Cancel safety
    /// See [`Listener::accept`].
    async fn accept(&mut self) -> io::Result<WsConnection> {
        Ok(self.acceptor.incoming(self.tcp.accept().await?))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What every connection of a WebSocket listener shares: the upgrade policy
/// (path, Origin allow-list), the limits and, for WSS, the TLS state.
///
/// `Send + Sync` and cheap to clone. [`WsListener`] uses one; a runtime that
/// accepts TCP itself (`bus-shard` accepts on shard 0 and hands the socket
/// to another shard before any handshake) turns each accepted socket into a
/// connection with [`WsAcceptor::incoming`], on the thread that will serve
/// it.
#[derive(Debug, Clone)]
pub struct WsAcceptor {
    policy: Arc<UpgradePolicy>,
    limits: WsLimits,
    security: Security,
}

impl WsAcceptor {
    /// Plain WebSocket (WS) with `config`'s path, Origin allow-list and
    /// limits (`config.tcp` is not used: whoever accepts binds it). Check
    /// `config` first with [`WsListenerConfig::validate`].
    pub fn new(config: &WsListenerConfig) -> Self {
        Self::with(config, Security::Plain)
    }

    /// WebSocket over TLS 1.3 (WSS): each connection runs a TLS handshake
    /// with `tls` (the certificate current when it starts), then the
    /// upgrade, both in `establish`.
    ///
    /// # Errors
    /// [`WsError`] naming `tls.alpn` when `tls` does not offer ALPN
    /// `http/1.1` (spec §7): build it with
    /// `TlsServerConfig::alpn = vec![bus_tls::ALPN_HTTP1.to_vec()]`.
    #[cfg(feature = "wss")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
    pub fn new_tls(config: &WsListenerConfig, tls: bus_tls::ServerTls) -> Result<Self, WsError> {
        let alpn = tls.rustls_config().alpn_protocols.clone();
        if !alpn.iter().any(|p| p == bus_tls::ALPN_HTTP1) {
            let offered: Vec<_> = alpn.iter().map(|p| String::from_utf8_lossy(p)).collect();
            return Err(WsError::config(
                "tls.alpn",
                format!("{offered:?}"),
                "a list containing \"http/1.1\" (spec §7: WSS speaks HTTP's ALPN)",
            ));
        }
        Ok(Self::with(config, Security::ServerTls(tls)))
    }

    fn with(config: &WsListenerConfig, security: Security) -> Self {
        Self {
            policy: Arc::new(UpgradePolicy {
                path: config.path.clone(),
                allowed_origins: config.allowed_origins.clone(),
            }),
            limits: config.limits,
            security,
        }
    }

    /// `Ws`, or `Wss` when built with `new_tls`.
    pub fn kind(&self) -> TransportKind {
        self.security.kind()
    }

    /// The server side of a WebSocket connection on an accepted TCP
    /// connection. Reads nothing: the TLS handshake (WSS) and the upgrade
    /// run in its `establish`. Must run inside the compio runtime that will
    /// serve the connection.
    pub fn incoming(&self, tcp: TcpConnection) -> WsConnection {
        let peer = tcp.peer_addr();
        WsConnection::server(
            tcp.into_stream(),
            peer,
            self.policy.clone(),
            self.limits,
            self.security.clone(),
        )
    }
}
