//! Framing: turning bytes into validated frames, in one place.
//!
//! Every receiver rule of spec §1 is applied here, before a frame is handed
//! out, for every transport:
//!
//! - [`DecodeLimits`]: the receiver's rules (size range, protocol, command,
//!   checksums, sealing policy) for a header, and for a whole message of a
//!   message transport ([`DecodeLimits::check_message`], WebSocket).
//! - [`Decoder`]: the one stream decoder of byte-stream transports (TCP,
//!   TLS, a QUIC stream, test clients). Sans-IO: it owns the connection's
//!   read buffer, the frame too large for that buffer (read straight into
//!   its own storage), the inbound-budget reservation for it, poisoning after
//!   a bad frame, and the end-of-stream rules. It says what it needs next
//!   ([`Progress`]); it never reads by itself.
//! - [`StreamReader`]: a `Decoder` plus a [`ByteSource`] (how a transport
//!   gets more bytes) is a [`FrameReader`]. That loop is the only place the
//!   decode → refill → end-of-stream cycle is written.
//!
//! Small frames (up to the read buffer's size) are copied once from the read
//! buffer into a pooled frame buffer; larger ones are read into their own
//! buffer, so their body is never copied.

use std::io;

use crate::{
    budget::{InboundBudget, Reservation},
    buf::{ByteBuf, Frame, FrameMut},
    error::Error,
    header::{FrameError, Header},
    limits::{DEFAULT_READ_BUFFER_BYTES, HEADER_SIZE},
    transport::{ByteSource, FrameReader},
};

/// Offset of the `size` field in a header (spec §1).
const SIZE_OFFSET: usize = 48;

/// What a receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted `size` (spec §1).
    pub max_message_size_bytes: u32,
    /// Refuse frames whose `checksum` is 0.
    pub require_sealed: bool,
}

impl DecodeLimits {
    /// Validates a header against these limits (every header rule of §1).
    pub fn check_header(&self, header: &Header) -> Result<(), FrameError> {
        header.validate(self.max_message_size_bytes)?;
        if self.require_sealed && !header.is_sealed() {
            return Err(FrameError::NotSealed);
        }
        Ok(())
    }

    /// The size rules alone, from a raw `size` field: the first checks of
    /// [`Header::validate`], in its order, so they can run before anything
    /// is allocated for the frame.
    pub fn check_size(&self, size: u32) -> Result<(), FrameError> {
        if size > self.max_message_size_bytes {
            return Err(FrameError::TooLarge {
                size: u64::from(size),
                max: self.max_message_size_bytes,
            });
        }
        if (size as usize) < HEADER_SIZE {
            return Err(FrameError::TooSmall { size });
        }
        Ok(())
    }

    /// Checks that one message of a message transport (a WebSocket binary
    /// message) is exactly one valid frame: every header rule, then
    /// `size == message length`, then the body checksum. Returns the frame
    /// in a pooled buffer (the message's one copy).
    pub fn check_message(&self, message: &[u8]) -> Result<Frame, FrameError> {
        let len = message.len();
        if len < HEADER_SIZE {
            // Too short for a header: report the size field if it is there.
            return Err(FrameError::MessageLength {
                len: len as u64,
                size: size_field(message).unwrap_or(0),
            });
        }
        let mut frame = FrameMut::with_capacity(len);
        frame.extend_from_slice(message);
        self.check_received(frame)
    }

    /// [`DecodeLimits::check_message`] for a message already received into
    /// its own frame buffer (a WebSocket reader that unmasks while it
    /// copies the payload there): the same rules in the same order, without
    /// a copy.
    pub fn check_received(&self, frame: FrameMut) -> Result<Frame, FrameError> {
        let len = frame.len();
        if len < HEADER_SIZE {
            return Err(FrameError::MessageLength {
                len: len as u64,
                size: size_field(frame.as_bytes()).unwrap_or(0),
            });
        }
        self.check_header(frame.header())?;
        let size = frame.header().size();
        if size as usize != len {
            return Err(FrameError::MessageLength {
                len: len as u64,
                size,
            });
        }
        frame.verify_body()?;
        Ok(frame.freeze())
    }
}

/// The `size` field of a header starting at `bytes[0]`, if it is there.
fn size_field(bytes: &[u8]) -> Option<u32> {
    let field = bytes.get(SIZE_OFFSET..SIZE_OFFSET + 4)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// What a [`Decoder`] needs before it can hand out the next frame.
#[derive(Debug)]
pub enum Progress {
    /// A complete frame that passed every rule.
    Frame(Frame),
    /// More bytes: read into [`Decoder::read_space`].
    NeedBytes,
    /// A frame of this many bytes (larger than the read buffer) needs a
    /// reservation from the inbound budget first: wait for one and pass it
    /// to [`Decoder::grant`].
    NeedBudget(u64),
}

/// A frame too large for the read buffer, read straight into its own
/// storage.
#[derive(Debug)]
struct Large {
    frame: FrameMut,
    _reservation: Option<Reservation>,
}

/// The stream decoder (see the module docs).
///
/// After it returns an error it is poisoned: every later call returns the
/// same error, so nothing after a bad frame is ever decoded.
#[derive(Debug)]
pub struct Decoder {
    limits: DecodeLimits,
    /// Received bytes; `start..len` are not decoded yet.
    buf: ByteBuf,
    start: usize,
    large: Option<Large>,
    budget: Option<InboundBudget>,
    poisoned: Option<FrameError>,
}

impl Decoder {
    /// A decoder enforcing `limits`, with a read buffer of the default size
    /// and no inbound budget.
    pub fn new(limits: DecodeLimits) -> Self {
        Self::with_buffer(limits, DEFAULT_READ_BUFFER_BYTES, None)
    }

    /// A decoder enforcing `limits` with a read buffer of
    /// `read_buffer_bytes` (at least one header), whose frames larger than
    /// the buffer are reserved from `budget` when one is given.
    pub fn with_buffer(
        limits: DecodeLimits,
        read_buffer_bytes: usize,
        budget: Option<InboundBudget>,
    ) -> Self {
        Self {
            limits,
            buf: ByteBuf::with_capacity(read_buffer_bytes.max(2 * HEADER_SIZE)),
            start: 0,
            large: None,
            budget,
            poisoned: None,
        }
    }

    /// The rules this decoder applies.
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Applies `limits` from the next frame on: bytes already buffered
    /// are decoded under them, a frame already being received is not
    /// checked again. The replica handshake reads its three bare frames
    /// with a 256-byte limit and lifts it once the peer is authenticated.
    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.limits = limits;
    }

    /// Whether the decoder sits exactly between frames (no partial frame
    /// buffered).
    pub fn is_between_frames(&self) -> bool {
        self.large.is_none() && self.start == self.buf.len() && self.poisoned.is_none()
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start + self.large.as_ref().map_or(0, |l| l.frame.len())
    }

    /// Decodes the next frame from what was received, or says what is
    /// needed first.
    ///
    /// # Panics
    /// Never in practice: the internal states are checked invariants.
    pub fn next_frame(&mut self) -> Result<Progress, FrameError> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        if let Some(large) = &self.large {
            if large.frame.len() < large.frame.capacity() {
                return Ok(Progress::NeedBytes);
            }
            let Large { frame, .. } = self.large.take().expect("checked above");
            // The reservation is given back here: the frame is complete.
            return self.finish(frame).map(Progress::Frame);
        }
        let pending = &self.buf.as_slice()[self.start..];
        let pending_len = pending.len();
        let Some(size) = size_field(pending).filter(|_| pending_len >= HEADER_SIZE) else {
            return Ok(Progress::NeedBytes);
        };
        // Before anything is allocated for the frame.
        if let Err(err) = self.limits.check_size(size) {
            return Err(self.poison(err));
        }
        let size_bytes = size as usize;
        if size_bytes <= self.buf.capacity() {
            if pending_len < size_bytes {
                return Ok(Progress::NeedBytes);
            }
            let mut frame = FrameMut::with_capacity(size_bytes);
            frame.extend_from_slice(&self.buf.as_slice()[self.start..self.start + size_bytes]);
            self.advance(size_bytes);
            if let Err(err) = self.limits.check_header(frame.header()) {
                return Err(self.poison(err));
            }
            return self.finish(frame).map(Progress::Frame);
        }
        // Larger than the read buffer: check the header before reserving or
        // allocating anything for the body.
        let head = &self.buf.as_slice()[self.start..self.start + HEADER_SIZE];
        let header = Header::from_bytes(head.try_into().expect("256 bytes"));
        if let Err(err) = self.limits.check_header(&header) {
            return Err(self.poison(err));
        }
        let reservation = match &self.budget {
            None => None,
            Some(budget) if !budget.can_ever_fit(u64::from(size)) => {
                let budget = budget.total();
                return Err(self.poison(FrameError::OverBudget { size, budget }));
            }
            Some(budget) => match budget.try_reserve(u64::from(size)) {
                Some(reservation) => Some(reservation),
                None => return Ok(Progress::NeedBudget(u64::from(size))),
            },
        };
        self.begin_large(size_bytes, reservation);
        Ok(Progress::NeedBytes)
    }

    /// Hands over the reservation a [`Progress::NeedBudget`] asked for, and
    /// starts receiving that frame into its own storage.
    ///
    /// # Panics
    /// If the decoder is not waiting for exactly this reservation.
    pub fn grant(&mut self, reservation: Reservation) {
        let pending = &self.buf.as_slice()[self.start..];
        let size = size_field(pending).expect("a header is buffered");
        assert!(
            self.large.is_none() && u64::from(size) == reservation.bytes(),
            "Decoder::grant without a matching NeedBudget"
        );
        self.begin_large(size as usize, Some(reservation));
    }

    /// The inbound budget, for a reader that must wait on it.
    pub fn budget(&self) -> Option<&InboundBudget> {
        self.budget.as_ref()
    }

    fn begin_large(&mut self, size: usize, reservation: Option<Reservation>) {
        let mut frame = FrameMut::with_capacity(size);
        let pending = &self.buf.as_slice()[self.start..];
        let take = pending.len().min(size);
        frame.extend_from_slice(&pending[..take]);
        self.advance(take);
        self.large = Some(Large {
            frame,
            _reservation: reservation,
        });
    }

    /// Where the next read puts its bytes: the rest of a large frame, or
    /// the read buffer's spare room (made as large as it gets by moving
    /// the undecoded bytes to the front first).
    pub fn read_space(&mut self) -> &mut ByteBuf {
        if let Some(large) = &mut self.large {
            return large.frame.buf_mut();
        }
        if self.start > 0 {
            self.buf.consume(self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// The error a reader reports when its stream ended: [`Error::Closed`]
    /// between frames, an `UnexpectedEof` I/O error inside one.
    pub fn end_of_stream(&self) -> Error {
        if self.is_between_frames() {
            Error::Closed
        } else {
            Error::Io(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Forgets everything buffered (after a violation, while the rest of
    /// the stream is discarded) and returns the read buffer to fill.
    pub fn discard_space(&mut self) -> &mut ByteBuf {
        self.large = None;
        self.start = 0;
        self.buf.clear();
        &mut self.buf
    }

    /// Feeds `input` and takes out at most one frame: consumes bytes from
    /// the front of `input` until a frame is complete or `input` is
    /// exhausted, and never past the end of that frame. For decoders without an inbound budget (tests, fuzzing,
    /// simple clients); with one, a frame waiting for budget returns
    /// `Ok(None)` without consuming more.
    ///
    /// Returns `Err` for a frame that breaks a rule; the bytes of that
    /// frame are not consumed any further, and the decoder is poisoned.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.next_frame()? {
                Progress::Frame(frame) => return Ok(Some(frame)),
                Progress::NeedBudget(_) => return Ok(None),
                Progress::NeedBytes if input.is_empty() => return Ok(None),
                Progress::NeedBytes => {
                    // Take only what the frame in progress still misses, so
                    // the bytes after it stay in `input`.
                    let n = self.missing().min(input.len());
                    self.read_space().extend_from_slice(&input[..n]);
                    *input = &input[n..];
                }
            }
        }
    }

    /// Bytes the frame in progress still misses before it can be decoded
    /// (its header's, while that is incomplete).
    fn missing(&self) -> usize {
        if let Some(large) = &self.large {
            return large.frame.capacity() - large.frame.len();
        }
        let pending = &self.buf.as_slice()[self.start..];
        match size_field(pending).filter(|_| pending.len() >= HEADER_SIZE) {
            Some(size) => (size as usize).saturating_sub(pending.len()),
            None => HEADER_SIZE - pending.len(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            // Everything decoded: reuse the buffer from its start.
            self.buf.clear();
            self.start = 0;
        }
    }

    fn poison(&mut self, err: FrameError) -> FrameError {
        self.poisoned = Some(err);
        err
    }

    fn finish(&mut self, frame: FrameMut) -> Result<Frame, FrameError> {
        if let Err(err) = frame.verify_body() {
            return Err(self.poison(err));
        }
        Ok(frame.freeze())
    }
}

/// A byte-stream transport's reading half: a [`Decoder`] fed by a
/// [`ByteSource`]. Implements [`FrameReader`].
#[derive(Debug)]
pub struct StreamReader<S> {
    source: S,
    decoder: Decoder,
}

impl<S: ByteSource> StreamReader<S> {
    /// Reads frames from `source` through `decoder`.
    pub fn new(source: S, decoder: Decoder) -> Self {
        Self { source, decoder }
    }

    /// The byte source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The byte source, mutable.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The decoder, mutable (to change its limits between frames, see
    /// [`Decoder::set_limits`]).
    pub fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Reads more bytes into `space`, retrying on `Interrupted`.
    async fn fill(source: &mut S, space: &mut ByteBuf) -> io::Result<usize> {
        loop {
            match source.read_into(space).await {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl<S: ByteSource> FrameReader for StreamReader<S> {
    /// # Cancel safety
    /// As cancel safe as the source's [`ByteSource::read_into`]: the
    /// decoder keeps every byte received, so with a cancel-safe source
    /// nothing is lost or repeated. A source that is not cancel safe
    /// (plain TCP) must not be dropped mid-read while the connection lives.
    async fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            match self.decoder.next_frame()? {
                Progress::Frame(frame) => return Ok(frame),
                Progress::NeedBudget(bytes) => {
                    let budget = self
                        .decoder
                        .budget()
                        .expect("NeedBudget comes with a budget");
                    let reservation = budget.clone().reserve(bytes).await;
                    self.decoder.grant(reservation);
                }
                Progress::NeedBytes => {
                    let space = self.decoder.read_space();
                    if space.capacity() == 0 {
                        // A non-cancel-safe read was dropped mid-flight and
                        // took the buffer with it (see ByteSource).
                        return Err(Error::Io(io::Error::other(
                            "a read was cancelled mid-flight; buffered bytes were lost",
                        )));
                    }
                    if Self::fill(&mut self.source, space).await? == 0 {
                        return Err(self.decoder.end_of_stream());
                    }
                }
            }
        }
    }

    async fn discard(&mut self) -> io::Result<usize> {
        let space = self.decoder.discard_space();
        let n = Self::fill(&mut self.source, space).await?;
        space.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_message_size_bytes: 1 << 20,
        require_sealed: false,
    };

    fn sealed(body: &[u8]) -> Frame {
        let mut f = FrameMut::with_body(Command::Application(16), body);
        f.seal();
        f.freeze()
    }

    fn decode_all(dec: &mut Decoder, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while !input.is_empty() {
                if let Some(f) = dec.decode(&mut input).unwrap() {
                    out.push(f);
                }
            }
        }
        while let Some(f) = dec.decode(&mut &[][..]).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn decodes_frames_split_at_every_offset() {
        let a = sealed(b"first");
        let b = sealed(&[7; 1000]);
        let mut wire = a.as_bytes().to_vec();
        wire.extend_from_slice(b.as_bytes());
        for buffer in [512, 1024, 4096] {
            for split in 0..=wire.len() {
                let mut dec = Decoder::with_buffer(LIMITS, buffer, None);
                let out = decode_all(&mut dec, &[&wire[..split], &wire[split..]]);
                assert_eq!(out.len(), 2, "split at {split}, buffer {buffer}");
                assert_eq!(out[0].as_bytes(), a.as_bytes());
                assert_eq!(out[1].as_bytes(), b.as_bytes());
                assert!(dec.is_between_frames());
            }
        }
    }

    #[test]
    fn poisoned_after_bad_frame() {
        let mut bad = FrameMut::with_body(Command::Application(16), b"x");
        bad.seal();
        bad.body_mut()[0] = b'y';
        let good = sealed(b"after");
        let mut wire = bad.as_bytes().to_vec();
        wire.extend_from_slice(good.as_bytes());
        let mut dec = Decoder::new(LIMITS);
        let mut input = &wire[..];
        assert_eq!(dec.decode(&mut input), Err(FrameError::BodyChecksum));
        assert_eq!(dec.decode(&mut input), Err(FrameError::BodyChecksum));
        assert!(!dec.is_between_frames());
    }

    #[test]
    fn require_sealed_refuses_unsealed() {
        let f = FrameMut::with_body(Command::Application(16), b"x").freeze();
        let mut dec = Decoder::new(DecodeLimits {
            require_sealed: true,
            ..LIMITS
        });
        let mut input = f.as_bytes();
        assert_eq!(dec.decode(&mut input), Err(FrameError::NotSealed));
    }

    #[test]
    fn a_frame_larger_than_the_buffer_is_read_into_its_own_storage() {
        let f = sealed(&[9; 5000]);
        let mut dec = Decoder::with_buffer(LIMITS, 1024, None);
        let mut input = &f.as_bytes()[..300];
        assert_eq!(dec.decode(&mut input), Ok(None));
        // The read space is now the frame itself, sized exactly.
        let space = dec.read_space();
        assert_eq!(space.len(), 300);
        assert_eq!(space.capacity(), 5256);
        space.extend_from_slice(&f.as_bytes()[300..]);
        let Progress::Frame(out) = dec.next_frame().unwrap() else {
            panic!("frame expected")
        };
        assert_eq!(out.as_bytes(), f.as_bytes());
        assert!(dec.is_between_frames());
    }

    #[test]
    fn an_oversize_header_is_refused_before_anything_is_allocated() {
        let mut frame = FrameMut::with_body(Command::Application(16), b"");
        frame.header_mut().set_size(64 << 20);
        let mut dec = Decoder::new(LIMITS);
        let mut input = frame.as_bytes();
        assert_eq!(
            dec.decode(&mut input),
            Err(FrameError::TooLarge {
                size: 64 << 20,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn large_frames_wait_for_the_budget_and_give_it_back() {
        let budget = InboundBudget::new(6000);
        let held = budget.try_reserve(2000).unwrap();
        let f = sealed(&[1; 4900]);
        let mut dec = Decoder::with_buffer(LIMITS, 1024, Some(budget.clone()));
        dec.read_space().extend_from_slice(&f.as_bytes()[..1024]);
        assert!(matches!(dec.next_frame(), Ok(Progress::NeedBudget(5156))));
        drop(held);
        let reservation = budget.try_reserve(5156).unwrap();
        dec.grant(reservation);
        assert_eq!(budget.available(), 6000 - 5156);
        dec.read_space().extend_from_slice(&f.as_bytes()[1024..]);
        let Progress::Frame(out) = dec.next_frame().unwrap() else {
            panic!("frame expected")
        };
        assert_eq!(out, f);
        assert_eq!(budget.available(), 6000, "given back once complete");
    }

    #[test]
    fn a_frame_over_the_whole_budget_is_refused() {
        let f = sealed(&[1; 4900]);
        let mut dec = Decoder::with_buffer(LIMITS, 1024, Some(InboundBudget::new(4000)));
        dec.read_space().extend_from_slice(&f.as_bytes()[..1024]);
        assert_eq!(
            dec.next_frame().unwrap_err(),
            FrameError::OverBudget {
                size: 5156,
                budget: 4000
            }
        );
    }

    #[test]
    fn end_of_stream_inside_a_frame_is_unexpected() {
        let f = sealed(b"abc");
        let mut dec = Decoder::new(LIMITS);
        assert!(matches!(dec.end_of_stream(), Error::Closed));
        let mut input = &f.as_bytes()[..100];
        assert_eq!(dec.decode(&mut input), Ok(None));
        assert!(
            matches!(dec.end_of_stream(), Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
    }

    #[test]
    fn messages_are_checked_whole() {
        let f = sealed(b"message");
        assert_eq!(LIMITS.check_message(f.as_bytes()).unwrap(), f);
        let mut longer = f.as_bytes().to_vec();
        longer.push(0);
        assert_eq!(
            LIMITS.check_message(&longer).unwrap_err(),
            FrameError::MessageLength {
                len: longer.len() as u64,
                size: f.header().size()
            }
        );
        assert_eq!(
            LIMITS.check_message(&f.as_bytes()[..100]).unwrap_err(),
            FrameError::MessageLength {
                len: 100,
                size: f.header().size()
            }
        );
    }
}
