//! Client settings: every bound the client keeps, named and with a default.

use std::{path::PathBuf, time::Duration};

use bus_core::limits;

/// Default [`ClientOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = limits::CLIENT_DEFAULT_CONNECT_TIMEOUT;
/// Default [`ClientOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = limits::CLIENT_DEFAULT_REQUEST_TIMEOUT;
/// Default [`ClientOptions::max_outstanding_requests`].
pub const DEFAULT_MAX_OUTSTANDING_REQUESTS: usize = limits::DEFAULT_MAX_OUTSTANDING_REQUESTS;
/// Default [`ClientOptions::send_queue_frames`].
pub const DEFAULT_SEND_QUEUE_FRAMES: usize = limits::CLIENT_DEFAULT_SEND_QUEUE_FRAMES;
/// Default [`ClientOptions::send_queue_bytes`].
pub const DEFAULT_SEND_QUEUE_BYTES: usize = limits::DEFAULT_QUEUE_CAPACITY_BYTES;
/// Default [`ClientOptions::server_request_queue`].
pub const DEFAULT_SERVER_REQUEST_QUEUE: usize = limits::CLIENT_DEFAULT_UNSOLICITED_QUEUE_FRAMES;
/// Default [`ClientOptions::unsolicited_queue_frames`].
pub const DEFAULT_UNSOLICITED_QUEUE_FRAMES: usize = limits::CLIENT_DEFAULT_UNSOLICITED_QUEUE_FRAMES;

/// How a client connects and what it bounds. Build it from
/// [`ClientOptions::default`] and change the fields you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Bound on dialing (TCP connect; for TLS-based transports the dial
    /// only). Default 5 s.
    pub connect_timeout: Duration,
    /// Bound on the transport handshake after the dial (TLS, WebSocket
    /// upgrade, QUIC stream). Default 10 s, as the node's `handshake_grace`.
    pub handshake_timeout: Duration,
    /// Bound on each request and ping, from the call until the reply.
    /// Default 10 s.
    pub request_timeout: Duration,
    /// Bound on [`Client::close`](crate::Client::close): our `Goodbye` and
    /// the node's end of the stream. Default 5 s.
    pub close_timeout: Duration,
    /// Most requests waiting for a reply at once; one more fails with
    /// [`TooManyRequests`](crate::ClientError::TooManyRequests). Default
    /// 4096.
    pub max_outstanding_requests: usize,
    /// Capacity of the send queue, in frames; a send to a full queue fails
    /// with [`QueueFull`](crate::ClientError::QueueFull). Default 4096.
    pub send_queue_frames: usize,
    /// Capacity of the send queue, in bytes (frames waiting plus the batch
    /// being written); a frame larger than it can never be sent. Default
    /// 64 MiB.
    pub send_queue_bytes: usize,
    /// Capacity of the queue of unsolicited frames (frames that answer no
    /// request, such as `Delivery`). When it is full, newly arriving
    /// unsolicited frames are dropped and counted
    /// ([`ClientStats::unsolicited_dropped`](crate::ClientStats)), so a
    /// reader that falls behind never stalls replies. Default 1024.
    pub unsolicited_queue_frames: usize,
    /// Capacity of the queue of requests from the node (spec §9) not yet
    /// taken with [`Client::recv_request`](crate::Client::recv_request);
    /// when it is full a new one is dropped and counted
    /// ([`ClientStats::server_requests_dropped`](crate::ClientStats)) and
    /// the node's waiter times out. Default 1024.
    pub server_request_queue: usize,
    /// Largest frame accepted from the node, header included. Default
    /// 64 MiB.
    pub max_message_size_bytes: u32,
    /// Read buffer of the connection. Default 64 KiB.
    pub read_buffer_bytes: usize,
    /// Most frames handed to one write. Default 64.
    pub max_batch_frames: usize,
    /// Seal every frame sent (spec §1 checksums). Default on.
    pub seal: bool,
    /// Reconnect after the connection drops; `None` (the default) gives up.
    pub reconnect: Option<Reconnect>,
    /// PEM bundle of CAs to trust for `tls://`, `wss://` and `quic://`
    /// (a node's self-signed development certificate, for example); the
    /// system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Name to verify the node's certificate against; the URL's host when
    /// `None`.
    pub server_name: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: bus_core::limits::DEFAULT_HANDSHAKE_GRACE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            close_timeout: bus_core::limits::DEFAULT_CLOSE_GRACE,
            max_outstanding_requests: DEFAULT_MAX_OUTSTANDING_REQUESTS,
            send_queue_frames: DEFAULT_SEND_QUEUE_FRAMES,
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            unsolicited_queue_frames: DEFAULT_UNSOLICITED_QUEUE_FRAMES,
            server_request_queue: DEFAULT_SERVER_REQUEST_QUEUE,
            max_message_size_bytes: bus_core::limits::DEFAULT_MAX_MESSAGE_SIZE_BYTES,
            read_buffer_bytes: bus_core::limits::DEFAULT_READ_BUFFER_BYTES,
            max_batch_frames: bus_core::limits::DEFAULT_MAX_BATCH_FRAMES,
            seal: true,
            reconnect: None,
            ca_file: None,
            server_name: None,
        }
    }
}

/// Reconnect policy: exponential backoff with full jitter. Before attempt
/// `n` (counting from 0 after each loss of the connection) the client
/// sleeps a uniformly random time in `0 ..= min(max_delay, initial_delay *
/// 2^n)`, so many clients that lost the same node do not return in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconnect {
    /// Upper bound of the first delay. Default 50 ms.
    pub initial_delay: Duration,
    /// Cap on any delay. Default 5 s.
    pub max_delay: Duration,
    /// Give up after this many failed attempts in a row; `None` retries
    /// until the client is closed.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// The upper bound of the delay before attempt `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay before attempt `attempt`: uniform in `0 ..= ceiling`, drawn
    /// from `random` (any 64 random bits).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random % nanos.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_jitters_below_it() {
        let r = Reconnect {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            max_attempts: None,
        };
        assert_eq!(r.ceiling(0), Duration::from_millis(10));
        assert_eq!(r.ceiling(3), Duration::from_millis(80));
        assert_eq!(r.ceiling(4), Duration::from_millis(100));
        assert_eq!(r.ceiling(u32::MAX), Duration::from_millis(100));
        assert_eq!(r.delay(0, 0), Duration::ZERO);
        assert_eq!(r.delay(0, 10_000_000), Duration::from_millis(10));
        for random in [1, 7, u64::MAX, 123_456_789_012] {
            assert!(r.delay(5, random) <= Duration::from_millis(100));
        }
    }
}
