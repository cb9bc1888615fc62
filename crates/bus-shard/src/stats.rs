//! Per-shard metrics and shutdown reports, as `Copy` snapshots.

use std::time::Duration;

use bus_core::{BusStats, ShutdownReport};

/// One shard's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard.
    pub shard: u16,
    /// Its bus: connections, frames and bytes in and out, queue-full,
    /// panics, Goodbyes.
    pub bus: BusStats,
    /// Frames waiting in its inbox right now.
    pub inbox_depth: usize,
    /// Capacity of its inbox.
    pub inbox_capacity: usize,
    /// Sends to this shard refused with `InboxFull` (by any sender).
    pub inbox_full: u64,
    /// Inbox messages handled (a forwarded send or broadcast each).
    pub inbox_received: u64,
    /// Forwarded sends that reached this shard but could not be queued
    /// (the client was gone, or its queue full). The sender already had its
    /// `Ok`: a send never waits for the other shard.
    pub inbox_undeliverable: u64,
    /// Sends from this shard's handlers forwarded to other shards.
    pub forwarded: u64,
    /// Of those, refused because the target's inbox was full.
    pub forward_inbox_full: u64,
    /// Connections handed to this shard by shard 0.
    pub handoffs_in: u64,
    /// Connections this shard (shard 0) accepted and could not hand over:
    /// the target's hand-over queue was full or it was stopping.
    pub handoffs_refused: u64,
    /// Handed-over sockets the transport could not wrap.
    pub handoff_failures: u64,
    /// Client connections in hand-over or handshake on this shard.
    pub pending_connections: usize,
}

/// How one shard ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardExit {
    /// The shard.
    pub shard: u16,
    /// Its bus's shutdown (Goodbyes sent, cancellations, tasks left).
    pub bus: ShutdownReport,
    /// Its counters just before the runtime was dropped.
    pub stats: ShardStats,
    /// Inbox messages that were waiting when the stop came; they were
    /// queued to their clients before the Goodbyes.
    pub inbox_flushed: usize,
    /// Handed-over connections closed unserved at shutdown.
    pub handoffs_discarded: usize,
}

/// What [`Shards::shutdown`](crate::Shards::shutdown) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardsShutdownReport {
    /// Each shard that finished, in shard order.
    pub shards: Vec<ShardExit>,
    /// Threads joined.
    pub threads_joined: usize,
    /// Threads that did not finish within the deadline and were detached
    /// (0 unless a handler blocked its shard).
    pub threads_left: usize,
    /// How long the whole shutdown took.
    pub elapsed: Duration,
}

impl ShardsShutdownReport {
    /// Tasks left over all shards (0 unless compio failed to cancel one).
    pub fn tasks_left(&self) -> usize {
        self.shards.iter().map(|s| s.bus.tasks_left).sum()
    }

    /// Connections open when shutdown started, over all shards.
    pub fn connections(&self) -> usize {
        self.shards.iter().map(|s| s.bus.connections).sum()
    }

    /// Goodbyes whose write completed during the shutdown, over all shards
    /// (a peer whose connection was cancelled before its Goodbye went out is
    /// not counted).
    pub fn goodbyes_written(&self) -> u64 {
        self.shards.iter().map(|s| s.bus.goodbyes_written).sum()
    }
}
