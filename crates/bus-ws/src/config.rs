//! Runtime configuration of the WebSocket transports, and the size chain
//! that ties WebSocket limits to the bus's `max_message_size`.
//!
//! One bus frame travels in one WebSocket message, which may arrive in
//! several WebSocket frames. So the limits must satisfy
//! `max_frame_size_bytes ≤ message limit = max_message_size ≤ 1 GiB`:
//! [`WsListenerConfig::validate`] and [`WsConnectorConfig::validate`] refuse a
//! violation, and the connection takes its message limit from the bus's own
//! `max_message_size`, so the two can never disagree.

use std::{net::SocketAddr, time::Duration};

use bus_core::limits::{self, MAX_MAX_MESSAGE_SIZE_BYTES, MIN_MAX_MESSAGE_SIZE_BYTES};
use bus_tcp::{TcpConnectorConfig, TcpListenerConfig};

use crate::WsError;

/// Default HTTP path of the upgrade request.
pub const DEFAULT_PATH: &str = "/";
/// Default read buffer per connection (several buffers of this size exist
/// per connection; see `docs/operations.md` for the measured total).
pub const DEFAULT_READ_BUFFER_BYTES: usize = limits::WS_DEFAULT_READ_BUFFER_BYTES;
/// Default write buffer per connection.
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = limits::WS_DEFAULT_WRITE_BUFFER_BYTES;
/// Smallest read or write buffer.
pub const MIN_BUFFER_BYTES: usize = limits::WS_MIN_BUFFER_BYTES;
/// Largest read or write buffer.
pub const MAX_BUFFER_BYTES: usize = limits::WS_MAX_BUFFER_BYTES;
/// Default largest WebSocket frame (payload bytes).
pub const DEFAULT_MAX_FRAME_SIZE_BYTES: u32 = limits::WS_DEFAULT_MAX_FRAME_SIZE_BYTES;
/// Smallest `max_frame_size_bytes`: one bare bus header (256 bytes, the
/// smallest `max_message_size`).
pub const MIN_MAX_FRAME_SIZE_BYTES: u32 = MIN_MAX_MESSAGE_SIZE_BYTES;
const _: () = assert!(MIN_MAX_FRAME_SIZE_BYTES <= DEFAULT_MAX_FRAME_SIZE_BYTES);
const _: () = assert!(DEFAULT_MAX_FRAME_SIZE_BYTES <= MAX_MAX_MESSAGE_SIZE_BYTES);

/// Buffer sizes and the WebSocket frame limit, shared by both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsLimits {
    /// Read buffer of each connection: socket reads land there (a message
    /// up to this size is copied once from it into its frame), and the
    /// decoder's buffer for fragmented messages is this size too; larger
    /// messages are received into their own storage from the inbound
    /// budget. WSS: also the TLS receive and send buffers (at least
    /// `bus_tls::MIN_BUFFER_BYTES`).
    pub read_buffer_bytes: usize,
    /// The write buffer of each connection: small frames are packed into
    /// it with their WebSocket headers, and it goes to the socket when full
    /// and at the end of each batch; a frame larger than half of it is
    /// written from its own storage. A client masks through a buffer of
    /// this size. It never grows.
    pub write_buffer_bytes: usize,
    /// Largest accepted WebSocket frame payload. At most the bus's
    /// `max_message_size`; a message may span several frames.
    pub max_frame_size_bytes: u32,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
            max_frame_size_bytes: DEFAULT_MAX_FRAME_SIZE_BYTES,
        }
    }
}

impl WsLimits {
    /// Checks the buffer ranges and the size chain against the bus's
    /// `max_message_size_bytes`.
    pub fn validate(&self, max_message_size_bytes: u32) -> Result<(), WsError> {
        let buffers = MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES;
        if !buffers.contains(&self.read_buffer_bytes) {
            return Err(WsError::config(
                "read_buffer_bytes",
                self.read_buffer_bytes,
                format!("{MIN_BUFFER_BYTES} ..= {MAX_BUFFER_BYTES}"),
            ));
        }
        if !buffers.contains(&self.write_buffer_bytes) {
            return Err(WsError::config(
                "write_buffer_bytes",
                self.write_buffer_bytes,
                format!("{MIN_BUFFER_BYTES} ..= {MAX_BUFFER_BYTES}"),
            ));
        }
        if !(MIN_MAX_FRAME_SIZE_BYTES..=max_message_size_bytes).contains(&self.max_frame_size_bytes)
        {
            return Err(WsError::config(
                "max_frame_size_bytes",
                self.max_frame_size_bytes,
                format!(
                    "{MIN_MAX_FRAME_SIZE_BYTES} ..= max_message_size ({max_message_size_bytes}): \
                     a WebSocket frame is at most the message that carries one bus frame"
                ),
            ));
        }
        Ok(())
    }

    /// The WebSocket frame limit of a connection whose bus accepts frames
    /// of at most `max_message_size_bytes`: clamped to that, as a last line
    /// of defence behind [`WsLimits::validate`]. The message limit *is* the
    /// bus's limit, so a larger message is refused from its first header.
    pub(crate) fn max_frame(&self, max_message_size_bytes: u32) -> u32 {
        self.max_frame_size_bytes.min(max_message_size_bytes)
    }
}

/// Server-side WebSocket settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsListenerConfig {
    /// The TCP listener underneath (address, backlog, `TCP_NODELAY`).
    pub tcp: TcpListenerConfig,
    /// HTTP path of the upgrade request; other paths get `404`.
    pub path: String,
    /// Origins allowed to connect (`https://app.example.com`). Empty does not
    /// check the `Origin` header; otherwise a request without one of these
    /// origins gets `403`.
    pub allowed_origins: Vec<String>,
    /// Buffers and frame limit.
    pub limits: WsLimits,
}

impl WsListenerConfig {
    /// Settings for `listen` with every other field at its default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            tcp: TcpListenerConfig::new(listen),
            path: DEFAULT_PATH.to_owned(),
            allowed_origins: Vec::new(),
            limits: WsLimits::default(),
        }
    }

    /// Checks the path and the limits against the bus's
    /// `max_message_size_bytes` (the size chain).
    pub fn validate(&self, max_message_size_bytes: u32) -> Result<(), WsError> {
        validate_path(&self.path)?;
        self.limits.validate(max_message_size_bytes)
    }
}

/// Client-side WebSocket settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConnectorConfig {
    /// The TCP dial underneath (timeout, `TCP_NODELAY`).
    pub tcp: TcpConnectorConfig,
    /// HTTP path of the upgrade request.
    pub path: String,
    /// `Host` header; the dialed address when `None`.
    pub host: Option<String>,
    /// `Origin` header to send, if any.
    pub origin: Option<String>,
    /// Buffers and frame limit.
    pub limits: WsLimits,
}

impl Default for WsConnectorConfig {
    fn default() -> Self {
        Self {
            tcp: TcpConnectorConfig::default(),
            path: DEFAULT_PATH.to_owned(),
            host: None,
            origin: None,
            limits: WsLimits::default(),
        }
    }
}

impl WsConnectorConfig {
    /// Checks the path and the limits against `max_message_size_bytes`, the
    /// largest frame this client accepts.
    pub fn validate(&self, max_message_size_bytes: u32) -> Result<(), WsError> {
        validate_path(&self.path)?;
        self.limits.validate(max_message_size_bytes)
    }

    /// The bound on dialing.
    pub fn connect_timeout(&self) -> Duration {
        self.tcp.connect_timeout
    }
}

/// An upgrade path must be absolute.
fn validate_path(path: &str) -> Result<(), WsError> {
    if path.starts_with('/') {
        return Ok(());
    }
    Err(WsError::config(
        "path",
        format!("{path:?}"),
        "a path starting with \"/\"",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_chain_accepts_frame_up_to_message_limit() {
        let mut limits = WsLimits {
            max_frame_size_bytes: 1 << 20,
            ..WsLimits::default()
        };
        assert!(limits.validate(1 << 20).is_ok(), "frame == message limit");
        assert!(limits.validate(2 << 20).is_ok(), "frame < message limit");
        limits.max_frame_size_bytes = MIN_MAX_FRAME_SIZE_BYTES;
        assert!(limits.validate(256).is_ok(), "the smallest chain");
    }

    #[test]
    fn size_chain_refuses_frame_above_message_limit() {
        let limits = WsLimits {
            max_frame_size_bytes: (1 << 20) + 1,
            ..WsLimits::default()
        };
        let err = limits.validate(1 << 20).unwrap_err().to_string();
        assert!(err.contains("max_frame_size_bytes"), "{err}");
        assert!(err.contains("1048576"), "names the message limit: {err}");
    }

    #[test]
    fn size_chain_refuses_frame_below_a_header() {
        let limits = WsLimits {
            max_frame_size_bytes: 255,
            ..WsLimits::default()
        };
        assert!(limits.validate(1 << 20).is_err());
    }

    #[test]
    fn buffers_are_range_checked() {
        let mut limits = WsLimits {
            read_buffer_bytes: 1024,
            ..WsLimits::default()
        };
        assert!(limits.validate(64 << 20).is_err());
        limits.read_buffer_bytes = MIN_BUFFER_BYTES;
        limits.write_buffer_bytes = MAX_BUFFER_BYTES + 1;
        assert!(limits.validate(64 << 20).is_err());
    }

    #[test]
    fn frame_limit_derives_from_the_bus() {
        let limits = WsLimits::default(); // frame limit 16 MiB
        assert_eq!(limits.max_frame(1 << 20), 1 << 20, "clamped to the message");
        assert_eq!(limits.max_frame(64 << 20), 16 << 20);
    }

    #[test]
    fn path_must_start_with_a_slash() {
        let mut config = WsListenerConfig::new("127.0.0.1:0".parse().unwrap());
        config.path = "bus".into();
        assert!(config.validate(64 << 20).is_err());
        config.path = "/bus".into();
        assert!(config.validate(64 << 20).is_ok());
    }
}
