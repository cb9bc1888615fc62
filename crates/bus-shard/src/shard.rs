//! One shard: a thread, its compio runtime, its bus, its mailbox, and on
//! shard 0 the accept loops of the delegated listeners.
//!
//! ```text
//! thread bus-shard-i ── runtime (io_uring, or epoll fallback: logged)
//!   ├─ Bus (shard = i), forwarder → other shards' inboxes
//!   ├─ accept loops (shard 0 only): accept → place → dup fd → hand over
//!   └─ mailbox loop: stop │ inbox (frames) │ hand-overs (sockets) │ control
//! ```
//!
//! The mailbox loop is the future the runtime blocks on, not a spawned
//! task: a wake-up from another shard is one write to this runtime's driver
//! notifier, and never occupies compio's bounded cross-thread task queue.
//!
//! On stop: accept loops are cancelled, the inbox is closed and what it
//! holds is queued to its clients, the bus shuts down gracefully within the
//! grace it was given (so those frames go out before the Goodbye), the
//! runtime is dropped, and the exit report is sent last.

use std::{
    cell::Cell,
    collections::HashSet,
    net::SocketAddr,
    os::fd::AsFd,
    rc::Rc,
    sync::{Arc, atomic::Ordering::Relaxed, mpsc},
    time::Duration,
};

use bus_core::{
    Admission, Bus, BusConfig, ClientId, Forwarder, Frame, FrameMut, Gate, Handler, Peer,
    RateLimitedLog, Refusal, Reply, RequestError, SendError,
    admission::{accept_failed, is_out_of_descriptors},
    limits::{MAX_REFUSALS_IN_FLIGHT, REFUSAL_LINGER},
    transport::Listener as _,
};
use bus_tcp::{TcpListener, TcpListenerConfig};
use compio::{
    BufResult,
    runtime::{JoinHandle, time},
};
use futures_util::{
    StreamExt,
    future::{Either, select},
    select_biased,
};

use crate::{
    ShardError,
    config::{DROP_SHUTDOWN_GRACE, INBOX_BATCH_MESSAGES, Placement},
    handler::{ShardContext, ShardHandler},
    link::{
        Control, Handoff, Link, Links, Mailbox, Message, PendingGuard, ReplicaOwners, forward,
        forward_to_replica,
    },
    monitor::Monitor,
    placement::Placer,
    stats::{ShardExit, ShardStats},
    transport::Install,
};

/// A listener served on one shard without delegation (QUIC, or anything
/// that must stay where it was bound). Returns its bound address.
/// Its connections are admitted through the node's [`Admission`].
pub(crate) type LocalListener = Box<
    dyn FnOnce(&Bus, &Admission) -> Result<SocketAddr, Box<dyn std::error::Error + Send + Sync>>
        + Send,
>;

/// Code run on every shard once its bus exists
/// ([`ShardsBuilder::on_start`](crate::ShardsBuilder::on_start)).
pub(crate) type StartHook = Arc<dyn Fn(&Bus, &ShardContext) + Send + Sync>;

/// Read buffer of a refused socket waiting for its peer's close.
const REFUSAL_DRAIN_BYTES: usize = 1024;

/// A delegated listener: bound and accepted on shard 0.
pub(crate) struct Delegated {
    /// Index among all listeners, in declaration order.
    pub(crate) index: usize,
    pub(crate) config: TcpListenerConfig,
    /// Index into the installers table.
    pub(crate) installer: usize,
}

/// A shard reporting that it is serving.
#[derive(Debug)]
pub(crate) struct Ready {
    /// (listener index, bound address) of the listeners on this shard.
    pub(crate) addrs: Vec<(usize, SocketAddr)>,
}

/// Everything a shard's thread starts with.
pub(crate) struct Seed {
    pub(crate) shard: u16,
    pub(crate) count: u16,
    pub(crate) pin_cpu: Option<usize>,
    pub(crate) bus: BusConfig,
    pub(crate) budget: bus_core::InboundBudget,
    pub(crate) admission: Admission,
    pub(crate) placement: Placement,
    pub(crate) shard0_serves: bool,
    pub(crate) links: Links,
    pub(crate) mailbox: Mailbox,
    pub(crate) installers: Arc<[Box<dyn Install>]>,
    pub(crate) hooks: Arc<[StartHook]>,
    pub(crate) owners: Arc<ReplicaOwners>,
    pub(crate) delegated: Vec<Delegated>,
    pub(crate) local: Vec<(usize, LocalListener)>,
    pub(crate) ready: mpsc::Sender<(u16, Result<Ready, ShardError>)>,
}

/// This shard's own counters (`Cell`s: only its thread touches them).
#[derive(Debug, Default)]
struct Counters {
    inbox_received: Cell<u64>,
    inbox_undeliverable: Cell<u64>,
    forwarded: Cell<u64>,
    forward_inbox_full: Cell<u64>,
    handoffs_in: Cell<u64>,
    handoffs_refused: Cell<u64>,
    handoff_failures: Cell<u64>,
    /// Refusals whose short answer is being written now.
    refusals_in_flight: Cell<usize>,
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

/// The thread's body; returns how the shard ended, or `None` when it did
/// not start.
pub(crate) fn run<F, H>(seed: Seed, factory: &F) -> Option<ShardExit>
where
    F: Fn(&ShardContext) -> H,
    H: Handler,
{
    let shard = seed.shard;
    let mut builder = bus_core::runtime::builder();
    if let Some(cpu) = seed.pin_cpu {
        builder.thread_affinity(HashSet::from([cpu]));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = seed
                .ready
                .send((shard, Err(ShardError::Runtime { shard, source })));
            return None;
        }
    };
    // io_uring silently falls back to epoll (dependencies.md #10): say which.
    tracing::info!(shard, driver = ?runtime.driver_type(), cpu = ?seed.pin_cpu, "shard starting");
    let exit = runtime.block_on(serve(seed, factory));
    drop(runtime);
    if let Some(exit) = &exit {
        tracing::info!(shard, report = ?exit.bus, "shard stopped");
    }
    exit
}

async fn serve<F, H>(seed: Seed, factory: &F) -> Option<ShardExit>
where
    F: Fn(&ShardContext) -> H,
    H: Handler,
{
    let Seed {
        shard,
        count,
        bus: mut bus_config,
        budget,
        admission,
        placement,
        shard0_serves,
        links,
        mut mailbox,
        installers,
        hooks,
        owners,
        delegated,
        local,
        ready,
        ..
    } = seed;
    let fail = |error: ShardError| {
        let _ = ready.send((shard, Err(error)));
    };
    let me = &links[usize::from(shard)];
    let context = ShardContext {
        shard,
        count,
        monitor: Monitor::new(links.clone(), owners.clone()),
    };
    bus_config.shard = shard;
    let (bus, counters) = match start_bus(
        &context, factory, bus_config, budget, &links, owners, &hooks,
    ) {
        Ok(started) => started,
        Err(error) => {
            fail(error);
            return None;
        }
    };

    let mut addrs = Vec::new();
    let mut accepting: Vec<JoinHandle<()>> = Vec::new();
    let placer = Rc::new(Placer::new(placement, count, shard0_serves));
    for spec in delegated {
        let listener = match TcpListener::bind(&spec.config) {
            Ok(listener) => listener,
            Err(source) => {
                fail(ShardError::Listen { shard, source });
                bus.shutdown(Duration::ZERO).await;
                return None;
            }
        };
        let addr = listener.local_addr().unwrap_or(spec.config.listen);
        addrs.push((spec.index, addr));
        let install = &installers[spec.installer];
        tracing::info!(shard, %addr, transport = %install.kind(), max_handshakes = spec.config.max_handshakes, "accepting for every shard");
        let gate = install
            .admits()
            .then(|| admission.gate(Some(install.kind()), addr, Some(spec.config.max_handshakes)));
        accepting.push(compio::runtime::spawn(accept_loop(AcceptLoop {
            bus: bus.clone(),
            listener,
            gate,
            installer: spec.installer,
            installers: installers.clone(),
            links: links.clone(),
            placer: placer.clone(),
            counters: counters.clone(),
        })));
    }
    for (index, make) in local {
        match make(&bus, &admission) {
            Ok(addr) => {
                tracing::info!(shard, %addr, "serving a listener on this shard");
                addrs.push((index, addr));
            }
            Err(source) => {
                fail(ShardError::Listener {
                    shard,
                    listener: index,
                    source,
                });
                drop(accepting);
                bus.shutdown(Duration::ZERO).await;
                return None;
            }
        }
    }
    let _ = ready.send((shard, Ok(Ready { addrs })));
    drop(ready);

    let grace = mailbox_loop(&bus, me, &mut mailbox, &installers, &counters).await;

    Some(stop(&bus, me, &mut mailbox, &counters, accepting, grace).await)
}

/// The shard's bus: the application's handler (wrapped for the shard
/// layer's counts), the forwarder to the other shards, then the start
/// hooks.
fn start_bus<F, H>(
    context: &ShardContext,
    factory: &F,
    config: BusConfig,
    budget: bus_core::InboundBudget,
    links: &Links,
    owners: Arc<ReplicaOwners>,
    hooks: &[StartHook],
) -> Result<(Bus, Rc<Counters>), ShardError>
where
    F: Fn(&ShardContext) -> H,
    H: Handler,
{
    let shard = context.shard;
    let handler = ShardHandler {
        inner: factory(context),
        shared: links[usize::from(shard)].shared.clone(),
        owners: owners.clone(),
    };
    let bus = Bus::with_budget(config, handler, budget)
        .map_err(|source| ShardError::Bus { shard, source })?;
    let counters = Rc::new(Counters::default());
    bus.set_forwarder(Rc::new(ShardForwarder {
        shard,
        links: links.clone(),
        owners,
        counters: counters.clone(),
    }));
    for hook in hooks {
        hook(&bus, context);
    }
    Ok((bus, counters))
}

/// Stops the shard: no more accepting or taking in, what was accepted is
/// queued, then the bus's graceful shutdown.
async fn stop(
    bus: &Bus,
    me: &Link,
    mailbox: &mut Mailbox,
    counters: &Counters,
    accepting: Vec<JoinHandle<()>>,
    grace: Duration,
) -> ShardExit {
    // Dropping a compio JoinHandle cancels its task (dependencies.md #9).
    drop(accepting);
    // Nothing more is taken in (senders now get `ShuttingDown`). Sends that
    // were accepted are queued to their clients now, so the graceful close
    // below writes them before the Goodbye.
    mailbox.inbox.close();
    mailbox.handoff.close();
    let mut inbox_flushed = 0;
    while let Ok(message) = mailbox.inbox.try_recv() {
        deliver(bus, counters, message);
        inbox_flushed += 1;
    }
    // Connections not yet taken over close unserved, as handshakes in
    // progress do on a single shard.
    let handoffs_discarded = std::iter::from_fn(|| mailbox.handoff.try_recv().ok()).count();
    // Statistics requests keep being answered through the grace, so an
    // operator watching the node (the admin endpoint) sees it stop.
    let mut shutdown = std::pin::pin!(bus.shutdown(grace));
    let report = loop {
        match select(shutdown.as_mut(), mailbox.control.next()).await {
            Either::Left((report, _)) => break report,
            Either::Right((Some(request), _)) => answer(bus, me, counters, request),
            Either::Right((None, _)) => break shutdown.await,
        }
    };
    let stats = snapshot(bus, me, counters);
    *me.shared
        .last_stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stats);
    // Requests sent from now on find the queue closed and read the last
    // counters; those already queued are answered here, none left waiting.
    mailbox.control.close();
    while let Ok(request) = mailbox.control.try_recv() {
        answer(bus, me, counters, request);
    }
    ShardExit {
        shard: bus.shard(),
        bus: report,
        stats,
        inbox_flushed,
        handoffs_discarded,
    }
}

/// Serves the mailbox until a stop request; returns its grace.
async fn mailbox_loop(
    bus: &Bus,
    me: &Link,
    mailbox: &mut Mailbox,
    installers: &[Box<dyn Install>],
    counters: &Counters,
) -> Duration {
    let Mailbox {
        inbox,
        handoff,
        control,
        stop,
    } = mailbox;
    // Streams keep their wait registration across turns, so a turn with
    // nothing to do allocates nothing.
    loop {
        select_biased! {
            grace = stop.next() => return grace.unwrap_or(DROP_SHUTDOWN_GRACE),
            message = inbox.next() => {
                let Some(message) = message else { continue };
                deliver(bus, counters, message);
                let mut handled = 1;
                while handled < INBOX_BATCH_MESSAGES {
                    let Ok(message) = inbox.try_recv() else { break };
                    deliver(bus, counters, message);
                    handled += 1;
                }
                if handled == INBOX_BATCH_MESSAGES {
                    // More may be waiting: let this shard's connections run first.
                    yield_now().await;
                }
            }
            handoff = handoff.next() => {
                let Some(Handoff { stream, listener, pending, admitted }) = handoff else { continue };
                bump(&counters.handoffs_in);
                let installer = &installers[listener];
                if let Err(err) = installer.install(bus, stream, pending, admitted) {
                    bump(&counters.handoff_failures);
                    // A peer that resets before the take-over: rate-limited.
                    if let Some(suppressed) = TAKE_OVER_FAILED.allow() {
                        tracing::warn!(shard = bus.shard(), transport = %installer.kind(), %err, suppressed, "cannot take over a handed-over connection");
                    }
                }
            }
            request = control.next() => {
                if let Some(request) = request {
                    answer(bus, me, counters, request);
                }
            }
        }
    }
}

/// Answers a statistics request from outside the shard.
fn answer(bus: &Bus, me: &Link, counters: &Counters, request: Control) {
    match request {
        Control::Stats(reply) => {
            let _ = reply.try_send(snapshot(bus, me, counters));
        }
        Control::Connections(reply) => {
            let _ = reply.try_send(bus.connections());
        }
    }
}

fn deliver(bus: &Bus, counters: &Counters, message: Message) {
    bump(&counters.inbox_received);
    let delivered = match message {
        Message::ToClient(id, frame) => bus.send_to_client(id, frame).is_ok(),
        Message::Broadcast(frame) => {
            bus.broadcast_local(&frame);
            true
        }
        // Only a connection of this shard: a stale owner entry must not
        // send the frame on to yet another shard.
        Message::ToReplica(id, frame) => {
            bus.has_replica(id) && bus.send_to_replica(id, frame).is_ok()
        }
        Message::Request {
            to,
            frame,
            timeout,
            reply,
        } => match request_here(bus, to, frame, timeout) {
            Ok(outcome) => {
                // One waiter per outstanding request, so as bounded as the
                // connection's request table; it ends at the reply, the
                // timeout or the close, at the latest at shutdown.
                compio::runtime::spawn(async move {
                    let _ = reply.try_send(outcome.await);
                })
                .detach();
                true
            }
            Err(err) => {
                let _ = reply.try_send(Err(err));
                false
            }
        },
    };
    if !delivered {
        bump(&counters.inbox_undeliverable);
    }
}

/// A forwarded request, issued on this shard's own connection only (a stale
/// replica owner entry must not send it on).
fn request_here(
    bus: &Bus,
    to: Peer,
    frame: FrameMut,
    timeout: Duration,
) -> Result<Reply, RequestError> {
    match to {
        Peer::Client(id) => bus.request_client(id, frame, timeout),
        Peer::Replica(id) if bus.has_replica(id) => bus.request_replica(id, frame, timeout),
        Peer::Replica(_) => Err(RequestError::Send(SendError::NotConnected)),
    }
}

fn snapshot(bus: &Bus, me: &Link, counters: &Counters) -> ShardStats {
    ShardStats {
        shard: bus.shard(),
        bus: bus.stats(),
        inbox_depth: me.inbox.len(),
        inbox_capacity: me.inbox.capacity().unwrap_or(0),
        inbox_full: me.shared.inbox_full.load(Relaxed),
        inbox_received: counters.inbox_received.get(),
        inbox_undeliverable: counters.inbox_undeliverable.get(),
        forwarded: counters.forwarded.get(),
        forward_inbox_full: counters.forward_inbox_full.get(),
        handoffs_in: counters.handoffs_in.get(),
        handoffs_refused: counters.handoffs_refused.get(),
        handoff_failures: counters.handoff_failures.get(),
        pending_connections: me.shared.pending.load(Relaxed),
    }
}

/// Lets every other ready task of this runtime run once.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

struct AcceptLoop {
    bus: Bus,
    listener: TcpListener,
    /// `None` for a listener that is not admitted (the replica plane).
    gate: Option<Gate>,
    installer: usize,
    installers: Arc<[Box<dyn Install>]>,
    links: Links,
    placer: Rc<Placer>,
    counters: Rc<Counters>,
}

/// Failures to take over a connection (a peer that reset before it).
static TAKE_OVER_FAILED: RateLimitedLog = RateLimitedLog::new();
/// Sockets refused by admission control.
static REFUSED: RateLimitedLog = RateLimitedLog::new();
/// Sockets that could not be duplicated (descriptor exhaustion).
static DUPLICATE_FAILED: RateLimitedLog = RateLimitedLog::new();
/// Hand-overs refused by a full hand-over queue.
static HANDOFF_REFUSED: RateLimitedLog = RateLimitedLog::new();

/// Accepts plain TCP on shard 0, admits it (or refuses it at once), and
/// hands each admitted socket, before any handshake, to the shard the
/// policy picks.
async fn accept_loop(state: AcceptLoop) {
    let AcceptLoop {
        bus,
        mut listener,
        gate,
        installer,
        installers,
        links,
        placer,
        counters,
    } = state;
    let shard = bus.shard();
    let mut spare = spare_descriptor();
    loop {
        let connection = match listener.accept().await {
            Ok(connection) => connection,
            Err(err) => {
                if is_out_of_descriptors(&err)
                    && let Some(descriptor) = spare.take()
                {
                    refuse_without_descriptors(&mut listener, descriptor, gate.as_ref()).await;
                    spare = spare_descriptor();
                }
                accept_failed(&err).await;
                continue;
            }
        };
        let admitted = match gate.as_ref().map(Gate::admit) {
            None => None,
            Some(Ok(admitted)) => Some(admitted),
            Some(Err(refusal)) => {
                refuse(
                    &bus,
                    &counters,
                    connection,
                    installers[installer].refusal(),
                    refusal,
                );
                continue;
            }
        };
        // A duplicate descriptor (F_DUPFD_CLOEXEC) is `Send`; the compio
        // stream is not (dependencies.md #12). Ours closes with `connection`.
        let stream = match connection.stream().as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpStream::from(fd),
            Err(err) => {
                if let Some(gate) = gate.as_ref().filter(|_| is_out_of_descriptors(&err)) {
                    gate.refused_out_of_descriptors();
                }
                if let Some(suppressed) = DUPLICATE_FAILED.allow() {
                    tracing::warn!(shard, %err, suppressed, "cannot duplicate an accepted socket; closing it");
                }
                continue;
            }
        };
        drop(connection);
        let target = placer.pick(&links);
        let link = &links[target];
        let pending = PendingGuard::new(&link.shared);
        if target == usize::from(shard) {
            if let Err(err) = installers[installer].install(&bus, stream, pending, admitted) {
                bump(&counters.handoff_failures);
                if let Some(suppressed) = TAKE_OVER_FAILED.allow() {
                    tracing::warn!(shard, %err, suppressed, "cannot install an accepted connection");
                }
            }
            continue;
        }
        let handoff = Handoff {
            stream,
            listener: installer,
            pending,
            admitted,
        };
        if let Err(err) = link.handoff.try_send(handoff) {
            // Dropping the hand-over closes the socket: the peer sees a reset.
            bump(&counters.handoffs_refused);
            if let Some(suppressed) = HANDOFF_REFUSED.allow() {
                tracing::warn!(
                    shard,
                    target,
                    full = err.is_full(),
                    suppressed,
                    "cannot hand a connection over; closing it"
                );
            }
        }
    }
}

/// A descriptor kept open so that, out of descriptors, the accept loop can
/// free one to accept a waiting socket and close it: the peer is refused at
/// once instead of waiting in the kernel's queue.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Out of descriptors: gives the spare one back, accepts the socket waiting
/// first and closes it (the peer sees the close), counted in the gate.
async fn refuse_without_descriptors(
    listener: &mut TcpListener,
    spare: std::fs::File,
    gate: Option<&Gate>,
) {
    drop(spare);
    if let Ok(connection) = listener.accept().await {
        drop(connection);
        if let Some(gate) = gate {
            gate.refused_out_of_descriptors();
        }
    }
}

/// Refuses an accepted socket: closed at once, or (WS) after its short
/// answer, written on a task bounded by [`REFUSAL_LINGER`] while at most
/// [`MAX_REFUSALS_IN_FLIGHT`] are; counted in the gate, logged at a
/// bounded rate.
fn refuse(
    bus: &Bus,
    counters: &Rc<Counters>,
    connection: bus_tcp::TcpConnection,
    answer: Option<&'static [u8]>,
    refusal: Refusal,
) {
    let peer_addr = bus_core::transport::Connection::peer_addr(&connection);
    if let Some(suppressed) = REFUSED.allow() {
        tracing::warn!(shard = bus.shard(), %peer_addr, cap = refusal.as_str(), suppressed, "connection refused: at capacity");
    }
    let Some(answer) = answer else { return };
    if counters.refusals_in_flight.get() >= MAX_REFUSALS_IN_FLIGHT {
        return;
    }
    counters
        .refusals_in_flight
        .set(counters.refusals_in_flight.get() + 1);
    let counters = counters.clone();
    let stream = connection.into_stream();
    let task = async move {
        let _release = RefusalInFlight(counters);
        let _ = time::timeout(REFUSAL_LINGER, answer_and_linger(stream, answer)).await;
    };
    // Tracked with the handshakes: shutdown cancels it.
    let _ = bus.spawn_handshake(task);
}

/// Counts one refusal in flight until dropped (also when cancelled).
struct RefusalInFlight(Rc<Counters>);

impl Drop for RefusalInFlight {
    fn drop(&mut self) {
        let n = &self.0.refusals_in_flight;
        n.set(n.get().saturating_sub(1));
    }
}

/// Writes `answer`, closes our side, and reads until the peer closes, so
/// its request bytes left unread do not turn our close into a reset that
/// could destroy the answer before the peer reads it.
async fn answer_and_linger(mut stream: compio::net::TcpStream, answer: &'static [u8]) {
    use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
    let BufResult(written, _) = stream.write_all(answer).await;
    if written.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(REFUSAL_DRAIN_BYTES);
    loop {
        let BufResult(read, back) = stream.read(buf).await;
        buf = back;
        buf.clear();
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Routes sends for other shards' clients into their inboxes.
struct ShardForwarder {
    shard: u16,
    links: Links,
    owners: Arc<ReplicaOwners>,
    counters: Rc<Counters>,
}

impl Forwarder for ShardForwarder {
    fn send_to_client(&self, id: ClientId, frame: Frame) -> Result<(), SendError> {
        let sent = forward(&self.links, id, frame);
        match sent {
            Ok(()) => bump(&self.counters.forwarded),
            Err(SendError::InboxFull) => bump(&self.counters.forward_inbox_full),
            Err(_) => {}
        }
        sent
    }

    fn send_to_replica(&self, replica: u8, frame: Frame) -> Result<(), SendError> {
        // This shard's own bus has already looked: an entry naming this
        // shard is stale (the connection is ending).
        if self.owners.owner(replica) == Some(self.shard) {
            return Err(SendError::NotConnected);
        }
        let sent = forward_to_replica(&self.links, &self.owners, replica, frame);
        match sent {
            Ok(()) => bump(&self.counters.forwarded),
            Err(SendError::InboxFull) => bump(&self.counters.forward_inbox_full),
            Err(_) => {}
        }
        sent
    }

    fn request(&self, to: Peer, frame: FrameMut, timeout: Duration) -> Result<Reply, RequestError> {
        // This shard's own bus has already looked for a replica link: an
        // owner entry naming this shard is stale.
        if let Peer::Replica(id) = to
            && self.owners.owner(id) == Some(self.shard)
        {
            return Err(RequestError::Send(SendError::NotConnected));
        }
        let sent = crate::link::forward_request(&self.links, &self.owners, to, frame, timeout);
        match &sent {
            Ok(_) => bump(&self.counters.forwarded),
            Err(RequestError::Send(SendError::InboxFull)) => {
                bump(&self.counters.forward_inbox_full);
            }
            Err(_) => {}
        }
        sent.map(crate::link::ForwardedReply::into_reply)
    }

    fn broadcast(&self, frame: &Frame) -> usize {
        let mut accepted = 0;
        for (shard, link) in self.links.iter().enumerate() {
            if shard == usize::from(self.shard) {
                continue;
            }
            match link.post(Message::Broadcast(frame.clone())) {
                Ok(()) => {
                    accepted += 1;
                    bump(&self.counters.forwarded);
                }
                Err(SendError::InboxFull) => bump(&self.counters.forward_inbox_full),
                Err(_) => {}
            }
        }
        accepted
    }
}
