//! The byte layer under a WebSocket, on compio's owned buffers: no
//! `futures-io`, no compat adapter.
//!
//! - [`Source`]: bytes from the peer, appended to a caller's [`ByteBuf`].
//!   Plain TCP is one `io_uring` read into that buffer's spare room, run by
//!   a per-connection [`Pump`] so that a dropped read loses nothing; WSS is
//!   `bus-tls`'s unbuffered driver, which decrypts into it (and keeps its
//!   own socket read in flight the same way).
//! - [`Sink`]: bytes to the peer. Plain TCP packs small pieces into one
//!   pooled buffer of `write_buffer_bytes` (never grown), handed to one
//!   write per flush; a frame too large for it goes out from its own storage
//!   in the same vectored write as the buffer in front of it, so it is not
//!   copied. WSS seals plaintext straight into `bus-tls`'s records.
//!
//! The read and write halves of the socket are separate handles
//! (`TcpStream::into_split`), so a pending read never holds up a write
//! (`dependencies.md` #2).

use std::{
    cell::Cell,
    future::{Future, poll_fn},
    io,
    pin::Pin,
    rc::Rc,
    task::Poll,
};

#[cfg(feature = "wss")]
use bus_core::transport::ByteSource as _;
use bus_core::{ByteBuf, Frame};
use compio::{
    BufResult,
    buf::{IntoInner, IoBuf},
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// Where received bytes come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// Plain TCP: the socket's read half, read by a pump.
    Plain(Pump),
    /// TLS 1.3 (WSS): decrypted bytes.
    #[cfg(feature = "wss")]
    Tls(bus_tls::TlsSource),
}

impl Source {
    /// Plain TCP on `stream` (the socket's read half).
    pub(crate) fn plain(stream: TcpStream) -> Self {
        Self::Plain(Pump::new(stream))
    }

    /// Appends received bytes to `buf`'s spare room; 0 at the end of the
    /// stream. For the upgrade, which is not cancel safe anyway: the
    /// reader's cancel-safe reads go through [`Pump`] directly.
    pub(crate) async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        match self {
            Self::Plain(pump) => {
                pump.ask(buf);
                let (res, owned) = pump.done().await;
                pump.give_back(std::mem::replace(buf, owned));
                res
            }
            #[cfg(feature = "wss")]
            Self::Tls(source) => source.read_into(buf).await,
        }
    }
}

/// Where a plain socket read stands.
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Idle,
    Asked(ByteBuf),
    Reading,
    Done(io::Result<usize>, ByteBuf),
}

/// The plain socket's reads: one future for the connection's life (boxed
/// once), which performs each read asked of it into the buffer it is
/// handed. Whoever awaits [`Pump::done`] owns nothing of the read, so a
/// caller dropped mid-read loses nothing: the read stays in flight, and the
/// next `done` collects it with its buffer.
pub(crate) struct Pump {
    slot: Rc<Cell<Slot>>,
    task: Pin<Box<dyn Future<Output = ()>>>,
    /// Stands in for a buffer while the pump owns it.
    spare: Option<ByteBuf>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("reading", &self.is_reading())
            .finish_non_exhaustive()
    }
}

impl Pump {
    fn new(stream: TcpStream) -> Self {
        let slot = Rc::new(Cell::new(Slot::Idle));
        let shared = slot.clone();
        let task = Box::pin(async move {
            loop {
                let buf = poll_fn(|_| match shared.take() {
                    Slot::Asked(buf) => {
                        shared.set(Slot::Reading);
                        Poll::Ready(buf)
                    }
                    other => {
                        shared.set(other);
                        Poll::Pending
                    }
                })
                .await;
                let filled = buf.len();
                let BufResult(res, slice) = (&stream).read(buf.slice(filled..)).await;
                shared.set(Slot::Done(res, slice.into_inner()));
            }
        });
        Self {
            slot,
            task,
            spare: Some(ByteBuf::with_capacity(0)),
        }
    }

    /// Whether a read was asked and not collected yet (perhaps by a dropped
    /// caller).
    pub(crate) fn is_reading(&self) -> bool {
        let slot = self.slot.take();
        let idle = matches!(slot, Slot::Idle);
        self.slot.set(slot);
        !idle
    }

    /// Asks for a read appending to `buf`, which the pump takes; `buf` holds
    /// an empty stand-in until [`Pump::give_back`].
    pub(crate) fn ask(&mut self, buf: &mut ByteBuf) {
        let stand_in = self
            .spare
            .take()
            .unwrap_or_else(|| ByteBuf::with_capacity(0));
        let owned = std::mem::replace(buf, stand_in);
        self.slot.set(Slot::Asked(owned));
    }

    /// The stand-in, once the read's buffer is back where it belongs.
    pub(crate) fn give_back(&mut self, stand_in: ByteBuf) {
        self.spare = Some(stand_in);
    }

    /// The result of the read asked last, with its buffer.
    ///
    /// # Cancel safety
    /// Cancel safe: the read stays in flight inside the pump.
    pub(crate) async fn done(&mut self) -> (io::Result<usize>, ByteBuf) {
        poll_fn(|cx| {
            if let Poll::Ready(()) = self.task.as_mut().poll(cx) {
                unreachable!("the pump loops forever");
            }
            match self.slot.take() {
                Slot::Done(res, buf) => Poll::Ready((res, buf)),
                other => {
                    self.slot.set(other);
                    Poll::Pending
                }
            }
        })
        .await
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
        let BufResult(res, (mut buf, _frame)) = self
            .stream
            .write_vectored_all((buf, (frame.clone(),)))
            .await;
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
