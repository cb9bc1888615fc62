//! Running commands: print the command line, run it from the workspace root
//! with inherited output, turn a non-zero exit into an [`Error`] that quotes
//! the command.
//!
//! Output is never captured except for probes (`succeeds`, `output`), so a
//! long build streams to the log as it happens.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use crate::{Error, Result, workspace};

/// `cargo` from the workspace root. Under `cargo xtask`, `$CARGO` is the
/// cargo that runs us, so nested calls use the same toolchain.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace::root());
    command
}

/// Runs `command` with inherited stdio; fails unless it exits with status 0.
pub(crate) fn run(command: &mut Command) -> Result {
    let line = display(command);
    eprintln!("$ {line}");
    let status = command
        .status()
        .map_err(|e| Error::new(format!("could not start `{line}`: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("`{line}` failed ({status})")))
    }
}

/// Whether `command` exits with status 0; its output is discarded. For
/// probes such as `cargo nextest --version`.
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `command` with its output captured (the caller decides what to show).
pub(crate) fn output(command: &mut Command) -> Result<Output> {
    let line = display(command);
    eprintln!("$ {line}");
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("could not start `{line}`: {e}")))
}

/// The command as a shell line, environment first: `RUSTDOCFLAGS="-D
/// warnings" cargo doc ...`. The program is shown as `cargo` even when it
/// is the full path from `$CARGO`, so the line can be pasted anywhere.
pub(crate) fn display(command: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    let program = command.get_program();
    let is_cargo = std::env::var_os("CARGO").is_some_and(|cargo| cargo == program);
    words.push(if is_cargo {
        "cargo".to_owned()
    } else {
        quote(&program.to_string_lossy())
    });
    words.extend(command.get_args().map(|arg| quote(&arg.to_string_lossy())));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("\"{}\"", word.replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_env_and_spaced_args() {
        let mut command = Command::new("cargo");
        command
            .args(["doc", "--no-deps", "a b"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            display(&command),
            "RUSTDOCFLAGS=\"-D warnings\" cargo doc --no-deps \"a b\""
        );
    }
}
