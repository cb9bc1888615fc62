//! The transport trait family: listener → connection → reader + writer.
//!
//! A transport crate (TCP, TLS, WebSocket, QUIC) implements these four traits;
//! the [`Bus`](crate::Bus) drives them and owns every policy (limits,
//! timeouts, batching, close sequencing). Everything is monomorphic through
//! associated types: no boxing, no dynamic dispatch per frame.
//!
//! The futures are `!Send` on purpose: a connection lives on one shard's
//! compio runtime for its whole life (see `docs/ARCHITECTURE.md`).

#![allow(
    async_fn_in_trait,
    reason = "thread-per-core: these futures never cross threads, so no Send bound is wanted"
)]

use std::{io, net::SocketAddr, time::SystemTime};

use compio::BufResult;

use crate::{
    budget::InboundBudget,
    buf::{ByteBuf, Frame},
    error::Error,
    framing::DecodeLimits,
    goodbye::GoodbyeReason,
};

/// The stack a connection runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Frames back to back on TCP.
    Tcp,
    /// Frames on TLS 1.3 over TCP.
    Tls,
    /// One frame per binary WebSocket message.
    Ws,
    /// WebSocket over TLS 1.3.
    Wss,
    /// One bidirectional QUIC stream.
    Quic,
}

impl TransportKind {
    /// Lower-case name, as used in URLs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about a connection once its handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The transport.
    pub transport: TransportKind,
    /// The peer's address.
    pub peer_addr: SocketAddr,
    /// When the connection became usable.
    pub connected_since: SystemTime,
    /// The peer's verified identity (mutual TLS subject / SAN), if any.
    pub identity: Option<String>,
}

impl ConnectionInfo {
    /// Info for a connection that became usable now.
    pub fn new(transport: TransportKind, peer_addr: SocketAddr) -> Self {
        Self {
            transport,
            peer_addr,
            connected_since: SystemTime::now(),
            identity: None,
        }
    }
}

/// Accepts connections.
pub trait Listener: 'static {
    /// The connections this listener yields.
    type Connection: Connection;

    /// Waits for the next connection. No handshake happens here: the bus
    /// runs [`Connection::establish`] on the connection's own task, so one
    /// slow peer never delays the next accept.
    ///
    /// # Cancel safety
    /// Cancel safe in the sense that matters: dropping the future loses no
    /// established connection. A connection the kernel completed at the
    /// moment of cancellation is closed, and its peer sees a reset.
    async fn accept(&mut self) -> io::Result<Self::Connection>;

    /// The bound address (with the real port when bound to port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A connection before its transport handshake.
pub trait Connection: 'static {
    /// Reads frames.
    type Reader: FrameReader;
    /// Writes frames.
    type Writer: FrameWriter;

    /// The transport.
    fn transport(&self) -> TransportKind;

    /// The peer's address.
    fn peer_addr(&self) -> SocketAddr;

    /// Completes the transport's handshake (TLS, WebSocket upgrade, QUIC
    /// stream) and splits the connection into two halves that work at the
    /// same time: a read never blocks a write.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the handshake and closes the connection;
    /// the bus does this when `handshake_grace` runs out.
    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(Self::Reader, Self::Writer, ConnectionInfo), Error>;
}

/// How an established connection reads: the receiver's rules, the read
/// buffer's size, and the inbound budget that frames larger than that
/// buffer are reserved from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadSettings {
    /// The receiver's rules (spec §1).
    pub limits: DecodeLimits,
    /// Size of the connection's read buffer.
    pub read_buffer_bytes: usize,
    /// The node's inbound budget, if any.
    pub budget: Option<InboundBudget>,
}

impl ReadSettings {
    /// Settings with `limits`, the default read buffer and no budget (for
    /// clients and tests).
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            limits,
            read_buffer_bytes: crate::limits::DEFAULT_READ_BUFFER_BYTES,
            budget: None,
        }
    }

    /// With a read buffer of `bytes`.
    #[must_use]
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer_bytes = bytes;
        self
    }

    /// With an inbound budget.
    #[must_use]
    pub fn budget(mut self, budget: InboundBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The stream decoder these settings describe.
    pub fn decoder(&self) -> crate::framing::Decoder {
        crate::framing::Decoder::with_buffer(
            self.limits,
            self.read_buffer_bytes,
            self.budget.clone(),
        )
    }
}

/// How a byte-stream transport gets more bytes: the one thing it supplies
/// to [`StreamReader`](crate::framing::StreamReader), which does all the
/// framing.
pub trait ByteSource: 'static {
    /// Reads bytes into the spare room of `buf` (after `buf.len()`),
    /// advancing its length; returns how many, 0 at the end of the stream.
    ///
    /// # Cancel safety
    /// Implementation specific; each says. A source whose reads are not
    /// cancel safe (an `io_uring` read owns its buffer) may leave `buf`
    /// swapped for an empty buffer of capacity 0 when its future is dropped
    /// mid-read; the reader then reports the loss instead of decoding
    /// garbage.
    async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize>;
}

/// The receiving half of a connection.
pub trait FrameReader: 'static {
    /// Reads the next complete frame that passed every receiver rule of
    /// spec §1. Returns [`Error::Closed`] on a clean end of stream between
    /// frames, [`Error::Frame`] for a rule violation (after which only
    /// [`FrameReader::discard`] may be called).
    ///
    /// # Cancel safety
    /// Transport specific: each implementation says. The bus never drops
    /// this future mid-frame while the connection lives; it drops it only
    /// when tearing the connection down.
    async fn read_frame(&mut self) -> Result<Frame, Error>;

    /// Reads and throws away whatever arrives; returns `Ok(0)` at end of
    /// stream. Used while closing, so that our close reaches the peer as an
    /// orderly shutdown rather than a reset caused by unread data.
    ///
    /// # Cancel safety
    /// Cancel safe: the bytes are discarded anyway.
    async fn discard(&mut self) -> io::Result<usize>;
}

/// The sending half of a connection.
pub trait FrameWriter: 'static {
    /// Writes every frame of `batch`, in order, and flushes, returning the
    /// vector (cleared) for reuse. Stream transports do this with one
    /// vectored write per call where the stack allows it.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future mid-write leaves a partial frame
    /// on the wire, after which the connection is unusable. The bus drops it
    /// only when abandoning the connection.
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>>;

    /// Closes the sending direction in the transport's orderly way (TCP FIN,
    /// TLS `close_notify`, WebSocket close frame, QUIC stream finish).
    /// `reason` is the Goodbye already sent, if any, for transports whose
    /// close carries a code.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it leaves the connection to be closed by drop.
    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()>;
}
