//! Admission control: a node-wide cap on live client connections
//! ([`Admission`], `[bus] max_connections`) and, per listener, a cap on
//! handshakes in flight ([`Gate`], `max_handshakes`).
//!
//! ```text
//! accept ─▶ Gate::admit ─┬─ Err(Refusal) ─▶ closed at once (WS: 503), counted, logged (rate-limited)
//!                        └─ Ok(Admitted) ─▶ handshake ─▶ handshake slot freed ─▶ connection … ─▶ slot freed
//! ```
//!
//! The check runs right after `accept`, before any byte is read: before the
//! TLS `ClientHello` is processed and before the WebSocket upgrade. A slot is
//! a counter, shared by every shard (atomics; one compare-and-swap per
//! accepted connection, nothing per frame), given back when its
//! [`Admitted`] is dropped: when the connection ends, however it ends.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use crate::{
    limits::{ACCEPT_DESCRIPTORS_BACKOFF, ACCEPT_ERROR_BACKOFF},
    ratelog::RateLimitedLog,
    transport::TransportKind,
};

/// The node-wide connection cap, shared by every shard and listener. Cheap
/// to clone; every clone is the same cap.
#[derive(Debug, Clone)]
pub struct Admission {
    node: Arc<Node>,
}

#[derive(Debug)]
struct Node {
    max_connections: usize,
    live: AtomicUsize,
    gates: Mutex<Vec<Arc<GateState>>>,
}

impl Admission {
    /// At most `max_connections` live client connections (handshaking or
    /// established) at once.
    pub fn new(max_connections: usize) -> Self {
        Self {
            node: Arc::new(Node {
                max_connections,
                live: AtomicUsize::new(0),
                gates: Mutex::default(),
            }),
        }
    }

    /// The cap.
    pub fn max_connections(&self) -> usize {
        self.node.max_connections
    }

    /// Connections holding a slot now.
    pub fn live(&self) -> usize {
        self.node.live.load(Relaxed)
    }

    /// A gate for one listener bound to `addr` (its transport, when known
    /// now; else taken from its first connection), with at most
    /// `max_handshakes` handshakes in flight (`None`: no cap of its own,
    /// as for QUIC, which caps its handshakes itself).
    pub fn gate(
        &self,
        kind: Option<TransportKind>,
        addr: SocketAddr,
        max_handshakes: Option<usize>,
    ) -> Gate {
        let state = Arc::new(GateState {
            kind: OnceLock::new(),
            addr,
            max_handshakes,
            handshaking: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            refused_handshakes: AtomicU64::new(0),
            refused_descriptors: AtomicU64::new(0),
        });
        if let Some(kind) = kind {
            let _ = state.kind.set(kind);
        }
        self.node
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(state.clone());
        Gate {
            node: self.node.clone(),
            state,
        }
    }

    /// Every gate's counters, in the order the gates were made.
    pub fn listeners(&self) -> Vec<GateStats> {
        self.node
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|g| g.stats())
            .collect()
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `max_connections` live connections.
    NodeFull,
    /// The listener has `max_handshakes` handshakes in flight.
    Handshakes,
}

impl Refusal {
    /// For logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NodeFull => "max_connections",
            Self::Handshakes => "max_handshakes",
        }
    }
}

/// One listener's admission: the node-wide cap plus its handshake cap.
/// `Send + Sync`, cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    node: Arc<Node>,
    state: Arc<GateState>,
}

#[derive(Debug)]
struct GateState {
    kind: OnceLock<TransportKind>,
    addr: SocketAddr,
    max_handshakes: Option<usize>,
    handshaking: AtomicUsize,
    admitted: AtomicU64,
    refused_connections: AtomicU64,
    refused_handshakes: AtomicU64,
    refused_descriptors: AtomicU64,
}

impl GateState {
    fn stats(&self) -> GateStats {
        GateStats {
            kind: self.kind.get().copied(),
            addr: self.addr,
            max_handshakes: self.max_handshakes,
            handshaking: self.handshaking.load(Relaxed),
            admitted: self.admitted.load(Relaxed),
            refused_connections: self.refused_connections.load(Relaxed),
            refused_handshakes: self.refused_handshakes.load(Relaxed),
            refused_descriptors: self.refused_descriptors.load(Relaxed),
        }
    }
}

/// Takes one unit of `counter` if it stays within `max`.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
        .is_ok()
}

impl Gate {
    /// Takes a connection slot (and a handshake slot when this listener
    /// caps handshakes), or says which cap refused it and counts the
    /// refusal.
    pub fn admit(&self) -> Result<Admitted, Refusal> {
        let state = &self.state;
        if !take(&self.node.live, self.node.max_connections) {
            state.refused_connections.fetch_add(1, Relaxed);
            return Err(Refusal::NodeFull);
        }
        let slot = Slot(self.node.clone());
        let handshake = match state.max_handshakes {
            None => None,
            Some(max) if take(&state.handshaking, max) => Some(HandshakeSlot(state.clone())),
            Some(_) => {
                state.refused_handshakes.fetch_add(1, Relaxed);
                return Err(Refusal::Handshakes);
            }
        };
        state.admitted.fetch_add(1, Relaxed);
        Ok(Admitted {
            _slot: slot,
            handshake,
        })
    }

    /// Names the transport of a gate made without one (first caller wins).
    pub fn set_kind(&self, kind: TransportKind) {
        if self.state.kind.get().is_none() {
            let _ = self.state.kind.set(kind);
        }
    }

    /// Counts a connection refused because the process was out of
    /// descriptors (accepted on a spare descriptor and closed at once).
    pub fn refused_out_of_descriptors(&self) {
        self.state.refused_descriptors.fetch_add(1, Relaxed);
    }

    /// This gate's counters now.
    pub fn stats(&self) -> GateStats {
        self.state.stats()
    }
}

/// An admitted connection's slots. The handshake slot goes back with
/// [`Admitted::handshake_done`] (or on drop), the connection slot on drop.
#[derive(Debug)]
#[must_use = "dropping it gives the slot back at once"]
pub struct Admitted {
    _slot: Slot,
    handshake: Option<HandshakeSlot>,
}

impl Admitted {
    /// The handshake ended: its handshake slot goes back; the connection
    /// keeps its connection slot.
    pub fn handshake_done(&mut self) {
        self.handshake = None;
    }
}

#[derive(Debug)]
struct Slot(Arc<Node>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug)]
struct HandshakeSlot(Arc<GateState>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Relaxed);
    }
}

/// One listener's admission counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// The listener's transport (`None` until its first connection when
    /// the gate was made without one).
    pub kind: Option<TransportKind>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handshake cap, if it has one.
    pub max_handshakes: Option<usize>,
    /// Handshakes in flight now.
    pub handshaking: usize,
    /// Connections admitted so far.
    pub admitted: u64,
    /// Connections refused because the node was full.
    pub refused_connections: u64,
    /// Connections refused because this listener's handshakes were at
    /// their cap.
    pub refused_handshakes: u64,
    /// Connections refused because the process was out of descriptors.
    pub refused_descriptors: u64,
}

impl GateStats {
    /// Every refusal so far.
    pub fn refused(&self) -> u64 {
        self.refused_connections + self.refused_handshakes + self.refused_descriptors
    }
}

/// Logs a failed `accept` (rate-limited) and backs off: longer when the
/// process is out of descriptors, so the loop does not spin until a
/// connection closes.
pub async fn accept_failed(err: &std::io::Error) {
    static FAILED: RateLimitedLog = RateLimitedLog::new();
    let out_of_descriptors = is_out_of_descriptors(err);
    if let Some(suppressed) = FAILED.allow() {
        tracing::warn!(%err, out_of_descriptors, suppressed, "accept failed");
    }
    let pause = if out_of_descriptors {
        ACCEPT_DESCRIPTORS_BACKOFF
    } else {
        ACCEPT_ERROR_BACKOFF
    };
    compio::runtime::time::sleep(pause).await;
}

/// `EMFILE` or `ENFILE`: the process or the system is out of descriptors.
pub fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    // Linux's EMFILE (24) and ENFILE (23); this crate has no libc.
    matches!(err.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn node_cap_is_shared_and_freed_slots_are_reused() {
        let admission = Admission::new(2);
        let a = admission.gate(Some(TransportKind::Tcp), addr(), None);
        let b = admission.gate(Some(TransportKind::Ws), addr(), Some(10));
        let first = a.admit().unwrap();
        let _second = b.admit().unwrap();
        assert_eq!(a.admit().unwrap_err(), Refusal::NodeFull);
        assert_eq!(b.admit().unwrap_err(), Refusal::NodeFull);
        assert_eq!(admission.live(), 2);
        drop(first);
        let _third = a.admit().unwrap();
        let stats = admission.listeners();
        assert_eq!(stats[0].refused_connections, 1);
        assert_eq!(stats[1].refused_connections, 1);
        assert_eq!(stats[0].admitted, 2);
    }

    #[test]
    fn handshake_cap_is_per_listener_and_freed_when_done() {
        let admission = Admission::new(100);
        let gate = admission.gate(Some(TransportKind::Tls), addr(), Some(1));
        let mut first = gate.admit().unwrap();
        assert_eq!(gate.admit().unwrap_err(), Refusal::Handshakes);
        // A refused handshake holds no connection slot.
        assert_eq!(admission.live(), 1);
        first.handshake_done();
        let _second = gate.admit().unwrap();
        assert_eq!(admission.live(), 2);
        assert_eq!(gate.stats().handshaking, 1);
        assert_eq!(gate.stats().refused_handshakes, 1);
    }
}
