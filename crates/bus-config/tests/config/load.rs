//! A user file merged over the defaults: only its keys change, typos and
//! wrong types are refused naming the key.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bus_config::{ByteSize, Config, Error, LogLevel, Placement, SlowConsumer};
use bus_core::SlowConsumerPolicy;

fn parse_error(text: &str) -> String {
    match Config::from_toml_str(text) {
        Err(error @ Error::Parse { .. }) => error.to_string(),
        other => panic!("expected a parse error for {text:?}, got {other:?}"),
    }
}

#[test]
fn partial_file_overrides_only_its_keys() {
    let config = Config::from_toml_str("[bus]\nmax_batch_frames = 32\n").unwrap();
    let mut expected = Config::embedded_defaults();
    assert_ne!(expected.bus.max_batch_frames, 32);
    expected.bus.max_batch_frames = 32;
    assert_eq!(config, expected);
}

#[test]
fn overrides_in_several_sections_keep_the_other_keys() {
    let config = Config::from_toml_str(
        r#"
        [bus]
        max_message_size = "1 MiB"
        read_buffer = 8192
        close_grace = "250 ms"
        idle_timeout = "2 min"
        slow_consumer = "disconnect"

        [tcp]
        listen = "0.0.0.0:9000"
        nodelay = false

        [quic]
        keep_alive = "off"

        [shards]
        count = 4
        placement = "least-connections"

        [log]
        level = "debug"
        "#,
    )
    .unwrap();
    let mut expected = Config::embedded_defaults();
    expected.bus.max_message_size = ByteSize::mib(1);
    expected.bus.read_buffer = ByteSize::kib(8);
    expected.bus.close_grace = Duration::from_millis(250);
    expected.bus.idle_timeout = Some(Duration::from_mins(2));
    expected.bus.slow_consumer = SlowConsumer::Disconnect;
    expected.tcp.listen = "0.0.0.0:9000".parse().unwrap();
    expected.tcp.nodelay = false;
    expected.quic.keep_alive = None;
    expected.shards.count = 4;
    expected.shards.placement = Placement::LeastConnections;
    expected.log.level = LogLevel::Debug;
    assert_eq!(config, expected);
}

#[test]
fn overrides_reach_the_runtime_types() {
    let config = Config::from_toml_str(
        r#"
        [bus]
        max_message_size = "1 MiB"
        slow_consumer = "disconnect"
        require_sealed_clients = true
        [tcp]
        backlog = 16
        connect_timeout = "1 s"
        [replicas]
        require_sealed = false
        keepalive = "250 ms"
        idle_timeout = "2 s"
        "#,
    )
    .unwrap();
    let bus = config.bus_config(0);
    assert_eq!(bus.replica_keepalive, Some(Duration::from_millis(250)));
    assert_eq!(bus.replica_idle_timeout, Some(Duration::from_secs(2)));
    assert_eq!(bus.max_message_size_bytes, 1 << 20);
    assert_eq!(bus.slow_consumer, SlowConsumerPolicy::Disconnect);
    assert!(bus.require_sealed_clients);
    assert!(!bus.require_sealed_replicas);
    assert_eq!(config.tcp_listener_config().backlog, 16);
    assert_eq!(
        config.tcp_connector_config().connect_timeout,
        Duration::from_secs(1)
    );
}

#[test]
fn replica_section_with_peers_and_cluster() {
    let config = Config::from_toml_str(
        r#"
        [replicas]
        enabled = true
        cluster = "0xdead_beef"
        self_id = 0
        psk_file = "/etc/bus/replica.psk"
        peers = [{ id = 1, addr = "127.0.0.1:7176" }, { id = 2, addr = "[::1]:7276" }]
        "#,
    )
    .unwrap();
    let replicas = &config.replicas;
    assert!(replicas.enabled);
    assert_eq!(replicas.cluster, 0xdead_beef);
    assert_eq!(replicas.verify_psk_file, None);
    assert_eq!(replicas.ca_file, None);
    assert_eq!(replicas.reconnect_max, Duration::from_secs(5));
    assert!(replicas.require_sealed);
    assert!(!replicas.tls);
    assert_eq!(
        replicas.psk_file,
        Some(PathBuf::from("/etc/bus/replica.psk"))
    );
    let peers: Vec<(u8, SocketAddr)> = replicas.peers.iter().map(|p| (p.id, p.addr)).collect();
    assert_eq!(
        peers,
        [
            (1, "127.0.0.1:7176".parse().unwrap()),
            (2, "[::1]:7276".parse().unwrap())
        ]
    );
}

#[test]
fn every_replica_key_of_the_contract_is_read() {
    let config = Config::from_toml_str(
        r#"
        [replicas]
        enabled = true
        cluster = "1234"
        self_id = 2
        psk_file = "/etc/bus/new.psk"
        verify_psk_file = "/etc/bus/old.psk"
        listen = "0.0.0.0:7275"
        peers = [{ id = 0, addr = "10.0.0.1:7075" }, { id = 1, addr = "10.0.0.2:7175" }]
        require_sealed = false
        tls = true
        ca_file = "/etc/bus/cluster-ca.pem"
        reconnect_max = "750 ms"
        "#,
    )
    .unwrap();
    let replicas = &config.replicas;
    assert_eq!(replicas.cluster, 1234);
    assert_eq!(replicas.self_id, 2);
    assert_eq!(replicas.psk_file, Some(PathBuf::from("/etc/bus/new.psk")));
    assert_eq!(
        replicas.verify_psk_file,
        Some(PathBuf::from("/etc/bus/old.psk"))
    );
    assert_eq!(replicas.listen, "0.0.0.0:7275".parse().unwrap());
    assert_eq!(replicas.peers.len(), 2);
    assert_eq!(replicas.peers[1].id, 1);
    assert_eq!(replicas.peers[1].addr, "10.0.0.2:7175".parse().unwrap());
    assert!(!replicas.require_sealed);
    assert!(replicas.tls);
    assert_eq!(
        replicas.ca_file,
        Some(PathBuf::from("/etc/bus/cluster-ca.pem"))
    );
    assert_eq!(replicas.reconnect_max, Duration::from_millis(750));
}

#[test]
fn cluster_id_accepts_decimal_strings_hex_strings_and_integers() {
    let cluster = |value: &str| {
        Config::from_toml_str(&format!("[replicas]\ncluster = {value}"))
            .unwrap()
            .replicas
            .cluster
    };
    assert_eq!(cluster("\"0x1\""), 1);
    assert_eq!(
        cluster("\"340282366920938463463374607431768211455\""),
        u128::MAX
    );
    assert_eq!(cluster("\"0xffffffffffffffffffffffffffffffff\""), u128::MAX);
    assert_eq!(cluster("42"), 42);
    assert_eq!(cluster("0x2a"), 42); // a TOML hex integer
}

#[test]
fn tls_paths_are_optional() {
    let config = Config::from_toml_str(
        "[tls]\nenabled = true\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(config.tls.cert, Some(PathBuf::from("c.pem")));
    assert_eq!(config.tls.client_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(Config::embedded_defaults().tls.cert, None);
}

#[test]
fn arrays_replace_the_default_whole() {
    let config =
        Config::from_toml_str("[ws]\nallowed_origins = [\"https://a.example\", \"http://b:80\"]\n")
            .unwrap();
    assert_eq!(
        config.ws.allowed_origins,
        ["https://a.example", "http://b:80"]
    );
}

#[test]
fn zero_turns_an_optional_duration_off() {
    let config =
        Config::from_toml_str("[bus]\nidle_timeout = \"0 s\"\n[quic]\nkeep_alive = \"0 s\"")
            .unwrap();
    assert_eq!(config.bus.idle_timeout, None);
    assert_eq!(config.quic.keep_alive, None);
}

#[test]
fn unknown_key_is_rejected_naming_it() {
    let error = parse_error("[bus]\nmax_batch_frame = 3\n");
    assert!(error.contains("unknown field `max_batch_frame`"), "{error}");
    assert!(error.contains("bus"), "{error}");
}

#[test]
fn unknown_section_is_rejected_naming_it() {
    let error = parse_error("[buss]\nmax_batch_frames = 3\n");
    assert!(error.contains("unknown field `buss`"), "{error}");
}

#[test]
fn unknown_peer_key_is_rejected_naming_it() {
    let error = parse_error("[replicas]\npeers = [{ id = 1, adr = \"127.0.0.1:1\" }]\n");
    assert!(error.contains("unknown field `adr`"), "{error}");
}

#[test]
fn wrong_type_names_the_key() {
    let error = parse_error("[bus]\nqueue_capacity_frames = \"many\"\n");
    assert!(error.contains("bus.queue_capacity_frames"), "{error}");
}

#[test]
fn negative_count_names_the_key() {
    let error = parse_error("[bus]\nmax_batch_frames = -1\n");
    assert!(error.contains("bus.max_batch_frames"), "{error}");
}

#[test]
fn bad_size_unit_names_the_key_and_the_unit() {
    let error = parse_error("[bus]\nread_buffer = \"12 XB\"\n");
    assert!(
        error.contains(r#"invalid size "12 XB": unknown unit "XB" (use B, KiB, MiB, GiB"#),
        "{error}"
    );
    assert!(error.contains("bus.read_buffer"), "{error}");
}

#[test]
fn duration_without_unit_names_the_key() {
    let error = parse_error("[bus]\nclose_grace = \"5\"\n");
    assert!(error.contains("missing unit"), "{error}");
    assert!(error.contains("bus.close_grace"), "{error}");
    let error = parse_error("[bus]\nclose_grace = 5\n");
    assert!(error.contains("bus.close_grace"), "{error}");
}

#[test]
fn off_is_refused_where_a_duration_is_required() {
    let error = parse_error("[bus]\nhandshake_grace = \"off\"\n");
    assert!(error.contains("\"off\" is not allowed"), "{error}");
    assert!(error.contains("bus.handshake_grace"), "{error}");
}

#[test]
fn host_names_are_refused_naming_the_key() {
    let error = parse_error("[tcp]\nlisten = \"localhost:7070\"\n");
    assert!(error.contains("tcp.listen"), "{error}");
    assert!(error.contains("host names are not resolved"), "{error}");
}

#[test]
fn unknown_enum_value_names_the_key() {
    let error = parse_error("[bus]\nslow_consumer = \"drop\"\n");
    assert!(error.contains("bus.slow_consumer"), "{error}");
    let error = parse_error("[shards]\nplacement = \"random\"\n");
    assert!(error.contains("shards.placement"), "{error}");
}

#[test]
fn toml_syntax_error_names_the_line() {
    let error = parse_error("[bus]\nmax_batch_frames = = 3\n");
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn load_reads_a_file() {
    let path = std::env::temp_dir().join(format!("bus-config-{}.toml", std::process::id()));
    std::fs::write(&path, "[tcp]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().tcp.listen.port(), 9999);
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = std::env::temp_dir().join("bus-config-this-file-does-not-exist.toml");
    let error = Config::load(&path).unwrap_err();
    assert!(
        matches!(&error, Error::Io { path: p, .. } if *p == path),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("bus-config-this-file-does-not-exist.toml"),
        "{error}"
    );
}
