//! Transports as the scenarios see them: how to listen, how to connect a raw
//! client, and a wrapper that makes any transport's writer panic on demand.
#![allow(async_fn_in_trait, reason = "single-threaded test harness")]

use std::{io, net::SocketAddr, rc::Rc};

use bus_core::{
    Error, Frame, GoodbyeReason, ReadSettings,
    transport::{Connection, ConnectionInfo, FrameReader, FrameWriter, Listener, TransportKind},
};
use compio::BufResult;

use crate::{
    client::{QuicClient, RawClient, TcpClient, TlsClient, WsClient, WssClient},
    leaks::Liveness,
    pki::{SERVER_NAME, pki},
};

/// A frame with this command makes a [`PanicListener`] connection's writer
/// panic.
pub const PANIC_WRITER_COMMAND: u8 = 97;

/// One transport under test.
pub trait TestTransport: 'static {
    /// The server side.
    type Listener: Listener;
    /// A raw client.
    type Client: RawClient;
    /// What connections report as their transport.
    const KIND: TransportKind;
    /// Whether the carriage is a byte stream, so a frame may be split
    /// anywhere (TCP, TLS) rather than carried as one message (WS, QUIC).
    const STREAM: bool;
    /// `Ping` frames a client sends to open its stream (each answered with a
    /// `Pong`), counted in the bus's frame statistics: 1 for QUIC, whose
    /// server sees a stream only once data is sent on it.
    const OPENING_FRAMES: u64 = 0;

    /// A listener on `127.0.0.1:0`.
    async fn listen() -> Self::Listener;

    /// A raw client connected to `addr`, past any transport handshake.
    async fn connect(addr: SocketAddr) -> Self::Client;

    /// Whether the server holds one socket per connection besides its
    /// listener (TCP-based transports), rather than one socket for all
    /// (QUIC's UDP endpoint).
    const SOCKET_PER_CONNECTION: bool = true;

    /// Opens a transport-level connection and sends nothing at all.
    async fn connect_silent(addr: SocketAddr) -> compio::net::TcpStream {
        crate::within("silent connect", compio::net::TcpStream::connect(addr))
            .await
            .expect("silent connect")
    }

    /// A raw client past the transport handshake that waits for nothing
    /// from the bus itself (QUIC's opening `Ping` is not sent), for tests
    /// that drive a transport's reader without a bus behind it.
    async fn connect_unanswered(addr: SocketAddr) -> Self::Client {
        Self::connect(addr).await
    }

    /// Asserts that nothing listens on `addr` any more: a TCP connect is
    /// refused (`ConnectionRefused`, not a timeout or a reset).
    async fn assert_not_listening(addr: SocketAddr) {
        let refused = crate::within(
            "connect after shutdown",
            compio::net::TcpStream::connect(addr),
        )
        .await
        .expect_err("the listener is closed");
        assert_eq!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
    }
}

/// Plain TCP.
#[derive(Debug)]
pub struct Tcp;

impl TestTransport for Tcp {
    type Listener = bus_tcp::TcpListener;
    type Client = TcpClient;
    const KIND: TransportKind = TransportKind::Tcp;
    const STREAM: bool = true;

    async fn listen() -> Self::Listener {
        let config = bus_tcp::TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
        bus_tcp::TcpListener::bind(&config).expect("bind 127.0.0.1:0")
    }

    async fn connect(addr: SocketAddr) -> TcpClient {
        TcpClient::connect(addr).await
    }
}

/// TLS 1.3 over TCP, with the test PKI's server certificate.
#[derive(Debug)]
pub struct Tls;

impl Tls {
    /// The server's TLS state: the test server certificate, no client auth.
    pub fn server_tls() -> bus_tls::ServerTls {
        let pair = &pki().server;
        let config = bus_tls::TlsServerConfig::new(bus_tls::CertificateSource::Files {
            cert: pair.cert.clone(),
            key: pair.key.clone(),
        });
        bus_tls::ServerTls::new(&config).expect("server TLS")
    }

    /// A client that trusts the test CA.
    pub fn client_tls() -> bus_tls::ClientTls {
        let config = bus_tls::TlsClientConfig::new(&pki().ca, SERVER_NAME);
        bus_tls::ClientTls::new(&config).expect("client TLS")
    }

    /// A listener on `127.0.0.1:0` serving `tls`.
    pub fn listen_with(tls: bus_tls::ServerTls) -> bus_tls::TlsListener {
        let config = bus_tcp::TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
        bus_tls::TlsListener::bind(&config, tls).expect("bind 127.0.0.1:0")
    }
}

impl TestTransport for Tls {
    type Listener = bus_tls::TlsListener;
    type Client = TlsClient;
    const KIND: TransportKind = TransportKind::Tls;
    const STREAM: bool = true;

    async fn listen() -> Self::Listener {
        Self::listen_with(Self::server_tls())
    }

    async fn connect(addr: SocketAddr) -> TlsClient {
        TlsClient::connect(&Self::client_tls(), addr).await
    }
}

/// WebSocket over plain TCP, upgraded on `/`.
#[derive(Debug)]
pub struct Ws;

impl TestTransport for Ws {
    type Listener = bus_ws::WsListener;
    type Client = WsClient;
    const KIND: TransportKind = TransportKind::Ws;
    const STREAM: bool = false;

    async fn listen() -> Self::Listener {
        let config = bus_ws::WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
        bus_ws::WsListener::bind(&config).expect("bind 127.0.0.1:0")
    }

    async fn connect(addr: SocketAddr) -> WsClient {
        WsClient::connect(addr).await
    }
}

/// WebSocket over TLS 1.3 (ALPN `http/1.1`), with the test PKI's server
/// certificate, upgraded on `/`.
#[derive(Debug)]
pub struct Wss;

impl Wss {
    /// The server's TLS state: the test server certificate, ALPN `http/1.1`.
    pub fn server_tls() -> bus_tls::ServerTls {
        let pair = &pki().server;
        let mut config = bus_tls::TlsServerConfig::new(bus_tls::CertificateSource::Files {
            cert: pair.cert.clone(),
            key: pair.key.clone(),
        });
        config.alpn = vec![bus_tls::ALPN_HTTP1.to_vec()];
        bus_tls::ServerTls::new(&config).expect("server TLS")
    }

    /// A client that trusts the test CA and offers ALPN `alpn`.
    pub fn client_tls_with_alpn(alpn: &[&[u8]]) -> bus_tls::ClientTls {
        let mut config = bus_tls::TlsClientConfig::new(&pki().ca, SERVER_NAME);
        config.alpn = alpn.iter().map(|p| p.to_vec()).collect();
        bus_tls::ClientTls::new(&config).expect("client TLS")
    }

    /// A client that trusts the test CA and offers ALPN `http/1.1`.
    pub fn client_tls() -> bus_tls::ClientTls {
        Self::client_tls_with_alpn(&[bus_tls::ALPN_HTTP1])
    }
}

impl TestTransport for Wss {
    type Listener = bus_ws::WsListener;
    type Client = WssClient;
    const KIND: TransportKind = TransportKind::Wss;
    const STREAM: bool = false;

    async fn listen() -> Self::Listener {
        let config = bus_ws::WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
        bus_ws::WsListener::bind_tls(&config, Self::server_tls()).expect("bind 127.0.0.1:0")
    }

    async fn connect(addr: SocketAddr) -> WssClient {
        Box::pin(WssClient::connect_tls(&Self::client_tls(), addr)).await
    }
}

/// QUIC: one bidirectional stream, with the test PKI's server certificate.
#[derive(Debug)]
pub struct Quic;

impl Quic {
    /// Server settings on `127.0.0.1:0`, everything else at its default.
    pub fn listener_config() -> bus_quic::QuicListenerConfig {
        bus_quic::QuicListenerConfig::new("127.0.0.1:0".parse().expect("addr"))
    }

    /// A listener with `config`, serving the test server certificate.
    pub fn listen_with(config: &bus_quic::QuicListenerConfig) -> bus_quic::QuicListener {
        bus_quic::QuicListener::bind(config, Tls::server_tls()).expect("bind 127.0.0.1:0")
    }

    /// Client settings that trust the test CA, bound to `127.0.0.1:0`.
    pub fn client_config() -> bus_quic::QuicClientConfig {
        let mut config = bus_quic::QuicClientConfig::new(&pki().ca, SERVER_NAME);
        config.bind = "127.0.0.1:0".parse().expect("addr");
        config.connect_timeout = crate::STEP;
        config
    }

    /// A client endpoint with [`Quic::client_config`].
    pub fn client() -> bus_quic::ClientQuic {
        bus_quic::ClientQuic::new(&Self::client_config()).expect("client QUIC")
    }
}

impl TestTransport for Quic {
    type Listener = bus_quic::QuicListener;
    type Client = QuicClient;
    const KIND: TransportKind = TransportKind::Quic;
    // Frames go back to back on one QUIC stream, so a frame may be split
    // anywhere, as on TCP.
    const STREAM: bool = true;
    const OPENING_FRAMES: u64 = 1;
    const SOCKET_PER_CONNECTION: bool = false;

    async fn listen() -> Self::Listener {
        Self::listen_with(&Self::listener_config())
    }

    async fn connect(addr: SocketAddr) -> QuicClient {
        QuicClient::connect(&Self::client(), addr).await
    }

    /// The server sees the stream once the first frame's bytes arrive.
    async fn connect_unanswered(addr: SocketAddr) -> QuicClient {
        let (connection, send, recv) =
            crate::within("quic connect", Self::client().connect_raw(addr))
                .await
                .expect("quic connect");
        QuicClient::new(connection, send, recv)
    }

    /// The UDP port is free again (a socket of our own, without
    /// `SO_REUSEADDR`, binds it), or, while the endpoint still drains
    /// closed connections, a new connection is not served: the dropped
    /// listener cleared the endpoint's server config, so the attempt fails
    /// (quinn drops its Initial: a timeout; a refusal would do too).
    async fn assert_not_listening(addr: SocketAddr) {
        if std::net::UdpSocket::bind(addr).is_ok() {
            return;
        }
        let mut config = Self::client_config();
        config.connect_timeout = std::time::Duration::from_secs(1);
        let client = bus_quic::ClientQuic::new(&config).expect("client QUIC");
        let err = crate::within("connect after shutdown", client.connect_raw(addr))
            .await
            .expect_err("no new connection is served after shutdown");
        let text = err.to_string();
        assert!(
            text.contains("timed out") || text.contains("refused"),
            "{text}"
        );
    }
}

/// Wraps a listener so that every connection it accepts holds a
/// [`Liveness`] token until the connection, and both halves it splits into,
/// are dropped: a dead token proves the bus let go of that connection.
#[derive(Debug)]
pub struct TrackedListener<L> {
    inner: L,
    connections: Liveness,
}

impl<L> TrackedListener<L> {
    /// Wraps `inner`; its connections' tokens go to `connections`.
    pub fn new(inner: L, connections: Liveness) -> Self {
        Self { inner, connections }
    }
}

/// A connection of a [`TrackedListener`].
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    _token: Rc<()>,
}

impl<L: Listener> Listener for TrackedListener<L> {
    type Connection = Tracked<L::Connection>;

    async fn accept(&mut self) -> io::Result<Self::Connection> {
        let inner = self.inner.accept().await?;
        Ok(Tracked {
            inner,
            _token: self.connections.token(),
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<C: Connection> Connection for Tracked<C> {
    type Reader = Tracked<C::Reader>;
    type Writer = Tracked<C::Writer>;

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
        let Self {
            inner,
            _token: token,
        } = self;
        let (r, w, info) = inner.establish(reading).await?;
        let reader = Tracked {
            inner: r,
            _token: token.clone(),
        };
        let writer = Tracked {
            inner: w,
            _token: token,
        };
        Ok((reader, writer, info))
    }
}

impl<R: FrameReader> FrameReader for Tracked<R> {
    async fn read_frame(&mut self) -> Result<Frame, Error> {
        self.inner.read_frame().await
    }

    async fn discard(&mut self) -> io::Result<usize> {
        self.inner.discard().await
    }
}

impl<W: FrameWriter> FrameWriter for Tracked<W> {
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        self.inner.write_batch(batch).await
    }

    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()> {
        self.inner.close(reason).await
    }
}

/// Wraps a listener so that its connections' writers panic when asked to
/// write a frame with command [`PANIC_WRITER_COMMAND`].
#[derive(Debug)]
pub struct PanicListener<L>(pub L);

/// A connection of a [`PanicListener`].
#[derive(Debug)]
pub struct PanicConnection<C>(C);

/// A writer that panics on [`PANIC_WRITER_COMMAND`].
#[derive(Debug)]
pub struct PanicWriter<W>(W);

impl<L: Listener> Listener for PanicListener<L> {
    type Connection = PanicConnection<L::Connection>;

    async fn accept(&mut self) -> io::Result<Self::Connection> {
        self.0.accept().await.map(PanicConnection)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl<C: Connection> Connection for PanicConnection<C> {
    type Reader = C::Reader;
    type Writer = PanicWriter<C::Writer>;

    fn transport(&self) -> TransportKind {
        self.0.transport()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.0.peer_addr()
    }

    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(Self::Reader, Self::Writer, ConnectionInfo), Error> {
        let (r, w, info) = self.0.establish(reading).await?;
        Ok((r, PanicWriter(w), info))
    }
}

impl<W: FrameWriter> FrameWriter for PanicWriter<W> {
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        assert!(
            !batch
                .iter()
                .any(|f| f.header().command_raw() == PANIC_WRITER_COMMAND),
            "test writer panics on command {PANIC_WRITER_COMMAND}"
        );
        self.0.write_batch(batch).await
    }

    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()> {
        self.0.close(reason).await
    }
}
