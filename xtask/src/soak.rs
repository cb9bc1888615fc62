//! `cargo xtask soak [--duration SECONDS] [--release]`: the soak of
//! `tests/examples/soak.rs` against the `bus` binary: one `bus serve` on
//! every transport under a bounded mixed load, then checks that no reply
//! was lost and that the node's descriptors, tasks and memory came back
//! (the example's docs list the load and the bounds).
//!
//! It builds `bus` (bus-cli) and the example in one cargo call, in one profile (debug
//! unless `--release`) and runs the example with `--bus PATH`. The `soak`
//! step of `cargo xtask ci` runs it for [`CI_SECONDS`].

use crate::{Error, Result, cmd, workspace};

/// Seconds of load in `cargo xtask ci`.
const CI_SECONDS: u64 = 60;

#[derive(Debug, PartialEq, Eq)]
struct Plan {
    seconds: u64,
    release: bool,
}

pub(crate) fn run(args: &[String]) -> Result {
    soak(&parse(args)?)
}

/// The `soak` step of `cargo xtask ci`.
pub(crate) fn ci() -> Result {
    soak(&Plan {
        seconds: CI_SECONDS,
        release: false,
    })
}

fn parse(args: &[String]) -> Result<Plan> {
    let mut plan = Plan {
        seconds: CI_SECONDS,
        release: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => {
                plan.seconds = args
                    .next()
                    .and_then(|value| value.trim_end_matches('s').parse().ok())
                    .filter(|n| *n >= 10)
                    .ok_or_else(|| Error::new("soak: --duration takes seconds, at least 10"))?;
            }
            "--release" => plan.release = true,
            other => {
                return Err(Error::new(format!(
                    "soak: unknown argument `{other}` (--duration SECONDS, --release)"
                )));
            }
        }
    }
    Ok(plan)
}

fn soak(plan: &Plan) -> Result {
    let profile: &[&str] = if plan.release { &["--release"] } else { &[] };
    // One build of both, so their features are unified once and neither
    // rebuilds the other's dependencies.
    cmd::run(
        cmd::cargo([
            "build",
            "-p",
            "bus-cli",
            "--bin",
            "bus",
            "-p",
            "bus-tests",
            "--example",
            "soak",
        ])
        .args(profile),
    )?;
    let dir = workspace::root()
        .join("target")
        .join(if plan.release { "release" } else { "debug" });
    let mut command = std::process::Command::new(dir.join("examples").join("soak"));
    command
        .arg("--bus")
        .arg(dir.join("bus"))
        .arg("--duration")
        .arg(plan.seconds.to_string())
        .current_dir(workspace::root());
    cmd::run(&mut command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_pick_duration_and_profile() {
        let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse(&args(&["--duration", "1800", "--release"])).unwrap(),
            Plan {
                seconds: 1800,
                release: true
            }
        );
        assert_eq!(parse(&args(&["--duration", "90s"])).unwrap().seconds, 90);
        assert_eq!(parse(&[]).unwrap().seconds, CI_SECONDS);
        assert!(parse(&args(&["--duration", "5"])).is_err());
        assert!(parse(&args(&["--fast"])).is_err());
    }
}
