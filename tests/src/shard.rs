//! Multi-shard scenarios, written once and run per transport through
//! [`crate::shard_suite!`]: placement, client ids, the handshake running on
//! the owning shard, routing between shards, broadcast, inbox
//! backpressure, panic isolation and shutdown.
//!
//! A transport joins by implementing [`ShardTransport`] (its
//! [`DelegatedTransport`]) on top of [`TestTransport`] (its raw client).
//! Four shards run on a two-core machine on purpose: shards share cores, so
//! nothing here may depend on timing.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use async_channel::{Receiver, Sender};
use bus_core::{
    Bus, BusConfig, ClientId, CloseReason, Command, ConnectionInfo, Error, Frame, FrameMut,
    GoodbyeReason, Handler, Peer, ReadSettings, SendError,
    transport::{Connection, TransportKind},
};
use bus_shard::{
    DelegatedTransport, Placement, ShardContext, Shards, ShardsBuilder, ShardsConfig,
    ShardsShutdownReport,
};
use bus_tcp::TcpListenerConfig;

use crate::{
    STEP,
    client::RawClient,
    frames::{self, ECHO, ECHO_REPLY, PANIC_HANDLER},
    transport::{Tcp, TestTransport, Tls, Ws, Wss},
    within,
};

/// Send a `DELIVERY` with this frame's body to the client in
/// `command_area[0..16]`; the sender gets `RELAY_ACK` with the outcome.
pub const RELAY: u8 = 40;
/// What a relayed or flooded frame arrives as; `command_area[0..16]` of a
/// relayed one is the id of the client that asked for it.
pub const DELIVERY: u8 = 41;
/// `command_area[0]` = [`outcome`] of the relayed send.
pub const RELAY_ACK: u8 = 42;
/// Send `command_area[16..20]` frames to the client in
/// `command_area[0..16]` in one loop; the sender gets `FLOOD_ACK`.
pub const FLOOD: u8 = 43;
/// `command_area[0..4]` = sends accepted, `[4..8]` = refused with
/// `InboxFull`, `[8..12]` = refused otherwise.
pub const FLOOD_ACK: u8 = 44;
/// Block this shard's thread until the test releases it (bounded by STEP).
pub const BLOCK: u8 = 45;
/// Sent once the blocked shard is released.
pub const BLOCK_ACK: u8 = 46;
/// Broadcast a `BROADCAST_DELIVERY` with this frame's body to every client
/// on every shard; the sender then gets `BROADCAST_ACK` with clients queued
/// locally (`[0..4]`) and shards forwarded to (`[4..8]`). Spec §8's numbers.
pub const BROADCAST: u8 = 18;
/// See [`BROADCAST`].
pub const BROADCAST_DELIVERY: u8 = 19;
/// See [`BROADCAST`].
pub const BROADCAST_ACK: u8 = 20;

/// Shutdown grace in the scenarios.
pub const GRACE: Duration = Duration::from_secs(5);

/// A transport the shard layer delegates: shard 0 accepts TCP and the
/// owning shard runs [`DelegatedTransport::wrap`] and the handshake.
pub trait ShardTransport: TestTransport {
    /// The transport as the shard layer takes it.
    type Delegated: DelegatedTransport;

    /// A fresh value (certificates and all) for one set of shards.
    fn delegated() -> Self::Delegated;
}

impl ShardTransport for Tcp {
    type Delegated = bus_shard::Tcp;

    fn delegated() -> bus_shard::Tcp {
        bus_shard::Tcp
    }
}

impl ShardTransport for Tls {
    type Delegated = bus_tls::ServerTls;

    fn delegated() -> bus_tls::ServerTls {
        Tls::server_tls()
    }
}

impl ShardTransport for Ws {
    type Delegated = bus_ws::WsAcceptor;

    fn delegated() -> bus_ws::WsAcceptor {
        bus_ws::WsAcceptor::new(&ws_config())
    }
}

impl ShardTransport for Wss {
    type Delegated = bus_ws::WsAcceptor;

    fn delegated() -> bus_ws::WsAcceptor {
        bus_ws::WsAcceptor::new_tls(&ws_config(), Wss::server_tls()).expect("WSS acceptor")
    }
}

/// WebSocket settings on `127.0.0.1:0`, upgraded on `/`.
fn ws_config() -> bus_ws::WsListenerConfig {
    bus_ws::WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"))
}

/// What the handlers (and the probed handshakes) tell the test.
#[derive(Debug, Clone)]
pub enum Event {
    /// A client registered on `shard`, coming from `peer`.
    Connected {
        /// The shard whose handler was told.
        shard: u16,
        /// The client.
        id: ClientId,
        /// Its address.
        peer: SocketAddr,
    },
    /// A client's connection ended.
    Lost {
        /// The shard whose handler was told.
        shard: u16,
        /// The client.
        id: ClientId,
    },
    /// A handler holds its shard's thread (see [`BLOCK`]).
    Blocked {
        /// The blocked shard.
        shard: u16,
    },
    /// A connection's handshake (`establish`) ran on this thread.
    Established {
        /// The connection's peer.
        peer: SocketAddr,
        /// The thread's name (`bus-shard-i`).
        thread: String,
    },
}

/// The outcome of a send as one byte on the wire.
pub fn outcome(result: Result<(), SendError>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(SendError::QueueFull) => 1,
        Err(SendError::NotConnected) => 2,
        Err(SendError::ShuttingDown) => 3,
        Err(SendError::InboxFull) => 4,
        Err(_) => 5,
    }
}

/// A sealed frame with `command`, `request`, `area` at the start of the
/// command area and `body`.
pub fn frame(command: u8, request: u64, area: &[u8], body: &[u8]) -> Frame {
    let mut frame = FrameMut::with_body(Command::from_u8(command), body);
    frame.header_mut().set_request(request);
    frame.header_mut().command_area_mut()[..area.len()].copy_from_slice(area);
    frame.seal();
    frame.freeze()
}

fn id_at(frame: &Frame) -> ClientId {
    let area = frame.header().command_area();
    ClientId::from_raw(u128::from_le_bytes(
        area[..16].try_into().expect("16 bytes"),
    ))
}

/// The little-endian u32 at `at` in a command area.
pub fn u32_at(area: &[u8; 128], at: usize) -> u32 {
    u32::from_le_bytes(area[at..at + 4].try_into().expect("4 bytes"))
}

/// One shard's handler: echoes (stamping its shard into the reply), relays,
/// floods, broadcasts, blocks and panics on command.
#[derive(Debug)]
pub struct App {
    shard: u16,
    events: Sender<Event>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl App {
    fn record(&self, event: Event) {
        self.events.try_send(event).expect("test event channel");
    }
}

impl Handler for App {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        let Peer::Client(id) = from else { return };
        assert_eq!(
            id.shard(),
            self.shard,
            "the handler runs on the owning shard"
        );
        let request = frame.header().request();
        match frame.header().command_raw() {
            ECHO => {
                let mut echo = frame.into_mut();
                echo.header_mut().set_command(Command::from_u8(ECHO_REPLY));
                echo.header_mut().command_area_mut()[..2]
                    .copy_from_slice(&self.shard.to_le_bytes());
                echo.seal();
                let _ = bus.send_to_client(id, echo.freeze());
            }
            RELAY => {
                let sent = bus.send_to_client(
                    id_at(&frame),
                    self::frame(DELIVERY, request, &id.as_raw().to_le_bytes(), frame.body()),
                );
                let ack = self::frame(RELAY_ACK, request, &[outcome(sent)], &[]);
                let _ = bus.send_to_client(id, ack);
            }
            FLOOD => {
                let target = id_at(&frame);
                let count = u32_at(frame.header().command_area(), 16);
                let (mut ok, mut inbox_full, mut other) = (0u32, 0u32, 0u32);
                for i in 0..count {
                    match bus.send_to_client(target, self::frame(DELIVERY, i.into(), &[], &[])) {
                        Ok(()) => ok += 1,
                        Err(SendError::InboxFull) => inbox_full += 1,
                        Err(_) => other += 1,
                    }
                }
                let mut area = [0u8; 12];
                area[..4].copy_from_slice(&ok.to_le_bytes());
                area[4..8].copy_from_slice(&inbox_full.to_le_bytes());
                area[8..].copy_from_slice(&other.to_le_bytes());
                let _ = bus.send_to_client(id, self::frame(FLOOD_ACK, request, &area, &[]));
            }
            BLOCK => {
                self.record(Event::Blocked { shard: self.shard });
                // Holds this shard's thread: nothing on it runs and its inbox
                // fills. Bounded, so a broken test cannot hang.
                let released = self
                    .release
                    .lock()
                    .expect("release lock")
                    .recv_timeout(STEP);
                assert!(released.is_ok(), "the test never released the shard");
                let _ = bus.send_to_client(id, self::frame(BLOCK_ACK, request, &[], &[]));
            }
            BROADCAST => {
                let delivery = self::frame(BROADCAST_DELIVERY, request, &[], frame.body());
                let report = bus.broadcast(&delivery);
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
                let mut area = [0u8; 8];
                area[..4].copy_from_slice(&count(report.queued));
                area[4..].copy_from_slice(&count(report.shards_forwarded));
                let _ = bus.send_to_client(id, self::frame(BROADCAST_ACK, request, &area, &[]));
            }
            PANIC_HANDLER => panic!("test handler panics on command {PANIC_HANDLER}"),
            _ => {}
        }
    }

    fn on_connected(&self, _bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        if let Peer::Client(id) = peer {
            self.record(Event::Connected {
                shard: self.shard,
                id,
                peer: info.peer_addr,
            });
        }
    }

    fn on_connection_lost(&self, _bus: &Bus, peer: Peer, _reason: &CloseReason) {
        if let Peer::Client(id) = peer {
            self.record(Event::Lost {
                shard: self.shard,
                id,
            });
        }
    }
}

/// The test's ends of the handlers' channels, and a factory of [`App`]s.
#[derive(Debug)]
pub struct Harness {
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    /// Releases a shard blocked by [`BLOCK`].
    pub release: mpsc::Sender<()>,
    release_rx: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Fresh channels.
    pub fn new() -> Self {
        let (events_tx, events) = async_channel::bounded(100_000);
        let (release, release_rx) = mpsc::channel();
        Self {
            events,
            events_tx,
            release,
            release_rx: Arc::new(Mutex::new(release_rx)),
        }
    }

    /// A handler factory for [`ShardsBuilder::start`].
    pub fn factory(&self) -> impl Fn(&ShardContext) -> App + Send + Sync + 'static {
        let (events, release) = (self.events_tx.clone(), self.release_rx.clone());
        move |ctx: &ShardContext| App {
            shard: ctx.shard,
            events: events.clone(),
            release: release.clone(),
        }
    }

    /// Starts `builder` with [`App`] handlers.
    pub fn start(&self, builder: ShardsBuilder) -> Shards {
        builder.start(self.factory()).expect("shards start")
    }

    /// Starts shards laid out by `config` with one listener of transport
    /// `T`, each handshake probed (see [`Event::Established`]).
    pub fn start_probed<T: ShardTransport>(&self, config: ShardsConfig) -> Shards {
        let delegated = T::delegated();
        assert_eq!(DelegatedTransport::kind(&delegated), T::KIND);
        let probed = Probed(delegated, self.events_tx.clone());
        self.start(Shards::builder(config, BusConfig::default()).listen(loopback(), probed))
    }

    /// The next event, bounded by [`STEP`].
    pub async fn next(&self) -> Event {
        within("a handler event", self.events.recv())
            .await
            .expect("handlers alive")
    }

    /// Events already recorded, without waiting.
    pub fn drain_now(&self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

/// `127.0.0.1:0`.
pub fn loopback() -> TcpListenerConfig {
    TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr"))
}

/// Any delegated transport, with each connection's `establish` reporting
/// the thread it runs on.
#[derive(Debug)]
pub struct Probed<D>(pub D, pub Sender<Event>);

/// A connection of [`Probed`].
#[derive(Debug)]
pub struct ProbedConnection<C>(C, Sender<Event>);

impl<D: DelegatedTransport> DelegatedTransport for Probed<D> {
    type Connection = ProbedConnection<D::Connection>;

    fn kind(&self) -> TransportKind {
        self.0.kind()
    }

    fn wrap(&self, stream: std::net::TcpStream) -> io::Result<Self::Connection> {
        Ok(ProbedConnection(self.0.wrap(stream)?, self.1.clone()))
    }
}

impl<C: Connection> Connection for ProbedConnection<C> {
    type Reader = C::Reader;
    type Writer = C::Writer;

    fn transport(&self) -> TransportKind {
        self.0.transport()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.0.peer_addr()
    }

    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(Self::Reader, Self::Writer, ConnectionInfo), Error> {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let peer = self.0.peer_addr();
        self.1
            .try_send(Event::Established { peer, thread })
            .expect("event channel");
        self.0.establish(reading).await
    }
}

/// A connected client of transport `T`, its id (from the stamped echo) and
/// the shard whose handler answered.
#[derive(Debug)]
pub struct Client<C> {
    /// The raw client.
    pub raw: C,
    /// The id the server stamped.
    pub id: ClientId,
    /// The shard whose handler answered the echo.
    pub handler_shard: u16,
}

impl<C: RawClient> Client<C> {
    /// Wraps `raw` and learns its id with one echo.
    pub async fn new(mut raw: C) -> Self {
        raw.send(&frames::app(ECHO, 1, 0)).await;
        let echo = raw.recv_frame().await;
        assert_eq!(echo.header().command_raw(), ECHO_REPLY);
        let area = echo.header().command_area();
        Self {
            id: ClientId::from_raw(echo.header().client()),
            handler_shard: u16::from_le_bytes([area[0], area[1]]),
            raw,
        }
    }

    /// Sends a sealed frame built by [`frame`].
    pub async fn send(&mut self, command: u8, request: u64, area: &[u8], body: &[u8]) {
        self.raw.send(&frame(command, request, area, body)).await;
    }

    /// The next frame, which must have `command`.
    pub async fn expect(&mut self, command: u8) -> Frame {
        let frame = self.raw.recv_frame().await;
        assert_eq!(
            frame.header().command_raw(),
            command,
            "client {} expected command {command}, got {frame:?}",
            self.id
        );
        frame
    }

    /// Proves nothing else was queued for this client: the next frame is
    /// the answer to a fresh echo.
    pub async fn barrier(&mut self) {
        self.raw.send(&frames::app(ECHO, 77, 0)).await;
        let echo = self.expect(ECHO_REPLY).await;
        assert_eq!(echo.header().request(), 77);
    }
}

/// Connects `n` clients one after the other (so placement sees them in
/// order).
pub async fn connect_many<T: TestTransport>(addr: SocketAddr, n: usize) -> Vec<Client<T::Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Client::new(T::connect(addr).await).await);
    }
    clients
}

/// How many of `clients` each of `count` shards owns.
pub fn per_shard<C>(clients: &[Client<C>], count: u16) -> Vec<usize> {
    let mut counts = vec![0; usize::from(count)];
    for c in clients {
        counts[usize::from(c.id.shard())] += 1;
    }
    counts
}

/// Shuts down from a blocking-pool thread so this runtime keeps serving the
/// test's clients meanwhile.
pub async fn shutdown(shards: Shards, grace: Duration) -> ShardsShutdownReport {
    within(
        "shutdown of every shard",
        compio::runtime::spawn_blocking(move || shards.shutdown(grace)),
    )
    .await
    .expect("shutdown did not panic")
}

/// Round-robin over 4 shards puts 25 of 100 clients on each; every id
/// carries its shard, is unique and non-zero; every handshake ran on the
/// thread of the shard that owns the client (the socket was handed over
/// before any handshake).
pub async fn round_robin_places_100_clients_25_per_shard_and_handshakes_on_the_owner<
    T: ShardTransport,
>() {
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(4));
    let clients = connect_many::<T>(shards.local_addrs()[0], 100).await;

    assert_eq!(per_shard(&clients, 4), [25, 25, 25, 25]);
    let ids: HashSet<u128> = clients.iter().map(|c| c.id.as_raw()).collect();
    assert_eq!(ids.len(), 100, "ids are unique across shards");
    for c in &clients {
        assert_ne!(c.id.as_raw(), 0);
        assert_eq!(
            c.id.shard(),
            c.handler_shard,
            "the owning shard's handler answered"
        );
    }

    let mut established = HashMap::new();
    let mut connected = HashMap::new();
    for event in harness.drain_now() {
        match event {
            Event::Established { peer, thread } => {
                established.insert(peer, thread);
            }
            Event::Connected { shard, id, peer } => {
                assert_eq!(shard, id.shard(), "on_connected runs on the owning shard");
                connected.insert(id, peer);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(connected.len(), 100);
    for c in &clients {
        let peer = connected[&c.id];
        assert_eq!(
            established.get(&peer).map(String::as_str),
            Some(format!("bus-shard-{}", c.id.shard()).as_str()),
            "the handshake of {} ({peer}) ran on its owning shard",
            c.id
        );
    }

    let stats = shards.stats().expect("stats");
    for s in &stats {
        assert_eq!(s.bus.connections_total, 25, "shard {}", s.shard);
        assert_eq!(s.handoffs_in, if s.shard == 0 { 0 } else { 25 });
        assert_eq!(s.handoffs_refused + s.handoff_failures, 0);
        assert_eq!(s.bus.handshake_failures, 0);
        assert_eq!(
            s.pending_connections, 0,
            "every hand-over finished its handshake"
        );
    }
    drop(clients);
    let report = shutdown(shards, GRACE).await;
    assert_eq!(report.threads_joined, 4);
}

/// With `shard0_takes_clients = false`, shard 0 only accepts.
pub async fn shard0_takes_no_clients_when_configured<T: ShardTransport>() {
    let harness = Harness::new();
    let mut config = ShardsConfig::new(3);
    config.shard0_takes_clients = false;
    let shards = harness.start_probed::<T>(config);
    let clients = connect_many::<T>(shards.local_addrs()[0], 30).await;
    assert_eq!(per_shard(&clients, 3), [0, 15, 15]);
    drop(clients);
    shutdown(shards, GRACE).await;
}

/// Least-connections spreads evenly, then refills the shard that emptied.
pub async fn least_connections_fills_the_emptiest_shard_first<T: ShardTransport>() {
    let harness = Harness::new();
    let mut config = ShardsConfig::new(3);
    config.placement = Placement::LeastConnections;
    let shards = harness.start_probed::<T>(config);
    let addr = shards.local_addrs()[0];
    let clients = connect_many::<T>(addr, 6).await;
    assert_eq!(per_shard(&clients, 3), [2, 2, 2]);

    // Empty shard 1, and wait until its handler has seen both go.
    let (on_one, mut others): (Vec<_>, Vec<_>) =
        clients.into_iter().partition(|c| c.id.shard() == 1);
    let gone: HashSet<ClientId> = on_one.iter().map(|c| c.id).collect();
    for mut c in on_one {
        c.raw.close().await;
    }
    let mut lost = HashSet::new();
    while lost != gone {
        if let Event::Lost { id, .. } = harness.next().await {
            lost.insert(id);
        }
    }

    let newcomers = connect_many::<T>(addr, 2).await;
    let placed: Vec<ClientId> = newcomers.iter().map(|c| c.id).collect();
    assert!(
        placed.iter().all(|id| id.shard() == 1),
        "both go to the emptied shard: {placed:?}"
    );
    others.extend(newcomers);
    assert_eq!(per_shard(&others, 3), [2, 2, 2]);
    drop(others);
    shutdown(shards, GRACE).await;
}

/// A handler on shard A sends to a client on shard B: it arrives once. The
/// handler on B sends to a client on C: it arrives. The handle sends from
/// outside every shard; a shard that does not exist refuses.
pub async fn a_frame_from_shard_a_reaches_a_client_on_shard_b_once_and_b_replies_to_c<
    T: ShardTransport,
>() {
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(4));
    let mut c = connect_many::<T>(shards.local_addrs()[0], 4).await;
    for (i, client) in c.iter().enumerate() {
        assert_eq!(usize::from(client.id.shard()), i);
    }

    // A (shard 0) → B (shard 1).
    let (b_id, c_id) = (c[1].id, c[2].id);
    c[0].send(RELAY, 7, &b_id.as_raw().to_le_bytes(), b"from a")
        .await;
    let ack = c[0].expect(RELAY_ACK).await;
    assert_eq!(ack.header().command_area()[0], 0, "the send was accepted");
    let delivery = c[1].expect(DELIVERY).await;
    assert_eq!(delivery.body(), b"from a");
    assert_eq!(delivery.header().request(), 7);
    c[1].barrier().await; // exactly once: nothing else came before the echo

    // The handler on B (shard 1) sends to a client on C (shard 2).
    c[1].send(RELAY, 8, &c_id.as_raw().to_le_bytes(), b"from b")
        .await;
    assert_eq!(c[1].expect(RELAY_ACK).await.header().command_area()[0], 0);
    let delivery = c[2].expect(DELIVERY).await;
    assert_eq!(delivery.body(), b"from b");
    assert_eq!(id_at(&delivery), b_id, "asked for by B's client");
    c[2].barrier().await;

    // From outside every shard, through the handle.
    shards
        .send_to_client(c[3].id, frame(DELIVERY, 9, &[], b"from outside"))
        .expect("forwarded");
    assert_eq!(c[3].expect(DELIVERY).await.body(), b"from outside");
    c[3].barrier().await;

    // A shard that does not run refuses; nothing is lost silently.
    let nowhere = ClientId::from_raw((9u128 << 112) | 1);
    assert_eq!(
        shards.send_to_client(nowhere, frame(DELIVERY, 0, &[], &[])),
        Err(SendError::NotConnected)
    );

    let stats = shards.stats().expect("stats");
    assert_eq!(stats[0].forwarded, 1);
    assert_eq!(stats[1].forwarded, 1);
    for s in &stats[1..] {
        assert_eq!(s.inbox_received, 1, "shard {}", s.shard);
    }
    assert!(
        stats
            .iter()
            .all(|s| s.inbox_undeliverable == 0 && s.inbox_full == 0)
    );
    drop(c); // our closes let every shard finish its connections at once
    shutdown(shards, GRACE).await;
}

/// `Shards::request_client` from outside every shard reaches a client on
/// each shard as a request from the server (spec §9); each client's answer
/// comes back through the returned reply, and the handlers never see the
/// answers. A request to a client that then disconnects completes with
/// `Disconnected` at once.
pub async fn a_request_from_outside_the_shards_gets_each_clients_reply<T: ShardTransport>() {
    const LONG: Duration = Duration::from_secs(30);
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(2));
    let mut clients = connect_many::<T>(shards.local_addrs()[0], 2).await;
    for (shard, client) in clients.iter_mut().enumerate() {
        assert_eq!(usize::from(client.id.shard()), shard);
        let body = format!("for shard {shard}");
        let mut question = FrameMut::with_body(Command::from_u8(DELIVERY), body.as_bytes());
        question.seal();
        let reply = shards
            .request_client(client.id, question, LONG)
            .expect("forwarded");
        let asked = client.expect(DELIVERY).await;
        let id = asked.header().request();
        assert_ne!(id & bus_core::SERVER_REQUEST_BIT, 0);
        assert_eq!(asked.body(), body.as_bytes());
        client.send(ANSWER_COMMAND, id, &[], b"answered").await;
        let answer = within("the reply", reply.outcome())
            .await
            .expect("answered");
        assert_eq!(answer.header().request(), id);
        assert_eq!(answer.body(), b"answered");
        assert_eq!(answer.header().client(), client.id.as_raw(), "stamped");
        client.barrier().await;
    }
    let gone = clients.pop().expect("two clients");
    let reply = shards
        .request_client(gone.id, FrameMut::new(Command::from_u8(DELIVERY), 0), LONG)
        .expect("forwarded");
    drop(gone);
    let started = std::time::Instant::now();
    let outcome = within("the reply", reply.outcome()).await;
    assert!(
        matches!(outcome, Err(bus_core::RequestError::Disconnected { .. })),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Each answer completed its request on the owning shard (so no
    // handler saw it), and the last request failed with its connection.
    let stats = shards.stats().expect("stats");
    let replied: Vec<u64> = stats.iter().map(|s| s.bus.requests.replied).collect();
    assert_eq!(replied, [1, 1], "{stats:?}");
    assert_eq!(stats[1].bus.requests.disconnected, 1);
    drop(clients);
    shutdown(shards, GRACE).await;
}

/// The command test clients answer server requests with.
const ANSWER_COMMAND: u8 = 41;

/// A broadcast from a handler on one shard reaches every client on every
/// shard exactly once, the sender included.
pub async fn broadcast_from_one_shard_reaches_every_client_on_every_shard_once<
    T: ShardTransport,
>() {
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(4));
    let mut clients = connect_many::<T>(shards.local_addrs()[0], 12).await;
    assert_eq!(per_shard(&clients, 4), [3, 3, 3, 3]);

    let sender = clients
        .iter()
        .position(|c| c.id.shard() == 2)
        .expect("a client on shard 2");
    clients[sender].send(BROADCAST, 5, &[], b"to all").await;
    // Its own delivery was queued before the ack, on the same connection.
    assert_eq!(
        clients[sender].expect(BROADCAST_DELIVERY).await.body(),
        b"to all"
    );
    let ack = clients[sender].expect(BROADCAST_ACK).await;
    assert_eq!(
        u32_at(ack.header().command_area(), 0),
        3,
        "queued on shard 2"
    );
    assert_eq!(
        u32_at(ack.header().command_area(), 4),
        3,
        "forwarded to the 3 other shards"
    );
    for (i, c) in clients.iter_mut().enumerate() {
        if i != sender {
            let delivery = c.expect(BROADCAST_DELIVERY).await;
            assert_eq!(delivery.body(), b"to all");
            assert_eq!(delivery.header().request(), 5);
        }
        c.barrier().await; // once: the next frame is the echo
    }

    let stats = shards.stats().expect("stats");
    for s in &stats {
        assert_eq!(
            s.inbox_received,
            u64::from(s.shard != 2),
            "shard {}",
            s.shard
        );
    }

    // From outside every shard, through the handle: every shard takes it.
    let outside = frame(BROADCAST_DELIVERY, 6, &[], b"from outside");
    assert_eq!(shards.broadcast(&outside), 4);
    for c in &mut clients {
        let delivery = c.expect(BROADCAST_DELIVERY).await;
        assert_eq!(delivery.body(), b"from outside");
        c.barrier().await;
    }
    drop(clients);
    shutdown(shards, GRACE).await;
}

/// While shard 1 is held, a handler on shard 0 sends more frames to a
/// client of shard 1 than its inbox holds: the extra sends return
/// `InboxFull` at once (the handler answers while shard 1 is still held),
/// both shards count them, and exactly the accepted frames arrive later.
pub async fn a_full_inbox_refuses_with_inbox_full_without_blocking_and_is_counted<
    T: ShardTransport,
>() {
    const CAPACITY: u32 = 4;
    const FLOODED: u32 = 10;
    let harness = Harness::new();
    let mut config = ShardsConfig::new(2);
    config.inbox_capacity_frames = CAPACITY as usize;
    let shards = harness.start_probed::<T>(config);
    let mut c = connect_many::<T>(shards.local_addrs()[0], 2).await;
    let (a, b) = (0, 1);
    assert_eq!(c[b].id.shard(), 1);

    c[b].send(BLOCK, 1, &[], &[]).await;
    loop {
        if let Event::Blocked { shard } = harness.next().await {
            assert_eq!(shard, 1);
            break;
        }
    }

    let mut area = [0u8; 20];
    area[..16].copy_from_slice(&c[b].id.as_raw().to_le_bytes());
    area[16..].copy_from_slice(&FLOODED.to_le_bytes());
    c[a].send(FLOOD, 2, &area, &[]).await;
    let ack = c[a].expect(FLOOD_ACK).await;
    let counts = ack.header().command_area();
    assert_eq!(
        u32_at(counts, 0),
        CAPACITY,
        "accepted up to the inbox capacity"
    );
    assert_eq!(u32_at(counts, 4), FLOODED - CAPACITY, "the rest: InboxFull");
    assert_eq!(u32_at(counts, 8), 0);

    harness.release.send(()).expect("release");
    c[b].expect(BLOCK_ACK).await;
    for i in 0..u64::from(CAPACITY) {
        assert_eq!(c[b].expect(DELIVERY).await.header().request(), i);
    }
    c[b].barrier().await;

    let stats = shards.stats().expect("stats");
    let refused = u64::from(FLOODED - CAPACITY);
    assert_eq!(stats[0].forwarded, u64::from(CAPACITY));
    assert_eq!(stats[0].forward_inbox_full, refused);
    assert_eq!(stats[1].inbox_full, refused);
    assert_eq!(stats[1].inbox_received, u64::from(CAPACITY));
    assert_eq!(stats[1].inbox_depth, 0);
    assert_eq!(stats[1].inbox_capacity, CAPACITY as usize);
    drop(c);
    shutdown(shards, GRACE).await;
}

/// A handler panic on shard 2 closes only that connection; every other
/// client, on every shard, keeps being served.
pub async fn a_panicking_handler_closes_only_its_connection_and_every_shard_keeps_serving<
    T: ShardTransport,
>() {
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(4));
    let mut clients = connect_many::<T>(shards.local_addrs()[0], 8).await;
    let victim = clients
        .iter()
        .position(|c| c.id.shard() == 2)
        .expect("a client on shard 2");
    let mut victim = clients.swap_remove(victim);
    victim.raw.send(&frames::app(PANIC_HANDLER, 1, 0)).await;
    victim.raw.expect_closed().await;
    loop {
        if let Event::Lost { shard, id } = harness.next().await {
            assert_eq!((shard, id), (2, victim.id));
            break;
        }
    }
    for c in &mut clients {
        c.barrier().await;
    }
    let stats = shards.stats().expect("stats");
    for s in &stats {
        assert_eq!(
            s.bus.handler_panics,
            u64::from(s.shard == 2),
            "shard {}",
            s.shard
        );
        assert_eq!(s.bus.connections, if s.shard == 2 { 1 } else { 2 });
    }
    drop(clients);
    shutdown(shards, GRACE).await;
}

/// Shutting every shard down says `Goodbye(ShuttingDown)` to every client
/// and joins every thread within the bound, with no task left.
pub async fn graceful_shutdown_says_goodbye_to_every_client_and_joins_every_thread<
    T: ShardTransport,
>() {
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(4));
    let clients = connect_many::<T>(shards.local_addrs()[0], 20).await;

    let stopping = compio::runtime::spawn_blocking(move || shards.shutdown(GRACE));
    for mut c in clients {
        c.raw
            .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
            .await;
        c.raw.close().await;
    }
    let report = within("shutdown", stopping).await.expect("no panic");
    assert_eq!(report.threads_joined, 4);
    assert_eq!(report.threads_left, 0);
    assert_eq!(report.tasks_left(), 0);
    assert_eq!(report.connections(), 20);
    assert_eq!(report.shards.len(), 4);
    let shutting_down = usize::try_from(GoodbyeReason::ShuttingDown.code()).expect("small");
    for exit in &report.shards {
        assert_eq!(exit.bus.cancelled, 0, "shard {} closed in time", exit.shard);
        assert_eq!(exit.stats.bus.goodbyes_sent[shutting_down], 5);
        // Every client closed at once: no shard had to wait for the grace.
        assert!(
            exit.bus.elapsed < GRACE,
            "shard {} finished before its grace: {:?}",
            exit.shard,
            exit.bus
        );
    }
    assert!(report.elapsed < GRACE + bus_shard::config::SHUTDOWN_MARGIN);
    assert!(
        report.elapsed < GRACE,
        "no shard waited for the grace: {report:?}"
    );
}

/// Frames a shard's inbox accepted before shutdown reach their client
/// before its `Goodbye(ShuttingDown)`: an accepted send is not lost.
pub async fn shutdown_delivers_what_the_inboxes_accepted_before_the_goodbye<T: ShardTransport>() {
    const ACCEPTED: u32 = 4;
    let harness = Harness::new();
    let shards = harness.start_probed::<T>(ShardsConfig::new(2));
    let mut c = connect_many::<T>(shards.local_addrs()[0], 2).await;
    let (a, b) = (0, 1);

    // Hold shard 1 so the frames stay in its inbox.
    c[b].send(BLOCK, 1, &[], &[]).await;
    loop {
        if let Event::Blocked { shard } = harness.next().await {
            assert_eq!(shard, 1);
            break;
        }
    }
    let mut area = [0u8; 20];
    area[..16].copy_from_slice(&c[b].id.as_raw().to_le_bytes());
    area[16..].copy_from_slice(&ACCEPTED.to_le_bytes());
    c[a].send(FLOOD, 2, &area, &[]).await;
    assert_eq!(
        u32_at(c[a].expect(FLOOD_ACK).await.header().command_area(), 0),
        ACCEPTED
    );

    let stopping = compio::runtime::spawn_blocking(move || shards.shutdown(GRACE));
    // Shard 0 says goodbye once it has its stop request; shard 1 is still held.
    c[a].raw
        .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
        .await;
    harness.release.send(()).expect("release");
    c[b].expect(BLOCK_ACK).await;
    for i in 0..u64::from(ACCEPTED) {
        assert_eq!(c[b].expect(DELIVERY).await.header().request(), i);
    }
    c[b].raw
        .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
        .await;
    drop(c);
    let report = within("shutdown", stopping).await.expect("no panic");
    assert_eq!(report.threads_joined, 2);
    assert_eq!(report.shards[1].stats.inbox_received, u64::from(ACCEPTED));
    assert_eq!(report.shards[1].stats.inbox_undeliverable, 0);
}

/// Instantiates every scenario of this module as a `#[compio::test]` for
/// one [`ShardTransport`].
#[macro_export]
macro_rules! shard_suite {
    ($transport:ty) => {
        $crate::instantiate_scenarios!(shard, $transport;
            round_robin_places_100_clients_25_per_shard_and_handshakes_on_the_owner,
            shard0_takes_no_clients_when_configured,
            least_connections_fills_the_emptiest_shard_first,
            a_frame_from_shard_a_reaches_a_client_on_shard_b_once_and_b_replies_to_c,
            broadcast_from_one_shard_reaches_every_client_on_every_shard_once,
            a_full_inbox_refuses_with_inbox_full_without_blocking_and_is_counted,
            a_panicking_handler_closes_only_its_connection_and_every_shard_keeps_serving,
            graceful_shutdown_says_goodbye_to_every_client_and_joins_every_thread,
            shutdown_delivers_what_the_inboxes_accepted_before_the_goodbye,
            a_request_from_outside_the_shards_gets_each_clients_reply,
        );
    };
}
