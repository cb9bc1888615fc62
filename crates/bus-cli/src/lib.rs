//! The `bus` command: the reference node (`bus serve`), `bus ping`, the
//! `bus bench` load generator and the admin endpoint.
//!
//! The binary is a thin `main` over [`run`]; the pieces are a library so
//! that tests and the in-process bench node run exactly the node `bus
//! serve` runs:
//!
//! - [`node`]: the spec §8 application (Echo, Broadcast).
//! - [`server`]: a [`Node`](server::Node): the shards (one bus per core), one listener per enabled
//!   transport, the admin endpoint.
//! - [`transports`]: which transports this build has and how each is bound;
//!   the one place a new transport is wired in.
//! - [`admin`]: `/healthz`, `/metrics`, `/connz`, `/stats` over a bounded HTTP/1.1;
//!   [`dashboard`]: the live dashboard page at `/dashboard` and its `/stats` JSON;
//!   [`replicaz`]: `/replicaz` and the replica metrics.
//! - [`serve`], [`ping`], [`bench`](mod@bench): the subcommands; [`cli`]: their flags.
//!
//! ```text
//! bus serve                                   # embedded defaults: tcp://127.0.0.1:7070
//! bus serve --tcp 127.0.0.1:0 --admin 127.0.0.1:0
//! bus ping tcp://127.0.0.1:7070
//! bus bench --duration 5 --connections 8 --depth 64
//! ```
#![deny(missing_docs)]
// docs.rs and `cargo xtask docs --docsrs` (nightly) show which feature
// gates an item; `docsrs` is never set on stable builds.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
pub mod bench;
pub mod cli;
pub mod dashboard;
mod error;
pub mod node;
pub mod ping;
pub mod plot;
pub mod replicaz;
pub mod rlimit;
pub mod serve;
pub mod server;
pub mod signals;
pub mod transports;

use std::process::ExitCode;

use clap::Parser;

pub use error::{EXIT_CONFIG, EXIT_FAILURE, Error};

/// Parses the command line and runs the subcommand; the whole of `main`.
pub fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Ping(args) => ping::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Config => {
            print!("{}", bus_config::Config::default_toml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bus: error: {err}");
            err.exit_code()
        }
    }
}
