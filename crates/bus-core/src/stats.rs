//! Counters. Plain `Cell`s on the owning shard (no atomics, no locks on the
//! hot path), read through `Copy` snapshots.

use std::cell::Cell;

use crate::goodbye::GoodbyeReason;

/// Number of Goodbye reasons with a slot in [`BusStats::goodbyes_sent`].
pub const GOODBYE_REASONS: usize = 10;

/// A snapshot of one connection's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Frames received.
    pub frames_in: u64,
    /// Bytes received (whole frames).
    pub bytes_in: u64,
    /// Frames handed to the transport for writing.
    pub frames_out: u64,
    /// Bytes handed to the transport for writing.
    pub bytes_out: u64,
    /// Writes issued; `frames_out / write_batches` is the average batch.
    pub write_batches: u64,
    /// Sends refused with `QueueFull`.
    pub queue_full: u64,
    /// Frames waiting in the outbound queue right now.
    pub queue_depth: usize,
    /// Bytes held by the outbound queue right now (waiting and being
    /// written).
    pub queue_bytes: usize,
}

/// Requests one side sent and waited on (spec §9), by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Waiting for their reply now.
    pub outstanding: usize,
    /// Completed with their reply.
    pub replied: u64,
    /// Gave up at their timeout.
    pub timed_out: u64,
    /// Failed because their connection closed first.
    pub disconnected: u64,
    /// Replies that came after their request had given up (dropped).
    pub late_replies: u64,
}

impl RequestStats {
    pub(crate) fn add(&mut self, other: &RequestStats) {
        self.outstanding += other.outstanding;
        self.replied += other.replied;
        self.timed_out += other.timed_out;
        self.disconnected += other.disconnected;
        self.late_replies += other.late_replies;
    }
}

/// A snapshot of a bus's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Live connections (clients and replicas).
    pub connections: usize,
    /// Connections accepted or installed since start.
    pub connections_total: u64,
    /// Connections whose handshake failed or timed out.
    pub handshake_failures: u64,
    /// Frames received on all connections.
    pub frames_in: u64,
    /// Bytes received on all connections.
    pub bytes_in: u64,
    /// Frames handed to the transport on all connections.
    pub frames_out: u64,
    /// Bytes handed to the transport on all connections.
    pub bytes_out: u64,
    /// Writes issued on all connections.
    pub write_batches: u64,
    /// Sends refused with `QueueFull`.
    pub queue_full: u64,
    /// Frames dropped from queues of connections that closed without
    /// flushing (the peer vanished or said Goodbye first).
    pub frames_dropped: u64,
    /// Bytes of the inbound budget not reserved right now.
    pub inbound_budget_available: u64,
    /// Requests this bus sent to its connections (spec §9), by outcome.
    pub requests: RequestStats,
    /// Handler calls that panicked.
    pub handler_panics: u64,
    /// Connection tasks that panicked outside the handler (writer, transport).
    pub connection_panics: u64,
    /// Goodbyes sent, indexed by reason code 0..=9.
    pub goodbyes_sent: [u64; GOODBYE_REASONS],
    /// Live background tasks of this bus.
    pub tasks: usize,
}

impl BusStats {
    /// Average frames per write, or 0 before the first write.
    #[allow(clippy::cast_precision_loss, reason = "a ratio for humans")]
    pub fn average_batch(&self) -> f64 {
        if self.write_batches == 0 {
            0.0
        } else {
            self.frames_out as f64 / self.write_batches as f64
        }
    }
}

pub(crate) fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

/// Bus-wide counters, owned by the bus. Traffic counters hold the totals of
/// connections that ended; live connections count on their own link and
/// are added in when a snapshot is taken (so the hot path bumps one set).
#[derive(Debug, Default)]
pub(crate) struct BusCounters {
    pub(crate) connections_total: Cell<u64>,
    pub(crate) handshake_failures: Cell<u64>,
    pub(crate) frames_in: Cell<u64>,
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) frames_out: Cell<u64>,
    pub(crate) bytes_out: Cell<u64>,
    pub(crate) write_batches: Cell<u64>,
    pub(crate) queue_full: Cell<u64>,
    pub(crate) frames_dropped: Cell<u64>,
    pub(crate) handler_panics: Cell<u64>,
    pub(crate) connection_panics: Cell<u64>,
    pub(crate) goodbyes_sent: [Cell<u64>; GOODBYE_REASONS],
    /// Requests of connections that ended.
    pub(crate) requests: Cell<RequestStats>,
}

impl BusCounters {
    /// Goodbyes written so far, every reason.
    pub(crate) fn goodbyes_total(&self) -> u64 {
        self.goodbyes_sent.iter().map(Cell::get).sum()
    }

    pub(crate) fn goodbye_sent(&self, reason: GoodbyeReason) {
        if let Some(cell) = usize::try_from(reason.code())
            .ok()
            .and_then(|i| self.goodbyes_sent.get(i))
        {
            bump(cell, 1);
        }
    }
}
