//! `cargo xtask features`: the `bus` facade builds with each of its features
//! alone and with none, so a feature that forgets to enable a sibling it
//! needs is caught (clippy and the tests only see `--all-features`).
//!
//! The feature list is read from `crates/bus/Cargo.toml` on every run, so a
//! new feature is checked without touching this file. Each feature is
//! checked alone, not every combination: the number of runs stays linear.

use crate::{Result, cmd, workspace};

pub(crate) fn run() -> Result {
    let features = workspace::facade_features()?;
    eprintln!("features of bus: {}", features.join(", "));
    cmd::run(&mut cmd::cargo([
        "check",
        "-p",
        "bus",
        "--no-default-features",
    ]))?;
    for feature in &features {
        cmd::run(&mut cmd::cargo([
            "check",
            "-p",
            "bus",
            "--no-default-features",
            "--features",
            feature,
        ]))?;
    }
    Ok(())
}
