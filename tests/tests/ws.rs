//! Every transport scenario over WebSocket, plus what only WebSocket has.

use bus_tests::{scenarios, transport::Ws};

bus_tests::transport_suite!(Ws);
bus_tests::websocket_suite!(Ws);

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    scenarios::silent_peer_is_dropped_after_handshake_grace::<Ws>().await;
}
