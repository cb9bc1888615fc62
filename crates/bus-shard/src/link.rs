//! What crosses threads: the messages a shard receives, and each shard's
//! cross-thread face (`Link`: the sending ends of its channels and a few
//! atomic counters).
//!
//! Every channel is bounded and every send into one is a `try_send`: no
//! thread ever waits on another shard's channel, so a stuck shard can stall
//! only itself.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use async_channel::{Receiver, Sender, TrySendError};
use bus_core::{ClientId, Frame, FrameMut, Peer, Reply, RequestError, SendError};

use crate::{
    config::{CONTROL_QUEUE_CAPACITY, HANDOFF_QUEUE_CAPACITY},
    stats::ShardStats,
};

/// A frame for the shard that owns its destination.
#[derive(Debug)]
pub(crate) enum Message {
    /// Queue `Frame` for the client.
    ToClient(ClientId, Frame),
    /// Queue `Frame` for every client of the shard.
    Broadcast(Frame),
    /// Queue `Frame` for the replica connection this shard owns.
    ToReplica(u8, Frame),
    /// Send the frame as a request (spec §9) to the client (or the
    /// replica link this shard owns) and hand its outcome to `reply`.
    Request {
        to: Peer,
        frame: FrameMut,
        timeout: Duration,
        reply: Sender<Result<Frame, RequestError>>,
    },
}

/// A socket accepted on shard 0 for the shard that will own it, before any
/// transport handshake.
#[derive(Debug)]
pub(crate) struct Handoff {
    /// A duplicate of the accepted socket (close-on-exec); shard 0 closed
    /// its own descriptor.
    pub(crate) stream: std::net::TcpStream,
    /// Which delegated listener accepted it (index into the installers).
    pub(crate) listener: usize,
    /// Counts the connection as pending on the target until its handshake
    /// ends, however it ends.
    pub(crate) pending: PendingGuard,
    /// Its admission slots (none for a listener that is not admitted:
    /// the replica plane), given back when it ends.
    pub(crate) admitted: Option<bus_core::Admitted>,
}

/// Requests from the [`Shards`](crate::Shards) handle.
#[derive(Debug)]
pub(crate) enum Control {
    /// Reply with a stats snapshot.
    Stats(std::sync::mpsc::SyncSender<ShardStats>),
    /// Reply with a snapshot of every live connection.
    Connections(std::sync::mpsc::SyncSender<Vec<bus_core::ConnectionSnapshot>>),
}

/// Counters one shard shares with the others. Touched once per connection
/// (placement) or once per refused send, never per delivered frame.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Connections handed to this shard whose handshake has not ended.
    pub(crate) pending: AtomicUsize,
    /// Client connections registered on this shard.
    pub(crate) live: AtomicUsize,
    /// Sends refused because this shard's inbox was full.
    pub(crate) inbox_full: AtomicU64,
    /// The shard's last counters, set once it has stopped: what a
    /// [`Monitor`](crate::Monitor) reports for it while other shards are
    /// still in their shutdown grace.
    pub(crate) last_stats: std::sync::Mutex<Option<crate::stats::ShardStats>>,
}

impl Shared {
    /// Connections this shard has or is about to have.
    pub(crate) fn load(&self) -> usize {
        self.pending.load(Relaxed) + self.live.load(Relaxed)
    }
}

/// Keeps one connection counted in [`Shared::pending`] while it lives.
#[derive(Debug)]
pub(crate) struct PendingGuard(Arc<Shared>);

impl PendingGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.pending.fetch_add(1, Relaxed);
        Self(shared.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Relaxed);
    }
}

/// The sending side of one shard, shared by every thread.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) inbox: Sender<Message>,
    pub(crate) handoff: Sender<Handoff>,
    pub(crate) control: Sender<Control>,
    pub(crate) stop: Sender<Duration>,
    pub(crate) shared: Arc<Shared>,
}

/// The receiving side of one shard, owned by its thread. Pinned once, so
/// each receiver keeps its wait registration across polls as a `Stream`.
#[derive(Debug)]
pub(crate) struct Mailbox {
    pub(crate) inbox: Pin<Box<Receiver<Message>>>,
    pub(crate) handoff: Pin<Box<Receiver<Handoff>>>,
    pub(crate) control: Pin<Box<Receiver<Control>>>,
    pub(crate) stop: Pin<Box<Receiver<Duration>>>,
}

/// A link and its mailbox, with every channel bounded.
pub(crate) fn channel(inbox_capacity_frames: usize) -> (Link, Mailbox) {
    let (inbox_tx, inbox_rx) = async_channel::bounded(inbox_capacity_frames);
    let (handoff_tx, handoff_rx) = async_channel::bounded(HANDOFF_QUEUE_CAPACITY);
    let (control_tx, control_rx) = async_channel::bounded(CONTROL_QUEUE_CAPACITY);
    // One stop request is all a shard needs; later ones find it full.
    let (stop_tx, stop_rx) = async_channel::bounded(1);
    (
        Link {
            inbox: inbox_tx,
            handoff: handoff_tx,
            control: control_tx,
            stop: stop_tx,
            shared: Arc::default(),
        },
        Mailbox {
            inbox: Box::pin(inbox_rx),
            handoff: Box::pin(handoff_rx),
            control: Box::pin(control_rx),
            stop: Box::pin(stop_rx),
        },
    )
}

impl Link {
    /// Pushes `message` into the inbox without waiting.
    pub(crate) fn post(&self, message: Message) -> Result<(), SendError> {
        match self.inbox.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.shared.inbox_full.fetch_add(1, Relaxed);
                Err(SendError::InboxFull)
            }
            Err(TrySendError::Closed(_)) => Err(SendError::ShuttingDown),
        }
    }

    /// Asks the shard to shut down within `grace`; a second request is a
    /// no-op.
    pub(crate) fn request_stop(&self, grace: Duration) {
        let _ = self.stop.try_send(grace);
    }
}

/// Every shard's link, indexed by shard.
pub(crate) type Links = Arc<[Link]>;

/// Which shard owns the live connection of each replica id, node-wide:
/// written when a replica connection is registered or lost (once per
/// connection), read by sends to replicas on other shards (one atomic load).
#[derive(Debug)]
pub(crate) struct ReplicaOwners([AtomicU32; 256]);

impl Default for ReplicaOwners {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU32::new(NO_OWNER)))
    }
}

/// An empty slot of [`ReplicaOwners`] (shard indices fit in 16 bits).
const NO_OWNER: u32 = u32::MAX;

impl ReplicaOwners {
    /// The shard that owns replica `id`'s connection, if one is live.
    pub(crate) fn owner(&self, id: u8) -> Option<u16> {
        u16::try_from(self.0[usize::from(id)].load(Relaxed)).ok()
    }

    /// Replica `id`'s connection now lives on `shard`.
    pub(crate) fn connected(&self, id: u8, shard: u16) {
        self.0[usize::from(id)].store(u32::from(shard), Relaxed);
    }

    /// Replica `id`'s connection on `shard` is gone (a newer one elsewhere
    /// keeps its slot).
    pub(crate) fn lost(&self, id: u8, shard: u16) {
        let _ =
            self.0[usize::from(id)].compare_exchange(u32::from(shard), NO_OWNER, Relaxed, Relaxed);
    }
}

/// Sends `frame` to replica `id` through the inbox of the shard that owns
/// its connection.
pub(crate) fn forward_to_replica(
    links: &Links,
    owners: &ReplicaOwners,
    id: u8,
    frame: Frame,
) -> Result<(), SendError> {
    let owner = owners.owner(id).ok_or(SendError::NotConnected)?;
    links
        .get(usize::from(owner))
        .ok_or(SendError::NotConnected)?
        .post(Message::ToReplica(id, frame))
}

/// Sends `frame` as a request to client `id` through the owning shard's
/// inbox; the owner issues the request on the connection and sends the
/// outcome back. The reply future needs no runtime of its own (the owner
/// keeps the timeout), so it can be awaited from any thread.
pub(crate) fn forward_request(
    links: &Links,
    owners: &ReplicaOwners,
    to: Peer,
    frame: FrameMut,
    timeout: Duration,
) -> Result<ForwardedReply, RequestError> {
    let not_connected = RequestError::Send(SendError::NotConnected);
    let shard = match to {
        Peer::Client(id) => id.shard(),
        Peer::Replica(id) => owners.owner(id).ok_or(not_connected.clone())?,
    };
    let link = links.get(usize::from(shard)).ok_or(not_connected)?;
    let (reply, outcome) = async_channel::bounded(1);
    link.post(Message::Request {
        to,
        frame,
        timeout,
        reply,
    })
    .map_err(RequestError::Send)?;
    Ok(ForwardedReply { outcome })
}

/// The reply to a request forwarded to another shard (see
/// [`Shards::request_client`](crate::Shards::request_client)); `Send`, so
/// any thread may await it.
#[derive(Debug)]
#[must_use = "dropping the reply forgets the request"]
pub struct ForwardedReply {
    outcome: Receiver<Result<Frame, RequestError>>,
}

impl ForwardedReply {
    /// Waits for the outcome. A shard that stopped without answering
    /// reports the connection as gone.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it forgets the request (a late reply is
    /// dropped and counted on the owning shard).
    pub async fn outcome(self) -> Result<Frame, RequestError> {
        self.outcome
            .recv()
            .await
            .unwrap_or(Err(RequestError::Disconnected {
                reason: bus_core::CloseReason::Cancelled,
            }))
    }

    /// As a [`Reply`], for a bus's forwarder.
    pub(crate) fn into_reply(self) -> Reply {
        Reply::new(self.outcome())
    }
}

/// Sends `frame` to client `id` through the owning shard's inbox.
pub(crate) fn forward(links: &Links, id: ClientId, frame: Frame) -> Result<(), SendError> {
    links
        .get(usize::from(id.shard()))
        .ok_or(SendError::NotConnected)?
        .post(Message::ToClient(id, frame))
}
