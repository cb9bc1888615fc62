//! [`Mesh`]: one node's replica plane, the handle an application keeps.

use std::sync::Arc;

use bus_core::{Bus, Frame, FrameMut, Handler};
use bus_replica::{HandshakeConfig, ReplicaConfig};
use bus_shard::{ShardContext, ShardError, Shards, ShardsBuilder};
use bus_tcp::{TcpConnectorConfig, TcpListenerConfig};
use bus_tls::ServerTls;

use crate::{
    connect,
    error::MeshError,
    handler::MeshHandler,
    service::ReplicaService,
    state::Shared,
    status::{LinkDirection, MeshStatus},
    tls::MeshTls,
};

/// What a node's mesh is built from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// The replica plane's settings (`[replicas]` with `[bus]
    /// handshake_grace`).
    pub replicas: ReplicaConfig,
    /// The replica listener's socket options (backlog, `TCP_NODELAY`); its
    /// address is `replicas.listen`.
    pub listener: TcpListenerConfig,
    /// How peers are dialed (`connect_timeout`, `TCP_NODELAY`).
    pub connector: TcpConnectorConfig,
    /// The node's certificate, required when `replicas.tls` is on. Share
    /// the client TLS listener's, so that reloading it (SIGHUP) reaches
    /// the replica listener too.
    pub server_tls: Option<ServerTls>,
}

impl MeshConfig {
    /// The mesh of `replicas`, with default socket options and no TLS
    /// certificate.
    pub fn new(replicas: ReplicaConfig) -> Self {
        let listener = TcpListenerConfig::new(replicas.listen);
        Self {
            replicas,
            listener,
            connector: TcpConnectorConfig::default(),
            server_tls: None,
        }
    }
}

/// Stamps the node's `cluster` and `replica` id into frames for replicas
/// and seals them (spec §4: application frames between replicas are
/// sealed and carry both). `Copy`, so a handler keeps its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStamp {
    /// The cluster id.
    pub cluster: u128,
    /// This node's replica id.
    pub replica: u8,
}

impl ReplicaStamp {
    /// Sets `cluster` and `replica` and seals. A frame that is sealed
    /// already (one received and edited in its header only, such as an
    /// echo) keeps its body checksum and has only its header re-sealed.
    pub fn stamp(self, mut frame: FrameMut) -> Frame {
        let sealed = frame.header().is_sealed();
        let header = frame.header_mut();
        header.set_cluster(self.cluster);
        header.set_replica(self.replica);
        if sealed {
            frame.reseal_header();
        } else {
            frame.seal();
        }
        frame.freeze()
    }
}

/// One node's replica plane: the replica listener, a dialer per peer with
/// a higher id, the authenticated connections' bookkeeping, key reload and
/// the status. Cheap to clone, `Send + Sync`.
///
/// ```no_run
/// use std::time::Duration;
///
/// use bus_core::{Bus, BusConfig, Frame, Peer};
/// use bus_mesh::{Mesh, MeshConfig};
/// use bus_replica::{PeerConfig, ReplicaConfig};
/// use bus_shard::{ShardContext, Shards, ShardsConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut replicas = ReplicaConfig::new(0x2a, 0, "/etc/bus/replica.psk", "127.0.0.1:7075".parse()?);
/// replicas.peers = vec![PeerConfig { id: 1, addr: "127.0.0.1:7175".parse()? }];
/// let mesh = Mesh::new(MeshConfig::new(replicas))?;
/// let builder = mesh.declare(Shards::builder(ShardsConfig::new(2), BusConfig::default()));
/// let shards = mesh.start(builder, |_ctx: &ShardContext| {
///     |bus: &Bus, from: Peer, frame: Frame| {
///         if let Peer::Replica(id) = from {
///             let _ = bus.send_to_replica(id, frame); // echo to the replica
///         }
///     }
/// })?;
/// println!("replica plane on {}", shards.local_addrs()[0]);
/// shards.shutdown(Duration::from_secs(5));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
}

impl Mesh {
    /// Checks the settings and reads the key files (and, with TLS, the CA
    /// bundle). Nothing listens or dials until the shards start.
    pub fn new(config: MeshConfig) -> Result<Self, MeshError> {
        let MeshConfig {
            replicas,
            listener: _,
            connector,
            server_tls,
        } = config;
        replicas.validate()?;
        let keys = replicas.load_keys()?;
        let handshake = replicas.handshake_config(keys);
        let tls = if replicas.tls {
            let server = server_tls.ok_or(MeshError::NoCertificate)?;
            let dialed = replicas.dialed_peers().copied().collect();
            Some(MeshTls::new(
                server,
                replicas.ca_file.clone(),
                connector.clone(),
                dialed,
            )?)
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared::new(replicas, handshake, tls, connector)),
        })
    }

    /// Declares the replica plane on `builder`: its listener (accepted on
    /// shard 0, handed over before any byte is read, served on the shard
    /// the placement policy picks) and, on every shard, the dialers of the
    /// peers placed there (dialed peer `id` lives on shard `id % count`).
    /// The listener's bound address is the builder's next listener in
    /// [`Shards::local_addrs`].
    ///
    /// The application's handler must be wrapped with [`Mesh::handler`]
    /// (or the shards started with [`Mesh::start`]): the mesh learns of
    /// lost connections through it.
    pub fn declare(&self, builder: ShardsBuilder) -> ShardsBuilder {
        self.declare_with(builder, TcpListenerConfig::new(self.shared.config.listen))
    }

    /// As [`declare`](Self::declare), with the listener's socket options.
    pub fn declare_with(
        &self,
        builder: ShardsBuilder,
        mut listener: TcpListenerConfig,
    ) -> ShardsBuilder {
        listener.listen = self.shared.config.listen;
        let service = ReplicaService {
            shared: self.shared.clone(),
        };
        let shared = self.shared.clone();
        builder
            .listen_service(listener, service)
            .on_start(move |bus: &Bus, ctx: &ShardContext| start_dialers(bus, &shared, ctx))
    }

    /// Wraps the application's handler so the mesh hears of its replica
    /// connections (see [`MeshHandler`]).
    pub fn handler<H: Handler>(&self, inner: H) -> MeshHandler<H> {
        MeshHandler::new(inner, self.shared.clone())
    }

    /// Starts `builder` (declared with [`Mesh::declare`]) with the handlers
    /// of `factory`, each wrapped with [`Mesh::handler`]. Blocks like
    /// [`ShardsBuilder::start`].
    pub fn start<F, H>(&self, builder: ShardsBuilder, factory: F) -> Result<Shards, ShardError>
    where
        F: Fn(&ShardContext) -> H + Send + Sync + 'static,
        H: Handler,
    {
        let mesh = self.clone();
        builder.start(move |ctx: &ShardContext| mesh.handler(factory(ctx)))
    }

    /// Re-reads the key files (and the CA bundle, with TLS) for handshakes
    /// that start from now on; established links are untouched. On error
    /// the keys (and CA) in use stay and the error names the file. The
    /// node's certificate is the [`ServerTls`] given in [`MeshConfig`],
    /// reloaded by its owner.
    pub fn reload(&self) -> Result<(), MeshError> {
        let config = &self.shared.config;
        let keys = config.load_keys()?;
        if let Some(tls) = &self.shared.tls {
            tls.reload()?;
        }
        self.shared
            .set_handshake_config(config.handshake_config(keys));
        tracing::info!("replica keys reloaded");
        Ok(())
    }

    /// The mesh now: every peer's state and the counters.
    pub fn status(&self) -> MeshStatus {
        self.shared.status()
    }

    /// The settings this mesh runs with.
    pub fn config(&self) -> &ReplicaConfig {
        &self.shared.config
    }

    /// The stamp for this node's frames to replicas.
    pub fn stamp(&self) -> ReplicaStamp {
        ReplicaStamp {
            cluster: self.shared.config.cluster,
            replica: self.shared.config.self_id,
        }
    }

    /// The configured peer ids, in configuration order.
    pub fn peer_ids(&self) -> Vec<u8> {
        self.shared.peers.iter().map(|p| p.id).collect()
    }

    /// The settings of new handshakes, for tests and tools that speak the
    /// handshake themselves.
    pub fn handshake_config(&self) -> HandshakeConfig {
        (*self.shared.handshake_config()).clone()
    }
}

/// Spawns, on this shard, the dial loops of the dialed peers placed here.
fn start_dialers(bus: &Bus, shared: &Arc<Shared>, ctx: &ShardContext) {
    let count = usize::from(ctx.count.max(1));
    for (index, peer) in shared.peers.iter().enumerate() {
        if peer.direction != LinkDirection::Dial
            || usize::from(peer.id) % count != usize::from(ctx.shard)
        {
            continue;
        }
        let task = connect::dial_loop(bus.clone(), shared.clone(), index);
        if let Err(err) = bus.spawn_handshake(task) {
            tracing::warn!(peer = peer.id, %err, "cannot start the dialer");
        }
    }
}
