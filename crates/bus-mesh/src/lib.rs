//! The replica mesh of `bus` (spec §4) on real connections: every node
//! listens for its replicas and dials each configured peer with a higher
//! id; both ends prove they hold the cluster's pre-shared key with
//! `bus-replica`'s handshake, bound to the TLS session when the plane runs
//! over TLS; and the authenticated connection becomes a replica link of the
//! node's bus, keyed by replica id, reachable from every shard.
//!
//! ```text
//!  shard 0: replica listener ─accept─▶ dup fd ─hand over─▶ shard k: [TLS] ─ Hello/Challenge/Finish ─▶ adopt_replica
//!  shard p % n: dial loop ─connect─▶ [TLS] ─ Hello/Challenge/Finish ─▶ adopt_replica ─ wait for loss ─ backoff ─┐
//!                  ▲────────────────────────────────────────────────────────────────────────────────────────────┘
//!  any shard: bus.send_to_replica(id, frame) ─▶ local queue, or the owner's inbox (bus-shard)
//! ```
//!
//! - [`Mesh`]: built from a [`MeshConfig`] (the `[replicas]` settings, the
//!   node's certificate); [`Mesh::declare`] adds the listener and the
//!   dialers to a `bus_shard::ShardsBuilder`, [`Mesh::start`] starts the
//!   shards with the application's handler wrapped in a [`MeshHandler`];
//!   [`Mesh::reload`] re-reads the keys (SIGHUP); [`Mesh::status`] is what
//!   `/replicaz` shows.
//! - Each handshake is bounded by `handshake_grace`, reads nothing larger
//!   than a 256-byte header before the peer is authenticated, and ends a
//!   refusal or failure with the frame the spec gives (a `ReplicaChallenge`
//!   with the status, or `Goodbye(HandshakeFailed)`) before closing.
//! - A live link is kept alive by the bus (a `Ping` after `replica_keepalive`
//!   of silence, closed after `replica_idle_timeout`), so a link whose
//!   packets vanish is detected within `replica_idle_timeout`.
//! - At most one authenticated connection per replica id exists node-wide,
//!   whichever shard owns it: a second one is refused (status 3), also when
//!   two handshakes race.
//! - A lost link is redialed (by the lower id) with exponential backoff and
//!   full jitter, bounded by `reconnect_max` and floored at 100 ms.
//!
//! It does not relay or order application frames: what a node sends to
//! its replicas is the application's business (the reference node's
//! `Relay` is in `bus-cli`).
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README's example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod backoff;
mod connect;
mod error;
mod exchange;
mod handler;
pub mod limits;
mod mesh;
mod service;
mod state;
mod status;
mod tls;

pub use error::{FailureReason, HandshakeError, MeshError};
pub use handler::MeshHandler;
pub use mesh::{Mesh, MeshConfig, ReplicaStamp};
pub use status::{LinkDirection, MeshStatus, PeerState, PeerStatus};
