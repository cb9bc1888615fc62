//! A TCP connection and its two halves.
//!
//! The halves share one socket (`TcpStream::into_split`), so reading and
//! writing proceed at the same time without a lock.

use std::{io, net::SocketAddr};

use bus_core::{
    DecodeLimits, Decoder, Error, Frame, GoodbyeReason,
    transport::{Connection, ConnectionInfo, FrameReader, FrameWriter, TransportKind},
};
use compio::{
    BufResult,
    buf::{IntoInner, IoBuf},
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
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
        limits: DecodeLimits,
        read_buffer_bytes: usize,
    ) -> Result<(TcpReader, TcpWriter, ConnectionInfo), Error> {
        let (read, write) = self.stream.into_split();
        let reader = TcpReader {
            stream: read,
            buf: Vec::with_capacity(read_buffer_bytes),
            pos: 0,
            decoder: Decoder::new(limits),
        };
        Ok((
            reader,
            TcpWriter { stream: write },
            ConnectionInfo::new(TransportKind::Tcp, self.peer),
        ))
    }
}

/// The reading half: a read buffer feeding a [`Decoder`]; bodies larger than
/// the buffer are read straight into the frame.
#[derive(Debug)]
pub struct TcpReader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    decoder: Decoder,
}

impl FrameReader for TcpReader {
    /// # Cancel safety
    /// **Not cancel safe** (`dependencies.md` #1): a plain TCP read dropped
    /// mid-flight loses bytes the kernel already delivered. Keep this future
    /// alive until it completes; the bus runs it on the connection's own
    /// task and drops it only to tear the connection down.
    async fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if self.pos < self.buf.len() {
                let mut input = &self.buf[self.pos..];
                let decoded = self.decoder.decode(&mut input);
                self.pos = self.buf.len() - input.len();
                if let Some(frame) = decoded? {
                    return Ok(frame);
                }
                continue;
            }
            self.buf.clear();
            self.pos = 0;
            if self
                .decoder
                .body_remaining()
                .is_some_and(|n| n >= self.buf.capacity())
            {
                // Large body: read it in place rather than through the buffer.
                let partial = self.decoder.take_partial().expect("body in progress");
                let filled = partial.len();
                let BufResult(res, slice) = self.stream.read_exact(partial.slice(filled..)).await;
                res?;
                return Ok(self.decoder.complete(slice.into_inner())?);
            }
            let BufResult(res, buf) = self.stream.read(std::mem::take(&mut self.buf)).await;
            self.buf = buf;
            match res {
                Ok(0) if self.decoder.is_between_frames() => return Err(Error::Closed),
                Ok(0) => return Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    async fn discard(&mut self) -> io::Result<usize> {
        self.buf.clear();
        self.pos = 0;
        let BufResult(res, buf) = self.stream.read(std::mem::take(&mut self.buf)).await;
        self.buf = buf;
        self.buf.clear();
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
