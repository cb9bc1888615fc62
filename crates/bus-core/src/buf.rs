//! Frame buffers: [`FrameMut`] (owned, writable) freezes into [`Frame`]
//! (immutable, cheaply clonable).
//!
//! Both start on a 16-byte boundary (spec §1), so the header is viewed in
//! place as a [`Header`]. Both are compio I/O buffers: a `Frame` goes to the
//! socket as it is, and a broadcast to many connections clones the `Arc`, not
//! the bytes. This module does no I/O.

use std::{mem::MaybeUninit, sync::Arc};

use compio::buf::{IoBuf, IoBufMut, SetLen};

use crate::{
    header::{self, Command, FrameError, Header},
    limits::{FRAME_ALIGN, HEADER_SIZE},
};

/// The allocation unit: 16 bytes, 16-aligned, so a `Vec<Block>` gives an
/// aligned byte buffer without a custom allocator.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Block([u8; FRAME_ALIGN]);

const _: () = assert!(std::mem::size_of::<Block>() == FRAME_ALIGN);
const _: () = assert!(std::mem::align_of::<Block>() == FRAME_ALIGN);

/// An owned, 16-byte-aligned byte buffer of fixed capacity.
///
/// Invariant: bytes `0..len` are initialised; `len <= cap`; the allocation
/// holds at least `cap` bytes and never moves (it is never grown in place
/// once handed to the kernel).
struct Aligned {
    blocks: Vec<Block>,
    len: usize,
    cap: usize,
}

impl Aligned {
    fn with_capacity(cap: usize) -> Self {
        Self {
            blocks: Vec::with_capacity(cap.div_ceil(FRAME_ALIGN)),
            len: 0,
            cap,
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocation holds `cap >= len` bytes and the first `len`
        // are initialised (type invariant).
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), self.len) }
    }

    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the allocation holds at least `cap` bytes; `MaybeUninit`
        // makes no claim about their contents.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.blocks.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                self.cap,
            )
        }
    }

    /// Appends `src`; the caller guarantees it fits.
    fn extend(&mut self, src: &[u8]) {
        assert!(
            src.len() <= self.cap - self.len,
            "Aligned::extend past capacity"
        );
        let start = self.len;
        let dst = &mut self.as_uninit()[start..start + src.len()];
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(*s);
        }
        self.len += src.len();
    }
}

/// A frame being built or received: header plus body, writable.
///
/// Freeze it with [`FrameMut::freeze`] to send it.
pub struct FrameMut {
    buf: Aligned,
}

impl FrameMut {
    /// A frame of `command` with a zeroed body of `body_len` bytes.
    ///
    /// # Panics
    /// If the frame would be larger than `u32::MAX` bytes.
    pub fn new(command: Command, body_len: usize) -> Self {
        let header = Header::new(command, body_len);
        let mut frame = Self::with_capacity(HEADER_SIZE + body_len);
        frame.buf.extend(header.as_bytes());
        // Zero the body with one `fill` rather than copying a zero slice.
        let start = frame.buf.len;
        for byte in &mut frame.buf.as_uninit()[start..] {
            byte.write(0);
        }
        frame.buf.len = frame.buf.cap;
        frame
    }

    /// A frame of `command` whose body is a copy of `body`.
    ///
    /// # Panics
    /// If the frame would be larger than `u32::MAX` bytes.
    pub fn with_body(command: Command, body: &[u8]) -> Self {
        let header = Header::new(command, body.len());
        let mut frame = Self::with_capacity(HEADER_SIZE + body.len());
        frame.buf.extend(header.as_bytes());
        frame.buf.extend(body);
        frame
    }

    /// An empty buffer (length 0) that can receive `size` bytes of a frame.
    /// Used by receivers, which fill it through [`IoBufMut`] or
    /// [`FrameMut::extend_from_slice`].
    pub fn with_capacity(size: usize) -> Self {
        Self {
            buf: Aligned::with_capacity(size.max(HEADER_SIZE)),
        }
    }

    /// Appends received bytes.
    ///
    /// # Panics
    /// If `bytes` does not fit in the capacity.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// Bytes received or written so far.
    pub fn len(&self) -> usize {
        self.buf.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.len == 0
    }

    /// The bytes this buffer can hold.
    pub fn capacity(&self) -> usize {
        self.buf.cap
    }

    /// The header.
    ///
    /// # Panics
    /// If fewer than 256 bytes have been written.
    pub fn header(&self) -> &Header {
        header_of(self.buf.as_slice())
    }

    /// The header, mutable.
    ///
    /// # Panics
    /// If fewer than 256 bytes have been written.
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "Block makes every frame buffer 16-aligned"
    )]
    pub fn header_mut(&mut self) -> &mut Header {
        let bytes = self.buf.as_mut_slice();
        assert!(bytes.len() >= HEADER_SIZE, "frame shorter than its header");
        // SAFETY: the buffer starts on a 16-byte boundary (Block alignment),
        // holds at least 256 initialised bytes, and every bit pattern is a
        // valid `Header` (it is made of byte arrays only).
        unsafe { &mut *bytes.as_mut_ptr().cast::<Header>() }
    }

    /// The body (bytes 256..len).
    pub fn body(&self) -> &[u8] {
        self.buf.as_slice().get(HEADER_SIZE..).unwrap_or_default()
    }

    /// The body, mutable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        self.buf
            .as_mut_slice()
            .get_mut(HEADER_SIZE..)
            .unwrap_or_default()
    }

    /// Every byte written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Seals the frame: body checksum, then header checksum (spec §1).
    pub fn seal(&mut self) {
        let body_checksum = xxhash_rust::xxh3::xxh3_128(self.body());
        let header = self.header_mut();
        header.set_checksum_body(body_checksum);
        let checksum = header.compute_checksum();
        header.set_checksum(checksum);
    }

    /// Verifies the body checksum of a sealed frame (the header checksum is
    /// part of [`Header::validate`]).
    pub fn verify_body(&self) -> Result<(), FrameError> {
        header::verify_body(self.header(), self.body())
    }

    /// Makes the frame immutable and cheaply clonable. No bytes are copied.
    ///
    /// # Panics
    /// If the buffer is not exactly as long as its header's `size` says: a
    /// half-built frame must never reach a socket.
    pub fn freeze(self) -> Frame {
        assert!(
            self.buf.len >= HEADER_SIZE && self.header().size() as usize == self.buf.len,
            "freezing a frame whose length {} differs from its size field",
            self.buf.len
        );
        Frame {
            inner: Arc::new(self),
        }
    }
}

impl std::fmt::Debug for FrameMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FrameMut");
        d.field("len", &self.buf.len)
            .field("capacity", &self.buf.cap);
        if self.buf.len >= HEADER_SIZE {
            d.field("header", self.header());
        }
        d.finish()
    }
}

#[allow(
    clippy::cast_ptr_alignment,
    reason = "Block makes every frame buffer 16-aligned"
)]
fn header_of(bytes: &[u8]) -> &Header {
    assert!(bytes.len() >= HEADER_SIZE, "frame shorter than its header");
    // SAFETY: every frame buffer starts on a 16-byte boundary (Block
    // alignment), holds at least 256 initialised bytes, and any bytes are a
    // valid `Header`.
    unsafe { &*bytes.as_ptr().cast::<Header>() }
}

impl IoBuf for FrameMut {
    fn as_init(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

impl SetLen for FrameMut {
    unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.buf.cap);
        self.buf.len = len;
    }
}

impl IoBufMut for FrameMut {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        self.buf.as_uninit()
    }
}

/// An immutable frame. Cloning it bumps a reference count; the bytes are
/// shared, which is what lets one broadcast reach many connections with one
/// allocation.
///
/// A `Frame` always holds a complete frame: its length equals its header's
/// `size`.
#[derive(Clone)]
pub struct Frame {
    inner: Arc<FrameMut>,
}

impl Frame {
    /// The header, viewed in place.
    #[inline]
    pub fn header(&self) -> &Header {
        self.inner.header()
    }

    /// The body.
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.inner.body()
    }

    /// The whole frame as wire bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.inner.as_bytes()
    }

    /// Total length in bytes (the header's `size`).
    #[inline]
    #[allow(clippy::len_without_is_empty, reason = "a frame is never empty")]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// How many handles share this frame's allocation (for diagnostics: a
    /// broadcast to `n` connections shows `n + 1` while queued).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether two handles share one allocation.
    pub fn ptr_eq(a: &Frame, b: &Frame) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// A writable copy of this frame (copies the bytes).
    pub fn to_mut(&self) -> FrameMut {
        let mut copy = FrameMut::with_capacity(self.len());
        copy.extend_from_slice(self.as_bytes());
        copy
    }

    /// Takes the frame back as writable without copying when this is the
    /// only handle; otherwise copies.
    pub fn into_mut(self) -> FrameMut {
        Arc::try_unwrap(self.inner).unwrap_or_else(|shared| {
            let mut copy = FrameMut::with_capacity(shared.len());
            copy.extend_from_slice(shared.as_bytes());
            copy
        })
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("header", self.header())
            .finish_non_exhaustive()
    }
}

/// Frames are equal when their bytes are.
impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        Frame::ptr_eq(self, other) || self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Frame {}

impl IoBuf for Frame {
    fn as_init(&self) -> &[u8] {
        self.inner.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_freeze_without_copy() {
        for body in [0_usize, 1, 15, 16, 17, 4096] {
            let mut frame = FrameMut::new(Command::Application(20), body);
            assert_eq!(frame.as_bytes().as_ptr() as usize % FRAME_ALIGN, 0);
            assert_eq!(frame.len(), HEADER_SIZE + body);
            frame.body_mut().fill(0xAB);
            let before = frame.as_bytes().as_ptr();
            let frozen = frame.freeze();
            assert_eq!(frozen.as_bytes().as_ptr(), before, "freeze must not copy");
            let clone = frozen.clone();
            assert!(Frame::ptr_eq(&frozen, &clone));
            assert!(clone.body().iter().all(|b| *b == 0xAB));
        }
    }

    #[test]
    fn sealed_frame_verifies_and_detects_body_change() {
        let mut frame = FrameMut::with_body(Command::Application(16), b"payload");
        frame.seal();
        assert_eq!(frame.header().validate(1 << 20), Ok(()));
        assert_eq!(frame.verify_body(), Ok(()));
        frame.body_mut()[0] ^= 1;
        assert_eq!(frame.verify_body(), Err(FrameError::BodyChecksum));
    }

    #[test]
    #[should_panic(expected = "differs from its size field")]
    fn freezing_a_partial_frame_panics() {
        let mut frame = FrameMut::with_capacity(512);
        let header = Header::new(Command::Ping, 256);
        frame.extend_from_slice(header.as_bytes());
        let _ = frame.freeze();
    }
}
