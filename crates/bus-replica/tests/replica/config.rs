//! `ReplicaConfig`: its validation, the peers it dials, and its key files.

use std::time::Duration;

use bus_replica::{ConfigError, Key, PeerConfig, PskError, ReplicaConfig};

use crate::common::TempDir;

fn config(self_id: u8, peers: &[u8]) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(7, self_id, "/etc/bus/replica.psk", addr(7075));
    config.peers = peers
        .iter()
        .map(|&id| PeerConfig {
            id,
            addr: addr(7100 + u16::from(id)),
        })
        .collect();
    config
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn defaults() {
    let config = ReplicaConfig::new(1, 0, "psk", addr(1));
    assert!(config.require_sealed);
    assert!(!config.tls);
    assert_eq!(config.reconnect_max, Duration::from_secs(5));
    assert_eq!(config.handshake_grace, Duration::from_secs(10));
    assert_eq!(config.verify_psk_file, None);
    assert_eq!(config.ca_file, None);
    config.validate().unwrap();
}

#[test]
fn validation_names_the_rule() {
    assert_eq!(config(1, &[0, 2]).validate(), Ok(()));
    assert_eq!(
        config(1, &[0, 1]).validate(),
        Err(ConfigError::SelfAmongPeers { id: 1 })
    );
    assert_eq!(
        config(1, &[2, 0, 2]).validate(),
        Err(ConfigError::DuplicatePeer { id: 2 })
    );
    let mut no_psk = config(0, &[1]);
    no_psk.psk_file = "".into();
    assert_eq!(no_psk.validate(), Err(ConfigError::NoPskFile));
    let mut zero = config(0, &[1]);
    zero.reconnect_max = Duration::ZERO;
    assert_eq!(
        zero.validate(),
        Err(ConfigError::ZeroDuration {
            field: "reconnect_max"
        })
    );
    let mut zero = config(0, &[1]);
    zero.handshake_grace = Duration::ZERO;
    assert_eq!(
        zero.validate().unwrap_err().to_string(),
        "replica config: handshake_grace must be > 0 s"
    );
}

#[test]
fn a_node_dials_the_higher_ids_and_accepts_the_lower_ones() {
    let config = config(2, &[4, 0, 3, 1]);
    let dialed: Vec<u8> = config.dialed_peers().map(|peer| peer.id).collect();
    assert_eq!(dialed, [4, 3]);
    assert_eq!(config.peer_set().iter().collect::<Vec<_>>(), [0, 1, 3, 4]);
    let handshake = config.handshake_config(bus_replica::Keys::new(Key::derive(&[0; 32])));
    assert_eq!((handshake.cluster, handshake.self_id), (7, 2));
    assert_eq!(handshake.peers, config.peer_set());
}

#[test]
fn the_key_files_load_and_errors_name_the_field() {
    let dir = TempDir::new("config-keys");
    let mut config = config(0, &[1]);
    config.psk_file = dir.file("current", &[1; 32], 0o600);
    let keys = config.load_keys().unwrap();
    assert_eq!(keys.signing(), &Key::derive(&[1; 32]));
    assert_eq!(keys.verify_only(), None);

    config.verify_psk_file = Some(dir.file("previous", &[2; 40], 0o600));
    let keys = config.load_keys().unwrap();
    assert_eq!(keys.verify_only(), Some(&Key::derive(&[2; 40])));

    let empty = dir.file("empty", b"", 0o600);
    config.verify_psk_file = Some(empty.clone());
    let error = config.load_keys().unwrap_err();
    assert_eq!(error.field, "replicas.verify_psk_file");
    assert!(matches!(error.source, PskError::Empty { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "replicas.verify_psk_file: pre-shared key file {} is empty: write at least 32 \
             random bytes into it",
            empty.display()
        )
    );

    config.psk_file = dir.file("open", &[1; 32], 0o644);
    let error = config.load_keys().unwrap_err();
    assert_eq!(error.field, "replicas.psk_file");
    assert!(error.to_string().contains("chmod 600"), "{error}");
}
