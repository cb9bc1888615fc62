//! Pre-shared key files: the file's bytes are the key.
//!
//! A key file must be a regular file of at least [`MIN_PSK_BYTES`] bytes
//! (and at most [`MAX_PSK_BYTES`]) that neither group nor others may access
//! (`chmod 600`), like an SSH private key. Every byte counts, a trailing
//! newline included, so every node must hold the same file. Only the
//! derived [`Key`] is kept; the bytes read are dropped at once.
//!
//! This is the only module of the crate that touches the file system.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use crate::{
    auth::Key,
    limits::{MAX_PSK_BYTES, MIN_PSK_BYTES},
};

/// Why a pre-shared key file was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PskError {
    /// The file could not be opened or read.
    #[error("cannot read pre-shared key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is not a regular file (a directory, a device, a pipe).
    #[error("pre-shared key file {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Group or others may access the file.
    #[error(
        "pre-shared key file {} is accessible by group or others (mode {mode:03o}): \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is empty.
    #[error(
        "pre-shared key file {} is empty: write at least {MIN_PSK_BYTES} random bytes into it",
        path.display()
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is shorter than [`MIN_PSK_BYTES`].
    #[error(
        "pre-shared key file {} holds {len} bytes: at least {MIN_PSK_BYTES} are required",
        path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The file is longer than [`MAX_PSK_BYTES`].
    #[error(
        "pre-shared key file {} holds more than {MAX_PSK_BYTES} bytes: is it the right file?",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the pre-shared key at `path` and derives its [`Key`].
///
/// The checks run on the opened file (not the path again), in this order:
/// a regular file, its permissions, then its length.
pub fn load_key(path: &Path) -> Result<Key, PskError> {
    let io = |source| PskError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(PskError::NotAFile {
            path: path.to_owned(),
        });
    }
    check_mode(path, &metadata)?;
    // One byte past the limit tells "too large" from "exactly the limit",
    // and a file that grows while being read is still bounded.
    let limit = MAX_PSK_BYTES as u64 + 1;
    let mut psk = Vec::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
    file.take(limit).read_to_end(&mut psk).map_err(io)?;
    let path = path.to_owned();
    match psk.len() {
        0 => Err(PskError::Empty { path }),
        len if len < MIN_PSK_BYTES => Err(PskError::TooShort { path, len }),
        len if len > MAX_PSK_BYTES => Err(PskError::TooLarge { path }),
        _ => Ok(Key::derive(&psk)),
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, metadata: &std::fs::Metadata) -> Result<(), PskError> {
    use std::os::unix::fs::PermissionsExt;

    /// Every permission bit of group and others.
    const GROUP_AND_OTHERS: u32 = 0o077;

    let mode = metadata.permissions().mode() & 0o777;
    if mode & GROUP_AND_OTHERS == 0 {
        Ok(())
    } else {
        Err(PskError::Permissions {
            path: path.to_owned(),
            mode,
        })
    }
}

/// Elsewhere there are no Unix permission bits to check.
#[cfg(not(unix))]
fn check_mode(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), PskError> {
    Ok(())
}
