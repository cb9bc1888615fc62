//! A WebSocket connection and its two halves, on our own RFC 6455 framing
//! (`codec.rs`) over the owned-buffer byte layer of `io.rs`.
//!
//! # Receiving: one copy, bounded, refused early
//!
//! The reader reads into its read buffer (`read_buffer_bytes`; one
//! `io_uring` read for WS, decrypted bytes for WSS) and parses frame
//! headers there. A message that is one frame (FIN set) and fits the read
//! buffer, the common case, is copied once into its own pooled frame buffer
//! and unmasked in the same pass; bus-core's
//! [`DecodeLimits::check_received`] then applies every rule of spec §1 and
//! §7 to it. Any other message (fragmented, or larger than the read buffer)
//! goes through bus-core's [`Decoder`], which reserves a message larger
//! than the read buffer from the node's inbound budget before it allocates
//! it (waiting, and so not reading, while the budget is exhausted); such a
//! payload is read straight into the frame's own storage and unmasked in
//! place there. Around both the reader enforces the carriage (spec §7): a
//! message is refused as soon as its announced or received length exceeds
//! the `size` of the frame it carries or the limit, so nothing is buffered
//! for a message that cannot be valid.
//!
//! # Control frames: one at a time
//!
//! See `shared.rs`: pongs and close frames go through one slot of at most
//! 139 bytes, written by whoever holds the sending side (the writer between
//! messages, or the reader itself while the writer is idle); a peer that
//! floods pings and never reads stops being read.
//!
//! # Sending
//!
//! The writer takes the sending side for a batch and gives it back at its
//! end (after one flush). On the server side a frame's WebSocket header is
//! encoded on the stack; small frames are packed with their headers into
//! the byte layer's pooled write buffer (WS) or its staging record (WSS), a
//! frame too large for the buffer goes out from its own storage (WS:
//! vectored, no copy; WSS: sealed straight from it). A client masks (RFC
//! 6455 §5.3) with a fresh key per frame, through one scratch buffer of
//! `write_buffer_bytes` allocated with the connection. No sent frame
//! allocates, and no buffer grows with the frames sent.
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
//!
//! [`DecodeLimits::check_received`]: bus_core::DecodeLimits::check_received

use std::{io, net::SocketAddr, rc::Rc, sync::Arc};

use bus_core::{
    ByteBuf, DecodeLimits, Decoder, Error, Frame, FrameError, FrameMut, GoodbyeReason, Progress,
    limits::{HEADER_SIZE, WS_MAX_CONTROL_PAYLOAD_BYTES},
    transport::{
        Connection, ConnectionInfo, FrameReader, FrameWriter, ReadSettings, TransportKind,
    },
};
use compio::{BufResult, net::TcpStream};

use crate::{
    close::{close_code, violation_close_code},
    codec::{
        self, Broken, CloseBody, FrameHead, MAX_HEADER_BYTES, OP_BINARY, OP_CLOSE, OP_PING,
        OP_PONG, OP_TEXT,
    },
    config::WsLimits,
    handshake,
    io::{Sink, Source},
    shared::{Held, Shared},
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

    /// Runs the TLS handshake (WSS) and returns the byte layer to upgrade,
    /// with the peer's verified certificate identity (mutual TLS).
    #[cfg_attr(
        not(feature = "wss"),
        allow(clippy::unused_async, reason = "only the TLS arms await")
    )]
    async fn secure(
        self,
        stream: TcpStream,
        limits: &WsLimits,
        tls_buffer_bytes: usize,
    ) -> Result<(Source, Sink, Option<String>), Error> {
        #[cfg(not(feature = "wss"))]
        let _ = tls_buffer_bytes;
        match self {
            Self::Plain => {
                let (read, write) = stream.into_split();
                let sink = Sink::plain(write, limits.write_buffer_bytes);
                Ok((Source::plain(read), sink, None))
            }
            #[cfg(feature = "wss")]
            Self::ServerTls(tls) => {
                let halves = tls
                    .accept_halves(stream, tls_buffer_bytes)
                    .await
                    .map_err(|e| Error::handshake(TransportKind::Wss, e))?;
                Ok(Self::tls_halves(halves))
            }
            #[cfg(feature = "wss")]
            Self::ClientTls(tls) => {
                let halves = tls
                    .handshake_halves(stream)
                    .await
                    .map_err(|e| Error::handshake(TransportKind::Wss, e))?;
                Ok(Self::tls_halves(halves))
            }
        }
    }

    #[cfg(feature = "wss")]
    fn tls_halves(halves: bus_tls::TlsHalves) -> (Source, Sink, Option<String>) {
        let bus_tls::TlsHalves {
            source,
            sink,
            identity,
            ..
        } = halves;
        (Source::Tls(source), Sink::Tls(Box::new(sink)), identity)
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

    /// Runs the TLS handshake (WSS), then the HTTP upgrade. WebSocket
    /// buffers come from [`WsLimits`](crate::WsLimits); `read_buffer_bytes`
    /// (the bus's stream read buffer) sizes only a WSS server's TLS receive
    /// and send buffers, as it does for a TLS connection. The inbound budget
    /// of `reading` bounds messages larger than the read buffer, as on TCP.
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
        let secured = self
            .security
            .secure(self.stream, &limits, reading.read_buffer_bytes);
        let (mut source, mut sink, identity) = secured.await?;
        let (early, client) = match &self.side {
            Side::Server(policy) => (
                handshake::accept(&mut source, &mut sink, policy).await,
                false,
            ),
            Side::Client(request) => (
                handshake::connect(&mut source, &mut sink, request).await,
                true,
            ),
        };
        let early = early.map_err(|e| Error::handshake(kind, e))?;
        let shared = Rc::new(Shared::new(sink, client));
        let max_message = reading.limits.max_message_size_bytes;
        let reader = WsReader {
            shared: shared.clone(),
            source,
            wire: Wire::new(&early, limits.read_buffer_bytes),
            decoder: Decoder::with_buffer(
                reading.limits,
                limits.read_buffer_bytes,
                reading.budget.clone(),
            ),
            limits: reading.limits,
            masked: !client,
            max_message,
            max_frame: limits.max_frame(max_message),
            current: None,
            message: None,
            control: [0; WS_MAX_CONTROL_PAYLOAD_BYTES],
            decode_pending: false,
            inflight: None,
            state: ReadState::Open,
        };
        let chunk = limits.write_buffer_bytes.max(1);
        let writer = WsWriter {
            shared,
            scratch: if client { vec![0; chunk] } else { Vec::new() },
        };
        let mut info = ConnectionInfo::new(kind, self.peer);
        info.identity = identity;
        Ok((reader, writer, info))
    }
}

/// The read buffer: `buf[at..]` is received and not consumed yet.
#[derive(Debug)]
struct Wire {
    buf: ByteBuf,
    at: usize,
}

/// The read buffer is at least this large (two headers and a pong).
const MIN_WIRE_BYTES: usize = 512;

impl Wire {
    /// A buffer of `capacity` bytes (at least what arrived with the
    /// upgrade), holding `early` first.
    fn new(early: &ByteBuf, capacity: usize) -> Self {
        let mut buf = ByteBuf::with_capacity(capacity.max(early.len()).max(MIN_WIRE_BYTES));
        buf.extend_from_slice(early.as_slice());
        Self { buf, at: 0 }
    }

    /// The bytes not consumed yet. (A cancelled plain read leaves an empty
    /// stand-in buffer behind: then nothing, and the next read fails.)
    fn pending(&self) -> &[u8] {
        self.buf.as_slice().get(self.at..).unwrap_or_default()
    }

    fn available(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
        if self.at >= self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.at = 0;
    }

    /// Moves the pending bytes to the front when `need` bytes would not
    /// fit behind them.
    fn make_room(&mut self, need: usize) {
        debug_assert!(need <= self.capacity());
        if self.at + need > self.buf.capacity() {
            self.buf.consume(self.at.min(self.buf.len()));
            self.at = 0;
        }
    }
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
    source: Source,
    /// Bytes read ahead of the framing (those that arrived with the upgrade
    /// first).
    wire: Wire,
    /// Messages that are not one frame fitting the read buffer.
    decoder: Decoder,
    limits: DecodeLimits,
    /// Server side: frames must be masked; client side: must not be.
    masked: bool,
    max_message: u32,
    max_frame: u32,
    current: Option<Current>,
    message: Option<Message>,
    control: [u8; WS_MAX_CONTROL_PAYLOAD_BYTES],
    /// A wait for inbound budget was cancelled: the decoder must be asked
    /// again before more bytes are fed to it.
    decode_pending: bool,
    /// A plain socket read whose caller was dropped, still in flight with
    /// the buffer it reads into.
    inflight: Option<Target>,
    state: ReadState,
}

/// The buffer a read appends to.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The read buffer.
    Wire,
    /// The decoder's read space (a large message's own storage), which held
    /// `before` bytes when the read began.
    Space { before: usize },
}

/// The `size` field of a masked payload that starts with a frame header.
fn masked_size(payload: &[u8], mask: Option<[u8; 4]>) -> Option<u32> {
    #[allow(clippy::cast_possible_truncation, reason = "48")]
    let at = SIZE_OFFSET as usize;
    let mut field = [0; 4];
    // The field starts at a multiple of 4: the key is in phase.
    codec::copy_masked(&mut field, payload.get(at..at + 4)?, mask, 0);
    Some(u32::from_le_bytes(field))
}

/// One whole message in the read buffer: the same checks, in the same
/// order, as the incremental path applies (length against `size`, the size
/// rules before anything is allocated, then [`DecodeLimits::check_received`]),
/// and the payload's one copy, unmasked on the way into its frame.
fn whole_message(
    limits: DecodeLimits,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Result<Frame, FrameError> {
    let len = payload.len();
    let size = masked_size(payload, mask);
    if len < HEADER_SIZE {
        return Err(FrameError::MessageLength {
            len: len as u64,
            size: size.unwrap_or(0),
        });
    }
    let size = size.expect("a whole header");
    if len as u64 > u64::from(size) {
        return Err(FrameError::MessageLength {
            len: len as u64,
            size,
        });
    }
    limits.check_size(size)?;
    let mut frame = FrameMut::with_capacity(len);
    let buf = frame.buf_mut();
    codec::copy_masked(&mut buf.spare_mut()[..len], payload, mask, 0);
    buf.advance(len);
    limits.check_received(frame)
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

    /// One read into `target`. Cancel safe: a plain read dropped in flight
    /// is remembered in `inflight` (its buffer inside the pump) and
    /// collected by [`WsReader::settle`] before anything else.
    async fn read_to(&mut self, target: Target) -> io::Result<usize> {
        let Self {
            source,
            wire,
            decoder,
            inflight,
            ..
        } = self;
        match source {
            #[cfg(feature = "wss")]
            Source::Tls(tls) => {
                use bus_core::transport::ByteSource as _;
                let buf = match target {
                    Target::Wire => &mut wire.buf,
                    Target::Space { .. } => decoder.read_space(),
                };
                tls.read_into(buf).await
            }
            Source::Plain(pump) => {
                if inflight.is_none() {
                    pump.ask(match target {
                        Target::Wire => &mut wire.buf,
                        Target::Space { .. } => decoder.read_space(),
                    });
                    *inflight = Some(target);
                }
                let (res, owned) = pump.done().await;
                let buf = match inflight.take().expect("a read in flight") {
                    Target::Wire => &mut wire.buf,
                    Target::Space { .. } => decoder.read_space(),
                };
                pump.give_back(std::mem::replace(buf, owned));
                res
            }
        }
    }

    /// Collects a read a dropped call left in flight, and takes in what it
    /// read into a large message's storage.
    async fn settle(&mut self) -> Result<(), Error> {
        let Some(target) = self.inflight else {
            return Ok(());
        };
        let got = self.read_to(target).await?;
        if let Target::Space { before } = target {
            if got == 0 {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.absorb(before)?;
            self.decode().await?;
        }
        Ok(())
    }

    /// Reads until `need` bytes are pending in the read buffer; the end of
    /// the stream is [`Error::Closed`] between messages, an error inside one.
    #[inline]
    async fn fill(&mut self, need: usize) -> Result<(), Error> {
        while self.wire.available() < need {
            self.wire.make_room(need);
            if self.read_to(Target::Wire).await? == 0 {
                let between = self.wire.available() == 0 && self.message.is_none();
                return Err(if between && self.current.is_none() {
                    Error::Closed
                } else {
                    Error::Io(io::ErrorKind::UnexpectedEof.into())
                });
            }
        }
        Ok(())
    }

    /// Reads and checks the next frame header.
    async fn read_head(&mut self) -> Result<(), Error> {
        self.fill(2).await?;
        let need = codec::header_len(self.wire.pending()[1]);
        self.fill(need).await?;
        let head = codec::parse_header(&self.wire.pending()[..need], self.masked);
        self.wire.consume(need);
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

    /// Whether the frame about to be received is a whole message that fits
    /// the read buffer: it takes the one-copy path.
    fn is_whole(&self, current: Current) -> bool {
        current.head.fin
            && current.done == 0
            && self.message.as_ref().is_some_and(|m| m.received == 0)
            && current.head.len <= self.wire.capacity() as u64
    }

    /// The one-copy path without an await, for the common case: the next
    /// frame is a whole binary message (FIN set) and every byte of it is in
    /// the read buffer already. `None` sends anything else down the
    /// general path, which applies the same rules (and reports the same
    /// errors) step by step.
    fn try_whole(&mut self) -> Option<Result<Frame, Error>> {
        if self.current.is_some() || self.message.is_some() || self.inflight.is_some() {
            return None;
        }
        let pending = self.wire.pending();
        // FIN, no reserved bit, binary.
        if pending.len() < 2 || pending[0] != 0x80 | OP_BINARY {
            return None;
        }
        let need = codec::header_len(pending[1]);
        let head = codec::parse_header(pending.get(..need)?, self.masked).ok()?;
        let limit = u64::from(self.max_message.min(self.max_frame));
        if head.len > limit || head.len > (pending.len() - need) as u64 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, reason = "at most what is buffered")]
        let len = head.len as usize;
        let got = whole_message(self.limits, &pending[need..need + len], head.mask);
        self.wire.consume(need + len);
        Some(got.map_err(|err| self.violation(err)))
    }

    /// Receives a whole message that fits the read buffer.
    async fn read_whole(&mut self, current: Current) -> Result<Frame, Error> {
        #[allow(clippy::cast_possible_truncation, reason = "at most the capacity")]
        let len = current.head.len as usize;
        // Refused as soon as the frame's `size` shows the message too long,
        // without waiting for the rest.
        #[allow(clippy::cast_possible_truncation, reason = "52")]
        let early = len.min(SIZE_OFFSET as usize + 4);
        self.fill(early).await?;
        let size = masked_size(&self.wire.pending()[..early], current.head.mask);
        if let Some(size) = size.filter(|size| len as u64 > u64::from(*size)) {
            let len = len as u64;
            return Err(self.violation(FrameError::MessageLength { len, size }));
        }
        self.fill(len).await?;
        let got = whole_message(self.limits, &self.wire.pending()[..len], current.head.mask);
        self.wire.consume(len);
        self.current = None;
        self.message = None;
        got.map_err(|err| self.violation(err))
    }

    /// Reads a control frame's payload and acts on it.
    async fn read_control(&mut self, current: Current) -> Result<(), Error> {
        #[allow(clippy::cast_possible_truncation, reason = "at most 125")]
        let len = current.head.len as usize;
        if current.done < current.head.len {
            self.fill(len).await?;
            let payload = &self.wire.pending()[..len];
            codec::copy_masked(&mut self.control[..len], payload, current.head.mask, 0);
            self.wire.consume(len);
            // Acting on it may wait: the payload is kept.
            self.current = Some(Current {
                head: current.head,
                done: current.head.len,
            });
        }
        match current.head.opcode {
            OP_PING => {
                // Backpressure: the previous pong must be out first.
                self.shared.pong(&self.control[..len]).await?;
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

    /// Reads part of a data frame's payload into the decoder (straight into
    /// its space when that space is the exact rest of the payload, as for a
    /// large message's own storage), then lets the decoder decode.
    async fn read_payload(&mut self, current: Current) -> Result<(), Error> {
        let Some(message) = &self.message else {
            return Err(self.broken(Broken::Sequence));
        };
        let wanted = match message.size() {
            Some(size) => u64::from(size).saturating_sub(message.received),
            None => HEADER_SIZE as u64 - message.received,
        };
        let left = current.head.len - current.done;
        let (received, size_seen) = (message.received, message.size_seen());
        let space = self.decoder.read_space();
        #[allow(clippy::cast_possible_truncation, reason = "bounded by the spare room")]
        let n = wanted.min(left).min(space.spare() as u64) as usize;
        if n == 0 {
            // The frame is complete and the message goes on.
            let (len, size) = (received + left, size_seen);
            return Err(self.violation(FrameError::MessageLength { len, size }));
        }
        let before = space.len();
        let direct = n == space.spare() && n >= self.wire.capacity() / 2;
        if direct && self.wire.available() == 0 {
            // No copy: the read fills exactly what the payload still owes.
            if self.read_to(Target::Space { before }).await? == 0 {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        } else {
            self.fill(1).await?;
            let take = n.min(self.wire.available());
            let bytes = &self.wire.pending()[..take];
            self.decoder.read_space().extend_from_slice(bytes);
            self.wire.consume(take);
        }
        self.absorb(before)?;
        self.decode().await
    }

    /// Unmasks the payload bytes that arrived in the decoder's space past
    /// `before`, in place, and checks what they tell about the message.
    fn absorb(&mut self, before: usize) -> Result<(), Error> {
        let (Some(mut current), Some(message)) = (self.current, &mut self.message) else {
            return Err(self.broken(Broken::Sequence));
        };
        let space = self.decoder.read_space();
        let got = &mut space.as_mut_slice()[before..];
        if let Some(key) = current.head.mask {
            codec::apply_mask(got, key, current.done);
        }
        let had_size = message.size().is_some();
        message.observe(got);
        current.done += got.len() as u64;
        let (received, size) = (message.received, message.size());
        self.current = Some(current);
        if let (false, Some(size)) = (had_size, size) {
            let len = received + (current.head.len - current.done);
            if len > u64::from(size) {
                return Err(self.violation(FrameError::MessageLength { len, size }));
            }
        }
        Ok(())
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
    /// Every byte parsed is kept in the reader (the read buffer, the frame
    /// header, a control payload, the decoder), so a future dropped between
    /// two socket reads loses nothing. The socket read itself is cancel safe
    /// on WSS (`bus-tls` keeps it in flight) but not on plain WS
    /// (`dependencies.md` #1, as on TCP): a dropped read loses its bytes,
    /// and the next call fails rather than parse around the gap. The bus
    /// keeps this future alive for the connection's life and drops it only
    /// to tear the connection down.
    async fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if self.state != ReadState::Open {
                return Err(Error::Closed);
            }
            if let Some(whole) = self.try_whole() {
                return whole;
            }
            self.settle().await?;
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
            if self.is_whole(current) {
                return self.read_whole(current).await;
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
        if let Some(target) = self.inflight {
            // Collected and dropped: nothing is parsed any more.
            self.read_to(target).await?;
        }
        // A large message's storage goes back now.
        self.decoder.discard_space();
        let pending = self.wire.available();
        self.wire.clear();
        if pending > 0 {
            return Ok(pending);
        }
        let n = self.read_to(Target::Wire).await?;
        self.wire.clear();
        Ok(n)
    }
}

/// The writing half: a batch is written frame by frame and flushed once.
#[derive(Debug)]
pub struct WsWriter {
    shared: Rc<Shared>,
    /// Client side: where frames are masked, `write_buffer_bytes` at a
    /// time (empty on the server side).
    scratch: Vec<u8>,
}

impl WsWriter {
    /// Writes one frame as one binary message.
    async fn write_message(&mut self, sink: &mut Held<'_>, frame: &Frame) -> io::Result<()> {
        let bytes = frame.as_bytes();
        let key = self.shared.next_key();
        let mut head = [0; MAX_HEADER_BYTES];
        let n = codec::encode_header(&mut head, OP_BINARY, bytes.len(), key);
        let Some(key) = key else {
            return sink.write_frame(&head[..n], frame).await;
        };
        sink.write(&head[..n]).await?;
        let mut offset = 0u64;
        for piece in bytes.chunks(self.scratch.len()) {
            let scratch = &mut self.scratch[..piece.len()];
            codec::copy_masked(scratch, piece, Some(key), offset);
            sink.write(scratch).await?;
            offset += piece.len() as u64;
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
        let mut held = shared.hold().await?;
        for frame in batch {
            held.drain_control().await?;
            self.write_message(&mut held, frame).await?;
        }
        held.finish().await
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
    /// Writes each frame as one binary message (the byte layer writes
    /// whenever its buffer fills), then flushes once.
    ///
    /// # Cancel safety
    /// Not cancel safe: see [`FrameWriter::write_batch`]. A dropped batch
    /// loses the sending side: later writes and the close fail.
    async fn write_batch(&mut self, batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        let res = self.send_all(&batch).await;
        BufResult(res, batch)
    }

    /// Sends a close frame (code from [`crate::close`]; the peer's own code
    /// when it closed first), flushes it, then closes the byte stream's
    /// sending side.
    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()> {
        let shared = self.shared.clone();
        let mut held = shared.hold().await?;
        held.drain_control().await?;
        if !shared.close_sent.get() {
            let mut payload = [0; 125];
            let len = self.close_payload(reason, &mut payload);
            shared.queue_control(OP_CLOSE, &payload[..len]);
            shared.close_sent.set(true);
        }
        held.shutdown().await
    }
}
