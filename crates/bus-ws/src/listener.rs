//! The WebSocket listener: TCP accept (backlog, `TCP_NODELAY`) from
//! `bus-tcp`; the upgrade itself runs in [`Connection::establish`], inside
//! the bus's `handshake_grace`.
//!
//! [`Connection::establish`]: bus_core::transport::Connection::establish

use std::{io, net::SocketAddr, rc::Rc};

use bus_core::transport::Listener;
use bus_tcp::TcpListener;

use crate::{
    WsConnection, WsError, WsLimits, WsListenerConfig, stream::Security, upgrade::UpgradePolicy,
};

/// Accepts WebSocket connections (WS, or WSS with [`WsListener::bind_tls`])
/// for the bus.
#[derive(Debug)]
pub struct WsListener {
    tcp: TcpListener,
    policy: Rc<UpgradePolicy>,
    limits: WsLimits,
    security: Security,
}

impl WsListener {
    /// Binds and listens. Must run inside a compio runtime.
    ///
    /// Check the config first with [`WsListenerConfig::validate`] against
    /// the bus's `max_message_size`; connections derive tungstenite's limits
    /// from the bus they are served by, whatever this config says.
    pub fn bind(config: &WsListenerConfig) -> Result<Self, WsError> {
        Self::bind_with(config, Security::Plain)
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
    pub fn bind_tls(config: &WsListenerConfig, tls: bus_tls::ServerTls) -> Result<Self, WsError> {
        let alpn = tls.rustls_config().alpn_protocols.clone();
        if !alpn.iter().any(|p| p == bus_tls::ALPN_HTTP1) {
            let offered: Vec<_> = alpn.iter().map(|p| String::from_utf8_lossy(p)).collect();
            return Err(WsError::config(
                "tls.alpn",
                format!("{offered:?}"),
                "a list containing \"http/1.1\" (spec §7: WSS speaks HTTP's ALPN)",
            ));
        }
        Self::bind_with(config, Security::ServerTls(tls))
    }

    fn bind_with(config: &WsListenerConfig, security: Security) -> Result<Self, WsError> {
        let tcp = TcpListener::bind(&config.tcp)?;
        Ok(Self {
            tcp,
            policy: Rc::new(UpgradePolicy {
                path: config.path.clone(),
                allowed_origins: config.allowed_origins.clone(),
            }),
            limits: config.limits,
            security,
        })
    }
}

impl Listener for WsListener {
    type Connection = WsConnection;

    /// # Cancel safety
    /// See [`Listener::accept`].
    async fn accept(&mut self) -> io::Result<WsConnection> {
        let connection = self.tcp.accept().await?;
        let peer = bus_core::transport::Connection::peer_addr(&connection);
        Ok(WsConnection::server(
            connection.into_stream(),
            peer,
            self.policy.clone(),
            self.limits,
            self.security.clone(),
        ))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
