//! The replica part of the benchmark: two nodes of one cluster on
//! loopback, one authenticated replica link between them (plain TCP,
//! sealed frames, as the replica plane always runs), node 0 keeping `DEPTH`
//! echo requests in flight to node 1 and measuring each round trip.
//!
//! Both nodes are `bus::mesh` nodes on one shard each (their own threads
//! and runtimes), so the load generator is a bus too: every frame is
//! verified on receipt at both ends, as on the client plane with sealing.

use std::{
    cell::RefCell,
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use bus::{
    Bus, BusConfig, CloseReason, Command, ConnectionInfo, Frame, FrameMut, Handler, Peer,
    mesh::{Mesh, MeshConfig, ReplicaStamp},
    replica::{PeerConfig, ReplicaConfig},
    shard::{ShardContext, Shards, ShardsConfig},
};
use hdrhistogram::Histogram;

use super::{DEPTH, ECHO, WARMUP};

const CLUSTER: u128 = 0xbe_0c;

/// What one replica case measured.
pub(crate) struct ReplicaOutcome {
    pub(crate) frames: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
}

/// Node 1: echoes every replica `Echo` back as `EchoReply`, stamped.
struct Responder {
    stamp: ReplicaStamp,
}

impl Handler for Responder {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        let Peer::Replica(id) = from else { return };
        let mut reply = frame.into_mut();
        reply.header_mut().set_command(Command::from_u8(ECHO + 1));
        let _ = bus.send_to_replica(id, self.stamp.stamp(reply));
    }
}

/// Node 0: the load generator.
struct Driver {
    stamp: ReplicaStamp,
    body: usize,
    measure: Duration,
    origin: Instant,
    state: RefCell<DriverState>,
    done: mpsc::SyncSender<ReplicaOutcome>,
}

struct DriverState {
    warm_at: Option<Instant>,
    end_at: Option<Instant>,
    in_flight: usize,
    frames: u64,
    latency: Option<Histogram<u64>>,
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "nanoseconds of a benchmark run fit in u64"
)]
fn nanos(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

impl Driver {
    fn request(&self) -> Frame {
        let mut frame = FrameMut::new(Command::from_u8(ECHO), self.body);
        frame.header_mut().set_request(nanos(self.origin));
        self.stamp.stamp(frame)
    }
}

impl Handler for Driver {
    fn on_connected(&self, bus: &Bus, peer: Peer, _info: &ConnectionInfo) {
        let Peer::Replica(id) = peer else { return };
        let now = Instant::now();
        {
            let mut state = self.state.borrow_mut();
            state.warm_at = Some(now + WARMUP);
            state.end_at = Some(now + WARMUP + self.measure);
            state.in_flight = DEPTH;
        }
        for _ in 0..DEPTH {
            let _ = bus.send_to_replica(id, self.request());
        }
    }

    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        let Peer::Replica(id) = from else { return };
        let now = Instant::now();
        let mut state = self.state.borrow_mut();
        let (Some(warm_at), Some(end_at)) = (state.warm_at, state.end_at) else {
            return;
        };
        if now >= warm_at && now < end_at {
            state.frames += 1;
            let rtt = nanos(self.origin).saturating_sub(frame.header().request());
            if let Some(latency) = state.latency.as_mut() {
                let _ = latency.record(rtt);
            }
        }
        if now < end_at {
            drop(state);
            let _ = bus.send_to_replica(id, self.request());
            return;
        }
        state.in_flight -= 1;
        if state.in_flight == 0
            && let Some(latency) = state.latency.take()
        {
            let _ = self.done.try_send(ReplicaOutcome {
                frames: state.frames,
                elapsed: self.measure,
                latency,
            });
        }
    }

    fn on_connection_lost(&self, _bus: &Bus, _peer: Peer, reason: &CloseReason) {
        if *reason != CloseReason::Closed(bus::GoodbyeReason::ShuttingDown) {
            eprintln!("replica bench: the link was lost: {reason:?}");
        }
    }
}

fn key_file() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("bus-bench-replica-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cluster.psk");
    std::fs::write(&path, [0x42; 32]).expect("key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn mesh(self_id: u8, peer: PeerConfig, psk: &std::path::Path) -> Mesh {
    let mut replicas =
        ReplicaConfig::new(CLUSTER, self_id, psk, "127.0.0.1:0".parse().expect("addr"));
    replicas.peers = vec![peer];
    Mesh::new(MeshConfig::new(replicas)).expect("mesh")
}

/// One case: `frame_bytes` frames over one replica link for `measure`.
pub(crate) fn run_case(frame_bytes: usize, measure: Duration) -> ReplicaOutcome {
    let psk = key_file();
    let any: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let responder_mesh = mesh(1, PeerConfig { id: 0, addr: any }, &psk);
    let stamp = responder_mesh.stamp();
    let builder =
        responder_mesh.declare(Shards::builder(ShardsConfig::new(1), BusConfig::default()));
    let responder = responder_mesh
        .start(builder, move |_: &ShardContext| Responder { stamp })
        .expect("responder starts");
    let addr = responder.local_addrs()[0];
    let driver_mesh = mesh(0, PeerConfig { id: 1, addr }, &psk);
    let stamp = driver_mesh.stamp();
    let (done, outcome) = mpsc::sync_channel(1);
    let origin = Instant::now();
    let builder = driver_mesh.declare(Shards::builder(ShardsConfig::new(1), BusConfig::default()));
    let driver = driver_mesh
        .start(builder, move |_: &ShardContext| Driver {
            stamp,
            body: frame_bytes - 256,
            measure,
            origin,
            state: RefCell::new(DriverState {
                warm_at: None,
                end_at: None,
                in_flight: 0,
                frames: 0,
                latency: Some(
                    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram"),
                ),
            }),
            done: done.clone(),
        })
        .expect("driver starts");
    let result = outcome
        .recv_timeout(WARMUP + measure + Duration::from_secs(30))
        .expect("the replica case finished");
    driver.shutdown(Duration::from_secs(2));
    responder.shutdown(Duration::from_secs(2));
    result
}
