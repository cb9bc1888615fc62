//! The TCP listener.

use std::{io, net::SocketAddr};

use bus_core::transport::Listener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{TcpConnection, TcpError, TcpListenerConfig};

/// Accepts TCP connections for the bus, with `TCP_NODELAY` set on each.
#[derive(Debug)]
pub struct TcpListener {
    inner: compio::net::TcpListener,
    nodelay: bool,
}

impl TcpListener {
    /// Binds and listens with the configured backlog. Must run inside a
    /// compio runtime.
    pub fn bind(config: &TcpListenerConfig) -> Result<Self, TcpError> {
        let addr = config.listen;
        let bind = || -> io::Result<std::net::TcpListener> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            // Let a restarted node bind while old connections sit in TIME_WAIT.
            socket.set_reuse_address(true)?;
            socket.set_cloexec(true)?;
            socket.bind(&addr.into())?;
            let backlog = i32::try_from(config.backlog).unwrap_or(i32::MAX);
            socket.listen(backlog)?;
            Ok(socket.into())
        };
        let std_listener = bind().map_err(|source| TcpError::Bind { addr, source })?;
        let inner = compio::net::TcpListener::from_std(std_listener)
            .map_err(|source| TcpError::Bind { addr, source })?;
        Ok(Self {
            inner,
            nodelay: config.nodelay,
        })
    }
}

impl Listener for TcpListener {
    type Connection = TcpConnection;

    /// # Cancel safety
    /// See [`Listener::accept`].
    async fn accept(&mut self) -> io::Result<TcpConnection> {
        let (stream, peer) = self.inner.accept().await?;
        if self.nodelay {
            stream.set_nodelay(true)?;
        }
        Ok(TcpConnection::new(stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
