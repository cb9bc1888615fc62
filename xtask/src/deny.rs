//! `cargo xtask deny`: licences, bans and sources with cargo-deny for every
//! workspace member, then the security advisories once for the workspace.
//! The policy itself is `deny.toml` at the root.
//!
//! cargo-deny is installed on first use when missing (it is not on a fresh
//! machine), pinned to the 0.20 line that `deny.toml` is written for.
//!
//! Advisories need the advisory database from GitHub, which some machines
//! (ours included) cannot reach. The check is split in two so that a
//! network failure and a real advisory cannot be mistaken for each other:
//! `cargo deny fetch db` is the only step that touches the network, and if
//! it fails the advisories are skipped with a note; otherwise
//! `cargo deny --offline check advisories` runs against the freshly fetched
//! database without touching the network, and any failure of it is a
//! finding that fails the step. Matching error text instead would break the
//! day cargo-deny rewords a message. A broken `deny.toml` also makes the
//! fetch fail, but it never gets that far: the per-member checks before it
//! load the same file and fail first.

use crate::{Error, Result, cmd, workspace};

/// The cargo-deny line `deny.toml` is written for; a newer major line may
/// change the schema or need a newer compiler.
const CARGO_DENY_VERSION: &str = "~0.20";

pub(crate) fn run() -> Result {
    ensure_installed()?;
    for member in workspace::members()? {
        // The inclusion graphs of the `multiple-versions` warnings would
        // print the same trees once per member, hundreds of lines each time.
        cmd::run(
            cmd::cargo(["deny", "--manifest-path"])
                .arg(member.join("Cargo.toml"))
                .args(["check", "--hide-inclusion-graph"])
                .args(["licenses", "bans", "sources"]),
        )
        .map_err(|error| {
            Error::new(format!(
                "{error}; rerun it without --hide-inclusion-graph to see which \
                 crates pull the offender in"
            ))
        })?;
    }
    advisories()
}

fn ensure_installed() -> Result {
    if !cmd::succeeds(&mut cmd::cargo(["deny", "--version"])) {
        eprintln!(
            "cargo-deny is missing (`cargo deny --version` failed): installing it \
             (about 3 minutes on 2 cores)"
        );
        cmd::run(&mut cmd::cargo([
            "install",
            "cargo-deny",
            "--locked",
            "--version",
            CARGO_DENY_VERSION,
        ]))?;
    }
    cmd::run(&mut cmd::cargo(["deny", "--version"]))
}

fn advisories() -> Result {
    let fetch = cmd::output(&mut cmd::cargo(["deny", "fetch", "db"]))?;
    if !fetch.status.success() {
        let stderr = String::from_utf8_lossy(&fetch.stderr);
        for line in last_lines(&stderr, 6) {
            eprintln!("    {line}");
        }
        eprintln!("advisories: skipped, advisory database unreachable");
        return Ok(());
    }
    cmd::run(&mut cmd::cargo([
        "deny",
        "--offline",
        "check",
        "advisories",
    ]))
}

fn last_lines(text: &str, count: usize) -> impl Iterator<Item = &str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let skip = lines.len().saturating_sub(count);
    lines.into_iter().skip(skip)
}
