//! The replica handshake driven in memory through the public API, the
//! transcript's byte layout, key files and the replica settings.

mod common;
mod config;
mod handshake;
mod psk;
mod rotation;
mod transcript;
