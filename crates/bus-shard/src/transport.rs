//! How a transport plugs into sharding.
//!
//! Shard 0 accepts plain TCP for every delegated listener. Before any
//! handshake it duplicates the socket's descriptor (close-on-exec), closes
//! its own, and ships the duplicate to the shard chosen by the placement
//! policy. That shard calls [`DelegatedTransport::wrap`] inside its own
//! runtime and installs the result in its bus, which runs
//! [`Connection::establish`] (the TLS handshake, the WebSocket upgrade) on
//! that shard. So handshake work spreads over every core, and no `!Send`
//! stream ever crosses a thread.
//!
//! A transport that is not a TCP stream (QUIC) is not delegated: its
//! listener is served on one shard with
//! [`ShardsBuilder::serve_on`](crate::ShardsBuilder::serve_on), and sends to
//! its clients from other shards are forwarded like any other cross-shard
//! send.

use std::{io, net::SocketAddr};

use bus_core::{
    Admitted, Bus, Error, ReadSettings, TransportKind,
    transport::{Connection, ConnectionInfo},
};
use bus_tcp::TcpConnection;

use crate::link::PendingGuard;

/// A transport whose connections start as an accepted TCP socket.
///
/// The value is shared by every shard (hence `Send + Sync`); put what the
/// handshake needs in it (a rustls `ServerConfig` in an `Arc`, WebSocket
/// limits). [`wrap`](Self::wrap) runs on the owning shard, inside its compio
/// runtime, before any byte of the handshake is read.
pub trait DelegatedTransport: Send + Sync + 'static {
    /// The connection `wrap` makes; its `establish` runs the handshake.
    type Connection: Connection;

    /// The transport, for logs.
    fn kind(&self) -> TransportKind;

    /// Wraps a socket accepted on shard 0 and handed to this shard. Must
    /// not block; the handshake belongs in `establish`, which the bus bounds
    /// by `handshake_grace`.
    fn wrap(&self, stream: std::net::TcpStream) -> io::Result<Self::Connection>;

    /// What a socket refused by admission control (`max_connections`,
    /// `max_handshakes`) is sent before it is closed, on the accepting
    /// shard: nothing by default (closed at once, before any handshake
    /// byte is read); the WebSocket listener's `503` response.
    fn refusal(&self) -> Option<&'static [u8]> {
        None
    }
}

/// Plain TCP: `wrap` is [`TcpConnection::from_std`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl DelegatedTransport for Tcp {
    type Connection = TcpConnection;

    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn wrap(&self, stream: std::net::TcpStream) -> io::Result<TcpConnection> {
        TcpConnection::from_std(stream)
    }
}

/// TLS 1.3: `wrap` pairs the socket with the shared certificate state; the
/// handshake runs in `establish` on the owning shard. A certificate reload
/// through any clone of the `ServerTls` reaches every shard.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
impl DelegatedTransport for bus_tls::ServerTls {
    type Connection = bus_tls::TlsIncoming;

    fn kind(&self) -> TransportKind {
        TransportKind::Tls
    }

    fn wrap(&self, stream: std::net::TcpStream) -> io::Result<bus_tls::TlsIncoming> {
        let tcp = TcpConnection::from_std(stream)?;
        Ok(bus_tls::TlsIncoming::new(tcp, self.clone()))
    }
}

/// WebSocket (WS, or WSS for an acceptor built with
/// [`WsAcceptor::new_tls`](bus_ws::WsAcceptor::new_tls)): `wrap` pairs the
/// socket with the shared upgrade policy, limits and TLS state; the TLS
/// handshake and the HTTP upgrade run in `establish` on the owning shard.
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
impl DelegatedTransport for bus_ws::WsAcceptor {
    type Connection = bus_ws::WsConnection;

    fn kind(&self) -> TransportKind {
        bus_ws::WsAcceptor::kind(self)
    }

    fn wrap(&self, stream: std::net::TcpStream) -> io::Result<bus_ws::WsConnection> {
        Ok(self.incoming(TcpConnection::from_std(stream)?))
    }

    /// Plain WS: an HTTP `503` with a short body, before the upgrade. WSS:
    /// nothing (closed before the `ClientHello` is processed).
    fn refusal(&self) -> Option<&'static [u8]> {
        (bus_ws::WsAcceptor::kind(self) == TransportKind::Ws).then_some(WS_REFUSAL)
    }
}

/// The answer to a WebSocket upgrade refused at capacity: the peer's HTTP
/// client sees a status and a reason instead of a bare close.
#[cfg(feature = "ws")]
pub const WS_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain\r\n\
Content-Length: 20\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
\r\n\
server at capacity\r\n";

/// A delegated listener whose sockets the application serves itself on the
/// owning shard, instead of handing them to the bus as client connections:
/// the replica plane, which runs its own handshake (spec §4) before the bus
/// adopts the connection (`Bus::adopt_replica`).
///
/// Like a [`DelegatedTransport`], the value is shared by every shard, and
/// [`take_over`](Self::take_over) runs on the owning shard inside its
/// runtime, before any byte of a handshake is read.
pub trait DelegatedService: Send + Sync + 'static {
    /// The transport, for logs.
    fn kind(&self) -> TransportKind;

    /// Takes over a socket accepted on shard 0 and handed to this shard's
    /// `bus`. Must not block: spawn the handshake (for example with
    /// `Bus::spawn_handshake`) and bound it.
    fn take_over(&self, bus: &Bus, stream: std::net::TcpStream) -> Result<(), Error>;
}

/// Puts a [`DelegatedService`] in the installers table.
pub(crate) struct Service<S>(pub(crate) S);

impl<S: DelegatedService> Install for Service<S> {
    fn kind(&self) -> TransportKind {
        self.0.kind()
    }

    fn admits(&self) -> bool {
        // Not a client: the replica plane authenticates its peers itself
        // and has a fixed number of them.
        false
    }

    fn refusal(&self) -> Option<&'static [u8]> {
        None
    }

    fn install(
        &self,
        bus: &Bus,
        stream: std::net::TcpStream,
        pending: PendingGuard,
        admitted: Option<Admitted>,
    ) -> Result<(), Error> {
        // Not a client: it is not counted for client placement.
        drop(pending);
        drop(admitted);
        self.0.take_over(bus, stream)
    }
}

/// A [`DelegatedTransport`] with its connection type erased, so shards can
/// keep one table of every delegated listener. One virtual call per
/// connection, none per frame.
pub(crate) trait Install: Send + Sync {
    fn kind(&self) -> TransportKind;

    /// Whether its connections go through admission control.
    fn admits(&self) -> bool;

    /// See [`DelegatedTransport::refusal`].
    fn refusal(&self) -> Option<&'static [u8]>;

    fn install(
        &self,
        bus: &Bus,
        stream: std::net::TcpStream,
        pending: PendingGuard,
        admitted: Option<Admitted>,
    ) -> Result<(), Error>;
}

impl<T: DelegatedTransport> Install for T {
    fn kind(&self) -> TransportKind {
        DelegatedTransport::kind(self)
    }

    fn admits(&self) -> bool {
        true
    }

    fn refusal(&self) -> Option<&'static [u8]> {
        DelegatedTransport::refusal(self)
    }

    fn install(
        &self,
        bus: &Bus,
        stream: std::net::TcpStream,
        pending: PendingGuard,
        admitted: Option<Admitted>,
    ) -> Result<(), Error> {
        let inner = self.wrap(stream)?;
        let connection = Tracked { inner, pending };
        match admitted {
            Some(admitted) => bus.install_admitted(connection, admitted),
            None => bus.install(connection),
        }
    }
}

/// A connection that stays counted as pending on its shard until its
/// handshake ends (done, failed, timed out or abandoned), so
/// least-connections placement sees connections still in hand-over.
struct Tracked<C> {
    inner: C,
    pending: PendingGuard,
}

impl<C: Connection> Connection for Tracked<C> {
    type Reader = C::Reader;
    type Writer = C::Writer;

    fn transport(&self) -> TransportKind {
        self.inner.transport()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr()
    }

    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(Self::Reader, Self::Writer, ConnectionInfo), Error> {
        // Dropped when the handshake ends or its future is dropped; the
        // handler's `on_connected` counts the connection as live right after.
        let _pending = self.pending;
        self.inner.establish(reading).await
    }
}
