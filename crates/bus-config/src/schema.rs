//! The typed TOML schema of a whole `bus` node, one struct per section.
//!
//! The structs carry no defaults of their own: every value comes from the
//! embedded `defaults.toml` with the user's file merged over it (see
//! [`Config::from_toml_str`]), so every field is required here. The only
//! exceptions are the optional paths (`tls.cert`, `tls.key`, `tls.client_ca`,
//! `replicas.psk_file`, `replicas.verify_psk_file`, `replicas.ca_file`),
//! whose default is "not set".
//!
//! Every struct denies unknown fields, so a typo is an error that names the
//! key. Parsing a value (units, addresses, enum names) happens here; ranges
//! and relations between fields are checked by [`Config::validate`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{ByteSize, de};

/// The configuration of a whole `bus` node: one field per TOML section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `[bus]`: limits and timeouts of every connection.
    pub bus: BusSection,
    /// `[tcp]`: the plain TCP listener and dialer.
    pub tcp: TcpSection,
    /// `[tls]`: the TCP + TLS listener and the certificate every TLS-based
    /// transport shares.
    pub tls: TlsSection,
    /// `[ws]`: the WebSocket listener.
    pub ws: WsSection,
    /// `[wss]`: the WebSocket-over-TLS listener.
    pub wss: WsSection,
    /// `[quic]`: the QUIC endpoint.
    pub quic: QuicSection,
    /// `[shards]`: how many shards run and how connections are placed.
    pub shards: ShardsSection,
    /// `[replicas]`: the replica mesh.
    pub replicas: ReplicasSection,
    /// `[admin]`: the admin endpoint.
    pub admin: AdminSection,
    /// `[log]`: logging.
    pub log: LogSection,
}

/// `[bus]`: limits and timeouts that apply to every connection on every
/// transport.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BusSection {
    /// Largest accepted frame, header included (spec §1).
    pub max_message_size: ByteSize,
    /// Capacity of each connection's outbound queue, in frames (spec §6).
    pub queue_capacity_frames: usize,
    /// Capacity of each connection's outbound queue, in bytes.
    pub queue_capacity_bytes: ByteSize,
    /// Node-wide budget for partly received frames larger than a read
    /// buffer.
    pub inbound_budget: ByteSize,
    /// Most server requests outstanding on one connection (spec §9).
    pub max_outstanding_requests: usize,
    /// Bound on the application's flush at shutdown.
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_flush_timeout: Duration,
    /// Most frames a writer drains into one write.
    pub max_batch_frames: usize,
    /// Read buffer of each connection.
    pub read_buffer: ByteSize,
    /// Bound from accept to a usable connection (spec §7).
    #[serde(deserialize_with = "de::duration")]
    pub handshake_grace: Duration,
    /// Bound on flushing the queue plus the `Goodbye` and closing our side
    /// (spec §3).
    #[serde(deserialize_with = "de::duration")]
    pub close_grace: Duration,
    /// How long to wait for the peer's side of the close.
    #[serde(deserialize_with = "de::duration")]
    pub close_peer_timeout: Duration,
    /// Close a connection that received nothing for this long; `None` (written
    /// `"off"`) disables the check.
    #[serde(deserialize_with = "de::optional_duration")]
    pub idle_timeout: Option<Duration>,
    /// Refuse unsealed frames from clients (spec §1).
    pub require_sealed_clients: bool,
    /// What happens when a connection's outbound queue is full (spec §6).
    pub slow_consumer: SlowConsumer,
    /// Most live client connections on the node, across every listener and
    /// shard (QUIC included); one more is refused right after accept.
    pub max_connections: usize,
}

/// What the bus does with a connection whose outbound queue is full
/// (`bus.slow_consumer`, spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SlowConsumer {
    /// `"keep"`: keep the connection and report `QueueFull` to the sender.
    Keep,
    /// `"disconnect"`: close it with `Goodbye(SlowConsumer)`.
    Disconnect,
}

/// `[tcp]`: the plain TCP transport.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TcpSection {
    /// Serve plain TCP.
    pub enabled: bool,
    /// Address to bind; port 0 picks a free port.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Length of the kernel's accept queue.
    pub backlog: u32,
    /// Set `TCP_NODELAY` on every socket.
    pub nodelay: bool,
    /// Most connections of this listener between accept and a usable
    /// connection at once; one more is closed right after accept.
    pub max_handshakes: usize,
    /// Bound on dialing a peer.
    #[serde(deserialize_with = "de::duration")]
    pub connect_timeout: Duration,
}

/// `[tls]`: the TCP + TLS 1.3 listener, and the certificate that `[wss]`,
/// `[quic]` and replica TLS share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsSection {
    /// Serve TCP + TLS.
    pub enabled: bool,
    /// Address to bind.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Most TLS handshakes in flight on this listener at once; one more is
    /// closed right after accept, before its `ClientHello` is read.
    pub max_handshakes: usize,
    /// PEM certificate chain; set together with [`key`](Self::key).
    pub cert: Option<PathBuf>,
    /// PEM private key; set together with [`cert`](Self::cert).
    pub key: Option<PathBuf>,
    /// PEM bundle of client CAs; setting it turns on mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Generate a self-signed development certificate when `cert` and `key`
    /// are not set.
    pub self_signed: bool,
    /// Log TLS secrets to `$SSLKEYLOGFILE` (debugging only).
    pub keylog: bool,
}

/// `[ws]` and `[wss]`: a WebSocket listener (spec §7). `[wss]` takes its
/// certificate from `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WsSection {
    /// Serve this listener.
    pub enabled: bool,
    /// Address to bind.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Most upgrades (and, for WSS, TLS handshakes) in flight on this
    /// listener at once; one more gets an HTTP `503` (WSS: is closed)
    /// right after accept.
    pub max_handshakes: usize,
    /// HTTP path of the upgrade request; starts with `/`.
    pub path: String,
    /// Origins allowed to connect (`https://host[:port]`); empty does not
    /// check the `Origin` header.
    pub allowed_origins: Vec<String>,
    /// Read buffer of each connection.
    pub read_buffer: ByteSize,
    /// Write buffer of each connection.
    pub write_buffer: ByteSize,
    /// Largest WebSocket frame; at most `bus.max_message_size`. Unset:
    /// see [`WsSection::effective_max_frame_size`].
    #[serde(default)]
    pub max_frame_size: Option<ByteSize>,
}

/// The WebSocket frame limit when `max_frame_size` is not set, unless
/// `bus.max_message_size` is smaller.
pub const DEFAULT_WS_MAX_FRAME_SIZE: ByteSize = ByteSize::mib(16);

impl WsSection {
    /// The WebSocket frame limit in effect: `max_frame_size` when set, else
    /// [`DEFAULT_WS_MAX_FRAME_SIZE`] capped at `max_message_size`, so that
    /// lowering `bus.max_message_size` never needs a second edit.
    pub fn effective_max_frame_size(&self, max_message_size: ByteSize) -> ByteSize {
        self.max_frame_size.unwrap_or(ByteSize(
            DEFAULT_WS_MAX_FRAME_SIZE
                .bytes()
                .min(max_message_size.bytes()),
        ))
    }
}

/// `[quic]`: the QUIC endpoint (spec §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QuicSection {
    /// Serve QUIC.
    pub enabled: bool,
    /// UDP address to bind.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Close a connection after this long without any packet.
    #[serde(deserialize_with = "de::duration")]
    pub max_idle_timeout: Duration,
    /// Send a keep-alive after this long without sending; `None` (written
    /// `"off"` or zero) sends none. Below `max_idle_timeout`.
    #[serde(deserialize_with = "de::optional_duration")]
    pub keep_alive: Option<Duration>,
    /// Flow-control window of the bus stream.
    pub stream_receive_window: ByteSize,
    /// Flow-control window of the whole connection.
    pub connection_receive_window: ByteSize,
    /// Most unacknowledged bytes in flight per connection.
    pub send_window: ByteSize,
    /// First path MTU to try, in bytes.
    pub initial_mtu: u16,
    /// Kernel send buffer of the UDP socket.
    pub udp_send_buffer: ByteSize,
    /// Kernel receive buffer of the UDP socket.
    pub udp_receive_buffer: ByteSize,
    /// Most open connections.
    pub max_connections: u32,
    /// Most handshakes in progress at once.
    pub max_handshakes: u32,
    /// Handshakes in flight from which attempts from unvalidated addresses
    /// are answered with a Retry; at most `max_handshakes`. Unset: a
    /// quarter of `max_handshakes` (see
    /// `bus_quic::QuicListenerConfig::effective_retry_threshold`).
    #[serde(default)]
    pub retry_threshold: Option<u32>,
}

/// `[shards]`: the thread-per-core layout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ShardsSection {
    /// Number of shards; 0 means one per available core (see
    /// [`Config::shard_count`]).
    pub count: u16,
    /// Pin shard `i` to CPU `i`.
    pub pin_cpus: bool,
    /// How new connections are spread over shards.
    pub placement: Placement,
    /// Whether shard 0, which also accepts, serves clients itself.
    pub shard0_takes_clients: bool,
    /// Capacity of each shard's cross-shard inbox, in frames.
    pub inbox_capacity_frames: usize,
}

/// How new connections are spread over shards (`shards.placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Placement {
    /// `"round-robin"`: each shard in turn.
    RoundRobin,
    /// `"least-connections"`: the shard with the fewest connections.
    LeastConnections,
}

/// `[replicas]`: the authenticated replica mesh (spec §4).
///
/// These keys are a contract: external test suites start nodes with them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReplicasSection {
    /// Join the replica mesh.
    pub enabled: bool,
    /// Cluster id carried in every replica frame; written as a decimal or
    /// `0x` hex string (or a TOML integer when it fits).
    #[serde(deserialize_with = "de::cluster")]
    pub cluster: u128,
    /// This node's replica id.
    pub self_id: u8,
    /// File holding the signing pre-shared key (its bytes are the key, at
    /// least 32, readable by the owner only); required when enabled.
    pub psk_file: Option<PathBuf>,
    /// File holding a key that verifies peers but never signs: the other key
    /// during a rotation.
    pub verify_psk_file: Option<PathBuf>,
    /// Address the replica plane binds.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// The other replicas of the cluster.
    pub peers: Vec<PeerSection>,
    /// Refuse unsealed frames from replicas (spec §1).
    pub require_sealed: bool,
    /// Run the replica plane over TLS with the `[tls]` certificate.
    pub tls: bool,
    /// PEM bundle the dialer verifies peers' certificates against; unset:
    /// the `[tls]` certificate itself.
    pub ca_file: Option<PathBuf>,
    /// Upper bound of the redial backoff (exponential, full jitter).
    #[serde(deserialize_with = "de::duration")]
    pub reconnect_max: Duration,
    /// A `Ping` on a replica link after this long without a frame from the
    /// peer; `None` (`"off"`) sends none.
    #[serde(deserialize_with = "de::optional_duration")]
    pub keepalive: Option<Duration>,
    /// A replica link that received nothing for this long is closed with
    /// `Goodbye(IdleTimeout)`; `None` (`"off"`) never.
    #[serde(deserialize_with = "de::optional_duration")]
    pub idle_timeout: Option<Duration>,
}

/// One entry of `replicas.peers`: `{ id = 1, addr = "127.0.0.1:7176" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PeerSection {
    /// The peer's replica id; unique, and not `replicas.self_id`.
    pub id: u8,
    /// Where the peer's replica plane listens.
    #[serde(deserialize_with = "de::socket_addr")]
    pub addr: SocketAddr,
}

/// `[admin]`: the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminSection {
    /// Serve the admin endpoint.
    pub enabled: bool,
    /// Address to bind.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LogSection {
    /// Most verbose level logged.
    pub level: LogLevel,
}

/// A log level (`log.level`), from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogLevel {
    /// `"error"`
    Error,
    /// `"warn"`
    Warn,
    /// `"info"`
    Info,
    /// `"debug"`
    Debug,
    /// `"trace"`
    Trace,
}

impl LogLevel {
    /// The level as written in TOML, which is also how `tracing` filters
    /// spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}
