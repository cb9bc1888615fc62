//! Starting, addressing and stopping the shards: [`ShardsBuilder`] and the
//! [`Shards`] handle.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use bus_core::{
    Bus, BusConfig, ClientId, Frame, FrameMut, Handler, Peer, RequestError, SendError,
    transport::Listener,
};
use bus_tcp::TcpListenerConfig;

use crate::{
    ShardError,
    config::{SHUTDOWN_MARGIN, STARTUP_TIMEOUT, ShardsConfig},
    handler::ShardContext,
    link::{self, ForwardedReply, Links, Message, ReplicaOwners},
    monitor::Monitor,
    shard::{self, Delegated, LocalListener, Ready, Seed, StartHook},
    stats::{ShardExit, ShardStats, ShardsShutdownReport},
    transport::{DelegatedService, DelegatedTransport, Install, Service, Tcp},
};

/// Grace of the shutdown of shards that did start when another one failed.
const START_FAILURE_GRACE: Duration = Duration::from_secs(1);

// The handle is shared across threads, and frames cross them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Shards>();
    send_sync::<Frame>();
};

enum Spec {
    Delegated(TcpListenerConfig, usize),
    Local(u16, LocalListener),
}

/// Declares the shards and their listeners, then starts them.
#[must_use = "nothing runs until `start` is called"]
pub struct ShardsBuilder {
    config: ShardsConfig,
    bus: BusConfig,
    listeners: Vec<Spec>,
    installers: Vec<Box<dyn Install>>,
    hooks: Vec<StartHook>,
}

impl std::fmt::Debug for ShardsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardsBuilder")
            .field("config", &self.config)
            .field("bus", &self.bus)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl ShardsBuilder {
    /// Shards laid out by `config`, each running a bus with `bus` (its
    /// `shard` field is set per shard).
    pub fn new(config: ShardsConfig, bus: BusConfig) -> Self {
        Self {
            config,
            bus,
            listeners: Vec::new(),
            installers: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// A plain TCP listener: shard 0 accepts, the placement policy picks
    /// the shard that serves each connection.
    pub fn listen_tcp(self, config: TcpListenerConfig) -> Self {
        self.listen(config, Tcp)
    }

    /// A listener for any transport that starts as TCP (TCP, TLS, WS, WSS):
    /// shard 0 accepts plain TCP and hands each socket, before any
    /// handshake, to the shard the policy picks, which runs
    /// `transport.wrap` and the handshake.
    pub fn listen<T: DelegatedTransport>(
        mut self,
        config: TcpListenerConfig,
        transport: T,
    ) -> Self {
        self.installers.push(Box::new(transport));
        self.listeners
            .push(Spec::Delegated(config, self.installers.len() - 1));
        self
    }

    /// A listener whose sockets a [`DelegatedService`] serves: shard 0
    /// accepts plain TCP and hands each socket, before any handshake, to
    /// the shard the placement policy picks, where `service.take_over`
    /// runs. Its bound address is in [`Shards::local_addrs`] in declaration
    /// order, like every listener's.
    pub fn listen_service<S: DelegatedService>(
        mut self,
        config: TcpListenerConfig,
        service: S,
    ) -> Self {
        self.installers.push(Box::new(Service(service)));
        self.listeners
            .push(Spec::Delegated(config, self.installers.len() - 1));
        self
    }

    /// Runs `hook` on every shard's thread, inside its runtime, once its
    /// bus (with its forwarder) exists and before the shard reports ready.
    /// What it spawns should be tracked by the bus (`Bus::spawn_handshake`)
    /// so that shutdown ends it. Hooks run in the order they were added.
    pub fn on_start<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Bus, &ShardContext) + Send + Sync + 'static,
    {
        self.hooks.push(std::sync::Arc::new(hook));
        self
    }

    /// A listener that stays on shard `shard` (QUIC: its connections live
    /// on the shard that owns the UDP endpoint). `make` runs on that shard's
    /// thread, inside its runtime, at start-up; the shard's bus serves what
    /// it returns. Sends to its clients from other shards are forwarded.
    pub fn serve_on<L, E, M>(mut self, shard: u16, make: M) -> Self
    where
        L: Listener,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        M: FnOnce() -> Result<L, E> + Send + 'static,
    {
        let local: LocalListener = Box::new(move |bus, admission| {
            let listener = make().map_err(Into::into)?;
            let addr = listener.local_addr()?;
            // In the node-wide connection cap; its own handshake cap, if
            // any, is the listener's.
            bus.serve_admitted(listener, admission.gate(None, addr, None))?;
            Ok(addr)
        });
        self.listeners.push(Spec::Local(shard, local));
        self
    }

    /// Starts every shard and waits (at most [`STARTUP_TIMEOUT`]) until
    /// each has built its runtime, its bus (with a handler from `factory`,
    /// called once on each shard's thread) and its listeners.
    ///
    /// Blocks the calling thread. On any failure the shards that did start
    /// are stopped and joined before the error is returned.
    pub fn start<F, H>(self, factory: F) -> Result<Shards, ShardError>
    where
        F: Fn(&ShardContext) -> H + Send + Sync + 'static,
        H: Handler,
    {
        self.config.validate()?;
        self.bus.validate().map_err(|e| ShardError::Bus {
            shard: 0,
            source: e.into(),
        })?;
        let count = self.config.resolved_count();
        let listener_count = self.listeners.len();
        let (delegated, local) = split_listeners(self.listeners, count)?;

        let (links, mailboxes): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| link::channel(self.config.inbox_capacity_frames))
            .unzip();
        let links: Links = links.into();
        let installers: Arc<[Box<dyn Install>]> = self.installers.into();
        let hooks: Arc<[StartHook]> = self.hooks.into();
        let owners = Arc::new(ReplicaOwners::default());
        let factory = Arc::new(factory);
        let cores = thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let shard0_serves = self.config.shard0_serves(count);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        // One connection cap for the node, shared by every listener.
        let admission = bus_core::Admission::new(self.bus.max_connections);
        let mut shards = Shards {
            links: links.clone(),
            owners: owners.clone(),
            threads: Vec::with_capacity(usize::from(count)),
            exits: Mutex::new(exit_rx),
            addrs: Vec::new(),
            admission: admission.clone(),
        };
        let mut delegated = Some(delegated);
        // One inbound budget for the node, shared by every shard's bus.
        let budget = bus_core::InboundBudget::new(self.bus.inbound_budget_bytes);
        for ((shard, mailbox), local) in (0..count).zip(mailboxes).zip(local) {
            let seed = Seed {
                shard,
                count,
                pin_cpu: self.config.pin_cpus.then_some(usize::from(shard) % cores),
                bus: self.bus.clone(),
                budget: budget.clone(),
                admission: admission.clone(),
                placement: self.config.placement,
                shard0_serves,
                links: links.clone(),
                mailbox,
                installers: installers.clone(),
                hooks: hooks.clone(),
                owners: owners.clone(),
                delegated: if shard == 0 {
                    delegated.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                local,
                ready: ready_tx.clone(),
            };
            let factory = factory.clone();
            let exit = ExitGuard {
                shard,
                tx: exit_tx.clone(),
                exit: None,
            };
            let spawned = thread::Builder::new()
                .name(format!("bus-shard-{shard}"))
                .spawn(move || {
                    let mut exit = exit;
                    exit.exit = shard::run(seed, &*factory);
                });
            match spawned {
                Ok(handle) => shards.threads.push(Some(handle)),
                Err(source) => {
                    shards.shutdown(START_FAILURE_GRACE);
                    return Err(ShardError::Spawn { shard, source });
                }
            }
        }
        drop(ready_tx);
        match wait_ready(&ready_rx, count, listener_count) {
            Ok(addrs) => {
                shards.addrs = addrs;
                Ok(shards)
            }
            Err(error) => {
                shards.shutdown(START_FAILURE_GRACE);
                Err(error)
            }
        }
    }
}

/// The listeners one shard serves itself, with their declaration index.
type ShardLocal = Vec<(usize, LocalListener)>;

/// The declared listeners: those shard 0 accepts for every shard, and
/// those each shard serves itself (by shard).
fn split_listeners(
    listeners: Vec<Spec>,
    count: u16,
) -> Result<(Vec<Delegated>, Vec<ShardLocal>), ShardError> {
    let mut delegated = Vec::new();
    let mut local: Vec<ShardLocal> = (0..count).map(|_| Vec::new()).collect();
    for (index, spec) in listeners.into_iter().enumerate() {
        match spec {
            Spec::Delegated(config, installer) => delegated.push(Delegated {
                index,
                config,
                installer,
            }),
            Spec::Local(shard, make) => local
                .get_mut(usize::from(shard))
                .ok_or(ShardError::NoSuchShard {
                    listener: index,
                    shard,
                    count,
                })?
                .push((index, make)),
        }
    }
    Ok((delegated, local))
}

/// Waits until every shard reported ready; returns the listeners' addresses
/// in declaration order.
fn wait_ready(
    ready_rx: &mpsc::Receiver<(u16, Result<Ready, ShardError>)>,
    count: u16,
    listener_count: usize,
) -> Result<Vec<SocketAddr>, ShardError> {
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; listener_count];
    let mut ready = vec![false; usize::from(count)];
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while let Some(waiting) = ready.iter().position(|r| !r) {
        let waiting = u16::try_from(waiting).unwrap_or(u16::MAX);
        match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((shard, Ok(r))) => {
                for (index, addr) in r.addrs {
                    addrs[index] = Some(addr);
                }
                ready[usize::from(shard)] = true;
            }
            Ok((_, Err(error))) => return Err(error),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(ShardError::Timeout {
                    shard: waiting,
                    timeout: STARTUP_TIMEOUT,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ShardError::Exited { shard: waiting });
            }
        }
    }
    let addrs: Vec<SocketAddr> = addrs.into_iter().flatten().collect();
    debug_assert_eq!(
        addrs.len(),
        listener_count,
        "every listener reported its address"
    );
    Ok(addrs)
}

/// Reports how its shard ended when the thread's closure ends, also when
/// it unwinds.
struct ExitGuard {
    shard: u16,
    tx: mpsc::Sender<(u16, Option<ShardExit>)>,
    exit: Option<ShardExit>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.tx.send((self.shard, self.exit.take()));
    }
}

/// The running shards: their addresses, cross-thread sends, stats and
/// shutdown. `Send + Sync`; dropping it without [`Shards::shutdown`] asks
/// every shard to stop (with [`DROP_SHUTDOWN_GRACE`](crate::config::DROP_SHUTDOWN_GRACE))
/// and detaches their threads, which end within that grace.
pub struct Shards {
    links: Links,
    owners: Arc<ReplicaOwners>,
    threads: Vec<Option<thread::JoinHandle<()>>>,
    exits: Mutex<mpsc::Receiver<(u16, Option<ShardExit>)>>,
    addrs: Vec<SocketAddr>,
    admission: bus_core::Admission,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.links.len())
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Shards {
    /// A builder; see [`ShardsBuilder`].
    pub fn builder(config: ShardsConfig, bus: BusConfig) -> ShardsBuilder {
        ShardsBuilder::new(config, bus)
    }

    /// The node's admission control: live connections against
    /// `max_connections`, and every listener's refusals.
    pub fn admission(&self) -> &bus_core::Admission {
        &self.admission
    }

    /// How many shards run.
    pub fn count(&self) -> u16 {
        u16::try_from(self.links.len()).unwrap_or(u16::MAX)
    }

    /// The bound address of every listener, in the order they were declared
    /// on the builder (with the real port when bound to port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Queues `frame` for client `id` from outside any shard: pushed into
    /// the owning shard's inbox without waiting. From a handler, use
    /// `Bus::send_to_client`, which takes the local fast path when it can.
    pub fn send_to_client(&self, id: ClientId, frame: Frame) -> Result<(), SendError> {
        link::forward(&self.links, id, frame)
    }

    /// Queues `frame` for replica `replica` from outside any shard: pushed
    /// into the inbox of the shard that owns its connection, without
    /// waiting. `NotConnected` when no shard has a live connection to it.
    pub fn send_to_replica(&self, replica: u8, frame: Frame) -> Result<(), SendError> {
        link::forward_to_replica(&self.links, &self.owners, replica, frame)
    }

    /// Sends `frame` to client `id` as a request from the server (spec §9),
    /// from any thread: the owning shard issues it on the connection (see
    /// `Bus::request_client`) and the returned reply completes with the
    /// client's frame, `Timeout` or `Disconnected`. Never waits; a full inbox
    /// is `RequestError::Send(InboxFull)`.
    pub fn request_client(
        &self,
        id: ClientId,
        frame: FrameMut,
        timeout: Duration,
    ) -> Result<ForwardedReply, RequestError> {
        link::forward_request(&self.links, &self.owners, Peer::Client(id), frame, timeout)
    }

    /// Sends `frame` to replica `replica` as a request (spec §9) from any
    /// thread, through the shard that owns its link, as
    /// [`Shards::request_client`] does for a client. `NotConnected` when no
    /// shard has a live link to it.
    pub fn request_replica(
        &self,
        replica: u8,
        frame: FrameMut,
        timeout: Duration,
    ) -> Result<ForwardedReply, RequestError> {
        link::forward_request(
            &self.links,
            &self.owners,
            Peer::Replica(replica),
            frame,
            timeout,
        )
    }

    /// Queues `frame` for every client on every shard, from outside any
    /// shard; returns how many shards accepted it into their inbox. Each
    /// shard shares the one allocation among its clients.
    pub fn broadcast(&self, frame: &Frame) -> usize {
        self.links
            .iter()
            .filter(|link| link.post(Message::Broadcast(frame.clone())).is_ok())
            .count()
    }

    /// A snapshot of every shard's counters, in shard order.
    ///
    /// Blocks the calling thread for at most [`STATS_TIMEOUT`](crate::config::STATS_TIMEOUT). Do not call
    /// it from a shard's own thread (a handler): that shard cannot answer
    /// while it waits, so the call would time out. A handler reads its own
    /// shard with `Bus::stats`.
    pub fn stats(&self) -> Result<Vec<ShardStats>, ShardError> {
        self.monitor().stats()
    }

    /// A view of the shards that can be cloned and sent to other threads:
    /// live connection counts, stats and connection listings.
    pub fn monitor(&self) -> Monitor {
        Monitor::new(self.links.clone(), self.owners.clone())
    }

    /// Shuts every shard down and joins their threads.
    ///
    /// Each shard stops accepting (shard 0's accept loops end first), runs
    /// its bus's graceful shutdown with `grace` (queued frames, then
    /// `Goodbye(ShuttingDown)`, then close; cancelled past `grace`), drops
    /// what is left in its inbox, drops its runtime and ends its thread. All
    /// shards do this at the same time. The whole call is bounded by `grace`
    /// plus [`SHUTDOWN_MARGIN`]; a thread that has not finished by then (a
    /// handler blocking its shard) is detached and counted in
    /// [`ShardsShutdownReport::threads_left`].
    ///
    /// Blocks the calling thread. From inside a compio runtime whose tasks
    /// must keep running meanwhile, call it through
    /// `compio::runtime::spawn_blocking`.
    pub fn shutdown(mut self, grace: Duration) -> ShardsShutdownReport {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> ShardsShutdownReport {
        let started = Instant::now();
        let deadline = started + grace + SHUTDOWN_MARGIN;
        for link in self.links.iter() {
            link.request_stop(grace);
        }
        let mut report = ShardsShutdownReport::default();
        let mut finished = vec![false; self.threads.len()];
        let running = self.threads.iter().filter(|t| t.is_some()).count();
        {
            let exits = self
                .exits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut heard = 0;
            while heard < running {
                let Ok((shard, exit)) =
                    exits.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                else {
                    break;
                };
                heard += 1;
                finished[usize::from(shard)] = true;
                report.shards.extend(exit);
            }
        }
        for (thread, finished) in self.threads.iter_mut().zip(finished) {
            let Some(handle) = thread.take() else {
                continue;
            };
            if finished || handle.is_finished() {
                // It has sent its report: only returning is left.
                let _ = handle.join();
                report.threads_joined += 1;
            } else {
                report.threads_left += 1;
                tracing::error!(thread = ?handle.thread().name(), "shard did not stop within its deadline; detaching its thread");
            }
        }
        report.shards.sort_by_key(|exit| exit.shard);
        report.elapsed = started.elapsed();
        report
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        if self.threads.iter().any(Option::is_some) {
            for link in self.links.iter() {
                link.request_stop(crate::config::DROP_SHUTDOWN_GRACE);
            }
            // Detach: the threads end within the grace on their own.
            self.threads.clear();
        }
    }
}
