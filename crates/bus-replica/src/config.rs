//! [`ReplicaConfig`]: the validated runtime settings of the replica plane,
//! what `bus-config`'s `[replicas]` section converts into (with
//! `[bus] handshake_grace`).
//!
//! [`ReplicaConfig::validate`] is the last line of defence for a config built
//! in code; a TOML file has already been checked by `bus-config`, whose
//! errors name the TOML field.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bus_core::limits::DEFAULT_HANDSHAKE_GRACE;

use crate::{
    auth::Keys,
    handshake::{HandshakeConfig, PeerSet, dials},
    limits::DEFAULT_RECONNECT_MAX,
    psk::{PskError, load_key},
};

/// One other replica of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerConfig {
    /// Its replica id.
    pub id: u8,
    /// Where its replica plane listens.
    pub addr: SocketAddr,
}

/// The replica plane of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaConfig {
    /// Cluster id stamped into every replica frame and required on the
    /// peers'.
    pub cluster: u128,
    /// This node's replica id.
    pub self_id: u8,
    /// The signing key's file (`replicas.psk_file`).
    pub psk_file: PathBuf,
    /// The verify-only key's file, during a key rotation
    /// (`replicas.verify_psk_file`).
    pub verify_psk_file: Option<PathBuf>,
    /// Where the replica listener binds.
    pub listen: SocketAddr,
    /// The other replicas; this node dials those with a higher id.
    pub peers: Vec<PeerConfig>,
    /// Refuse unsealed application frames from replicas (`ChecksumMismatch`).
    pub require_sealed: bool,
    /// Run the replica plane over TLS 1.3.
    pub tls: bool,
    /// PEM bundle the dialer verifies peers' certificates against. `None`:
    /// the node's own self-signed development certificate (`bus-config`
    /// already resolves an unset `replicas.ca_file` to `tls.cert`).
    pub ca_file: Option<PathBuf>,
    /// Upper bound of the redial backoff.
    pub reconnect_max: Duration,
    /// Bound on the whole handshake (`[bus] handshake_grace`).
    pub handshake_grace: Duration,
}

impl ReplicaConfig {
    /// A node of `cluster` with id `self_id`, its key in `psk_file`,
    /// listening on `listen`, with no peers yet and the other settings at
    /// their defaults (sealed frames required, plain TCP, `reconnect_max`
    /// 5 s, `handshake_grace` 10 s).
    pub fn new(
        cluster: u128,
        self_id: u8,
        psk_file: impl Into<PathBuf>,
        listen: SocketAddr,
    ) -> Self {
        Self {
            cluster,
            self_id,
            psk_file: psk_file.into(),
            verify_psk_file: None,
            listen,
            peers: Vec::new(),
            require_sealed: true,
            tls: false,
            ca_file: None,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            handshake_grace: DEFAULT_HANDSHAKE_GRACE,
        }
    }

    /// Checks the rules the mesh relies on; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.psk_file.as_os_str().is_empty() {
            return Err(ConfigError::NoPskFile);
        }
        let mut seen = PeerSet::new();
        for peer in &self.peers {
            if peer.id == self.self_id {
                return Err(ConfigError::SelfAmongPeers { id: peer.id });
            }
            if !seen.insert(peer.id) {
                return Err(ConfigError::DuplicatePeer { id: peer.id });
            }
        }
        if self.reconnect_max.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "reconnect_max",
            });
        }
        if self.handshake_grace.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "handshake_grace",
            });
        }
        Ok(())
    }

    /// The configured peer ids.
    pub fn peer_set(&self) -> PeerSet {
        self.peers.iter().map(|peer| peer.id).collect()
    }

    /// The peers this node dials: those with a higher id (spec §4).
    pub fn dialed_peers(&self) -> impl Iterator<Item = &PeerConfig> + '_ {
        self.peers
            .iter()
            .filter(|peer| dials(self.self_id, peer.id))
    }

    /// Reads the key files: `psk_file` signs and verifies, `verify_psk_file`
    /// (when set) only verifies. Call again to reload them (SIGHUP).
    pub fn load_keys(&self) -> Result<Keys, KeyFileError> {
        let signing = load_key(&self.psk_file).map_err(|source| KeyFileError {
            field: "replicas.psk_file",
            source,
        })?;
        let mut keys = Keys::new(signing);
        if let Some(path) = &self.verify_psk_file {
            let verify_only = load_key(path).map_err(|source| KeyFileError {
                field: "replicas.verify_psk_file",
                source,
            })?;
            keys = keys.with_verify_only(verify_only);
        }
        Ok(keys)
    }

    /// What every handshake of this node needs, with `keys` from
    /// [`load_keys`](Self::load_keys).
    pub fn handshake_config(&self, keys: Keys) -> HandshakeConfig {
        HandshakeConfig::new(self.cluster, self.self_id, self.peer_set(), keys)
    }
}

/// A [`ReplicaConfig`] the mesh cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `psk_file` is empty.
    #[error("replica config: psk_file is not set")]
    NoPskFile,
    /// A peer has this node's own id.
    #[error("replica config: peer id {id} is this node's own id (self_id)")]
    SelfAmongPeers {
        /// The id.
        id: u8,
    },
    /// Two peers share an id.
    #[error("replica config: peer id {id} appears twice")]
    DuplicatePeer {
        /// The id.
        id: u8,
    },
    /// A duration that must be positive is zero.
    #[error("replica config: {field} must be > 0 s")]
    ZeroDuration {
        /// The field.
        field: &'static str,
    },
}

/// A key file named by the config was refused; the message names the
/// config field and the file.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct KeyFileError {
    /// The TOML field that names the file (`replicas.psk_file`,
    /// `replicas.verify_psk_file`).
    pub field: &'static str,
    /// Why the file was refused.
    #[source]
    pub source: PskError,
}
