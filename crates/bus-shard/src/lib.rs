//! The multi-shard runtime of `bus`: one thread, one compio runtime and one
//! [`Bus`](bus_core::Bus) per core, with connections spread over the shards
//! and sends routed to whichever shard owns the client.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use bus_core::{Bus, BusConfig, Frame, Peer};
//! use bus_shard::{ShardContext, Shards, ShardsConfig};
//! use bus_tcp::TcpListenerConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shards = Shards::builder(ShardsConfig::new(4), BusConfig::default())
//!     .listen_tcp(TcpListenerConfig::new("127.0.0.1:0".parse()?))
//!     // Called once per shard, on that shard's thread: per-shard state
//!     // needs no locks.
//!     .start(|ctx: &ShardContext| {
//!         let shard = ctx.shard;
//!         move |bus: &Bus, from: Peer, frame: Frame| {
//!             // Runs on the shard that owns `from`. A send to a client of
//!             // another shard goes through that shard's inbox, without
//!             // waiting.
//!             if let Peer::Client(id) = from {
//!                 debug_assert_eq!(id.shard(), shard);
//!                 let _ = bus.send_to_client(id, frame);
//!             }
//!         }
//!     })?;
//! println!("listening on {}", shards.local_addrs()[0]);
//! let report = shards.shutdown(Duration::from_secs(5));
//! assert_eq!(report.threads_left, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Accept and delegation.** Shard 0 accepts plain TCP for every
//!   delegated listener ([`ShardsBuilder::listen`]), picks a shard by the
//!   [`Placement`] policy, duplicates the socket's descriptor
//!   (close-on-exec) and hands it to that shard **before any handshake**.
//!   The owning shard wraps it in the transport's connection
//!   ([`DelegatedTransport::wrap`]) and its bus runs the handshake there, so
//!   TLS and WebSocket handshakes spread over every core. QUIC stays on the
//!   shard of its UDP endpoint ([`ShardsBuilder::serve_on`]).
//! - **Client ids.** Each shard's bus mints ids with its index in the top
//!   16 bits (spec §5), so any shard knows where a client lives.
//! - **Routing.** `Bus::send_to_client` to a local client pushes onto its
//!   queue with no cross-thread operation. To another shard's client it
//!   `try_send`s into that shard's bounded inbox: a full inbox is
//!   `SendError::InboxFull`, counted, and nothing waits. `Bus::broadcast`
//!   queues locally and posts one message per other shard, which queues the
//!   same allocation to each of its clients.
//! - **Replicas.** A replica connection lives on one shard like a client;
//!   a node-wide table (replica id → owning shard, one atomic per id,
//!   written once per connection) routes `Bus::send_to_replica` from any
//!   shard through the owner's inbox. A [`DelegatedService`] listener
//!   ([`ShardsBuilder::listen_service`]) hands accepted sockets to a
//!   service that runs its own handshake on the owning shard, and
//!   [`ShardsBuilder::on_start`] runs code on every shard once its bus
//!   exists (the replica mesh's dialers).
//! - **Handlers** come from a factory called once per shard on its own
//!   thread, so handler state is per shard and needs no locks.
//! - **Shutdown** ([`Shards::shutdown`]): every shard runs its bus's graceful
//!   shutdown at once, then its thread is joined; the whole is bounded.
//!
//! # Feature flags
//!
//! | feature | enables |
//! |---------|---------|
//! | `tls`   | `bus_tls::ServerTls` as a [`DelegatedTransport`]: TLS listeners accepted on shard 0, handshakes on the owning shard |
//! | `ws`    | `bus_ws::WsAcceptor` as a [`DelegatedTransport`]: WebSocket listeners accepted on shard 0, HTTP upgrades on the owning shard |
//! | `wss`   | `ws` and `tls`, plus WSS acceptors (`WsAcceptor::new_tls`): TLS handshake and upgrade on the owning shard |
//!
//! # What this crate does not do
//!
//! It does not move a connection after placement, balance load over time,
//! or retry a send refused by a full inbox: the sender decides.
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod error;
mod handler;
mod link;
mod monitor;
mod placement;
mod shard;
mod shards;
mod stats;
mod transport;

pub use config::{Placement, ShardsConfig};
pub use error::ShardError;
pub use handler::ShardContext;
pub use link::ForwardedReply;
pub use monitor::Monitor;
pub use shards::{Shards, ShardsBuilder};
pub use stats::{ShardExit, ShardStats, ShardsShutdownReport};
#[cfg(feature = "ws")]
pub use transport::WS_REFUSAL;
pub use transport::{DelegatedService, DelegatedTransport, Tcp};
