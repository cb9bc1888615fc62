//! One live connection as the bus sees it: its outbound queue, its state and
//! its counters. No I/O here; the connection's task (`driver`) does that.
//!
//! State moves one way: `Open` → `Closing` → (task ends, slot evicted). A
//! send is accepted only while `Open`, so once closing starts the queue can
//! only shrink, and the close is bounded.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    time::Instant,
};

use crate::{
    buf::Frame,
    error::SendError,
    goodbye::{Goodbye, GoodbyeReason},
    id::Peer,
    notify::Notify,
    stats::{ConnCounters, ConnectionStats, bump},
    transport::ConnectionInfo,
};

/// Why a connection ended, as reported to
/// [`Handler::on_connection_lost`](crate::Handler::on_connection_lost).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the stream without a `Goodbye`.
    PeerClosed,
    /// The peer said `Goodbye`.
    PeerGoodbye(Goodbye),
    /// The peer broke a protocol rule; we sent this Goodbye reason.
    ProtocolViolation(GoodbyeReason),
    /// We closed on purpose with this Goodbye reason (shutdown, eviction,
    /// idle timeout, slow consumer).
    Closed(GoodbyeReason),
    /// The socket failed.
    Io(std::io::ErrorKind),
    /// The application handler panicked on a frame of this connection.
    HandlerPanicked,
    /// The connection's task panicked outside the handler (writer or
    /// transport).
    Panicked,
    /// The connection did not close within the shutdown deadline and was
    /// cancelled.
    Cancelled,
}

/// How a closing connection finishes.
#[derive(Debug, Clone)]
pub(crate) struct Closing {
    /// The Goodbye to send after the queued frames, if any.
    pub(crate) goodbye: Option<(GoodbyeReason, String)>,
    /// Whether queued frames are still written (false when the peer is
    /// known to be gone or has said Goodbye).
    pub(crate) flush: bool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: Peer,
    pub(crate) info: ConnectionInfo,
    capacity: usize,
    open: Cell<bool>,
    closing: RefCell<Option<Closing>>,
    queue: RefCell<VecDeque<Frame>>,
    /// Wakes the writer: frames queued, or closing started.
    pub(crate) wake_writer: Notify,
    /// Wakes the connection's task when closing starts, to arm `close_grace`.
    pub(crate) closing_started: Notify,
    pub(crate) counters: ConnCounters,
    /// Last time a frame arrived; only kept when an idle timeout is set.
    pub(crate) last_rx: Cell<Instant>,
    /// The first cause of the end, reported to the lost callback.
    cause: RefCell<Option<CloseReason>>,
    /// Set when the task ended on its normal path (not by panic/cancel).
    pub(crate) completed: Cell<bool>,
    /// Set by shutdown before it cancels stragglers.
    pub(crate) cancelled: Cell<bool>,
    lost_fired: Cell<bool>,
}

impl Conn {
    pub(crate) fn new(peer: Peer, info: ConnectionInfo, capacity: usize) -> Self {
        Self {
            peer,
            info,
            capacity,
            open: Cell::new(true),
            closing: RefCell::new(None),
            // Grows on demand up to `capacity`: many idle connections should
            // not each pay for a full queue.
            queue: RefCell::new(VecDeque::new()),
            wake_writer: Notify::default(),
            closing_started: Notify::default(),
            counters: ConnCounters::default(),
            last_rx: Cell::new(Instant::now()),
            cause: RefCell::new(None),
            completed: Cell::new(false),
            cancelled: Cell::new(false),
            lost_fired: Cell::new(false),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.get()
    }

    /// Queues a frame. Never waits.
    pub(crate) fn enqueue(&self, frame: Frame) -> Result<(), SendError> {
        if !self.open.get() {
            return Err(SendError::NotConnected);
        }
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= self.capacity {
            bump(&self.counters.queue_full, 1);
            return Err(SendError::QueueFull);
        }
        queue.push_back(frame);
        drop(queue);
        self.wake_writer.notify();
        Ok(())
    }

    /// Moves up to `max` queued frames into `batch`.
    pub(crate) fn drain_into(&self, batch: &mut Vec<Frame>, max: usize) {
        let mut queue = self.queue.borrow_mut();
        let n = queue.len().min(max);
        batch.extend(queue.drain(..n));
    }

    /// Empties the queue; returns how many frames were dropped.
    pub(crate) fn clear_queue(&self) -> usize {
        let mut queue = self.queue.borrow_mut();
        let n = queue.len();
        queue.clear();
        n
    }

    /// Starts closing, once: later calls are ignored (the first cause wins).
    /// Returns whether this call started it.
    pub(crate) fn begin_close(&self, closing: Closing, cause: CloseReason) -> bool {
        if !self.open.replace(false) {
            return false;
        }
        *self.closing.borrow_mut() = Some(closing);
        self.set_cause(cause);
        self.wake_writer.notify();
        self.closing_started.notify();
        true
    }

    pub(crate) fn closing(&self) -> Option<Closing> {
        self.closing.borrow().clone()
    }

    /// Records why the connection ended, unless a cause is already known.
    pub(crate) fn set_cause(&self, cause: CloseReason) {
        let mut slot = self.cause.borrow_mut();
        if slot.is_none() {
            *slot = Some(cause);
        }
    }

    /// The cause to report, decided once, when the task ends.
    pub(crate) fn final_cause(&self) -> CloseReason {
        if !self.completed.get() {
            return if self.cancelled.get() {
                CloseReason::Cancelled
            } else {
                CloseReason::Panicked
            };
        }
        self.cause
            .try_borrow_mut()
            .ok()
            .and_then(|mut c| c.take())
            .unwrap_or(CloseReason::PeerClosed)
    }

    /// Marks the lost callback as fired; true only the first time.
    pub(crate) fn claim_lost_callback(&self) -> bool {
        !self.lost_fired.replace(true)
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        ConnectionStats {
            frames_in: c.frames_in.get(),
            bytes_in: c.bytes_in.get(),
            frames_out: c.frames_out.get(),
            bytes_out: c.bytes_out.get(),
            write_batches: c.write_batches.get(),
            queue_full: c.queue_full.get(),
            queue_depth: self.queue.try_borrow().map_or(0, |q| q.len()),
        }
    }
}
