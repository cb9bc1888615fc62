//! The `[tls]` section as `bus-tls` settings.
#![cfg(feature = "tls")]

use std::path::{Path, PathBuf};

use bus_config::Config;
use bus_tls::CertificateSource;

#[test]
fn without_cert_and_key_the_self_signed_certificate_lives_in_the_data_dir() {
    let config = Config::embedded_defaults();
    let tls = config.tls_server_config(Path::new("/var/lib/bus"));
    assert_eq!(
        tls.certificate,
        CertificateSource::SelfSigned {
            dir: PathBuf::from("/var/lib/bus/tls")
        }
    );
    assert_eq!(tls.alpn, vec![b"bus.v1".to_vec()]);
    assert_eq!(tls.client_ca, None);
    assert!(!tls.keylog);
    assert_eq!(config.tls_listener_config().listen, config.tls.listen);
}

#[test]
fn cert_key_and_client_ca_are_carried_over() {
    let config = Config::from_toml_str(
        r#"
        [tls]
        enabled = true
        cert = "/etc/bus/cert.pem"
        key = "/etc/bus/key.pem"
        client_ca = "/etc/bus/ca.pem"
        self_signed = false
        keylog = true
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    let tls = config.tls_server_config(Path::new("/unused"));
    assert_eq!(
        tls.certificate,
        CertificateSource::Files {
            cert: PathBuf::from("/etc/bus/cert.pem"),
            key: PathBuf::from("/etc/bus/key.pem"),
        }
    );
    assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/bus/ca.pem")));
    assert!(tls.keylog);
}

#[test]
fn tls_without_certificate_or_self_signed_is_refused_naming_the_field() {
    let err = Config::from_toml_str("[tls]\nenabled = true\nself_signed = false\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.self_signed"), "{err}");
}
