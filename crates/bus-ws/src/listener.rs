//! The WebSocket listener: TCP accept (backlog, `TCP_NODELAY`) from
//! `bus-tcp`; the upgrade itself runs in [`Connection::establish`], inside
//! the bus's `handshake_grace`.
//!
//! [`Connection::establish`]: bus_core::transport::Connection::establish

use std::{io, net::SocketAddr, rc::Rc};

use bus_core::transport::Listener;
use bus_tcp::TcpListener;

use crate::{WsConnection, WsError, WsLimits, WsListenerConfig, upgrade::UpgradePolicy};

/// Accepts WebSocket connections for the bus.
#[derive(Debug)]
pub struct WsListener {
    tcp: TcpListener,
    policy: Rc<UpgradePolicy>,
    limits: WsLimits,
}

impl WsListener {
    /// Binds and listens. Must run inside a compio runtime.
    ///
    /// Check the config first with [`WsListenerConfig::validate`] against
    /// the bus's `max_message_size`; connections derive tungstenite's limits
    /// from the bus they are served by, whatever this config says.
    pub fn bind(config: &WsListenerConfig) -> Result<Self, WsError> {
        let tcp = TcpListener::bind(&config.tcp)?;
        Ok(Self {
            tcp,
            policy: Rc::new(UpgradePolicy {
                path: config.path.clone(),
                allowed_origins: config.allowed_origins.clone(),
            }),
            limits: config.limits,
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
        ))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
