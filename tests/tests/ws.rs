//! Every transport scenario over WebSocket, plus what only WebSocket has.

use bus_tests::{scenarios, transport::Ws};

/// Counts allocations per thread, for the memory bound of
/// `message_over_the_limit_is_refused_before_it_is_buffered`.
#[global_allocator]
static ALLOC: bus_tests::alloc::Counting = bus_tests::alloc::Counting;

bus_tests::transport_suite!(Ws);

#[compio::test]
async fn silent_client_gets_idle_timeout_at_the_first_frame_grace() {
    bus_tests::scenarios::silent_client_gets_idle_timeout_at_the_first_frame_grace::<Ws>().await;
}

#[compio::test]
async fn a_client_that_pings_first_stays_past_the_grace() {
    bus_tests::scenarios::a_client_that_pings_first_stays_past_the_grace::<Ws>().await;
}
bus_tests::websocket_suite!(Ws);

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    scenarios::silent_peer_is_dropped_after_handshake_grace::<Ws>().await;
}

#[compio::test]
async fn read_cancelled_while_pending_loses_nothing() {
    scenarios::read_cancelled_while_pending_loses_nothing::<Ws>().await;
}

#[compio::test]
async fn admission_refuses_connection_n_plus_1_counts_it_and_reuses_a_freed_slot() {
    bus_tests::admission::connection_n_plus_1_is_refused_counted_and_a_freed_slot_is_reused::<
        bus_tests::transport::Ws,
    >()
    .await;
}

#[compio::test]
async fn admission_refuses_handshakes_beyond_max_handshakes_until_one_ends() {
    bus_tests::admission::handshakes_beyond_the_cap_are_refused_until_one_ends::<
        bus_tests::transport::Ws,
    >()
    .await;
}
