//! The one crypto provider of the process: ring.
//!
//! rustls panics when it must pick a default provider and finds more than one
//! compiled in (dependencies.md #4). Every config in this crate is built with
//! [`crypto_provider`] explicitly, and [`install_default_provider`] makes ring
//! the process default for code that does not pass one.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The ring provider, built once.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs ring as the process-wide default rustls provider. Idempotent:
/// calling it again, or after another provider was installed, is harmless
/// (this crate never relies on the default).
pub fn install_default_provider() {
    // `install_default` fails only when a default already exists, which is
    // exactly the idempotent case.
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}
