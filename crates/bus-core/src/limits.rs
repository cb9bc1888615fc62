//! Every bound of the bus in one place, with the relations between them
//! checked at compile time.

use std::time::Duration;

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

/// After shutdown cancels what outlived its grace, how long it waits for
/// compio to run the cancellations (they complete on the runtime's next
/// turns).
pub const SHUTDOWN_SETTLE: Duration = Duration::from_millis(500);

/// Capacity of the smallest pooled buffer class: one bare header.
pub const FRAME_POOL_SMALLEST_BYTES: usize = HEADER_SIZE;
/// Number of pooled size classes, each twice the previous:
/// 256 B, 512 B, … 64 KiB. Larger buffers are allocated exactly.
pub const FRAME_POOL_CLASSES: usize = 9;
/// Most bytes of free buffers one thread keeps per size class (so at most
/// `FRAME_POOL_CLASSES` MiB per thread in all).
pub const FRAME_POOL_BYTES_PER_CLASS: usize = 1 << 20;

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
// Goodbye: 4-byte reason + 2-byte length + detail fit in the command area.
const _: () = assert!(6 + GOODBYE_DETAIL_MAX_BYTES <= 128);
