//! One test per validation rule: each rejects with an error that names the
//! field (by its dotted TOML path), the value and what is allowed.

use std::time::Duration;

use bus_config::{Config, Error};

/// Loads `text`, expects [`Error::Invalid`] for `field`, and returns the
/// message, which must name the field.
fn invalid(text: &str, field: &str) -> String {
    let error = Config::from_toml_str(text).expect_err(text);
    check_invalid(&error, field)
}

fn check_invalid(error: &Error, field: &str) -> String {
    let message = error.to_string();
    match error {
        Error::Invalid { field: f, .. } => assert_eq!(f, field, "{message}"),
        other => panic!("expected Error::Invalid for {field}, got {other:?}"),
    }
    assert!(message.starts_with(&format!("{field} = ")), "{message}");
    message
}

/// Loads `text`, expects [`Error::Parse`] (a rule the type enforces), and
/// checks that the message names `field`.
fn unparsable(text: &str, field: &str) -> String {
    let error = Config::from_toml_str(text).expect_err(text);
    let message = error.to_string();
    assert!(matches!(error, Error::Parse { .. }), "{error:?}");
    assert!(message.contains(field), "{message}");
    message
}

#[test]
fn the_message_says_field_value_and_range() {
    assert_eq!(
        invalid("[bus]\nmax_batch_frames = 0", "bus.max_batch_frames"),
        "bus.max_batch_frames = 0 is out of range: allowed 1 ..= 512"
    );
}

// [bus]

#[test]
fn bus_max_message_size_below_a_header() {
    assert_eq!(
        invalid(
            "[bus]\nmax_message_size = \"255 B\"",
            "bus.max_message_size"
        ),
        "bus.max_message_size = 255 B is out of range: allowed 256 B ..= 1 GiB"
    );
}

#[test]
fn bus_max_message_size_above_1_gib() {
    invalid(
        "[bus]\nmax_message_size = \"2 GiB\"",
        "bus.max_message_size",
    );
}

#[test]
fn bus_queue_capacity_frames_zero() {
    let message = invalid(
        "[bus]\nqueue_capacity_frames = 0",
        "bus.queue_capacity_frames",
    );
    assert!(message.ends_with("allowed >= 1"), "{message}");
}

#[test]
fn bus_queue_capacity_bytes_below_max_message_size() {
    let message = invalid(
        "[bus]\nmax_message_size = \"1 MiB\"\nqueue_capacity_bytes = \"512 KiB\"",
        "bus.queue_capacity_bytes",
    );
    assert!(
        message.contains(">= bus.max_message_size (1 MiB)"),
        "{message}"
    );
}

#[test]
fn bus_inbound_budget_below_max_message_size() {
    invalid("[bus]\ninbound_budget = \"1 MiB\"", "bus.inbound_budget");
}

#[test]
fn bus_max_outstanding_requests_zero() {
    invalid(
        "[bus]\nmax_outstanding_requests = 0",
        "bus.max_outstanding_requests",
    );
}

#[test]
fn bus_max_batch_frames_above_512() {
    invalid("[bus]\nmax_batch_frames = 513", "bus.max_batch_frames");
}

#[test]
fn bus_read_buffer_below_4_kib() {
    assert_eq!(
        invalid("[bus]\nread_buffer = \"2 KiB\"", "bus.read_buffer"),
        "bus.read_buffer = 2 KiB is out of range: allowed 4 KiB ..= 16 MiB"
    );
}

#[test]
fn bus_read_buffer_above_16_mib() {
    invalid("[bus]\nread_buffer = \"32 MiB\"", "bus.read_buffer");
}

#[test]
fn bus_handshake_grace_zero() {
    assert_eq!(
        invalid("[bus]\nhandshake_grace = \"0 s\"", "bus.handshake_grace"),
        "bus.handshake_grace = 0 s is out of range: allowed > 0 s"
    );
}

#[test]
fn bus_close_grace_zero() {
    invalid("[bus]\nclose_grace = \"0 ms\"", "bus.close_grace");
}

#[test]
fn bus_close_peer_timeout_zero() {
    invalid(
        "[bus]\nclose_peer_timeout = \"0 s\"",
        "bus.close_peer_timeout",
    );
}

#[test]
fn bus_idle_timeout_zero_set_in_code() {
    // From TOML, zero means "off"; a zero set in code is caught here.
    let mut config = Config::embedded_defaults();
    config.bus.idle_timeout = Some(Duration::ZERO);
    check_invalid(&config.validate().unwrap_err(), "bus.idle_timeout");
}

#[test]
fn bus_slow_consumer_unknown_policy() {
    unparsable("[bus]\nslow_consumer = \"drop\"", "bus.slow_consumer");
}

// [tcp]

#[test]
fn tcp_backlog_zero() {
    invalid("[tcp]\nbacklog = 0", "tcp.backlog");
}

#[test]
fn tcp_backlog_above_65535() {
    invalid("[tcp]\nbacklog = 70000", "tcp.backlog");
}

#[test]
fn tcp_connect_timeout_zero() {
    invalid("[tcp]\nconnect_timeout = \"0 s\"", "tcp.connect_timeout");
}

#[test]
fn tcp_listen_not_an_address() {
    unparsable("[tcp]\nlisten = \"127.0.0.1\"", "tcp.listen");
}

// [tls]

#[test]
fn tls_cert_without_key() {
    invalid("[tls]\ncert = \"cert.pem\"", "tls.key");
}

#[test]
fn tls_key_without_cert() {
    invalid("[tls]\nkey = \"key.pem\"", "tls.cert");
}

#[test]
fn tls_enabled_without_certificate_needs_self_signed() {
    let message = invalid(
        "[tls]\nenabled = true\nself_signed = false",
        "tls.self_signed",
    );
    assert!(message.contains("tls.enabled"), "{message}");
}

#[test]
fn wss_enabled_without_certificate_needs_self_signed() {
    let message = invalid(
        "[tls]\nenabled = false\nself_signed = false\n[quic]\nenabled = false\n[wss]\nenabled = true",
        "tls.self_signed",
    );
    assert!(message.contains("wss.enabled"), "{message}");
}

#[test]
fn tls_with_certificate_does_not_need_self_signed() {
    Config::from_toml_str(
        "[tls]\nenabled = true\nself_signed = false\ncert = \"c.pem\"\nkey = \"k.pem\"",
    )
    .unwrap();
}

// [ws] and [wss]

#[test]
fn ws_path_without_leading_slash() {
    assert_eq!(
        invalid("[ws]\npath = \"bus\"", "ws.path"),
        "ws.path = \"bus\" is out of range: allowed a path starting with \"/\""
    );
}

#[test]
fn wss_path_without_leading_slash() {
    invalid("[wss]\npath = \"\"", "wss.path");
}

#[test]
fn ws_allowed_origin_with_a_path() {
    invalid(
        "[ws]\nallowed_origins = [\"https://ok.example\", \"https://bad.example/app\"]",
        "ws.allowed_origins[1]",
    );
}

#[test]
fn ws_read_buffer_below_4_kib() {
    invalid("[ws]\nread_buffer = \"1 KiB\"", "ws.read_buffer");
}

#[test]
fn wss_write_buffer_above_16_mib() {
    invalid("[wss]\nwrite_buffer = \"17 MiB\"", "wss.write_buffer");
}

#[test]
fn ws_max_frame_size_above_max_message_size() {
    let message = invalid(
        "[bus]\nmax_message_size = \"1 MiB\"\n[ws]\nenabled = true\nmax_frame_size = \"2 MiB\"",
        "ws.max_frame_size",
    );
    assert!(
        message.contains("bus.max_message_size (1 MiB)"),
        "{message}"
    );
}

#[test]
fn unset_ws_frame_size_follows_a_lower_max_message_size() {
    let config = Config::from_toml_str("[bus]\nmax_message_size = \"1 MiB\"").unwrap();
    assert_eq!(
        config
            .ws
            .effective_max_frame_size(config.bus.max_message_size),
        bus_config::ByteSize::mib(1)
    );
    let config = Config::embedded_defaults();
    assert_eq!(
        config
            .wss
            .effective_max_frame_size(config.bus.max_message_size),
        bus_config::ByteSize::mib(16)
    );
}

#[test]
fn wss_max_frame_size_above_max_message_size() {
    invalid(
        "[bus]\nmax_message_size = \"1 MiB\"\n[wss]\nenabled = true\nmax_frame_size = \"2 MiB\"",
        "wss.max_frame_size",
    );
}

#[test]
fn ws_max_frame_size_below_a_header() {
    invalid("[ws]\nmax_frame_size = \"255 B\"", "ws.max_frame_size");
}

#[test]
fn disabled_ws_does_not_hold_back_a_smaller_max_message_size() {
    Config::from_toml_str("[bus]\nmax_message_size = \"1 MiB\"").unwrap();
}

// [quic]

#[test]
fn quic_max_idle_timeout_zero() {
    invalid(
        "[quic]\nmax_idle_timeout = \"0 s\"",
        "quic.max_idle_timeout",
    );
}

#[test]
fn quic_keep_alive_not_below_max_idle_timeout() {
    let message = invalid("[quic]\nkeep_alive = \"30 s\"", "quic.keep_alive");
    assert!(
        message.contains("quic.max_idle_timeout (30 s)"),
        "{message}"
    );
}

#[test]
fn quic_stream_receive_window_below_1_kib() {
    invalid(
        "[quic]\nstream_receive_window = \"512 B\"",
        "quic.stream_receive_window",
    );
}

#[test]
fn quic_connection_receive_window_above_1_gib() {
    invalid(
        "[quic]\nconnection_receive_window = \"2 GiB\"",
        "quic.connection_receive_window",
    );
}

#[test]
fn quic_stream_window_above_connection_window() {
    let message = invalid(
        "[quic]\nstream_receive_window = \"32 MiB\"",
        "quic.stream_receive_window",
    );
    assert!(
        message.contains("quic.connection_receive_window (16 MiB)"),
        "{message}"
    );
}

#[test]
fn quic_send_window_zero() {
    invalid("[quic]\nsend_window = 0", "quic.send_window");
}

#[test]
fn quic_initial_mtu_below_1200() {
    assert_eq!(
        invalid("[quic]\ninitial_mtu = 1199", "quic.initial_mtu"),
        "quic.initial_mtu = 1199 is out of range: allowed 1200 ..= 65527"
    );
}

#[test]
fn quic_initial_mtu_above_65527() {
    invalid("[quic]\ninitial_mtu = 65528", "quic.initial_mtu");
}

#[test]
fn quic_initial_mtu_beyond_u16() {
    unparsable("[quic]\ninitial_mtu = 70000", "quic.initial_mtu");
}

#[test]
fn quic_udp_send_buffer_below_4_kib() {
    invalid(
        "[quic]\nudp_send_buffer = \"1 KiB\"",
        "quic.udp_send_buffer",
    );
}

#[test]
fn quic_udp_receive_buffer_above_1_gib() {
    invalid(
        "[quic]\nudp_receive_buffer = \"2 GiB\"",
        "quic.udp_receive_buffer",
    );
}

#[test]
fn quic_max_connections_zero() {
    invalid("[quic]\nmax_connections = 0", "quic.max_connections");
}

#[test]
fn quic_max_handshakes_zero() {
    invalid("[quic]\nmax_handshakes = 0", "quic.max_handshakes");
}

#[test]
fn quic_max_handshakes_above_max_connections() {
    invalid(
        "[quic]\nmax_connections = 10\nmax_handshakes = 11",
        "quic.max_handshakes",
    );
}

#[test]
fn quic_retry_threshold_above_max_handshakes() {
    let message = invalid(
        "[quic]\nmax_handshakes = 8\nretry_threshold = 9",
        "quic.retry_threshold",
    );
    assert!(
        message.contains("0 ..= quic.max_handshakes (8)"),
        "{message}"
    );
}

#[test]
fn quic_enabled_without_certificate_needs_self_signed() {
    let message = invalid(
        "[tls]\nenabled = false\nself_signed = false\n[wss]\nenabled = false\n[quic]\nenabled = true",
        "tls.self_signed",
    );
    assert!(message.contains("quic.enabled"), "{message}");
}

// [shards]

#[test]
fn shards_count_above_1024() {
    let message = invalid("[shards]\ncount = 1025", "shards.count");
    assert!(message.contains("1 ..= 1024"), "{message}");
}

#[test]
fn shards_inbox_capacity_frames_zero() {
    invalid(
        "[shards]\ninbox_capacity_frames = 0",
        "shards.inbox_capacity_frames",
    );
}

#[test]
fn shards_placement_unknown() {
    unparsable("[shards]\nplacement = \"random\"", "shards.placement");
}

// [replicas]

#[test]
fn replicas_enabled_without_psk_file() {
    invalid("[replicas]\nenabled = true", "replicas.psk_file");
}

#[test]
fn replicas_peer_with_own_id() {
    let message = invalid(
        "[replicas]\nself_id = 1\npeers = [{ id = 1, addr = \"127.0.0.1:7176\" }]",
        "replicas.peers[0].id",
    );
    assert!(message.contains("replicas.self_id (1)"), "{message}");
}

#[test]
fn replicas_duplicate_peer_id() {
    let message = invalid(
        "[replicas]\npeers = [{ id = 2, addr = \"127.0.0.1:7276\" }, \
         { id = 2, addr = \"127.0.0.1:7376\" }]",
        "replicas.peers[1].id",
    );
    assert!(message.contains("replicas.peers[0]"), "{message}");
}

#[test]
fn replicas_empty_key_file_paths() {
    for (field, others) in [
        ("psk_file", ""),
        ("verify_psk_file", "psk_file = \"psk\""),
        ("ca_file", "psk_file = \"psk\""),
    ] {
        let message = invalid(
            &format!("[replicas]\nenabled = true\n{others}\n{field} = \"\""),
            &format!("replicas.{field}"),
        );
        assert!(message.contains("a path to a file"), "{message}");
    }
}

#[test]
fn replicas_reconnect_max_zero() {
    let message = invalid(
        "[replicas]\nreconnect_max = \"0 s\"",
        "replicas.reconnect_max",
    );
    assert_eq!(
        message,
        "replicas.reconnect_max = 0 s is out of range: allowed > 0 s"
    );
}

#[test]
fn replicas_reconnect_max_without_unit() {
    unparsable(
        "[replicas]\nreconnect_max = \"5\"",
        "replicas.reconnect_max",
    );
}

#[test]
fn replicas_keepalive_not_below_idle_timeout() {
    let message = invalid(
        "[replicas]\nkeepalive = \"3 s\"\nidle_timeout = \"3 s\"",
        "replicas.keepalive",
    );
    assert!(
        message.contains("below replicas.idle_timeout (3 s)"),
        "{message}"
    );
}

#[test]
fn replicas_keepalive_and_idle_timeout_may_be_off() {
    let config =
        Config::from_toml_str("[replicas]\nkeepalive = \"off\"\nidle_timeout = \"off\"").unwrap();
    let bus = config.bus_config(0);
    assert_eq!(bus.replica_keepalive, None);
    assert_eq!(bus.replica_idle_timeout, None);
    // Without an idle bound any keep-alive goes.
    Config::from_toml_str("[replicas]\nkeepalive = \"10 s\"\nidle_timeout = \"off\"").unwrap();
}

#[test]
fn replicas_zero_idle_timeout_set_in_code() {
    let mut config = Config::embedded_defaults();
    config.replicas.idle_timeout = Some(Duration::ZERO);
    check_invalid(&config.validate().unwrap_err(), "replicas.idle_timeout");
    let mut config = Config::embedded_defaults();
    config.replicas.keepalive = Some(Duration::ZERO);
    check_invalid(&config.validate().unwrap_err(), "replicas.keepalive");
}

#[test]
fn replicas_unknown_key() {
    let message = unparsable("[replicas]\npsk = \"x\"", "replicas");
    assert!(message.contains("unknown field `psk`"), "{message}");
}

#[test]
fn replicas_self_id_beyond_u8() {
    unparsable("[replicas]\nself_id = 256", "replicas.self_id");
}

#[test]
fn replicas_cluster_not_a_number() {
    unparsable("[replicas]\ncluster = \"0xnope\"", "replicas.cluster");
}

#[test]
fn replicas_tls_without_certificate_needs_self_signed() {
    let message = invalid(
        "[tls]\nenabled = false\nself_signed = false\n[quic]\nenabled = false\n[wss]\nenabled = false\n[replicas]\nenabled = true\ntls = true\npsk_file = \"psk\"",
        "tls.self_signed",
    );
    assert!(message.contains("replicas.tls"), "{message}");
}

// Listeners

#[test]
fn two_enabled_listeners_on_one_address() {
    let message = invalid(
        "[tls]\nenabled = true\nlisten = \"127.0.0.1:7070\"",
        "tls.listen",
    );
    assert!(message.contains("tcp.listen"), "{message}");
}

#[test]
fn wildcard_listener_overlaps_a_specific_one() {
    invalid(
        "[admin]\nenabled = true\nlisten = \"0.0.0.0:7070\"",
        "admin.listen",
    );
}

#[test]
fn disabled_listeners_and_port_zero_may_share() {
    Config::from_toml_str("[tls]\nenabled = false\nlisten = \"127.0.0.1:7070\"").unwrap();
    Config::from_toml_str(
        "[tcp]\nlisten = \"127.0.0.1:0\"\n[ws]\nenabled = true\nlisten = \"127.0.0.1:0\"",
    )
    .unwrap();
}

#[test]
fn quic_may_share_a_tcp_port() {
    Config::from_toml_str("[quic]\nenabled = true\nlisten = \"127.0.0.1:7070\"").unwrap();
}

// [log]

#[test]
fn log_level_unknown() {
    let message = unparsable("[log]\nlevel = \"verbose\"", "log.level");
    assert!(message.contains("`trace`"), "{message}");
}

#[test]
fn bus_max_connections_zero() {
    invalid("[bus]\nmax_connections = 0", "bus.max_connections");
}

#[test]
fn max_handshakes_zero_on_every_tcp_based_listener() {
    for section in ["tcp", "tls", "ws", "wss"] {
        invalid(
            &format!("[{section}]\nmax_handshakes = 0"),
            &format!("{section}.max_handshakes"),
        );
    }
}
