//! A running reference node: the shards (one compio runtime and one bus per
//! shard, the §8 application on each), a listener per enabled transport
//! and, when enabled, the admin endpoint. Used by `bus serve` and by the
//! in-process node of `bus bench`.

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
    node, transports,
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
    admin: Option<AdminServer>,
    certs: transports::Certificates,
}

impl Node {
    /// Checks that this build can run `config`: every enabled transport is
    /// compiled in.
    pub fn check(config: &Config) -> Result<(), Error> {
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
        let started = compio::runtime::spawn_blocking(move || {
            builder.start(move |ctx: &bus_shard::ShardContext| node::handler(ctx, Some(&records)))
        })
        .await
        .map_err(|_| Error::Usage("the shard start-up thread panicked".into()))?;
        let shards = started.map_err(|error| start_error(error, config, &kinds))?;
        let listening = kinds
            .iter()
            .zip(shards.local_addrs())
            .map(|(&transport, &addr)| Listening { transport, addr })
            .collect();
        let monitor = shards.monitor();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut node = Self {
            shards,
            monitor,
            stopping,
            listening,
            admin: None,
            certs,
        };
        if config.admin.enabled {
            let source = Arc::new(NodeStats {
                monitor: node.monitor.clone(),
                stopping: node.stopping.clone(),
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

    /// Where the admin endpoint listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Graceful shutdown of every shard at once within `grace`: every
    /// client gets `Goodbye(ShuttingDown)` after what was queued for it.
    /// The admin endpoint stops first. The shards are stopped and joined on
    /// a helper thread, so this runtime keeps running; the whole is bounded
    /// by `grace` plus `bus_shard`'s `SHUTDOWN_MARGIN` (2 s).
    ///
    /// # Cancel safety
    /// Cancel safe in effect: once called, the shutdown runs to its end on
    /// the helper thread even if this future is dropped.
    pub async fn shutdown(mut self, grace: Duration) -> ShardsShutdownReport {
        self.stopping.store(true, Relaxed);
        self.admin = None;
        let shards = self.shards;
        compio::runtime::spawn_blocking(move || shards.shutdown(grace))
            .await
            .unwrap_or_default()
    }
}

/// What the admin endpoint reads: every shard, through the monitor.
struct NodeStats {
    monitor: Monitor,
    stopping: Arc<AtomicBool>,
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
