//! The crate's error types, and what the peer sees for each.
//!
//! - [`Error`]: everything a connection or the bus can fail with.
//! - [`SendError`]: the answer of a send that did not enqueue (spec §6); it is
//!   separate because sends are on the hot path and must stay `Copy`.
//!
//! Frame rule violations are [`FrameError`](crate::FrameError); their one
//! mapping to a Goodbye reason is `FrameError::goodbye_reason`.

use std::time::Duration;

use crate::{
    config::ConfigError,
    goodbye::{Goodbye, GoodbyeReason},
    header::FrameError,
    state::CloseReason,
    transport::TransportKind,
};

/// Errors of connections and of the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A received frame broke a rule of spec §1.
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    /// The peer closed the stream between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The peer said `Goodbye`.
    #[error("peer said goodbye: {} ({})", .0.reason, .0.detail)]
    Goodbye(Goodbye),
    /// The transport handshake did not finish within `handshake_grace`.
    #[error("handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// The transport handshake failed (TLS, WebSocket upgrade, QUIC
    /// handshake or stream).
    #[error("{transport} handshake failed: {source}")]
    Handshake {
        /// The transport whose handshake failed.
        transport: TransportKind,
        /// The transport's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The bus is shutting down and takes no new work.
    #[error("the bus is shutting down")]
    ShuttingDown,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// A failed handshake of `transport`, caused by `source`.
    pub fn handshake(
        transport: TransportKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Handshake {
            transport,
            source: source.into(),
        }
    }

    /// The Goodbye reason to send the peer when this error ends a
    /// connection, if the peer is to be told at all.
    pub fn goodbye_reason(&self) -> Option<GoodbyeReason> {
        match self {
            Self::Frame(e) => Some(e.goodbye_reason()),
            Self::ShuttingDown => Some(GoodbyeReason::ShuttingDown),
            Self::HandshakeTimeout(_) | Self::Handshake { .. } => {
                Some(GoodbyeReason::HandshakeFailed)
            }
            Self::Io(_) | Self::Closed | Self::Goodbye(_) | Self::Config(_) => None,
        }
    }
}

/// Why a request sent on a connection got no reply (spec §9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be queued (the connection is gone, closing,
    /// or its queue is full); nothing was sent.
    #[error("request not sent: {0}")]
    Send(SendError),
    /// This side already has the most requests outstanding on this
    /// connection that it may; nothing was sent.
    #[error("{limit} requests are already outstanding on this connection")]
    TooManyRequests {
        /// The configured bound.
        limit: usize,
    },
    /// No reply within the request's timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the reply arrived; this completes at
    /// once when it closes, whatever the timeout.
    #[error("connection closed before the reply: {reason:?}")]
    Disconnected {
        /// Why the connection closed.
        reason: CloseReason,
    },
}

/// Why a send did not enqueue its frame (spec §6). Sends never wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection's outbound queue is full.
    #[error("outbound queue full")]
    QueueFull,
    /// No live connection has this id (never had one, or it is closing).
    #[error("not connected")]
    NotConnected,
    /// The bus is shutting down.
    #[error("bus is shutting down")]
    ShuttingDown,
    /// The frame was for a connection on another shard, and that shard's
    /// inbox is full.
    #[error("destination shard's inbox is full")]
    InboxFull,
}
