//! The `[ws]` and `[wss]` sections as `bus-ws` settings, and the size chain
//! `ws.max_frame_size ≤ bus.max_message_size` in both directions, in the
//! file and again at run time.
#![cfg(feature = "ws")]

use bus_config::Config;

#[test]
fn ws_section_converts_with_the_tcp_listener_settings() {
    let config = Config::from_toml_str(
        r#"
        [tcp]
        backlog = 77
        nodelay = false
        [ws]
        enabled = true
        listen = "127.0.0.1:9000"
        path = "/bus"
        allowed_origins = ["https://app.example.com"]
        read_buffer = "16 KiB"
        write_buffer = "32 KiB"
        max_frame_size = "1 MiB"
        "#,
    )
    .unwrap();
    let ws = config.ws_listener_config();
    assert_eq!(ws.tcp.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(ws.tcp.backlog, 77);
    assert!(!ws.tcp.nodelay);
    assert_eq!(ws.path, "/bus");
    assert_eq!(
        ws.allowed_origins,
        vec!["https://app.example.com".to_owned()]
    );
    assert_eq!(ws.limits.read_buffer_bytes, 16 << 10);
    assert_eq!(ws.limits.write_buffer_bytes, 32 << 10);
    assert_eq!(ws.limits.max_frame_size_bytes, 1 << 20);
    let max_message = config.bus_config(0).max_message_size_bytes;
    ws.validate(max_message).unwrap();
}

#[test]
fn defaults_convert_and_pass_the_runtime_check() {
    let config = Config::embedded_defaults();
    let max_message = config.bus_config(0).max_message_size_bytes;
    for ws in [config.ws_listener_config(), config.wss_listener_config()] {
        assert_eq!(ws.path, "/");
        assert!(ws.allowed_origins.is_empty());
        assert_eq!(ws.limits.read_buffer_bytes, 8 << 10);
        assert_eq!(ws.limits.max_frame_size_bytes, 16 << 20);
        ws.validate(max_message).unwrap();
    }
    assert_eq!(config.wss_listener_config().tcp.listen, config.wss.listen);
}

#[test]
fn size_chain_accepts_a_frame_limit_equal_to_the_message_limit() {
    let config = Config::from_toml_str(
        "[bus]\nmax_message_size = \"1 MiB\"\n[ws]\nenabled = true\nmax_frame_size = \"1 MiB\"\n\
         [wss]\nenabled = true\nmax_frame_size = \"512 KiB\"",
    )
    .unwrap();
    let max_message = config.bus_config(0).max_message_size_bytes;
    config.ws_listener_config().validate(max_message).unwrap();
    config.wss_listener_config().validate(max_message).unwrap();
}

#[test]
fn size_chain_is_refused_one_byte_over_in_the_file() {
    let err = Config::from_toml_str(
        "[bus]\nmax_message_size = \"1 MiB\"\n[ws]\nenabled = true\nmax_frame_size = 1048577",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ws.max_frame_size"), "{err}");
}

#[test]
fn size_chain_is_checked_again_at_run_time() {
    // A disabled section is held only to the absolute bounds in the file,
    // so it may exceed the bus limit; the runtime check refuses it before
    // a listener could serve with it.
    let config = Config::from_toml_str(
        "[bus]\nmax_message_size = \"1 MiB\"\n[ws]\nenabled = false\nmax_frame_size = \"2 MiB\"",
    )
    .unwrap();
    let max_message = config.bus_config(0).max_message_size_bytes;
    let err = config
        .ws_listener_config()
        .validate(max_message)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_frame_size_bytes"), "{err}");
}

#[cfg(feature = "wss")]
#[test]
fn wss_uses_the_tls_certificate_with_http_1_1_alpn() {
    let config = Config::embedded_defaults();
    let tls = config.wss_server_config(std::path::Path::new("/var/lib/bus"));
    assert_eq!(tls.alpn, vec![b"http/1.1".to_vec()]);
    assert_eq!(
        tls.certificate,
        config
            .tls_server_config(std::path::Path::new("/var/lib/bus"))
            .certificate
    );
}
