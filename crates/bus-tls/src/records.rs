//! The bus's TLS data path: rustls' unbuffered API driven on compio's owned
//! buffers, without an adapter in between.
//!
//! - **Inbound**: one socket read lands in the connection's receive buffer
//!   ([`Inbox`]); rustls decrypts each record in place there. rustls 0.23
//!   then hands the record's plaintext out as a slice of a chunk it owns
//!   (its `received_plaintext` copy), and that slice is copied once into the
//!   decoder's read space — for a frame larger than the read buffer, into
//!   the frame's own storage. Only the part of a record that does not fit
//!   is kept aside ([`Plain`]) for the next read.
//! - **Outbound**: a batch of frames is encrypted into one send buffer
//!   ([`Outbox`]) handed to one write, flushed early only when it is full.
//!   Frames smaller than a record are first packed together ([`TLS_RECORD_PLAINTEXT_BYTES`]),
//!   so a batch of small frames costs one record, not one per frame. The
//!   send buffer is bounded and shrinks back after a larger handshake
//!   message needed more.
//! - **Cancel safety**: the socket read is owned by a [`Pump`], one future
//!   per connection kept by the reader; a dropped `read_into` leaves the read
//!   in flight, and the next call collects it. No future is boxed per read.
//! - **Full duplex**: the halves share the rustls state through an
//!   `Rc<RefCell<_>>`, borrowed only within one synchronous step and never
//!   across an await. TLS messages rustls makes while reading (a key update
//!   answer) wait in [`Core::control`] and go out ahead of the next records
//!   the writer encrypts, in sequence order.
//!
//! rustls 0.23's unbuffered connections have no keying-material exporter:
//! sessions that need one (replica links, spec §4) are made with
//! [`ServerTls::accept`](crate::ServerTls::accept) /
//! [`ClientTls::handshake`](crate::ClientTls::handshake) instead (see
//! [`crate::stream`]).

use std::{cell::RefCell, future::Future, io, mem, pin::Pin, rc::Rc, task::Poll};

use bus_core::{
    ByteBuf, Frame,
    limits::{
        TLS_MAX_PENDING_CONTROL_BYTES, TLS_MAX_RECEIVE_BUFFER_BYTES, TLS_MIN_BUFFER_BYTES,
        TLS_RECORD_OVERHEAD_BYTES, TLS_RECORD_PLAINTEXT_BYTES,
    },
};
use compio::{
    BufResult,
    buf::{IntoInner, IoBuf},
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use rustls::{
    CommonState,
    client::{ClientConnectionData, UnbufferedClientConnection},
    server::{ServerConnectionData, UnbufferedServerConnection},
    unbuffered::{
        ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
        UnbufferedStatus,
    },
};

/// An empty input: for steps that only ask rustls what it has to send.
const NO_BYTES: [u8; 0] = [];

/// One side of an unbuffered rustls connection.
pub(crate) trait Side {
    /// rustls' side-specific state.
    type Data: 'static;
    /// Processes the records at the front of `incoming` (see
    /// `process_tls_records`).
    fn records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The state both sides share (ALPN, peer certificates, …).
    fn common(&self) -> &CommonState;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

/// A client or a server connection.
pub(crate) enum Conn {
    /// We dialed.
    Client(Box<UnbufferedClientConnection>),
    /// We accepted.
    Server(Box<UnbufferedServerConnection>),
}

/// Runs `$body` with `$c` bound to whichever side `$conn` is.
macro_rules! on_side {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Client($c) => $body,
            Conn::Server($c) => $body,
        }
    };
}

impl Conn {
    /// The state both sides share.
    pub(crate) fn common(&self) -> &CommonState {
        on_side!(self, c => c.common())
    }
}

/// A rustls error as the I/O error the transport reports (what
/// futures-rustls reports too).
fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Received ciphertext: `rx[start..]` is not processed yet.
pub(crate) struct Inbox {
    rx: Vec<u8>,
    start: usize,
    base: usize,
}

impl Inbox {
    fn new(buffer_bytes: usize) -> Self {
        let base = buffer_bytes.max(TLS_MIN_BUFFER_BYTES);
        Self {
            rx: Vec::with_capacity(base),
            start: 0,
            base,
        }
    }

    fn pending(&mut self) -> &mut [u8] {
        &mut self.rx[self.start..]
    }

    /// Whether rustls holds nothing of the unprocessed bytes, once it has
    /// processed every complete record: they are at most one incomplete
    /// record. Otherwise its handshake deframer keeps a
    /// message spanning records in this buffer, and rustls may be driven
    /// only with this buffer, not with an empty one (the writer's way).
    fn is_clean(&self) -> bool {
        let pending = &self.rx[self.start..];
        match pending.get(3..5) {
            None => true,
            Some(len) => pending.len() < 5 + usize::from(u16::from_be_bytes([len[0], len[1]])),
        }
    }

    /// Drops processed bytes; grows when unprocessed bytes fill the buffer
    /// (one handshake message spanning records), shrinks back once the
    /// buffer is empty again.
    fn prepare_read(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.rx.copy_within(self.start.., 0);
            self.rx.truncate(self.rx.len() - self.start);
            self.start = 0;
        }
        if self.rx.is_empty() && self.rx.capacity() > self.base {
            self.rx = Vec::with_capacity(self.base);
        }
        if self.rx.len() == self.rx.capacity() {
            if self.rx.capacity() >= self.base.max(TLS_MAX_RECEIVE_BUFFER_BYTES) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a TLS message does not fit the receive buffer",
                ));
            }
            self.rx.reserve(self.rx.capacity());
        }
        Ok(())
    }
}

/// Plaintext the decoder had no room for (the tail of one record).
#[derive(Default)]
pub(crate) struct Plain {
    bytes: Vec<u8>,
    at: usize,
}

impl Plain {
    fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.is_empty() {
            self.bytes.clear();
            self.at = 0;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Moves as much as fits into `buf`'s spare room; returns how much.
    fn take_into(&mut self, buf: &mut ByteBuf) -> usize {
        let n = buf.spare().min(self.bytes.len() - self.at);
        buf.extend_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        if self.is_empty() && self.bytes.capacity() > TLS_RECORD_PLAINTEXT_BYTES {
            self.bytes = Vec::new();
            self.at = 0;
        }
        n
    }
}

/// The send buffer: `buf[..filled]` is ciphertext waiting for the socket.
/// `buf` is initialised over its whole length (rustls writes into `&mut
/// [u8]`).
pub(crate) struct Outbox {
    buf: Vec<u8>,
    filled: usize,
    base: usize,
}

impl Outbox {
    fn new(buffer_bytes: usize) -> Self {
        let base = buffer_bytes.max(TLS_MIN_BUFFER_BYTES);
        Self {
            buf: vec![0; base],
            filled: 0,
            base,
        }
    }

    fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    /// Makes room for `more` bytes after what is filled.
    fn reserve(&mut self, more: usize) {
        let need = self.filled + more;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Writes what is filled with one `write_all`; shrinks the buffer back
    /// to its base size if it grew.
    async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let buf = mem::take(&mut self.buf);
        let BufResult(res, slice) = stream.write_all(buf.slice(..self.filled)).await;
        self.buf = slice.into_inner();
        self.filled = 0;
        if self.buf.len() != self.base {
            self.buf.resize(self.base, 0);
            self.buf.shrink_to_fit();
        }
        res
    }
}

/// Encodes a handshake or alert message rustls prepared into `out`.
fn encode<D>(message: &mut EncodeTlsData<'_, D>, out: &mut Outbox) {
    loop {
        match message.encode(out.spare()) {
            Ok(n) => {
                out.filled += n;
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                out.reserve(required_size);
            }
            Err(EncodeError::AlreadyEncoded) => return,
        }
    }
}

/// After a failed handshake: encodes what rustls queued, so the peer
/// learns why (for example `no_application_protocol`).
///
/// rustls hands out what it queued before it looks at the input again.
/// When the input itself was refused (`input_refused`: a record that does
/// not parse or decrypt), the bytes that failed are still there, and
/// looking at them again would queue a second fatal alert, which rustls
/// refuses (a debug assertion that a plain-HTTP client would turn into a
/// panic); such a failure queues exactly its one alert, so one message is
/// taken. Otherwise the failing message was consumed and the queue is
/// drained until rustls asks for the bytes to be sent.
fn drain_alerts<C: Side>(conn: &mut C, inbox: &mut Inbox, out: &mut Outbox, input_refused: bool) {
    loop {
        match conn.records(inbox.pending()).state {
            Ok(ConnectionState::EncodeTlsData(mut message)) => {
                encode(&mut message, out);
                if input_refused {
                    return;
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

/// Whether rustls failed on the bytes themselves (a record that does not
/// parse, is too large or does not decrypt), leaving them unconsumed.
fn refuses_input(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::InvalidMessage(_)
            | rustls::Error::PeerSentOversizedRecord
            | rustls::Error::DecryptError
    )
}

/// What the handshake needs next.
enum Handshake {
    Read,
    Write,
    Done,
    /// The handshake failed; `input_refused` when rustls refused the
    /// bytes themselves (see [`drain_alerts`]).
    Failed {
        err: io::Error,
        input_refused: bool,
    },
}

/// Runs the handshake as far as the bytes at hand allow.
fn handshake_step<C: Side>(
    conn: &mut C,
    inbox: &mut Inbox,
    out: &mut Outbox,
    plain: &mut Plain,
) -> Handshake {
    loop {
        let status = conn.records(inbox.pending());
        let discard = status.discard;
        let next = match status.state {
            Err(err) => Some(Handshake::Failed {
                input_refused: refuses_input(&err),
                err: tls_error(err),
            }),
            Ok(ConnectionState::EncodeTlsData(mut message)) => {
                encode(&mut message, out);
                None
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Some(Handshake::Write)
            }
            Ok(ConnectionState::BlockedHandshake) => Some(Handshake::Read),
            Ok(ConnectionState::WriteTraffic(_)) => Some(Handshake::Done),
            // Application data right behind the handshake: kept for the
            // reader, so that no plaintext stays inside rustls.
            Ok(ConnectionState::ReadTraffic(mut read)) => {
                while let Some(record) = read.next_record() {
                    match record {
                        Ok(record) => plain.keep(record.payload),
                        Err(err) => {
                            return Handshake::Failed {
                                input_refused: refuses_input(&err),
                                err: tls_error(err),
                            };
                        }
                    }
                }
                None
            }
            Ok(_) => Some(Handshake::Failed {
                err: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the TLS session ended during the handshake",
                ),
                input_refused: false,
            }),
        };
        inbox.start += discard;
        if let Some(next) = next {
            return next;
        }
    }
}

/// A session whose handshake finished, before it is split.
pub(crate) struct Session {
    pub(crate) conn: Conn,
    stream: TcpStream,
    inbox: Inbox,
    plain: Plain,
    out: Outbox,
}

/// Runs a TLS handshake on `stream` with unbuffered rustls: reads into the
/// receive buffer that the reader keeps afterwards (bytes behind the
/// handshake are not lost), writes each flight with one write. On failure,
/// sends the alert rustls made and shuts the socket.
///
/// # Cancel safety
/// Dropping it abandons the handshake and drops the socket.
pub(crate) async fn handshake(
    mut conn: Conn,
    mut stream: TcpStream,
    buffer_bytes: usize,
) -> io::Result<Session> {
    let mut inbox = Inbox::new(buffer_bytes);
    let mut out = Outbox::new(buffer_bytes);
    let mut plain = Plain::default();
    loop {
        match on_side!(&mut conn, c => handshake_step(&mut **c, &mut inbox, &mut out, &mut plain)) {
            Handshake::Read => {
                out.flush(&mut stream).await?;
                inbox.prepare_read()?;
                let rx = mem::take(&mut inbox.rx);
                let filled = rx.len();
                let BufResult(res, slice) = stream.read(rx.slice(filled..)).await;
                inbox.rx = slice.into_inner();
                if res? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
            }
            Handshake::Write => out.flush(&mut stream).await?,
            Handshake::Done => {
                out.flush(&mut stream).await?;
                return Ok(Session {
                    conn,
                    stream,
                    inbox,
                    plain,
                    out,
                });
            }
            Handshake::Failed { err, input_refused } => {
                on_side!(&mut conn, c => drain_alerts(&mut **c, &mut inbox, &mut out, input_refused));
                let _ = out.flush(&mut stream).await;
                let _ = stream.shutdown().await;
                return Err(err);
            }
        }
    }
}

/// What both halves share.
struct Core {
    conn: Conn,
    /// TLS messages made while reading (key update answers), for the writer
    /// to send ahead of its next records.
    control: Vec<u8>,
    /// The peer's `close_notify` arrived (whichever half saw it).
    peer_closed: bool,
    /// The writer may drive rustls with an empty input (see
    /// [`Inbox::is_clean`]).
    clean: bool,
    /// A writer waiting for `clean`.
    writer: Option<std::task::Waker>,
}

type Shared = Rc<RefCell<Core>>;

/// Splits an established session into its reading and writing halves.
pub(crate) fn split(session: Session) -> (Source, Writer) {
    let Session {
        conn,
        stream,
        inbox,
        plain,
        out,
    } = session;
    let (read, write) = stream.into_split();
    let shared = Rc::new(RefCell::new(Core {
        conn,
        control: Vec::new(),
        peer_closed: false,
        clean: inbox.is_clean(),
        writer: None,
    }));
    (
        Source {
            shared: shared.clone(),
            inbox,
            plain,
            pump: Pump::new(read),
        },
        Writer {
            shared,
            stream: write,
            out,
            stage: Vec::with_capacity(TLS_RECORD_PLAINTEXT_BYTES),
        },
    )
}

/// Where a socket read stands.
enum Slot {
    Idle,
    Asked(Vec<u8>),
    Reading,
    Done(io::Result<usize>, Vec<u8>),
}

/// The connection's socket reads: one future for the connection's life,
/// which performs each read asked of it. Whoever polls it owns nothing of
/// the read, so dropping a caller mid-read loses nothing.
struct Pump {
    slot: Rc<RefCell<Slot>>,
    task: Pin<Box<dyn Future<Output = ()>>>,
}

impl Pump {
    fn new(mut stream: TcpStream) -> Self {
        let slot = Rc::new(RefCell::new(Slot::Idle));
        let shared = slot.clone();
        let task = Box::pin(async move {
            loop {
                let buf = std::future::poll_fn(|_| {
                    let mut slot = shared.borrow_mut();
                    match mem::replace(&mut *slot, Slot::Reading) {
                        Slot::Asked(buf) => Poll::Ready(buf),
                        other => {
                            *slot = other;
                            Poll::Pending
                        }
                    }
                })
                .await;
                let filled = buf.len();
                let BufResult(res, slice) = stream.read(buf.slice(filled..)).await;
                *shared.borrow_mut() = Slot::Done(res, slice.into_inner());
            }
        });
        Self { slot, task }
    }

    fn is_idle(&self) -> bool {
        matches!(*self.slot.borrow(), Slot::Idle)
    }

    /// Asks for a read appending to `buf`.
    fn ask(&self, buf: Vec<u8>) {
        *self.slot.borrow_mut() = Slot::Asked(buf);
    }

    /// The result of the read asked last (possibly by a dropped caller).
    ///
    /// # Cancel safety
    /// Cancel safe: the read stays in flight inside the pump.
    async fn done(&mut self) -> (io::Result<usize>, Vec<u8>) {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(()) = self.task.as_mut().poll(cx) {
                unreachable!("the pump loops forever");
            }
            let mut slot = self.slot.borrow_mut();
            match mem::replace(&mut *slot, Slot::Idle) {
                Slot::Done(res, buf) => Poll::Ready((res, buf)),
                other => {
                    *slot = other;
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// What one decrypting step gave.
struct Decrypted {
    copied: usize,
    closed: bool,
    /// rustls keeps nothing of the unprocessed bytes (see
    /// [`Inbox::is_clean`]).
    clean: bool,
}

/// Decrypts the records in `inbox` into `buf`'s spare room until it is
/// full or a record is incomplete; the tail of a record that does not fit
/// goes to `plain`. (Appending with `extend_from_slice` never zeroes the
/// spare room first, which matters for a large frame's fresh storage.)
fn decrypt_step<C: Side>(
    conn: &mut C,
    inbox: &mut Inbox,
    control: &mut Vec<u8>,
    buf: &mut ByteBuf,
    plain: &mut Plain,
) -> io::Result<Decrypted> {
    let mut copied = 0;
    loop {
        let status = conn.records(inbox.pending());
        let discard = status.discard;
        let mut stop = false;
        let mut closed = false;
        match status.state {
            Err(err) => {
                inbox.start += discard;
                return Err(tls_error(err));
            }
            Ok(ConnectionState::ReadTraffic(mut read)) => {
                while let Some(record) = read.next_record() {
                    let payload = record.map_err(tls_error)?.payload;
                    let n = payload.len().min(buf.spare());
                    buf.extend_from_slice(&payload[..n]);
                    copied += n;
                    if n < payload.len() {
                        plain.keep(&payload[n..]);
                    }
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut message)) => {
                let mut staged = Outbox {
                    buf: mem::take(control),
                    filled: 0,
                    base: 0,
                };
                staged.filled = staged.buf.len();
                encode(&mut message, &mut staged);
                staged.buf.truncate(staged.filled);
                *control = staged.buf;
                if control.len() > TLS_MAX_PENDING_CONTROL_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer's TLS control messages outpace our writes",
                    ));
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            Ok(ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake) => stop = true,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => closed = true,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected TLS early data",
                ));
            }
        }
        inbox.start += discard;
        if closed || stop || buf.spare() == 0 {
            // Stopped by a full `spare` right after application data:
            // rustls discarded every record it processed (a handshake
            // message spanning records cannot have application data inside
            // it, RFC 8446 §5.1), whatever follows is unprocessed. Stopped
            // for want of bytes: what is left may hold such a message.
            let clean = closed || !stop || inbox.is_clean();
            return Ok(Decrypted {
                copied,
                closed,
                clean,
            });
        }
    }
}

/// The reading half of a record-driven session.
pub(crate) struct Source {
    shared: Shared,
    inbox: Inbox,
    plain: Plain,
    pump: Pump,
}

impl Source {
    /// Decrypted bytes into `buf`'s spare room; 0 only at a clean end
    /// (`close_notify`).
    ///
    /// # Cancel safety
    /// Cancel safe: see the module docs.
    pub(crate) async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        loop {
            if !self.pump.is_idle() {
                // A read is in flight (perhaps asked by a dropped call).
                let (res, rx) = self.pump.done().await;
                self.inbox.rx = rx;
                if res? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    ));
                }
            }
            if !self.plain.is_empty() {
                return Ok(self.plain.take_into(buf));
            }
            let step = {
                let mut core = self.shared.borrow_mut();
                let Core {
                    conn,
                    control,
                    peer_closed,
                    clean,
                    writer,
                } = &mut *core;
                if *peer_closed {
                    return Ok(0);
                }
                let step = on_side!(conn, c => decrypt_step(&mut **c, &mut self.inbox, control, buf, &mut self.plain));
                // After an error the session is dead: let the writer see it.
                *clean = step.as_ref().map_or(true, |step| step.clean);
                if *clean && let Some(waker) = writer.take() {
                    waker.wake();
                }
                let step = step?;
                *peer_closed |= step.closed;
                step
            };
            if step.copied > 0 {
                return Ok(step.copied);
            }
            if step.closed {
                return Ok(0);
            }
            self.inbox.prepare_read()?;
            self.pump.ask(mem::take(&mut self.inbox.rx));
        }
    }
}

/// What one encrypting step did.
enum Sealed {
    /// The plaintext is in the send buffer.
    Done,
    /// The send buffer is full: flush it, then try again.
    Full,
}

/// Encrypts `data` into `out` (control messages first), growing `out`
/// only when it is empty and still too small.
fn seal_step<C: Side>(
    conn: &mut C,
    control: &mut Vec<u8>,
    peer_closed: &mut bool,
    data: &[u8],
    out: &mut Outbox,
) -> io::Result<Sealed> {
    loop {
        let mut none = NO_BYTES;
        let status = conn.records(&mut none);
        match status.state.map_err(tls_error)? {
            ConnectionState::WriteTraffic(mut write) => {
                if !Vec::is_empty(control) {
                    out.push(control);
                    control.clear();
                }
                if data.is_empty() {
                    return Ok(Sealed::Done);
                }
                match write.encrypt(data, out.spare()) {
                    Ok(n) => {
                        out.filled += n;
                        return Ok(Sealed::Done);
                    }
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) => {
                        if out.filled > 0 {
                            return Ok(Sealed::Full);
                        }
                        out.reserve(required_size);
                    }
                    Err(EncryptError::EncryptExhausted) => {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the TLS session's keys are exhausted",
                        ));
                    }
                }
            }
            ConnectionState::EncodeTlsData(mut message) => encode(&mut message, out),
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::PeerClosed => *peer_closed = true,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS session cannot send",
                ));
            }
        }
    }
}

/// Queues `close_notify` into `out`, if the session can still send.
fn close_step<C: Side>(conn: &mut C, control: &mut Vec<u8>, out: &mut Outbox) {
    loop {
        let mut none = NO_BYTES;
        match conn.records(&mut none).state {
            Ok(ConnectionState::WriteTraffic(mut write)) => {
                if !Vec::is_empty(control) {
                    out.push(control);
                    control.clear();
                }
                match write.queue_close_notify(out.spare()) {
                    Ok(n) => {
                        out.filled += n;
                        return;
                    }
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) => out.reserve(required_size),
                    Err(EncryptError::EncryptExhausted) => return,
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut message)) => encode(&mut message, out),
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

/// The writing half of a record-driven session.
pub(crate) struct Writer {
    shared: Shared,
    stream: TcpStream,
    out: Outbox,
    /// Frames smaller than a record, packed to be encrypted together.
    stage: Vec<u8>,
}

impl Writer {
    /// Waits while the reader's buffer holds part of a handshake message
    /// (a post-handshake message split over records, rare): rustls may
    /// not be driven with an empty input then.
    async fn until_clean(&self) {
        std::future::poll_fn(|cx| {
            let mut core = self.shared.borrow_mut();
            if core.clean {
                Poll::Ready(())
            } else {
                core.writer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Encrypts `data` into the send buffer, flushing it when full.
    async fn seal(&mut self, mut data: &[u8]) -> io::Result<()> {
        loop {
            let chunk = data.len().min(TLS_RECORD_PLAINTEXT_BYTES);
            if self.out.filled > 0 && self.out.spare().len() < chunk + TLS_RECORD_OVERHEAD_BYTES {
                self.out.flush(&mut self.stream).await?;
            }
            self.until_clean().await;
            let sealed = {
                let mut core = self.shared.borrow_mut();
                let Core {
                    conn,
                    control,
                    peer_closed,
                    ..
                } = &mut *core;
                on_side!(conn, c => seal_step(&mut **c, control, peer_closed, &data[..chunk], &mut self.out))?
            };
            match sealed {
                Sealed::Full => self.out.flush(&mut self.stream).await?,
                Sealed::Done => {
                    data = &data[chunk..];
                    if data.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Encrypts the packed small frames.
    async fn seal_stage(&mut self) -> io::Result<()> {
        if self.stage.is_empty() {
            return Ok(());
        }
        let stage = mem::take(&mut self.stage);
        let res = self.seal(&stage).await;
        self.stage = stage;
        self.stage.clear();
        res
    }

    /// Encrypts every frame of `frames` and writes them, with as few
    /// records and writes as the send buffer allows.
    ///
    /// # Cancel safety
    /// Not cancel safe (a write in flight is lost with its buffer).
    pub(crate) async fn write_frames(&mut self, frames: &[Frame]) -> io::Result<()> {
        for (i, frame) in frames.iter().enumerate() {
            let bytes = frame.as_bytes();
            if self.stage.len() + bytes.len() > TLS_RECORD_PLAINTEXT_BYTES {
                self.seal_stage().await?;
            }
            // A frame that would fill its records alone (a large one, or
            // one the next frame cannot join) is encrypted straight from
            // the frame, without being packed first.
            let alone = self.stage.is_empty()
                && frames
                    .get(i + 1)
                    .is_none_or(|next| bytes.len() + next.len() > TLS_RECORD_PLAINTEXT_BYTES);
            if alone || bytes.len() > TLS_RECORD_PLAINTEXT_BYTES {
                self.seal(bytes).await?;
            } else {
                self.stage.extend_from_slice(bytes);
            }
        }
        self.seal_stage().await?;
        self.out.flush(&mut self.stream).await
    }

    /// Plaintext of a protocol layered on TLS (WebSocket over TLS): packed
    /// with what is staged while it all fits one record's plaintext, the
    /// rest of a long `data` sealed straight from it in whole records. Goes
    /// out with the next [`Writer::flush_plain`], earlier only when the send
    /// buffer fills.
    ///
    /// # Cancel safety
    /// Not cancel safe (a write in flight is lost with its buffer).
    pub(crate) async fn write_plain(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.stage.len() + data.len() > TLS_RECORD_PLAINTEXT_BYTES {
            if !self.stage.is_empty() {
                // Top the staged record up, so no short record goes out
                // between two pieces.
                let take = TLS_RECORD_PLAINTEXT_BYTES - self.stage.len();
                self.stage.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.seal_stage().await?;
            }
            let whole = data.len() - data.len() % TLS_RECORD_PLAINTEXT_BYTES;
            if whole > 0 {
                self.seal(&data[..whole]).await?;
                data = &data[whole..];
            }
        }
        self.stage.extend_from_slice(data);
        Ok(())
    }

    /// Encrypts what [`Writer::write_plain`] staged and writes the send
    /// buffer.
    ///
    /// # Cancel safety
    /// Not cancel safe (a write in flight is lost with its buffer).
    pub(crate) async fn flush_plain(&mut self) -> io::Result<()> {
        self.seal_stage().await?;
        self.out.flush(&mut self.stream).await
    }

    /// Sends `close_notify`, then shuts the TCP write side.
    pub(crate) async fn close(&mut self) -> io::Result<()> {
        self.until_clean().await;
        {
            let mut core = self.shared.borrow_mut();
            let Core { conn, control, .. } = &mut *core;
            on_side!(conn, c => close_step(&mut **c, control, &mut self.out));
        }
        self.out.flush(&mut self.stream).await?;
        self.stream.shutdown().await
    }
}
