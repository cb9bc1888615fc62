//! Loading: the embedded defaults, the user's file merged over them, then
//! validation.
//!
//! Defaults live only in `defaults.toml`. Both documents are parsed to plain
//! TOML tables, the user's table is merged over the defaults key by key, and
//! only the merged table is deserialized into the typed [`Config`]. That is
//! why a user file needs only the keys it changes, and why the schema structs
//! can require every field.

use std::path::Path;

use toml::{Table, Value};

use crate::{Config, Error};

/// The embedded defaults: every key of the schema, commented.
const DEFAULTS_TOML: &str = include_str!("../defaults.toml");

impl Config {
    /// The embedded defaults file, with its comments. Print it to start a
    /// config file from.
    pub fn default_toml() -> &'static str {
        DEFAULTS_TOML
    }

    /// The configuration described by the embedded defaults alone.
    ///
    /// # Panics
    ///
    /// Never for a released crate: the tests check that the embedded defaults
    /// parse and validate.
    pub fn embedded_defaults() -> Self {
        Self::from_table(defaults_table())
            .and_then(|config| config.validate().map(|()| config))
            .unwrap_or_else(|error| panic!("embedded defaults.toml is broken: {error}"))
    }

    /// Parses `text` as a user config file: merges it over the embedded
    /// defaults, deserializes and [validates](Self::validate) the result.
    ///
    /// An empty string gives the defaults. Unknown keys, wrong types and
    /// unknown units are [`Error::Parse`] naming the key; values out of range
    /// are [`Error::Invalid`] naming the field.
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        let user: Table = text.parse().map_err(|e| Error::parse(&e))?;
        let mut merged = defaults_table();
        merge(&mut merged, user);
        let config = Self::from_table(merged)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the file at `path` and parses it as in
    /// [`from_toml_str`](Self::from_toml_str).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    fn from_table(table: Table) -> Result<Self, Error> {
        table.try_into().map_err(|e| Error::parse(&e))
    }
}

fn defaults_table() -> Table {
    DEFAULTS_TOML
        .parse()
        .unwrap_or_else(|error| panic!("embedded defaults.toml is not TOML: {error}"))
}

/// Merges `over` into `base`: tables merge key by key, recursively; any other
/// value (arrays included) replaces the base value whole.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(over_table)) => {
                merge(base_table, over_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use toml::Table;

    use super::merge;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn merge_keeps_unmentioned_keys_and_replaces_mentioned_ones() {
        let mut base = table("[a]\nx = 1\ny = 2\n[b]\nz = 3\n");
        merge(&mut base, table("[a]\ny = 20\n"));
        assert_eq!(base, table("[a]\nx = 1\ny = 20\n[b]\nz = 3\n"));
    }

    #[test]
    fn merge_replaces_arrays_whole() {
        let mut base = table("a = [1, 2, 3]\n");
        merge(&mut base, table("a = [4]\n"));
        assert_eq!(base, table("a = [4]\n"));
    }

    #[test]
    fn merge_adds_new_keys_and_lets_a_scalar_replace_a_table() {
        let mut base = table("[a]\nx = 1\n");
        merge(&mut base, table("a = 5\nb = 6\n"));
        assert_eq!(base, table("a = 5\nb = 6\n"));
    }
}
