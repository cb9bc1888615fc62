//! What the tasks need to know about the workspace, read from its
//! `Cargo.toml` files at run time: the root, the member crates, the features
//! of the `bus` facade.
//!
//! The parsing is deliberately simple (line-based, no `toml` dependency): it
//! understands the plain layout our manifests use, a `[section]` header, then
//! `key = value` lines, arrays possibly spread over several lines. It is not
//! a TOML parser and does not try to be one.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The workspace root: the parent of this crate's directory. `cargo run`
/// (behind the `cargo xtask` alias) sets `CARGO_MANIFEST_DIR` for the
/// process, which is preferred over the path compiled in: a target dir
/// copied from another checkout would otherwise point the tasks there.
pub(crate) fn root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        manifest_dir
            .parent()
            .expect("xtask lives one directory below the workspace root")
            .to_path_buf()
    })
}

/// Member directories from the root manifest's `[workspace] members`,
/// relative to the root. A trailing `/*` glob is expanded to the
/// subdirectories that hold a `Cargo.toml`.
pub(crate) fn members() -> Result<Vec<PathBuf>> {
    let manifest = read(&root().join("Cargo.toml"))?;
    let entries = section(&manifest, "workspace")
        .and_then(|workspace| array(workspace, "members"))
        .ok_or_else(|| Error::new("no `[workspace] members = [...]` in the root Cargo.toml"))?;
    let mut members = Vec::new();
    for entry in entries {
        if let Some(parent) = entry.strip_suffix("/*") {
            let mut found = subdirectories_with_manifest(&root().join(parent))?;
            found.sort();
            members.extend(found.into_iter().map(|name| Path::new(parent).join(name)));
        } else if entry.contains(['*', '?', '[']) {
            return Err(Error::new(format!(
                "workspace member glob `{entry}` is not supported by xtask (only `dir/*`)"
            )));
        } else {
            members.push(PathBuf::from(entry));
        }
    }
    Ok(members)
}

/// The feature names in `crates/bus/Cargo.toml`, in file order, `default`
/// included.
pub(crate) fn facade_features() -> Result<Vec<String>> {
    let path = root().join("crates/bus/Cargo.toml");
    let manifest = read(&path)?;
    let features = section(&manifest, "features")
        .map(keys)
        .ok_or_else(|| Error::new(format!("no `[features]` table in {}", path.display())))?;
    Ok(features)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("could not read {}: {e}", path.display())))
}

fn subdirectories_with_manifest(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::new(format!("could not list {}: {e}", dir.display())))?;
    Ok(entries
        .filter_map(std::result::Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect())
}

/// The body of `[name]`: the lines after its header up to the next header
/// (`[other]` or `[[array-of-tables]]`).
fn section<'a>(manifest: &'a str, name: &str) -> Option<&'a str> {
    let mut offset = 0;
    let mut start = None;
    for line in manifest.split_inclusive('\n') {
        if let Some(header) = header_of(line) {
            if let Some(start) = start {
                return Some(&manifest[start..offset]);
            }
            if header == name {
                start = Some(offset + line.len());
            }
        }
        offset += line.len();
    }
    start.map(|start| &manifest[start..])
}

/// `features` for a `[features]` line, `[bin]` for `[[bin]]`. A line of a
/// multi-line array that is itself a whole array (`["a"]`) would look like a
/// header too; our manifests have none.
fn header_of(line: &str) -> Option<&str> {
    let line = strip_comment(line).trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    Some(inner.trim())
}

/// The keys of a section body, in order: the names before `=` on lines that
/// start a key (not continuation lines of a multi-line array).
fn keys(body: &str) -> Vec<String> {
    body.lines().filter_map(key_of).map(str::to_owned).collect()
}

fn key_of(line: &str) -> Option<&str> {
    let line = line.trim();
    let (key, _value) = line.split_once('=')?;
    let key = key.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    bare.then_some(key)
}

/// The strings of `key = [ "a", "b", ... ]` in a section body; the array may
/// span several lines and carry comments.
fn array(body: &str, key: &str) -> Option<Vec<String>> {
    let mut lines = body.lines();
    let first = lines.by_ref().find(|line| key_of(line) == Some(key))?;
    let (_, value) = first.split_once('=')?;
    let mut text = strip_comment(value).to_owned();
    for line in lines {
        if text.contains(']') {
            break;
        }
        text.push_str(strip_comment(line));
    }
    let inner = text.trim().strip_prefix('[')?.split(']').next()?;
    Some(
        inner
            .split(',')
            .map(|item| item.trim().trim_matches('"'))
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// The line without a trailing `# comment` (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"
[workspace]
resolver = "3"
members = [
    "crates/bus-core", # the core
    "crates/bus",
    "tests",
]
default-members = ["crates/bus"]

[workspace.package]
version = "0.1.0"
"#;

    const FACADE: &str = r#"
[package]
name = "bus"

[features]
default = ["tcp"]
## Everything this release ships.
full = [
    "tcp",
    "config",
]
tcp = ["dep:bus-tcp"] # plain TCP
"tls-ring" = []

[[example]]
name = "echo"
required-features = ["tcp"]
"#;

    #[test]
    fn members_spread_over_lines_with_comments() {
        let workspace = section(ROOT, "workspace").unwrap();
        assert_eq!(
            array(workspace, "members").unwrap(),
            ["crates/bus-core", "crates/bus", "tests"]
        );
        assert_eq!(array(workspace, "default-members").unwrap(), ["crates/bus"]);
    }

    #[test]
    fn section_stops_at_the_next_header() {
        let workspace = section(ROOT, "workspace").unwrap();
        assert!(!workspace.contains("version"));
        assert!(
            section(ROOT, "workspace.package")
                .unwrap()
                .contains("version")
        );
        assert!(section(ROOT, "features").is_none());
    }

    #[test]
    fn feature_names_skip_doc_comments_and_continuation_lines() {
        let features = keys(section(FACADE, "features").unwrap());
        assert_eq!(features, ["default", "full", "tcp", "tls-ring"]);
    }

    #[test]
    fn array_of_tables_ends_a_section() {
        let features = section(FACADE, "features").unwrap();
        assert!(!features.contains("echo"), "{features}");
    }

    #[test]
    fn comment_hash_inside_a_string_is_kept() {
        assert_eq!(strip_comment(r#"a = "x#y" # note"#), r#"a = "x#y" "#);
    }

    #[test]
    fn the_real_manifests_parse() {
        let members = members().unwrap();
        assert!(members.contains(&PathBuf::from("xtask")), "{members:?}");
        for member in &members {
            assert!(
                root().join(member).join("Cargo.toml").is_file(),
                "{member:?}"
            );
        }
        let features = facade_features().unwrap();
        assert!(features.iter().any(|f| f == "default"), "{features:?}");
    }
}
