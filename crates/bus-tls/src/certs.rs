//! Certificate material from PEM files, and self-signed development
//! certificates.
//!
//! Files are read with blocking calls: this runs at start-up and on an
//! operator's reload, never per connection. Every error names the file and
//! says what was expected in it.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

use crate::{TlsError, provider::crypto_provider};

const CERT: &str = "certificate";
const KEY: &str = "private key";
const CA: &str = "CA";

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        what,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Reads every `CERTIFICATE` block of a PEM file, in order.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(what, path, format!("not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(invalid(
            what,
            path,
            "no `-----BEGIN CERTIFICATE-----` block found; expected PEM certificates",
        ));
    }
    Ok(certs)
}

/// Loads a PEM certificate chain (leaf first).
pub fn load_certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certificates(CERT, path)
}

/// Loads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            KEY,
            path,
            "no private key block found; expected `-----BEGIN PRIVATE KEY-----` \
             (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY`",
        ),
        other => invalid(KEY, path, format!("unreadable key: {other}")),
    })
}

/// Loads a certificate chain and its key, and checks they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certificate_chain(cert)?;
    let der = load_private_key(key)?;
    match CertifiedKey::from_der(chain, der, &crypto_provider()) {
        Ok(certified) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(problem)) => Err(TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            problem: format!("{problem:?}"),
        }),
        Err(other) => Err(invalid(KEY, key, format!("unusable key: {other}"))),
    }
}

/// Loads a PEM bundle of trusted CA certificates.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(CA, path)? {
        roots
            .add(cert)
            .map_err(|err| invalid(CA, path, format!("not a usable CA certificate: {err}")))?;
    }
    Ok(roots)
}

/// Where a self-signed development certificate lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelfSignedPaths {
    /// The certificate (PEM): what clients trust.
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// Whether this call generated them (false: they already existed).
    pub generated: bool,
}

/// The names a development certificate is valid for.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Makes sure `dir` holds a self-signed development certificate
/// (`cert.pem`, `key.pem`) valid for [`SELF_SIGNED_NAMES`], generating it
/// on first use and reusing it afterwards, so clients that trusted it keep
/// working across restarts.
pub fn ensure_self_signed(dir: &Path) -> Result<SelfSignedPaths, TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok(SelfSignedPaths {
            cert,
            key,
            generated: false,
        });
    }
    let fail = |problem: String| TlsError::SelfSigned {
        dir: dir.to_owned(),
        problem,
    };
    fs::create_dir_all(dir).map_err(|err| fail(err.to_string()))?;
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|&n| n.to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())
        .map_err(|err| fail(format!("{}: {err}", key.display())))?;
    fs::write(&cert, generated.cert.pem())
        .map_err(|err| fail(format!("{}: {err}", cert.display())))?;
    Ok(SelfSignedPaths {
        cert,
        key,
        generated: true,
    })
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}
