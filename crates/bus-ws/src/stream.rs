//! A WebSocket connection and its two halves.
//!
//! # How the halves share one WebSocket
//!
//! tungstenite keeps one state machine per connection (it answers pings and
//! close frames from inside a read), so the two halves share it through an
//! `Rc<RefCell<_>>` that each borrows only for the length of one `poll`
//! call, never across an await. Below it, compio's compat stream keeps the
//! socket's read and write halves apart (`TcpStream` clones; futures-rustls
//! for WSS), so a pending read never holds up a write and the other way
//! round (`dependencies.md` #2).
//!
//! We drive `async-tungstenite` directly rather than through compio-ws's
//! `WebSocketStream`: the latter flushes every pending write before it hands
//! out a received message, so a peer that stops reading would also stop
//! being read from, and a client that pipelines requests without reading
//! replies would deadlock against its own replies. Here a read flushes only
//! tungstenite's own control replies (pong, close), and a blocked flush does
//! not block the read.
//!
//! # Carriage (spec §7)
//!
//! One binary message is one frame whose `size` equals the message length;
//! anything else is a violation that the bus answers with a `Goodbye` and
//! that [`FrameWriter::close`] turns into the matching close code (see
//! [`crate::close`]). tungstenite refuses a message above the bus's
//! `max_message_size` from its header, before buffering it.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    sync::Arc,
};

use async_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Bytes, ClientRequestBuilder, Message, Utf8Bytes,
        error::{CapacityError, ProtocolError},
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use bus_core::{
    DecodeLimits, Error, Frame, FrameError, GoodbyeReason,
    transport::{
        Connection, ConnectionInfo, FrameReader, FrameWriter, ReadSettings, TransportKind,
    },
};
use compio::{BufResult, io::AsyncRead, net::TcpStream};
use futures_util::{AsyncWrite as _, SinkExt, StreamExt};

use crate::{
    close::{close_code, violation_close_code},
    config::WsLimits,
    io::Io,
    upgrade::{CheckUpgrade, UpgradePolicy},
};

/// Bytes read at a time when draining a connection whose WebSocket state
/// machine has failed (only while closing).
const DRAIN_CHUNK_BYTES: usize = 4 << 10;

/// A WebSocket connection before its upgrade. [`Connection::establish`] runs
/// the TLS handshake (WSS) and the HTTP upgrade (server or client side), all
/// within the one bound the caller puts on it (the bus: `handshake_grace`).
#[derive(Debug)]
pub struct WsConnection {
    stream: TcpStream,
    peer: SocketAddr,
    side: Side,
    limits: WsLimits,
    security: Security,
}

#[derive(Debug)]
enum Side {
    Server(Arc<UpgradePolicy>),
    Client(Box<ClientRequestBuilder>),
}

/// The TLS layer under the WebSocket, if any (WSS).
#[derive(Debug, Clone)]
pub(crate) enum Security {
    Plain,
    #[cfg(feature = "wss")]
    ServerTls(bus_tls::ServerTls),
    #[cfg(feature = "wss")]
    ClientTls(bus_tls::ClientTls),
}

impl Security {
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Self::Plain => TransportKind::Ws,
            #[cfg(feature = "wss")]
            Self::ServerTls(_) | Self::ClientTls(_) => TransportKind::Wss,
        }
    }

    /// Runs the TLS handshake (WSS) and returns the stream to upgrade, with
    /// the peer's verified certificate identity (mutual TLS).
    #[cfg_attr(
        not(feature = "wss"),
        allow(clippy::unused_async, reason = "only the TLS arms await")
    )]
    async fn secure(
        self,
        stream: TcpStream,
        limits: &WsLimits,
    ) -> Result<(Io, Option<String>), Error> {
        match self {
            Self::Plain => {
                let (base, cap) = limits.compat_buffers();
                Ok((Io::plain(stream, base, cap), None))
            }
            #[cfg(feature = "wss")]
            Self::ServerTls(tls) => {
                let session = tls
                    .accept(stream, limits.read_buffer_bytes)
                    .await
                    .map_err(|e| Error::handshake(TransportKind::Wss, e))?;
                let identity = session.peer_identity();
                Ok((Io::Tls(Box::new(session)), identity))
            }
            #[cfg(feature = "wss")]
            Self::ClientTls(tls) => {
                let session = tls
                    .handshake(stream)
                    .await
                    .map_err(|e| Error::handshake(TransportKind::Wss, e))?;
                let identity = session.peer_identity();
                Ok((Io::Tls(Box::new(session)), identity))
            }
        }
    }
}

impl WsConnection {
    pub(crate) fn server(
        stream: TcpStream,
        peer: SocketAddr,
        policy: Arc<UpgradePolicy>,
        limits: WsLimits,
        security: Security,
    ) -> Self {
        Self {
            stream,
            peer,
            side: Side::Server(policy),
            limits,
            security,
        }
    }

    pub(crate) fn client(
        stream: TcpStream,
        peer: SocketAddr,
        request: ClientRequestBuilder,
        limits: WsLimits,
        security: Security,
    ) -> Self {
        Self {
            stream,
            peer,
            side: Side::Client(Box::new(request)),
            limits,
            security,
        }
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl Connection for WsConnection {
    type Reader = WsReader;
    type Writer = WsWriter;

    fn transport(&self) -> TransportKind {
        self.security.kind()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Runs the TLS handshake (WSS), then the HTTP upgrade.
    /// `read_buffer_bytes` (the bus's stream read buffer) is not used:
    /// WebSocket buffers come from [`WsLimits`](crate::WsLimits).
    ///
    /// # Cancel safety
    /// See [`Connection::establish`]: dropping it abandons the handshake and
    /// closes the socket.
    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(WsReader, WsWriter, ConnectionInfo), Error> {
        let limits = reading.limits;
        let kind = self.security.kind();
        let raw = self.stream.clone();
        let config = self.limits.websocket_config(limits.max_message_size_bytes);
        let (io, identity) = self.security.secure(self.stream, &self.limits).await?;
        let ws = match self.side {
            Side::Server(policy) => async_tungstenite::accept_hdr_async_with_config(
                io,
                CheckUpgrade(policy),
                Some(config),
            )
            .await
            .map_err(|e| Error::handshake(kind, e))?,
            Side::Client(request) => {
                async_tungstenite::client_async_with_config(*request, io, Some(config))
                    .await
                    .map_err(|e| Error::handshake(kind, e))?
                    .0
            }
        };
        let shared = Rc::new(Shared {
            ws: RefCell::new(ws),
            violation: Cell::new(None),
        });
        let reader = WsReader {
            shared: shared.clone(),
            raw,
            limits,
            fused: false,
        };
        let mut info = ConnectionInfo::new(kind, self.peer);
        info.identity = identity;
        Ok((reader, WsWriter { shared }, info))
    }
}

/// What both halves hold.
#[derive(Debug)]
struct Shared {
    /// Borrowed for one `poll` call at a time, never across an await.
    ws: RefCell<WebSocketStream<Io>>,
    /// The close code of a violation the reader found; the writer's close
    /// sends it instead of the one derived from the Goodbye reason.
    violation: Cell<Option<CloseCode>>,
}

impl Shared {
    async fn next(&self) -> Option<Result<Message, tungstenite::Error>> {
        poll_fn(|cx| self.ws.borrow_mut().poll_next_unpin(cx)).await
    }

    async fn ready(&self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| self.ws.borrow_mut().poll_ready_unpin(cx)).await
    }

    fn start_send(&self, message: Message) -> Result<(), tungstenite::Error> {
        self.ws.borrow_mut().start_send_unpin(message)
    }

    async fn flush(&self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| self.ws.borrow_mut().poll_flush_unpin(cx)).await
    }

    /// Closes the byte stream's sending side: TCP FIN, or TLS
    /// `close_notify` then FIN.
    async fn shutdown(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(self.ws.borrow_mut().get_mut()).poll_close(cx)).await
    }
}

/// The reading half: one frame per binary message.
#[derive(Debug)]
pub struct WsReader {
    shared: Rc<Shared>,
    /// A handle on the socket, to drain it after the WebSocket state
    /// machine failed (it reads nothing more by then).
    raw: TcpStream,
    limits: DecodeLimits,
    fused: bool,
}

impl WsReader {
    /// Records the close code for `err` and returns it as the bus error.
    fn violation(&self, err: FrameError) -> Error {
        self.shared.violation.set(Some(violation_close_code(err)));
        Error::Frame(err)
    }

    /// Maps a tungstenite read error. After any of these tungstenite reads
    /// nothing more.
    fn failed(&mut self, err: tungstenite::Error) -> Error {
        self.fused = true;
        match err {
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => self
                .violation(FrameError::TooLarge {
                    size: u32::try_from(size).unwrap_or(u32::MAX),
                    max: u32::try_from(max_size).unwrap_or(u32::MAX),
                }),
            // Only text messages (and close reasons) are UTF-8: a text message.
            tungstenite::Error::Utf8(_) => self.violation(FrameError::TextMessage),
            // The peer closed TCP without a close frame, between messages or
            // inside one: nothing partial is delivered either way.
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Error::Closed
            }
            tungstenite::Error::Io(e) => Error::Io(e),
            // Broken WebSocket framing (unmasked or reserved bits, bad
            // opcode, oversize control frame...): RFC 6455 "fail the
            // connection", which the bus does by dropping it.
            other => Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WebSocket protocol error: {other}"),
            )),
        }
    }

    /// Checks that `message` is exactly one frame (every rule of spec §1,
    /// bus-core's framing) and copies it into a frame buffer.
    fn decode(&self, message: &[u8]) -> Result<Frame, Error> {
        self.limits
            .check_message(message)
            .map_err(|err| self.violation(err))
    }
}

impl FrameReader for WsReader {
    /// Reads the next binary message and checks it is one valid frame.
    /// WebSocket pings are answered (tungstenite queues the pong and a later
    /// read or write flushes it); a close frame ends the stream
    /// ([`Error::Closed`]).
    ///
    /// # Cancel safety
    /// Cancel safe: tungstenite keeps a partly received message in its own
    /// buffer, and compio's compat stream keeps an in-flight socket read
    /// across polls, so dropping this future loses nothing.
    async fn read_frame(&mut self) -> Result<Frame, Error> {
        if self.fused {
            return Err(Error::Closed);
        }
        loop {
            let message = match self.shared.next().await {
                None => return Err(Error::Closed),
                Some(Ok(message)) => message,
                Some(Err(err)) => return Err(self.failed(err)),
            };
            match message {
                Message::Binary(bytes) => return self.decode(&bytes),
                Message::Text(_) => return Err(self.violation(FrameError::TextMessage)),
                // Pong already queued; the close reply too, and the next
                // read ends the stream.
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Reads and drops messages until the close handshake ends the stream;
    /// after a WebSocket failure, drops raw bytes until the peer closes TCP.
    async fn discard(&mut self) -> io::Result<usize> {
        if !self.fused {
            match self.shared.next().await {
                None => return Ok(0),
                Some(Ok(message)) => return Ok(message.len().max(1)),
                Some(Err(tungstenite::Error::Io(err))) => return Err(err),
                Some(Err(_)) => self.fused = true,
            }
        }
        let BufResult(res, _) = self.raw.read(Vec::with_capacity(DRAIN_CHUNK_BYTES)).await;
        res
    }
}

/// The writing half: a batch is fed message by message and flushed once.
#[derive(Debug)]
pub struct WsWriter {
    shared: Rc<Shared>,
}

/// A frame as the `Bytes` payload of a message, without copying it.
struct FrameBytes(Frame);

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn to_io(err: tungstenite::Error) -> io::Error {
    match err {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing) => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket already closed")
        }
        other => io::Error::other(other),
    }
}

impl WsWriter {
    async fn send_all(&self, batch: &[Frame]) -> io::Result<()> {
        let shared = &self.shared;
        for frame in batch {
            shared.ready().await.map_err(to_io)?;
            let payload = Bytes::from_owner(FrameBytes(frame.clone()));
            shared.start_send(Message::Binary(payload)).map_err(to_io)?;
        }
        shared.flush().await.map_err(to_io)
    }
}

impl FrameWriter for WsWriter {
    /// Feeds each frame as one binary message (tungstenite writes to the
    /// socket whenever `write_buffer_bytes` have gathered), then flushes
    /// once.
    ///
    /// # Cancel safety
    /// Not cancel safe: see [`FrameWriter::write_batch`].
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        let res = self.send_all(&batch).await;
        BufResult(res, batch)
    }

    /// Sends a close frame (code from [`crate::close`]), flushes it, then
    /// closes the byte stream's sending side. If the peer closed first,
    /// tungstenite has already answered its close frame and only the last
    /// step runs.
    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()> {
        let shared = &self.shared;
        let code = shared.violation.get().unwrap_or_else(|| close_code(reason));
        let text = reason.map_or_else(String::new, |r| r.to_string());
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(text),
        };
        let sent = async {
            shared.ready().await?;
            shared.start_send(Message::Close(Some(frame)))?;
            shared.flush().await
        }
        .await;
        match sent {
            Ok(())
            | Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing),
            ) => {}
            Err(err) => return Err(to_io(err)),
        }
        shared.shutdown().await
    }
}
