//! `cargo xtask ci`: every check, in CI's order, each one timed, stopping at
//! the first failure.
//!
//! The step list lives here and nowhere else; `.ci/run` only prepares the
//! toolchain and calls this. `XTASK_SKIP` may drop steps on a developer's
//! machine, never in CI (`CI` set), where every step runs.

use std::time::{Duration, Instant};

use crate::{Error, Result, deny, docs, examples, features, fuzz, lint, miri, soak, test, tidy};

/// One check of the CI run; also runnable alone as `cargo xtask <task>`.
#[derive(Debug)]
pub(crate) struct Step {
    /// Shown in the log and accepted by `XTASK_SKIP`.
    name: &'static str,
    /// The `cargo xtask` subcommand that runs this step alone.
    task: &'static str,
    run: fn() -> Result,
}

/// In order: cheap checks first, so a formatting slip fails in a second.
const STEPS: [Step; 12] = [
    Step::new("fmt", "fmt", lint::fmt),
    Step::new("tidy", "tidy", tidy::run),
    Step::new("clippy", "lint", lint::clippy),
    Step::new("examples", "examples", examples::build),
    Step::new("test", "test", test::run),
    Step::new("miri", "miri", miri::run),
    Step::new("fuzz", "fuzz", fuzz::ci),
    Step::new("soak", "soak", soak::ci),
    Step::new("docs", "docs", docs::run),
    Step::new("docsrs", "docs --docsrs", docs::docsrs),
    Step::new("features", "features", features::run),
    Step::new("deny", "deny", deny::run),
];

impl Step {
    const fn new(name: &'static str, task: &'static str, run: fn() -> Result) -> Self {
        Self { name, task, run }
    }

    /// The step run by `cargo xtask <task>`; its own name works too
    /// (`clippy` as well as `lint`).
    pub(crate) fn find(task: &str) -> Option<&'static Step> {
        STEPS
            .iter()
            .find(|step| step.task == task || step.name == task)
    }

    pub(crate) fn run_alone(&self) -> Result {
        self.run_timed().map(|_elapsed| ())
    }

    fn run_timed(&self) -> Result<Duration> {
        eprintln!("==> {}", self.name);
        let start = Instant::now();
        let result = (self.run)();
        let elapsed = start.elapsed();
        match result {
            Ok(()) => {
                eprintln!("<== {} ok ({})", self.name, seconds(elapsed));
                Ok(elapsed)
            }
            Err(error) => {
                eprintln!("<== {} FAILED ({})", self.name, seconds(elapsed));
                Err(Error::new(format!("step `{}` failed: {error}", self.name)))
            }
        }
    }
}

pub(crate) fn run() -> Result {
    let skip = match std::env::var("XTASK_SKIP") {
        Ok(list) if is_ci() => {
            if !list.trim().is_empty() {
                eprintln!("note: XTASK_SKIP={list} ignored: CI is set, every step runs");
            }
            Vec::new()
        }
        Ok(list) => parse_skip(&list)?,
        Err(_) => Vec::new(),
    };

    let start = Instant::now();
    let mut summary = Vec::new();
    for step in &STEPS {
        if skip.contains(&step.name) {
            eprintln!("==> {} skipped (XTASK_SKIP)", step.name);
            summary.push((step.name, "skipped (XTASK_SKIP)".to_owned()));
            continue;
        }
        let elapsed = step.run_timed()?;
        summary.push((step.name, format!("ok {:>8}", seconds(elapsed))));
    }

    eprintln!("==> ci summary");
    for (name, outcome) in &summary {
        eprintln!("    {name:<10} {outcome}");
    }
    eprintln!("<== ci ok ({})", seconds(start.elapsed()));
    Ok(())
}

/// `CI` is set by GitHub, GitLab and most other runners (and by our own CI,
/// `CI=true`); `false` or `0` count as unset.
pub(crate) fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"))
}

/// Step names from a comma list; an unknown name is an error rather than a
/// silently ignored typo.
fn parse_skip(list: &str) -> Result<Vec<&'static str>> {
    let mut names = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let step = Step::find(word).ok_or_else(|| {
            let known: Vec<_> = STEPS.iter().map(|step| step.name).collect();
            Error::new(format!(
                "XTASK_SKIP: unknown step `{word}` (steps: {})",
                known.join(", ")
            ))
        })?;
        names.push(step.name);
    }
    Ok(names)
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_list_accepts_step_and_task_names() {
        assert_eq!(parse_skip("deny, features").unwrap(), ["deny", "features"]);
        assert_eq!(parse_skip("lint").unwrap(), ["clippy"]);
        assert!(parse_skip("").unwrap().is_empty());
    }

    #[test]
    fn skip_list_rejects_typos() {
        let error = parse_skip("deny,fetaures").unwrap_err().to_string();
        assert!(error.contains("`fetaures`"), "{error}");
    }

    #[test]
    fn every_task_finds_its_step() {
        for step in &STEPS {
            assert_eq!(Step::find(step.task).unwrap().name, step.name);
        }
        assert_eq!(Step::find("docsrs").unwrap().task, "docs --docsrs");
        assert!(Step::find("bench").is_none());
    }
}
