//! A TLS session over a compio socket, and the reader/writer halves the bus
//! drives.
//!
//! The session is rustls driven through `futures-rustls` on top of compio's
//! `AsyncStream` adapter. That adapter keeps an in-flight socket read inside
//! itself, so dropping a read future loses nothing (dependencies.md #1):
//! plaintext is copied into the caller's buffer only when a read completes.
//!
//! The two halves share the session through an `Rc<RefCell<_>>`. Neither
//! holds the borrow across an await: each borrows for one `poll` call, so a
//! pending read never blocks a write (dependencies.md #2) and no lock is
//! taken per frame.

use std::{
    cell::RefCell,
    io::{self, IoSlice},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, ready},
};

use bus_core::{
    ByteBuf, Frame, GoodbyeReason, StreamReader,
    transport::{ByteSource, FrameWriter, ReadSettings},
};
use compio::{
    BufResult,
    io::{
        AsyncRead as CompioRead, AsyncWrite as CompioWrite, compat::AsyncStream, util::Splittable,
    },
    net::TcpStream,
};
use futures_util::io::{AsyncRead, AsyncWrite};

use crate::{identity::identity_of, records};

/// Most slices handed to one vectored TLS write.
const MAX_IOV: usize = bus_core::limits::TLS_MAX_IOV;

/// Ceiling of compio's adapter buffers, as a multiple of their base size:
/// they grow only while one TLS record or one flush needs more room.
const ADAPTER_GROWTH: usize = 4;

/// The socket under rustls: compio's adapter to the `futures-io` traits,
/// with a vectored write that takes every slice the adapter's buffer
/// accepts. (The adapter's own takes only the first slice, and rustls
/// writes its queued records with one vectored call: after a failed
/// handshake, that lost the alert behind the first record.)
pub(crate) struct Io<S: Splittable>(Pin<Box<AsyncStream<S>>>);

/// Wraps a socket in the adapter with `buffer_bytes` of read and write
/// buffer.
pub(crate) fn adapt<S: Splittable>(stream: S, buffer_bytes: usize) -> Io<S> {
    let base = buffer_bytes.max(crate::MIN_BUFFER_BYTES);
    Io(Box::pin(AsyncStream::with_limits(
        base,
        base.saturating_mul(ADAPTER_GROWTH),
        stream,
    )))
}

impl<S> AsyncRead for Io<S>
where
    S: Splittable + 'static,
    S::ReadHalf: CompioRead + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for Io<S>
where
    S: Splittable + 'static,
    S::WriteHalf: CompioWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    /// Writes slices in order while the adapter takes them whole; reports
    /// what was taken (a partial slice ends the call).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut taken = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            match self.0.as_mut().poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => {
                    taken += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Poll::Ready(Err(err)) if taken == 0 => return Poll::Ready(Err(err)),
                Poll::Pending if taken == 0 => return Poll::Pending,
                Poll::Ready(Err(_)) | Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_close(cx)
    }
}

/// After a failed handshake: pushes out the alert rustls queued (it sits in
/// the adapter's buffer), so the peer learns why (for example
/// `no_application_protocol`) instead of seeing a bare close. Best effort;
/// the caller's handshake bound still applies. Returns the handshake error.
pub(crate) async fn send_alert<S>(err: io::Error, mut io: Io<S>) -> io::Error
where
    S: Splittable + 'static,
    S::WriteHalf: CompioWrite + Unpin,
{
    let _ = futures_util::AsyncWriteExt::close(&mut io).await;
    err
}

/// An established TLS 1.3 session over `S` (a TCP socket by default).
///
/// It implements the `futures-io` `AsyncRead`/`AsyncWrite` traits, whose
/// reads are cancel safe (see the module docs), so other protocols (such as
/// WebSocket) can run on top of it.
pub struct TlsStream<S: Splittable = TcpStream> {
    inner: futures_rustls::TlsStream<Io<S>>,
}

impl<S: Splittable> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (_, state) = self.inner.get_ref();
        f.debug_struct("TlsStream")
            .field("protocol", &state.protocol_version())
            .field("alpn", &state.alpn_protocol().map(String::from_utf8_lossy))
            .finish_non_exhaustive()
    }
}

impl<S: Splittable> TlsStream<S> {
    pub(crate) fn new(inner: futures_rustls::TlsStream<Io<S>>) -> Self {
        Self { inner }
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }

    /// The negotiated protocol version (always TLS 1.3 with this crate's
    /// configs).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.inner.get_ref().1.protocol_version()
    }

    /// The verified identity of the peer's certificate: the client's under
    /// mutual TLS, the server's on a client. Format: see
    /// [`identity_of`](crate::identity_of).
    pub fn peer_identity(&self) -> Option<String> {
        let certs = self.inner.get_ref().1.peer_certificates()?;
        identity_of(certs.first()?)
    }

    /// The TLS exporter value (RFC 8446 §7.5) for `label` with no
    /// context, `N` bytes long: the same on both ends of one session and
    /// different for every other session. The replica handshake binds its
    /// MACs to it (spec §4), so a relay between two sessions fails.
    pub fn export_keying_material<const N: usize>(&self, label: &[u8]) -> io::Result<[u8; N]> {
        let mut out = [0; N];
        let exported = match &self.inner {
            futures_rustls::TlsStream::Client(s) => {
                s.get_ref().1.export_keying_material(&mut out, label, None)
            }
            futures_rustls::TlsStream::Server(s) => {
                s.get_ref().1.export_keying_material(&mut out, label, None)
            }
        };
        exported.map_err(io::Error::other)?;
        Ok(out)
    }

    /// The underlying socket's halves.
    pub fn get_ref(&self) -> (&S::ReadHalf, &S::WriteHalf) {
        self.inner.get_ref().0.0.get_ref()
    }
}

impl<S> AsyncRead for TlsStream<S>
where
    S: Splittable + 'static,
    S::ReadHalf: CompioRead + Unpin,
    S::WriteHalf: CompioWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for TlsStream<S>
where
    S: Splittable + 'static,
    S::ReadHalf: CompioRead + Unpin,
    S::WriteHalf: CompioWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Sends `close_notify`, flushes, then shuts the socket's write side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

type Shared = Rc<RefCell<TlsStream<TcpStream>>>;

/// Splits a buffered session into the bus's two halves.
pub(crate) fn split(
    stream: TlsStream<TcpStream>,
    reading: &ReadSettings,
) -> (TlsReader, TlsWriter) {
    let shared = Rc::new(RefCell::new(stream));
    let source = TlsSource {
        inner: SourceKind::Stream(StreamSource {
            stream: shared.clone(),
        }),
    };
    (
        StreamReader::new(source, reading.decoder()),
        TlsWriter {
            inner: WriterKind::Stream(StreamWriter { stream: shared }),
        },
    )
}

/// What `establish` returns for a session whose record-driven handshake
/// just finished, on either side: the halves, and the metadata with the
/// peer's verified identity.
pub(crate) fn established(
    session: records::Session,
    peer: std::net::SocketAddr,
    reading: &ReadSettings,
) -> (TlsReader, TlsWriter, bus_core::ConnectionInfo) {
    let mut info = bus_core::ConnectionInfo::new(bus_core::TransportKind::Tls, peer);
    info.identity = session_identity(&session);
    let (source, writer) = records::split(session);
    (
        StreamReader::new(
            TlsSource {
                inner: SourceKind::Records(source),
            },
            reading.decoder(),
        ),
        TlsWriter {
            inner: WriterKind::Records(writer),
        },
        info,
    )
}

/// The verified identity of the peer's certificate in a record-driven
/// session (see [`identity_of`]).
pub(crate) fn session_identity(session: &records::Session) -> Option<String> {
    session
        .conn
        .common()
        .peer_certificates()
        .and_then(|certs| identity_of(certs.first()?))
}

impl TlsSource {
    /// The reading half of a record-driven session.
    pub(crate) fn records(source: records::Source) -> Self {
        Self {
            inner: SourceKind::Records(source),
        }
    }
}

/// Polls `f` with the session borrowed for the duration of one poll only.
fn with_stream<T>(
    stream: &Shared,
    cx: &mut Context<'_>,
    f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>, &mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    // Never fails: the halves live on one thread and no borrow outlives a
    // poll, and no poll below re-enters the other half.
    let mut guard = stream.borrow_mut();
    f(Pin::new(&mut *guard), cx)
}

/// The receiving half: bus-core's stream reader on decrypted bytes.
pub type TlsReader = StreamReader<TlsSource>;

/// How TLS gets more bytes: decrypted bytes from the session, copied into
/// the spare room of the decoder's buffer.
pub struct TlsSource {
    inner: SourceKind,
}

/// Which driver a half runs on.
enum SourceKind {
    /// rustls' unbuffered API on owned buffers (sessions made by the
    /// listener and `TlsOutgoing`).
    Records(records::Source),
    /// A buffered session (`frame_halves`, for sessions that needed the
    /// keying-material exporter).
    Stream(StreamSource),
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let driver = match self.inner {
            SourceKind::Records(_) => "records",
            SourceKind::Stream(_) => "stream",
        };
        f.debug_struct("TlsSource")
            .field("driver", &driver)
            .finish_non_exhaustive()
    }
}

impl ByteSource for TlsSource {
    /// # Cancel safety
    /// Cancel safe on both drivers: the record driver keeps its socket read
    /// in flight inside the connection's pump; the buffered one inside
    /// compio's adapter. Decrypted bytes are written into `buf` only by the
    /// poll that returns them.
    async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        match &mut self.inner {
            SourceKind::Records(source) => source.read_into(buf).await,
            SourceKind::Stream(source) => source.read_into(buf).await,
        }
    }
}

/// The buffered driver's reading half.
struct StreamSource {
    stream: Shared,
}

impl StreamSource {
    async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        let n = std::future::poll_fn(|cx| {
            with_stream(&self.stream, cx, |s, cx| s.poll_read(cx, buf.spare_mut()))
        })
        .await?;
        buf.advance(n);
        Ok(n)
    }
}

/// The sending half: a batch is encrypted into one send buffer (records
/// driver) or with vectored writes (buffered driver), and written once.
pub struct TlsWriter {
    inner: WriterKind,
}

enum WriterKind {
    Records(records::Writer),
    Stream(StreamWriter),
}

impl std::fmt::Debug for TlsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let driver = match self.inner {
            WriterKind::Records(_) => "records",
            WriterKind::Stream(_) => "stream",
        };
        f.debug_struct("TlsWriter")
            .field("driver", &driver)
            .finish_non_exhaustive()
    }
}

/// The buffered driver's writing half.
struct StreamWriter {
    stream: Shared,
}

/// Writes every byte of `frames` starting at frame `*index`, byte `*offset`,
/// advancing both; then flushes. Resumable across polls.
fn poll_write_frames(
    mut stream: Pin<&mut TlsStream<TcpStream>>,
    cx: &mut Context<'_>,
    frames: &[Frame],
    index: &mut usize,
    offset: &mut usize,
) -> Poll<io::Result<()>> {
    while *index < frames.len() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (i, frame) in frames[*index..].iter().take(MAX_IOV).enumerate() {
            let skip = if i == 0 { *offset } else { 0 };
            slices[i] = IoSlice::new(&frame.as_bytes()[skip..]);
            count += 1;
        }
        let mut written = ready!(stream.as_mut().poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        while written > 0 {
            let left = frames[*index].len() - *offset;
            if written < left {
                *offset += written;
                written = 0;
            } else {
                written -= left;
                *index += 1;
                *offset = 0;
            }
        }
    }
    stream.poll_flush(cx)
}

impl FrameWriter for TlsWriter {
    /// Encrypts the batch into as few records as it can, then writes once
    /// (more often only when the send buffer fills).
    ///
    /// # Cancel safety
    /// Not cancel safe: see [`FrameWriter::write_batch`].
    async fn write_batch(&mut self, mut batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        let res = match &mut self.inner {
            WriterKind::Records(writer) => writer.write_frames(&batch).await,
            WriterKind::Stream(writer) => return writer.write_batch(batch).await,
        };
        batch.clear();
        BufResult(res, batch)
    }

    /// Sends `close_notify`, flushes and shuts the TCP write side.
    async fn close(&mut self, _reason: Option<GoodbyeReason>) -> io::Result<()> {
        match &mut self.inner {
            WriterKind::Records(writer) => writer.close().await,
            WriterKind::Stream(writer) => writer.close().await,
        }
    }
}

impl StreamWriter {
    async fn write_batch(&mut self, mut batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        let (mut index, mut offset) = (0, 0);
        let res = std::future::poll_fn(|cx| {
            with_stream(&self.stream, cx, |s, cx| {
                poll_write_frames(s, cx, &batch, &mut index, &mut offset)
            })
        })
        .await;
        batch.clear();
        BufResult(res, batch)
    }

    async fn close(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| with_stream(&self.stream, cx, AsyncWrite::poll_close)).await
    }
}
