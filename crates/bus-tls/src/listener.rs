//! The server side: a TCP listener whose connections finish a TLS handshake
//! in [`Connection::establish`], on the connection's own task, within the
//! bus's `handshake_grace`.

use std::{io, net::SocketAddr};

use bus_core::{
    Error, ReadSettings,
    transport::{Connection, ConnectionInfo, Listener, TransportKind},
};
use bus_tcp::{TcpConnection, TcpListenerConfig};

use crate::{
    ServerTls, TlsError,
    stream::{self, TlsReader, TlsWriter},
};

/// Accepts TCP connections that become TLS 1.3 sessions.
#[derive(Debug)]
pub struct TlsListener {
    tcp: bus_tcp::TcpListener,
    tls: ServerTls,
}

impl TlsListener {
    /// Binds a TCP listener that serves `tls`. Must run inside a compio
    /// runtime. Keep a clone of `tls` to [reload](ServerTls::reload) it.
    pub fn bind(config: &TcpListenerConfig, tls: ServerTls) -> Result<Self, TlsError> {
        Ok(Self {
            tcp: bus_tcp::TcpListener::bind(config)?,
            tls,
        })
    }

    /// Serves `tls` on an already bound TCP listener.
    pub fn from_tcp(tcp: bus_tcp::TcpListener, tls: ServerTls) -> Self {
        Self { tcp, tls }
    }

    /// The TLS state this listener hands to new handshakes.
    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }
}

impl Listener for TlsListener {
    type Connection = TlsIncoming;

    /// # Cancel safety
    /// See [`Listener::accept`]. No handshake byte is exchanged here.
    async fn accept(&mut self) -> io::Result<TlsIncoming> {
        let tcp = self.tcp.accept().await?;
        Ok(TlsIncoming::new(tcp, self.tls.clone()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// An accepted TCP connection whose TLS handshake has not started. Also the
/// way to serve TLS on a socket accepted elsewhere (another shard).
#[derive(Debug)]
pub struct TlsIncoming {
    tcp: TcpConnection,
    tls: ServerTls,
}

impl TlsIncoming {
    /// Pairs an accepted TCP connection with the TLS state to serve it.
    pub fn new(tcp: TcpConnection, tls: ServerTls) -> Self {
        Self { tcp, tls }
    }
}

impl Connection for TlsIncoming {
    type Reader = TlsReader;
    type Writer = TlsWriter;

    fn transport(&self) -> TransportKind {
        TransportKind::Tls
    }

    fn peer_addr(&self) -> SocketAddr {
        self.tcp.peer_addr()
    }

    /// Runs the server handshake with the certificate current at this
    /// moment (a later reload does not affect this connection).
    ///
    /// # Cancel safety
    /// See [`Connection::establish`]: dropping it drops the socket.
    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(TlsReader, TlsWriter, ConnectionInfo), Error> {
        let peer = self.tcp.peer_addr();
        let session = self
            .tls
            .accept_records(self.tcp.into_stream(), reading.read_buffer_bytes)
            .await
            .map_err(|err| Error::handshake(TransportKind::Tls, err))?;
        Ok(stream::established(session, peer, &reading))
    }
}
