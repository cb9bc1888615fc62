//! The embedded defaults: they load, validate, and agree with the defaults of
//! the runtime types, so the TOML file and the code cannot drift apart.

use bus_config::Config;
use bus_core::BusConfig;
use bus_tcp::{TcpConnectorConfig, TcpListenerConfig};

#[test]
fn embedded_defaults_parse_and_validate() {
    let config = Config::embedded_defaults();
    config.validate().unwrap();
}

#[test]
fn empty_user_file_gives_the_embedded_defaults() {
    assert_eq!(
        Config::from_toml_str("").unwrap(),
        Config::embedded_defaults()
    );
}

#[test]
fn defaults_file_as_user_file_changes_nothing() {
    assert_eq!(
        Config::from_toml_str(Config::default_toml()).unwrap(),
        Config::embedded_defaults()
    );
}

#[test]
fn embedded_defaults_equal_bus_core_defaults() {
    let config = Config::embedded_defaults();
    assert_eq!(config.bus_config(0), BusConfig::default());
    config.bus_config(0).validate().unwrap();
}

#[test]
fn bus_config_carries_the_shard_index() {
    let bus = Config::embedded_defaults().bus_config(7);
    assert_eq!(bus.shard, 7);
    let mut expected = BusConfig::default();
    expected.shard = 7;
    assert_eq!(bus, expected);
}

#[test]
fn embedded_defaults_equal_bus_tcp_defaults() {
    let config = Config::embedded_defaults();
    let listen = "127.0.0.1:7070".parse().unwrap();
    assert_eq!(config.tcp_listener_config(), TcpListenerConfig::new(listen));
    assert_eq!(config.tcp_connector_config(), TcpConnectorConfig::default());
}

#[test]
fn defaults_file_shows_every_optional_key() {
    // Optional keys have no default value, so they appear commented out; a
    // reader of the file still learns they exist.
    for key in [
        "# cert = ",
        "# key = ",
        "# client_ca = ",
        "# psk_file = ",
        "# verify_psk_file = ",
        "# ca_file = ",
        "#   peers = [",
    ] {
        assert!(
            Config::default_toml().contains(key),
            "defaults.toml lacks {key:?}"
        );
    }
}

#[test]
fn every_default_key_has_a_comment() {
    // Each key line follows a comment line or another key that shares the
    // comment above it (such as udp_send_buffer and udp_receive_buffer).
    let mut commented = false;
    for line in Config::default_toml().lines().map(str::trim) {
        if line.starts_with('#') {
            commented = true;
        } else if line.is_empty() || line.starts_with('[') {
            commented = false;
        } else {
            assert!(commented, "defaults.toml: {line:?} has no comment");
        }
    }
}

#[test]
fn shard_count_resolves_zero_to_the_cores() {
    let config = Config::embedded_defaults();
    assert_eq!(config.shards.count, 0);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(usize::from(config.shard_count()), cores.min(1024));

    let config = Config::from_toml_str("[shards]\ncount = 3").unwrap();
    assert_eq!(config.shard_count(), 3);
}

#[test]
fn shards_section_converts_and_matches_the_runtime_defaults() {
    let config = Config::embedded_defaults();
    let shards = config.shards_config();
    let mut expected = bus_shard::ShardsConfig::default();
    expected.count = config.shard_count();
    assert_eq!(shards, expected);
    assert_eq!(
        shards.inbox_capacity_frames,
        bus_shard::config::DEFAULT_INBOX_CAPACITY_FRAMES
    );
    shards.validate().unwrap();

    let config = Config::from_toml_str(
        "[shards]\ncount = 3\npin_cpus = true\nplacement = \"least-connections\"\n\
         shard0_takes_clients = false\ninbox_capacity_frames = 8",
    )
    .unwrap();
    let shards = config.shards_config();
    assert_eq!(shards.count, 3);
    assert!(shards.pin_cpus);
    assert_eq!(shards.placement, bus_shard::Placement::LeastConnections);
    assert!(!shards.shard0_takes_clients);
    assert_eq!(shards.inbox_capacity_frames, 8);
}
