//! Framing: turning a byte stream into validated frames.
//!
//! Two tools, both applying every receiver rule of spec §1 before a frame is
//! handed out (size range, protocol, command, checksums, sealing policy):
//!
//! - [`Decoder`], resumable: feed it whatever bytes arrived, take complete
//!   frames out. It owns the partial frame, so a transport whose reads may be
//!   cancelled loses nothing by being polled again later.
//! - [`read_frame`], one frame from an [`AsyncRead`], for simple clients.
//!
//! Neither does any buffering policy beyond the one frame in flight.

use compio::{
    BufResult,
    buf::{IntoInner, IoBuf},
    io::{AsyncRead, AsyncReadExt},
};

use crate::{
    buf::{Frame, FrameMut},
    error::Error,
    header::{FrameError, Header},
    limits::HEADER_SIZE,
};

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
}

/// A resumable frame decoder.
///
/// After it returns an error it is poisoned: every later call returns the
/// same error, so nothing after a bad frame can ever be decoded.
#[derive(Debug)]
pub struct Decoder {
    limits: DecodeLimits,
    header: Header,
    header_filled: usize,
    body: Option<FrameMut>,
    poisoned: Option<FrameError>,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            limits,
            header: Header::zeroed(),
            header_filled: 0,
            body: None,
            poisoned: None,
        }
    }

    /// Whether the decoder sits exactly between frames (no partial frame).
    pub fn is_between_frames(&self) -> bool {
        self.header_filled == 0 && self.body.is_none() && self.poisoned.is_none()
    }

    /// Consumes bytes from the front of `input` (advancing it) until one
    /// frame is complete or `input` is exhausted.
    ///
    /// Returns `Ok(Some(frame))` for a complete, validated frame; `Ok(None)`
    /// when more input is needed; `Err` for a frame that breaks a rule, in
    /// which case the bytes of that frame are not consumed any further.
    ///
    /// # Panics
    /// Never in practice: the internal states are checked invariants.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        if self.body.is_none() {
            let want = HEADER_SIZE - self.header_filled;
            let take = want.min(input.len());
            self.header.as_bytes_mut()[self.header_filled..self.header_filled + take]
                .copy_from_slice(&input[..take]);
            self.header_filled += take;
            *input = &input[take..];
            if self.header_filled < HEADER_SIZE {
                return Ok(None);
            }
            self.start_body()?;
        }
        let body = self.body.as_mut().expect("body state after header");
        let want = body.capacity() - body.len();
        let take = want.min(input.len());
        body.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if body.len() < body.capacity() {
            return Ok(None);
        }
        let frame = self.body.take().expect("body present");
        self.finish(frame).map(Some)
    }

    /// Bytes still missing from the frame in progress, once its header is
    /// complete. Lets a stream transport read a large body straight into the
    /// frame buffer with [`Decoder::take_partial`] instead of copying it.
    pub fn body_remaining(&self) -> Option<usize> {
        self.body.as_ref().map(|b| b.capacity() - b.len())
    }

    /// Takes the partial frame (header complete, body incomplete) out of the
    /// decoder. The caller fills it to its capacity and passes it to
    /// [`Decoder::complete`].
    pub fn take_partial(&mut self) -> Option<FrameMut> {
        self.body.take()
    }

    /// Finishes a frame taken with [`Decoder::take_partial`] and filled to
    /// capacity: verifies the body checksum and freezes it.
    ///
    /// # Panics
    /// If `frame` is not filled to its capacity.
    pub fn complete(&mut self, frame: FrameMut) -> Result<Frame, FrameError> {
        assert_eq!(
            frame.len(),
            frame.capacity(),
            "Decoder::complete on an unfilled frame"
        );
        self.finish(frame)
    }

    fn start_body(&mut self) -> Result<(), FrameError> {
        if let Err(err) = self.limits.check_header(&self.header) {
            self.poisoned = Some(err);
            return Err(err);
        }
        let mut body = FrameMut::with_capacity(self.header.size() as usize);
        body.extend_from_slice(self.header.as_bytes());
        self.header_filled = 0;
        self.body = Some(body);
        Ok(())
    }

    fn finish(&mut self, frame: FrameMut) -> Result<Frame, FrameError> {
        if let Err(err) = frame.verify_body() {
            self.poisoned = Some(err);
            return Err(err);
        }
        Ok(frame.freeze())
    }
}

/// Reads exactly one frame from `reader`, enforcing `limits`.
///
/// Returns [`Error::Closed`] when the stream ends cleanly before the first
/// byte of a frame, and an `UnexpectedEof` I/O error when it ends inside one.
///
/// # Cancel safety
/// Not cancel safe: dropping the future mid-frame loses the bytes read so
/// far. Use a [`Decoder`] where reads may be cancelled.
pub async fn read_frame<R: AsyncRead>(
    reader: &mut R,
    limits: DecodeLimits,
) -> Result<Frame, Error> {
    let mut header = FrameMut::with_capacity(HEADER_SIZE);
    loop {
        let filled = header.len();
        if filled == HEADER_SIZE {
            break;
        }
        let BufResult(res, slice) = reader.read(header.slice(filled..)).await;
        header = slice.into_inner();
        match res {
            Ok(0) if filled == 0 => return Err(Error::Closed),
            Ok(0) => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    limits.check_header(header.header())?;
    let size = header.header().size() as usize;
    let mut frame = FrameMut::with_capacity(size);
    frame.extend_from_slice(header.as_bytes());
    if size > HEADER_SIZE {
        let BufResult(res, slice) = reader.read_exact(frame.slice(HEADER_SIZE..)).await;
        frame = slice.into_inner();
        res?;
    }
    frame.verify_body()?;
    Ok(frame.freeze())
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

    #[test]
    fn decodes_frames_split_at_every_offset() {
        let a = sealed(b"first");
        let b = sealed(&[7; 1000]);
        let mut wire = a.as_bytes().to_vec();
        wire.extend_from_slice(b.as_bytes());
        for split in 0..=wire.len() {
            let mut dec = Decoder::new(LIMITS);
            let mut out = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                let mut input = chunk;
                while !input.is_empty() {
                    if let Some(f) = dec.decode(&mut input).unwrap() {
                        out.push(f);
                    }
                }
            }
            assert_eq!(out.len(), 2, "split at {split}");
            assert_eq!(out[0].as_bytes(), a.as_bytes());
            assert_eq!(out[1].as_bytes(), b.as_bytes());
            assert!(dec.is_between_frames());
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
    fn partial_body_can_be_filled_directly() {
        let f = sealed(&[9; 5000]);
        let mut dec = Decoder::new(LIMITS);
        let mut input = &f.as_bytes()[..300];
        assert_eq!(dec.decode(&mut input), Ok(None));
        assert_eq!(dec.body_remaining(), Some(5256 - 300));
        let mut partial = dec.take_partial().unwrap();
        partial.extend_from_slice(&f.as_bytes()[300..]);
        let out = dec.complete(partial).unwrap();
        assert_eq!(out.as_bytes(), f.as_bytes());
    }
}
