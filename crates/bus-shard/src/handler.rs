//! The application's handler on each shard, and what it is told about its
//! shard.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use bus_core::{Bus, CloseReason, ConnectionInfo, Frame, Handler, Peer, ShutdownFlush};

use crate::{Monitor, link::Shared};

/// What a handler factory learns about the shard it builds a handler for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardContext {
    /// This shard's index; the top 16 bits of every client id it mints.
    pub shard: u16,
    /// How many shards run.
    pub count: u16,
    pub(crate) monitor: Monitor,
}

impl ShardContext {
    /// A view of every shard, for the handler to keep: live connection
    /// counts (atomic reads, fine on the hot path). Its blocking requests
    /// ([`Monitor::stats`], [`Monitor::connections`]) must not be made from
    /// a handler.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }
}

/// Wraps the application's handler to keep the shard's live-connection
/// count that least-connections placement reads. One atomic add per
/// connection, nothing per frame.
pub(crate) struct ShardHandler<H> {
    pub(crate) inner: H,
    pub(crate) shared: Arc<Shared>,
}

impl<H: Handler> Handler for ShardHandler<H> {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        self.inner.on_frame(bus, from, frame);
    }

    fn on_connected(&self, bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        if matches!(peer, Peer::Client(_)) {
            self.shared.live.fetch_add(1, Relaxed);
        }
        self.inner.on_connected(bus, peer, info);
    }

    fn on_connection_lost(&self, bus: &Bus, peer: Peer, reason: &CloseReason) {
        // Before the application hears of it, so that a test (or an
        // operator) that saw the loss also sees the count drop.
        if matches!(peer, Peer::Client(_)) {
            self.shared.live.fetch_sub(1, Relaxed);
        }
        self.inner.on_connection_lost(bus, peer, reason);
    }

    fn on_shutdown(&self, bus: &Bus) -> ShutdownFlush {
        self.inner.on_shutdown(bus)
    }
}
