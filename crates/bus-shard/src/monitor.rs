//! [`Monitor`]: reading the running shards from any thread.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed, mpsc},
    time::Instant,
};

use bus_core::ConnectionSnapshot;

use crate::{
    ShardError,
    config::STATS_TIMEOUT,
    link::{Control, Link, Links, ReplicaOwners},
    stats::ShardStats,
};

/// A cheap, cloneable, `Send + Sync` view of the running shards: their live
/// connection counts, counters and connections. Get one from
/// [`Shards::monitor`](crate::Shards::monitor) or, inside a handler
/// factory, [`ShardContext::monitor`](crate::ShardContext::monitor). It
/// stays usable after the shards stop; its requests then fail with
/// [`ShardError::Stopped`]. While the node shuts down, a shard that has
/// already stopped is reported with its last counters and no connections,
/// as long as another shard still runs.
#[derive(Clone)]
pub struct Monitor {
    links: Links,
    owners: Arc<ReplicaOwners>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("count", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    pub(crate) fn new(links: Links, owners: Arc<ReplicaOwners>) -> Self {
        Self { links, owners }
    }

    /// The shard that owns the live connection to replica `replica`, if
    /// any. One atomic read.
    pub fn replica_shard(&self, replica: u8) -> Option<u16> {
        self.owners.owner(replica)
    }

    /// How many shards run.
    pub fn count(&self) -> u16 {
        u16::try_from(self.links.len()).unwrap_or(u16::MAX)
    }

    /// Client connections registered on `shard` now (handshake done, not
    /// yet lost); 0 for a shard that does not exist. One atomic read: it
    /// never blocks, so a handler may call it per frame.
    pub fn live_connections(&self, shard: u16) -> usize {
        self.links
            .get(usize::from(shard))
            .map_or(0, |link| link.shared.live.load(Relaxed))
    }

    /// Client connections registered on every shard now (as
    /// [`live_connections`](Self::live_connections), summed).
    pub fn total_live_connections(&self) -> usize {
        self.links
            .iter()
            .map(|link| link.shared.live.load(Relaxed))
            .sum()
    }

    /// A snapshot of every shard's counters, in shard order.
    ///
    /// Blocks the calling thread for at most [`STATS_TIMEOUT`]. Do not call
    /// it from a shard's own thread (a handler): that shard cannot answer
    /// while it waits, so the call would time out.
    pub fn stats(&self) -> Result<Vec<ShardStats>, ShardError> {
        self.ask(Control::Stats, |link| {
            link.shared
                .last_stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .copied()
        })
    }

    /// A snapshot of every live connection of every shard, by shard
    /// (element `i` holds shard `i`'s). Each list is as long as that
    /// shard's connection count, which its bus bounds.
    ///
    /// Blocks as [`stats`](Self::stats) does, with the same bound; the same
    /// warning about handlers applies.
    pub fn connections(&self) -> Result<Vec<Vec<ConnectionSnapshot>>, ShardError> {
        self.ask(Control::Connections, |link| {
            link.shared
                .last_stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some()
                .then(Vec::new)
        })
    }

    /// Sends one control request to every shard, then collects the
    /// answers, all within [`STATS_TIMEOUT`].
    /// A stopped shard's answer is `last(link)`, if it has one, while
    /// another shard still answers; once none does, `Stopped`.
    fn ask<T>(
        &self,
        request: fn(mpsc::SyncSender<T>) -> Control,
        last: fn(&Link) -> Option<T>,
    ) -> Result<Vec<T>, ShardError> {
        let deadline = Instant::now() + STATS_TIMEOUT;
        let mut replies = Vec::with_capacity(self.links.len());
        let mut running = false;
        for (shard, link) in (0..).zip(self.links.iter()) {
            let (tx, rx) = mpsc::sync_channel(1);
            match link.control.try_send(request(tx)) {
                Ok(()) => {
                    running = true;
                    replies.push((shard, link, Some(rx)));
                }
                Err(async_channel::TrySendError::Full(_)) => {
                    return Err(ShardError::Busy { shard });
                }
                Err(async_channel::TrySendError::Closed(_)) => replies.push((shard, link, None)),
            }
        }
        if !running {
            return Err(ShardError::Stopped { shard: 0 });
        }
        replies
            .into_iter()
            .map(|(shard, link, rx)| {
                let stopped = || last(link).ok_or(ShardError::Stopped { shard });
                let Some(rx) = rx else { return stopped() };
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(answer) => Ok(answer),
                    Err(mpsc::RecvTimeoutError::Timeout) => Err(ShardError::Timeout {
                        shard,
                        timeout: STATS_TIMEOUT,
                    }),
                    Err(mpsc::RecvTimeoutError::Disconnected) => stopped(),
                }
            })
            .collect()
    }
}
