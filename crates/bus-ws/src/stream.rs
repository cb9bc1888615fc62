//! A WebSocket connection and its two halves, on our own RFC 6455 framing
//! (`codec.rs`) over the byte stream of `io.rs`.
//!
//! # Receiving: one copy, bounded, refused early
//!
//! The reader reads a frame header (2 to 14 bytes), then reads the payload
//! straight into bus-core's [`Decoder`] (its read buffer, or the frame's
//! own storage for a frame larger than that buffer) and unmasks it there in
//! place. The decoder applies every rule of spec §1, reserves a large
//! frame from the node's inbound budget before it allocates it (waiting,
//! and so not reading, while the budget is exhausted), and hands out the
//! frame. Around it the reader enforces the carriage (spec §7): a message
//! is refused as soon as its announced or received length exceeds the
//! `size` of the frame it carries or the limit, so nothing is buffered for
//! a message that cannot be valid.
//!
//! # Control frames: one at a time
//!
//! Pongs and close frames go through one slot of at most 139 bytes shared
//! by both halves. The reader that meets a ping waits until the slot is
//! free (the previous pong written), so a peer that floods pings and never
//! reads stops being read: nothing queues up. Whoever writes next writes the
//! slot: the writer between two messages, or the reader itself while the
//! writer is idle. The halves share the stream through a `RefCell` that each
//! borrows for one `poll` call, never across an await; compio's compat
//! stream (and `bus-tls` for WSS) keeps the socket's read and write sides
//! apart, so a pending read never holds up a write (`dependencies.md` #2).
//!
//! # Sending
//!
//! Each frame goes out as a WebSocket header from a stack array and the
//! frame's bytes, in slices of at most `write_buffer_bytes`, so no sent frame
//! allocates and the stream's write buffer never grows past that. A client
//! masks (RFC 6455 §5.3) with a fresh key per frame, through one scratch
//! buffer of `write_buffer_bytes` allocated with the connection.
//!
//! # Carriage (spec §7)
//!
//! One binary message is one frame whose `size` equals the message length;
//! anything else is a violation that the bus answers with a `Goodbye` and
//! that [`FrameWriter::close`] turns into the matching close code (see
//! [`crate::close`]). Broken WebSocket framing (a reserved bit, a reserved
//! opcode, wrong masking, a long or fragmented control frame, a
//! continuation out of sequence, a bad close code) fails the connection
//! (RFC 6455 §7.1.7): no Goodbye and no close frame, the socket is dropped.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker, ready},
};

use bus_core::{
    Decoder, Error, Frame, FrameError, GoodbyeReason, Progress,
    limits::{HEADER_SIZE, WS_MAX_CONTROL_PAYLOAD_BYTES},
    transport::{
        Connection, ConnectionInfo, FrameReader, FrameWriter, ReadSettings, TransportKind,
    },
};
use compio::{BufResult, net::TcpStream};
use futures_util::io::{AsyncRead, AsyncWrite};

use crate::{
    close::{close_code, violation_close_code},
    codec::{
        self, Broken, CloseBody, FrameHead, MAX_HEADER_BYTES, MaskKeys, OP_BINARY, OP_CLOSE,
        OP_PING, OP_PONG, OP_TEXT,
    },
    config::WsLimits,
    handshake,
    io::Io,
    upgrade::{ClientRequest, UpgradePolicy},
};

/// Offset of the `size` field in a frame header (spec §1).
const SIZE_OFFSET: u64 = 48;

/// Close code for a close reason that is not UTF-8 (RFC 6455 §7.4.1).
const CLOSE_INVALID_DATA: u16 = 1007;

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
    Client(Box<ClientRequest>),
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
        request: ClientRequest,
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
    /// WebSocket buffers come from [`WsLimits`](crate::WsLimits). The
    /// inbound budget of `reading` bounds messages larger than the read
    /// buffer, as on TCP.
    ///
    /// # Cancel safety
    /// See [`Connection::establish`]: dropping it abandons the handshake and
    /// closes the socket.
    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(WsReader, WsWriter, ConnectionInfo), Error> {
        let kind = self.security.kind();
        let limits = self.limits;
        let (mut io, identity) = self.security.secure(self.stream, &limits).await?;
        let (leftover, client) = match &self.side {
            Side::Server(policy) => (handshake::accept(&mut io, policy).await, false),
            Side::Client(request) => (handshake::connect(&mut io, request).await, true),
        };
        let leftover = leftover.map_err(|e| Error::handshake(kind, e))?;
        let shared = Rc::new(Shared {
            io: RefCell::new(io),
            control: RefCell::new(ControlSlot::default()),
            writer_active: Cell::new(false),
            reader_waiting: RefCell::new(None),
            violation: Cell::new(None),
            peer_close: Cell::new(None),
            close_sent: Cell::new(false),
            keys: Cell::new(client.then(MaskKeys::new)),
        });
        let max_message = reading.limits.max_message_size_bytes;
        let reader = WsReader {
            shared: shared.clone(),
            decoder: Decoder::with_buffer(
                reading.limits,
                limits.read_buffer_bytes,
                reading.budget.clone(),
            ),
            wire: Wire::new(leftover, limits.read_buffer_bytes),
            masked: !client,
            max_message,
            max_frame: limits.max_frame(max_message),
            head: [0; MAX_HEADER_BYTES],
            head_len: 0,
            current: None,
            message: None,
            control: [0; WS_MAX_CONTROL_PAYLOAD_BYTES],
            decode_pending: false,
            state: ReadState::Open,
        };
        let chunk = limits.write_buffer_bytes.max(1);
        let writer = WsWriter {
            shared,
            chunk,
            scratch: if client {
                Vec::with_capacity(chunk)
            } else {
                Vec::new()
            },
        };
        let mut info = ConnectionInfo::new(kind, self.peer);
        info.identity = identity;
        Ok((reader, writer, info))
    }
}

/// The one pending control frame (pong or close), encoded.
#[derive(Debug)]
struct ControlSlot {
    bytes: [u8; MAX_HEADER_BYTES + WS_MAX_CONTROL_PAYLOAD_BYTES],
    len: usize,
    written: usize,
}

impl Default for ControlSlot {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_HEADER_BYTES + WS_MAX_CONTROL_PAYLOAD_BYTES],
            len: 0,
            written: 0,
        }
    }
}

/// What both halves hold.
#[derive(Debug)]
struct Shared {
    /// Borrowed for one `poll` call at a time, never across an await.
    io: RefCell<Io>,
    control: RefCell<ControlSlot>,
    /// The writer is inside a batch or a close: only it writes now.
    writer_active: Cell<bool>,
    /// The reader waiting for the control slot to empty.
    reader_waiting: RefCell<Option<Waker>>,
    /// The close code of a violation the reader found; the writer's close
    /// sends it instead of the one derived from the Goodbye reason.
    violation: Cell<Option<u16>>,
    /// The close frame the peer sent, if it did.
    peer_close: Cell<Option<CloseBody>>,
    /// Our close frame is out.
    close_sent: Cell<bool>,
    /// The mask keys, on the client side.
    keys: Cell<Option<MaskKeys>>,
}

/// Clears [`Shared::writer_active`] when the writer is done (or dropped).
struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.writer_active.set(false);
        self.0.wake_reader();
    }
}

impl Shared {
    fn activate(&self) -> Active<'_> {
        self.writer_active.set(true);
        Active(self)
    }

    fn wake_reader(&self) {
        if let Some(waker) = self.reader_waiting.borrow_mut().take() {
            waker.wake();
        }
    }

    fn control_pending(&self) -> bool {
        self.control.borrow().len > 0
    }

    /// A fresh mask key on the client side, `None` on the server side.
    fn next_key(&self) -> Option<[u8; 4]> {
        let mut keys = self.keys.get()?;
        let key = keys.next_key();
        self.keys.set(Some(keys));
        Some(key)
    }

    /// Encodes a control frame into the (empty) slot.
    fn queue_control(&self, opcode: u8, payload: &[u8]) {
        let key = self.next_key();
        let mut slot = self.control.borrow_mut();
        debug_assert_eq!(slot.len, 0, "one control frame at a time");
        let mut head = [0; MAX_HEADER_BYTES];
        let n = codec::encode_header(&mut head, opcode, payload.len(), key);
        slot.bytes[..n].copy_from_slice(&head[..n]);
        let end = n + payload.len();
        slot.bytes[n..end].copy_from_slice(payload);
        if let Some(key) = key {
            codec::apply_mask(&mut slot.bytes[n..end], key, 0);
        }
        slot.len = end;
        slot.written = 0;
    }

    /// Writes and flushes the pending control frame, if any.
    fn poll_drain_control(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut slot = self.control.borrow_mut();
            if slot.len == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut io = self.io.borrow_mut();
            while slot.written < slot.len {
                let (from, to) = (slot.written, slot.len);
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &slot.bytes[from..to]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                slot.written += n;
            }
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
            slot.len = 0;
            slot.written = 0;
        }
        self.wake_reader();
        Poll::Ready(Ok(()))
    }

    /// Ready once the control slot is empty; drives it while the writer is
    /// idle, waits for the writer otherwise.
    fn poll_control_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.control_pending() {
            return Poll::Ready(Ok(()));
        }
        if self.writer_active.get() {
            *self.reader_waiting.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.poll_drain_control(cx)
    }

    fn poll_write(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io.borrow_mut()).poll_write(cx, bytes)
    }

    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = poll_fn(|cx| self.poll_write(cx, bytes)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        Ok(())
    }

    async fn drain_control(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_drain_control(cx)).await
    }

    async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *self.io.borrow_mut()).poll_flush(cx)).await
    }

    /// Closes the byte stream's sending side: TCP FIN, or TLS
    /// `close_notify` then FIN.
    async fn shutdown(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *self.io.borrow_mut()).poll_close(cx)).await
    }
}

/// Bytes read from the stream ahead of the framing, so that a frame header
/// and a small payload cost one stream read between them instead of three.
#[derive(Debug)]
struct Wire {
    buf: Box<[u8]>,
    /// `buf[at..len]` is not consumed yet.
    at: usize,
    len: usize,
}

impl Wire {
    /// A buffer of `capacity` bytes (at least what arrived with the
    /// upgrade), holding `early` first.
    fn new(early: Vec<u8>, capacity: usize) -> Self {
        let len = early.len();
        let mut buf = early;
        buf.resize(capacity.max(len).max(MIN_WIRE_BYTES), 0);
        Self {
            buf: buf.into_boxed_slice(),
            at: 0,
            len,
        }
    }

    /// Copies what is buffered into `dst`; returns how much.
    fn take(&mut self, dst: &mut [u8]) -> usize {
        let n = (self.len - self.at).min(dst.len());
        dst[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        n
    }
}

/// The wire buffer is at least this large (two headers and a pong).
const MIN_WIRE_BYTES: usize = 512;

/// One stream read into `dst`, keeping a pending control frame moving
/// while it waits (when the writer is idle).
async fn poll_stream(shared: &Shared, dst: &mut [u8]) -> io::Result<usize> {
    loop {
        let res = poll_fn(|cx| {
            if !shared.writer_active.get() && shared.control_pending() {
                // Errors show again on the next write or read.
                let _ = shared.poll_drain_control(cx);
            }
            Pin::new(&mut *shared.io.borrow_mut()).poll_read(cx, dst)
        })
        .await;
        match res {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Reads into `dst`: what the wire buffer holds, else a read straight into
/// `dst` when it is large (a payload), else a read that refills the wire
/// buffer. Cancel safe: no state lives in the future, and a refill is
/// recorded in the same poll that completes it.
async fn read_into(shared: &Shared, wire: &mut Wire, dst: &mut [u8]) -> io::Result<usize> {
    if wire.at < wire.len {
        return Ok(wire.take(dst));
    }
    if dst.len() >= wire.buf.len() / 2 {
        return poll_stream(shared, dst).await;
    }
    let n = poll_stream(shared, &mut wire.buf).await?;
    wire.at = 0;
    wire.len = n;
    Ok(wire.take(dst))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The peer's close frame arrived: its stream is over.
    Closed,
    /// A violation or broken framing: nothing more is parsed.
    Failed,
}

/// The WebSocket frame being received.
#[derive(Debug, Clone, Copy)]
struct Current {
    head: FrameHead,
    /// Payload bytes received so far.
    done: u64,
}

/// The binary message being received.
#[derive(Debug)]
struct Message {
    /// Payload bytes received so far, over all its frames.
    received: u64,
    /// The `size` field, as its bytes go by.
    size_field: [u8; 4],
    /// The frame, once complete (the message may still end in an empty
    /// continuation).
    frame: Option<Frame>,
}

impl Message {
    /// The frame's `size`, once its whole header has arrived.
    fn size(&self) -> Option<u32> {
        (self.received >= HEADER_SIZE as u64).then(|| u32::from_le_bytes(self.size_field))
    }

    /// The `size` field if it has arrived (for error reports), else 0.
    fn size_seen(&self) -> u32 {
        if self.received >= SIZE_OFFSET + 4 {
            u32::from_le_bytes(self.size_field)
        } else {
            0
        }
    }

    /// Notes payload bytes at message offsets `received..` going by.
    fn observe(&mut self, bytes: &[u8]) {
        let start = self.received;
        let end = start + bytes.len() as u64;
        for offset in start.max(SIZE_OFFSET)..end.min(SIZE_OFFSET + 4) {
            #[allow(clippy::cast_possible_truncation, reason = "within 4 and a read")]
            let (field, at) = ((offset - SIZE_OFFSET) as usize, (offset - start) as usize);
            self.size_field[field] = bytes[at];
        }
        self.received = end;
    }
}

/// The reading half: one frame per binary message.
#[derive(Debug)]
pub struct WsReader {
    shared: Rc<Shared>,
    decoder: Decoder,
    /// Bytes read ahead of the framing (those that arrived with the upgrade
    /// first).
    wire: Wire,
    /// Server side: frames must be masked; client side: must not be.
    masked: bool,
    max_message: u32,
    max_frame: u32,
    head: [u8; MAX_HEADER_BYTES],
    head_len: usize,
    current: Option<Current>,
    message: Option<Message>,
    control: [u8; WS_MAX_CONTROL_PAYLOAD_BYTES],
    /// A wait for inbound budget was cancelled: the decoder must be asked
    /// again before more bytes are fed to it.
    decode_pending: bool,
    state: ReadState,
}

impl WsReader {
    /// Records the close code for `err` and returns it as the bus error.
    fn violation(&mut self, err: FrameError) -> Error {
        self.violation_with(err, u16::from(violation_close_code(err)))
    }

    fn violation_with(&mut self, err: FrameError, code: u16) -> Error {
        self.state = ReadState::Failed;
        self.shared.violation.set(Some(code));
        Error::Frame(err)
    }

    /// Broken WebSocket framing: the connection fails (no close frame).
    fn broken(&mut self, why: Broken) -> Error {
        self.state = ReadState::Failed;
        Error::Io(io::Error::new(io::ErrorKind::InvalidData, why))
    }

    /// Reads more bytes into `self.head[self.head_len..to]`.
    async fn fill_head(&mut self, to: usize) -> Result<(), Error> {
        while self.head_len < to {
            let Self {
                shared,
                wire,
                head,
                head_len,
                ..
            } = self;
            let n = read_into(shared, wire, &mut head[*head_len..to]).await?;
            if n == 0 {
                return Err(if self.head_len == 0 && self.message.is_none() {
                    Error::Closed
                } else {
                    Error::Io(io::ErrorKind::UnexpectedEof.into())
                });
            }
            self.head_len += n;
        }
        Ok(())
    }

    /// Reads and checks the next frame header.
    async fn read_head(&mut self) -> Result<(), Error> {
        // Fast path: the whole header is in the wire buffer already.
        let wire = &mut self.wire;
        if self.head_len == 0 && wire.len - wire.at >= 2 {
            let need = codec::header_len(wire.buf[wire.at + 1]);
            if wire.len - wire.at >= need {
                let head = codec::parse_header(&wire.buf[wire.at..wire.at + need], self.masked);
                wire.at += need;
                let head = head.map_err(|why| self.broken(why))?;
                return self.start_frame(head);
            }
        }
        self.fill_head(2).await?;
        let need = codec::header_len(self.head[1]);
        self.fill_head(need).await?;
        self.head_len = 0;
        let head = codec::parse_header(&self.head[..need], self.masked);
        let head = head.map_err(|why| self.broken(why))?;
        self.start_frame(head)
    }

    /// The message rules a frame header can be checked against already.
    fn start_frame(&mut self, head: FrameHead) -> Result<(), Error> {
        let max_message = u64::from(self.max_message);
        let received = match (head.opcode, &self.message) {
            (OP_CLOSE | OP_PING | OP_PONG, _) => {
                self.current = Some(Current { head, done: 0 });
                return Ok(());
            }
            (OP_TEXT | OP_BINARY, Some(_)) => return Err(self.broken(Broken::Sequence)),
            (OP_TEXT, None) => return Err(self.violation(FrameError::TextMessage)),
            (OP_BINARY, None) => 0,
            (_, Some(message)) => message.received,
            // A continuation outside a message (parse_header let no other
            // opcode through).
            (_, None) => return Err(self.broken(Broken::Sequence)),
        };
        let total = received.saturating_add(head.len);
        if total > max_message {
            let max = self.max_message;
            return Err(self.violation(FrameError::TooLarge { size: total, max }));
        }
        if head.len > u64::from(self.max_frame) {
            let max = self.max_frame;
            return Err(self.violation(FrameError::TooLarge {
                size: head.len,
                max,
            }));
        }
        let message = self.message.get_or_insert(Message {
            received: 0,
            size_field: [0; 4],
            frame: None,
        });
        if let Some(size) = message.size().filter(|size| total > u64::from(*size)) {
            return Err(self.violation(FrameError::MessageLength { len: total, size }));
        }
        self.current = Some(Current { head, done: 0 });
        Ok(())
    }

    /// Reads a control frame's payload and acts on it.
    async fn read_control(&mut self, mut current: Current) -> Result<(), Error> {
        #[allow(clippy::cast_possible_truncation, reason = "at most 125")]
        let len = current.head.len as usize;
        #[allow(clippy::cast_possible_truncation, reason = "at most 125")]
        while (current.done as usize) < len {
            let Self {
                shared,
                wire,
                control,
                ..
            } = self;
            #[allow(clippy::cast_possible_truncation, reason = "at most 125")]
            let at = current.done as usize;
            let n = read_into(shared, wire, &mut control[at..len]).await?;
            if n == 0 {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            if let Some(key) = current.head.mask {
                codec::apply_mask(&mut control[at..at + n], key, current.done);
            }
            current.done += n as u64;
            self.current = Some(current);
        }
        match current.head.opcode {
            OP_PING => {
                // Backpressure: the previous pong must be out first.
                poll_fn(|cx| self.shared.poll_control_room(cx)).await?;
                self.shared.queue_control(OP_PONG, &self.control[..len]);
            }
            OP_CLOSE => {
                let body = codec::parse_close(&self.control[..len]);
                self.current = None;
                return Err(match body {
                    Err(why) => self.broken(why),
                    Ok(CloseBody::BadReason(_)) => {
                        self.violation_with(FrameError::CloseReasonUtf8, CLOSE_INVALID_DATA)
                    }
                    Ok(body) => {
                        self.shared.peer_close.set(Some(body));
                        self.state = ReadState::Closed;
                        Error::Closed
                    }
                });
            }
            // A pong answers nothing.
            _ => {}
        }
        self.current = None;
        Ok(())
    }

    /// Reads part of a data frame's payload into the decoder and lets it
    /// decode; stores the frame when it is complete.
    async fn read_payload(&mut self, mut current: Current) -> Result<(), Error> {
        let Self {
            shared,
            decoder,
            wire,
            message,
            ..
        } = self;
        let Some(message) = message else {
            return Err(self.broken(Broken::Sequence));
        };
        let wanted = match message.size() {
            Some(size) => u64::from(size).saturating_sub(message.received),
            None => HEADER_SIZE as u64 - message.received,
        };
        let left = current.head.len - current.done;
        let space = decoder.read_space();
        #[allow(clippy::cast_possible_truncation, reason = "bounded by the spare room")]
        let n = wanted.min(left).min(space.spare() as u64) as usize;
        if n == 0 {
            // The frame is complete and the message goes on.
            let (len, size) = (message.received + left, message.size_seen());
            return Err(self.violation(FrameError::MessageLength { len, size }));
        }
        let into = &mut space.spare_mut()[..n];
        let got = read_into(shared, wire, into).await?;
        if got == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(key) = current.head.mask {
            codec::apply_mask(&mut into[..got], key, current.done);
        }
        let had_size = message.size().is_some();
        message.observe(&into[..got]);
        space.advance(got);
        current.done += got as u64;
        let (received, size) = (message.received, message.size());
        self.current = Some(current);
        if let (false, Some(size)) = (had_size, size) {
            let len = received + (current.head.len - current.done);
            if len > u64::from(size) {
                return Err(self.violation(FrameError::MessageLength { len, size }));
            }
        }
        self.decode().await
    }

    /// Runs the decoder until it needs bytes (waiting for budget if it
    /// asks for it).
    async fn decode(&mut self) -> Result<(), Error> {
        // Asked again now; set once more only while a wait is in progress.
        self.decode_pending = false;
        loop {
            match self.decoder.next_frame() {
                Ok(Progress::Frame(frame)) => {
                    if let Some(message) = &mut self.message {
                        message.frame = Some(frame);
                    }
                    return Ok(());
                }
                Ok(Progress::NeedBytes) => return Ok(()),
                Ok(Progress::NeedBudget(bytes)) => {
                    let budget = self
                        .decoder
                        .budget()
                        .expect("NeedBudget comes with a budget")
                        .clone();
                    // Cancel safe: if this wait is dropped, the next read
                    // asks the decoder again before feeding it.
                    self.decode_pending = true;
                    let reservation = budget.reserve(bytes).await;
                    self.decode_pending = false;
                    self.decoder.grant(reservation);
                }
                Err(err) => return Err(self.violation(err)),
            }
        }
    }

    /// The message ended (FIN): its frame, or why it carried none.
    fn finish_message(&mut self) -> Result<Frame, Error> {
        let message = self.message.take().expect("a message in progress");
        if let Some(frame) = message.frame {
            return Ok(frame);
        }
        let (len, size) = (message.received, message.size_seen());
        Err(self.violation(FrameError::MessageLength { len, size }))
    }
}

impl FrameReader for WsReader {
    /// Reads the next binary message and checks it is one valid frame.
    /// WebSocket pings are answered (one pong at a time: see the module
    /// docs); a close frame ends the stream ([`Error::Closed`]).
    ///
    /// # Cancel safety
    /// Cancel safe: every byte read is kept in the reader (frame header,
    /// control payload, the decoder), and the stream's reads are cancel
    /// safe, so dropping this future loses nothing.
    async fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if self.state != ReadState::Open {
                return Err(Error::Closed);
            }
            let Some(current) = self.current else {
                self.read_head().await?;
                continue;
            };
            if current.head.is_control() {
                self.read_control(current).await?;
                continue;
            }
            if self.decode_pending {
                self.decode().await?;
                continue;
            }
            if current.done < current.head.len {
                self.read_payload(current).await?;
                continue;
            }
            self.current = None;
            if current.head.fin {
                return self.finish_message();
            }
        }
    }

    /// Reads and drops messages until the peer's close frame; after a
    /// violation, drops raw bytes until the peer closes the stream.
    async fn discard(&mut self) -> io::Result<usize> {
        match self.state {
            ReadState::Open => match self.read_frame().await {
                Ok(frame) => return Ok(frame.len()),
                Err(Error::Closed) => return Ok(0),
                Err(Error::Io(err)) => return Err(err),
                Err(_) => {}
            },
            ReadState::Closed => return Ok(0),
            ReadState::Failed => {}
        }
        let Self {
            shared,
            decoder,
            wire,
            ..
        } = self;
        let space = decoder.discard_space();
        read_into(shared, wire, space.spare_mut()).await
    }
}

/// The writing half: a batch is written frame by frame and flushed once.
#[derive(Debug)]
pub struct WsWriter {
    shared: Rc<Shared>,
    /// Most bytes handed to the stream in one write.
    chunk: usize,
    /// Client side: where frames are masked, `chunk` bytes at a time.
    scratch: Vec<u8>,
}

impl WsWriter {
    /// Writes one frame as one binary message.
    async fn write_message(&mut self, bytes: &[u8]) -> io::Result<()> {
        let key = self.shared.next_key();
        let mut head = [0; MAX_HEADER_BYTES];
        let n = codec::encode_header(&mut head, OP_BINARY, bytes.len(), key);
        self.shared.write_all(&head[..n]).await?;
        let mut offset = 0u64;
        for piece in bytes.chunks(self.chunk) {
            match key {
                None => self.shared.write_all(piece).await?,
                Some(key) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(piece);
                    codec::apply_mask(&mut self.scratch, key, offset);
                    self.shared.write_all(&self.scratch).await?;
                    offset += piece.len() as u64;
                }
            }
        }
        Ok(())
    }

    async fn send_all(&mut self, batch: &[Frame]) -> io::Result<()> {
        if self.shared.close_sent.get() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "WebSocket already closed",
            ));
        }
        let shared = self.shared.clone();
        let _active = shared.activate();
        for frame in batch {
            shared.drain_control().await?;
            self.write_message(frame.as_bytes()).await?;
        }
        shared.drain_control().await?;
        shared.flush().await
    }

    /// The close frame's payload: the code and the reason's text, cut to
    /// fit 125 bytes on a character boundary.
    fn close_payload(&self, reason: Option<GoodbyeReason>, out: &mut [u8; 125]) -> usize {
        let shared = &self.shared;
        let code = match (shared.violation.get(), shared.peer_close.get()) {
            (Some(code), _) | (None, Some(CloseBody::Code(code) | CloseBody::BadReason(code))) => {
                code
            }
            (None, Some(CloseBody::Empty)) => return 0,
            (None, None) => u16::from(close_code(reason)),
        };
        out[..2].copy_from_slice(&code.to_be_bytes());
        let text = reason.map(|r| r.to_string()).unwrap_or_default();
        let mut cut = text.len().min(out.len() - 2);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        out[2..2 + cut].copy_from_slice(&text.as_bytes()[..cut]);
        2 + cut
    }
}

impl FrameWriter for WsWriter {
    /// Writes each frame as one binary message (the stream sends whenever
    /// `write_buffer_bytes` have gathered), then flushes once.
    ///
    /// # Cancel safety
    /// Not cancel safe: see [`FrameWriter::write_batch`].
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        let res = self.send_all(&batch).await;
        BufResult(res, batch)
    }

    /// Sends a close frame (code from [`crate::close`]; the peer's own code
    /// when it closed first), flushes it, then closes the byte stream's
    /// sending side.
    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()> {
        let shared = self.shared.clone();
        let _active = shared.activate();
        shared.drain_control().await?;
        if !shared.close_sent.get() {
            let mut payload = [0; 125];
            let len = self.close_payload(reason, &mut payload);
            shared.queue_control(OP_CLOSE, &payload[..len]);
            shared.close_sent.set(true);
            shared.drain_control().await?;
        }
        shared.shutdown().await
    }
}
