//! `cargo xtask miri`: bus-core's `unsafe` code (the in-place `Header` view,
//! the aligned frame buffers and their writes into uninitialised memory)
//! run under a checker, on the nightly toolchain.
//!
//! - With Miri (`cargo +nightly miri --version` works): `cargo +nightly miri
//!   test` over bus-core's unit tests and its pure integration tests
//!   (`header`, `buffers`); Miri cannot run the I/O runtime and would take
//!   far too long over the property tests.
//! - Without Miri (its component cannot be downloaded on our machines):
//!   `AddressSanitizer` (`-Zsanitizer=address`) over bus-core's unit and
//!   integration tests, property tests included. Doctests do not link
//!   under `ASan` and are left out. It needs an explicit `--target` so build
//!   scripts and proc macros are not instrumented.
//! - Without a nightly toolchain: skipped with a note. `cargo xtask ci`
//!   runs this step either way, so a machine with nightly checks it.
//!
//! Either checker builds into its own target directory (`target/miri`,
//! `target/asan`): different flags there do not invalidate the normal
//! build.

use std::process::Command;

use crate::{Error, Result, cmd, workspace};

/// The only host the sanitizer runtime is known to work on here.
const ASAN_TARGET: &str = "x86_64-unknown-linux-gnu";

pub(crate) fn run() -> Result {
    if !cmd::succeeds(&mut nightly(["--version"])) {
        eprintln!(
            "note: miri step skipped: no nightly toolchain (`rustup run nightly cargo \
             --version` failed); `rustup toolchain install nightly` enables it"
        );
        return Ok(());
    }
    if cmd::succeeds(&mut nightly(["miri", "--version"])) {
        return miri();
    }
    eprintln!(
        "note: Miri is not installed for nightly (`cargo +nightly miri --version` failed): \
         checking bus-core under AddressSanitizer instead"
    );
    asan()
}

fn miri() -> Result {
    let target_dir = workspace::root().join("target/miri");
    cmd::run(
        nightly(["miri", "test", "-p", "bus-core", "--lib"])
            .args(["--test", "header", "--test", "buffers"])
            .arg("--target-dir")
            .arg(target_dir),
    )
}

fn asan() -> Result {
    let host = host()?;
    if host != ASAN_TARGET {
        eprintln!(
            "note: miri step skipped: AddressSanitizer is set up for {ASAN_TARGET}, \
             this host is {host}"
        );
        return Ok(());
    }
    let target_dir = workspace::root().join("target/asan");
    cmd::run(
        nightly([
            "test",
            "--target",
            ASAN_TARGET,
            "-p",
            "bus-core",
            "--lib",
            "--tests",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("RUSTDOCFLAGS", "-Zsanitizer=address"),
    )
}

/// The nightly host triple, from `rustc -vV`.
fn host() -> Result<String> {
    let mut rustc = Command::new("rustup");
    rustc.args(["run", "nightly", "rustc", "-vV"]);
    let output = cmd::output(&mut rustc)?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| Error::new("`rustc +nightly -vV` printed no host line"))
}

/// `cargo` of the nightly toolchain, through rustup, from the workspace
/// root. The variables our own (stable) cargo set for this process are
/// removed so they cannot pick the toolchain or its flags. (The fuzz step
/// uses it too.)
pub(crate) fn nightly<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo"])
        .args(args)
        .current_dir(workspace::root());
    for variable in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        command.env_remove(variable);
    }
    command
}
