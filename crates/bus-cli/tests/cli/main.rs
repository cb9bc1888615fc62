//! `bus-cli` end to end: the `bus` binary as a child process (serve, ping,
//! bench, admin) and the client library against real nodes. Every socket is
//! on loopback with an ephemeral port; every wait is bounded.

mod admin;
mod ask;
mod browser;
mod client;
mod common;
mod dashboard;
#[cfg(feature = "ws")]
mod demo;
mod flood;
#[cfg(feature = "mesh")]
mod mesh;
mod serve;
mod tls;
