//! Every transport scenario over plain TCP, plus what only TCP has.

use std::time::Duration;

use bus_core::{Bus, CloseReason, Error, GoodbyeReason, Peer};
use bus_tests::{
    client::{RawClient, TcpClient},
    eventually, frames,
    recorder::{REPLY_REFUSED_DETAIL, Recorder},
    scenarios,
    transport::{Tcp, TestTransport},
    within,
};

bus_tests::transport_suite!(Tcp);

#[compio::test]
async fn silent_client_gets_idle_timeout_at_the_first_frame_grace() {
    bus_tests::scenarios::silent_client_gets_idle_timeout_at_the_first_frame_grace::<Tcp>().await;
}

#[compio::test]
async fn a_client_that_pings_first_stays_past_the_grace() {
    bus_tests::scenarios::a_client_that_pings_first_stays_past_the_grace::<Tcp>().await;
}

#[compio::test]
async fn frame_dribbled_one_byte_at_a_time_is_delivered_whole() {
    scenarios::frame_dribbled_one_byte_at_a_time_is_delivered_whole::<Tcp>().await;
}

#[compio::test]
async fn connect_to_a_closed_port_fails_with_a_clear_error() {
    // Bind then drop a listener to get a port nobody listens on.
    let addr = {
        let listener = Tcp::listen().await;
        bus_core::transport::Listener::local_addr(&listener).expect("addr")
    };
    let config = bus_tcp::TcpConnectorConfig::default();
    let err = within("connect", bus_tcp::connect(addr, &config))
        .await
        .expect_err("refused");
    assert!(matches!(err, bus_tcp::TcpError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&addr.to_string()),
        "error names the address: {err}"
    );
}

#[compio::test]
async fn bind_to_a_taken_port_names_the_address() {
    let first = Tcp::listen().await;
    let addr = bus_core::transport::Listener::local_addr(&first).expect("addr");
    let mut config = bus_tcp::TcpListenerConfig::new(addr);
    config.backlog = 16;
    let err = bus_tcp::TcpListener::bind(&config).expect_err("port taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// The test recorder never panics inside the handler when its event channel
/// overflows (the bus would report that as `HandlerPanicked`, and the test
/// would fail for a wrong reason, or not at all): the connection keeps
/// working, and the overflow fails the test from the test's side, saying
/// what happened.
#[compio::test]
async fn a_full_event_channel_fails_the_test_not_the_handler() {
    let (recorder, events) = Recorder::with_capacity(4);
    let bus = Bus::new(scenarios::test_config(), recorder).expect("bus");
    let listener = Tcp::listen().await;
    let addr = bus_core::transport::Listener::local_addr(&listener).expect("addr");
    bus.serve(listener).expect("serve");
    let mut client = TcpClient::connect(addr).await;
    // Connected + three frames fill the channel; the Echo overflows it.
    for request in 1..=3 {
        client.send(&frames::app(frames::RECORD, request, 0)).await;
    }
    client.send(&frames::app(frames::ECHO, 4, 10)).await;
    let reply = client.recv_frame().await;
    assert_eq!(reply.header().request(), 4, "the handler still answered");
    let stats = bus.stats();
    assert_eq!(stats.handler_panics, 0, "no panic inside the handler");
    assert_eq!(stats.connections, 1, "the connection is still served");
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| events.drain_now()))
        .expect_err("the test side fails");
    let message = failed
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("event channel overflowed"), "{message}");
    let faults = events.take_faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].contains("Frame("),
        "names the lost event: {faults:?}"
    );
    events.assert_no_faults();
    assert_eq!(events.drain_now().len(), 4, "what fitted was recorded");
    drop(client);
    within("shutdown", bus.shutdown(Duration::from_secs(5))).await;
}

/// An echo reply the bus refuses with `QueueFull` is not hidden behind the
/// client's timeout: the recorder records the fault and evicts the client,
/// whose wait ends with a `Goodbye` that says why.
#[compio::test]
async fn an_echo_reply_refused_with_queue_full_ends_the_wait_at_once() {
    let mut config = scenarios::test_config();
    config.queue_capacity_frames = 8;
    config.close_grace = Duration::from_secs(8);
    let node = scenarios::start::<Tcp>(config).await;
    let (mut client, peer) = scenarios::connect::<Tcp>(&node).await;
    let Peer::Client(id) = peer else {
        panic!("a client")
    };
    // The client does not read: its queue fills, so the reply cannot go.
    scenarios::fill_until_queue_full(&node.bus, id).await;
    client.send(&frames::app(frames::ECHO, 1, 10)).await;
    eventually("the refused reply is recorded", || {
        !node.events.faults().is_empty()
    })
    .await;
    let faults = node.events.take_faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(faults[0].contains("refused with QueueFull"), "{faults:?}");
    let (from, _) = node.events.frame().await;
    assert_eq!(from, peer);
    // Now the client reads: what was queued, then the eviction.
    let goodbye = loop {
        let frame = client.recv_frame().await;
        if frame.header().command() == bus_core::Command::Goodbye {
            break scenarios::assert_goodbye(&frame, GoodbyeReason::Evicted);
        }
        assert_eq!(frame.header().command_raw(), frames::RECORD);
    };
    assert_eq!(goodbye.detail, REPLY_REFUSED_DETAIL);
    client.expect_closed().await;
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::Evicted)
    );
    scenarios::stop(&node).await;
}

/// From the first moment of shutdown, `serve`, `install` and
/// `install_replica` are refused with `ShuttingDown`.
#[compio::test]
async fn serve_install_and_install_replica_are_refused_once_shutting_down() {
    let node = scenarios::start::<Tcp>(scenarios::test_config()).await;
    scenarios::stop(&node).await;
    let refused = node.bus.serve(Tcp::listen().await);
    assert!(matches!(refused, Err(Error::ShuttingDown)), "{refused:?}");
    let mut listener = Tcp::listen().await;
    let addr = bus_core::transport::Listener::local_addr(&listener).expect("addr");
    let mut connections = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..2 {
        peers.push(TcpClient::connect(addr).await);
        let accepted = within(
            "accept",
            bus_core::transport::Listener::accept(&mut listener),
        );
        connections.push(accepted.await.expect("accept"));
    }
    let replica = connections.pop().expect("two");
    let client = connections.pop().expect("two");
    let refused = node.bus.install(client);
    assert!(matches!(refused, Err(Error::ShuttingDown)), "{refused:?}");
    let refused = node.bus.install_replica(replica, 1);
    assert!(matches!(refused, Err(Error::ShuttingDown)), "{refused:?}");
    assert_eq!(node.bus.stats().connections_total, 0);
    assert_eq!(node.bus.stats().tasks, 0, "nothing was started");
}

#[compio::test]
async fn admission_refuses_connection_n_plus_1_counts_it_and_reuses_a_freed_slot() {
    bus_tests::admission::connection_n_plus_1_is_refused_counted_and_a_freed_slot_is_reused::<
        bus_tests::transport::Tcp,
    >()
    .await;
}
