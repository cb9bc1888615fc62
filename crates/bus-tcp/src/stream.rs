//! A TCP connection and its two halves.
//!
//! The halves share one socket (`TcpStream::into_split`), so reading and
//! writing proceed at the same time without a lock.

use std::{io, net::SocketAddr};

use bus_core::{
    ByteBuf, Error, Frame, GoodbyeReason, StreamReader,
    transport::{ByteSource, Connection, ConnectionInfo, FrameWriter, ReadSettings, TransportKind},
};
use compio::{
    BufResult,
    buf::{IntoInner, IoBuf},
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// A TCP connection, before it is split. TCP has no handshake of its own, so
/// [`Connection::establish`] only splits it.
#[derive(Debug)]
pub struct TcpConnection {
    stream: TcpStream,
    peer: SocketAddr,
}

impl TcpConnection {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self { stream, peer }
    }

    /// Wraps a connected standard-library socket, for example one handed
    /// over from another shard as a file descriptor. Must run inside a
    /// compio runtime.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<Self> {
        let peer = stream.peer_addr()?;
        let stream = TcpStream::from_std(stream)?;
        Ok(Self { stream, peer })
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The underlying socket, for a transport layered on TCP (TLS,
    /// WebSocket) to run its handshake on.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

impl Connection for TcpConnection {
    type Reader = TcpReader;
    type Writer = TcpWriter;

    fn transport(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(TcpReader, TcpWriter, ConnectionInfo), Error> {
        let (read, write) = self.stream.into_split();
        Ok((
            TcpReader::new(TcpSource::new(read), reading.decoder()),
            TcpWriter { stream: write },
            ConnectionInfo::new(TransportKind::Tcp, self.peer),
        ))
    }
}

/// The reading half: bus-core's stream reader on a TCP socket.
pub type TcpReader = StreamReader<TcpSource>;

/// How TCP gets more bytes: one `io_uring` read into the spare room of the
/// decoder's buffer.
#[derive(Debug)]
pub struct TcpSource {
    stream: TcpStream,
    /// Stands in for the decoder's buffer while a read owns it (an `io_uring`
    /// read takes its buffer by value).
    spare: Option<ByteBuf>,
}

impl TcpSource {
    /// A source reading from `stream` (a TCP socket or its read half).
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            spare: Some(ByteBuf::with_capacity(0)),
        }
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl ByteSource for TcpSource {
    /// # Cancel safety
    /// **Not cancel safe** (`dependencies.md` #1): a plain TCP read dropped
    /// mid-flight loses bytes the kernel already delivered, and the buffer
    /// it owns. Keep the future alive until it completes; the bus runs it
    /// on the connection's own task and drops it only to tear the
    /// connection down. A dropped read leaves an empty buffer behind, which
    /// the stream reader reports as an error rather than decoding garbage.
    async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        let stand_in = self
            .spare
            .take()
            .ok_or_else(|| io::Error::other("a cancelled TCP read lost its buffer"))?;
        let owned = std::mem::replace(buf, stand_in);
        let filled = owned.len();
        let BufResult(res, slice) = self.stream.read(owned.slice(filled..)).await;
        self.spare = Some(std::mem::replace(buf, slice.into_inner()));
        res
    }
}

/// The writing half: one vectored write per batch.
#[derive(Debug)]
pub struct TcpWriter {
    stream: TcpStream,
}

impl FrameWriter for TcpWriter {
    /// Writes the batch with `writev` (looping on short writes).
    ///
    /// # Cancel safety
    /// Not cancel safe: see [`FrameWriter::write_batch`].
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        self.stream.write_vectored_all(batch).await
    }

    /// Sends FIN (`shutdown(SHUT_WR)`).
    async fn close(&mut self, _reason: Option<GoodbyeReason>) -> io::Result<()> {
        self.stream.shutdown().await
    }
}
