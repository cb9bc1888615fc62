//! The byte layer under a WebSocket, on compio's owned buffers: no
//! `futures-io`, no compat adapter.
//!
//! - [`Source`]: bytes from the peer, appended to a caller's [`ByteBuf`].
//!   Plain TCP is one `io_uring` read into that buffer's spare room
//!   (`bus-tcp`'s [`TcpSource`] on the socket's read half); WSS is
//!   `bus-tls`'s unbuffered driver, which decrypts into it.
//! - [`Sink`]: bytes to the peer. Plain TCP packs small pieces into one
//!   pooled buffer of `write_buffer_bytes` (never grown), handed to one
//!   write per flush; a frame too large for it goes out from its own storage
//!   in the same vectored write as the buffer in front of it, so it is not
//!   copied. WSS seals plaintext straight into `bus-tls`'s records.
//!
//! The read and write halves of the socket are separate handles
//! (`TcpStream::into_split`), so a pending read never holds up a write
//! (`dependencies.md` #2).

use std::io;

use bus_core::{ByteBuf, Frame, transport::ByteSource};
use bus_tcp::TcpSource;
use compio::{
    BufResult,
    io::{AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// Where received bytes come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// Plain TCP: the socket's read half.
    Plain(TcpSource),
    /// TLS 1.3 (WSS): decrypted bytes.
    #[cfg(feature = "wss")]
    Tls(bus_tls::TlsSource),
}

impl Source {
    /// Appends received bytes to `buf`'s spare room; 0 at the end of the
    /// stream.
    ///
    /// # Cancel safety
    /// Plain TCP: not cancel safe (`dependencies.md` #1; see
    /// [`TcpSource`]): a dropped read loses its bytes and leaves `buf`
    /// empty, and the next read fails. WSS: cancel safe.
    pub(crate) async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        match self {
            Self::Plain(source) => source.read_into(buf).await,
            #[cfg(feature = "wss")]
            Self::Tls(source) => source.read_into(buf).await,
        }
    }
}

/// Where bytes for the peer go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// Plain TCP: the socket's write half and its write buffer.
    Plain(PlainSink),
    /// TLS 1.3 (WSS): plaintext sealed into records.
    #[cfg(feature = "wss")]
    Tls(Box<bus_tls::TlsSink>),
}

/// Plain TCP's sending side.
#[derive(Debug)]
pub(crate) struct PlainSink {
    stream: TcpStream,
    /// Bytes waiting for the socket. `None` while a write owns it, and for
    /// good after a write future was dropped with it (the sink then fails).
    buf: Option<ByteBuf>,
}

/// A write owns the buffer, or a dropped one lost it.
fn lost_buffer() -> io::Error {
    io::Error::other("a cancelled WebSocket write lost its buffer")
}

impl PlainSink {
    fn buf(&mut self) -> io::Result<&mut ByteBuf> {
        self.buf.as_mut().ok_or_else(lost_buffer)
    }

    async fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        loop {
            let buf = self.buf()?;
            let n = buf.spare().min(data.len());
            buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if data.is_empty() {
                return Ok(());
            }
            self.flush().await?;
        }
    }

    async fn write_frame(&mut self, head: &[u8], frame: &Frame) -> io::Result<()> {
        let buf = self.buf()?;
        let bytes = frame.as_bytes();
        if head.len() + bytes.len() <= buf.spare() {
            buf.extend_from_slice(head);
            buf.extend_from_slice(bytes);
            return Ok(());
        }
        if head.len() + bytes.len() <= buf.capacity() / 2 {
            // Small: worth packing with the next ones.
            self.flush().await?;
            let buf = self.buf()?;
            buf.extend_from_slice(head);
            buf.extend_from_slice(bytes);
            return Ok(());
        }
        if buf.spare() < head.len() {
            self.flush().await?;
        }
        let mut buf = self.buf.take().ok_or_else(lost_buffer)?;
        buf.extend_from_slice(head);
        // The buffer, then the frame from its own storage: one `writev`,
        // no copy of the frame (the clone is a reference count).
        let BufResult(res, (mut buf, _frame)) =
            self.stream.write_vectored_all((buf, (frame.clone(),))).await;
        buf.clear();
        self.buf = Some(buf);
        res
    }

    async fn flush(&mut self) -> io::Result<()> {
        let buf = self.buf.take().ok_or_else(lost_buffer)?;
        if buf.is_empty() {
            self.buf = Some(buf);
            return Ok(());
        }
        let BufResult(res, mut buf) = self.stream.write_all(buf).await;
        buf.clear();
        self.buf = Some(buf);
        res
    }
}

impl Sink {
    /// Plain TCP on `stream` (the socket's write half), packing through a
    /// buffer of `capacity` bytes.
    pub(crate) fn plain(stream: TcpStream, capacity: usize) -> Self {
        Self::Plain(PlainSink {
            stream,
            buf: Some(ByteBuf::with_capacity(capacity)),
        })
    }

    /// Queues `data`; it goes out with the next [`Sink::flush`], earlier
    /// when the buffer fills.
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(sink) => sink.write(data).await,
            #[cfg(feature = "wss")]
            Self::Tls(sink) => sink.write(data).await,
        }
    }

    /// Queues a WebSocket header and the frame it carries unmasked (the
    /// server side). Plain TCP: a frame that does not fit the buffer and is
    /// larger than half of it is written at once from its own storage,
    /// behind what is buffered.
    pub(crate) async fn write_frame(&mut self, head: &[u8], frame: &Frame) -> io::Result<()> {
        match self {
            Self::Plain(sink) => sink.write_frame(head, frame).await,
            #[cfg(feature = "wss")]
            Self::Tls(sink) => {
                sink.write(head).await?;
                sink.write(frame.as_bytes()).await
            }
        }
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(sink) => sink.flush().await,
            #[cfg(feature = "wss")]
            Self::Tls(sink) => sink.flush().await,
        }
    }

    /// Writes everything queued, then closes the sending side: TCP FIN, or
    /// TLS `close_notify` then FIN.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(sink) => {
                sink.flush().await?;
                sink.stream.shutdown().await
            }
            #[cfg(feature = "wss")]
            Self::Tls(sink) => sink.close().await,
        }
    }
}
