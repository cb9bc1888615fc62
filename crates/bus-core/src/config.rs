//! Runtime configuration of one per-shard [`Bus`](crate::Bus).
//!
//! These are the already-validated values the bus runs with. Parsing them from
//! TOML, human units and the embedded defaults live in `bus-config`; this
//! module only checks the invariants the bus relies on
//! ([`BusConfig::validate`]).

use std::time::Duration;

use crate::limits;

/// What the bus does when a connection's outbound queue is full (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Keep the connection and report `QueueFull` to the sender (the default).
    #[default]
    Keep,
    /// Disconnect the connection with `Goodbye(SlowConsumer)`.
    Disconnect,
}

/// Per-shard bus configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusConfig {
    /// Index of the shard this bus runs on; stamped into the top 16 bits of
    /// every client id it mints (spec §5).
    pub shard: u16,
    /// Largest accepted frame, header included (spec §1).
    pub max_message_size_bytes: u32,
    /// Capacity of each connection's outbound queue, in frames (spec §6).
    pub queue_capacity_frames: usize,
    /// Capacity of each connection's outbound queue, in bytes: the frames
    /// waiting plus the batch being written. At least `max_message_size`.
    pub queue_capacity_bytes: usize,
    /// Bytes of partly received frames larger than a read buffer the bus
    /// holds at once, across its connections (see
    /// [`InboundBudget`](crate::InboundBudget)). A multi-shard node shares
    /// one budget between its shards instead ([`Bus::with_budget`](crate::Bus::with_budget)).
    pub inbound_budget_bytes: u64,
    /// Most frames a writer drains from its queue into one write.
    pub max_batch_frames: usize,
    /// Size of each connection's read buffer.
    pub read_buffer_bytes: usize,
    /// Bound from accept to a usable connection (spec §7).
    pub handshake_grace: Duration,
    /// Bound on flushing queued frames plus the `Goodbye` and closing our
    /// side of a connection (spec §3).
    pub close_grace: Duration,
    /// After our side is closed, how long we wait for the peer to close its
    /// side before the socket is dropped anyway.
    pub close_peer_timeout: Duration,
    /// Close a connection with `Goodbye(IdleTimeout)` when nothing arrives for
    /// this long; `None` disables the check.
    pub idle_timeout: Option<Duration>,
    /// Refuse unsealed frames from clients (spec §1); off by default.
    pub require_sealed_clients: bool,
    /// Refuse unsealed frames from replicas (spec §1); on by default.
    pub require_sealed_replicas: bool,
    /// What happens when a connection's outbound queue is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Most requests from this bus outstanding on one connection at once
    /// (spec §9); one more fails at once.
    pub max_outstanding_requests: usize,
    /// Bound on the application's flush at shutdown
    /// ([`Handler::on_shutdown`](crate::Handler::on_shutdown)).
    pub shutdown_flush_timeout: Duration,
    /// Replica connections send a `Ping` after this long without a frame
    /// from the peer; `None` disables it.
    pub replica_keepalive: Option<Duration>,
    /// Replica connections that received nothing for this long are closed
    /// with `Goodbye(IdleTimeout)`; `None` disables it. Longer than
    /// `replica_keepalive`.
    pub replica_idle_timeout: Option<Duration>,
    /// Most live client connections (handshaking or established) on the
    /// whole node, across every listener and shard. Applied by the shard
    /// layer, which shares one [`Admission`](crate::Admission) between its
    /// shards; a lone [`Bus::serve`](crate::Bus::serve) does not cap.
    pub max_connections: usize,
}

impl Default for BusConfig {
    /// The same values as the embedded defaults of `bus-config`.
    fn default() -> Self {
        Self {
            shard: 0,
            max_message_size_bytes: limits::DEFAULT_MAX_MESSAGE_SIZE_BYTES,
            queue_capacity_frames: limits::DEFAULT_QUEUE_CAPACITY_FRAMES,
            queue_capacity_bytes: limits::DEFAULT_QUEUE_CAPACITY_BYTES,
            inbound_budget_bytes: limits::DEFAULT_INBOUND_BUDGET_BYTES,
            max_batch_frames: limits::DEFAULT_MAX_BATCH_FRAMES,
            read_buffer_bytes: limits::DEFAULT_READ_BUFFER_BYTES,
            handshake_grace: limits::DEFAULT_HANDSHAKE_GRACE,
            close_grace: limits::DEFAULT_CLOSE_GRACE,
            close_peer_timeout: limits::DEFAULT_CLOSE_PEER_TIMEOUT,
            idle_timeout: None,
            require_sealed_clients: false,
            require_sealed_replicas: true,
            slow_consumer: SlowConsumerPolicy::Keep,
            max_outstanding_requests: limits::DEFAULT_MAX_OUTSTANDING_REQUESTS,
            shutdown_flush_timeout: limits::DEFAULT_SHUTDOWN_FLUSH_TIMEOUT,
            replica_keepalive: Some(limits::DEFAULT_REPLICA_KEEPALIVE),
            replica_idle_timeout: Some(limits::DEFAULT_REPLICA_IDLE_TIMEOUT),
            max_connections: limits::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A [`BusConfig`] value outside the range the bus can run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus config: `{field}` = {value} is out of range: {allowed}")]
pub struct ConfigError {
    /// Name of the field, as spelled in the TOML schema.
    pub field: &'static str,
    /// The offending value, rendered for humans.
    pub value: String,
    /// The allowed range.
    pub allowed: &'static str,
}

impl BusConfig {
    /// Checks the invariants the bus relies on. `bus-config` validates the
    /// same ranges with friendlier messages; this is the last line of defence
    /// for configs built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(
            ok: bool,
            field: &'static str,
            value: impl std::fmt::Display,
            allowed: &'static str,
        ) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    value: value.to_string(),
                    allowed,
                })
            }
        }
        check(
            (limits::MIN_MAX_MESSAGE_SIZE_BYTES..=limits::MAX_MAX_MESSAGE_SIZE_BYTES)
                .contains(&self.max_message_size_bytes),
            "max_message_size",
            self.max_message_size_bytes,
            "256 B ..= 1 GiB",
        )?;
        check(
            self.queue_capacity_frames >= 1,
            "queue_capacity_frames",
            self.queue_capacity_frames,
            ">= 1",
        )?;
        check(
            self.queue_capacity_bytes >= self.max_message_size_bytes as usize,
            "queue_capacity_bytes",
            self.queue_capacity_bytes,
            ">= max_message_size",
        )?;
        check(
            self.inbound_budget_bytes >= u64::from(self.max_message_size_bytes),
            "inbound_budget",
            self.inbound_budget_bytes,
            ">= max_message_size",
        )?;
        check(
            self.max_connections >= 1,
            "max_connections",
            self.max_connections,
            ">= 1",
        )?;
        check(
            self.max_outstanding_requests >= 1,
            "max_outstanding_requests",
            self.max_outstanding_requests,
            ">= 1",
        )?;
        check(
            (1..=limits::MAX_BATCH_FRAMES_LIMIT).contains(&self.max_batch_frames),
            "max_batch_frames",
            self.max_batch_frames,
            "1 ..= 512",
        )?;
        check(
            (limits::MIN_READ_BUFFER_BYTES..=limits::MAX_READ_BUFFER_BYTES)
                .contains(&self.read_buffer_bytes),
            "read_buffer",
            self.read_buffer_bytes,
            "4 KiB ..= 16 MiB",
        )?;
        for (field, d) in [
            ("shutdown_flush_timeout", self.shutdown_flush_timeout),
            ("handshake_grace", self.handshake_grace),
            ("close_grace", self.close_grace),
            ("close_peer_timeout", self.close_peer_timeout),
        ] {
            check(!d.is_zero(), field, format!("{d:?}"), "> 0 s")?;
        }
        if let (Some(keepalive), Some(idle)) = (self.replica_keepalive, self.replica_idle_timeout) {
            check(
                !keepalive.is_zero() && keepalive < idle,
                "replica_keepalive",
                format!("{keepalive:?}"),
                "> 0 s and below replica_idle_timeout",
            )?;
        }
        if let Some(d) = self.idle_timeout {
            check(
                !d.is_zero(),
                "idle_timeout",
                format!("{d:?}"),
                "> 0 s, or \"off\"",
            )?;
        }
        Ok(())
    }
}
