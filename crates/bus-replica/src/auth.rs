//! The cryptography of the handshake (spec §4): key derivation, the
//! transcript, the two MACs, and the key pair that makes rotation possible.
//!
//! `key = BLAKE3 derive_key("bus.v1 replica-auth key", PSK)` and
//! `mac = BLAKE3 keyed_hash(key, transcript || dir)`. Comparison goes
//! through [`blake3::Hash`]'s equality, which is constant time. This module
//! holds no raw PSK: a [`Key`] is derived once and the PSK bytes are dropped
//! by whoever read them. It does not read files (see [`crate::psk`]) and
//! knows nothing about frames (see [`crate::message`]).

use crate::limits::{
    BINDING_BYTES, KEY_BYTES, MAC_BYTES, MAC_INPUT_BYTES, NONCE_BYTES, TRANSCRIPT_BYTES,
    TRANSCRIPT_LABEL,
};

/// The `derive_key` context of spec §4.
pub const KEY_CONTEXT: &str = "bus.v1 replica-auth key";

/// The TLS exporter label whose 32-byte value (no context) is the binding
/// on replica TLS (spec §4, RFC 8446 §7.5).
pub const TLS_EXPORTER_LABEL: &[u8] = b"bus.v1 replica binding";

/// A key derived from a pre-shared key. Its bytes never appear in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_BYTES]);

impl Key {
    /// Derives the MAC key from the pre-shared key's bytes.
    pub fn derive(psk: &[u8]) -> Self {
        Self(blake3::derive_key(KEY_CONTEXT, psk))
    }

    /// The MAC of `transcript || direction` under this key.
    pub fn mac(&self, transcript: &Transcript, direction: Direction) -> [u8; MAC_BYTES] {
        *blake3::keyed_hash(&self.0, &transcript.mac_input(direction)).as_bytes()
    }

    /// Whether `mac` is this key's MAC of `transcript || direction`, compared
    /// in constant time.
    fn verifies(
        &self,
        transcript: &Transcript,
        direction: Direction,
        mac: &[u8; MAC_BYTES],
    ) -> bool {
        blake3::keyed_hash(&self.0, &transcript.mac_input(direction)) == *mac
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Which of a node's [`Keys`] verified a peer's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySlot {
    /// The signing key (`replicas.psk_file`).
    Signing,
    /// The verify-only key (`replicas.verify_psk_file`). A peer still
    /// verified this way has not finished a rotation.
    VerifyOnly,
}

/// A node's keys: it MACs with the signing key and accepts a peer's MAC made
/// with either key (spec §4, key rotation).
///
/// Rolling a new key through a running cluster, one node at a time:
/// 1. every node: signing = old, verify-only = new;
/// 2. every node: signing = new, verify-only = old;
/// 3. every node: signing = new, no verify-only key.
///
/// Any two nodes are then always able to verify each other: in step 2 one
/// may sign with the new key and the other with the old one, and each
/// verifies both.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    signing: Key,
    verify_only: Option<Key>,
}

impl Keys {
    /// One key, used to sign and to verify.
    pub fn new(signing: Key) -> Self {
        Self {
            signing,
            verify_only: None,
        }
    }

    /// Adds a key that verifies peers' MACs but never signs ours.
    #[must_use]
    pub fn with_verify_only(mut self, key: Key) -> Self {
        self.verify_only = Some(key);
        self
    }

    /// The key our own MACs are made with.
    pub fn signing(&self) -> &Key {
        &self.signing
    }

    /// The verify-only key, if any.
    pub fn verify_only(&self) -> Option<&Key> {
        self.verify_only.as_ref()
    }

    /// Our MAC of `transcript || direction`, with the signing key.
    pub fn sign(&self, transcript: &Transcript, direction: Direction) -> [u8; MAC_BYTES] {
        self.signing.mac(transcript, direction)
    }

    /// Which key, if any, made `mac`. Both keys are always tried, so the time
    /// taken does not say which one matched.
    pub fn verify(
        &self,
        transcript: &Transcript,
        direction: Direction,
        mac: &[u8; MAC_BYTES],
    ) -> Option<KeySlot> {
        let signing = self.signing.verifies(transcript, direction, mac);
        let verify_only = self
            .verify_only
            .as_ref()
            .is_some_and(|key| key.verifies(transcript, direction, mac));
        match (signing, verify_only) {
            (true, _) => Some(KeySlot::Signing),
            (false, true) => Some(KeySlot::VerifyOnly),
            (false, false) => None,
        }
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("verify_only", &self.verify_only.is_some())
            .finish_non_exhaustive()
    }
}

/// The channel binding mixed into both MACs: 32 zero bytes on plain TCP,
/// the TLS exporter value for [`TLS_EXPORTER_LABEL`] on TLS, so that a relay
/// between two TLS sessions cannot complete a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding([u8; BINDING_BYTES]);

impl Binding {
    /// The binding of a plain TCP connection: 32 zero bytes.
    pub const PLAIN_TCP: Self = Self([0; BINDING_BYTES]);

    /// The binding of a TLS connection: its exporter value for
    /// [`TLS_EXPORTER_LABEL`] with no context.
    pub const fn tls_exporter(value: [u8; BINDING_BYTES]) -> Self {
        Self(value)
    }

    /// The 32 bytes that enter the transcript.
    pub const fn as_bytes(&self) -> &[u8; BINDING_BYTES] {
        &self.0
    }
}

/// Which side a MAC speaks for: the `dir` byte after the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `1`: the dialer's MAC (`mac_d`, in `ReplicaFinish`).
    Dialer,
    /// `2`: the acceptor's MAC (`mac_a`, in `ReplicaChallenge`).
    Acceptor,
}

impl Direction {
    /// The byte appended to the transcript.
    pub const fn byte(self) -> u8 {
        match self {
            Self::Dialer => 1,
            Self::Acceptor => 2,
        }
    }
}

/// The bytes both MACs cover (spec §4):
/// `"bus.v1 replica-auth" || cluster (16, LE) || dialer_id || acceptor_id ||
/// nonce_d (32) || nonce_a (32) || binding (32)`, 133 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Transcript([u8; TRANSCRIPT_BYTES]);

/// The fields of a [`Transcript`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscriptFields<'a> {
    /// The cluster id both sides share.
    pub cluster: u128,
    /// The dialing replica's id.
    pub dialer_id: u8,
    /// The accepting replica's id.
    pub acceptor_id: u8,
    /// The dialer's nonce, from `ReplicaHello`.
    pub nonce_d: &'a [u8; NONCE_BYTES],
    /// The acceptor's nonce, from `ReplicaChallenge`.
    pub nonce_a: &'a [u8; NONCE_BYTES],
    /// The channel binding.
    pub binding: &'a Binding,
}

impl Transcript {
    /// Lays the fields out as spec §4 orders them.
    pub fn new(fields: &TranscriptFields<'_>) -> Self {
        let mut bytes = [0; TRANSCRIPT_BYTES];
        let parts: [&[u8]; 7] = [
            TRANSCRIPT_LABEL,
            &fields.cluster.to_le_bytes(),
            &[fields.dialer_id],
            &[fields.acceptor_id],
            fields.nonce_d,
            fields.nonce_a,
            fields.binding.as_bytes(),
        ];
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        debug_assert_eq!(at, TRANSCRIPT_BYTES);
        Self(bytes)
    }

    /// The 133 transcript bytes.
    pub const fn as_bytes(&self) -> &[u8; TRANSCRIPT_BYTES] {
        &self.0
    }

    /// `transcript || dir`: what a MAC covers.
    pub fn mac_input(&self, direction: Direction) -> [u8; MAC_INPUT_BYTES] {
        let mut input = [0; MAC_INPUT_BYTES];
        input[..TRANSCRIPT_BYTES].copy_from_slice(&self.0);
        input[TRANSCRIPT_BYTES] = direction.byte();
        input
    }
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Transcript").field(&&self.0[..]).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript::new(&TranscriptFields {
            cluster: 7,
            dialer_id: 1,
            acceptor_id: 2,
            nonce_d: &[3; 32],
            nonce_a: &[4; 32],
            binding: &Binding::PLAIN_TCP,
        })
    }

    #[test]
    fn the_two_directions_give_different_macs() {
        let key = Key::derive(&[9; 32]);
        let t = transcript();
        assert_ne!(
            key.mac(&t, Direction::Dialer),
            key.mac(&t, Direction::Acceptor)
        );
    }

    #[test]
    fn verify_says_which_key_matched() {
        let old = Key::derive(b"old key, thirty-two bytes long!!");
        let new = Key::derive(b"new key, thirty-two bytes long!!");
        let t = transcript();
        let keys = Keys::new(new.clone()).with_verify_only(old.clone());
        let dir = Direction::Dialer;
        assert_eq!(
            keys.verify(&t, dir, &new.mac(&t, dir)),
            Some(KeySlot::Signing)
        );
        assert_eq!(
            keys.verify(&t, dir, &old.mac(&t, dir)),
            Some(KeySlot::VerifyOnly)
        );
        let third = Key::derive(b"third key, not anywhere near us!");
        assert_eq!(keys.verify(&t, dir, &third.mac(&t, dir)), None);
        // Signing uses the signing key only.
        assert_eq!(keys.sign(&t, dir), new.mac(&t, dir));
    }

    #[test]
    fn debug_output_never_shows_key_bytes() {
        let keys = Keys::new(Key::derive(&[0xab; 32])).with_verify_only(Key::derive(&[0xcd; 32]));
        let text = format!("{keys:?} {:?}", keys.signing());
        assert_eq!(text, "Keys { verify_only: true, .. } Key(..)");
    }
}
