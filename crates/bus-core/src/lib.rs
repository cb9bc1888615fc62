//! The core of `bus`: the frame, framing, aligned zero-copy buffers, the
//! transport trait family and the per-shard [`Bus`].
//!
//! This crate does no network I/O of its own: transports (`bus-tcp`, ...)
//! implement the traits in [`transport`], and the [`Bus`] drives them.
//!
//! ```
//! use bus_core::{Command, FrameMut, Header};
//!
//! // Build a sealed application frame and check it as a receiver would.
//! let mut frame = FrameMut::with_body(Command::Application(16), b"hello");
//! frame.header_mut().set_request(42);
//! frame.seal();
//! let frame = frame.freeze();
//! assert_eq!(frame.header().validate(64 << 20), Ok(()));
//! assert_eq!(frame.header().request(), 42);
//! assert_eq!(frame.body(), b"hello");
//! assert_eq!(frame.len(), 256 + 5);
//! ```
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admission;
pub mod budget;
pub mod buf;
mod bus;
pub mod config;
mod conn;
mod driver;
mod error;
pub mod framing;
mod goodbye;
pub mod header;
mod id;
pub mod limits;
pub mod link;
mod notify;
mod pool;
mod queue;
mod ratelog;
mod requests;
pub mod runtime;
mod state;
mod stats;
mod tasks;
pub mod transport;

pub use admission::{Admission, Admitted, Gate, GateStats, Refusal};
pub use budget::{InboundBudget, Reservation};
pub use buf::{ByteBuf, Frame, FrameMut};
pub use bus::{
    AdoptError, BroadcastReport, Bus, ConnectionSnapshot, FlushError, FlushOutcome, Forwarder,
    Handler, ReplicaEnd, Reply, ShutdownFlush, ShutdownReport,
};
pub use config::{BusConfig, ConfigError, SlowConsumerPolicy};
pub use error::{Error, RequestError, SendError};
pub use framing::{DecodeLimits, Decoder, Progress, StreamReader};
pub use goodbye::{Goodbye, GoodbyeReason};
pub use header::{Command, FrameError, Header};
pub use id::{ClientId, Peer};
pub use link::{Link, LinkConfig, Role};
pub use ratelog::RateLimitedLog;
pub use requests::SERVER_REQUEST_BIT;
pub use state::CloseReason;
pub use stats::{BusStats, ConnectionStats, GOODBYE_REASONS, RequestStats};
pub use transport::{ByteSource, ConnectionInfo, ReadSettings, TransportKind};
