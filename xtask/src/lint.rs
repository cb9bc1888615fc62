//! `cargo xtask fmt` and `cargo xtask lint`: formatting and clippy, both in
//! check mode; neither rewrites a file.

use crate::{Result, cmd};

pub(crate) fn fmt() -> Result {
    cmd::run(&mut cmd::cargo(["fmt", "--all", "--", "--check"]))
}

/// Every target and every feature, warnings as errors: the workspace's
/// pedantic lints are only worth something if CI holds them.
pub(crate) fn clippy() -> Result {
    cmd::run(&mut cmd::cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}
