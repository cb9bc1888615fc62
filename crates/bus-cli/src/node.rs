//! The reference node application of spec §8, the one `bus serve` and the
//! in-process `bus bench` node run:
//!
//! | command | name        | the node answers |
//! |--------:|-------------|------------------|
//! | 16      | `Echo`      | `EchoReply` (17): the same `request`, `view`, `release`, `reserved_frame`, `command_area` and body |
//! | 18      | `Broadcast` | `Delivery` (19) with the same body to every connected client on every shard (sender included), then `BroadcastAck` (20) to the sender: same `request`, `command_area[0..4]` = clients addressed |
//!
//! | 22      | `Ask`       | sends the asking client `Question` (23) with the same body as a request from the server (spec §9); when the client's answer arrives, `Answer` (24) with its body and the `Ask`'s `request`, `command_area[0] = 0`. Without an answer within `command_area[0..4]` ms (0 = 5000): an empty `Answer`, `command_area[0] = 1` |
//!
//! Replies are sealed. Any other application command is answered with
//! `Goodbye(ProtocolViolation)` and a close. `Ping` is answered by the bus
//! itself. Every send is the bus's non-blocking enqueue: a full queue drops
//! that reply (the client's request times out) and never blocks the shard.
//!
//! An `Ask` the bus cannot even send (the connection's outstanding requests
//! are at `max_outstanding_requests`, or its queue is full) is answered at
//! once with an empty `Answer` and `command_area[0] = 2` (not asked); spec
//! §8 does not name this case.
//!
//! At shutdown each shard writes its final counters to
//! `<data dir>/shutdown/shard-N.json` (written whole or not at all) — the
//! node's durable state; a write that fails makes `bus serve` exit
//! non-zero.
//!
//! The count in a `BroadcastAck` is "best effort across shards" (spec §8),
//! known without waiting for the other shards: the clients of the sender's
//! shard the delivery was queued to (or whose queue was full), plus the
//! live client connections every other shard has at that moment (one
//! atomic read each). A client that connects to, or leaves, another shard
//! while that shard's copy is in its inbox makes the count one off.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bus_core::{
    Bus, ClientId, Command, Frame, FrameMut, GoodbyeReason, Handler, Peer, RequestError, SendError,
    ShutdownFlush,
};
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
/// `Ask`: the node asks the client a `Question` and reports its answer.
pub const ASK: u8 = 22;
/// `Question`: a request from the node to the client (spec §9).
pub const QUESTION: u8 = 23;
/// `Answer`: the client's answer to the `Question`, back to the asker.
pub const ANSWER: u8 = 24;
/// `Answer` status: the client answered.
pub const ANSWERED: u8 = 0;
/// `Answer` status: no answer within the `Ask`'s timeout.
pub const TIMED_OUT: u8 = 1;
/// `Answer` status: the question could not be sent.
pub const NOT_ASKED: u8 = 2;
/// Wait for an answer when the `Ask` names no timeout.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's handler on one shard of the shard layer (see
/// [`handler`]).
#[derive(Debug)]
pub struct NodeHandler {
    monitor: Monitor,
    /// Where the shard writes its final counters at shutdown; none for a
    /// node without a data directory (the in-process bench node).
    shutdown_record: Option<PathBuf>,
}

/// The node's handler factory for the shard layer:
/// `Shards::builder(..).start(|ctx| bus_cli::node::handler(ctx, Some(dir)))`.
/// With a `data_dir`, each shard writes its final counters under
/// `data_dir/shutdown/` when the node shuts down.
pub fn handler(ctx: &ShardContext, data_dir: Option<&Path>) -> NodeHandler {
    NodeHandler {
        monitor: ctx.monitor().clone(),
        shutdown_record: data_dir.map(|dir| {
            dir.join("shutdown")
                .join(format!("shard-{}.json", ctx.shard))
        }),
    }
}

impl Handler for NodeHandler {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        respond(bus, from, frame, || elsewhere(&self.monitor, bus.shard()));
    }

    fn on_shutdown(&self, bus: &Bus) -> ShutdownFlush {
        let Some(path) = self.shutdown_record.clone() else {
            return ShutdownFlush::done();
        };
        let record = shutdown_record(&bus.stats());
        ShutdownFlush::new(async move {
            compio::runtime::spawn_blocking(move || write_whole(&path, record.as_bytes()))
                .await
                .map_err(|_| "the shutdown record's writer panicked")??;
            Ok(())
        })
    }
}

/// A shard's final counters, as one JSON object.
fn shutdown_record(stats: &bus_core::BusStats) -> String {
    format!(
        "{{\"connections\":{},\"connections_total\":{},\"frames_in\":{},\"frames_out\":{},\"bytes_in\":{},\"bytes_out\":{}}}\n",
        stats.connections,
        stats.connections_total,
        stats.frames_in,
        stats.frames_out,
        stats.bytes_in,
        stats.bytes_out
    )
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside
/// it, synced, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// The node's [`Handler`] on a single bus with no other shards:
/// `Bus::new(config, bus_cli::node::handle)`.
pub fn handle(bus: &Bus, from: Peer, frame: Frame) {
    respond(bus, from, frame, || 0);
}

/// Live client connections on every shard but `shard`.
fn elsewhere(monitor: &Monitor, shard: u16) -> usize {
    (0..monitor.count())
        .filter(|&other| other != shard)
        .map(|other| monitor.live_connections(other))
        .sum()
}

/// Answers one frame; `remote` counts the clients of the other shards a
/// broadcast is addressed to.
fn respond(bus: &Bus, from: Peer, frame: Frame, remote: impl FnOnce() -> usize) {
    let Peer::Client(id) = from else { return };
    match frame.header().command_raw() {
        ECHO => {
            let _ = bus.send_to_client(id, echo_reply(frame));
        }
        ASK => ask(bus, id, &frame),
        BROADCAST => {
            let request = frame.header().request();
            let mut delivery = FrameMut::with_body(Command::from_u8(DELIVERY), frame.body());
            delivery.seal();
            let report = bus.broadcast(&delivery.freeze());
            // Addressed: every client the delivery was meant for, including
            // those whose queue (or shard inbox) was full; the other shards'
            // share is their live count now (best effort across shards).
            let addressed = report.queued + report.queue_full + remote();
            let _ = bus.send_to_client(id, broadcast_ack(request, addressed));
        }
        other => {
            let detail = format!(
                "command {other} is not served by this node (16 Echo, 18 Broadcast, 22 Ask)"
            );
            let _ = bus.close_client(id, GoodbyeReason::ProtocolViolation, &detail);
        }
    }
}

/// `Ask`: sends the client the `Question` as a request from the server and
/// answers the `Ask` when the client's answer (or the timeout) comes.
fn ask(bus: &Bus, id: ClientId, ask: &Frame) {
    let request = ask.header().request();
    let area = ask.header().command_area();
    let millis = u32::from_le_bytes([area[0], area[1], area[2], area[3]]);
    let timeout = if millis == 0 {
        DEFAULT_ASK_TIMEOUT
    } else {
        Duration::from_millis(u64::from(millis))
    };
    let mut question = FrameMut::with_body(Command::from_u8(QUESTION), ask.body());
    question.seal();
    match bus.request_client(id, question, timeout) {
        Ok(reply) => {
            let bus = bus.clone();
            // Ends at the answer, the timeout or the connection's close;
            // as many as the connection's outstanding requests at most.
            compio::runtime::spawn(async move {
                let answer = match reply.await {
                    Ok(answer) => answer_frame(request, answer.body(), ANSWERED),
                    Err(RequestError::Timeout(_)) => answer_frame(request, &[], TIMED_OUT),
                    // The asker is gone, or the node is stopping: nobody to
                    // tell.
                    Err(_) => return,
                };
                let _ = bus.send_to_client(id, answer);
            })
            .detach();
        }
        Err(RequestError::Send(SendError::NotConnected | SendError::ShuttingDown)) => {}
        Err(_) => {
            let _ = bus.send_to_client(id, answer_frame(request, &[], NOT_ASKED));
        }
    }
}

/// `Answer` with `body`, the `Ask`'s `request` and `status` in
/// `command_area[0]`; sealed.
fn answer_frame(request: u64, body: &[u8], status: u8) -> Frame {
    let mut answer = FrameMut::with_body(Command::from_u8(ANSWER), body);
    let header = answer.header_mut();
    header.set_request(request);
    header.command_area_mut()[0] = status;
    answer.seal();
    answer.freeze()
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
