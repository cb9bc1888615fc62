//! `bus`: a message bus for thread-per-core Rust servers on the compio
//! runtime. One frame format (256-byte header, see `docs/wire-protocol.md`),
//! one API, bounded behaviour under load and hostile input.
//!
//! This crate only re-exports the workspace's crates behind features, so an
//! application depends on exactly the transports it uses.
//!
//! ```
//! use bus::{Bus, BusConfig, Frame, Peer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! compio::runtime::Runtime::new()?.block_on(async {
//!     // Echo every application frame back to the client that sent it.
//!     let handler = |bus: &Bus, from: Peer, frame: Frame| {
//!         if let Peer::Client(id) = from {
//!             let _ = bus.send_to_client(id, frame);
//!         }
//!     };
//!     let bus = Bus::new(BusConfig::default(), handler)?;
//!     let listener = bus::tcp::TcpListener::bind(&bus::tcp::TcpListenerConfig::new(
//!         "127.0.0.1:0".parse()?,
//!     ))?;
//!     bus.serve(listener)?;
//!     let report = bus.shutdown(std::time::Duration::from_secs(1)).await;
//!     assert_eq!(report.tasks_left, 0);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature  | default | enables |
//! |----------|---------|---------|
//! | `tcp`    | yes     | [`tcp`]: plain TCP listener and connector (`bus-tcp`) |
//! | `tls`    | no      | [`tls`]: TLS 1.3 listener and connector, certificates, mutual TLS, reload (`bus-tls`); turns on `tcp` |
//! | `ws`     | no      | [`ws`]: WebSocket listener and connector (`bus-ws`); turns on `tcp` |
//! | `wss`    | no      | WebSocket over TLS 1.3 in [`ws`] (`WsListener::bind_tls`, `connect_tls`); turns on `ws` and `tls` |
//! | `quic`   | no      | [`quic`]: QUIC listener and connector, one bidirectional stream, admission caps (`bus-quic`); turns on `tls` |
//! | `config` | no      | [`config`]: TOML schema, embedded defaults, validation (`bus-config`) |
//! | `client` | no      | [`Client`] and [`client`]: connect by URL, correlated requests, unsolicited frames, reconnect (`bus-client`; `tcp://` with `tcp`) |
//! | `shard`  | no      | [`shard`]: one bus per core, shard-0 accept with fd hand-over, cross-shard routing (`bus-shard`); turns on `tcp` |
//! | `replica` | no      | [`replica`]: the replica handshake (spec §4) as sans-IO state machines, pre-shared key files, key rotation, replica settings (`bus-replica`; `Config::replicas_config` with `config`) |
//! | `mesh`   | no      | [`mesh`]: the replica mesh on real connections: the replica listener, dialers with backoff, the handshake over TCP and TLS (exporter binding), one link per replica, key reload, status (`bus-mesh`); turns on `replica`, `shard` and `tls` |
//! | `full`   | no      | everything above |
//!
//! The core ([`Bus`], [`Frame`], the transport traits; all of `bus-core` as
//! [`core`]) is always available.
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README's usage example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[doc(inline)]
pub use bus_core as core;
#[doc(no_inline)]
pub use bus_core::{
    BroadcastReport, Bus, BusConfig, BusStats, ClientId, CloseReason, Command, ConnectionInfo,
    ConnectionSnapshot, ConnectionStats, DecodeLimits, Decoder, Error, Forwarder, Frame,
    FrameError, FrameMut, Goodbye, GoodbyeReason, Handler, Header, InboundBudget, Peer,
    ReadSettings, SendError, ShutdownReport, SlowConsumerPolicy, StreamReader, TransportKind,
    transport,
};

#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
#[doc(inline)]
pub use bus_tcp as tcp;

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[doc(inline)]
pub use bus_tls as tls;

#[cfg(feature = "quic")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
#[doc(inline)]
pub use bus_quic as quic;
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
#[doc(inline)]
pub use bus_ws as ws;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
#[doc(inline)]
pub use bus_config as config;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
#[doc(inline)]
pub use bus_client as client;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
#[doc(no_inline)]
pub use bus_client::{Client, ClientError, ClientOptions};
#[cfg(feature = "shard")]
#[cfg_attr(docsrs, doc(cfg(feature = "shard")))]
#[doc(inline)]
pub use bus_shard as shard;

#[cfg(feature = "replica")]
#[cfg_attr(docsrs, doc(cfg(feature = "replica")))]
#[doc(inline)]
pub use bus_replica as replica;

#[cfg(feature = "mesh")]
#[cfg_attr(docsrs, doc(cfg(feature = "mesh")))]
#[doc(inline)]
pub use bus_mesh as mesh;
