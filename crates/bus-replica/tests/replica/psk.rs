//! Pre-shared key files: the file's bytes are the key, at least 32 of them,
//! and only the owner may access the file.

use std::io::ErrorKind;

use bus_replica::{Key, PskError, limits::MAX_PSK_BYTES, load_key};

use crate::common::TempDir;

const PSK: &[u8] = b"0123456789abcdef0123456789abcdef";

#[test]
fn a_private_file_of_32_bytes_is_the_key() {
    let dir = TempDir::new("psk-ok");
    for mode in [0o600, 0o400] {
        let path = dir.file(&format!("psk-{mode:o}"), PSK, mode);
        assert_eq!(load_key(&path).unwrap(), Key::derive(PSK));
    }
}

#[test]
fn every_byte_counts_a_trailing_newline_too() {
    let dir = TempDir::new("psk-newline");
    let with_newline = [PSK, b"\n"].concat();
    let path = dir.file("psk", &with_newline, 0o600);
    let key = load_key(&path).unwrap();
    assert_eq!(key, Key::derive(&with_newline));
    assert_ne!(key, Key::derive(PSK));
}

#[test]
fn a_file_group_or_others_may_access_is_refused_naming_the_path_and_the_fix() {
    let dir = TempDir::new("psk-mode");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o620, 0o700 | 0o001] {
        let path = dir.file(&format!("psk-{mode:o}"), PSK, mode);
        let error = load_key(&path).unwrap_err();
        let PskError::Permissions {
            path: named,
            mode: seen,
        } = &error
        else {
            panic!("{mode:o}: {error:?}");
        };
        assert_eq!((named, *seen), (&path, mode));
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "pre-shared key file {} is accessible by group or others (mode {mode:03o}): \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            )
        );
    }
}

#[test]
fn an_empty_file_is_refused() {
    let dir = TempDir::new("psk-empty");
    let path = dir.file("psk", b"", 0o600);
    let error = load_key(&path).unwrap_err();
    assert!(
        matches!(&error, PskError::Empty { path: p } if *p == path),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "pre-shared key file {} is empty: write at least 32 random bytes into it",
            path.display()
        )
    );
}

#[test]
fn a_file_shorter_than_32_bytes_is_refused() {
    let dir = TempDir::new("psk-short");
    let path = dir.file("psk", &PSK[..31], 0o600);
    let error = load_key(&path).unwrap_err();
    assert!(
        matches!(error, PskError::TooShort { len: 31, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("holds 31 bytes: at least 32 are required")
    );
}

#[test]
fn a_file_larger_than_the_bound_is_refused() {
    let dir = TempDir::new("psk-large");
    let at_limit = dir.file("limit", &vec![7; MAX_PSK_BYTES], 0o600);
    assert_eq!(
        load_key(&at_limit).unwrap(),
        Key::derive(&vec![7; MAX_PSK_BYTES])
    );
    let beyond = dir.file("beyond", &vec![7; MAX_PSK_BYTES + 1], 0o600);
    let error = load_key(&beyond).unwrap_err();
    assert!(matches!(error, PskError::TooLarge { .. }), "{error:?}");
}

#[test]
fn a_missing_file_or_a_directory_is_refused_naming_it() {
    let dir = TempDir::new("psk-missing");
    let missing = dir.path().join("nope");
    let error = load_key(&missing).unwrap_err();
    let PskError::Io { path, source } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((path, source.kind()), (&missing, ErrorKind::NotFound));
    assert!(error.to_string().starts_with(&format!(
        "cannot read pre-shared key file {}: ",
        missing.display()
    )));

    let error = load_key(dir.path()).unwrap_err();
    assert!(matches!(error, PskError::NotAFile { .. }), "{error:?}");
}
