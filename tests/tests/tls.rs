//! Every transport scenario over TLS 1.3, plus what only TLS has:
//! protocol-version and ALPN policy, certificates, mutual TLS, reload,
//! cancel-safe reads and a clean close.

use bus_tests::{scenarios, transport::Tls};

bus_tests::transport_suite!(Tls);

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    scenarios::silent_peer_is_dropped_after_handshake_grace::<Tls>().await;
}

#[compio::test]
async fn frame_dribbled_one_byte_at_a_time_is_delivered_whole() {
    scenarios::frame_dribbled_one_byte_at_a_time_is_delivered_whole::<Tls>().await;
}
