//! Replica TLS: the node's certificate on the replica listener, and the
//! dialer's verification of each peer against `replicas.ca_file`.
//!
//! The listener side is the node's [`ServerTls`] (shared with its client
//! TLS listener, reloaded by its owner). The dialer side is one
//! [`ClientTls`] per dialed peer, expecting a certificate valid for the
//! peer's IP address; [`MeshTls::reload`] rebuilds them from the CA file.
//! TLS 1.3 only and ALPN `bus.v1` on both sides are `bus-tls`'s policy.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
};

use bus_replica::PeerConfig;
use bus_tcp::TcpConnectorConfig;
use bus_tls::{ClientTls, ServerTls, TlsClientConfig};

use crate::error::MeshError;

/// The replica plane's TLS state.
#[derive(Debug)]
pub(crate) struct MeshTls {
    server: ServerTls,
    ca_file: Option<PathBuf>,
    connector: TcpConnectorConfig,
    peers: Vec<PeerConfig>,
    clients: RwLock<Arc<HashMap<u8, ClientTls>>>,
}

impl MeshTls {
    /// TLS with the node's certificate `server`, verifying the dialed
    /// `peers` against `ca_file` (`None`: the node's own certificate).
    pub(crate) fn new(
        server: ServerTls,
        ca_file: Option<PathBuf>,
        connector: TcpConnectorConfig,
        peers: Vec<PeerConfig>,
    ) -> Result<Self, MeshError> {
        let tls = Self {
            server,
            ca_file,
            connector,
            peers,
            clients: RwLock::default(),
        };
        tls.reload()?;
        Ok(tls)
    }

    /// The listener's certificate state.
    pub(crate) fn server(&self) -> &ServerTls {
        &self.server
    }

    /// The client setup for dialing `peer`.
    pub(crate) fn client(&self, peer: u8) -> Option<ClientTls> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .cloned()
    }

    /// Re-reads the CA bundle for new dials; on error the current one stays.
    pub(crate) fn reload(&self) -> Result<(), MeshError> {
        let ca = self
            .ca_file
            .clone()
            .unwrap_or_else(|| self.server.cert_path());
        let mut clients = HashMap::with_capacity(self.peers.len());
        for peer in &self.peers {
            let mut config = TlsClientConfig::new(&ca, peer.addr.ip().to_string());
            config.tcp = self.connector.clone();
            clients.insert(peer.id, ClientTls::new(&config)?);
        }
        *self.clients.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(clients);
        Ok(())
    }
}
