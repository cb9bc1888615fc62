//! The per-shard bus: registry of live connections, the send paths, the
//! application handler, and the bus's lifecycle.
//!
//! One `Bus` lives on one compio runtime (one shard) and is `!Send`. Sends
//! never await: they find the connection's queue and push, or return a
//! [`SendError`]. Reading, writing and closing happen on each connection's
//! own task (see `driver`).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    rc::Rc,
    time::{Duration, Instant},
};

use compio::runtime::time;
use futures_util::FutureExt;

use crate::{
    admission::{Admitted, Gate},
    budget::InboundBudget,
    buf::{Frame, FrameMut},
    config::BusConfig,
    conn::Conn,
    driver,
    error::{Error, RequestError, SendError},
    framing::DecodeLimits,
    goodbye::GoodbyeReason,
    id::{ClientId, IdHash, IdMinter, Peer},
    limits::SHUTDOWN_SETTLE,
    link::{Link, LinkConfig, LinkCounters, Role},
    state::CloseReason,
    stats::{BusCounters, BusStats, ConnectionStats, bump},
    tasks::TaskSet,
    transport::{Connection, ConnectionInfo, FrameReader, FrameWriter, Listener, ReadSettings},
};

/// The application's side of the bus.
///
/// Called on the shard's thread, never concurrently. A handler must not
/// block; to do async work, spawn a task. Do not keep the `&Bus` beyond the
/// call (storing a `Bus` clone inside the handler makes a reference cycle).
pub trait Handler: 'static {
    /// A frame with an application command (16–255) arrived. Bus commands
    /// never reach this method. For a client, the header's `client` field
    /// has been stamped with the connection's id (spec §5); a sealed frame
    /// is re-sealed after stamping, so it still verifies.
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame);

    /// A connection finished its handshake and is registered.
    fn on_connected(&self, bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        let _ = (bus, peer, info);
    }

    /// A registered connection ended. Called exactly once per connection,
    /// after its registry slot is gone.
    fn on_connection_lost(&self, bus: &Bus, peer: Peer, reason: &CloseReason) {
        let _ = (bus, peer, reason);
    }

    /// The bus is shutting down: flush the application's durable state.
    ///
    /// [`Bus::shutdown`] calls this after it stopped accepting and before it
    /// closes any connection, and awaits the returned future, bounded by
    /// [`BusConfig::shutdown_flush_timeout`]. Sends still work while it
    /// runs, so clients can still be told; what they are sent goes out
    /// before their `Goodbye(ShuttingDown)`. Its error, its panic or its
    /// timeout is reported in the [`ShutdownReport`] (and logged). The
    /// default does nothing.
    fn on_shutdown(&self, bus: &Bus) -> ShutdownFlush {
        let _ = bus;
        ShutdownFlush::done()
    }
}

/// An application's flush at shutdown (see [`Handler::on_shutdown`]).
pub struct ShutdownFlush {
    flush: Option<FlushFuture>,
}

/// The future of a flush.
type FlushFuture = Pin<Box<dyn Future<Output = Result<(), FlushError>>>>;

/// Why an application's flush failed.
pub type FlushError = Box<dyn std::error::Error>;

impl ShutdownFlush {
    /// Nothing to flush.
    pub fn done() -> Self {
        Self { flush: None }
    }

    /// A flush the bus awaits.
    pub fn new(flush: impl Future<Output = Result<(), FlushError>> + 'static) -> Self {
        Self {
            flush: Some(Box::pin(flush)),
        }
    }
}

impl std::fmt::Debug for ShutdownFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownFlush")
            .field("pending", &self.flush.is_some())
            .finish()
    }
}

/// How the application's flush at shutdown went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushOutcome {
    /// It completed (or there was nothing to flush).
    #[default]
    Done,
    /// It returned an error (its message).
    Failed(String),
    /// It did not finish within `shutdown_flush_timeout` and was dropped.
    TimedOut(Duration),
    /// It panicked.
    Panicked,
}

impl FlushOutcome {
    /// Whether the flush completed.
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }
}

impl<F: Fn(&Bus, Peer, Frame) + 'static> Handler for F {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        self(bus, from, frame);
    }
}

/// Where sends for client ids owned by other shards go.
///
/// The multi-shard layer implements this and installs it with
/// [`Bus::set_forwarder`]; a single-shard bus has none, and a send to a
/// foreign id is `NotConnected`. Implementations must not await or block:
/// they push into the owning shard's bounded inbox or return an error.
pub trait Forwarder: 'static {
    /// Forwards a send to the shard that owns `id`.
    fn send_to_client(&self, id: ClientId, frame: Frame) -> Result<(), SendError>;

    /// Forwards a broadcast to every other shard; returns how many shards
    /// accepted it.
    fn broadcast(&self, frame: &Frame) -> usize;

    /// Forwards a send to the shard that owns the connection of replica
    /// `replica`, if another shard does.
    fn send_to_replica(&self, replica: u8, frame: Frame) -> Result<(), SendError> {
        let _ = (replica, frame);
        Err(SendError::NotConnected)
    }

    /// Forwards a request (spec §9) to the shard that owns `to`; the reply
    /// comes back through the returned future. Must not block: the request
    /// is queued into the owner's inbox or refused at once.
    fn request(&self, to: Peer, frame: FrameMut, timeout: Duration) -> Result<Reply, RequestError> {
        let _ = (to, frame, timeout);
        Err(RequestError::Send(SendError::NotConnected))
    }
}

/// The reply to a request sent to a connection (spec §9): completes with the
/// frame that carries the request's id, [`RequestError::Timeout`], or
/// [`RequestError::Disconnected`] as soon as the connection closes.
///
/// # Cancel safety
/// Dropping it forgets the request: a reply that arrives later is dropped
/// and counted, never delivered to the handler.
#[must_use = "dropping the reply forgets the request"]
pub struct Reply {
    inner: Pin<Box<dyn Future<Output = Result<Frame, RequestError>>>>,
}

impl Reply {
    /// Wraps the future of a reply (a [`Forwarder`] builds one for a
    /// request it forwarded).
    pub fn new(future: impl Future<Output = Result<Frame, RequestError>> + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl Future for Reply {
    type Output = Result<Frame, RequestError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

/// Why [`Bus::adopt_replica`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptError {
    /// The bus is shutting down.
    #[error("the bus is shutting down")]
    ShuttingDown,
    /// A live connection to this replica exists already.
    #[error("replica {0} is connected already")]
    Duplicate(u8),
}

/// Which end of a replica link this node is ([`Bus::adopt_replica_as`]).
///
/// Both ends of a replica link are nodes, and either may send the other
/// requests (spec §9). So that their request ids never collide, the
/// accepting end issues ids with bit 63 set, as a node does towards a
/// client, and the dialing end with bit 63 clear, as a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplicaEnd {
    /// This node dialed the replica.
    Dialer,
    /// The replica dialed this node.
    Acceptor,
}

/// Lifecycle of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusState {
    Running,
    /// Shutdown started: nothing new is accepted, the application flushes;
    /// sends still work.
    Flushing,
    /// Connections are closing; sends fail.
    ShuttingDown,
    Stopped,
}

/// What a broadcast reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Local clients the frame was queued to.
    pub queued: usize,
    /// Local clients whose queue was full.
    pub queue_full: usize,
    /// Other shards the broadcast was forwarded to.
    pub shards_forwarded: usize,
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How the application's flush ([`Handler::on_shutdown`]) went.
    pub flush: FlushOutcome,
    /// Goodbyes written to peers during the shutdown (each one's write
    /// completed; a peer that never read it is not counted).
    pub goodbyes_written: u64,
    /// Connections that were open when shutdown started.
    pub connections: usize,
    /// Connection tasks cancelled because they outlived the grace period.
    pub cancelled: usize,
    /// Tasks still live at the end (0 unless compio failed to cancel).
    pub tasks_left: usize,
    /// How long shutdown took.
    pub elapsed: Duration,
}

/// A connection's metadata and counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionSnapshot {
    /// Who the connection is.
    pub peer: Peer,
    /// Transport, peer address, connected-since, identity.
    pub info: ConnectionInfo,
    /// Frames and bytes in and out, queue depth.
    pub stats: ConnectionStats,
    /// Whether the connection is closing.
    pub closing: bool,
}

impl Inner {
    /// Adds an ended connection's traffic to the bus's totals.
    fn retire(&self, link: &Link) {
        let (c, l): (&BusCounters, &LinkCounters) = (&self.counters, &link.counters);
        for (total, n) in [
            (&c.frames_in, &l.frames_in),
            (&c.bytes_in, &l.bytes_in),
            (&c.frames_out, &l.frames_out),
            (&c.bytes_out, &l.bytes_out),
            (&c.write_batches, &l.write_batches),
        ] {
            bump(total, n.get());
        }
        let mut requests = self.counters.requests.get();
        requests.add(&link.request_stats());
        self.counters.requests.set(requests);
    }

    /// How connections of this bus read (replica connections may require
    /// sealed frames).
    pub(crate) fn read_settings(&self, replica: bool) -> ReadSettings {
        let config = &self.config;
        let limits = DecodeLimits {
            max_message_size_bytes: config.max_message_size_bytes,
            require_sealed: if replica {
                config.require_sealed_replicas
            } else {
                config.require_sealed_clients
            },
        };
        ReadSettings::new(limits)
            .read_buffer(config.read_buffer_bytes)
            .budget(self.budget.clone())
    }

    /// A connection's link configuration; `client` is the id stamped into
    /// a client's frames; `role` decides the request ids this side issues.
    fn link_config(&self, client: Option<ClientId>, role: Role) -> LinkConfig {
        let config = &self.config;
        let mut link = LinkConfig::new(role);
        link.queue_capacity_frames = config.queue_capacity_frames;
        link.queue_capacity_bytes = config.queue_capacity_bytes;
        link.slow_consumer = config.slow_consumer;
        link.max_batch_frames = config.max_batch_frames;
        link.close_grace = config.close_grace;
        link.close_peer_timeout = config.close_peer_timeout;
        if client.is_some() {
            link.idle_timeout = config.idle_timeout;
            link.first_frame_grace = Some(config.handshake_grace);
        } else {
            // Replica connections are authenticated before they get here;
            // they keep themselves alive and detect a silent link.
            link.idle_timeout = config.replica_idle_timeout;
            link.keepalive = config.replica_keepalive;
        }
        link.stamp_client = client.map(ClientId::as_raw);
        link.max_outstanding_requests = config.max_outstanding_requests;
        link
    }
}

pub(crate) struct Inner {
    pub(crate) config: BusConfig,
    pub(crate) handler: Rc<dyn Handler>,
    state: Cell<BusState>,
    minter: IdMinter,
    clients: RefCell<HashMap<ClientId, Rc<Conn>, IdHash>>,
    replicas: RefCell<HashMap<u8, Rc<Conn>>>,
    budget: InboundBudget,
    forwarder: RefCell<Option<Rc<dyn Forwarder>>>,
    /// Accept loops and connections still in their handshake.
    pub(crate) intake: TaskSet,
    /// Registered connections.
    pub(crate) connections: TaskSet,
    pub(crate) counters: BusCounters,
}

/// The per-shard message bus. Cheap to clone (a reference count); all clones
/// are the same bus.
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Rc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("shard", &self.inner.config.shard)
            .field("state", &self.inner.state.get())
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus for this shard. Must be called inside a compio runtime before
    /// any connection is served.
    pub fn new(config: BusConfig, handler: impl Handler) -> Result<Self, Error> {
        let budget = InboundBudget::new(config.inbound_budget_bytes);
        Self::with_budget(config, handler, budget)
    }

    /// A bus for this shard whose partly received large frames are
    /// reserved from `budget`, shared with other shards of the node (see
    /// [`InboundBudget`]). `config.inbound_budget_bytes` is not used.
    pub fn with_budget(
        config: BusConfig,
        handler: impl Handler,
        budget: InboundBudget,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            inner: Rc::new(Inner {
                minter: IdMinter::new(config.shard),
                config,
                handler: Rc::new(handler),
                state: Cell::new(BusState::Running),
                clients: RefCell::default(),
                replicas: RefCell::default(),
                budget,
                forwarder: RefCell::default(),
                intake: TaskSet::default(),
                connections: TaskSet::default(),
                counters: BusCounters::default(),
            }),
        })
    }

    /// The configuration this bus runs with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// This bus's shard index.
    pub fn shard(&self) -> u16 {
        self.inner.config.shard
    }

    /// Whether [`Bus::shutdown`] has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.state.get() != BusState::Running
    }

    /// Whether sends are refused: shutdown is past the application's flush.
    fn refuses_sends(&self) -> bool {
        matches!(
            self.inner.state.get(),
            BusState::ShuttingDown | BusState::Stopped
        )
    }

    /// Installs the multi-shard forwarder (see [`Forwarder`]).
    pub fn set_forwarder(&self, forwarder: Rc<dyn Forwarder>) {
        *self.inner.forwarder.borrow_mut() = Some(forwarder);
    }

    /// Accepts client connections from `listener` on a tracked task until
    /// shutdown. Each accepted connection's handshake runs on its own task,
    /// bounded by `handshake_grace`.
    pub fn serve<L: Listener>(&self, listener: L) -> Result<(), Error> {
        self.ensure_running()?;
        self.inner
            .intake
            .spawn(driver::accept_loop(self.clone(), listener));
        Ok(())
    }

    /// As [`Bus::serve`], with every accepted connection admitted through
    /// `gate` first: beyond its caps a connection is dropped (closed) at
    /// once, before its handshake, counted in the gate and logged at a
    /// bounded rate. An admitted connection holds its slot until it ends.
    pub fn serve_admitted<L: Listener>(&self, listener: L, gate: Gate) -> Result<(), Error> {
        self.ensure_running()?;
        self.inner
            .intake
            .spawn(driver::accept_loop_admitted(self.clone(), listener, gate));
        Ok(())
    }

    /// Takes over a client connection accepted elsewhere (for example on
    /// another shard, handed over as a file descriptor).
    pub fn install<C: Connection>(&self, connection: C) -> Result<(), Error> {
        self.ensure_running()?;
        self.inner
            .intake
            .spawn(driver::handshake(self.clone(), connection, None, None));
        Ok(())
    }

    /// As [`Bus::install`], for a connection admitted elsewhere (shard 0's
    /// accept loop): its handshake slot goes back when the handshake ends,
    /// its connection slot when the connection ends.
    pub fn install_admitted<C: Connection>(
        &self,
        connection: C,
        admitted: Admitted,
    ) -> Result<(), Error> {
        self.ensure_running()?;
        self.inner.intake.spawn(driver::handshake(
            self.clone(),
            connection,
            None,
            Some(admitted),
        ));
        Ok(())
    }

    /// Takes over a connection to or from replica `replica` (already
    /// authenticated by the caller; the replica handshake of spec §4 is the
    /// replica layer's job). Frames from it must be sealed unless
    /// `require_sealed_replicas` is off.
    pub fn install_replica<C: Connection>(&self, connection: C, replica: u8) -> Result<(), Error> {
        self.ensure_running()?;
        self.inner.intake.spawn(driver::handshake(
            self.clone(),
            connection,
            Some(replica),
            None,
        ));
        Ok(())
    }

    fn ensure_running(&self) -> Result<(), Error> {
        if self.is_shutting_down() {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Queues `frame` for client `id`. Never waits.
    ///
    /// A client on another shard is reached through the installed
    /// [`Forwarder`].
    pub fn send_to_client(&self, id: ClientId, frame: Frame) -> Result<(), SendError> {
        if self.refuses_sends() {
            return Err(SendError::ShuttingDown);
        }
        if id.shard() != self.inner.config.shard {
            let forwarder = self.inner.forwarder.borrow().clone();
            return forwarder.map_or(Err(SendError::NotConnected), |f| {
                f.send_to_client(id, frame)
            });
        }
        let clients = self.inner.clients.borrow();
        let conn = clients.get(&id).ok_or(SendError::NotConnected)?;
        self.enqueue(conn, frame)
    }

    /// Queues `frame` for replica `replica`. Never waits.
    pub fn send_to_replica(&self, replica: u8, frame: Frame) -> Result<(), SendError> {
        if self.refuses_sends() {
            return Err(SendError::ShuttingDown);
        }
        let conn = self.inner.replicas.borrow().get(&replica).cloned();
        if let Some(conn) = conn {
            return self.enqueue(&conn, frame);
        }
        // Another shard may own it.
        let forwarder = self.inner.forwarder.borrow().clone();
        forwarder.map_or(Err(SendError::NotConnected), |f| {
            f.send_to_replica(replica, frame)
        })
    }

    /// How this bus reads replica connections: the receiver's rules (with
    /// `require_sealed_replicas`), the read buffer and the inbound budget.
    /// For a replica layer that establishes connections itself before
    /// [`Bus::adopt_replica`].
    pub fn replica_read_settings(&self) -> ReadSettings {
        self.inner.read_settings(true)
    }

    /// Spawns `task` tracked with the bus's accept loops and handshakes: it
    /// is cancelled when [`Bus::shutdown`] starts, before connections
    /// close. For work that makes connections outside the bus (a replica
    /// layer's dialers and handshakes). Fails once shutdown has started.
    pub fn spawn_handshake(&self, task: impl Future<Output = ()> + 'static) -> Result<(), Error> {
        self.ensure_running()?;
        self.inner.intake.spawn(task);
        Ok(())
    }

    /// Closes the connection to replica `replica` on purpose, as
    /// [`Bus::close_client`] does for a client.
    pub fn close_replica(
        &self,
        replica: u8,
        reason: GoodbyeReason,
        detail: &str,
    ) -> Result<(), SendError> {
        let conn = self
            .inner
            .replicas
            .borrow()
            .get(&replica)
            .cloned()
            .ok_or(SendError::NotConnected)?;
        if conn.link.close(reason, detail, CloseReason::Closed(reason)) {
            Ok(())
        } else {
            Err(SendError::NotConnected)
        }
    }

    /// Sends `frame` to client `id` as a request from the server (spec §9)
    /// and returns the future of its reply.
    ///
    /// The bus issues a fresh request id for that connection (bit 63 set),
    /// writes it into the header (re-sealing a sealed frame), and queues the
    /// frame before this returns; it never waits. It fails at once with the
    /// same errors as [`Bus::send_to_client`] (as
    /// [`RequestError::Send`]) or with [`RequestError::TooManyRequests`]
    /// when `max_outstanding_requests` are outstanding on the connection.
    /// The reply completes with the client's frame (which the handler never
    /// sees), [`RequestError::Timeout`] after `timeout`, or
    /// [`RequestError::Disconnected`] at once when the connection closes for
    /// any reason. A client on another shard is reached through the
    /// [`Forwarder`].
    pub fn request_client(
        &self,
        id: ClientId,
        frame: FrameMut,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        if self.refuses_sends() {
            return Err(RequestError::Send(SendError::ShuttingDown));
        }
        if id.shard() != self.inner.config.shard {
            let forwarder = self.inner.forwarder.borrow().clone();
            return forwarder.map_or(Err(RequestError::Send(SendError::NotConnected)), |f| {
                f.request(Peer::Client(id), frame, timeout)
            });
        }
        let conn = self.inner.clients.borrow().get(&id).cloned();
        let conn = conn.ok_or(RequestError::Send(SendError::NotConnected))?;
        self.request_on(&conn, frame, timeout)
    }

    /// Sends `frame` to replica `replica` as a request (spec §9), as
    /// [`Bus::request_client`] does for a client.
    pub fn request_replica(
        &self,
        replica: u8,
        frame: FrameMut,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        if self.refuses_sends() {
            return Err(RequestError::Send(SendError::ShuttingDown));
        }
        let conn = self.inner.replicas.borrow().get(&replica).cloned();
        if let Some(conn) = conn {
            return self.request_on(&conn, frame, timeout);
        }
        let forwarder = self.inner.forwarder.borrow().clone();
        forwarder.map_or(Err(RequestError::Send(SendError::NotConnected)), |f| {
            f.request(Peer::Replica(replica), frame, timeout)
        })
    }

    fn request_on(
        &self,
        conn: &Conn,
        frame: FrameMut,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        match conn.link.request(frame, timeout) {
            Ok(reply) => Ok(Reply::new(reply)),
            Err(err) => {
                if err == RequestError::Send(SendError::QueueFull) {
                    bump(&self.inner.counters.queue_full, 1);
                }
                Err(err)
            }
        }
    }

    /// Whether this bus has a live connection to replica `replica`.
    pub fn has_replica(&self, replica: u8) -> bool {
        self.inner.replicas.borrow().contains_key(&replica)
    }

    /// Takes over an established, authenticated connection to or from
    /// replica `replica` (the replica layer ran the transport handshake and
    /// spec §4's handshake on it). Unlike [`Bus::install_replica`] it never
    /// replaces a live connection: a second connection for the same replica
    /// is refused with [`AdoptError::Duplicate`] and the first keeps
    /// working. `started` is when the connection was accepted or dialed.
    ///
    /// The link issues request ids as the accepting end
    /// ([`ReplicaEnd::Acceptor`]); a dialed link should be adopted with
    /// [`Bus::adopt_replica_as`], so that requests both ways never collide.
    pub fn adopt_replica<R: FrameReader, W: FrameWriter>(
        &self,
        reader: R,
        writer: W,
        info: ConnectionInfo,
        replica: u8,
        started: Instant,
    ) -> Result<(), AdoptError> {
        self.adopt_replica_as(reader, writer, info, replica, ReplicaEnd::Acceptor, started)
    }

    /// As [`Bus::adopt_replica`], for the given end of the link (see
    /// [`ReplicaEnd`]).
    pub fn adopt_replica_as<R: FrameReader, W: FrameWriter>(
        &self,
        reader: R,
        writer: W,
        info: ConnectionInfo,
        replica: u8,
        end: ReplicaEnd,
        started: Instant,
    ) -> Result<(), AdoptError> {
        if self.is_shutting_down() {
            return Err(AdoptError::ShuttingDown);
        }
        if self.has_replica(replica) {
            return Err(AdoptError::Duplicate(replica));
        }
        let role = match end {
            ReplicaEnd::Dialer => Role::Client,
            ReplicaEnd::Acceptor => Role::Server,
        };
        let conn = self
            .register_as(Some(replica), role, info, started)
            .ok_or(AdoptError::ShuttingDown)?;
        self.inner
            .connections
            .spawn(driver::run(self.clone(), conn, reader, writer, None));
        Ok(())
    }

    /// Queues `frame` for every client on this shard and forwards it to the
    /// other shards. Every local queue shares the frame's one allocation.
    pub fn broadcast(&self, frame: &Frame) -> BroadcastReport {
        let mut report = self.broadcast_local(frame);
        if !self.is_shutting_down() {
            let forwarder = self.inner.forwarder.borrow().clone();
            report.shards_forwarded = forwarder.map_or(0, |f| f.broadcast(frame));
        }
        report
    }

    /// Queues `frame` for every client on this shard only.
    pub fn broadcast_local(&self, frame: &Frame) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        if self.is_shutting_down() {
            return report;
        }
        for conn in self.inner.clients.borrow().values() {
            match self.enqueue(conn, frame.clone()) {
                Ok(()) => report.queued += 1,
                Err(SendError::QueueFull) => report.queue_full += 1,
                Err(_) => {}
            }
        }
        report
    }

    fn enqueue(&self, conn: &Conn, frame: Frame) -> Result<(), SendError> {
        let result = conn.link.send(frame);
        if result == Err(SendError::QueueFull) {
            bump(&self.inner.counters.queue_full, 1);
        }
        result
    }

    /// Closes client `id` on purpose: its queued frames are written, then a
    /// `Goodbye(reason)` with `detail`, then the connection closes within
    /// `close_grace`.
    pub fn close_client(
        &self,
        id: ClientId,
        reason: GoodbyeReason,
        detail: &str,
    ) -> Result<(), SendError> {
        let conn = self
            .inner
            .clients
            .borrow()
            .get(&id)
            .cloned()
            .ok_or(SendError::NotConnected)?;
        if conn.link.close(reason, detail, CloseReason::Closed(reason)) {
            Ok(())
        } else {
            Err(SendError::NotConnected)
        }
    }

    /// Number of live connections (clients and replicas).
    pub fn connection_count(&self) -> usize {
        self.inner.clients.borrow().len() + self.inner.replicas.borrow().len()
    }

    /// Metadata and counters of client `id`, if it is connected here.
    pub fn client(&self, id: ClientId) -> Option<ConnectionSnapshot> {
        self.inner.clients.borrow().get(&id).map(|c| snapshot(c))
    }

    /// Metadata and counters of every live connection.
    pub fn connections(&self) -> Vec<ConnectionSnapshot> {
        let clients = self.inner.clients.borrow();
        let replicas = self.inner.replicas.borrow();
        clients
            .values()
            .chain(replicas.values())
            .map(|c| snapshot(c))
            .collect()
    }

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> BusStats {
        let c = &self.inner.counters;
        self.inner.intake.reap();
        self.inner.connections.reap();
        let mut traffic = [
            c.frames_in.get(),
            c.bytes_in.get(),
            c.frames_out.get(),
            c.bytes_out.get(),
            c.write_batches.get(),
        ];
        for conn in self.all_conns() {
            let live = conn.link.stats();
            let add = [
                live.frames_in,
                live.bytes_in,
                live.frames_out,
                live.bytes_out,
                live.write_batches,
            ];
            for (total, n) in traffic.iter_mut().zip(add) {
                *total = total.wrapping_add(n);
            }
        }
        let [frames_in, bytes_in, frames_out, bytes_out, write_batches] = traffic;
        let mut requests = c.requests.get();
        for conn in self.all_conns() {
            requests.add(&conn.link.request_stats());
        }
        BusStats {
            connections: self.connection_count(),
            connections_total: c.connections_total.get(),
            handshake_failures: c.handshake_failures.get(),
            frames_in,
            bytes_in,
            frames_out,
            bytes_out,
            write_batches,
            queue_full: c.queue_full.get(),
            frames_dropped: c.frames_dropped.get(),
            inbound_budget_available: self.inner.budget.available(),
            requests,
            handler_panics: c.handler_panics.get(),
            connection_panics: c.connection_panics.get(),
            goodbyes_sent: std::array::from_fn(|i| c.goodbyes_sent[i].get()),
            tasks: self.inner.intake.len() + self.inner.connections.len(),
        }
    }

    /// Shuts the bus down gracefully, within `grace`:
    ///
    /// 1. stops accepting and abandons handshakes in progress;
    /// 2. every connection writes the frames already queued, then
    ///    `Goodbye(ShuttingDown)`, then closes its side (each bounded by
    ///    `close_grace`), then waits up to `close_peer_timeout` for the peer
    ///    to close;
    /// 3. whatever is still running when `grace` runs out is cancelled.
    ///
    /// Afterwards no task of this bus is left. Sends fail with
    /// `ShuttingDown` from the moment this is called.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the bus shutting down with its
    /// connections closing on their own bounds; call again to wait and reap.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let started = Instant::now();
        let inner = &self.inner;
        let mut report = ShutdownReport::default();
        let goodbyes_before = inner.counters.goodbyes_total();
        if inner.state.get() == BusState::Running {
            inner.state.set(BusState::Flushing);
            // Accept loops and handshakes in progress end here, by design.
            inner.intake.cancel_all();
            report.flush = self.flush().await;
        }
        inner.intake.cancel_all();
        if inner.state.get() == BusState::Flushing {
            inner.state.set(BusState::ShuttingDown);
        }
        let deadline = Instant::now() + grace;
        let conns = self.all_conns();
        report.connections = conns.len();
        for conn in &conns {
            let reason = GoodbyeReason::ShuttingDown;
            conn.link
                .close(reason, "node shutting down", CloseReason::Closed(reason));
        }
        drop(conns);
        if !inner.connections.wait_idle(deadline).await {
            for conn in self.all_conns() {
                conn.link.core.borrow_mut().task_cancelling();
            }
            report.cancelled += inner.connections.cancel_all();
        }
        // Cancellation completes on compio's next turn; bound that wait too.
        let settle = Instant::now() + SHUTDOWN_SETTLE;
        inner.intake.wait_idle(settle).await;
        inner.connections.wait_idle(settle).await;
        report.tasks_left = inner.intake.len() + inner.connections.len();
        report.goodbyes_written = inner.counters.goodbyes_total() - goodbyes_before;
        inner.state.set(BusState::Stopped);
        report.elapsed = started.elapsed();
        report
    }

    /// Runs the application's flush, bounded by `shutdown_flush_timeout`.
    async fn flush(&self) -> FlushOutcome {
        let handler = self.inner.handler.clone();
        let Ok(flush) = catch_unwind(AssertUnwindSafe(|| handler.on_shutdown(self))) else {
            tracing::error!("the application's on_shutdown panicked");
            return FlushOutcome::Panicked;
        };
        let Some(flush) = flush.flush else {
            return FlushOutcome::Done;
        };
        let bound = self.inner.config.shutdown_flush_timeout;
        let outcome = time::timeout(bound, AssertUnwindSafe(flush).catch_unwind()).await;
        let outcome = match outcome {
            Ok(Ok(Ok(()))) => FlushOutcome::Done,
            Ok(Ok(Err(err))) => FlushOutcome::Failed(err.to_string()),
            Ok(Err(_)) => FlushOutcome::Panicked,
            Err(_) => FlushOutcome::TimedOut(bound),
        };
        if !outcome.is_done() {
            tracing::error!(
                ?outcome,
                "the application's shutdown flush did not complete"
            );
        }
        outcome
    }

    fn all_conns(&self) -> Vec<Rc<Conn>> {
        let clients = self.inner.clients.borrow();
        let replicas = self.inner.replicas.borrow();
        clients.values().chain(replicas.values()).cloned().collect()
    }

    /// Registers an established connection accepted at `accepted`; `None`
    /// when shutting down.
    pub(crate) fn register(
        &self,
        replica: Option<u8>,
        info: ConnectionInfo,
        accepted: Instant,
    ) -> Option<Rc<Conn>> {
        self.register_as(replica, Role::Server, info, accepted)
    }

    /// As [`Bus::register`], with the `role` a replica link issues its
    /// request ids as.
    fn register_as(
        &self,
        replica: Option<u8>,
        role: Role,
        info: ConnectionInfo,
        accepted: Instant,
    ) -> Option<Rc<Conn>> {
        if self.is_shutting_down() {
            return None;
        }
        let inner = &self.inner;
        let conn = match replica {
            None => {
                let id = inner.minter.mint();
                let conn = Rc::new(Conn {
                    peer: Peer::Client(id),
                    info,
                    link: Rc::new(Link::new(
                        &inner.link_config(Some(id), Role::Server),
                        accepted,
                    )),
                });
                inner.clients.borrow_mut().insert(id, conn.clone());
                conn
            }
            Some(r) => {
                let conn = Rc::new(Conn {
                    peer: Peer::Replica(r),
                    info,
                    link: Rc::new(Link::new(&inner.link_config(None, role), accepted)),
                });
                let old = inner.replicas.borrow_mut().insert(r, conn.clone());
                if let Some(old) = old {
                    // A newer connection to the same replica replaces the old one.
                    let reason = GoodbyeReason::Normal;
                    old.link
                        .close(reason, "replaced", CloseReason::Closed(reason));
                }
                conn
            }
        };
        bump(&inner.counters.connections_total, 1);
        Some(conn)
    }

    /// Evicts the connection's slot (if still its own) and fires the lost
    /// callback once. Runs from a drop guard, so it never panics.
    pub(crate) fn connection_ended(&self, conn: &Rc<Conn>) {
        match conn.peer {
            Peer::Client(id) => {
                if let Ok(mut clients) = self.inner.clients.try_borrow_mut()
                    && clients.get(&id).is_some_and(|c| Rc::ptr_eq(c, conn))
                {
                    clients.remove(&id);
                }
            }
            Peer::Replica(r) => {
                if let Ok(mut replicas) = self.inner.replicas.try_borrow_mut()
                    && replicas.get(&r).is_some_and(|c| Rc::ptr_eq(c, conn))
                {
                    replicas.remove(&r);
                }
            }
        }
        let Ok(mut core) = conn.link.core.try_borrow_mut() else {
            // Only a panic inside a core call could leave it borrowed, and
            // unwinding releases the borrow; never panic in a drop guard.
            tracing::error!(peer = ?conn.peer, "connection state still borrowed at its end");
            return;
        };
        let reason = core.loss_report();
        let dropped = core.take_dropped();
        drop(core);
        // After the loss report: what was outstanding has failed by now.
        self.inner.retire(&conn.link);
        bump(&self.inner.counters.frames_dropped, dropped as u64);
        if reason == CloseReason::Panicked {
            bump(&self.inner.counters.connection_panics, 1);
            tracing::error!(peer = ?conn.peer, "connection task panicked; connection closed");
        }
        let handler = self.inner.handler.clone();
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.on_connection_lost(self, conn.peer, &reason);
        }));
        if called.is_err() {
            bump(&self.inner.counters.handler_panics, 1);
            tracing::error!(peer = ?conn.peer, "on_connection_lost panicked");
        }
    }
}

fn snapshot(conn: &Conn) -> ConnectionSnapshot {
    ConnectionSnapshot {
        peer: conn.peer,
        info: conn.info.clone(),
        stats: conn.link.stats(),
        closing: !conn.link.is_open(),
    }
}
