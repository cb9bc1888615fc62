//! Where handshake nonces come from: the OS random number generator in
//! production ([`OsRandom`]), anything implementing [`NonceSource`] in tests.
//!
//! Every handshake draws its own nonce (spec §4: nonces are never reused);
//! the state machines take one when they start, so a handshake that has
//! begun can no longer fail for want of randomness.

use crate::limits::NONCE_BYTES;

/// A source of fresh 32-byte nonces.
pub trait NonceSource {
    /// A nonce never returned before.
    fn nonce(&mut self) -> Result<[u8; NONCE_BYTES], NonceError>;
}

/// Nonces from the operating system's random number generator
/// (`getrandom(2)` on Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl NonceSource for OsRandom {
    fn nonce(&mut self) -> Result<[u8; NONCE_BYTES], NonceError> {
        let mut nonce = [0; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|error| NonceError {
            detail: error.to_string(),
        })?;
        Ok(nonce)
    }
}

/// The random number generator failed; no handshake can start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot draw a handshake nonce from the OS random number generator: {detail}")]
pub struct NonceError {
    detail: String,
}

impl NonceError {
    /// An error with this explanation, for [`NonceSource`]s other than
    /// [`OsRandom`].
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_nonces_differ() {
        let mut rng = OsRandom;
        let a = rng.nonce().unwrap();
        let b = rng.nonce().unwrap();
        // Two equal 32-byte draws would mean a broken generator (2^-256).
        assert_ne!(a, b);
        assert_ne!(a, [0; NONCE_BYTES]);
    }
}
