//! `cargo xtask test`: the doctests, which nextest does not run, then the
//! test suite with cargo-nextest's `ci` profile (see `.config/nextest.toml`).
//! Standalone it runs the same as in `cargo xtask ci`; for a fail-fast local
//! run use `cargo nextest run` directly (default profile).
//!
//! Then bus-client's scheme test once more with its `tcp` feature alone, the
//! one build in which a URL scheme is missing.
//!
//! Without nextest it falls back to `cargo test`, which runs the doctests
//! itself; `--skip stress_` there stands in for the profile's filter that
//! keeps `stress_*` tests out (a substring match, close enough for a
//! fallback).

use crate::{Result, cmd};

pub(crate) fn run() -> Result {
    if cmd::succeeds(&mut cmd::cargo(["nextest", "--version"])) {
        // Doctests first, so the step ends on nextest's summary (how many
        // tests ran and passed), the line a reader of the log looks for.
        cmd::run(&mut cmd::cargo([
            "test",
            "--workspace",
            "--all-features",
            "--doc",
        ]))?;
        cmd::run(&mut cmd::cargo([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--profile",
            "ci",
        ]))?;
        reduced_client()
    } else {
        eprintln!(
            "note: `cargo nextest --version` failed: running `cargo test` instead (doctests included)"
        );
        cmd::run(&mut cmd::cargo([
            "test",
            "--workspace",
            "--all-features",
            "--",
            "--skip",
            "stress_",
        ]))?;
        reduced_client()
    }
}

/// The client's URL schemes in a build with TCP alone: the workspace run
/// turns every transport on, so `SchemeNotAvailable` only happens here.
/// Only bus-client and its test binary are rebuilt for it.
fn reduced_client() -> Result {
    cmd::run(&mut cmd::cargo([
        "test",
        "-p",
        "bus-client",
        "--no-default-features",
        "--features",
        "tcp",
        "--test",
        "schemes",
    ]))
}
