//! The one error type of `bus-cli`, and the exit code each error gives.

use std::{net::SocketAddr, process::ExitCode};

use bus_core::TransportKind;

/// Exit code for a configuration or usage error (as clap uses for usage).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running (bind, runtime, network).
pub const EXIT_FAILURE: u8 = 1;

/// What can stop a `bus` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate could not be loaded, generated or reloaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration is invalid: the message names the field, the value
    /// and the fix.
    #[error("invalid configuration ({source_name}): {error}\n  fix: {fix}")]
    Config {
        /// Where the bad value came from: a file, a flag, or the defaults.
        source_name: String,
        /// What `bus-config` said.
        error: bus_config::Error,
        /// How to fix it.
        fix: String,
    },
    /// A transport is enabled but not compiled into this binary.
    #[error(
        "{transport} is enabled ({how}) but this `bus` was built without it: set `--{transport} off` (or `{transport}.enabled = false`), or rebuild with `--features {transport}`"
    )]
    TransportNotAvailable {
        /// The transport.
        transport: TransportKind,
        /// Which setting enabled it.
        how: String,
    },
    /// The shards could not start (a runtime, a thread, a listener).
    #[error("cannot start the shards: {0}")]
    Shards(bus_shard::ShardError),
    /// A listener could not be bound.
    #[error(
        "cannot listen for {what} on {addr}: {message}; pick another address or stop what uses it"
    )]
    Bind {
        /// The transport or endpoint.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The bus refused to start or serve.
    #[error("bus: {0}")]
    Bus(#[from] bus_core::Error),
    /// The compio runtime or a signal handler could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A client operation failed (`bus ping`, `bus bench --target`).
    #[error(transparent)]
    Client(#[from] bus_client::ClientError),
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// The replica plane cannot start (a key file, the CA bundle), or is
    /// enabled in a build without it.
    #[error("replica plane: {0}")]
    Replica(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config { .. }
            | Self::TransportNotAvailable { .. }
            | Self::Usage(_)
            | Self::Replica(_) => ExitCode::from(EXIT_CONFIG),
            _ => ExitCode::from(EXIT_FAILURE),
        }
    }
}
