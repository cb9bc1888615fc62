//! Every transport scenario over plain TCP, plus what only TCP has.

use bus_tests::{
    scenarios,
    transport::{Tcp, TestTransport},
    within,
};

bus_tests::transport_suite!(Tcp);

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
