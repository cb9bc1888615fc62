//! `cargo xtask examples`: every example of the workspace builds with all
//! features (each declares the features it needs with `required-features`,
//! so without them it would be skipped silently). `crates/bus/tests/
//! examples.rs`, in the test step, runs the binaries this leaves in
//! `target/debug/examples`.

use crate::{Result, cmd};

pub(crate) fn build() -> Result {
    cmd::run(&mut cmd::cargo([
        "build",
        "--workspace",
        "--examples",
        "--all-features",
    ]))
}
