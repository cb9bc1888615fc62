//! The one error type of the client.
//!
//! It is `Clone`: when a connection drops, the same error fails every
//! outstanding request at once. I/O errors are therefore kept as their kind
//! and message.

use std::{io, time::Duration};

use bus_core::{Goodbye, GoodbyeReason};

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL could not be parsed.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's transport is not compiled into this build.
    #[error(
        "`{scheme}://` is not available in this build: enable the `{feature}` feature of bus-client (or bus)"
    )]
    SchemeNotAvailable {
        /// The scheme.
        scheme: &'static str,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// The host name did not resolve to any address.
    #[error("cannot resolve `{host}`: {message}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        message: String,
    },
    /// Dialing or the transport handshake failed (refused, unreachable,
    /// TLS error, wrong subprotocol, ...).
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The URL dialed.
        url: String,
        /// The I/O error kind, `Other` for handshake failures.
        kind: io::ErrorKind,
        /// What failed.
        message: String,
    },
    /// The connection went away. Carries the peer's `Goodbye` when one
    /// arrived before the close.
    #[error("{}", disconnected_message(.goodbye.as_ref(), .cause))]
    Disconnected {
        /// The `Goodbye` the node sent, if any.
        goodbye: Option<Goodbye>,
        /// What ended the connection when no `Goodbye` explains it.
        cause: String,
    },
    /// No reply arrived within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// `max_outstanding_requests` requests are already waiting for replies.
    #[error("{limit} requests are already outstanding (ClientOptions::max_outstanding_requests)")]
    TooManyRequests {
        /// The configured limit.
        limit: usize,
    },
    /// The send queue is full: the node does not read as fast as we send.
    #[error("send queue full ({capacity} frames, ClientOptions::send_queue_frames)")]
    QueueFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// Not connected right now, and no reconnect will happen (or the
    /// reconnect attempts ran out).
    #[error("not connected: {0}")]
    NotConnected(String),
    /// Reconnecting gave up after the configured number of attempts in a
    /// row.
    #[error("gave up on {endpoint} after {attempts} reconnect attempts: {last}")]
    GaveUp {
        /// The node's URL.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// How the last one failed.
        last: Box<ClientError>,
    },
    /// The client was closed by the application.
    #[error("client closed")]
    Closed,
    /// The frame cannot be sent as a request (for example a bus command).
    #[error("invalid frame: {0}")]
    InvalidFrame(&'static str),
    /// A [`ClientOptions`](crate::ClientOptions) value is out of range.
    #[error("invalid client options: {0}")]
    InvalidOptions(&'static str),
}

fn disconnected_message(goodbye: Option<&Goodbye>, cause: &str) -> String {
    match goodbye {
        Some(g) if g.detail.is_empty() => {
            format!("disconnected: the node said Goodbye({})", g.reason)
        }
        Some(g) => format!(
            "disconnected: the node said Goodbye({}): {}",
            g.reason, g.detail
        ),
        None => format!("disconnected: {cause}"),
    }
}

impl ClientError {
    /// The `Goodbye` the node sent before the connection closed, if that is
    /// why this operation failed.
    pub fn goodbye(&self) -> Option<&Goodbye> {
        match self {
            Self::Disconnected { goodbye, .. } => goodbye.as_ref(),
            _ => None,
        }
    }

    /// The reason of the node's `Goodbye`, if one arrived.
    pub fn goodbye_reason(&self) -> Option<GoodbyeReason> {
        self.goodbye().map(|g| g.reason)
    }

    /// Whether a later attempt could succeed (the node was unreachable or
    /// went away), as opposed to a mistake in the URL or the request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Resolve { .. }
                | Self::Connect { .. }
                | Self::Disconnected { .. }
                | Self::Timeout(_)
                | Self::QueueFull { .. }
                | Self::NotConnected(_)
        )
    }
}
