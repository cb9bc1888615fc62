//! Developer tasks for the `bus` workspace, run as `cargo xtask <task>`.
//!
//! Same shape as rust-analyzer's xtask: an alias in `.cargo/config.toml`, a
//! `publish = false` binary with no dependencies beyond `std`, one module per
//! task. CI calls only `cargo xtask ci` (through `.ci/run`), so a developer
//! runs exactly what CI runs.
//!
//! Every task shells out to `cargo` with `std::process::Command` from the
//! workspace root; nothing here builds or tests code by itself.

mod bench;
mod ci;
mod cmd;
mod deny;
mod docs;
mod examples;
mod features;
mod fuzz;
mod lint;
mod miri;
mod soak;
mod test;
mod tidy;
mod workspace;

use std::fmt;
use std::process::ExitCode;

const HELP: &str = "\
Developer tasks for `bus`.

Usage: cargo xtask <TASK> [ARGS...]

Tasks:
  ci          Run every check CI runs, in order, stopping at the first failure:
              fmt, tidy, clippy, examples, test, miri, fuzz, soak, docs, docsrs, features, deny
  fmt         cargo fmt --all -- --check
  tidy        the shape of the sources: every file opens with a `//!` summary, no
              library function over the length ratchet, no error variant built
              from format!(..) in the library crates
  lint        cargo clippy --workspace --all-targets --all-features -- -D warnings
  examples    cargo build --workspace --examples --all-features (the test step runs some)
  test        the doctests, then cargo nextest run (ci profile; cargo test if nextest
              is missing), then bus-client's scheme test with its `tcp` feature alone
  miri        bus-core's unsafe code under a checker on nightly: cargo miri test when
              Miri is installed, else AddressSanitizer (target/asan); skipped with a
              note without a nightly toolchain
  fuzz [--seconds N] [--runs N] [TARGET...]
              the cargo-fuzz targets of fuzz/ on nightly (decoder, header, ws_message,
              config, admin_request, replica_handshake), each for N seconds (default 60)
              or N executions, after writing their seed corpora; `ci` runs each for 5 s
              (skipped with a note without nightly, or without cargo-fuzz outside CI)
  soak [--duration SECONDS] [--release]
              `bus serve` on every transport under a bounded mixed load (well-behaved
              pipelining clients, churn, resets, slow readers, silent sockets, ping
              floods, hostile frames) for SECONDS (default 60, as in `ci`), then checks
              replies, descriptors, tasks, RSS and p99 (tests/examples/soak.rs)
  docs        cargo doc --workspace --all-features --no-deps, with RUSTDOCFLAGS=-D warnings
  docs --docsrs
              the same on nightly, as docs.rs builds it (RUSTDOCFLAGS=--cfg docsrs -D warnings:
              feature badges via doc(cfg)); skipped with a note when nightly is missing
  features    cargo check -p bus for each feature of crates/bus alone, and for none
  deny        cargo deny: licenses, bans, sources per member crate; advisories once
              (skipped with a note when the advisory database cannot be fetched)
  bench [ARGS...]
              cargo run --release -p bus-tests --example bench -- ARGS...
  help        Print this help

Environment:
  XTASK_SKIP  Comma-separated steps that `ci` skips locally, e.g. XTASK_SKIP=deny,features.
              Ignored when CI is set: in CI every step runs.
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();

    let result = match task.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("bench") => bench::run(&rest),
        Some("fuzz") => fuzz::run(&rest),
        Some("soak") => soak::run(&rest),
        Some("docs") if rest == ["--docsrs"] => ci::Step::find("docsrs").map_or_else(
            || Err(Error::new("no `docsrs` step in ci.rs")),
            ci::Step::run_alone,
        ),
        Some(name) if !rest.is_empty() => Err(Error::new(format!(
            "`cargo xtask {name}` takes no arguments, got `{}`",
            rest.join(" ")
        ))),
        Some("ci") => ci::run(),
        Some(name) => ci::Step::find(name).map_or_else(
            || {
                eprint!("{HELP}");
                Err(Error::new(format!("unknown task `{name}`")))
            },
            ci::Step::run_alone,
        ),
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why a task failed, already phrased for the person reading the log.
#[derive(Debug)]
pub(crate) struct Error(String);

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, Error>;
