//! Every size and bound of the replica plane in one place, with the
//! relations between them checked at compile time.

use std::time::Duration;

use bus_core::limits::HEADER_SIZE;

/// Length of a handshake nonce (`nonce_d`, `nonce_a`; spec §4).
pub const NONCE_BYTES: usize = 32;
/// Length of a handshake MAC (`mac_a`, `mac_d`): one BLAKE3 output.
pub const MAC_BYTES: usize = blake3::OUT_LEN;
/// Length of a derived key: one BLAKE3 key.
pub const KEY_BYTES: usize = blake3::KEY_LEN;
/// Length of the channel binding: 32 zero bytes on plain TCP, the TLS
/// exporter value otherwise.
pub const BINDING_BYTES: usize = 32;

/// Smallest pre-shared key file accepted: a PSK shorter than a BLAKE3 key
/// would make the derived key weaker than the MAC it feeds.
pub const MIN_PSK_BYTES: usize = 32;
/// Largest pre-shared key file read (64 KiB): far above any real key, and a
/// bound on what a wrong path (a log, a device) makes the node read.
pub const MAX_PSK_BYTES: usize = 64 << 10;

/// The label that starts every transcript (spec §4).
pub const TRANSCRIPT_LABEL: &[u8] = b"bus.v1 replica-auth";
/// Length of the transcript: label, cluster (16), dialer id (1), acceptor id
/// (1), `nonce_d`, `nonce_a`, binding.
pub const TRANSCRIPT_BYTES: usize =
    TRANSCRIPT_LABEL.len() + 16 + 1 + 1 + NONCE_BYTES + NONCE_BYTES + BINDING_BYTES;
/// Length of what a MAC covers: the transcript and the one direction byte.
pub const MAC_INPUT_BYTES: usize = TRANSCRIPT_BYTES + 1;

/// Where the fields sit in `command_area` (spec §4).
pub(crate) const NONCE_AT: usize = 0;
/// `mac_a` (Challenge) and `mac_d` (Finish).
pub(crate) const MAC_AT: usize = 32;
/// The Challenge's status byte.
pub(crate) const STATUS_AT: usize = 64;
/// Size of `command_area`.
pub(crate) const COMMAND_AREA_BYTES: usize = 128;

/// Default upper bound of the redial backoff (`replicas.reconnect_max`).
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

const _: () = assert!(TRANSCRIPT_LABEL.len() == 19);
const _: () = assert!(TRANSCRIPT_BYTES == 133);
const _: () = assert!(NONCE_AT + NONCE_BYTES <= MAC_AT);
const _: () = assert!(MAC_AT + MAC_BYTES <= STATUS_AT);
const _: () = assert!(STATUS_AT < COMMAND_AREA_BYTES);
const _: () = assert!(HEADER_SIZE - COMMAND_AREA_BYTES == 128);
const _: () = assert!(KEY_BYTES == 32 && MAC_BYTES == 32);
const _: () = assert!(MIN_PSK_BYTES <= MAX_PSK_BYTES);
