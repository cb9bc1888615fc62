//! Settings of the QUIC transport, with their validation.

use std::{net::SocketAddr, ops::RangeInclusive, path::PathBuf, time::Duration};

use bus_core::limits;

use crate::QuicError;

/// Smallest datagram every QUIC path must carry (RFC 9000 §14).
pub const MIN_INITIAL_MTU: u16 = limits::QUIC_MIN_INITIAL_MTU;
/// Largest `max_udp_payload_size` (RFC 9000 §18.2).
pub const MAX_INITIAL_MTU: u16 = limits::QUIC_MAX_INITIAL_MTU;
/// Allowed flow-control and send windows.
pub const WINDOW_RANGE: RangeInclusive<u64> = limits::QUIC_WINDOW_RANGE;
/// Allowed UDP socket buffer sizes.
pub const UDP_BUFFER_RANGE: RangeInclusive<usize> = limits::QUIC_UDP_BUFFER_RANGE;

/// QUIC tuning shared by servers and clients.
///
/// The UDP buffers matter most: Linux gives a UDP socket about 208 KiB by
/// default, under 100 full-size packets once the kernel's per-packet
/// overhead is counted, and one endpoint carries every connection of its
/// shard. A burst larger than that is dropped by the kernel and costs a
/// loss-recovery round trip, so both buffers default to 4 MiB. The kernel
/// caps them at `net.core.rmem_max` / `wmem_max` unless the process has
/// `CAP_NET_ADMIN`; [`QuicListener::udp_buffers`](crate::QuicListener::udp_buffers)
/// reports what was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicTuning {
    /// Close a connection after this long without any packet (also bounds a
    /// handshake whose peer vanished). > 0.
    pub max_idle_timeout: Duration,
    /// Send a keep-alive after this long without sending; `None` sends none.
    /// Below `max_idle_timeout`.
    pub keep_alive: Option<Duration>,
    /// Flow-control window of the bus stream (bytes): how far the peer may
    /// send ahead of what we have read. At most `connection_receive_window`.
    pub stream_receive_window: u64,
    /// Flow-control window of the whole connection (bytes).
    pub connection_receive_window: u64,
    /// Most unacknowledged bytes in flight per connection.
    pub send_window: u64,
    /// Size of the UDP payload of every packet (bytes). compio-quic 0.8
    /// runs no path MTU discovery on Linux, so this stays the packet size
    /// (see [`QUIC_DEFAULT_INITIAL_MTU`](limits::QUIC_DEFAULT_INITIAL_MTU));
    /// quinn falls back to 1200 if packets of this size are lost as a
    /// black hole. Never above the peer's `max_udp_payload_size`.
    pub initial_mtu: u16,
    /// Kernel send buffer of the UDP socket (bytes).
    pub udp_send_buffer: usize,
    /// Kernel receive buffer of the UDP socket (bytes).
    pub udp_receive_buffer: usize,
    /// Bound on waiting, while closing, for the peer to acknowledge what we
    /// sent (the `Goodbye` included) before `CONNECTION_CLOSE` goes out.
    pub close_ack_timeout: Duration,
}

impl Default for QuicTuning {
    /// The defaults of `[quic]` in the config file.
    fn default() -> Self {
        Self {
            max_idle_timeout: limits::QUIC_DEFAULT_MAX_IDLE_TIMEOUT,
            keep_alive: Some(limits::QUIC_DEFAULT_KEEP_ALIVE),
            stream_receive_window: limits::QUIC_DEFAULT_STREAM_RECEIVE_WINDOW,
            connection_receive_window: limits::QUIC_DEFAULT_CONNECTION_RECEIVE_WINDOW,
            send_window: limits::QUIC_DEFAULT_SEND_WINDOW,
            initial_mtu: limits::QUIC_DEFAULT_INITIAL_MTU,
            udp_send_buffer: limits::QUIC_DEFAULT_UDP_BUFFER_BYTES,
            udp_receive_buffer: limits::QUIC_DEFAULT_UDP_BUFFER_BYTES,
            close_ack_timeout: limits::QUIC_DEFAULT_CLOSE_ACK_TIMEOUT,
        }
    }
}

impl QuicTuning {
    /// Checks every field, naming the first one out of range.
    pub fn validate(&self) -> Result<(), QuicError> {
        if self.max_idle_timeout.is_zero() {
            return Err(invalid("max_idle_timeout", "0 s", "> 0 s"));
        }
        // QUIC carries the idle timeout in milliseconds as a varint (< 2^62).
        if u64::try_from(self.max_idle_timeout.as_millis()).map_or(true, |ms| ms >= 1 << 62) {
            return Err(invalid(
                "max_idle_timeout",
                format!("{:?}", self.max_idle_timeout),
                "below 2^62 ms",
            ));
        }
        if let Some(keep_alive) = self.keep_alive
            && (keep_alive.is_zero() || keep_alive >= self.max_idle_timeout)
        {
            return Err(invalid(
                "keep_alive",
                format!("{keep_alive:?}"),
                format!(
                    "off, or > 0 s and below max_idle_timeout ({:?})",
                    self.max_idle_timeout
                ),
            ));
        }
        for (field, value) in [
            ("stream_receive_window", self.stream_receive_window),
            ("connection_receive_window", self.connection_receive_window),
            ("send_window", self.send_window),
        ] {
            if !WINDOW_RANGE.contains(&value) {
                return Err(invalid(field, value, "1024 ..= 1073741824 bytes"));
            }
        }
        if self.stream_receive_window > self.connection_receive_window {
            return Err(invalid(
                "stream_receive_window",
                self.stream_receive_window,
                format!(
                    "at most connection_receive_window ({})",
                    self.connection_receive_window
                ),
            ));
        }
        if !(MIN_INITIAL_MTU..=MAX_INITIAL_MTU).contains(&self.initial_mtu) {
            return Err(invalid("initial_mtu", self.initial_mtu, "1200 ..= 65527"));
        }
        for (field, value) in [
            ("udp_send_buffer", self.udp_send_buffer),
            ("udp_receive_buffer", self.udp_receive_buffer),
        ] {
            if !UDP_BUFFER_RANGE.contains(&value) {
                return Err(invalid(field, value, "4096 ..= 1073741824 bytes"));
            }
        }
        if self.close_ack_timeout.is_zero() {
            return Err(invalid("close_ack_timeout", "0 s", "> 0 s"));
        }
        Ok(())
    }
}

/// Server-side settings of the QUIC endpoint. The certificate comes from a
/// [`bus_tls::ServerTls`] passed beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicListenerConfig {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// Most open connections (established or handshaking); beyond it new
    /// connection attempts are refused before any crypto work. >= 1.
    pub max_connections: u32,
    /// Most handshakes in progress at once. 1 ..= `max_connections`.
    pub max_handshakes: u32,
    /// Handshakes in flight from which an attempt whose address is not
    /// validated is answered with a Retry instead of a slot: a client that
    /// really owns its address comes back validated (one round trip later)
    /// and is admitted up to `max_handshakes`; a spoofed or never-completing
    /// source costs nothing more. Unvalidated handshakes are thereby bounded
    /// by this value. 0 ..= `max_handshakes` (0: every new client is asked
    /// to validate). `None`: see [`Self::effective_retry_threshold`].
    pub retry_threshold: Option<u32>,
    /// Transport tuning.
    pub tuning: QuicTuning,
}

impl QuicListenerConfig {
    /// Settings binding `listen`, everything else at its default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_connections: limits::QUIC_DEFAULT_MAX_CONNECTIONS,
            max_handshakes: limits::QUIC_DEFAULT_MAX_HANDSHAKES,
            retry_threshold: None,
            tuning: QuicTuning::default(),
        }
    }

    /// The Retry threshold in force: `retry_threshold`, or when unset
    /// `max_handshakes` divided by
    /// [`QUIC_RETRY_THRESHOLD_DIVISOR`](limits::QUIC_RETRY_THRESHOLD_DIVISOR),
    /// rounded up (64 of the default 256), so that lowering
    /// `max_handshakes` keeps the protection without a second edit.
    pub fn effective_retry_threshold(&self) -> u32 {
        self.retry_threshold.unwrap_or_else(|| {
            self.max_handshakes
                .div_ceil(limits::QUIC_RETRY_THRESHOLD_DIVISOR)
        })
    }

    /// Checks every field, naming the first one out of range.
    pub fn validate(&self) -> Result<(), QuicError> {
        if self.max_connections == 0 {
            return Err(invalid("max_connections", 0, ">= 1"));
        }
        if !(1..=self.max_connections).contains(&self.max_handshakes) {
            return Err(invalid(
                "max_handshakes",
                self.max_handshakes,
                format!("1 ..= max_connections ({})", self.max_connections),
            ));
        }
        if let Some(threshold) = self.retry_threshold
            && threshold > self.max_handshakes
        {
            return Err(invalid(
                "retry_threshold",
                threshold,
                format!("0 ..= max_handshakes ({})", self.max_handshakes),
            ));
        }
        self.tuning.validate()
    }
}

/// Client-side settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicClientConfig {
    /// PEM bundle of the CAs that may sign the server's certificate.
    pub ca_file: PathBuf,
    /// The name the server's certificate must be valid for (and SNI).
    pub server_name: String,
    /// ALPN protocols to offer. Default: `bus.v1`.
    pub alpn: Vec<Vec<u8>>,
    /// A PEM certificate chain and key to present (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Local UDP address to bind (port 0 for an ephemeral one).
    pub bind: SocketAddr,
    /// Bound on the handshake plus opening the stream.
    pub connect_timeout: Duration,
    /// Transport tuning.
    pub tuning: QuicTuning,
}

impl QuicClientConfig {
    /// Trust `ca_file`, expect a certificate for `server_name`, bind an
    /// ephemeral IPv4 loopback-or-any port; everything else at its default.
    pub fn new(ca_file: impl Into<PathBuf>, server_name: impl Into<String>) -> Self {
        Self {
            ca_file: ca_file.into(),
            server_name: server_name.into(),
            alpn: vec![bus_tls::ALPN_BUS.to_vec()],
            client_cert: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            connect_timeout: limits::QUIC_DEFAULT_CONNECT_TIMEOUT,
            tuning: QuicTuning::default(),
        }
    }
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> QuicError {
    QuicError::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.into(),
    }
}
