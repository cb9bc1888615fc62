//! The replica plane of `bus` (spec §4), its I/O-free part: the
//! authenticated handshake as two state machines, pre-shared keys with
//! rotation, and the replica settings.
//!
//! Two replicas of a cluster prove to each other that they hold the same
//! pre-shared key with three sealed frames (`ReplicaHello`,
//! `ReplicaChallenge`, `ReplicaFinish`), bound to the connection's TLS
//! session when there is one. [`Dialer`] and [`Acceptor`] take the frames a
//! transport received and return the frames to send:
//!
//! ```
//! use bus_replica::{
//!     Acceptor, Binding, Dialer, DialerOutcome, FinishOutcome, HandshakeConfig, HelloOutcome,
//!     Key, Keys, OsRandom, PeerSet,
//! };
//!
//! let keys = Keys::new(Key::derive(b"thirty-two bytes of shared secret"));
//! let node0 = HandshakeConfig::new(0x2a, 0, PeerSet::from_iter([1]), keys.clone());
//! let node1 = HandshakeConfig::new(0x2a, 1, PeerSet::from_iter([0]), keys);
//!
//! // Node 0 dials node 1 (the lower id dials).
//! let (dialer, hello) = Dialer::start(&node0, 1, Binding::PLAIN_TCP, &mut OsRandom)?;
//! let acceptor = Acceptor::new(&node1, Binding::PLAIN_TCP, &mut OsRandom)?;
//! let no_live_connection = |_id: u8| false;
//! let HelloOutcome::Challenge { challenge, next } = acceptor.receive_hello(&hello, no_live_connection)
//! else {
//!     panic!("node 1 refused node 0")
//! };
//! let DialerOutcome::Authenticated { finish, peer } = dialer.receive(&challenge) else {
//!     panic!("node 0 did not authenticate node 1")
//! };
//! assert_eq!(peer.peer, 1);
//! let FinishOutcome::Authenticated(peer) = next.receive_finish(&finish) else {
//!     panic!("node 1 did not authenticate node 0")
//! };
//! assert_eq!(peer.peer, 0);
//! # Ok::<(), bus_replica::NonceError>(())
//! ```
//!
//! # What this crate owns, and what it does not
//!
//! - [`handshake`]: the dialer's and the acceptor's state machines, with the
//!   acceptor's order of checks and status codes; [`message`]: the three
//!   messages on the wire; [`auth`]: key derivation, the transcript, the
//!   MACs, the signing and verify-only [`Keys`]; [`nonce`]: fresh nonces
//!   from the OS; [`psk`]: key files; [`ReplicaConfig`]: the settings.
//! - No I/O besides reading key files, no clock, no tasks. Dialing, the
//!   listener, `handshake_grace`, the registry of live connections,
//!   reconnect backoff and replica TLS belong to `bus-mesh`, which
//!   drives these state machines.

// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
// The README's example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod auth;
mod config;
mod error;
pub mod handshake;
pub mod limits;
pub mod message;
pub mod nonce;
pub mod psk;

pub use auth::{Binding, Direction, Key, KeySlot, Keys, TLS_EXPORTER_LABEL, Transcript};
pub use config::{ConfigError, KeyFileError, PeerConfig, ReplicaConfig};
pub use error::{Failure, Refusal};
pub use handshake::{
    Acceptor, Authenticated, AwaitingFinish, Dialer, DialerOutcome, Failed, FinishOutcome,
    HandshakeConfig, HelloOutcome, PeerSet, dials,
};
pub use nonce::{NonceError, NonceSource, OsRandom};
pub use psk::{PskError, load_key};
