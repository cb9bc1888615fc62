//! Every bound of the mesh in one place, with the relations between them
//! checked at compile time. The handshake's own sizes live in
//! `bus_replica::limits`; the keep-alive and idle bounds of authenticated
//! replica links in `bus_core::limits`.

use std::time::Duration;

use bus_core::limits::{HEADER_SIZE, MIN_MAX_MESSAGE_SIZE_BYTES};

/// Largest frame read before the peer is authenticated: the three
/// handshake messages (and a `Goodbye`) are bare 256-byte headers, so
/// nothing larger is buffered for an unauthenticated peer.
pub const HANDSHAKE_MAX_MESSAGE_SIZE_BYTES: u32 = MIN_MAX_MESSAGE_SIZE_BYTES;

/// Ceiling of the first redial delay; it doubles with every failed attempt
/// up to `replicas.reconnect_max`.
pub const REDIAL_BASE: Duration = Duration::from_millis(200);

/// No redial comes sooner than this after the previous attempt (unless
/// `reconnect_max` is smaller), so a peer that refuses at once sees at most
/// `1 s / REDIAL_FLOOR` dials per second from one node.
pub const REDIAL_FLOOR: Duration = Duration::from_millis(100);

/// Longest a refused or failed handshake waits for the peer's end of stream
/// after our refusal or `Goodbye` and our FIN, so the close reaches it as
/// an orderly one rather than a reset caused by unread data.
pub const REFUSAL_DRAIN: Duration = Duration::from_secs(1);

/// Bound on writing one handshake message (or the refusal) once the
/// handshake's own deadline has passed.
pub const GOODBYE_WRITE_BOUND: Duration = Duration::from_secs(1);

/// Longest `last_error` kept per peer (the rest is cut on a character
/// boundary).
pub const LAST_ERROR_MAX_BYTES: usize = 256;

const _: () = assert!(HANDSHAKE_MAX_MESSAGE_SIZE_BYTES as usize == HEADER_SIZE);
const _: () = assert!(REDIAL_FLOOR.as_nanos() <= REDIAL_BASE.as_nanos());
const _: () = assert!(!REDIAL_FLOOR.is_zero());

/// A dialed link that stayed up at least this long resets the backoff, so
/// its loss is redialed within `REDIAL_BASE`; one that ends sooner keeps
/// backing off.
pub const STABLE_LINK: Duration = Duration::from_secs(1);
