//! Runtime configuration of the shard layer, and its limits.
//!
//! `bus-config`'s `[shards]` section converts into [`ShardsConfig`]; the
//! per-connection limits stay in [`bus_core::BusConfig`], which every shard
//! gets a copy of (with its own `shard` index).

use std::{num::NonZeroUsize, thread, time::Duration};

use bus_core::limits;

use crate::ShardError;

/// Most shards a process runs. Shard indices live in the top 16 bits of a
/// client id (spec §5), so this must not exceed 65 536.
pub const MAX_SHARDS: u16 = limits::MAX_SHARDS;
/// Default capacity of each shard's cross-shard inbox, in frames.
pub const DEFAULT_INBOX_CAPACITY_FRAMES: usize = limits::SHARD_DEFAULT_INBOX_CAPACITY_FRAMES;
/// Connections handed over from shard 0 that may wait for one target shard
/// at once. Beyond it shard 0 closes the connection and counts it in
/// [`ShardStats::handoffs_refused`](crate::ShardStats::handoffs_refused).
pub const HANDOFF_QUEUE_CAPACITY: usize = limits::SHARD_HANDOFF_QUEUE_CAPACITY;
/// Inbox messages one shard handles before it lets its connections run.
pub const INBOX_BATCH_MESSAGES: usize = limits::SHARD_INBOX_BATCH_MESSAGES;
/// Bound on starting every shard (runtime, bus, listeners).
pub const STARTUP_TIMEOUT: Duration = limits::SHARD_STARTUP_TIMEOUT;
/// Bound on one [`Shards::stats`](crate::Shards::stats) round trip.
pub const STATS_TIMEOUT: Duration = limits::SHARD_STATS_TIMEOUT;
/// What [`Shards::shutdown`](crate::Shards::shutdown) allows beyond the
/// grace it is given: the bus's own 500 ms cancellation settle, dropping the
/// runtime, and joining the thread.
pub const SHUTDOWN_MARGIN: Duration = limits::SHARD_SHUTDOWN_MARGIN;
/// Grace of the shutdown started when a [`Shards`](crate::Shards) handle is
/// dropped without [`Shards::shutdown`](crate::Shards::shutdown).
pub const DROP_SHUTDOWN_GRACE: Duration = limits::SHARD_DROP_SHUTDOWN_GRACE;
/// Pause after a failed `accept` on shard 0, so a persistent error (out of
/// file descriptors) does not spin the shard.
pub const ACCEPT_ERROR_BACKOFF: Duration = limits::ACCEPT_ERROR_BACKOFF;
/// Control requests (stats) that may wait for one shard at once.
pub(crate) const CONTROL_QUEUE_CAPACITY: usize = limits::SHARD_CONTROL_QUEUE_CAPACITY;

const _: () = assert!(HANDOFF_QUEUE_CAPACITY >= 1);

/// How shard 0 spreads accepted connections over the shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Placement {
    /// Each eligible shard in turn.
    #[default]
    RoundRobin,
    /// The eligible shard with the fewest connections, counting those still
    /// in hand-over or handshake; ties go to the next shard in turn.
    LeastConnections,
}

/// How many shards run and how connections are placed on them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardsConfig {
    /// Number of shards, one thread each; 0 means one per available core
    /// (see [`ShardsConfig::resolved_count`]).
    pub count: u16,
    /// Pin shard `i` to CPU `i mod cores` (the thread's affinity is set
    /// before its runtime is built). Assumes the process may use CPUs
    /// `0..cores`; where it may not, compio logs the failure and the thread
    /// stays unpinned.
    pub pin_cpus: bool,
    /// How connections are spread.
    pub placement: Placement,
    /// Whether shard 0, which also accepts, serves clients itself. With a
    /// single shard it always does.
    pub shard0_takes_clients: bool,
    /// Capacity of each shard's inbox (frames sent to it by other shards).
    pub inbox_capacity_frames: usize,
}

impl Default for ShardsConfig {
    /// The same values as `bus-config`'s embedded defaults: one shard per
    /// core, round-robin, shard 0 serves clients, 4096-frame inboxes.
    fn default() -> Self {
        Self {
            count: 0,
            pin_cpus: false,
            placement: Placement::RoundRobin,
            shard0_takes_clients: true,
            inbox_capacity_frames: DEFAULT_INBOX_CAPACITY_FRAMES,
        }
    }
}

impl ShardsConfig {
    /// `count` shards, every other field at its default.
    pub fn new(count: u16) -> Self {
        Self {
            count,
            ..Self::default()
        }
    }

    /// The number of shards that will run: `count`, or when that is 0 the
    /// number of cores this process may use (1 if unknown), capped at
    /// [`MAX_SHARDS`].
    pub fn resolved_count(&self) -> u16 {
        let count = match self.count {
            0 => thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => usize::from(n),
        };
        u16::try_from(count)
            .unwrap_or(MAX_SHARDS)
            .clamp(1, MAX_SHARDS)
    }

    /// Checks the ranges the shard layer relies on.
    pub fn validate(&self) -> Result<(), ShardError> {
        if self.count > MAX_SHARDS {
            return Err(ShardError::Config {
                field: "shards.count",
                value: self.count.to_string(),
                allowed: "0 (one shard per core) or 1 ..= 1024",
            });
        }
        if self.inbox_capacity_frames == 0 {
            return Err(ShardError::Config {
                field: "shards.inbox_capacity_frames",
                value: "0".into(),
                allowed: ">= 1",
            });
        }
        Ok(())
    }

    /// Whether shard 0 gets client connections, given `count` shards.
    pub(crate) fn shard0_serves(&self, count: u16) -> bool {
        self.shard0_takes_clients || count == 1
    }
}
