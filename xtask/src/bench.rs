//! `cargo xtask bench [ARGS...]`: the load benchmark, an example of the
//! `bus-tests` crate, built in release mode. Arguments are passed through
//! untouched; this module only checks that the example exists, so a missing
//! one fails with a sentence rather than cargo's target list.

use crate::{Error, Result, cmd, workspace};

/// The files cargo finds the example in by convention; `example_exists`
/// also accepts an explicit `[[example]] name = "bench"` in the manifest.
const EXAMPLE_PATHS: [&str; 2] = ["tests/examples/bench.rs", "tests/examples/bench/main.rs"];

pub(crate) fn run(args: &[String]) -> Result {
    if !example_exists() {
        return Err(Error::new(format!(
            "bench: bus-tests has no `bench` example yet (looked for {} and for an \
             `[[example]] name = \"bench\"` in tests/Cargo.toml)",
            EXAMPLE_PATHS.join(" and ")
        )));
    }
    // `cargo xtask bench -- --x` and `cargo xtask bench --x` mean the same.
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let mut command = cmd::cargo([
        "run",
        "--release",
        "-p",
        "bus-tests",
        "--example",
        "bench",
        "--",
    ]);
    command.args(args);
    cmd::run(&mut command)
}

fn example_exists() -> bool {
    let root = workspace::root();
    EXAMPLE_PATHS.iter().any(|path| root.join(path).is_file())
        || std::fs::read_to_string(root.join("tests/Cargo.toml")).is_ok_and(|manifest| {
            manifest
                .lines()
                .any(|line| line.replace(' ', "") == "name=\"bench\"")
        })
}
