//! [`MeshHandler`]: the application's handler, wrapped so the mesh hears
//! of its connections. It records each replica link's registration and
//! loss (the loss releases the peer's claim and wakes its dialer), and
//! refuses application frames from a replica whose `cluster` or `replica`
//! field is not its own (spec §1: the replica plane rejects a mismatch).
//! Everything else goes to the application unchanged.

use std::sync::Arc;

use bus_core::{Bus, CloseReason, ConnectionInfo, Frame, GoodbyeReason, Handler, Peer};

use crate::state::Shared;

/// The application's handler with the mesh's bookkeeping around it; made
/// by [`Mesh::handler`](crate::Mesh::handler).
pub struct MeshHandler<H> {
    inner: H,
    shared: Arc<Shared>,
}

impl<H> std::fmt::Debug for MeshHandler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshHandler").finish_non_exhaustive()
    }
}

impl<H> MeshHandler<H> {
    pub(crate) fn new(inner: H, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<H: Handler> Handler for MeshHandler<H> {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        if let Peer::Replica(id) = from {
            let header = frame.header();
            if header.cluster() != self.shared.config.cluster || header.replica() != id {
                self.shared.frame_rejected();
                let detail = format!(
                    "frame with cluster {:#x} and replica {} on the link of replica {id}",
                    header.cluster(),
                    header.replica()
                );
                tracing::warn!(peer = id, %detail, "closing a replica link");
                let _ = bus.close_replica(id, GoodbyeReason::ProtocolViolation, &detail);
                return;
            }
        }
        self.inner.on_frame(bus, from, frame);
    }

    fn on_connected(&self, bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        if let Peer::Replica(id) = peer {
            self.shared.connected(id, bus.shard());
        }
        self.inner.on_connected(bus, peer, info);
    }

    fn on_connection_lost(&self, bus: &Bus, peer: Peer, reason: &CloseReason) {
        if let Peer::Replica(id) = peer {
            tracing::info!(peer = id, ?reason, "replica connection lost");
            self.shared.lost(id, reason);
        }
        self.inner.on_connection_lost(bus, peer, reason);
    }
}
