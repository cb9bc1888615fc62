//! A connection's outbound queue, bounded in frames and in bytes (spec §6).
//!
//! The byte bound covers the frames waiting and the batch the writer has
//! taken but not finished writing, so memory held for one connection never
//! exceeds it. A broadcast frame counts against every queue it is in but is
//! stored once (queues hold reference-counted [`Frame`]s). No I/O here.

use std::collections::VecDeque;

use crate::{buf::Frame, error::SendError};

/// Bounds of one outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueBounds {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

#[derive(Debug)]
pub(crate) struct OutQueue {
    bounds: QueueBounds,
    frames: VecDeque<Frame>,
    /// Bytes of the frames in `frames`.
    queued_bytes: usize,
    /// Bytes of the batch being written.
    in_flight_bytes: usize,
}

impl OutQueue {
    pub(crate) fn new(bounds: QueueBounds) -> Self {
        Self {
            bounds,
            // Grows on demand up to the bound: many idle connections should
            // not each pay for a full queue.
            frames: VecDeque::new(),
            queued_bytes: 0,
            in_flight_bytes: 0,
        }
    }

    /// Frames waiting.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes held: waiting plus being written.
    pub(crate) fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// Whether a frame of `len` bytes would be refused now.
    pub(crate) fn refuses(&self, len: usize) -> bool {
        self.frames.len() >= self.bounds.frames || self.bytes() + len > self.bounds.bytes
    }

    /// Whether the connection's own input (which may produce replies and
    /// Pongs) should wait: the queue cannot take even a bare header, or it
    /// holds half its byte bound or more. Pausing at half leaves the other
    /// half for the replies to what was already read, so a peer that stops
    /// reading is paused before its replies are refused (with the default
    /// bounds, 64 MiB of queue against 16 MiB messages, a reply to any
    /// frame fits).
    pub(crate) fn pauses_input(&self) -> bool {
        // A bare header is the smallest thing that could be queued next.
        self.refuses(crate::limits::HEADER_SIZE) || self.bytes() >= self.bounds.bytes / 2
    }

    pub(crate) fn push(&mut self, frame: Frame) -> Result<(), SendError> {
        if self.refuses(frame.len()) {
            return Err(SendError::QueueFull);
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        debug_assert!(self.frames.len() <= self.bounds.frames);
        debug_assert!(self.bytes() <= self.bounds.bytes);
        Ok(())
    }

    /// Moves up to `max` frames into `batch`; they stay counted until
    /// [`OutQueue::written`].
    pub(crate) fn drain_into(&mut self, batch: &mut Vec<Frame>, max: usize) {
        let n = self.frames.len().min(max);
        for frame in self.frames.drain(..n) {
            self.queued_bytes -= frame.len();
            self.in_flight_bytes += frame.len();
            batch.push(frame);
        }
    }

    /// The batch taken by the last `drain_into` left the process.
    pub(crate) fn written(&mut self) {
        self.in_flight_bytes = 0;
    }

    /// Drops every waiting frame; returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        self.queued_bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{buf::FrameMut, header::Command};

    fn frame(body: usize) -> Frame {
        FrameMut::new(Command::Application(16), body).freeze()
    }

    #[test]
    fn bounded_in_frames_and_in_bytes_including_the_batch_in_flight() {
        let mut q = OutQueue::new(QueueBounds {
            frames: 3,
            bytes: 1000,
        });
        q.push(frame(100)).unwrap(); // 356
        q.push(frame(100)).unwrap(); // 712
        assert_eq!(q.push(frame(100)), Err(SendError::QueueFull), "bytes");
        let mut batch = Vec::new();
        q.drain_into(&mut batch, 8);
        assert_eq!(q.bytes(), 712, "the batch still counts while written");
        assert_eq!(q.push(frame(100)), Err(SendError::QueueFull));
        q.written();
        for _ in 0..3 {
            q.push(frame(0)).unwrap();
        }
        assert_eq!(q.push(frame(0)), Err(SendError::QueueFull), "frames");
        assert!(q.pauses_input());
        assert_eq!(q.clear(), 3);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn input_pauses_at_half_the_byte_bound_while_a_reply_still_fits() {
        let mut q = OutQueue::new(QueueBounds {
            frames: 100,
            bytes: 1000,
        });
        q.push(frame(100)).unwrap(); // 356
        assert!(!q.pauses_input());
        q.push(frame(0)).unwrap(); // 612
        assert!(q.pauses_input(), "half the bytes held");
        assert!(!q.refuses(356), "a reply to what was read still fits");
    }

    #[test]
    fn a_shared_frame_is_stored_once() {
        let shared = frame(1000);
        let mut a = OutQueue::new(QueueBounds {
            frames: 8,
            bytes: 4096,
        });
        let mut b = OutQueue::new(QueueBounds {
            frames: 8,
            bytes: 4096,
        });
        a.push(shared.clone()).unwrap();
        b.push(shared.clone()).unwrap();
        assert_eq!(shared.ref_count(), 3);
        assert_eq!(a.bytes(), 1256);
        assert_eq!(b.bytes(), 1256);
    }
}
