//! Every bound and default of the bus in one place, with the relations
//! between them checked at compile time: the frame, the per-shard bus and
//! its connections, the transports, the shard layer and the client. The
//! crates that use a bound re-export it under their own name; the embedded
//! `defaults.toml` of `bus-config` feeds the configurable ones and a test
//! keeps the two equal.

use std::{ops::RangeInclusive, time::Duration};

/// Size of the fixed frame header (spec §1).
pub const HEADER_SIZE: usize = 256;
/// Alignment of every frame buffer in memory (spec §1).
pub const FRAME_ALIGN: usize = 16;
/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The protocol identifier used for ALPN and the WebSocket subprotocol.
pub const PROTOCOL_ID: &str = "bus.v1";

/// Smallest value `max_message_size` may be configured to: one bare header.
pub const MIN_MAX_MESSAGE_SIZE_BYTES: u32 = 256;
/// Largest value `max_message_size` may be configured to (1 GiB).
pub const MAX_MAX_MESSAGE_SIZE_BYTES: u32 = 1 << 30;
/// Default `max_message_size` (64 MiB, spec §1).
pub const DEFAULT_MAX_MESSAGE_SIZE_BYTES: u32 = 64 << 20;

/// Default outbound queue capacity per connection (spec §6).
pub const DEFAULT_QUEUE_CAPACITY_FRAMES: usize = 1024;
/// Largest `max_batch_frames`: one writev must stay under `IOV_MAX`.
pub const MAX_BATCH_FRAMES_LIMIT: usize = 512;
/// Default frames per writer batch.
pub const DEFAULT_MAX_BATCH_FRAMES: usize = 64;
/// Linux's `IOV_MAX`: the most buffers one `writev` takes.
pub const IOV_MAX: usize = 1024;

/// Default read buffer per connection.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 64 << 10;
/// Smallest read buffer: one header and then some.
pub const MIN_READ_BUFFER_BYTES: usize = 4 << 10;
/// Largest read buffer.
pub const MAX_READ_BUFFER_BYTES: usize = 16 << 20;

/// Default bound from accept to a usable connection (spec §7).
pub const DEFAULT_HANDSHAKE_GRACE: Duration = Duration::from_secs(10);
/// Default bound on closing one connection (spec §3).
pub const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Default wait for the peer's side of the close.
pub const DEFAULT_CLOSE_PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest UTF-8 detail a `Goodbye` carries (spec §3).
pub const GOODBYE_DETAIL_MAX_BYTES: usize = 122;

/// Default outbound queue capacity per connection in bytes (spec §6): the
/// frames waiting plus the batch being written. At least one frame of
/// `max_message_size` must fit.
pub const DEFAULT_QUEUE_CAPACITY_BYTES: usize = 64 << 20;

/// Default node-wide budget for partly received frames larger than a read
/// buffer: their bytes are reserved from it when their header arrives.
pub const DEFAULT_INBOUND_BUDGET_BYTES: u64 = 256 << 20;

/// Default bound on requests one side has outstanding on one connection
/// (spec §9).
pub const DEFAULT_MAX_OUTSTANDING_REQUESTS: usize = 4096;

/// Default bound on the application's flush at shutdown.
pub const DEFAULT_SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Default keep-alive of replica connections: a `Ping` after this long
/// without a frame from the peer.
pub const DEFAULT_REPLICA_KEEPALIVE: Duration = Duration::from_secs(1);
/// Default idle bound of replica connections: a replica that sent nothing
/// (not even a `Pong`) for this long is closed, so a link whose packets
/// vanish is detected within it.
pub const DEFAULT_REPLICA_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause after a failed `accept` (for example out of file descriptors), so a
/// persistent error does not spin the shard.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Default cap on live client connections per node, across every listener
/// and shard (`[bus] max_connections`): below the usual descriptor limit
/// once raised to its hard limit (the node reports both at start).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on handshakes (TLS handshakes, WebSocket upgrades, the wait
/// for the first frame not included) in flight per listener
/// (`max_handshakes` of each TCP-based transport).
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Refused sockets whose short refusal (the WebSocket `503`) may be in
/// flight at once on the accepting shard; beyond it a refused socket is
/// closed without one.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// Bound on writing a refusal and waiting for the peer to close after it.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Pause after an `accept` that failed for lack of descriptors
/// (`EMFILE`/`ENFILE`): longer than [`ACCEPT_ERROR_BACKOFF`], since only a
/// closing connection makes room.
pub const ACCEPT_DESCRIPTORS_BACKOFF: Duration = Duration::from_millis(100);

/// Lines one rate-limited log call site writes per
/// [`LOG_RATE_INTERVAL`]; what is beyond is counted and reported with the
/// next line that is written.
pub const LOG_RATE_BURST_LINES: u32 = 10;
/// The window of [`LOG_RATE_BURST_LINES`].
pub const LOG_RATE_INTERVAL: Duration = Duration::from_secs(10);

/// After shutdown cancels what outlived its grace, how long it waits for
/// compio to run the cancellations (they complete on the runtime's next
/// turns).
pub const SHUTDOWN_SETTLE: Duration = Duration::from_millis(500);

/// Capacity of the smallest pooled buffer class: one bare header.
pub const FRAME_POOL_SMALLEST_BYTES: usize = HEADER_SIZE;
/// Number of pooled size classes, each twice the previous:
/// 256 B, 512 B, … 64 KiB. Larger buffers are sized to the page
/// ([`FRAME_POOL_LARGE_GRANULE_BYTES`]) and kept in a small cache instead.
pub const FRAME_POOL_CLASSES: usize = 9;
/// Most bytes of free buffers one thread keeps per size class (so at most
/// `FRAME_POOL_CLASSES` MiB per thread in all).
pub const FRAME_POOL_BYTES_PER_CLASS: usize = 1 << 20;
/// Most bytes of free buffers larger than the largest class one thread
/// keeps for reuse. Without them, every frame above 64 KiB came from fresh
/// pages, and faulting those in cost more than a TLS echo's copies.
pub const FRAME_POOL_LARGE_BYTES: usize = 4 << 20;
/// Most free buffers larger than the largest class one thread keeps.
pub const FRAME_POOL_LARGE_SLOTS: usize = 8;
/// Buffers larger than the largest class are sized to a multiple of this
/// (a page), so frames of nearly equal sizes share them.
pub const FRAME_POOL_LARGE_GRANULE_BYTES: usize = 4 << 10;

// ---------------------------------------------------------------- ports

/// Default port of plain TCP (the demo node; URLs without a port).
pub const DEFAULT_TCP_PORT: u16 = 7070;
/// Default port of TLS.
pub const DEFAULT_TLS_PORT: u16 = 7071;
/// Default port of WebSocket.
pub const DEFAULT_WS_PORT: u16 = 7072;
/// Default port of WebSocket over TLS.
pub const DEFAULT_WSS_PORT: u16 = 7073;
/// Default port of QUIC (UDP).
pub const DEFAULT_QUIC_PORT: u16 = 7074;

// ---------------------------------------------------------------- TLS

/// Smallest socket buffer the TLS transport uses, whatever is configured:
/// one full TLS record (16 KiB of plaintext plus overhead) fits.
pub const TLS_MIN_BUFFER_BYTES: usize = 17 << 10;
/// Default socket buffer of a TLS client.
pub const TLS_DEFAULT_BUFFER_BYTES: usize = 64 << 10;
/// Most slices handed to one vectored TLS write; frames beyond it go in the
/// next call of the same batch (the flush still happens once per batch).
pub const TLS_MAX_IOV: usize = 64;
/// Largest plaintext of one TLS record (RFC 8446 §5.1: 2^14 bytes). The
/// record driver coalesces frames smaller than this into one record.
pub const TLS_RECORD_PLAINTEXT_BYTES: usize = 1 << 14;
/// Most bytes a TLS 1.3 record adds to its plaintext (RFC 8446 §5.2: a
/// 5-byte header and at most 256 bytes of content type, padding and tag).
pub const TLS_RECORD_OVERHEAD_BYTES: usize = 5 + 256;
/// Ceiling the receive buffer of the record driver grows to while one
/// handshake message spans several records and cannot be processed yet
/// (rustls refuses handshake messages above 64 KiB), when the configured
/// buffer is smaller.
pub const TLS_MAX_RECEIVE_BUFFER_BYTES: usize = (64 << 10) + 2 * TLS_MIN_BUFFER_BYTES;
/// Most bytes of TLS messages rustls produced while reading (key update
/// answers, alerts) that may wait for the next write of the connection;
/// a peer that makes more is refused.
pub const TLS_MAX_PENDING_CONTROL_BYTES: usize = 16 << 10;

// ---------------------------------------------------------------- WebSocket

/// Default read buffer of a WebSocket connection (several buffers of this
/// size exist per connection; see `docs/operations.md`).
pub const WS_DEFAULT_READ_BUFFER_BYTES: usize = 8 << 10;
/// Default write buffer of a WebSocket connection.
pub const WS_DEFAULT_WRITE_BUFFER_BYTES: usize = 8 << 10;
/// Smallest WebSocket read or write buffer.
pub const WS_MIN_BUFFER_BYTES: usize = 4 << 10;
/// Largest WebSocket read or write buffer.
pub const WS_MAX_BUFFER_BYTES: usize = 16 << 20;
/// Default largest WebSocket frame (payload bytes).
pub const WS_DEFAULT_MAX_FRAME_SIZE_BYTES: u32 = 16 << 20;
/// Largest payload of a WebSocket control frame (ping, pong, close), fixed
/// by RFC 6455 §5.5; a larger one fails the connection.
pub const WS_MAX_CONTROL_PAYLOAD_BYTES: usize = 125;
/// Largest HTTP upgrade request or response head (request line and
/// headers) a WebSocket endpoint reads; a larger one is refused with `431`.
pub const WS_MAX_UPGRADE_HEAD_BYTES: usize = 8 << 10;
/// Most headers in an HTTP upgrade request or response.
pub const WS_MAX_UPGRADE_HEADERS: usize = 64;

// ---------------------------------------------------------------- QUIC

/// Default QUIC idle timeout.
pub const QUIC_DEFAULT_MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default QUIC keep-alive (below the idle timeout).
pub const QUIC_DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Default QUIC stream receive window.
pub const QUIC_DEFAULT_STREAM_RECEIVE_WINDOW: u64 = 8 << 20;
/// Default QUIC connection receive window.
pub const QUIC_DEFAULT_CONNECTION_RECEIVE_WINDOW: u64 = 16 << 20;
/// Default QUIC send window.
pub const QUIC_DEFAULT_SEND_WINDOW: u64 = 16 << 20;
/// Default kernel buffers of the QUIC UDP socket, each way.
pub const QUIC_DEFAULT_UDP_BUFFER_BYTES: usize = 4 << 20;
/// Default bound on waiting for the peer's acknowledgement of what we sent
/// before `CONNECTION_CLOSE` goes out.
pub const QUIC_DEFAULT_CLOSE_ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound on a QUIC client's connect and stream opening.
pub const QUIC_DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest initial MTU (RFC 9000 §14).
pub const QUIC_MIN_INITIAL_MTU: u16 = 1200;
/// Largest initial MTU (a UDP datagram's payload).
pub const QUIC_MAX_INITIAL_MTU: u16 = 65_527;
/// Default QUIC initial MTU: the largest UDP payload a 1500-byte Ethernet
/// path carries under IPv6 (1500 - 40 - 8), quinn's own discovery ceiling.
/// compio-quic 0.8 never runs path MTU discovery on Linux (its socket
/// setup reports "may fragment" exactly when it managed to forbid
/// fragmentation), so this is the packet size of a connection's whole life,
/// down to 1200 only if quinn's black-hole detection fires; at 1200 a
/// 32-frame burst of 256-byte Echo replies took 8 packets instead of 6.
pub const QUIC_DEFAULT_INITIAL_MTU: u16 = 1452;
/// Ack-eliciting packets a QUIC peer may receive from us before it must
/// acknowledge them, asked of it with the ACK frequency extension
/// (draft-ietf-quic-ack-frequency; quinn peers support it, others ignore
/// the request). quinn's own default, 1, has the peer acknowledge every
/// other packet: an Echo client then answered each 6-packet burst of
/// replies with ACK-only packets of its own, each one a receive, a
/// decryption and an ACK to process on the server. The peer still
/// acknowledges within its `max_ack_delay`, on reordering, and in every
/// packet it sends anyway.
pub const QUIC_ACK_ELICITING_THRESHOLD: u32 = 10;
/// Allowed QUIC flow-control windows.
pub const QUIC_WINDOW_RANGE: RangeInclusive<u64> = 1024..=(1 << 30);
/// Allowed kernel UDP buffer sizes.
pub const QUIC_UDP_BUFFER_RANGE: RangeInclusive<usize> = (4 << 10)..=(1 << 30);
/// Default cap on a QUIC listener's open connections (handshaking or
/// established).
pub const QUIC_DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default cap on a QUIC listener's handshakes in flight.
pub const QUIC_DEFAULT_MAX_HANDSHAKES: u32 = 256;
/// When `retry_threshold` is unset, a QUIC listener answers attempts from
/// unvalidated addresses with a Retry (address validation) instead of a slot
/// once `max_handshakes / QUIC_RETRY_THRESHOLD_DIVISOR` (rounded up)
/// handshakes are in flight: unvalidated handshakes are bounded by that,
/// tighter than validated ones (by `max_handshakes`).
pub const QUIC_RETRY_THRESHOLD_DIVISOR: u32 = 4;
/// Least time between two warnings of the same kind a QUIC listener logs
/// about attempts it turns away (Retries, refusals); those in between are
/// counted and reported with the next one.
pub const QUIC_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Frames up to this size are copied into the writer's shared send chunk
/// (one reference-counted buffer per batch instead of one allocation per
/// frame); larger ones are handed to quinn without a copy.
pub const QUIC_COALESCE_MAX_FRAME_BYTES: usize = 4 << 10;
/// Capacity of a QUIC writer's send chunk. A batch of small frames takes a
/// slice of it; the chunk is reused once quinn has released every slice
/// (the peer acknowledged them) and replaced when it is full. A connection
/// that has sent small frames keeps its current chunk while idle, so this
/// is also a per-connection memory cost (16 KiB: about 60 frames of 256 B
/// per allocation).
pub const QUIC_SEND_CHUNK_BYTES: usize = 16 << 10;

// ---------------------------------------------------------------- shards

/// Most shards one node runs.
pub const MAX_SHARDS: u16 = 1024;
/// Default capacity of each shard's inbox (messages from other shards).
pub const SHARD_DEFAULT_INBOX_CAPACITY_FRAMES: usize = 4096;
/// Connections handed over from shard 0 that may wait for one target shard
/// at once; beyond it shard 0 closes the connection and counts it.
pub const SHARD_HANDOFF_QUEUE_CAPACITY: usize = 1024;
/// Inbox messages one shard handles before it lets its connections run.
pub const SHARD_INBOX_BATCH_MESSAGES: usize = 256;
/// Bound on starting every shard (runtime, bus, listeners).
pub const SHARD_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one statistics round trip to every shard.
pub const SHARD_STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// What a shard shutdown allows beyond the grace it is given: the bus's own
/// settle, dropping the runtime, joining the thread.
pub const SHARD_SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);
/// Grace of the shutdown started when the shards' handle is dropped.
pub const SHARD_DROP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Control requests (stats) that may wait for one shard at once.
pub const SHARD_CONTROL_QUEUE_CAPACITY: usize = 16;

// ---------------------------------------------------------------- client

/// Default bound on a client's dial.
pub const CLIENT_DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on one client request, from the call to its reply.
pub const CLIENT_DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default capacity of a client's send queue, in frames.
pub const CLIENT_DEFAULT_SEND_QUEUE_FRAMES: usize = 4096;
/// Default capacity of a client's queue of unsolicited frames.
pub const CLIENT_DEFAULT_UNSOLICITED_QUEUE_FRAMES: usize = 1024;

// ---------------------------------------------------------------- relations

const _: () = assert!(HEADER_SIZE.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(MIN_MAX_MESSAGE_SIZE_BYTES as usize == HEADER_SIZE);
const _: () = assert!(MIN_MAX_MESSAGE_SIZE_BYTES <= DEFAULT_MAX_MESSAGE_SIZE_BYTES);
const _: () = assert!(DEFAULT_MAX_MESSAGE_SIZE_BYTES <= MAX_MAX_MESSAGE_SIZE_BYTES);
const _: () = assert!(MAX_BATCH_FRAMES_LIMIT <= IOV_MAX / 2);
const _: () = assert!(DEFAULT_MAX_BATCH_FRAMES <= MAX_BATCH_FRAMES_LIMIT);
const _: () = assert!(MIN_READ_BUFFER_BYTES >= 2 * HEADER_SIZE);
const _: () = assert!(DEFAULT_READ_BUFFER_BYTES >= MIN_READ_BUFFER_BYTES);
const _: () =
    assert!(DEFAULT_REPLICA_KEEPALIVE.as_nanos() < DEFAULT_REPLICA_IDLE_TIMEOUT.as_nanos());
const _: () = assert!(DEFAULT_QUEUE_CAPACITY_BYTES >= DEFAULT_MAX_MESSAGE_SIZE_BYTES as usize);
const _: () = assert!(DEFAULT_INBOUND_BUDGET_BYTES >= DEFAULT_MAX_MESSAGE_SIZE_BYTES as u64);
// The default read buffer is a pooled class, so idle connections recycle it.
const _: () =
    assert!(DEFAULT_READ_BUFFER_BYTES <= FRAME_POOL_SMALLEST_BYTES << (FRAME_POOL_CLASSES - 1));
const _: () =
    assert!(FRAME_POOL_BYTES_PER_CLASS >= FRAME_POOL_SMALLEST_BYTES << (FRAME_POOL_CLASSES - 1));
const _: () = assert!(
    FRAME_POOL_LARGE_BYTES > FRAME_POOL_SMALLEST_BYTES << (FRAME_POOL_CLASSES - 1)
        && FRAME_POOL_LARGE_GRANULE_BYTES.is_power_of_two()
        && FRAME_POOL_LARGE_GRANULE_BYTES.is_multiple_of(FRAME_ALIGN)
);
const _: () = assert!(TLS_MIN_BUFFER_BYTES <= TLS_DEFAULT_BUFFER_BYTES);
const _: () = assert!(TLS_MAX_IOV <= IOV_MAX);
const _: () =
    assert!(TLS_RECORD_PLAINTEXT_BYTES + TLS_RECORD_OVERHEAD_BYTES <= TLS_MIN_BUFFER_BYTES);
const _: () = assert!(TLS_MIN_BUFFER_BYTES <= TLS_MAX_RECEIVE_BUFFER_BYTES);
const _: () = assert!(WS_MIN_BUFFER_BYTES <= WS_DEFAULT_READ_BUFFER_BYTES);
const _: () = assert!(WS_DEFAULT_READ_BUFFER_BYTES <= WS_MAX_BUFFER_BYTES);
const _: () = assert!(WS_MIN_BUFFER_BYTES <= WS_DEFAULT_WRITE_BUFFER_BYTES);
const _: () = assert!(WS_DEFAULT_WRITE_BUFFER_BYTES <= WS_MAX_BUFFER_BYTES);
const _: () = assert!(MIN_MAX_MESSAGE_SIZE_BYTES <= WS_DEFAULT_MAX_FRAME_SIZE_BYTES);
const _: () = assert!(WS_DEFAULT_MAX_FRAME_SIZE_BYTES <= MAX_MAX_MESSAGE_SIZE_BYTES);
const _: () =
    assert!(QUIC_DEFAULT_KEEP_ALIVE.as_nanos() < QUIC_DEFAULT_MAX_IDLE_TIMEOUT.as_nanos());
const _: () = assert!(QUIC_MIN_INITIAL_MTU <= QUIC_MAX_INITIAL_MTU);
const _: () = assert!(
    QUIC_MIN_INITIAL_MTU <= QUIC_DEFAULT_INITIAL_MTU
        && QUIC_DEFAULT_INITIAL_MTU <= QUIC_MAX_INITIAL_MTU
);
const _: () = assert!(QUIC_DEFAULT_MAX_HANDSHAKES <= QUIC_DEFAULT_MAX_CONNECTIONS);
const _: () = assert!(QUIC_RETRY_THRESHOLD_DIVISOR >= 1);
const _: () = assert!(QUIC_COALESCE_MAX_FRAME_BYTES <= QUIC_SEND_CHUNK_BYTES);
const _: () = assert!(MAX_SHARDS as u32 <= u16::MAX as u32 + 1);
const _: () = assert!(SHARD_INBOX_BATCH_MESSAGES >= 1);
const _: () = assert!(DEFAULT_MAX_HANDSHAKES <= DEFAULT_MAX_CONNECTIONS);
const _: () = assert!(LOG_RATE_BURST_LINES >= 1);
const _: () = assert!(ACCEPT_DESCRIPTORS_BACKOFF.as_nanos() >= ACCEPT_ERROR_BACKOFF.as_nanos());
const _: () = assert!(SHARD_DEFAULT_INBOX_CAPACITY_FRAMES >= SHARD_INBOX_BATCH_MESSAGES);
const _: () = assert!(SHARD_SHUTDOWN_MARGIN.as_nanos() > SHUTDOWN_SETTLE.as_nanos());
// Goodbye: 4-byte reason + 2-byte length + detail fit in the command area.
const _: () = assert!(6 + GOODBYE_DETAIL_MAX_BYTES <= 128);
