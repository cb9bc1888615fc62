//! `cargo xtask tidy`: checks that keep the code base's shape, read from the
//! sources (no dependency, no compiler):
//!
//! - every Rust source file opens with a `//!` summary of what it owns;
//! - no function in library code (`crates/*/src`, outside test modules) is
//!   longer than [`MAX_FUNCTION_LINES`], a ratchet set at the longest one
//!   when the connection engine was rebuilt: lower it when that function
//!   shrinks, never raise it;
//! - no library error is built from a formatted string where a typed
//!   variant fits: `SomeError::Variant(format!(..))` is refused (carry the
//!   cause as a field or a source error instead). The `bus` command's own
//!   usage errors (`crates/bus-cli`) are messages for a person and exempt.
//!
//! The function scan relies on `rustfmt`'s layout (a function's closing
//! brace sits alone at the indentation of its `fn` line), which the `fmt`
//! step guarantees.

use std::path::{Path, PathBuf};

use crate::{Error, Result, workspace};

/// The longest a library function may be, in lines from `fn` to its
/// closing brace.
const MAX_FUNCTION_LINES: usize = 103;

/// Directories whose Rust files are checked, relative to the root.
const SOURCE_DIRS: [&str; 4] = ["crates", "tests", "xtask", "fuzz"];

pub(crate) fn run() -> Result {
    let root = workspace::root();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect(&root.join(dir), &mut files)?;
    }
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::new(format!("could not read {}: {e}", file.display())))?;
        let shown = file.strip_prefix(root).unwrap_or(file);
        if !opens_with_summary(&text) {
            problems.push(format!(
                "{}: does not open with a `//!` summary",
                shown.display()
            ));
        }
        if is_library(shown) {
            for (line, name, length) in long_functions(&text) {
                problems.push(format!(
                    "{}:{line}: fn {name} is {length} lines (at most {MAX_FUNCTION_LINES})",
                    shown.display()
                ));
            }
            if !shown.starts_with("crates/bus-cli") {
                for line in stringly_errors(&text) {
                    problems.push(format!(
                        "{}:{line}: an error variant built from format!(..): give it typed fields",
                        shown.display()
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        eprintln!("tidy: {} files checked", files.len());
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    Err(Error::new(format!("{} tidy problems", problems.len())))
}

/// Every `.rs` file below `dir`, skipping build output.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::new(format!("{}: {e}", dir.display())))?;
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "corpus" && name != "artifacts" {
                collect(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Library code: a crate's `src`, but not a `tests.rs` module of its own.
fn is_library(path: &Path) -> bool {
    let mut parts = path.components().map(|c| c.as_os_str().to_string_lossy());
    parts.next().as_deref() == Some("crates")
        && parts.nth(1).as_deref() == Some("src")
        && path.file_name().is_none_or(|f| f != "tests.rs")
}

/// Whether the first line that is not blank is a `//!` line.
fn opens_with_summary(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with("//!"))
}

/// Functions longer than the ratchet, as (line, name, length), in the part
/// of `text` before its `#[cfg(test)]` module.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    let mut i = 0;
    while i < end {
        if let Some((indent, name)) = function_start(lines[i]) {
            let closing = format!("{indent}}}");
            let body_open = (i..end).find(|&j| {
                let l = lines[j].trim_end();
                l.ends_with('{') || l.ends_with(';')
            });
            if let Some(open) = body_open.filter(|&j| lines[j].trim_end().ends_with('{'))
                && let Some(close) = (open + 1..end).find(|&k| lines[k] == closing)
            {
                let length = close - i + 1;
                if length > MAX_FUNCTION_LINES {
                    found.push((i + 1, name, length));
                }
                i = close;
            }
        }
        i += 1;
    }
    found
}

/// The indentation and name of a line that starts a function.
fn function_start(line: &str) -> Option<(&str, String)> {
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    for prefix in ["const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some((indent, name))
}

/// Lines (1-based) that build an error variant from `format!`, before the
/// file's test module.
fn stringly_errors(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        if let Some(at) = line.find("(format!(")
            && is_error_variant(&line[..at])
        {
            found.push(i + 1);
        }
    }
    found
}

/// Whether `before` ends with a path like `SomeError::Variant`.
fn is_error_variant(before: &str) -> bool {
    let path: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut segments = path.rsplit("::");
    let _variant = segments.next();
    segments.next().is_some_and(|ty| ty.ends_with("Error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_function_is_found_and_a_short_one_is_not() {
        let mut text = String::from(
            "//! x\n\nfn short() {\n    1;\n}\n\npub async fn long(\n    a: u8,\n) {\n",
        );
        for _ in 0..MAX_FUNCTION_LINES {
            text.push_str("    a;\n");
        }
        text.push_str("}\n#[cfg(test)]\nfn ignored() {\n}\n");
        let found = long_functions(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, "long");
        assert_eq!(found[0].0, 7);
    }

    #[test]
    fn stringly_errors_are_found_only_on_error_variants() {
        let text = "//! x\nlet e = Error::Handshake(format!(\"x {y}\"));\nlet s = Some(format!(\"fine\"));\n#[cfg(test)]\nError::X(format!(\"in tests\"))\n";
        assert_eq!(stringly_errors(text), [2]);
    }

    #[test]
    fn a_file_must_open_with_a_summary() {
        assert!(opens_with_summary("\n//! What this owns.\nuse x;"));
        assert!(!opens_with_summary("use x;\n//! late"));
        assert!(!opens_with_summary("// a plain comment\n"));
    }

    #[test]
    fn library_code_is_crates_src_without_test_modules() {
        assert!(is_library(Path::new("crates/bus-core/src/state.rs")));
        assert!(!is_library(Path::new("crates/bus-core/src/state/tests.rs")));
        assert!(!is_library(Path::new("crates/bus-core/tests/header.rs")));
        assert!(!is_library(Path::new("tests/src/lib.rs")));
    }
}
