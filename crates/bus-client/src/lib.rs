//! The client library of `bus`: connect to a node by URL, send requests and
//! get their replies, receive unsolicited frames, ping, and reconnect.
//!
//! ```no_run
//! use bus_client::{Client, ClientOptions};
//! use bus_core::{Command, FrameMut};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! compio::runtime::Runtime::new()?.block_on(async {
//!     let client = Client::connect("tcp://127.0.0.1:7070", ClientOptions::default()).await?;
//!     // Echo (16) on the reference node (`bus serve`) answers with EchoReply (17).
//!     let reply = client
//!         .request(FrameMut::with_body(Command::Application(16), b"hello"))
//!         .await?;
//!     assert_eq!(reply.header().command_raw(), 17);
//!     assert_eq!(reply.body(), b"hello");
//!     println!("rtt {:?}", client.ping().await?);
//!     client.close().await;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # What it guarantees
//!
//! - **Correlation**: every request gets a fresh `request` id; its reply is
//!   the frame the node sends back with that id. Any number of requests may
//!   be in flight from any number of tasks, up to
//!   [`ClientOptions::max_outstanding_requests`].
//! - **Everything bounded**: outstanding requests, the send queue, the queue
//!   of unsolicited frames (overflow is dropped and counted, so replies are
//!   never stalled by an unread `Delivery`), and every wait (connect,
//!   handshake, request, close).
//! - **Prompt failure**: when the connection drops, every outstanding
//!   request fails at once with [`ClientError::Disconnected`], which carries
//!   the node's `Goodbye` (for example `ShuttingDown`) when one arrived.
//! - **Sealed** frames by default (spec §1 checksums).
//! - **Reconnect** (opt-in, [`ClientOptions::reconnect`]): exponential
//!   backoff with full jitter; requests made meanwhile wait for the new
//!   connection within their timeout.
//!
//! # Transports
//!
//! | scheme    | feature | needs |
//! |-----------|---------|-------|
//! | `tcp://`  | `tcp` (default) | |
//! | `tls://`  | `tls`   | [`ClientOptions::ca_file`] |
//! | `ws://`   | `ws`    | |
//! | `wss://`  | `wss`   | [`ClientOptions::ca_file`] |
//! | `quic://` | `quic`  | [`ClientOptions::ca_file`] |
//!
//! A scheme whose feature is off parses, and connecting to it fails with
//! [`ClientError::SchemeNotAvailable`] naming the feature.
//!
//! # Threading
//!
//! A client lives on the compio runtime it was created on (it is `!Send`),
//! like the connections of a `bus` shard. Its socket is driven by one task
//! on that runtime.
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without any transport the client can only refuse every URL; the session
// machinery is then compiled but unused.
#![cfg_attr(
    not(feature = "tcp"),
    allow(
        dead_code,
        unused_imports,
        unused_variables,
        reason = "a build without transports reports SchemeNotAvailable for every URL"
    )
)]

mod client;
mod driver;
mod error;
mod event;
mod options;
mod request;
mod url;

pub use client::{Client, ClientStats, ConnectionState};
pub use error::ClientError;
pub use options::{ClientOptions, Reconnect};
pub use request::{Responder, ServerRequest};
pub use url::{Endpoint, Scheme};

/// The named defaults of [`ClientOptions`].
pub mod defaults {
    pub use crate::options::{
        DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_OUTSTANDING_REQUESTS, DEFAULT_REQUEST_TIMEOUT,
        DEFAULT_SEND_QUEUE_BYTES, DEFAULT_SEND_QUEUE_FRAMES, DEFAULT_SERVER_REQUEST_QUEUE,
        DEFAULT_UNSOLICITED_QUEUE_FRAMES,
    };
}
