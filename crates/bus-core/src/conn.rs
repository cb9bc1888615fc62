//! One live connection as the bus holds it: who it is, its connection core
//! (state, outbound queue), the wake-ups its task waits on, and its
//! counters.
//!
//! Everything here runs on the owning shard. The core is borrowed for the
//! length of one call, never across an await and never while the
//! application handler runs, so a handler may send to its own connection.

use std::{cell::RefCell, time::Instant};

use crate::{
    buf::Frame,
    error::SendError,
    goodbye::GoodbyeReason,
    id::Peer,
    notify::Notify,
    state::{CloseReason, ConnCore},
    stats::{ConnCounters, ConnectionStats, bump},
    transport::ConnectionInfo,
};

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: Peer,
    pub(crate) info: ConnectionInfo,
    pub(crate) core: RefCell<ConnCore>,
    /// Wakes the writer: frames queued, or closing started.
    pub(crate) wake_writer: Notify,
    /// Wakes the reader: the outbound queue has room again.
    pub(crate) wake_reader: Notify,
    /// Wakes the connection's task to re-arm its timer: a deadline changed.
    pub(crate) wake_timer: Notify,
    pub(crate) counters: ConnCounters,
}

impl Conn {
    pub(crate) fn new(peer: Peer, info: ConnectionInfo, core: ConnCore) -> Self {
        Self {
            peer,
            info,
            core: RefCell::new(core),
            wake_writer: Notify::default(),
            wake_reader: Notify::default(),
            wake_timer: Notify::default(),
            counters: ConnCounters::default(),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.core.borrow().is_open()
    }

    /// Queues a frame. Never waits.
    pub(crate) fn enqueue(&self, frame: Frame) -> Result<(), SendError> {
        let mut core = self.core.borrow_mut();
        let result = core.enqueue(frame);
        match result {
            Ok(()) => {
                drop(core);
                self.wake_writer.notify();
            }
            Err(SendError::QueueFull) => {
                bump(&self.counters.queue_full, 1);
                // The slow-consumer policy may have started a close: arm its
                // bound (the clock is read only on this rare path).
                core.arm_close_bound(Instant::now());
                drop(core);
                self.wake_all();
            }
            Err(_) => {}
        }
        result
    }

    /// Closes on purpose (see `ConnCore::close`); returns whether this call
    /// started it.
    pub(crate) fn close(&self, reason: GoodbyeReason, detail: &str, cause: CloseReason) -> bool {
        let started = self
            .core
            .borrow_mut()
            .close(reason, detail, cause, Instant::now());
        if started {
            self.wake_all();
        }
        started
    }

    /// Wakes every part of the connection's task: its state changed.
    pub(crate) fn wake_all(&self) {
        self.wake_writer.notify();
        self.wake_reader.notify();
        self.wake_timer.notify();
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        let (queue_depth, queue_bytes) = self
            .core
            .try_borrow()
            .map_or((0, 0), |core| (core.queue_depth(), core.queue_bytes()));
        ConnectionStats {
            frames_in: c.frames_in.get(),
            bytes_in: c.bytes_in.get(),
            frames_out: c.frames_out.get(),
            bytes_out: c.bytes_out.get(),
            write_batches: c.write_batches.get(),
            queue_full: c.queue_full.get(),
            queue_depth,
            queue_bytes,
        }
    }
}
