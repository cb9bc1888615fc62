//! The bus stream of an established connection: frames back to back on one
//! bidirectional QUIC stream, both ways.

use std::{cell::Cell, future::poll_fn, io, mem::MaybeUninit, rc::Rc};

use bus_core::limits::{QUIC_COALESCE_MAX_FRAME_BYTES, QUIC_SEND_CHUNK_BYTES};
use bus_core::{
    ByteBuf, Frame, GoodbyeReason, StreamReader,
    transport::{ByteSource, FrameWriter, ReadSettings},
};
use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio_quic::{Connection, RecvStream, SendStream, VarInt};

use crate::{admission::AdmissionGuard, codes};

/// What both halves share: the connection, the code it closes with, and
/// what must live exactly as long as it. When the last half is dropped the
/// connection is closed with `CONNECTION_CLOSE` and that code.
struct Shared {
    connection: Connection,
    code: Cell<VarInt>,
    /// Holds the connection's admission slot (server side).
    _admission: Option<AdmissionGuard>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.connection.close(self.code.get(), b"");
    }
}

/// Splits an established connection's bus stream into frame halves. The
/// halves own the connection: dropping both closes it.
pub(crate) fn split(
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    reading: &ReadSettings,
    close_ack_timeout: std::time::Duration,
    admission: Option<AdmissionGuard>,
) -> (QuicReader, QuicWriter) {
    let shared = Rc::new(Shared {
        connection,
        code: Cell::new(codes::NO_ERROR),
        _admission: admission,
    });
    let source = QuicSource {
        recv,
        _shared: shared.clone(),
    };
    let writer = QuicWriter {
        send,
        chunks: Vec::new(),
        staging: BytesMut::new(),
        close_ack_timeout,
        shared,
    };
    (StreamReader::new(source, reading.decoder()), writer)
}

/// The receiving half: bus-core's stream reader on the bus stream.
pub type QuicReader = StreamReader<QuicSource>;

/// How QUIC gets more bytes: the stream's arrived chunks, at most the spare
/// room of the decoder's buffer at a time, copied into it.
pub struct QuicSource {
    recv: RecvStream,
    _shared: Rc<Shared>,
}

impl std::fmt::Debug for QuicSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicSource")
            .field("stream", &self.recv.id())
            .finish_non_exhaustive()
    }
}

impl ByteSource for QuicSource {
    /// Copies every chunk that has arrived, up to the spare room of `buf`,
    /// in one poll of the stream: one lock of the connection and one pass
    /// of quinn's flow-control bookkeeping per read instead of per chunk
    /// (a chunk is one STREAM frame, about one packet).
    ///
    /// # Cancel safety
    /// Cancel safe: bytes are taken from quinn and copied into `buf` in the
    /// same poll, only when some have arrived.
    async fn read_into(&mut self, buf: &mut ByteBuf) -> io::Result<usize> {
        let spare = buf.spare_mut();
        let len = spare.len();
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the slice is
        // initialised already; `poll_read_uninit` only writes initialised
        // bytes into it (chunk copies), so it stays initialised.
        let spare: &mut [MaybeUninit<u8>] =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast(), len) };
        let n = poll_fn(|cx| self.recv.poll_read_uninit(cx, spare))
            .await
            .map_err(io::Error::from)?;
        buf.advance(n);
        Ok(n)
    }
}

/// Lets quinn hold a frame without copying it: the chunk keeps the frame's
/// shared buffer alive until the peer has acknowledged it.
struct FrameBytes(Frame);

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The sending half: a batch is handed to quinn as one list of chunks.
///
/// quinn keeps every chunk until the peer acknowledges it, so a chunk must
/// own its bytes. Small frames (up to [`QUIC_COALESCE_MAX_FRAME_BYTES`])
/// are copied back to back into `staging`, and each run of them becomes one
/// chunk: a slice of a shared [`QUIC_SEND_CHUNK_BYTES`] buffer, which costs
/// no allocation until the buffer is full (then it is reclaimed if quinn
/// has released every slice, or replaced). The frames' own buffers go back
/// to the pool at once instead of waiting for the acknowledgement. Larger
/// frames are handed over without a copy, one small owner each.
pub struct QuicWriter {
    send: SendStream,
    /// Reused between batches.
    chunks: Vec<Bytes>,
    /// Where small frames are coalesced; what is staged is split off into
    /// `chunks` before anything else is pushed, so order is kept.
    staging: BytesMut,
    close_ack_timeout: std::time::Duration,
    shared: Rc<Shared>,
}

impl std::fmt::Debug for QuicWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicWriter")
            .field("stream", &self.send.id())
            .finish_non_exhaustive()
    }
}

impl QuicWriter {
    /// Turns what is staged into the next chunk.
    fn seal_staged(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push(self.staging.split().freeze());
        }
    }
}

impl FrameWriter for QuicWriter {
    /// Hands the batch to quinn as chunks (small frames coalesced, large
    /// ones by reference; see [`QuicWriter`]); quinn packs them into
    /// packets and sends without a flush.
    ///
    /// # Cancel safety
    /// Not cancel safe: see [`FrameWriter::write_batch`].
    async fn write_batch(&mut self, mut batch: Vec<Frame>) -> BufResult<(), Vec<Frame>> {
        for frame in batch.drain(..) {
            let bytes = frame.as_bytes();
            if bytes.len() <= QUIC_COALESCE_MAX_FRAME_BYTES {
                if self.staging.capacity() - self.staging.len() < bytes.len() {
                    self.seal_staged();
                    self.staging.reserve(QUIC_SEND_CHUNK_BYTES);
                }
                self.staging.extend_from_slice(bytes);
            } else {
                self.seal_staged();
                self.chunks.push(Bytes::from_owner(FrameBytes(frame)));
            }
        }
        self.seal_staged();
        let res = self.send.write_all_chunks(&mut self.chunks).await;
        self.chunks.clear();
        BufResult(res.map_err(io::Error::from), batch)
    }

    /// Finishes the stream, waits (at most `close_ack_timeout`) until the
    /// peer has acknowledged everything sent, and records the code the
    /// connection closes with when both halves are dropped: see
    /// [`codes::for_goodbye`].
    ///
    /// # Cancel safety
    /// Cancel safe: the finish is already queued; the connection still
    /// closes with the recorded code on drop.
    async fn close(&mut self, reason: Option<GoodbyeReason>) -> io::Result<()> {
        self.shared.code.set(codes::for_goodbye(reason));
        // Fails only if already finished or reset: nothing more to send.
        let _ = self.send.finish();
        match compio::runtime::time::timeout(self.close_ack_timeout, self.send.stopped()).await {
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(err)) => Err(io::Error::from(err)),
        }
    }
}
