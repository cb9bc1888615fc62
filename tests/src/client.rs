//! Raw clients: they speak the wire format directly, so they can send
//! anything, including what a well-behaved client never would.
#![allow(async_fn_in_trait, reason = "single-threaded test harness")]

use std::net::SocketAddr;

use async_tungstenite::tungstenite::{
    self, ClientRequestBuilder, Message,
    protocol::{CloseFrame, WebSocketConfig},
};
use bus_core::{
    ByteBuf, ByteSource, Command, DecodeLimits, Decoder, Error, Frame, Goodbye, GoodbyeReason,
    StreamReader, limits::PROTOCOL_ID, transport::FrameReader as _,
};
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
};
use futures_util::{SinkExt, StreamExt};

use crate::within;

/// What a client accepts from the server.
pub const CLIENT_LIMITS: DecodeLimits = DecodeLimits {
    max_message_size_bytes: 1 << 30,
    require_sealed: false,
};

/// A client that sends raw bytes and reads frames.
pub trait RawClient {
    /// Sends one unit of bytes: on a stream, bytes; on a message transport,
    /// one message.
    async fn send_raw(&mut self, bytes: &[u8]);

    /// Sends a frame.
    async fn send(&mut self, frame: &Frame) {
        self.send_raw(frame.as_bytes()).await;
    }

    /// Sends frames back to back and flushes once, so the server sees them
    /// arrive together (one write on a stream, many messages on a message
    /// transport).
    async fn send_all(&mut self, frames: &[Frame]) {
        for frame in frames {
            self.send(frame).await;
        }
    }

    /// Sends `frame` in three pieces, pausing `pause` after each, so that a
    /// reader on the other side is often left waiting mid-frame. On a byte
    /// stream the pieces are slices of the frame.
    async fn send_in_pieces(&mut self, frame: &Frame, pause: std::time::Duration) {
        for piece in thirds(frame.as_bytes()) {
            self.send_raw(piece).await;
            compio::runtime::time::sleep(pause).await;
        }
    }

    /// Receives the next frame (bounded by [`crate::STEP`]).
    async fn recv(&mut self) -> Result<Frame, Error>;

    /// Closes the client's sending side.
    async fn close(&mut self);

    /// Receives the next frame, failing the test on any error.
    async fn recv_frame(&mut self) -> Frame {
        match self.recv().await {
            Ok(frame) => frame,
            Err(err) => panic!("expected a frame, got {err}"),
        }
    }

    /// Expects a `Goodbye` with `reason`, then the end of the connection.
    async fn expect_goodbye_then_close(&mut self, reason: GoodbyeReason) -> Goodbye {
        let frame = self.recv_frame().await;
        assert_eq!(
            frame.header().command(),
            Command::Goodbye,
            "expected Goodbye, got {frame:?}"
        );
        let goodbye = Goodbye::decode(frame.header().command_area());
        assert_eq!(goodbye.reason, reason, "goodbye detail: {}", goodbye.detail);
        self.expect_closed().await;
        goodbye
    }

    /// Expects the server to end the connection with no further frame.
    async fn expect_closed(&mut self) {
        match self.recv().await {
            Err(Error::Closed | Error::Io(_)) => {}
            Ok(frame) => panic!("expected the connection to close, got {frame:?}"),
            Err(other) => panic!("expected the connection to close, got {other}"),
        }
    }
}

/// `bytes` cut in three pieces of about equal length.
pub fn thirds(bytes: &[u8]) -> [&[u8]; 3] {
    let (a, rest) = bytes.split_at(bytes.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    [a, b, c]
}

/// The mask every hand-built client WebSocket frame uses.
pub const WS_MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// One WebSocket frame on the wire (RFC 6455 §5.2), built by hand so tests
/// can send what tungstenite never would: `first` is the first byte (FIN,
/// RSV1-3, opcode), `mask` the masking key (`None`: an unmasked frame, which
/// a client must never send).
pub fn ws_wire_frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut wire = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if let Ok(short @ 0..=125) = u8::try_from(len) {
        wire.push(mask_bit | short);
    } else if let Ok(medium) = u16::try_from(len) {
        wire.push(mask_bit | 0x7E);
        wire.extend_from_slice(&medium.to_be_bytes());
    } else {
        wire.push(mask_bit | 0x7F);
        wire.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            wire.extend_from_slice(&key);
            wire.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => wire.extend_from_slice(payload),
    }
    wire
}

/// A raw TCP client.
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
    reader: StreamReader<bus_tcp::TcpSource>,
}

impl TcpClient {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// If the connection fails or times out.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        Self::new(stream)
    }

    /// Wraps a connected socket.
    pub fn new(stream: TcpStream) -> Self {
        let reader = StreamReader::new(
            bus_tcp::TcpSource::new(stream.clone()),
            Decoder::new(CLIENT_LIMITS),
        );
        Self { stream, reader }
    }

    /// The socket, for tests that need it.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl RawClient for TcpClient {
    async fn send_raw(&mut self, bytes: &[u8]) {
        let BufResult(res, _) = within("tcp write", self.stream.write_all(bytes.to_vec())).await;
        res.expect("tcp write");
    }

    async fn send(&mut self, frame: &Frame) {
        let BufResult(res, _) = within("tcp write", self.stream.write_all(frame.clone())).await;
        res.expect("tcp write");
    }

    async fn recv(&mut self) -> Result<Frame, Error> {
        within("a frame from the server", self.reader.read_frame()).await
    }

    async fn close(&mut self) {
        let _ = within(
            "tcp shutdown",
            compio::io::AsyncWrite::shutdown(&mut self.stream),
        )
        .await;
    }
}

/// Reads whatever the server sends until it closes, bounded; returns the
/// byte count. Used to drain a peer that was deliberately not reading.
///
/// # Panics
/// If the server does not close within the bound.
pub async fn drain_tcp(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        let BufResult(res, b) = within("drain", stream.read(buf)).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

/// A `futures-io` stream as a byte source (test clients read and write
/// one session in turn, never at once).
#[derive(Debug)]
pub struct FuturesSource<S>(pub S);

impl<S: futures_util::AsyncRead + Unpin + 'static> ByteSource for FuturesSource<S> {
    /// Reads plaintext; futures-rustls maps a clean close (`close_notify`)
    /// to `Ok(0)` and a truncation (FIN without it) to `UnexpectedEof`.
    async fn read_into(&mut self, buf: &mut ByteBuf) -> std::io::Result<usize> {
        use futures_util::AsyncReadExt;
        let n = self.0.read(buf.spare_mut()).await?;
        buf.advance(n);
        Ok(n)
    }
}

/// A raw TLS client over `bus_tls::TlsStream`.
#[derive(Debug)]
pub struct TlsClient {
    reader: StreamReader<FuturesSource<bus_tls::TlsStream>>,
}

impl TlsClient {
    /// Wraps an established session.
    pub fn new(stream: bus_tls::TlsStream) -> Self {
        Self {
            reader: StreamReader::new(FuturesSource(stream), Decoder::new(CLIENT_LIMITS)),
        }
    }

    /// Connects with `tls` to `addr`.
    ///
    /// # Panics
    /// If the connection or the handshake fails.
    pub async fn connect(tls: &bus_tls::ClientTls, addr: SocketAddr) -> Self {
        let stream = within("tls connect", tls.connect(addr))
            .await
            .expect("tls connect");
        Self::new(stream)
    }

    /// The session, for tests that inspect it.
    pub fn session(&self) -> &bus_tls::TlsStream {
        &self.reader.source().0
    }
}

impl RawClient for TlsClient {
    async fn send_raw(&mut self, bytes: &[u8]) {
        use futures_util::AsyncWriteExt;
        let stream = &mut self.reader.source_mut().0;
        within("tls write", async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .expect("tls write");
    }

    async fn recv(&mut self) -> Result<Frame, Error> {
        within("a frame from the server", self.reader.read_frame()).await
    }

    async fn close(&mut self) {
        use futures_util::AsyncWriteExt;
        let _ = within("tls close", self.reader.source_mut().0.close()).await;
    }
}

/// The byte stream under a plain test WebSocket client.
pub type WsIo = compio::tls::MaybeTlsStream<TcpStream>;

/// What a test WebSocket client runs on: TCP ([`WsIo`]) or a TLS session.
pub trait WsStream: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin + 'static {}

impl<S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin + 'static> WsStream for S {}

/// A raw WebSocket client (tungstenite) over `S`: sends any binary or text
/// message, or raw bytes below the WebSocket framing, and reports the close
/// frame it received.
#[derive(Debug)]
pub struct WsClient<S = WsIo> {
    ws: async_tungstenite::WebSocketStream<S>,
    close: Option<CloseFrame>,
}

/// A raw WSS client.
pub type WssClient = WsClient<bus_tls::TlsStream>;

impl WsClient<WsIo> {
    /// Connects to `addr` and upgrades on `/` offering `bus.v1`.
    ///
    /// # Panics
    /// If the connection or the upgrade fails or times out.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::upgrade(
            plain_ws_io(tcp_connect(addr).await),
            &ws_request(addr, "/", &[PROTOCOL_ID], None),
        )
        .await
        .expect("WebSocket upgrade")
    }
}

impl WsClient<bus_tls::TlsStream> {
    /// Connects to `addr` with `tls` (ALPN `http/1.1`) and upgrades on `/`
    /// offering `bus.v1`.
    ///
    /// # Panics
    /// If the connection, the TLS handshake or the upgrade fails.
    pub async fn connect_tls(tls: &bus_tls::ClientTls, addr: SocketAddr) -> Self {
        let session = within("wss connect", tls.connect(addr))
            .await
            .expect("wss TLS connect");
        Box::pin(Self::upgrade(
            session,
            &ws_request(addr, "/", &[PROTOCOL_ID], None),
        ))
        .await
        .expect("WebSocket upgrade over TLS")
    }
}

/// A TCP connection to `addr` with `TCP_NODELAY`.
///
/// # Panics
/// If it fails or times out.
pub async fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

impl<S: WsStream> WsClient<S> {
    /// Runs the client side of the upgrade on `io` with `request` (no
    /// message size limit on what the client accepts).
    pub async fn upgrade(
        io: S,
        request: &ClientRequestBuilder,
    ) -> Result<Self, tungstenite::Error> {
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = within(
            "WebSocket upgrade",
            async_tungstenite::client_async_with_config(request.clone(), io, Some(config)),
        )
        .await?;
        Ok(Self { ws, close: None })
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) {
        within("ws send", self.ws.send(Message::text(text)))
            .await
            .expect("ws send text");
    }

    /// Sends any message.
    pub async fn send_message(&mut self, message: Message) {
        within("ws send", self.ws.send(message))
            .await
            .expect("ws send");
    }

    /// The next message of any kind, including pings, pongs and close.
    pub async fn recv_message(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        within("a WebSocket message", self.ws.next()).await
    }

    /// Writes `bytes` to the socket below the WebSocket framing, for
    /// messages tungstenite would not send (a header promising more than
    /// follows). Returns the error if the server already hung up.
    pub async fn write_below_framing(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let io = self.ws.get_mut();
        within("raw ws write", async {
            futures_util::AsyncWriteExt::write_all(io, bytes).await?;
            futures_util::AsyncWriteExt::flush(io).await
        })
        .await
    }

    /// The close frame the server sent, once [`RawClient::recv`] saw it.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.close.as_ref()
    }

    /// Expects `Goodbye(reason)`, then a close frame with `code`.
    ///
    /// # Panics
    /// If either does not arrive.
    pub async fn expect_goodbye_then_close_code(&mut self, reason: GoodbyeReason, code: u16) {
        self.expect_goodbye_then_close(reason).await;
        let close = self.close_frame().expect("a close frame after the Goodbye");
        assert_eq!(u16::from(close.code), code, "close frame: {close:?}");
    }

    /// The WebSocket, for tests that split it.
    pub fn into_inner(self) -> async_tungstenite::WebSocketStream<S> {
        self.ws
    }
}

/// `io` for a plain WebSocket client on `stream`.
pub fn plain_ws_io(stream: TcpStream) -> WsIo {
    compio::tls::MaybeTlsStream::new_plain_compat(compio::io::compat::AsyncStream::new(stream))
}

/// An upgrade request for `ws://addr/path` offering `protocols`.
pub fn ws_request(
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
    origin: Option<&str>,
) -> ClientRequestBuilder {
    let uri = format!("ws://{addr}{path}").parse().expect("uri");
    let mut request = ClientRequestBuilder::new(uri);
    for protocol in protocols {
        request = request.with_sub_protocol(*protocol);
    }
    if let Some(origin) = origin {
        request = request.with_header("Origin", origin);
    }
    request
}

/// Decodes one message as exactly one frame, as a client would.
///
/// # Errors
/// The frame error, if the message is not exactly one valid frame.
pub fn decode_message(bytes: &[u8]) -> Result<Frame, Error> {
    let mut decoder = bus_core::Decoder::new(CLIENT_LIMITS);
    let mut input = bytes;
    match decoder.decode(&mut input)? {
        Some(frame) if input.is_empty() => Ok(frame),
        _ => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {}-byte message is not exactly one frame", bytes.len()),
        ))),
    }
}

impl<S: WsStream> RawClient for WsClient<S> {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.send_message(Message::binary(bytes.to_vec())).await;
    }

    /// One binary message in three pieces of its WebSocket framing: for an
    /// even `request` one WebSocket frame cut in three writes, for an odd
    /// one two fragments (binary, then continuation), the first itself cut
    /// in two writes.
    async fn send_in_pieces(&mut self, frame: &Frame, pause: std::time::Duration) {
        let bytes = frame.as_bytes();
        let pieces: Vec<Vec<u8>> = if frame.header().request().is_multiple_of(2) {
            let wire = ws_wire_frame(0x82, Some(WS_MASK), bytes);
            thirds(&wire).iter().map(|piece| piece.to_vec()).collect()
        } else {
            let (head, tail) = bytes.split_at(bytes.len() / 2);
            let first = ws_wire_frame(0x02, Some(WS_MASK), head);
            let (a, b) = first.split_at(first.len() / 2);
            vec![
                a.to_vec(),
                b.to_vec(),
                ws_wire_frame(0x80, Some(WS_MASK), tail),
            ]
        };
        for piece in pieces {
            self.write_below_framing(&piece)
                .await
                .expect("raw ws write");
            compio::runtime::time::sleep(pause).await;
        }
    }

    async fn send_all(&mut self, frames: &[Frame]) {
        within("ws send_all", async {
            for frame in frames {
                self.ws
                    .feed(Message::binary(frame.as_bytes().to_vec()))
                    .await?;
            }
            SinkExt::flush(&mut self.ws).await
        })
        .await
        .expect("ws send_all");
    }

    async fn recv(&mut self) -> Result<Frame, Error> {
        loop {
            match self.recv_message().await {
                Some(Ok(Message::Binary(bytes))) => return decode_message(&bytes),
                Some(Ok(Message::Close(frame))) => {
                    self.close = frame;
                    return Err(Error::Closed);
                }
                Some(Ok(Message::Text(text))) => panic!("the server sent text: {text}"),
                Some(Ok(_)) => {}
                None => return Err(Error::Closed),
                Some(Err(err)) => return Err(Error::Io(std::io::Error::other(err))),
            }
        }
    }

    /// Starts the close handshake, or, when the server started it, sends
    /// the reply tungstenite queued (its `close` refuses to send once the
    /// peer has closed; a flush sends the queued reply).
    async fn close(&mut self) {
        let _ = within("ws close", self.ws.close(None)).await;
        let _ = within("ws close reply", SinkExt::flush(&mut self.ws)).await;
    }
}

/// A raw QUIC client: frames back to back on one bidirectional stream.
#[derive(Debug)]
pub struct QuicClient {
    connection: bus_quic::compio_quic::Connection,
    send: bus_quic::compio_quic::SendStream,
    recv: bus_quic::compio_quic::RecvStream,
    decoder: bus_core::Decoder,
    pending: bytes::Bytes,
}

impl QuicClient {
    /// Wraps a connection and its (already opened) bus stream.
    pub fn new(
        connection: bus_quic::compio_quic::Connection,
        send: bus_quic::compio_quic::SendStream,
        recv: bus_quic::compio_quic::RecvStream,
    ) -> Self {
        Self {
            connection,
            send,
            recv,
            decoder: bus_core::Decoder::new(CLIENT_LIMITS),
            pending: bytes::Bytes::new(),
        }
    }

    /// Connects with `quic` to `addr` and opens the stream the way
    /// [`bus_quic::ClientQuic::connect`] does: a `Ping`, then its `Pong`.
    ///
    /// # Panics
    /// If the connection, the handshake or the opening round trip fails.
    pub async fn connect(quic: &bus_quic::ClientQuic, addr: SocketAddr) -> Self {
        let (connection, send, recv) = within("quic connect", quic.connect_raw(addr))
            .await
            .expect("quic connect");
        let mut client = Self::new(connection, send, recv);
        client.send(&bus_quic::opening_ping()).await;
        let pong = client.recv_frame().await;
        assert_eq!(pong.header().command(), Command::Pong, "{pong:?}");
        client
    }

    /// The connection, for tests that inspect or open streams on it.
    pub fn connection(&self) -> &bus_quic::compio_quic::Connection {
        &self.connection
    }
}

impl RawClient for QuicClient {
    async fn send_raw(&mut self, bytes: &[u8]) {
        let mut chunks = [bytes::Bytes::copy_from_slice(bytes)];
        within("quic write", self.send.write_all_chunks(&mut chunks))
            .await
            .expect("quic write");
    }

    async fn recv(&mut self) -> Result<Frame, Error> {
        within("a frame from the server", async {
            loop {
                if !self.pending.is_empty() {
                    let mut input = &self.pending[..];
                    let decoded = self.decoder.decode(&mut input);
                    let consumed = self.pending.len() - input.len();
                    bytes::Buf::advance(&mut self.pending, consumed);
                    if let Some(frame) = decoded? {
                        return Ok(frame);
                    }
                    continue;
                }
                match self.recv.read_chunk(1 << 20, true).await {
                    Ok(Some(chunk)) => self.pending = chunk.bytes,
                    Ok(None) if self.decoder.is_between_frames() => return Err(Error::Closed),
                    Ok(None) => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Err(err) => return Err(Error::Io(err.into())),
                }
            }
        })
        .await
    }

    async fn close(&mut self) {
        let _ = self.send.finish();
    }
}
