//! `cargo xtask docs`: rustdoc over the workspace with warnings as errors,
//! so broken intra-doc links and malformed docs fail CI.

use crate::{Result, cmd};

pub(crate) fn run() -> Result {
    cmd::run(
        cmd::cargo(["doc", "--workspace", "--all-features", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}
