//! Helpers for the replica mesh tests: nodes (a `bus_mesh::Mesh` on a few
//! shards, with a client listener and a test application), key files, a
//! raw replica dialer that speaks the handshake by hand, and relays that
//! sit in the middle of a replica link (plain TCP: delay, cut, blackhole;
//! TLS: terminate both sides).
//!
//! Nodes bind port 0. A node's peers must be known when it starts, so a
//! test starts the highest id first (it dials nobody) and hands each
//! node's bound replica address to the lower ones; the addresses of peers
//! a node only accepts from are never dialed.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use async_channel::{Receiver, Sender};
use bus_core::{
    Bus, BusConfig, CloseReason, Command, ConnectionInfo, Frame, FrameMut, GoodbyeReason, Handler,
    Peer, SendError,
};
use bus_mesh::{Mesh, MeshConfig, MeshStatus, PeerState, ReplicaStamp};
use bus_replica::{
    Binding, Dialer, DialerOutcome, HandshakeConfig, Key, Keys, OsRandom, PeerConfig, PeerSet,
    ReplicaConfig,
};
use bus_shard::{ShardContext, Shards, ShardsConfig};
use bus_tcp::TcpListenerConfig;

use crate::{
    STEP,
    client::{RawClient, TcpClient},
    pki, within,
};

/// The cluster id of the tests.
pub const CLUSTER: u128 = 0x00c0_ffee_0000_0000_0000_0000_0000_002a;
/// A replica frame the test application records (and any node sends).
pub const RECORD: u8 = 30;
/// `Echo` from a replica: answered with [`ECHO_REPLY`], stamped.
pub const ECHO: u8 = 16;
/// The answer to [`ECHO`].
pub const ECHO_REPLY: u8 = 17;
/// From a client: send a [`RECORD`] frame with this body to the replica in
/// `command_area[0]`, from the shard the client is on; the client gets
/// [`SEND_ACK`] with the outcome in `command_area[0]` ([`outcome`]).
pub const SEND_TO_REPLICA: u8 = 50;
/// See [`SEND_TO_REPLICA`].
pub const SEND_ACK: u8 = 51;
/// From a client: close the link to the replica in `command_area[0]` (on
/// the client's shard) with `Goodbye(Normal)`; answered with [`SEND_ACK`].
pub const CLOSE_REPLICA: u8 = 52;

/// `command_area[0..2]` of a [`RECORD`] frame sent from outside the shards
/// (one sent by a shard carries the shard's index).
pub const OUTSIDE: u16 = u16::MAX;

/// Shutdown grace of test nodes.
pub const GRACE: Duration = Duration::from_secs(3);

/// A send's outcome as one byte: 0 ok, 1 `NotConnected`, 2 `QueueFull`,
/// 3 `ShuttingDown`, 4 `InboxFull`.
pub fn outcome(result: Result<(), SendError>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(SendError::NotConnected) => 1,
        Err(SendError::QueueFull) => 2,
        Err(SendError::ShuttingDown) => 3,
        Err(SendError::InboxFull) => 4,
        Err(_) => 255,
    }
}

/// A directory of pre-shared key files, private to the test.
#[derive(Debug)]
pub struct Keyring {
    dir: PathBuf,
}

impl Keyring {
    /// A fresh, empty directory.
    pub fn new(what: &str) -> Self {
        Self {
            dir: pki::unique_dir(what),
        }
    }

    /// Writes a 32-byte key made of `byte` to `name` with mode 600;
    /// returns its path.
    pub fn key(&self, name: &str, byte: u8) -> PathBuf {
        self.file(name, &[byte; 32], 0o600)
    }

    /// Writes `bytes` to `name` with permission bits `mode`.
    pub fn file(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).expect("write key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("chmod key file");
        path
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The key a file of 32 `byte`s derives.
pub fn key_of(byte: u8) -> Key {
    Key::derive(&[byte; 32])
}

/// What the test application reports.
#[derive(Debug, Clone)]
pub enum MeshEvent {
    /// A connection registered on `shard`.
    Connected {
        /// Who.
        peer: Peer,
        /// Where.
        shard: u16,
        /// Its metadata.
        info: ConnectionInfo,
    },
    /// A connection ended.
    Lost {
        /// Who.
        peer: Peer,
        /// Why.
        reason: CloseReason,
    },
    /// An application frame from a replica arrived on `shard`.
    Frame {
        /// The replica.
        from: u8,
        /// Where.
        shard: u16,
        /// The frame.
        frame: Frame,
    },
}

/// The test application on each shard.
struct App {
    shard: u16,
    stamp: ReplicaStamp,
    events: Sender<MeshEvent>,
}

impl App {
    fn report(&self, event: MeshEvent) {
        // Bounded; a test that stops reading loses the rest, never blocks
        // a shard.
        let _ = self.events.try_send(event);
    }
}

impl Handler for App {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        match from {
            Peer::Replica(id) => {
                if frame.header().command_raw() == ECHO {
                    let mut reply = frame.to_mut();
                    reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
                    let _ = bus.send_to_replica(id, self.stamp.stamp(reply));
                }
                self.report(MeshEvent::Frame {
                    from: id,
                    shard: self.shard,
                    frame,
                });
            }
            Peer::Client(client) => {
                let header = frame.header();
                let target = header.command_area()[0];
                let result = match header.command_raw() {
                    SEND_TO_REPLICA => {
                        let mut out = FrameMut::with_body(Command::from_u8(RECORD), frame.body());
                        out.header_mut().set_request(header.request());
                        out.header_mut().command_area_mut()[0..2]
                            .copy_from_slice(&self.shard.to_le_bytes());
                        bus.send_to_replica(target, self.stamp.stamp(out))
                    }
                    CLOSE_REPLICA => bus.close_replica(target, GoodbyeReason::Normal, "test"),
                    _ => return,
                };
                let mut ack = FrameMut::new(Command::from_u8(SEND_ACK), 0);
                ack.header_mut().set_request(header.request());
                ack.header_mut().command_area_mut()[0] = outcome(result);
                ack.seal();
                let _ = bus.send_to_client(client, ack.freeze());
            }
        }
    }

    fn on_connected(&self, _bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        self.report(MeshEvent::Connected {
            peer,
            shard: self.shard,
            info: info.clone(),
        });
    }

    fn on_connection_lost(&self, _bus: &Bus, peer: Peer, reason: &CloseReason) {
        self.report(MeshEvent::Lost {
            peer,
            reason: reason.clone(),
        });
    }
}

/// How to start one test node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The replica settings (`listen` is usually `127.0.0.1:0`).
    pub replicas: ReplicaConfig,
    /// Shards the node runs.
    pub shards: u16,
    /// The bus settings (keep-alive, idle bound, close bounds).
    pub bus: BusConfig,
    /// The certificate of replica TLS.
    pub tls: Option<bus_tls::ServerTls>,
}

impl NodeSpec {
    /// Node `self_id` of [`CLUSTER`], signing with `psk`, on two shards,
    /// `handshake_grace` 2 s, `reconnect_max` 1 s, and short close bounds
    /// so that losses are reported quickly.
    pub fn new(self_id: u8, psk: &Path) -> Self {
        let mut replicas =
            ReplicaConfig::new(CLUSTER, self_id, psk, "127.0.0.1:0".parse().expect("addr"));
        replicas.handshake_grace = Duration::from_secs(2);
        replicas.reconnect_max = Duration::from_secs(1);
        let mut bus = BusConfig::default();
        bus.handshake_grace = replicas.handshake_grace;
        bus.close_grace = Duration::from_millis(500);
        bus.close_peer_timeout = Duration::from_millis(300);
        Self {
            replicas,
            shards: 2,
            bus,
            tls: None,
        }
    }

    /// With a peer `id` listening at `addr` (for a peer this node only
    /// accepts from, any address will do).
    #[must_use]
    pub fn peer(mut self, id: u8, addr: SocketAddr) -> Self {
        self.replicas.peers.push(PeerConfig { id, addr });
        self
    }

    /// With a verify-only key.
    #[must_use]
    pub fn verify_with(mut self, path: &Path) -> Self {
        self.replicas.verify_psk_file = Some(path.to_owned());
        self
    }

    /// With `shards` shards.
    #[must_use]
    pub fn shards(mut self, shards: u16) -> Self {
        self.shards = shards;
        self
    }

    /// With the bound of the whole handshake.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.replicas.handshake_grace = grace;
        self.bus.handshake_grace = grace;
        self
    }

    /// With keep-alive and idle bounds on replica links.
    #[must_use]
    pub fn liveness(mut self, keepalive: Duration, idle: Duration) -> Self {
        self.bus.replica_keepalive = Some(keepalive);
        self.bus.replica_idle_timeout = Some(idle);
        self
    }

    /// Over TLS with the test PKI's server certificate, verifying peers
    /// against its CA.
    #[must_use]
    pub fn tls(mut self) -> Self {
        let pki = pki::pki();
        let source = bus_tls::CertificateSource::Files {
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
        };
        let tls =
            bus_tls::ServerTls::new(&bus_tls::TlsServerConfig::new(source)).expect("server TLS");
        self.replicas.tls = true;
        self.replicas.ca_file = Some(pki.ca.clone());
        self.tls = Some(tls);
        self
    }
}

/// A running test node: its shards, its mesh, what its application saw.
#[derive(Debug)]
pub struct TestNode {
    /// Its replica id.
    pub id: u8,
    /// The mesh.
    pub mesh: Mesh,
    shards: Option<Shards>,
    /// Where its replica plane listens.
    pub replica_addr: SocketAddr,
    /// Its client (plain TCP) listener.
    pub client_addr: SocketAddr,
    /// What its application reported, in order.
    pub events: Receiver<MeshEvent>,
}

impl TestNode {
    /// Starts a node (blocking this thread while the shards start, at most
    /// `bus_shard`'s start-up bound).
    ///
    /// # Panics
    /// If it does not start.
    pub fn start(spec: NodeSpec) -> Self {
        Self::try_start(spec).expect("node starts")
    }

    /// Starts a node, or says why not.
    pub fn try_start(spec: NodeSpec) -> Result<Self, String> {
        let id = spec.replicas.self_id;
        let mut config = MeshConfig::new(spec.replicas);
        config.server_tls = spec.tls;
        let mesh = Mesh::new(config).map_err(|e| e.to_string())?;
        let (tx, events) = async_channel::bounded(4096);
        let builder = Shards::builder(ShardsConfig::new(spec.shards), spec.bus)
            .listen_tcp(TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr")));
        let builder = mesh.declare(builder);
        let stamp = mesh.stamp();
        let shards = mesh
            .start(builder, move |ctx: &ShardContext| App {
                shard: ctx.shard,
                stamp,
                events: tx.clone(),
            })
            .map_err(|e| e.to_string())?;
        let addrs = shards.local_addrs();
        Ok(Self {
            id,
            mesh,
            client_addr: addrs[0],
            replica_addr: addrs[1],
            shards: Some(shards),
            events,
        })
    }

    /// The shards.
    ///
    /// # Panics
    /// After [`TestNode::shutdown`].
    pub fn shards(&self) -> &Shards {
        self.shards.as_ref().expect("running")
    }

    /// The mesh's status now.
    pub fn status(&self) -> MeshStatus {
        self.mesh.status()
    }

    /// Sends a [`RECORD`] frame with `body` (request `request`) to replica
    /// `to` from outside the shards.
    pub fn send(&self, to: u8, request: u64, body: &[u8]) -> Result<(), SendError> {
        let mut frame = FrameMut::with_body(Command::from_u8(RECORD), body);
        frame.header_mut().set_request(request);
        // Not from a shard: see SEND_TO_REPLICA for what a shard writes.
        frame.header_mut().command_area_mut()[0..2].copy_from_slice(&OUTSIDE.to_le_bytes());
        self.shards()
            .send_to_replica(to, self.mesh.stamp().stamp(frame))
    }

    /// The next event (bounded by [`STEP`]).
    pub async fn next_event(&self, what: &str) -> MeshEvent {
        within(what, self.events.recv())
            .await
            .expect("the node's handlers are alive")
    }

    /// Waits for the next event `pick` accepts, returning what it made of
    /// it; other events are passed to `skipped`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        mut pick: impl FnMut(&MeshEvent) -> Option<T>,
        mut skipped: impl FnMut(MeshEvent),
    ) -> T {
        within(what, async {
            loop {
                let event = self.events.recv().await.expect("handlers alive");
                if let Some(found) = pick(&event) {
                    return found;
                }
                skipped(event);
            }
        })
        .await
    }

    /// Waits until replica `peer` is connected (its `Connected` event);
    /// returns the shard and the connection's metadata.
    pub async fn connected(&self, peer: u8) -> (u16, ConnectionInfo) {
        self.wait_for(
            &format!("node {} connected to replica {peer}", self.id),
            |e| match e {
                MeshEvent::Connected {
                    peer: Peer::Replica(p),
                    shard,
                    info,
                } if *p == peer => Some((*shard, info.clone())),
                _ => None,
            },
            |_| {},
        )
        .await
    }

    /// Waits until the link with replica `peer` is lost; returns why, and
    /// fails the test if another event for that peer came first.
    pub async fn lost(&self, peer: u8) -> CloseReason {
        self.wait_for(
            &format!("node {} losing replica {peer}", self.id),
            |e| match e {
                MeshEvent::Lost {
                    peer: Peer::Replica(p),
                    reason,
                } if *p == peer => Some(reason.clone()),
                _ => None,
            },
            |skipped| {
                if let MeshEvent::Connected {
                    peer: Peer::Replica(p),
                    ..
                } = &skipped
                {
                    assert_ne!(*p, peer, "connected again before the loss was seen");
                }
            },
        )
        .await
    }

    /// Waits until the mesh status shows every configured peer connected.
    pub async fn full_mesh(&self) {
        let id = self.id;
        crate::eventually(&format!("node {id} connected to every peer"), || {
            let status = self.status();
            status.connected() == status.peers.len()
        })
        .await;
    }

    /// Waits until the status of `peer` is `state`.
    pub async fn peer_state(&self, peer: u8, state: PeerState) {
        crate::eventually(&format!("node {}: peer {peer} {state:?}", self.id), || {
            self.status().peer(peer).map(|p| p.state) == Some(state)
        })
        .await;
    }

    /// Shuts the node down gracefully (off this thread's runtime).
    pub async fn shutdown(mut self) {
        if let Some(shards) = self.shards.take() {
            let report = within(
                "node shutdown",
                compio::runtime::spawn_blocking(move || shards.shutdown(GRACE)),
            )
            .await
            .expect("shutdown did not panic");
            assert_eq!(report.threads_left, 0);
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(shards) = self.shards.take() {
            let _ = shards.shutdown(Duration::from_secs(1));
        }
    }
}

/// A client of a test node's TCP listener that asks its shard to send to
/// a replica.
#[derive(Debug)]
pub struct NodeClient {
    raw: TcpClient,
    next: u64,
}

impl NodeClient {
    /// Connects to `node`'s client listener and waits until it is
    /// registered (a TCP connection is registered with its first frame).
    pub async fn connect(node: &TestNode) -> Self {
        let mut client = Self {
            raw: TcpClient::connect(node.client_addr).await,
            next: 1,
        };
        // An unknown replica: answered with NotConnected, which proves the
        // client is registered.
        assert_eq!(client.send_to(255, b"hello").await, 1);
        client
    }

    /// Asks the node to send a [`RECORD`] frame with `body` to replica
    /// `to` from this client's shard; returns the outcome ([`outcome`]).
    pub async fn send_to(&mut self, to: u8, body: &[u8]) -> u8 {
        self.ask(SEND_TO_REPLICA, to, body).await
    }

    /// Asks the node to close its link to replica `to` from this client's
    /// shard; returns the outcome.
    pub async fn close_replica(&mut self, to: u8) -> u8 {
        self.ask(CLOSE_REPLICA, to, b"").await
    }

    async fn ask(&mut self, command: u8, to: u8, body: &[u8]) -> u8 {
        let request = self.next;
        self.next += 1;
        let mut frame = FrameMut::with_body(Command::from_u8(command), body);
        frame.header_mut().set_request(request);
        frame.header_mut().command_area_mut()[0] = to;
        frame.seal();
        self.raw.send(&frame.freeze()).await;
        let ack = self.raw.recv_frame().await;
        assert_eq!(ack.header().command_raw(), SEND_ACK);
        assert_eq!(ack.header().request(), request);
        ack.header().command_area()[0]
    }
}

/// A replica handshake spoken by hand over raw TCP, to test how a node
/// answers every message.
#[derive(Debug)]
pub struct RawDialer {
    /// The connection.
    pub client: TcpClient,
    /// Who the raw dialer claims to be.
    pub config: HandshakeConfig,
}

impl RawDialer {
    /// Connects to `addr` as replica `self_id` of `cluster` holding `keys`.
    pub async fn connect(addr: SocketAddr, cluster: u128, self_id: u8, keys: Keys) -> Self {
        let peers: PeerSet = (0..=u8::MAX).filter(|id| *id != self_id).collect();
        Self {
            client: TcpClient::connect(addr).await,
            config: HandshakeConfig::new(cluster, self_id, peers, keys),
        }
    }

    /// Sends a Hello to replica `to` and returns the dialer state and the
    /// first frame the node answered with.
    pub async fn hello(&mut self, to: u8) -> (Dialer, Frame, Frame) {
        let (dialer, hello) =
            Dialer::start(&self.config, to, Binding::PLAIN_TCP, &mut OsRandom).expect("nonce");
        self.client.send(&hello).await;
        let answer = self.client.recv_frame().await;
        (dialer, hello, answer)
    }

    /// Runs the whole handshake with replica `to` and expects it to
    /// authenticate; returns the Hello and Finish it sent.
    pub async fn authenticate(&mut self, to: u8) -> (Frame, Frame) {
        let (dialer, hello, challenge) = self.hello(to).await;
        match dialer.receive(&challenge) {
            DialerOutcome::Authenticated { finish, peer } => {
                assert_eq!(peer.peer, to);
                self.client.send(&finish).await;
                (hello, finish)
            }
            other => panic!("expected to authenticate with replica {to}, got {other:?}"),
        }
    }

    /// An application frame stamped as this dialer's, sealed.
    pub fn frame(&self, command: u8, request: u64, body: &[u8]) -> Frame {
        let mut frame = FrameMut::with_body(Command::from_u8(command), body);
        frame.header_mut().set_request(request);
        ReplicaStamp {
            cluster: self.config.cluster,
            replica: self.config.self_id,
        }
        .stamp(frame)
    }

    /// Sends an `Echo` and expects the node's `EchoReply` (the link works).
    pub async fn echo(&mut self, request: u64) {
        let frame = self.frame(ECHO, request, b"ping through the link");
        self.client.send(&frame).await;
        loop {
            let reply = self.client.recv_frame().await;
            // The node's keep-alive Pings may come first.
            if reply.header().command() == Command::Ping {
                continue;
            }
            assert_eq!(reply.header().command_raw(), ECHO_REPLY, "{reply:?}");
            assert_eq!(reply.header().request(), request);
            assert_eq!(reply.body(), b"ping through the link");
            assert!(reply.header().is_sealed());
            assert_eq!(reply.header().cluster(), self.config.cluster);
            return;
        }
    }
}

/// Starts nodes `0..n` of a full mesh, highest id first, each learning the
/// replica addresses of the higher ones; `spec(id, psk)` shapes each
/// node's settings before its peers are added. Returns them by id.
pub fn start_mesh(n: u8, psk: &Path, spec: impl Fn(u8, &Path) -> NodeSpec) -> Vec<TestNode> {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let mut nodes: Vec<TestNode> = Vec::new();
    for id in (0..n).rev() {
        let mut node = spec(id, psk);
        for peer in 0..n {
            if peer == id {
                continue;
            }
            let addr = if peer > id {
                nodes
                    .iter()
                    .find(|node| node.id == peer)
                    .expect("higher ids start first")
                    .replica_addr
            } else {
                placeholder
            };
            node = node.peer(peer, addr);
        }
        nodes.push(TestNode::start(node));
    }
    nodes.reverse();
    nodes
}

/// One relayed connection: both sockets, and whether it died in a
/// blackhole.
#[derive(Debug)]
struct Relayed {
    sockets: [TcpStream; 2],
    dead: Arc<AtomicBool>,
}

#[derive(Debug)]
struct RelayState {
    target: SocketAddr,
    blackhole: AtomicBool,
    delay_ms: AtomicU64,
    stop: AtomicBool,
    links: Mutex<Vec<Relayed>>,
    accepted: AtomicU64,
}

/// A TCP relay on loopback in front of `target`: it forwards bytes both
/// ways, and on command delays them, cuts every link (both sockets shut
/// down), or blackholes them (bytes and closes vanish; links accepted while
/// blackholed never reach the target; links that lived through a
/// blackhole stay dead after it).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
}

impl Relay {
    /// A relay to `target` on an ephemeral port.
    ///
    /// # Panics
    /// If it cannot bind.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(RelayState {
            target,
            blackhole: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let accept_state = state.clone();
        thread::spawn(move || {
            for incoming in listener.incoming() {
                if accept_state.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(incoming) = incoming else { continue };
                accept_state.accepted.fetch_add(1, Ordering::SeqCst);
                relay_one(&accept_state, incoming);
            }
        });
        Self { addr, state }
    }

    /// Where dialers should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Holds every chunk for `delay` before forwarding it.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Shuts both sockets of every live link down; later links pass.
    pub fn cut(&self) {
        let links = std::mem::take(&mut *self.state.links.lock().expect("links"));
        for link in links {
            for socket in &link.sockets {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// From now on nothing passes, and nothing is closed.
    pub fn blackhole(&self) {
        self.state.blackhole.store(true, Ordering::SeqCst);
        for link in self.state.links.lock().expect("links").iter() {
            link.dead.store(true, Ordering::SeqCst);
        }
    }

    /// New links pass again (links that were blackholed stay dead).
    pub fn heal(&self) {
        self.state.blackhole.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        for link in std::mem::take(&mut *self.state.links.lock().expect("links")) {
            for socket in &link.sockets {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn relay_one(state: &Arc<RelayState>, incoming: TcpStream) {
    let dead = Arc::new(AtomicBool::new(state.blackhole.load(Ordering::SeqCst)));
    if dead.load(Ordering::SeqCst) {
        // Blackholed before it began: never reaches the target; its bytes
        // are read and dropped so the dialer's writes do not fail.
        thread::spawn(move || swallow(incoming));
        return;
    }
    let Ok(outgoing) = TcpStream::connect_timeout(&state.target, STEP) else {
        return; // dropping `incoming` closes it: the target is down
    };
    let _ = incoming.set_nodelay(true);
    let _ = outgoing.set_nodelay(true);
    let (Ok(a), Ok(b)) = (incoming.try_clone(), outgoing.try_clone()) else {
        return;
    };
    state.links.lock().expect("links").push(Relayed {
        sockets: [a, b],
        dead: dead.clone(),
    });
    let (Ok(in2), Ok(out2)) = (incoming.try_clone(), outgoing.try_clone()) else {
        return;
    };
    let (s1, s2) = (state.clone(), state.clone());
    let d2 = dead.clone();
    thread::spawn(move || pump(&s1, incoming, outgoing, &dead));
    thread::spawn(move || pump(&s2, out2, in2, &d2));
}

/// Copies `from` → `to` until the end of `from`; while `dead`, reads and
/// drops, and never closes `to`.
fn pump(state: &RelayState, mut from: TcpStream, mut to: TcpStream, dead: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) {
            continue;
        }
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            // The link's latency, not synchronisation.
            thread::sleep(Duration::from_millis(delay));
        }
        if !dead.load(Ordering::SeqCst) {
            let _ = to.write_all(&buf[..n]);
        }
    }
    // A blackhole carries no close either: the sockets stay open (the
    // relay's list holds them) until the test cuts or drops the relay.
    if !dead.load(Ordering::SeqCst) {
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
}

/// Reads and drops everything until the end of the stream.
fn swallow(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 << 10];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// A relay that terminates TLS on both sides (with a certificate the
/// dialer trusts, and trusting the acceptor's): it reads whole 256-byte
/// handshake frames from one side and writes them to the other, in turn.
/// Runs on its own thread and runtime; counts the frames it forwarded.
#[derive(Debug)]
pub struct TlsRelay {
    addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
}

impl TlsRelay {
    /// A TLS relay to `target`, serving the test PKI's server certificate
    /// and trusting its CA.
    pub fn start(target: SocketAddr) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let forwarded = Arc::new(AtomicU64::new(0));
        let count = forwarded.clone();
        thread::spawn(move || {
            let runtime = compio::runtime::Runtime::new().expect("relay runtime");
            runtime.block_on(tls_relay(target, tx, count));
        });
        Self {
            addr: rx.recv_timeout(STEP).expect("TLS relay bound"),
            forwarded,
        }
    }

    /// Where dialers should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Handshake frames passed through so far (both directions).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }
}

async fn tls_relay(
    target: SocketAddr,
    bound: std::sync::mpsc::Sender<SocketAddr>,
    forwarded: Arc<AtomicU64>,
) {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    let pki = pki::pki();
    let source = bus_tls::CertificateSource::Files {
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
    };
    let server =
        bus_tls::ServerTls::new(&bus_tls::TlsServerConfig::new(source)).expect("relay server TLS");
    let client = bus_tls::ClientTls::new(&bus_tls::TlsClientConfig::new(
        &pki.ca,
        target.ip().to_string(),
    ))
    .expect("relay client TLS");
    let listener = compio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TLS relay");
    let _ = bound.send(listener.local_addr().expect("addr"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (server, client, forwarded) = (server.clone(), client.clone(), forwarded.clone());
        compio::runtime::spawn(async move {
            let Ok(Ok(mut dialer)) =
                compio::runtime::time::timeout(STEP, server.accept(stream, 1 << 16)).await
            else {
                return;
            };
            let Ok(Ok(mut acceptor)) =
                compio::runtime::time::timeout(STEP, client.connect(target)).await
            else {
                return;
            };
            // Strictly in turn, like the handshake itself: dialer first.
            let mut frame = [0u8; 256];
            for turn in 0..8 {
                let (from, to) = if turn % 2 == 0 {
                    (&mut dialer, &mut acceptor)
                } else {
                    (&mut acceptor, &mut dialer)
                };
                let read = compio::runtime::time::timeout(STEP, from.read_exact(&mut frame)).await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                if to.write_all(&frame).await.is_err() || to.flush().await.is_err() {
                    return;
                }
                forwarded.fetch_add(1, Ordering::SeqCst);
            }
        })
        .detach();
    }
}
