//! The one error type of `bus-config`.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
///
/// Every variant's message names what is wrong: the TOML key for
/// [`Parse`](Error::Parse), the dotted field path for
/// [`Invalid`](Error::Invalid), the file for [`Io`](Error::Io).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not TOML, or a value has the wrong type, an unknown key, an
    /// unknown enum variant or an unparsable unit. The message comes from the
    /// TOML parser and names the dotted key (such as `bus.read_buffer`) or
    /// the line.
    #[error("{message}")]
    Parse {
        /// What went wrong, naming the key or the line and column.
        message: String,
    },
    /// A value parsed but is outside what the bus can run with.
    #[error("{field} = {value} is out of range: allowed {allowed}")]
    Invalid {
        /// Dotted path of the offending field, as spelled in TOML
        /// (`bus.max_batch_frames`, `replicas.peers[1].id`).
        field: String,
        /// The offending value, rendered in the units it is written in.
        value: String,
        /// What the field accepts.
        allowed: String,
    },
    /// A configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// A [`Parse`](Error::Parse) error from a TOML error, without the
    /// trailing newline the TOML crate's message ends with.
    pub(crate) fn parse(error: &toml::de::Error) -> Self {
        Self::Parse {
            message: error.to_string().trim_end().to_owned(),
        }
    }

    /// An [`Invalid`](Error::Invalid) error.
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}
