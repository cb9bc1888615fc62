//! The replica listener on the shard layer: shard 0 accepts plain TCP and
//! hands each socket, before any byte is read, to a shard picked by the
//! placement policy; there [`ReplicaService`] spawns the TLS and replica
//! handshake as a task tracked with the bus's handshakes.

use std::sync::Arc;

use bus_core::{Bus, Error, TransportKind};
use bus_shard::DelegatedService;

use crate::{connect, state::Shared};

/// The replica plane's [`DelegatedService`].
pub(crate) struct ReplicaService {
    pub(crate) shared: Arc<Shared>,
}

impl DelegatedService for ReplicaService {
    fn kind(&self) -> TransportKind {
        if self.shared.tls.is_some() {
            TransportKind::Tls
        } else {
            TransportKind::Tcp
        }
    }

    fn take_over(&self, bus: &Bus, stream: std::net::TcpStream) -> Result<(), Error> {
        bus.spawn_handshake(connect::serve_accepted(
            bus.clone(),
            self.shared.clone(),
            stream,
        ))
    }
}
