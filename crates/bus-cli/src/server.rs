//! A running reference node: the shards (one compio runtime and one bus per
//! shard, the §8 application on each), a listener per enabled transport,
//! the replica mesh when `[replicas] enabled = true` and, when enabled, the
//! admin endpoint. Used by `bus serve` and by the in-process node of `bus
//! bench`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use bus_config::Config;
use bus_core::TransportKind;
use bus_shard::{Monitor, ShardError, Shards, ShardsShutdownReport};

use crate::{
    Error,
    admin::{AdminServer, DemoTarget, NodeInfo, ShardView, StatsSource},
    dashboard::ReplicaView,
    node,
    replicaz::ReplicasView,
    transports,
};

/// One bound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The transport.
    pub transport: TransportKind,
    /// Where it listens (the real port when configured with port 0).
    pub addr: SocketAddr,
}

/// The reference node: its shards run on their own threads; the admin
/// endpoint runs on the compio runtime of the thread that started it.
#[derive(Debug)]
pub struct Node {
    shards: Shards,
    monitor: Monitor,
    stopping: Arc<AtomicBool>,
    listening: Vec<Listening>,
    replica_addr: Option<SocketAddr>,
    #[cfg(feature = "mesh")]
    mesh: Option<bus_mesh::Mesh>,
    admin: Option<AdminServer>,
    certs: transports::Certificates,
}

impl Node {
    /// Checks that this build can run `config`: every enabled transport is
    /// compiled in.
    pub fn check(config: &Config) -> Result<(), Error> {
        if config.replicas.enabled && !cfg!(feature = "mesh") {
            return Err(Error::Replica(
                "replicas.enabled = true but this `bus` was built without the replica plane: \
                 rebuild with `--features mesh`"
                    .into(),
            ));
        }
        for kind in transports::enabled(config) {
            if !transports::is_available(kind) {
                return Err(Error::TransportNotAvailable {
                    transport: kind,
                    how: format!("{kind}.enabled = true, or --{kind}"),
                });
            }
        }
        Ok(())
    }

    /// Starts the node: loads (or generates into `data_dir`) the
    /// certificate if a TLS-based transport is enabled, starts
    /// [`Config::shard_count`] shards with every enabled transport, then
    /// the admin endpoint on this thread's runtime. Starting the shards
    /// blocks a helper thread, at most `bus_shard`'s `STARTUP_TIMEOUT`
    /// (10 s). On error, whatever already started is shut down.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped while the shards start, they are stopped
    /// when the start completes (the `Shards` handle is dropped).
    pub async fn start(config: &Config, info: NodeInfo, data_dir: &Path) -> Result<Self, Error> {
        Self::check(config)?;
        let certs = transports::Certificates::load(config, data_dir)?;
        let kinds = transports::enabled(config);
        let mut builder = Shards::builder(config.shards_config(), config.bus_config(0));
        for &kind in &kinds {
            builder = transports::declare(builder, config, kind, &certs)?;
        }
        let records = data_dir.to_path_buf();
        #[cfg(feature = "mesh")]
        let (started, mesh) = {
            let mesh = mesh::build(config, &certs)?;
            let started = match &mesh {
                Some((mesh, plane)) => {
                    let listener = mesh::listener_config(config);
                    let builder = mesh.declare_with(builder, listener);
                    let factory = node::mesh_handler(plane.clone(), Some(records));
                    let mesh = mesh.clone();
                    compio::runtime::spawn_blocking(move || mesh.start(builder, factory)).await
                }
                None => {
                    compio::runtime::spawn_blocking(move || {
                        builder.start(move |ctx: &bus_shard::ShardContext| {
                            node::handler(ctx, Some(&records))
                        })
                    })
                    .await
                }
            };
            (started, mesh.map(|(mesh, _)| mesh))
        };
        #[cfg(not(feature = "mesh"))]
        let started = compio::runtime::spawn_blocking(move || {
            builder.start(move |ctx: &bus_shard::ShardContext| node::handler(ctx, Some(&records)))
        })
        .await;
        let started =
            started.map_err(|_| Error::Usage("the shard start-up thread panicked".into()))?;
        let shards = started.map_err(|error| start_error(error, config, &kinds))?;
        let listening = kinds
            .iter()
            .zip(shards.local_addrs())
            .map(|(&transport, &addr)| Listening { transport, addr })
            .collect();
        // The replica listener is declared after every transport.
        let replica_addr = config
            .replicas
            .enabled
            .then(|| shards.local_addrs().get(kinds.len()).copied())
            .flatten();
        let monitor = shards.monitor();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut node = Self {
            shards,
            monitor,
            stopping,
            listening,
            replica_addr,
            #[cfg(feature = "mesh")]
            mesh,
            admin: None,
            certs,
        };
        if config.admin.enabled {
            let source = Arc::new(NodeStats {
                monitor: node.monitor.clone(),
                admission: node.shards.admission().clone(),
                stopping: node.stopping.clone(),
                #[cfg(feature = "mesh")]
                mesh: node.mesh.clone(),
                #[cfg(feature = "mesh")]
                replica_addr: node.replica_addr,
            });
            // The demo page speaks plain WS: a browser would refuse the
            // self-signed development certificate of WSS.
            let demo = node
                .addr(TransportKind::Ws)
                .map(|addr| DemoTarget::new(addr, config.ws.path.clone()));
            match AdminServer::start(source, config.admin.listen, info, demo).await {
                Ok(admin) => node.admin = Some(admin),
                Err(err) => {
                    node.shutdown(Duration::from_secs(1)).await;
                    return Err(err);
                }
            }
        }
        Ok(node)
    }

    /// How many shards run.
    pub fn shard_count(&self) -> u16 {
        self.shards.count()
    }

    /// A view of the shards: connection counts, stats, connections.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Client connections registered on every shard now.
    pub fn connection_count(&self) -> usize {
        self.monitor.total_live_connections()
    }

    /// Every bound listener.
    pub fn listening(&self) -> &[Listening] {
        &self.listening
    }

    /// Where `transport` listens, if it is enabled.
    pub fn addr(&self, transport: TransportKind) -> Option<SocketAddr> {
        self.listening
            .iter()
            .find(|l| l.transport == transport)
            .map(|l| l.addr)
    }

    /// The certificate file the TLS-based transports serve, and whether this
    /// start generated it (a self-signed development certificate).
    pub fn certificate(&self) -> Option<(PathBuf, bool)> {
        self.certs.served()
    }

    /// Re-reads the certificate files (SIGHUP). New handshakes on every
    /// shard use the new certificate (the shards share it); on error the
    /// current one stays. `Ok(false)` when no TLS-based transport runs.
    pub fn reload_certificates(&self) -> Result<bool, Error> {
        self.certs.reload()
    }

    /// Where the replica plane listens, when the node is in a mesh.
    pub fn replica_addr(&self) -> Option<SocketAddr> {
        self.replica_addr
    }

    /// The replica mesh, when the node is in one.
    #[cfg(feature = "mesh")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mesh")))]
    pub fn mesh(&self) -> Option<&bus_mesh::Mesh> {
        self.mesh.as_ref()
    }

    /// The replica mesh now, as `/replicaz` shows it (blocks on the shards'
    /// connection listings, at most `bus_shard`'s `STATS_TIMEOUT`). `None`
    /// when the node is in no mesh.
    pub fn replicaz(&self) -> Result<Option<ReplicasView>, Error> {
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            return mesh::view(mesh, &self.monitor)
                .map(Some)
                .map_err(|e| Error::Replica(e.to_string()));
        }
        Ok(None)
    }

    /// Re-reads the replica key files (and the replica CA bundle) for new
    /// handshakes (SIGHUP); on error the keys in use stay. `Ok(false)` when
    /// the node is in no mesh.
    pub fn reload_replica_keys(&self) -> Result<bool, Error> {
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            mesh.reload().map_err(|e| Error::Replica(e.to_string()))?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Where the admin endpoint listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Graceful shutdown of every shard at once within `grace`: every
    /// client gets `Goodbye(ShuttingDown)` after what was queued for it.
    /// The admin endpoint keeps answering through the grace (`/healthz`
    /// says "shutting down") and stops last. The shards are stopped and joined on
    /// a helper thread, so this runtime keeps running; the whole is bounded
    /// by `grace` plus `bus_shard`'s `SHUTDOWN_MARGIN` (2 s).
    ///
    /// # Cancel safety
    /// Cancel safe in effect: once called, the shutdown runs to its end on
    /// the helper thread even if this future is dropped.
    pub async fn shutdown(mut self, grace: Duration) -> ShardsShutdownReport {
        self.stopping.store(true, Relaxed);
        let admin = self.admin.take();
        let shards = self.shards;
        let report = compio::runtime::spawn_blocking(move || shards.shutdown(grace))
            .await
            .unwrap_or_default();
        drop(admin);
        report
    }
}

/// What the admin endpoint reads: every shard, through the monitor, and
/// the mesh.
struct NodeStats {
    monitor: Monitor,
    admission: bus_core::Admission,
    stopping: Arc<AtomicBool>,
    #[cfg(feature = "mesh")]
    mesh: Option<bus_mesh::Mesh>,
    /// Where the replica plane listens, when the node is in a mesh.
    #[cfg(feature = "mesh")]
    replica_addr: Option<SocketAddr>,
}

impl StatsSource for NodeStats {
    fn shards(&self) -> Result<Vec<ShardView>, String> {
        let stats = self.monitor.stats().map_err(|e| e.to_string())?;
        let connections = self.monitor.connections().map_err(|e| e.to_string())?;
        Ok(stats
            .into_iter()
            .zip(connections)
            .map(|(stats, connections)| ShardView::new(stats, connections))
            .collect())
    }

    fn is_shutting_down(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    fn admission(&self) -> Option<bus_core::Admission> {
        Some(self.admission.clone())
    }

    fn replicaz(&self) -> Result<Option<ReplicasView>, String> {
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            return mesh::view(mesh, &self.monitor)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        Ok(None)
    }

    fn replicas(&self) -> Option<Vec<ReplicaView>> {
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            return Some(mesh::dashboard(mesh, self.replica_addr));
        }
        None
    }
}

/// The node's replica mesh: built from `[replicas]`, turned into what the
/// application and `/replicaz` need.
#[cfg(feature = "mesh")]
mod mesh {
    use std::time::UNIX_EPOCH;

    use bus_config::Config;
    use bus_core::Peer;
    use std::net::SocketAddr;

    use bus_mesh::{LinkDirection, Mesh, MeshConfig, PeerState};
    use bus_shard::{Monitor, ShardError};
    use bus_tcp::TcpListenerConfig;

    use crate::{
        Error,
        dashboard::{LinkState, ReplicaLink, ReplicaView},
        node::ReplicaPlane,
        replicaz::{PeerView, ReplicasView},
        transports,
    };

    /// The mesh of `config` and what the node's application knows of it,
    /// or `None` when `[replicas]` is off. Reads the key files (and the
    /// replica CA); their errors name the file and the fix.
    pub(super) fn build(
        config: &Config,
        certs: &transports::Certificates,
    ) -> Result<Option<(Mesh, ReplicaPlane)>, Error> {
        let Some(replicas) = config.replicas_config() else {
            return Ok(None);
        };
        let mut settings = MeshConfig::new(replicas);
        settings.listener = listener_config(config);
        settings.connector = config.tcp_connector_config();
        if config.replicas.tls {
            settings.server_tls = Some(certs.server_tls()?);
        }
        let mesh = Mesh::new(settings).map_err(|e| Error::Replica(e.to_string()))?;
        let plane = ReplicaPlane {
            cluster: mesh.config().cluster,
            self_id: mesh.config().self_id,
            peers: mesh.peer_ids(),
        };
        Ok(Some((mesh, plane)))
    }

    /// The replica listener: `replicas.listen` with the `[tcp]` backlog and
    /// `TCP_NODELAY`.
    pub(super) fn listener_config(config: &Config) -> TcpListenerConfig {
        let mut listener = config.tcp_listener_config();
        listener.listen = config.replicas.listen;
        listener
    }

    /// The dashboard's mesh (`/stats`): this node with the links it holds,
    /// and every peer as a node of its own.
    pub(super) fn dashboard(mesh: &Mesh, listen: Option<SocketAddr>) -> Vec<ReplicaView> {
        let status = mesh.status();
        let mut me = ReplicaView::new(status.self_id, true, listen.map(|a| a.to_string()));
        me.links = status
            .peers
            .iter()
            .map(|p| {
                let state = match (p.state, p.direction) {
                    (PeerState::Connected, _) => LinkState::Connected,
                    (PeerState::Connecting | PeerState::Backoff, LinkDirection::Dial) => {
                        LinkState::Connecting
                    }
                    _ => LinkState::Down,
                };
                ReplicaLink::new(p.id, state)
            })
            .collect();
        let peers = status
            .peers
            .iter()
            .map(|p| ReplicaView::new(p.id, false, Some(p.addr.to_string())));
        std::iter::once(me).chain(peers).collect()
    }

    /// `/replicaz`: the mesh's status with each live link's counters.
    pub(super) fn view(mesh: &Mesh, monitor: &Monitor) -> Result<ReplicasView, ShardError> {
        let status = mesh.status();
        let links: Vec<_> = monitor
            .connections()?
            .into_iter()
            .flatten()
            .filter_map(|c| match c.peer {
                Peer::Replica(id) => Some((id, c.stats)),
                Peer::Client(_) => None,
            })
            .collect();
        let peers = status
            .peers
            .iter()
            .map(|p| {
                let since = p
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let mut view = PeerView::new(
                    p.id,
                    p.addr.to_string(),
                    p.state.as_str(),
                    p.direction.as_str(),
                    since,
                );
                if let Some((_, stats)) = links.iter().find(|(id, _)| *id == p.id) {
                    view.frames_in = stats.frames_in;
                    view.frames_out = stats.frames_out;
                    view.bytes_in = stats.bytes_in;
                    view.bytes_out = stats.bytes_out;
                }
                view.last_error.clone_from(&p.last_error);
                view
            })
            .collect();
        let mut view = ReplicasView::new(status.self_id, status.cluster, peers);
        view.dials = status.dials;
        view.reconnects = status.reconnects;
        view.handshakes = status.handshakes;
        view.handshake_failures = status
            .handshake_failures
            .iter()
            .map(|(reason, n)| (reason.as_str(), *n))
            .collect();
        view.frames_rejected = status.frames_rejected;
        Ok(view)
    }
}

/// A start-up failure, with a failed bind named by its transport.
fn start_error(error: ShardError, config: &Config, kinds: &[TransportKind]) -> Error {
    let bind = |kind: TransportKind, message: String| Error::Bind {
        what: kind.to_string(),
        addr: transports::listen_addr(config, kind),
        message,
    };
    match error {
        #[cfg(feature = "tcp")]
        ShardError::Listen {
            source: bus_tcp::TcpError::Bind { addr, source },
            ..
        } => match kinds
            .iter()
            .find(|&&kind| transports::listen_addr(config, kind) == addr)
        {
            Some(&kind) => bind(kind, source.to_string()),
            None if config.replicas.enabled && config.replicas.listen == addr => Error::Bind {
                what: "replicas".into(),
                addr,
                message: source.to_string(),
            },
            None => Error::Bind {
                what: "a listener".into(),
                addr,
                message: source.to_string(),
            },
        },
        ShardError::Listener {
            listener, source, ..
        } if listener < kinds.len() => bind(kinds[listener], transports::error_cause(&*source)),
        other => Error::Shards(other),
    }
}
