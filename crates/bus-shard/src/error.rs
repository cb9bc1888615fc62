//! The one error type of `bus-shard`.

use std::{io, time::Duration};

/// Why the shards could not start, or a request to them failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// A [`ShardsConfig`](crate::ShardsConfig) value is out of range.
    #[error("{field} = {value} is out of range: allowed {allowed}")]
    Config {
        /// Dotted name of the field, as spelled in the TOML schema.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What the field accepts.
        allowed: &'static str,
    },
    /// A listener was declared for a shard that does not exist.
    #[error("listener {listener} is placed on shard {shard}, but only {count} shards run (0 ..= {})", .count - 1)]
    NoSuchShard {
        /// Index of the listener, in declaration order.
        listener: usize,
        /// The shard it asked for.
        shard: u16,
        /// How many shards run.
        count: u16,
    },
    /// The shard's thread could not be spawned.
    #[error("cannot spawn the thread of shard {shard}: {source}")]
    Spawn {
        /// The shard.
        shard: u16,
        /// Why.
        source: io::Error,
    },
    /// The shard's compio runtime could not be built.
    #[error("cannot build the compio runtime of shard {shard}: {source}")]
    Runtime {
        /// The shard.
        shard: u16,
        /// Why.
        source: io::Error,
    },
    /// The shard's bus refused its configuration or a listener.
    #[error("shard {shard}: {source}")]
    Bus {
        /// The shard.
        shard: u16,
        /// Why.
        source: bus_core::Error,
    },
    /// A delegated TCP listener could not bind.
    #[error("shard {shard}: {source}")]
    Listen {
        /// The shard that binds it (always 0 for delegated listeners).
        shard: u16,
        /// Why, naming the address.
        source: bus_tcp::TcpError,
    },
    /// A listener served on one shard could not be created.
    #[error("shard {shard}: cannot create listener {listener}: {source}")]
    Listener {
        /// The shard.
        shard: u16,
        /// Index of the listener, in declaration order.
        listener: usize,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The shard's thread ended during start-up (the handler factory or a
    /// listener factory panicked).
    #[error("shard {shard} ended during start-up (did the handler factory panic?)")]
    Exited {
        /// The shard.
        shard: u16,
    },
    /// A shard did not answer within the bound.
    #[error("shard {shard} did not answer within {timeout:?}")]
    Timeout {
        /// The shard.
        shard: u16,
        /// The bound that ran out.
        timeout: Duration,
    },
    /// The shard is stopped or stopping.
    #[error("shard {shard} is stopped")]
    Stopped {
        /// The shard.
        shard: u16,
    },
    /// Too many control requests are waiting for the shard.
    #[error("shard {shard} has too many control requests waiting; retry later")]
    Busy {
        /// The shard.
        shard: u16,
    },
}
