//! Test certificates: two CAs, server and client certificates signed by the
//! first, written once per test process into a private temporary directory.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// Every file a TLS test needs.
#[derive(Debug)]
pub struct Pki {
    /// Where the files live (removed when the process ends is not
    /// guaranteed; the OS temp dir cleans up).
    pub dir: PathBuf,
    /// The CA that signs `server`, `server_b` and `client`.
    pub ca: PathBuf,
    /// A CA that signed nothing used here (a "wrong CA").
    pub other_ca: PathBuf,
    /// `CN=bus-test-server`, valid for `localhost` and `127.0.0.1`.
    pub server: Pair,
    /// `CN=bus-test-server-b`, also valid for `localhost`: the replacement
    /// in reload tests.
    pub server_b: Pair,
    /// `CN=alice`, `DNS=alice.clients.test`: a client certificate.
    pub client: Pair,
}

/// The process-wide fixture.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(generate)
}

/// The server name test clients expect.
pub const SERVER_NAME: &str = "localhost";

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA cert").pem();
    (params, key, pem)
}

fn leaf(dir: &Path, file: &str, cn: &str, names: &[&str], issuer: &Issuer<'_, KeyPair>) -> Pair {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    let pair = Pair {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&pair.cert, cert.pem()).expect("write cert");
    std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
    pair
}

fn generate() -> Pki {
    let dir = unique_dir("pki");
    let (ca_params, ca_key, ca_pem) = ca("bus test CA");
    let (_, _, other_pem) = ca("bus other CA");
    let ca = dir.join("ca.pem");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&ca, ca_pem).expect("write CA");
    std::fs::write(&other_ca, other_pem).expect("write other CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let names = ["localhost", "127.0.0.1"];
    Pki {
        server: leaf(&dir, "server", "bus-test-server", &names, &issuer),
        server_b: leaf(&dir, "server-b", "bus-test-server-b", &names, &issuer),
        client: leaf(&dir, "client", "alice", &["alice.clients.test"], &issuer),
        dir,
        ca,
        other_ca,
    }
}

/// A fresh, empty directory under the OS temp dir, unique to this process
/// and call.
pub fn unique_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("bus-tests-{}-{what}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
