//! The multi-shard runtime over real loopback TCP: placement, ids, routing
//! between shards, broadcast, inbox backpressure, panic isolation and
//! shutdown. Four shards on a two-core machine on purpose: shards share
//! cores, so nothing here may depend on timing.

#![allow(clippy::missing_panics_doc, reason = "tests assert by panicking")]

use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use async_channel::{Receiver, Sender};
use bus_core::{
    Bus, BusConfig, ClientId, CloseReason, Command, ConnectionInfo, DecodeLimits, Error, Frame,
    FrameMut, GoodbyeReason, Handler, Peer, SendError,
    transport::{Connection, Listener, TransportKind},
};
use bus_shard::{
    DelegatedTransport, Placement, ShardContext, ShardError, Shards, ShardsConfig,
    ShardsShutdownReport,
};
use bus_tcp::{TcpConnection, TcpListenerConfig};
use bus_tests::{
    STEP,
    client::{RawClient, TcpClient},
    frames::{self, ECHO, ECHO_REPLY, PANIC_HANDLER},
    within,
};

/// Send `command_area[0..16]` (a client id) a `DELIVERY` with this frame's
/// body; the sender gets `RELAY_ACK` with the send's outcome.
const RELAY: u8 = 40;
/// What a relayed or flooded frame arrives as.
const DELIVERY: u8 = 41;
/// `command_area[0]` = [`outcome`] of the relay.
const RELAY_ACK: u8 = 42;
/// Send `command_area[16..20]` frames to the client in
/// `command_area[0..16]`; the sender gets `FLOOD_ACK` with the counts.
const FLOOD: u8 = 43;
/// `command_area[0..4]` = sends accepted, `[4..8]` = sends refused with
/// `InboxFull`, `[8..12]` = other refusals.
const FLOOD_ACK: u8 = 44;
/// Block this shard's thread until the test releases it (bounded by STEP).
const BLOCK: u8 = 45;
/// Sent once the blocked shard is released.
const BLOCK_ACK: u8 = 46;
/// Broadcast a `BROADCAST_DELIVERY` with this frame's body to every client
/// on every shard; the sender gets `BROADCAST_ACK` with local queued
/// (`[0..4]`) and shards forwarded to (`[4..8]`).
const BROADCAST: u8 = 18;
const BROADCAST_DELIVERY: u8 = 19;
const BROADCAST_ACK: u8 = 20;

const GRACE: Duration = Duration::from_secs(5);

/// What the handlers tell the test.
#[derive(Debug, Clone)]
enum Event {
    Connected {
        shard: u16,
        id: ClientId,
    },
    Lost {
        shard: u16,
        id: ClientId,
    },
    Blocked {
        shard: u16,
    },
    /// A connection's handshake (`establish`) ran on this thread.
    Established {
        peer: SocketAddr,
        thread: String,
    },
}

/// Shared by the handlers of every shard (hence `Send + Sync`); each shard
/// gets its own [`App`] from it.
#[derive(Clone)]
struct AppFactory {
    events: Sender<Event>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

/// One shard's handler.
struct App {
    shard: u16,
    events: Sender<Event>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

fn outcome(result: Result<(), SendError>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(SendError::QueueFull) => 1,
        Err(SendError::NotConnected) => 2,
        Err(SendError::ShuttingDown) => 3,
        Err(SendError::InboxFull) => 4,
        Err(_) => 5,
    }
}

fn reply(command: u8, request: u64, area: &[u8], body: &[u8]) -> Frame {
    let mut frame = FrameMut::with_body(Command::from_u8(command), body);
    frame.header_mut().set_request(request);
    frame.header_mut().command_area_mut()[..area.len()].copy_from_slice(area);
    frame.seal();
    frame.freeze()
}

fn target_of(frame: &Frame) -> ClientId {
    let area = frame.header().command_area();
    ClientId::from_raw(u128::from_le_bytes(
        area[..16].try_into().expect("16 bytes"),
    ))
}

fn u32_at(area: &[u8; 128], at: usize) -> u32 {
    u32::from_le_bytes(area[at..at + 4].try_into().expect("4 bytes"))
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
                    target_of(&frame),
                    reply(DELIVERY, request, &id.as_raw().to_le_bytes(), frame.body()),
                );
                let _ = bus.send_to_client(id, reply(RELAY_ACK, request, &[outcome(sent)], &[]));
            }
            FLOOD => {
                let target = target_of(&frame);
                let count = u32_at(frame.header().command_area(), 16);
                let (mut ok, mut inbox_full, mut other) = (0u32, 0u32, 0u32);
                for i in 0..count {
                    match bus.send_to_client(target, reply(DELIVERY, u64::from(i), &[], &[])) {
                        Ok(()) => ok += 1,
                        Err(SendError::InboxFull) => inbox_full += 1,
                        Err(_) => other += 1,
                    }
                }
                let mut area = [0u8; 12];
                area[..4].copy_from_slice(&ok.to_le_bytes());
                area[4..8].copy_from_slice(&inbox_full.to_le_bytes());
                area[8..].copy_from_slice(&other.to_le_bytes());
                let _ = bus.send_to_client(id, reply(FLOOD_ACK, request, &area, &[]));
            }
            BLOCK => {
                self.record(Event::Blocked { shard: self.shard });
                // Holds this shard's thread: nothing on it runs, its inbox
                // fills. Bounded, so a broken test cannot hang forever.
                let released = self
                    .release
                    .lock()
                    .expect("release lock")
                    .recv_timeout(STEP);
                assert!(released.is_ok(), "the test never released the shard");
                let _ = bus.send_to_client(id, reply(BLOCK_ACK, request, &[], &[]));
            }
            BROADCAST => {
                let delivery = reply(BROADCAST_DELIVERY, request, &[], frame.body());
                let report = bus.broadcast(&delivery);
                let mut area = [0u8; 8];
                area[..4].copy_from_slice(
                    &u32::try_from(report.queued)
                        .unwrap_or(u32::MAX)
                        .to_le_bytes(),
                );
                area[4..].copy_from_slice(
                    &u32::try_from(report.shards_forwarded)
                        .unwrap_or(u32::MAX)
                        .to_le_bytes(),
                );
                let _ = bus.send_to_client(id, reply(BROADCAST_ACK, request, &area, &[]));
            }
            PANIC_HANDLER => panic!("test handler panics on command {PANIC_HANDLER}"),
            _ => {}
        }
    }

    fn on_connected(&self, _bus: &Bus, peer: Peer, _info: &ConnectionInfo) {
        if let Peer::Client(id) = peer {
            self.record(Event::Connected {
                shard: self.shard,
                id,
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

/// The test's ends of the app's channels.
struct Harness {
    events: Receiver<Event>,
    release: mpsc::Sender<()>,
    factory: AppFactory,
}

impl Harness {
    fn new() -> Self {
        let (events_tx, events) = async_channel::bounded(100_000);
        let (release, release_rx) = mpsc::channel();
        Self {
            events,
            release,
            factory: AppFactory {
                events: events_tx,
                release: Arc::new(Mutex::new(release_rx)),
            },
        }
    }

    fn start(&self, builder: bus_shard::ShardsBuilder) -> Shards {
        let factory = self.factory.clone();
        builder
            .start(move |ctx: &ShardContext| App {
                shard: ctx.shard,
                events: factory.events.clone(),
                release: factory.release.clone(),
            })
            .expect("shards start")
    }

    async fn next(&self) -> Event {
        within("a handler event", self.events.recv())
            .await
            .expect("handlers alive")
    }
}

fn loopback() -> TcpListenerConfig {
    TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr"))
}

fn builder(config: ShardsConfig) -> bus_shard::ShardsBuilder {
    Shards::builder(config, BusConfig::default())
}

/// A connected client, its id (from the stamped echo) and the shard whose
/// handler answered.
struct Client {
    raw: TcpClient,
    id: ClientId,
    handler_shard: u16,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let mut raw = TcpClient::connect(addr).await;
        raw.send(&frames::app(ECHO, 1, 0)).await;
        let echo = raw.recv_frame().await;
        assert_eq!(echo.header().command_raw(), ECHO_REPLY);
        let id = ClientId::from_raw(echo.header().client());
        let area = echo.header().command_area();
        let handler_shard = u16::from_le_bytes([area[0], area[1]]);
        Self {
            raw,
            id,
            handler_shard,
        }
    }

    async fn send_with_area(&mut self, command: u8, request: u64, area: &[u8], body: &[u8]) {
        self.raw.send(&reply(command, request, area, body)).await;
    }

    async fn expect(&mut self, command: u8) -> Frame {
        let frame = self.raw.recv_frame().await;
        assert_eq!(
            frame.header().command_raw(),
            command,
            "client {} expected command {command}, got {frame:?}",
            self.id
        );
        frame
    }

    /// Proves nothing else was queued before: the next frame is the echo.
    async fn barrier(&mut self) {
        self.raw.send(&frames::app(ECHO, 77, 0)).await;
        let echo = self.expect(ECHO_REPLY).await;
        assert_eq!(echo.header().request(), 77);
    }
}

async fn connect_many(addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Client::connect(addr).await);
    }
    clients
}

fn per_shard(clients: &[Client], count: u16) -> Vec<usize> {
    let mut counts = vec![0; usize::from(count)];
    for c in clients {
        counts[usize::from(c.id.shard())] += 1;
    }
    counts
}

/// Shuts down from a blocking-pool thread so this runtime keeps serving
/// the test's clients meanwhile.
async fn shutdown(shards: Shards, grace: Duration) -> ShardsShutdownReport {
    within(
        "shutdown of every shard",
        compio::runtime::spawn_blocking(move || shards.shutdown(grace)),
    )
    .await
    .expect("shutdown did not panic")
}

/// Plain TCP whose connections record the thread their handshake
/// (`establish`) runs on.
#[derive(Clone)]
struct ProbedTcp(Sender<Event>);

struct Probed(TcpConnection, Sender<Event>);

impl DelegatedTransport for ProbedTcp {
    type Connection = Probed;

    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn wrap(&self, stream: std::net::TcpStream) -> io::Result<Probed> {
        Ok(Probed(TcpConnection::from_std(stream)?, self.0.clone()))
    }
}

impl Connection for Probed {
    type Reader = <TcpConnection as Connection>::Reader;
    type Writer = <TcpConnection as Connection>::Writer;

    fn transport(&self) -> TransportKind {
        self.0.transport()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.0.peer_addr()
    }

    async fn establish(
        self,
        limits: DecodeLimits,
        read_buffer_bytes: usize,
    ) -> Result<(Self::Reader, Self::Writer, ConnectionInfo), Error> {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let peer = self.0.peer_addr();
        self.1
            .try_send(Event::Established { peer, thread })
            .expect("event channel");
        self.0.establish(limits, read_buffer_bytes).await
    }
}

#[compio::test]
async fn round_robin_places_100_clients_25_per_shard_with_ids_carrying_their_shard() {
    let harness = Harness::new();
    let shards = harness.start(
        builder(ShardsConfig::new(4)).listen(loopback(), ProbedTcp(harness.factory.events.clone())),
    );
    let clients = connect_many(shards.local_addrs()[0], 100).await;

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

    // Every handshake ran on the thread of the shard that owns the client.
    let mut established = HashMap::new();
    let mut connected = 0;
    for event in std::iter::from_fn(|| harness.events.try_recv().ok()) {
        match event {
            Event::Established { peer, thread } => {
                established.insert(peer, thread);
            }
            Event::Connected { shard, id } => {
                assert_eq!(shard, id.shard(), "on_connected runs on the owning shard");
                connected += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(connected, 100);
    for c in &mut clients.into_iter() {
        let mut raw = c.raw;
        let local = raw.stream().local_addr().expect("local addr");
        assert_eq!(
            established.get(&local).map(String::as_str),
            Some(format!("bus-shard-{}", c.id.shard()).as_str()),
            "handshake of {local} ran on its owning shard"
        );
    }

    let stats = shards.stats().expect("stats");
    for s in &stats {
        assert_eq!(s.bus.connections_total, 25, "shard {}", s.shard);
        assert_eq!(s.handoffs_in, if s.shard == 0 { 0 } else { 25 });
        assert_eq!(s.handoffs_refused, 0);
    }
    let report = shutdown(shards, GRACE).await;
    assert_eq!(report.threads_joined, 4);
}

#[compio::test]
async fn shard0_takes_no_clients_when_configured() {
    let harness = Harness::new();
    let mut config = ShardsConfig::new(3);
    config.shard0_takes_clients = false;
    let shards = harness.start(builder(config).listen_tcp(loopback()));
    let clients = connect_many(shards.local_addrs()[0], 30).await;
    assert_eq!(per_shard(&clients, 3), [0, 15, 15]);
    drop(clients);
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn least_connections_fills_the_emptiest_shard_first() {
    let harness = Harness::new();
    let mut config = ShardsConfig::new(3);
    config.placement = Placement::LeastConnections;
    let shards = harness.start(builder(config).listen_tcp(loopback()));
    let addr = shards.local_addrs()[0];
    let clients = connect_many(addr, 6).await;
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

    let newcomers = connect_many(addr, 2).await;
    assert!(
        newcomers.iter().all(|c| c.id.shard() == 1),
        "both go to the emptied shard: {:?}",
        newcomers.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    others.extend(newcomers);
    assert_eq!(per_shard(&others, 3), [2, 2, 2]);
    drop(others);
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn a_frame_from_shard_a_reaches_a_client_on_shard_b_once_and_b_replies_to_c() {
    let harness = Harness::new();
    let shards = harness.start(builder(ShardsConfig::new(4)).listen_tcp(loopback()));
    let mut c = connect_many(shards.local_addrs()[0], 4).await;
    for (i, client) in c.iter().enumerate() {
        assert_eq!(usize::from(client.id.shard()), i);
    }

    // A (shard 0) → B (shard 1).
    let (b_id, c_id) = (c[1].id, c[2].id);
    c[0].send_with_area(RELAY, 7, &b_id.as_raw().to_le_bytes(), b"from a")
        .await;
    let ack = c[0].expect(RELAY_ACK).await;
    assert_eq!(ack.header().command_area()[0], 0, "the send was accepted");
    let delivery = c[1].expect(DELIVERY).await;
    assert_eq!(delivery.body(), b"from a");
    assert_eq!(delivery.header().request(), 7);
    c[1].barrier().await; // exactly once: nothing else came before the echo

    // The handler on B (shard 1) sends to a client on C (shard 2).
    c[1].send_with_area(RELAY, 8, &c_id.as_raw().to_le_bytes(), b"from b")
        .await;
    assert_eq!(c[1].expect(RELAY_ACK).await.header().command_area()[0], 0);
    let delivery = c[2].expect(DELIVERY).await;
    assert_eq!(delivery.body(), b"from b");
    assert_eq!(
        u128::from_le_bytes(
            delivery.header().command_area()[..16]
                .try_into()
                .expect("16")
        ),
        b_id.as_raw(),
        "sent by B's client"
    );
    c[2].barrier().await;

    // From outside every shard, through the handle.
    shards
        .send_to_client(c[3].id, reply(DELIVERY, 9, &[], b"from outside"))
        .expect("forwarded");
    assert_eq!(c[3].expect(DELIVERY).await.body(), b"from outside");

    // A send to a shard that does not exist is refused, not lost silently.
    let nowhere = ClientId::from_raw((9u128 << 112) | 1);
    assert_eq!(
        shards.send_to_client(nowhere, reply(DELIVERY, 0, &[], &[])),
        Err(SendError::NotConnected)
    );

    let stats = shards.stats().expect("stats");
    assert_eq!(stats[0].forwarded, 1);
    assert_eq!(stats[1].forwarded, 1);
    assert_eq!(stats[1].inbox_received, 1);
    assert_eq!(stats[2].inbox_received, 1);
    assert_eq!(stats[3].inbox_received, 1);
    assert!(
        stats
            .iter()
            .all(|s| s.inbox_undeliverable == 0 && s.inbox_full == 0)
    );
    drop(c); // our FINs let every shard finish its close at once
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn broadcast_from_one_shard_reaches_every_client_on_every_shard_once() {
    let harness = Harness::new();
    let shards = harness.start(builder(ShardsConfig::new(4)).listen_tcp(loopback()));
    let mut clients = connect_many(shards.local_addrs()[0], 12).await;
    assert_eq!(per_shard(&clients, 4), [3, 3, 3, 3]);

    // The sender is on shard 2.
    let sender = clients
        .iter()
        .position(|c| c.id.shard() == 2)
        .expect("a client on shard 2");
    clients[sender]
        .send_with_area(BROADCAST, 5, &[], b"to all")
        .await;
    // Its own Delivery was queued before the ack, on the same connection.
    let own = clients[sender].expect(BROADCAST_DELIVERY).await;
    assert_eq!(own.body(), b"to all");
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
        let expected = u64::from(s.shard != 2);
        assert_eq!(s.inbox_received, expected, "shard {}", s.shard);
    }
    drop(clients);
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn a_full_inbox_refuses_with_inbox_full_without_blocking_and_is_counted() {
    const CAPACITY: usize = 4;
    const FLOODED: u32 = 10;
    let harness = Harness::new();
    let mut config = ShardsConfig::new(2);
    config.inbox_capacity_frames = CAPACITY;
    let shards = harness.start(builder(config).listen_tcp(loopback()));
    let mut c = connect_many(shards.local_addrs()[0], 2).await;
    let (a, b) = (0, 1);
    assert_eq!(c[b].id.shard(), 1);

    // Hold shard 1's thread so nothing drains its inbox.
    c[b].send_with_area(BLOCK, 1, &[], &[]).await;
    loop {
        if let Event::Blocked { shard } = harness.next().await {
            assert_eq!(shard, 1);
            break;
        }
    }

    // Shard 0's handler floods B: it gets its answer while shard 1 is still
    // blocked, so no send waited for the other shard.
    let mut area = [0u8; 20];
    area[..16].copy_from_slice(&c[b].id.as_raw().to_le_bytes());
    area[16..].copy_from_slice(&FLOODED.to_le_bytes());
    c[a].send_with_area(FLOOD, 2, &area, &[]).await;
    let ack = c[a].expect(FLOOD_ACK).await;
    let counts = ack.header().command_area();
    let capacity = u32::try_from(CAPACITY).expect("small");
    assert_eq!(
        u32_at(counts, 0),
        capacity,
        "accepted up to the inbox capacity"
    );
    assert_eq!(
        u32_at(counts, 4),
        FLOODED - capacity,
        "the rest refused as InboxFull"
    );
    assert_eq!(u32_at(counts, 8), 0);

    // Release shard 1: B gets its ack, then exactly the accepted frames.
    harness.release.send(()).expect("release");
    c[b].expect(BLOCK_ACK).await;
    for i in 0..u64::from(capacity) {
        assert_eq!(c[b].expect(DELIVERY).await.header().request(), i);
    }
    c[b].barrier().await;

    let stats = shards.stats().expect("stats");
    assert_eq!(stats[0].forwarded, u64::from(capacity));
    assert_eq!(stats[0].forward_inbox_full, u64::from(FLOODED - capacity));
    assert_eq!(stats[1].inbox_full, u64::from(FLOODED - capacity));
    assert_eq!(stats[1].inbox_received, u64::from(capacity));
    assert_eq!(stats[1].inbox_depth, 0);
    assert_eq!(stats[1].inbox_capacity, CAPACITY);
    drop(c);
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn a_panicking_handler_closes_only_its_connection_and_every_shard_keeps_serving() {
    let harness = Harness::new();
    let shards = harness.start(builder(ShardsConfig::new(4)).listen_tcp(loopback()));
    let mut clients = connect_many(shards.local_addrs()[0], 8).await;
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

#[compio::test]
async fn graceful_shutdown_says_goodbye_to_every_client_and_joins_every_thread() {
    let harness = Harness::new();
    let shards = harness.start(builder(ShardsConfig::new(4)).listen_tcp(loopback()));
    let clients = connect_many(shards.local_addrs()[0], 20).await;

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
    for exit in &report.shards {
        assert_eq!(exit.bus.cancelled, 0, "shard {} closed in time", exit.shard);
        let shutting_down = usize::try_from(GoodbyeReason::ShuttingDown.code()).expect("small");
        assert_eq!(exit.stats.bus.goodbyes_sent[shutting_down], 5);
    }
    assert!(report.elapsed < GRACE + bus_shard::config::SHUTDOWN_MARGIN);
}

#[compio::test]
async fn a_listener_served_on_one_shard_keeps_its_clients_there_and_is_reachable_from_others() {
    let harness = Harness::new();
    let shards = harness.start(
        builder(ShardsConfig::new(3))
            .listen_tcp(loopback())
            .serve_on(2, || bus_tcp::TcpListener::bind(&loopback())),
    );
    let addrs = shards.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let mut pinned = connect_many(addrs[1], 4).await;
    assert_eq!(per_shard(&pinned, 3), [0, 0, 4]);
    let mut other = Client::connect(addrs[0]).await;
    assert_eq!(other.id.shard(), 0);
    other
        .send_with_area(RELAY, 3, &pinned[0].id.as_raw().to_le_bytes(), b"cross")
        .await;
    assert_eq!(other.expect(RELAY_ACK).await.header().command_area()[0], 0);
    assert_eq!(pinned[0].expect(DELIVERY).await.body(), b"cross");
    pinned[0].barrier().await;
    drop((pinned, other));
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn pinned_shards_run_on_their_own_cpu() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut config = ShardsConfig::new(2);
    config.pin_cpus = true;
    let shards = builder(config)
        .start(move |ctx: &ShardContext| {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned());
            tx.lock()
                .expect("lock")
                .send((ctx.shard, allowed))
                .expect("send");
            |_: &Bus, _: Peer, _: Frame| {}
        })
        .expect("start");
    let mut seen: Vec<_> = rx.try_iter().collect();
    seen.sort();
    assert_eq!(
        seen.len(),
        2,
        "the factory ran once per shard before start returned"
    );
    for (shard, allowed) in seen {
        let expected = (usize::from(shard) % cores).to_string();
        assert_eq!(allowed.as_deref(), Some(expected.as_str()), "shard {shard}");
    }
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn a_listener_that_cannot_bind_fails_start_and_names_the_address() {
    let taken = bus_tcp::TcpListener::bind(&loopback()).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let harness = Harness::new();
    let factory = harness.factory.clone();
    let err = builder(ShardsConfig::new(3))
        .listen_tcp(TcpListenerConfig::new(addr))
        .start(move |ctx: &ShardContext| App {
            shard: ctx.shard,
            events: factory.events.clone(),
            release: factory.release.clone(),
        })
        .expect_err("port taken");
    assert!(
        matches!(err, ShardError::Listen { shard: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[compio::test]
async fn a_listener_on_a_shard_that_does_not_exist_is_refused() {
    let err = builder(ShardsConfig::new(2))
        .serve_on(5, || bus_tcp::TcpListener::bind(&loopback()))
        .start(|_: &ShardContext| |_: &Bus, _: Peer, _: Frame| {})
        .expect_err("no shard 5");
    assert!(
        matches!(
            err,
            ShardError::NoSuchShard {
                listener: 0,
                shard: 5,
                count: 2
            }
        ),
        "{err:?}"
    );
}
