//! The node-wide state of the mesh, shared by every shard: the settings,
//! the current keys, the peer table (each peer's claim on "the one live
//! connection", its wake-up for the dialer, its status) and the counters.
//!
//! Everything here is touched once per connection attempt or connection
//! event, never per frame: a `Mutex` per peer for the status, an atomic
//! claim, atomics for the counters.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::SystemTime,
};

use bus_core::CloseReason;
use bus_replica::{HandshakeConfig, ReplicaConfig, dials};
use bus_tcp::TcpConnectorConfig;
use event_listener::Event;

use crate::{
    error::{FailureReason, HandshakeError},
    limits::LAST_ERROR_MAX_BYTES,
    status::{LinkDirection, MeshStatus, PeerState, PeerStatus},
    tls::MeshTls,
};

/// What the whole node shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ReplicaConfig,
    handshake: RwLock<Arc<HandshakeConfig>>,
    pub(crate) tls: Option<MeshTls>,
    pub(crate) connector: TcpConnectorConfig,
    pub(crate) peers: Vec<PeerSlot>,
    /// Index into `peers` by replica id.
    index: [Option<u8>; 256],
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    dials: AtomicU64,
    reconnects: AtomicU64,
    handshakes: AtomicU64,
    failures: [AtomicU64; FailureReason::ALL.len()],
    frames_rejected: AtomicU64,
}

/// One configured peer.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    pub(crate) id: u8,
    pub(crate) addr: SocketAddr,
    pub(crate) direction: LinkDirection,
    /// Set while an authenticated connection with this peer is registered
    /// (from just before `adopt_replica` until its loss is reported), so
    /// there is at most one node-wide, whichever shard owns it.
    claimed: AtomicBool,
    /// Notified when the claim is released.
    released: Event,
    record: Mutex<Record>,
}

#[derive(Debug)]
struct Record {
    state: PeerState,
    since: SystemTime,
    shard: Option<u16>,
    last_error: Option<String>,
    dials: u64,
    connections: u64,
}

impl Record {
    fn enter(&mut self, state: PeerState) {
        if self.state != state {
            self.state = state;
            self.since = SystemTime::now();
        }
    }

    fn error(&mut self, error: String) {
        self.last_error = Some(truncate(error));
    }
}

/// `text` cut to [`LAST_ERROR_MAX_BYTES`] on a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > LAST_ERROR_MAX_BYTES {
        let mut end = LAST_ERROR_MAX_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Shared {
    pub(crate) fn new(
        config: ReplicaConfig,
        handshake: HandshakeConfig,
        tls: Option<MeshTls>,
        connector: TcpConnectorConfig,
    ) -> Self {
        let mut index = [None; 256];
        let peers: Vec<PeerSlot> = config
            .peers
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                index[usize::from(peer.id)] = u8::try_from(i).ok();
                PeerSlot {
                    id: peer.id,
                    addr: peer.addr,
                    direction: if dials(config.self_id, peer.id) {
                        LinkDirection::Dial
                    } else {
                        LinkDirection::Accept
                    },
                    claimed: AtomicBool::new(false),
                    released: Event::new(),
                    record: Mutex::new(Record {
                        state: PeerState::Connecting,
                        since: SystemTime::now(),
                        shard: None,
                        last_error: None,
                        dials: 0,
                        connections: 0,
                    }),
                }
            })
            .collect();
        Self {
            config,
            handshake: RwLock::new(Arc::new(handshake)),
            tls,
            connector,
            peers,
            index,
            counters: Counters::default(),
        }
    }

    /// The settings of new handshakes (the keys current now).
    pub(crate) fn handshake_config(&self) -> Arc<HandshakeConfig> {
        self.handshake
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// New handshakes use `config` from now on.
    pub(crate) fn set_handshake_config(&self, config: HandshakeConfig) {
        *self
            .handshake
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }

    pub(crate) fn peer(&self, id: u8) -> Option<&PeerSlot> {
        let i = self.index[usize::from(id)]?;
        self.peers.get(usize::from(i))
    }

    /// Whether an authenticated connection with `id` is registered
    /// (the acceptor's status-3 check).
    pub(crate) fn is_live(&self, id: u8) -> bool {
        self.peer(id)
            .is_some_and(|p| p.claimed.load(Ordering::Acquire))
    }

    /// Claims the one live connection with `id`; `false` when another
    /// connection holds it (or `id` is no peer).
    pub(crate) fn claim(&self, id: u8) -> bool {
        self.peer(id).is_some_and(|p| {
            p.claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Releases `id`'s claim and wakes its dialer.
    pub(crate) fn release(&self, id: u8) {
        if let Some(p) = self.peer(id) {
            p.claimed.store(false, Ordering::Release);
            p.released.notify(usize::MAX);
        }
    }

    /// A dial to `id` starts; `redial` when it follows a failure or a loss.
    pub(crate) fn dialing(&self, id: u8, redial: bool) {
        self.counters.dials.fetch_add(1, Ordering::Relaxed);
        if redial {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.with_record(id, |r| {
            r.dials += 1;
            r.enter(PeerState::Connecting);
        });
    }

    /// A handshake (either direction) failed with `error`; `peer` is the
    /// id it was with, when known and configured.
    pub(crate) fn handshake_failed(&self, peer: Option<u8>, error: &HandshakeError) {
        if matches!(error, HandshakeError::ShuttingDown) {
            return;
        }
        self.counters.failures[error.reason().index()].fetch_add(1, Ordering::Relaxed);
        let Some(id) = peer else { return };
        let direction = self.direction(id);
        self.with_record(id, |r| {
            r.error(error.to_string());
            // A refused extra connection does not change a live link.
            if r.state != PeerState::Connected {
                r.enter(match direction {
                    _ if error.is_refusal() => PeerState::Refused,
                    Some(LinkDirection::Dial) => PeerState::Backoff,
                    _ => PeerState::Connecting,
                });
            }
        });
    }

    /// A handshake authenticated and its connection was handed to the bus.
    pub(crate) fn handshake_done(&self) {
        self.counters.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// The dialer waits before dialing `id` again (after a failure or a
    /// loss); a refusal keeps showing as such.
    pub(crate) fn backing_off(&self, id: u8) {
        self.with_record(id, |r| {
            if r.state != PeerState::Refused && r.state != PeerState::Connected {
                r.enter(PeerState::Backoff);
            }
        });
    }

    /// `id`'s connection is registered on `shard`.
    pub(crate) fn connected(&self, id: u8, shard: u16) {
        self.with_record(id, |r| {
            r.connections += 1;
            r.shard = Some(shard);
            r.enter(PeerState::Connected);
        });
    }

    /// `id`'s connection ended for `reason`.
    pub(crate) fn lost(&self, id: u8, reason: &CloseReason) {
        let direction = self.direction(id);
        self.with_record(id, |r| {
            r.shard = None;
            r.error(format!("connection lost: {}", describe(reason)));
            r.enter(match direction {
                Some(LinkDirection::Dial) => PeerState::Backoff,
                _ => PeerState::Connecting,
            });
        });
        self.release(id);
    }

    /// A frame from `id` carried another cluster or replica id.
    pub(crate) fn frame_rejected(&self) {
        self.counters
            .frames_rejected
            .fetch_add(1, Ordering::Relaxed);
    }

    fn direction(&self, id: u8) -> Option<LinkDirection> {
        self.peer(id).map(|p| p.direction)
    }

    fn with_record(&self, id: u8, f: impl FnOnce(&mut Record)) {
        if let Some(p) = self.peer(id) {
            f(&mut p.record.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Everything, now.
    pub(crate) fn status(&self) -> MeshStatus {
        let c = &self.counters;
        MeshStatus {
            self_id: self.config.self_id,
            cluster: self.config.cluster,
            tls: self.tls.is_some(),
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let r = p.record.lock().unwrap_or_else(PoisonError::into_inner);
                    PeerStatus {
                        id: p.id,
                        addr: p.addr,
                        direction: p.direction,
                        state: r.state,
                        since: r.since,
                        shard: r.shard,
                        last_error: r.last_error.clone(),
                        dials: r.dials,
                        connections: r.connections,
                    }
                })
                .collect(),
            dials: c.dials.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            handshakes: c.handshakes.load(Ordering::Relaxed),
            handshake_failures: FailureReason::ALL
                .iter()
                .zip(&c.failures)
                .map(|(reason, n)| (*reason, n.load(Ordering::Relaxed)))
                .collect(),
            frames_rejected: c.frames_rejected.load(Ordering::Relaxed),
        }
    }
}

impl PeerSlot {
    /// Waits until this peer's claim is released (its connection is lost).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is consumed.
    pub(crate) async fn released(&self) {
        loop {
            if !self.claimed.load(Ordering::Acquire) {
                return;
            }
            let listener = self.released.listen();
            // A release between the check and `listen` would be missed.
            if !self.claimed.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

/// A close reason as an operator reads it.
pub(crate) fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::PeerClosed => "the peer closed the connection".into(),
        CloseReason::PeerGoodbye(goodbye) if goodbye.detail.is_empty() => {
            format!("the peer said Goodbye({})", goodbye.reason)
        }
        CloseReason::PeerGoodbye(goodbye) => {
            format!(
                "the peer said Goodbye({}): {}",
                goodbye.reason, goodbye.detail
            )
        }
        CloseReason::ProtocolViolation(reason) => {
            format!("the peer broke the protocol; we sent Goodbye({reason})")
        }
        CloseReason::Closed(reason) => format!("closed here with Goodbye({reason})"),
        CloseReason::Io(kind) => format!("socket error: {kind}"),
        other => format!("{other:?}"),
    }
}
