//! The `[replicas]` section as `bus-replica` settings.
#![cfg(feature = "replica")]

use std::{path::PathBuf, time::Duration};

use bus_config::Config;
use bus_replica::{PeerConfig, ReplicaConfig};

#[test]
fn a_disabled_replica_plane_converts_to_nothing() {
    assert_eq!(Config::embedded_defaults().replicas_config(), None);
}

#[test]
fn the_section_converts_with_the_handshake_grace() {
    let config = Config::from_toml_str(
        r#"
        [bus]
        handshake_grace = "3 s"
        [replicas]
        enabled = true
        cluster = "0x2a"
        self_id = 1
        psk_file = "/k/new.psk"
        verify_psk_file = "/k/old.psk"
        listen = "127.0.0.1:7175"
        peers = [{ id = 0, addr = "127.0.0.1:7075" }, { id = 2, addr = "127.0.0.1:7275" }]
        require_sealed = false
        tls = true
        ca_file = "/k/ca.pem"
        reconnect_max = "2 s"
        "#,
    )
    .unwrap();
    let replicas = config.replicas_config().unwrap();
    let mut expected = ReplicaConfig::new(42, 1, "/k/new.psk", "127.0.0.1:7175".parse().unwrap());
    expected.verify_psk_file = Some(PathBuf::from("/k/old.psk"));
    expected.peers = vec![
        PeerConfig {
            id: 0,
            addr: "127.0.0.1:7075".parse().unwrap(),
        },
        PeerConfig {
            id: 2,
            addr: "127.0.0.1:7275".parse().unwrap(),
        },
    ];
    expected.require_sealed = false;
    expected.tls = true;
    expected.ca_file = Some(PathBuf::from("/k/ca.pem"));
    expected.reconnect_max = Duration::from_secs(2);
    expected.handshake_grace = Duration::from_secs(3);
    assert_eq!(replicas, expected);
    replicas.validate().unwrap();
}

#[test]
fn the_defaults_agree_with_bus_replica() {
    let config =
        Config::from_toml_str("[replicas]\nenabled = true\npsk_file = \"/k/psk\"").unwrap();
    let replicas = config.replicas_config().unwrap();
    let expected = ReplicaConfig::new(0, 0, "/k/psk", "127.0.0.1:7075".parse().unwrap());
    assert_eq!(replicas, expected);
    assert_eq!(
        replicas.reconnect_max,
        bus_replica::limits::DEFAULT_RECONNECT_MAX
    );
}

#[test]
fn an_unset_ca_file_is_the_tls_certificate() {
    let config = Config::from_toml_str(
        "[tls]\ncert = \"/k/node.pem\"\nkey = \"/k/node.key\"\n\
         [replicas]\nenabled = true\ntls = true\npsk_file = \"/k/psk\"",
    )
    .unwrap();
    assert_eq!(
        config.replicas_config().unwrap().ca_file,
        Some(PathBuf::from("/k/node.pem"))
    );
    // The self-signed development certificate has no path in the config.
    let config =
        Config::from_toml_str("[replicas]\nenabled = true\ntls = true\npsk_file = \"/k/psk\"")
            .unwrap();
    assert_eq!(config.replicas_config().unwrap().ca_file, None);
}

#[test]
fn a_psk_file_unset_in_code_is_refused_at_run_time() {
    let mut config = Config::embedded_defaults();
    config.replicas.enabled = true;
    let replicas = config.replicas_config().unwrap();
    assert_eq!(
        replicas.validate(),
        Err(bus_replica::ConfigError::NoPskFile)
    );
}
