//! `cargo xtask test`: the test suite with cargo-nextest's `ci` profile
//! (see `.config/nextest.toml`), then the doctests, which nextest does not
//! run.
//!
//! Without nextest it falls back to `cargo test`, which runs the doctests
//! itself; `--skip stress_` there stands in for the profile's filter that
//! keeps `stress_*` tests out (a substring match, close enough for a
//! fallback).

use crate::{Result, cmd};

pub(crate) fn run() -> Result {
    if cmd::succeeds(&mut cmd::cargo(["nextest", "--version"])) {
        cmd::run(&mut cmd::cargo([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--profile",
            "ci",
        ]))?;
        cmd::run(&mut cmd::cargo([
            "test",
            "--workspace",
            "--all-features",
            "--doc",
        ]))
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
        ]))
    }
}
