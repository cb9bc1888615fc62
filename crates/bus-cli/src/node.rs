//! The reference node application of spec §8, the one `bus serve` and the
//! in-process `bus bench` node run:
//!
//! | command | name        | the node answers |
//! |--------:|-------------|------------------|
//! | 16      | `Echo`      | `EchoReply` (17): the same `request`, `view`, `release`, `reserved_frame`, `command_area` and body |
//! | 18      | `Broadcast` | `Delivery` (19) with the same body to every connected client on every shard (sender included), then `BroadcastAck` (20) to the sender: same `request`, `command_area[0..4]` = clients addressed |
//!
//! Replies are sealed. Any other application command is answered with
//! `Goodbye(ProtocolViolation)` and a close. `Ping` is answered by the bus
//! itself.
//!
//! On a member of a replica mesh ([`ReplicaPlane`]) the node also serves
//! §8's replica rows:
//!
//! | command | from    | the node does |
//! |--------:|---------|---------------|
//! | 16 `Echo` | replica | answers that replica with `EchoReply`, stamped with our `cluster` and `replica` |
//! | 18 `Broadcast` | client | as above, and sends `Relay` (21) with the same body to every connected replica |
//! | 21 `Relay` | replica | `Delivery` with the same body to every client of this node, on every shard; never relayed further |
//!
//! `BroadcastAck` counts this node's own clients only. Any other command
//! from a replica closes its link with `Goodbye(ProtocolViolation)`. Every send is the bus's non-blocking enqueue: a full queue drops
//! that reply (the client's request times out) and never blocks the shard.
//!
//! The count in a `BroadcastAck` is "best effort across shards" (spec §8),
//! known without waiting for the other shards: the clients of the sender's
//! shard the delivery was queued to (or whose queue was full), plus the
//! live client connections every other shard has at that moment (one
//! atomic read each). A client that connects to, or leaves, another shard
//! while that shard's copy is in its inbox makes the count one off.

use bus_core::{Bus, Command, Frame, FrameMut, GoodbyeReason, Handler, Peer};
use bus_shard::{Monitor, ShardContext};

/// `Echo`: answered with [`ECHO_REPLY`].
pub const ECHO: u8 = 16;
/// `EchoReply`: the answer to [`ECHO`].
pub const ECHO_REPLY: u8 = 17;
/// `Broadcast`: its body goes to every client as a [`DELIVERY`].
pub const BROADCAST: u8 = 18;
/// `Delivery`: a broadcast body, sent to every client.
pub const DELIVERY: u8 = 19;
/// `BroadcastAck`: tells the broadcaster how many clients were addressed.
pub const BROADCAST_ACK: u8 = 20;
/// `Relay`: a client's broadcast body, from one replica to the others.
pub const RELAY: u8 = 21;

/// What the node's application knows of its replica mesh: who it is and
/// which peers its broadcasts are relayed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPlane {
    /// The cluster id stamped into every frame to a replica.
    pub cluster: u128,
    /// This node's replica id, stamped into every frame to a replica.
    pub self_id: u8,
    /// Every configured peer; a send to one that is not connected fails
    /// at once and is skipped.
    pub peers: Vec<u8>,
}

impl ReplicaPlane {
    /// Stamps `cluster` and `replica` and seals (only the header when the
    /// frame is sealed already: an edited received frame).
    fn stamp(&self, mut frame: FrameMut) -> Frame {
        let sealed = frame.header().is_sealed();
        let header = frame.header_mut();
        header.set_cluster(self.cluster);
        header.set_replica(self.self_id);
        header.set_client(0);
        if sealed {
            frame.reseal_header();
        } else {
            frame.seal();
        }
        frame.freeze()
    }
}

/// The node's handler factory for the shard layer:
/// `Shards::builder(..).start(bus_cli::node::handler)`.
pub fn handler(ctx: &ShardContext) -> impl Handler + use<> {
    NodeApp {
        monitor: ctx.monitor().clone(),
        replicas: None,
    }
}

/// The handler factory of a node in a replica mesh.
pub fn mesh_handler(
    replicas: ReplicaPlane,
) -> impl Fn(&ShardContext) -> NodeApp + Send + Sync + 'static {
    let replicas = std::sync::Arc::new(replicas);
    move |ctx: &ShardContext| NodeApp {
        monitor: ctx.monitor().clone(),
        replicas: Some(replicas.clone()),
    }
}

/// The node's application on one shard.
#[derive(Debug)]
pub struct NodeApp {
    monitor: Monitor,
    replicas: Option<std::sync::Arc<ReplicaPlane>>,
}

impl Handler for NodeApp {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        let replicas = self.replicas.as_deref();
        match from {
            Peer::Client(_) => respond(bus, from, frame, replicas, || {
                elsewhere(&self.monitor, bus.shard())
            }),
            Peer::Replica(id) => {
                if let Some(replicas) = replicas {
                    from_replica(bus, id, frame, replicas);
                }
            }
        }
    }
}

/// The node's [`Handler`] on a single bus with no other shards:
/// `Bus::new(config, bus_cli::node::handle)`.
pub fn handle(bus: &Bus, from: Peer, frame: Frame) {
    respond(bus, from, frame, None, || 0);
}

/// A frame from replica `id`.
fn from_replica(bus: &Bus, id: u8, frame: Frame, replicas: &ReplicaPlane) {
    match frame.header().command_raw() {
        ECHO => {
            let mut reply = frame.into_mut();
            reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
            let _ = bus.send_to_replica(id, replicas.stamp(reply));
        }
        RELAY => {
            // To this node's clients only: a relay is never relayed on.
            let mut delivery = FrameMut::with_body(Command::from_u8(DELIVERY), frame.body());
            delivery.seal();
            bus.broadcast(&delivery.freeze());
        }
        other => {
            let detail = format!("command {other} is not served to replicas (16 Echo, 21 Relay)");
            let _ = bus.close_replica(id, GoodbyeReason::ProtocolViolation, &detail);
        }
    }
}

/// Live client connections on every shard but `shard`.
fn elsewhere(monitor: &Monitor, shard: u16) -> usize {
    (0..monitor.count())
        .filter(|&other| other != shard)
        .map(|other| monitor.live_connections(other))
        .sum()
}

/// Answers one frame from a client; `remote` counts the clients of the
/// other shards a broadcast is addressed to.
fn respond(
    bus: &Bus,
    from: Peer,
    frame: Frame,
    replicas: Option<&ReplicaPlane>,
    remote: impl FnOnce() -> usize,
) {
    let Peer::Client(id) = from else { return };
    match frame.header().command_raw() {
        ECHO => {
            let _ = bus.send_to_client(id, echo_reply(frame));
        }
        BROADCAST => {
            let request = frame.header().request();
            let mut delivery = FrameMut::with_body(Command::from_u8(DELIVERY), frame.body());
            delivery.seal();
            let report = bus.broadcast(&delivery.freeze());
            if let Some(replicas) = replicas {
                // One allocation for every replica's queue.
                let relay =
                    replicas.stamp(FrameMut::with_body(Command::from_u8(RELAY), frame.body()));
                for &peer in &replicas.peers {
                    let _ = bus.send_to_replica(peer, relay.clone());
                }
            }
            // Addressed: every client the delivery was meant for, including
            // those whose queue (or shard inbox) was full; the other shards'
            // share is their live count now (best effort across shards).
            let addressed = report.queued + report.queue_full + remote();
            let _ = bus.send_to_client(id, broadcast_ack(request, addressed));
        }
        other => {
            let detail =
                format!("command {other} is not served by this node (16 Echo, 18 Broadcast)");
            let _ = bus.close_client(id, GoodbyeReason::ProtocolViolation, &detail);
        }
    }
}

/// `EchoReply` for `echo`: everything kept but the command and the
/// `client` field the bus stamped, then sealed. Reuses the received buffer
/// (it has one handle, so nothing is copied). The body is the one the bus
/// verified on receipt, so a sealed echo only needs its header re-sealed.
fn echo_reply(echo: Frame) -> Frame {
    let mut reply = echo.into_mut();
    let header = reply.header_mut();
    header.set_command(Command::from_u8(ECHO_REPLY));
    header.set_client(0);
    reply.reseal_header();
    reply.freeze()
}

fn broadcast_ack(request: u64, addressed: usize) -> Frame {
    let mut ack = FrameMut::new(Command::from_u8(BROADCAST_ACK), 0);
    let header = ack.header_mut();
    header.set_request(request);
    let count = u32::try_from(addressed).unwrap_or(u32::MAX);
    header.command_area_mut()[0..4].copy_from_slice(&count.to_le_bytes());
    ack.seal();
    ack.freeze()
}

/// The client count carried by a `BroadcastAck`.
pub fn broadcast_ack_count(ack: &Frame) -> u32 {
    let area = ack.header().command_area();
    u32::from_le_bytes([area[0], area[1], area[2], area[3]])
}
