//! Whole-process leak check: after a bus serving real clients shuts down,
//! this process has exactly as many open descriptors as before it started,
//! for every transport.
//!
//! This binary holds one test on purpose: `cargo test` runs a binary's
//! tests as threads of one process, so a count of `/proc/self/fd` is only
//! meaningful where nothing else runs. (Each scenario also checks, in every
//! suite, that the specific sockets its bus held are closed; see
//! `bus_tests::leaks`.)
#![allow(
    clippy::large_futures,
    reason = "the scenarios' TLS and QUIC state lives in the test's future; boxing buys nothing"
)]

use bus_tests::{
    eventually,
    leaks::open_fd_count,
    scenarios::shutdown_releases_every_socket_connection_and_the_handler as serve_and_shut_down,
    transport::{Quic, Tcp, Tls, Ws, Wss},
};

/// Runs `scenario` and checks the process's descriptor count comes back to
/// what it was before (the runtime closes a dropped socket on one of its
/// next turns, and a QUIC client endpoint once its connection drained:
/// waited for, bounded).
async fn gives_back_every_descriptor<F: Future<Output = ()>>(name: &str, scenario: F) {
    let before = open_fd_count();
    scenario.await;
    eventually(
        &format!("{name}: the descriptor count to come back to {before}"),
        || open_fd_count() == before,
    )
    .await;
}

#[compio::test]
async fn every_transport_gives_back_every_descriptor_after_shutdown() {
    // Once-per-process state (the test certificates on disk, the crypto
    // provider, the runtime's own descriptors) is set up by a first run.
    serve_and_shut_down::<Tls>().await;
    gives_back_every_descriptor("tcp", serve_and_shut_down::<Tcp>()).await;
    gives_back_every_descriptor("tls", serve_and_shut_down::<Tls>()).await;
    gives_back_every_descriptor("ws", serve_and_shut_down::<Ws>()).await;
    gives_back_every_descriptor("wss", serve_and_shut_down::<Wss>()).await;
    gives_back_every_descriptor("quic", serve_and_shut_down::<Quic>()).await;
}
