//! Byte and frame buffers, all on pooled, 16-aligned storage (`pool`):
//!
//! - [`ByteBuf`]: owned bytes of fixed capacity, what a transport reads into
//!   (a connection's read buffer, the body of a frame too large for it);
//! - [`FrameMut`]: a frame being built or received, writable;
//! - [`Frame`]: an immutable frame, cheap to clone (a reference count).
//!
//! Every buffer starts on a 16-byte boundary (spec §1), so a header is
//! viewed in place as a [`Header`]. All three are compio I/O buffers: a
//! `Frame` goes to the socket as it is, and a broadcast to many connections
//! clones the handle, not the bytes. `FrameMut::freeze` and
//! `Frame::into_mut` (when unshared) move the same storage: no copy, no
//! allocation. This module does no I/O.

use std::{
    mem::MaybeUninit,
    ptr::NonNull,
    sync::atomic::{Ordering, fence},
};

use compio::buf::{IoBuf, IoBufMut, SetLen};

use crate::{
    header::{self, Command, FrameError, Header},
    limits::HEADER_SIZE,
    pool::{self, Slot},
};

/// Owned bytes of a fixed capacity on pooled, 16-aligned storage.
///
/// Bytes `0..len` are the content; `len..capacity` is spare room that reads
/// fill ([`IoBufMut`], or [`ByteBuf::spare_mut`] then [`ByteBuf::advance`]).
/// The capacity is exactly what was asked for, even when the storage behind
/// it is a larger size class, so a read into the spare room never takes
/// more bytes than the caller wants.
pub struct ByteBuf {
    slot: NonNull<Slot>,
    /// The capacity callers see; at most the slot's.
    limit: usize,
}

// SAFETY: a `ByteBuf` is the only handle to its slot (like a `Box<[u8]>`).
unsafe impl Send for ByteBuf {}
// SAFETY: `&ByteBuf` only reads.
unsafe impl Sync for ByteBuf {}

impl ByteBuf {
    /// An empty buffer that can hold `capacity` bytes (rounded up to its
    /// size class).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slot: pool::acquire(capacity),
            limit: capacity,
        }
    }

    fn slot(&self) -> &Slot {
        // SAFETY: the slot lives as long as this handle.
        unsafe { self.slot.as_ref() }
    }

    fn slot_mut(&mut self) -> &mut Slot {
        // SAFETY: as above, and this handle is the only one.
        unsafe { self.slot.as_mut() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: a live slot.
        unsafe { pool::data(self.slot) }
    }

    /// Bytes of content.
    #[inline]
    pub fn len(&self) -> usize {
        self.slot().len
    }

    /// Whether there is no content.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes this buffer can hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.limit
    }

    /// Spare room after the content.
    #[inline]
    pub fn spare(&self) -> usize {
        self.capacity() - self.len()
    }

    /// The content.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: bytes `0..len` are initialised (slot invariant).
        unsafe { std::slice::from_raw_parts(self.data(), self.len()) }
    }

    /// The content, mutable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len();
        // SAFETY: as in `as_slice`, and we hold the only handle.
        unsafe { std::slice::from_raw_parts_mut(self.data(), len) }
    }

    /// The spare room as initialised bytes, for readers that fill a
    /// `&mut [u8]`. The first call on a buffer zeroes what was never
    /// written; pooled buffers keep that state, so this is paid once.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let cap = self.limit;
        let (len, init) = {
            let s = self.slot();
            (s.len, s.init)
        };
        let data = self.data();
        if init < cap {
            // SAFETY: `init..cap` lies inside the allocation (`limit` is at
            // most the slot's capacity).
            unsafe { std::ptr::write_bytes(data.add(init), 0, cap - init) };
            self.slot_mut().init = cap;
        }
        // SAFETY: `len..cap` is initialised now and inside the allocation;
        // we hold the only handle.
        unsafe { std::slice::from_raw_parts_mut(data.add(len), cap - len) }
    }

    /// Marks `n` more bytes of the spare room as content.
    ///
    /// # Panics
    /// If `n` exceeds the spare room, or those bytes were never written
    /// (only bytes handed out by [`ByteBuf::spare_mut`] or written through
    /// [`IoBufMut`] count).
    pub fn advance(&mut self, n: usize) {
        let limit = self.limit;
        let slot = self.slot_mut();
        let len = slot.len + n;
        assert!(len <= limit, "ByteBuf::advance past capacity");
        assert!(len <= slot.init, "ByteBuf::advance past initialised bytes");
        slot.len = len;
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    /// If they do not fit in the spare room.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let len = self.len();
        assert!(bytes.len() <= self.spare(), "ByteBuf::extend past capacity");
        // SAFETY: the destination is inside the allocation, past the
        // content, and cannot overlap `bytes` (we hold the only handle).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data().add(len), bytes.len()) };
        let slot = self.slot_mut();
        slot.len = len + bytes.len();
        slot.init = slot.init.max(slot.len);
    }

    /// Drops the first `n` bytes of content, moving the rest to the front.
    ///
    /// # Panics
    /// If `n` exceeds the content.
    pub fn consume(&mut self, n: usize) {
        let len = self.len();
        assert!(n <= len, "ByteBuf::consume past the content");
        if n == 0 {
            return;
        }
        let data = self.data();
        // SAFETY: both ranges lie inside the initialised content; `copy`
        // handles the overlap.
        unsafe { std::ptr::copy(data.add(n), data, len - n) };
        self.slot_mut().len = len - n;
    }

    /// Empties the buffer (the capacity stays).
    pub fn clear(&mut self) {
        self.slot_mut().len = 0;
    }
}

impl Drop for ByteBuf {
    fn drop(&mut self) {
        // SAFETY: the only handle is going away.
        unsafe { pool::release(self.slot) };
    }
}

impl std::fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteBuf")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl IoBuf for ByteBuf {
    fn as_init(&self) -> &[u8] {
        self.as_slice()
    }
}

impl SetLen for ByteBuf {
    unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        let slot = self.slot_mut();
        slot.len = len;
        // The caller guarantees `..len` is initialised (compio's contract).
        slot.init = slot.init.max(len);
    }
}

impl IoBufMut for ByteBuf {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        let cap = self.capacity();
        // SAFETY: the allocation holds `cap` bytes; `MaybeUninit` makes no
        // claim about them.
        unsafe { std::slice::from_raw_parts_mut(self.data().cast(), cap) }
    }
}

/// A frame being built or received: header plus body, writable.
///
/// Freeze it with [`FrameMut::freeze`] to send it.
pub struct FrameMut {
    buf: ByteBuf,
}

impl FrameMut {
    /// A frame of `command` with a zeroed body of `body_len` bytes.
    ///
    /// # Panics
    /// If the frame would be larger than `u32::MAX` bytes.
    pub fn new(command: Command, body_len: usize) -> Self {
        let header = Header::new(command, body_len);
        let mut frame = Self::with_capacity(HEADER_SIZE + body_len);
        frame.buf.extend_from_slice(header.as_bytes());
        let body = &mut frame.buf.spare_mut()[..body_len];
        body.fill(0);
        frame.buf.advance(body_len);
        frame
    }

    /// A frame of `command` whose body is a copy of `body`.
    ///
    /// # Panics
    /// If the frame would be larger than `u32::MAX` bytes.
    pub fn with_body(command: Command, body: &[u8]) -> Self {
        let header = Header::new(command, body.len());
        let mut frame = Self::with_capacity(HEADER_SIZE + body.len());
        frame.buf.extend_from_slice(header.as_bytes());
        frame.buf.extend_from_slice(body);
        frame
    }

    /// An empty buffer (length 0) that can receive `size` bytes of a frame.
    /// Used by receivers, which fill it through [`IoBufMut`] or
    /// [`FrameMut::extend_from_slice`].
    pub fn with_capacity(size: usize) -> Self {
        Self {
            buf: ByteBuf::with_capacity(size.max(HEADER_SIZE)),
        }
    }

    /// Appends received bytes.
    ///
    /// # Panics
    /// If `bytes` does not fit in the capacity.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received or written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes this buffer can hold (at least what was asked for).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The storage, for a reader filling a frame in place.
    pub fn buf_mut(&mut self) -> &mut ByteBuf {
        &mut self.buf
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
        reason = "pooled buffers are 16-aligned (pool::Slot)"
    )]
    pub fn header_mut(&mut self) -> &mut Header {
        let bytes = self.buf.as_mut_slice();
        assert!(bytes.len() >= HEADER_SIZE, "frame shorter than its header");
        // SAFETY: the buffer starts on a 16-byte boundary (pool), holds at
        // least 256 initialised bytes, and every bit pattern is a valid
        // `Header` (it is made of byte arrays only).
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

    /// Re-seals a frame whose body is unchanged since it was sealed (or
    /// verified on receipt): only the header checksum is recomputed, which
    /// skips hashing the body. An unsealed frame is sealed whole.
    pub fn reseal_header(&mut self) {
        if !self.header().is_sealed() {
            self.seal();
            return;
        }
        let header = self.header_mut();
        let checksum = header.compute_checksum();
        header.set_checksum(checksum);
    }

    /// Verifies the body checksum of a sealed frame (the header checksum is
    /// part of [`Header::validate`]).
    pub fn verify_body(&self) -> Result<(), FrameError> {
        header::verify_body(self.header(), self.body())
    }

    /// Makes the frame immutable and cheaply clonable. No bytes are copied
    /// and nothing is allocated.
    ///
    /// # Panics
    /// If the buffer is not exactly as long as its header's `size` says: a
    /// half-built frame must never reach a socket.
    pub fn freeze(self) -> Frame {
        assert!(
            self.len() >= HEADER_SIZE && self.header().size() as usize == self.len(),
            "freezing a frame whose length {} differs from its size field",
            self.len()
        );
        let slot = self.buf.slot;
        std::mem::forget(self);
        // The reference count is 1: this handle takes over the unique one.
        Frame { slot }
    }
}

impl std::fmt::Debug for FrameMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FrameMut");
        d.field("len", &self.len())
            .field("capacity", &self.capacity());
        if self.len() >= HEADER_SIZE {
            d.field("header", self.header());
        }
        d.finish()
    }
}

#[allow(
    clippy::cast_ptr_alignment,
    reason = "pooled buffers are 16-aligned (pool::Slot)"
)]
fn header_of(bytes: &[u8]) -> &Header {
    assert!(bytes.len() >= HEADER_SIZE, "frame shorter than its header");
    // SAFETY: every buffer starts on a 16-byte boundary (pool), holds at
    // least 256 initialised bytes, and any bytes are a valid `Header`.
    unsafe { &*bytes.as_ptr().cast::<Header>() }
}

impl IoBuf for FrameMut {
    fn as_init(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

impl SetLen for FrameMut {
    unsafe fn set_len(&mut self, len: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.buf.set_len(len) };
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
pub struct Frame {
    slot: NonNull<Slot>,
}

// SAFETY: the bytes are immutable while shared and the count is atomic, as
// for `Arc<[u8]>`.
unsafe impl Send for Frame {}
// SAFETY: as above.
unsafe impl Sync for Frame {}

/// Past this many handles the count would risk overflow: abort, as `Arc`
/// does.
const MAX_REFS: usize = isize::MAX as usize;

impl Frame {
    fn slot(&self) -> &Slot {
        // SAFETY: the slot lives while any handle does.
        unsafe { self.slot.as_ref() }
    }

    /// The header, viewed in place.
    #[inline]
    pub fn header(&self) -> &Header {
        header_of(self.as_bytes())
    }

    /// The body.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.as_bytes()[HEADER_SIZE..]
    }

    /// The whole frame as wire bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: a frozen slot's `len` bytes are initialised and never
        // written again while shared.
        unsafe { std::slice::from_raw_parts(pool::data(self.slot), self.slot().len) }
    }

    /// Total length in bytes (the header's `size`).
    #[inline]
    #[allow(clippy::len_without_is_empty, reason = "a frame is never empty")]
    pub fn len(&self) -> usize {
        self.slot().len
    }

    /// How many handles share this frame's storage (for diagnostics: a
    /// broadcast to `n` connections shows `n + 1` while queued).
    pub fn ref_count(&self) -> usize {
        self.slot().refs.load(Ordering::Acquire)
    }

    /// Whether two handles share one storage.
    pub fn ptr_eq(a: &Frame, b: &Frame) -> bool {
        a.slot == b.slot
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
        if self.slot().refs.load(Ordering::Acquire) == 1 {
            let slot = self.slot;
            let limit = self.len();
            std::mem::forget(self);
            FrameMut {
                buf: ByteBuf { slot, limit },
            }
        } else {
            self.to_mut()
        }
    }
}

impl Clone for Frame {
    fn clone(&self) -> Self {
        let old = self.slot().refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
        Self { slot: self.slot }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if self.slot().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other handle's use of the bytes happens before the slot
        // is reused (the same pairing `Arc` uses).
        fence(Ordering::Acquire);
        // SAFETY: this was the last handle.
        unsafe { pool::release(self.slot) };
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
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::FRAME_ALIGN;

    #[test]
    fn buffers_are_aligned_and_freeze_without_copy() {
        for body in [0_usize, 1, 15, 16, 17, 4096, 70_000] {
            let mut frame = FrameMut::new(Command::Application(20), body);
            assert_eq!(frame.as_bytes().as_ptr() as usize % FRAME_ALIGN, 0);
            assert_eq!(frame.len(), HEADER_SIZE + body);
            assert!(frame.body().iter().all(|b| *b == 0));
            frame.body_mut().fill(0xAB);
            let before = frame.as_bytes().as_ptr();
            let frozen = frame.freeze();
            assert_eq!(frozen.as_bytes().as_ptr(), before, "freeze must not copy");
            let clone = frozen.clone();
            assert!(Frame::ptr_eq(&frozen, &clone));
            assert_eq!(frozen.ref_count(), 2);
            assert!(clone.body().iter().all(|b| *b == 0xAB));
            drop(clone);
            let back = frozen.into_mut();
            assert_eq!(
                back.as_bytes().as_ptr(),
                before,
                "unshared into_mut must not copy"
            );
        }
    }

    #[test]
    fn a_shared_frame_is_copied_by_into_mut_and_the_original_stays() {
        let frame = FrameMut::with_body(Command::Application(16), b"shared").freeze();
        let other = frame.clone();
        let mut copy = frame.into_mut();
        copy.body_mut()[0] = b'S';
        assert_eq!(other.body(), b"shared");
        assert_eq!(copy.body(), b"Shared");
        assert_eq!(other.ref_count(), 1);
    }

    #[test]
    fn sealed_frame_verifies_and_detects_body_change() {
        let mut frame = FrameMut::with_body(Command::Application(16), b"payload");
        frame.seal();
        assert_eq!(frame.header().validate(1 << 20), Ok(()));
        assert_eq!(frame.verify_body(), Ok(()));
        frame.header_mut().set_request(7);
        frame.reseal_header();
        assert_eq!(frame.header().validate(1 << 20), Ok(()));
        assert_eq!(frame.verify_body(), Ok(()));
        frame.body_mut()[0] ^= 1;
        assert_eq!(frame.verify_body(), Err(FrameError::BodyChecksum));
    }

    #[test]
    fn byte_buf_reads_consumes_and_keeps_initialised_state() {
        let mut buf = ByteBuf::with_capacity(1000);
        assert_eq!(
            buf.capacity(),
            1000,
            "the capacity asked for, not the class"
        );
        let spare = buf.spare_mut();
        assert_eq!(spare.len(), 1000);
        spare[..5].copy_from_slice(b"hello");
        buf.advance(5);
        buf.extend_from_slice(b" world");
        assert_eq!(buf.as_slice(), b"hello world");
        buf.consume(6);
        assert_eq!(buf.as_slice(), b"world");
        buf.clear();
        assert!(buf.is_empty());
        assert_eq!(buf.spare(), 1000);
    }

    #[test]
    #[should_panic(expected = "past initialised bytes")]
    fn advancing_over_unwritten_bytes_panics() {
        let mut buf = ByteBuf::with_capacity(LARGE);
        buf.advance(10);
    }

    const LARGE: usize = crate::pool::LARGEST_CLASS_BYTES * 2;

    #[test]
    fn frames_cross_threads_and_return_to_the_releasing_threads_pool() {
        let frame = FrameMut::with_body(Command::Application(16), &[3; 1000]).freeze();
        let copies: Vec<Frame> = (0..8).map(|_| frame.clone()).collect();
        let joined = std::thread::spawn(move || copies.iter().all(|f| f.body() == [3; 1000]))
            .join()
            .unwrap();
        assert!(joined);
        assert_eq!(frame.ref_count(), 1);
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
