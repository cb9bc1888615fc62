//! Every transport scenario over WebSocket over TLS 1.3.

use bus_tests::{scenarios, transport::Wss};

bus_tests::transport_suite!(Wss);

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    scenarios::silent_peer_is_dropped_after_handshake_grace::<Wss>().await;
}
