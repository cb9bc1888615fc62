//! Every URL scheme is either compiled in, and then dials its transport, or
//! refused at once with `SchemeNotAvailable` naming the feature that
//! provides it.
//!
//! Both branches run in CI: `cargo xtask test` runs this file in the
//! workspace build (every transport on) and again with bus-client's `tcp`
//! feature alone, where `tls://`, `ws://`, `wss://` and `quic://` are
//! missing. This crate has no dev-dependency on purpose: one (such as
//! `bus-tests`) would turn the other transports back on.

use std::time::Duration;

use bus_client::{Client, ClientError, ClientOptions, Reconnect, Scheme};

/// A port nobody listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn connect(url: &str, options: ClientOptions) -> ClientError {
    compio::runtime::time::timeout(Duration::from_secs(10), Client::connect(url, options))
        .await
        .unwrap_or_else(|_| panic!("{url}: connect did not fail within 10 s"))
        .expect_err("nothing listens there")
}

#[compio::test]
async fn each_scheme_is_compiled_in_or_refused_as_not_available() {
    let port = closed_port();
    let mut options = ClientOptions::default();
    options.connect_timeout = Duration::from_millis(500);
    options.handshake_timeout = Duration::from_millis(500);
    let (mut available, mut missing) = (Vec::new(), Vec::new());
    for scheme in Scheme::ALL {
        let url = format!("{scheme}://127.0.0.1:{port}");
        let err = connect(&url, options.clone()).await;
        if scheme.is_available() {
            // It dials: refused by the closed port, or (TLS-based schemes
            // without a CA file) told what to trust. Either way it names
            // the URL.
            assert!(matches!(err, ClientError::Connect { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains(&url), "{url}: {err}");
            available.push(scheme);
        } else {
            assert!(
                matches!(
                    err,
                    ClientError::SchemeNotAvailable { scheme: s, feature: f }
                        if s == scheme.as_str() && f == scheme.feature()
                ),
                "{url}: {err:?}"
            );
            let feature = format!("enable the `{}` feature", scheme.feature());
            assert!(err.to_string().contains(&feature), "{url}: {err}");
            // "Always fails at once": even a client told to keep retrying.
            let mut retrying = options.clone();
            retrying.reconnect = Some(Reconnect::default());
            let again = connect(&url, retrying).await;
            assert!(
                matches!(again, ClientError::SchemeNotAvailable { .. }),
                "{url} with reconnect: {again:?}"
            );
            missing.push(scheme);
        }
    }
    assert_eq!(available.len() + missing.len(), Scheme::ALL.len());
    println!("compiled in: {available:?}; refused as not available: {missing:?}");
}
