//! `cargo xtask fuzz [--seconds N] [--runs N] [TARGET...]`: the cargo-fuzz
//! targets of `fuzz/` (a crate outside the workspace), on nightly.
//!
//! 1. The seed corpora: `cargo test -p bus-tests --test fuzz_seeds` writes
//!    them into `fuzz/corpus/<target>/` (git-ignored; no binary seeds are
//!    committed).
//! 2. `cargo +nightly fuzz build` into `target/fuzz` (inside the one target
//!    directory; its sanitizer flags do not invalidate the normal build).
//! 3. Each target in turn for `--seconds` (default 60) or `--runs`
//!    executions, whichever ends first; libFuzzer's log goes to
//!    `target/fuzz/logs/<target>.log` and a summary line per target
//!    (executions, time) is printed. A crash fails the task and names the
//!    reproducer in `fuzz/artifacts/<target>/`.
//!
//! The `fuzz` step of `cargo xtask ci` runs every target for
//! [`CI_SECONDS`]; without a nightly toolchain, or without cargo-fuzz
//! outside CI, it is skipped with a note (`.ci/run` installs cargo-fuzz).

use std::path::PathBuf;

use crate::{Error, Result, cmd, miri::nightly, workspace};

/// Every target in `fuzz/Cargo.toml`, in the order they run.
pub(crate) const TARGETS: [&str; 6] = [
    "decoder",
    "header",
    "ws_message",
    "config",
    "admin_request",
    "replica_handshake",
];

/// Seconds per target in `cargo xtask ci`.
const CI_SECONDS: u64 = 5;
/// Seconds per target of `cargo xtask fuzz` without `--seconds`.
const DEFAULT_SECONDS: u64 = 60;
/// libFuzzer's cap on one input (bytes): room for a few frames larger than
/// the decoder target's smallest read buffer.
const MAX_INPUT_BYTES: u32 = 16 << 10;

/// What one run fuzzes, and for how long.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    seconds: u64,
    runs: Option<u64>,
    targets: Vec<String>,
}

pub(crate) fn run(args: &[String]) -> Result {
    let plan = parse(args)?;
    if !cmd::succeeds(&mut nightly(["--version"])) {
        return Err(Error::new(
            "fuzz: no nightly toolchain (`rustup toolchain install nightly`)",
        ));
    }
    if !cmd::succeeds(&mut nightly(["fuzz", "--version"])) {
        return Err(Error::new(
            "fuzz: cargo-fuzz is missing (`cargo install cargo-fuzz --locked`)",
        ));
    }
    fuzz(&plan)
}

/// The `fuzz` step of `cargo xtask ci`.
pub(crate) fn ci() -> Result {
    if !cmd::succeeds(&mut nightly(["--version"])) {
        eprintln!("note: fuzz step skipped: no nightly toolchain (cargo-fuzz needs one)");
        return Ok(());
    }
    if !cmd::succeeds(&mut nightly(["fuzz", "--version"])) {
        if crate::ci::is_ci() {
            return Err(Error::new(
                "fuzz: cargo-fuzz is missing in CI (.ci/run installs it)",
            ));
        }
        eprintln!(
            "note: fuzz step skipped: cargo-fuzz is not installed \
             (`cargo install cargo-fuzz --locked`)"
        );
        return Ok(());
    }
    fuzz(&Plan {
        seconds: CI_SECONDS,
        runs: None,
        targets: TARGETS.iter().map(|t| (*t).to_owned()).collect(),
    })
}

fn parse(args: &[String]) -> Result<Plan> {
    let mut plan = Plan {
        seconds: DEFAULT_SECONDS,
        runs: None,
        targets: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> Result<u64> {
            args.next()
                .and_then(|value| value.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::new(format!("fuzz: {flag} takes a positive number")))
        };
        match arg.as_str() {
            "--seconds" => plan.seconds = number("--seconds")?,
            "--runs" => plan.runs = Some(number("--runs")?),
            name if TARGETS.contains(&name) => plan.targets.push(name.to_owned()),
            other => {
                return Err(Error::new(format!(
                    "fuzz: unknown argument `{other}` (targets: {})",
                    TARGETS.join(", ")
                )));
            }
        }
    }
    if plan.targets.is_empty() {
        plan.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(plan)
}

fn fuzz(plan: &Plan) -> Result {
    let root = workspace::root();
    let target_dir = root.join("target/fuzz");
    let logs = target_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| Error::new(format!("fuzz: cannot create {}: {e}", logs.display())))?;
    cmd::run(&mut cmd::cargo([
        "test",
        "-p",
        "bus-tests",
        "--test",
        "fuzz_seeds",
    ]))?;
    cmd::run(nightly(["fuzz", "build", "--target-dir"]).arg(&target_dir))?;
    let mut summary = Vec::new();
    for target in &plan.targets {
        let log = logs.join(format!("{target}.log"));
        let outcome = run_target(plan, target, &target_dir, &log);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let done = done_line(&text).unwrap_or_else(|| "no summary line".to_owned());
        match outcome {
            Ok(()) => summary.push(format!("    {target:<18} ok: {done}")),
            Err(error) => {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                for line in tail.iter().rev() {
                    eprintln!("    {line}");
                }
                return Err(Error::new(format!(
                    "fuzz target `{target}` failed ({error}); log {}, reproducer in \
                     fuzz/artifacts/{target}/",
                    log.display()
                )));
            }
        }
    }
    eprintln!("==> fuzz summary");
    for line in &summary {
        eprintln!("{line}");
    }
    Ok(())
}

fn run_target(plan: &Plan, target: &str, target_dir: &PathBuf, log: &PathBuf) -> Result {
    let file = std::fs::File::create(log)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", log.display())))?;
    let mut command = nightly(["fuzz", "run", "--target-dir"]);
    command
        .arg(target_dir)
        .arg(target)
        .arg("--")
        .arg(format!("-max_total_time={}", plan.seconds))
        .arg(format!("-max_len={MAX_INPUT_BYTES}"))
        .arg("-print_final_stats=1");
    if let Some(runs) = plan.runs {
        command.arg(format!("-runs={runs}"));
    }
    command.stderr(file);
    cmd::run(&mut command)
}

/// libFuzzer's last `Done N runs in S second(s)` line.
fn done_line(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|line| line.starts_with("Done "))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn arguments_pick_time_runs_and_targets() {
        let plan = parse(&args(&["--seconds", "3", "header", "--runs", "10"])).unwrap();
        assert_eq!(
            plan,
            Plan {
                seconds: 3,
                runs: Some(10),
                targets: vec!["header".to_owned()]
            }
        );
        assert_eq!(parse(&[]).unwrap().targets.len(), TARGETS.len());
        assert!(parse(&args(&["--seconds", "0"])).is_err());
        assert!(parse(&args(&["nope"])).is_err());
    }

    #[test]
    fn every_target_is_in_the_fuzz_manifest() {
        let manifest = std::fs::read_to_string(workspace::root().join("fuzz/Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
        }
        let done = "#9\tDONE cov: 1\nDone 123 runs in 5 second(s)\n";
        assert_eq!(
            done_line(done).as_deref(),
            Some("Done 123 runs in 5 second(s)")
        );
    }
}
