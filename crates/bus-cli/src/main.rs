//! `bus`: see `bus --help` and the `bus_cli` crate docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    bus_cli::run()
}
