//! `cargo xtask docs`: rustdoc over the workspace with warnings as errors,
//! so broken intra-doc links and malformed docs fail CI.
//!
//! `cargo xtask docs --docsrs` builds the docs as docs.rs does: on the
//! nightly toolchain with `--cfg docsrs`, which turns on `doc(cfg)` so each
//! feature-gated item says which feature it needs. Without a nightly
//! toolchain it prints a note and succeeds: the stable `docs` step still
//! checks everything but the feature badges.

use crate::{Result, cmd};

/// The rustdoc flags of the docs.rs build (`[package.metadata.docs.rs]` in
/// every crate), plus warnings as errors.
const DOCSRS_FLAGS: &str = "--cfg docsrs -D warnings";

pub(crate) fn run() -> Result {
    cmd::run(
        cmd::cargo(["doc", "--workspace", "--all-features", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

pub(crate) fn docsrs() -> Result {
    // `cargo +nightly` is rustup's proxy; a plain `$CARGO` (the toolchain
    // running us) would ignore the `+nightly`.
    let mut probe = std::process::Command::new("cargo");
    probe.args(["+nightly", "--version"]);
    if !cmd::succeeds(&mut probe) {
        eprintln!(
            "note: no nightly toolchain (`cargo +nightly --version` failed): skipping the \
             docs.rs build; `rustup toolchain install nightly` enables it"
        );
        return Ok(());
    }
    let mut doc = std::process::Command::new("cargo");
    doc.args([
        "+nightly",
        "doc",
        "--workspace",
        "--all-features",
        "--no-deps",
    ])
    .current_dir(crate::workspace::root())
    .env("RUSTDOCFLAGS", DOCSRS_FLAGS);
    cmd::run(&mut doc)
}
