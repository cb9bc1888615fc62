//! Every transport scenario over WebSocket over TLS 1.3.

use bus_tests::{scenarios, transport::Wss};

/// Counts allocations per thread, for the memory bound of
/// `message_over_the_limit_is_refused_before_it_is_buffered`.
#[global_allocator]
static ALLOC: bus_tests::alloc::Counting = bus_tests::alloc::Counting;

bus_tests::transport_suite!(Wss);

#[compio::test]
async fn silent_client_gets_idle_timeout_at_the_first_frame_grace() {
    bus_tests::scenarios::silent_client_gets_idle_timeout_at_the_first_frame_grace::<Wss>().await;
}

#[compio::test]
async fn a_client_that_pings_first_stays_past_the_grace() {
    bus_tests::scenarios::a_client_that_pings_first_stays_past_the_grace::<Wss>().await;
}
bus_tests::websocket_suite!(Wss);

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    scenarios::silent_peer_is_dropped_after_handshake_grace::<Wss>().await;
}

#[compio::test]
async fn read_cancelled_while_pending_loses_nothing() {
    scenarios::read_cancelled_while_pending_loses_nothing::<Wss>().await;
}

/// ALPN per spec §7: the server offers `http/1.1`; a client offering no
/// ALPN is accepted; one offering only `h2` fails the TLS handshake.
#[compio::test]
async fn alpn_is_http_1_1_and_a_client_offering_only_h2_fails() {
    let listener = <Wss as bus_tests::transport::TestTransport>::listen().await;
    let node = scenarios::start_on(listener, scenarios::test_config());
    let session = bus_tests::within("wss connect", Wss::client_tls().connect(node.addr))
        .await
        .expect("http/1.1 client");
    assert_eq!(session.alpn(), Some(bus_tls::ALPN_HTTP1));
    drop(session);
    let no_alpn = Wss::client_tls_with_alpn(&[]);
    let session = bus_tests::within("wss connect", no_alpn.connect(node.addr))
        .await
        .expect("a client without ALPN is accepted");
    assert_eq!(session.alpn(), None);
    drop(session);
    let h2_only = Wss::client_tls_with_alpn(&[b"h2"]);
    let refused = bus_tests::within("wss connect", h2_only.connect(node.addr)).await;
    assert!(
        refused.is_err(),
        "an h2-only client must fail the handshake"
    );
    let err = refused.expect_err("refused");
    assert!(matches!(err, bus_tls::TlsError::Handshake { .. }), "{err}");
    // The server says why: its no_application_protocol alert reaches the
    // client.
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    // Three handshakes failed: the two sessions dropped before upgrading,
    // and the refused one. None was registered.
    bus_tests::eventually("the failed handshakes are counted", || {
        node.bus.stats().handshake_failures == 3
    })
    .await;
    assert_eq!(node.bus.stats().connections_total, 0);
    scenarios::stop(&node).await;
}

#[compio::test]
async fn bind_tls_refuses_a_certificate_without_http_1_1_alpn() {
    let config = bus_ws::WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
    let bus_alpn = bus_tests::transport::Tls::server_tls(); // ALPN bus.v1
    let err = bus_ws::WsListener::bind_tls(&config, bus_alpn.clone()).expect_err("refused");
    assert!(err.to_string().contains("http/1.1"), "{err}");
    // The same check guards a WSS acceptor handed to the shard layer.
    let err = bus_ws::WsAcceptor::new_tls(&config, bus_alpn).expect_err("refused");
    assert!(err.to_string().contains("tls.alpn"), "{err}");
}
