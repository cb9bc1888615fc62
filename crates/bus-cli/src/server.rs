//! A running reference node: the bus with the §8 application, a listener
//! per enabled transport and, when enabled, the admin endpoint. Used by
//! `bus serve` and by the in-process node of `bus bench`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    rc::Rc,
    time::Duration,
};

use bus_config::Config;
use bus_core::{Bus, ShutdownReport, TransportKind};

use crate::{
    Error,
    admin::{AdminServer, DemoTarget, NodeInfo},
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

/// The reference node, running on this thread's compio runtime.
#[derive(Debug)]
pub struct Node {
    bus: Bus,
    listening: Vec<Listening>,
    admin: Option<AdminServer>,
    certs: transports::Certificates,
}

impl Node {
    /// Checks that this build can run `config`: every enabled transport is
    /// compiled in, and the shard count is one this build runs.
    pub fn check(config: &Config) -> Result<(), Error> {
        for kind in transports::enabled(config) {
            if !transports::is_available(kind) {
                return Err(Error::TransportNotAvailable {
                    transport: kind,
                    how: format!("{kind}.enabled = true, or --{kind}"),
                });
            }
        }
        if config.shards.count > 1 {
            return Err(Error::ShardsNotAvailable {
                requested: config.shards.count,
            });
        }
        Ok(())
    }

    /// Starts the node: loads (or generates into `data_dir`) the
    /// certificate if a TLS-based transport is enabled, binds every enabled
    /// transport and the admin endpoint. On error, whatever already started
    /// is shut down.
    pub async fn start(config: &Config, info: NodeInfo, data_dir: &Path) -> Result<Self, Error> {
        Self::check(config)?;
        let certs = transports::Certificates::load(config, data_dir)?;
        let bus = Bus::new(config.bus_config(0), node::handle)?;
        let started = Self::bind(&bus, config, info, &certs).await;
        match started {
            Ok((listening, admin)) => Ok(Self {
                bus,
                listening,
                admin,
                certs,
            }),
            Err(err) => {
                bus.shutdown(Duration::from_secs(1)).await;
                Err(err)
            }
        }
    }

    async fn bind(
        bus: &Bus,
        config: &Config,
        info: NodeInfo,
        certs: &transports::Certificates,
    ) -> Result<(Vec<Listening>, Option<AdminServer>), Error> {
        let mut listening = Vec::new();
        for transport in transports::enabled(config) {
            let addr = transports::serve(bus, config, transport, certs)?;
            listening.push(Listening { transport, addr });
        }
        let admin = if config.admin.enabled {
            // The demo page speaks plain WS: a browser would refuse the
            // self-signed development certificate of WSS.
            let demo = listening
                .iter()
                .find(|l| l.transport == TransportKind::Ws)
                .map(|l| DemoTarget::new(l.addr, config.ws.path.clone()));
            let source = Rc::new(bus.clone());
            Some(AdminServer::start(source, config.admin.listen, info, demo).await?)
        } else {
            None
        };
        Ok((listening, admin))
    }

    /// The bus (one shard).
    pub fn bus(&self) -> &Bus {
        &self.bus
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

    /// Re-reads the certificate files (SIGHUP). New handshakes use the new
    /// certificate; on error the current one stays. `Ok(false)` when no
    /// TLS-based transport runs.
    pub fn reload_certificates(&self) -> Result<bool, Error> {
        self.certs.reload()
    }

    /// Where the admin endpoint listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Graceful shutdown within `grace`: every client gets
    /// `Goodbye(ShuttingDown)` after what was queued for it; the admin
    /// endpoint stops first.
    ///
    /// # Cancel safety
    /// As [`Bus::shutdown`].
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.admin = None;
        self.bus.shutdown(grace).await
    }
}
