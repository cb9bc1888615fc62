//! No WebSocket client, nor set of them, makes a node hold more than its
//! configured memory: a ping flood without reading stops being read (one
//! pong at a time), and partly received messages draw on the node-wide
//! inbound budget as frames do on TCP (`memory.rs` holds the TCP
//! equivalents this file follows).
//!
//! The node runs on its own thread and runtime; a counting allocator
//! measures the heap growth of that thread only, so the clients (on the
//! test's thread) do not count. Sizes are scaled down from the attacks in
//! the issue (3 M pings, 24 × 63 MiB messages); the bounds scale with the
//! configuration, not with the traffic.

use std::{cell::Cell, rc::Rc, sync::mpsc, time::Duration};

use bus_core::{Bus, BusConfig, Command, Frame, FrameMut, Peer, transport::Listener as _};
use bus_tests::{
    alloc::{Counting, Window},
    client::{RawClient, WS_MASK, WsClient, tcp_connect, ws_wire_frame},
    within,
};
use bus_ws::{WsListener, WsListenerConfig};
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
};

#[global_allocator]
static ALLOC: Counting = Counting;

const ECHO: u8 = 16;
const ECHO_REPLY: u8 = 17;
const RECORD: u8 = 18;
const MIB: usize = 1 << 20;
/// What the node holds besides the queue and the budget: per-connection
/// buffers (4 KiB read buffers, the compat layer's buffers, one control
/// slot), the frame pools of its thread, tasks and bookkeeping.
const CONSTANT: usize = 4 * MIB;

/// A node on its own thread (see `memory.rs`).
struct Node {
    addr: std::net::SocketAddr,
    delivered: async_channel::Receiver<u64>,
    stop: async_channel::Sender<()>,
    report: mpsc::Receiver<(usize, u64)>,
    thread: std::thread::JoinHandle<()>,
}

/// Most frames the handler reports before the test reads them.
const DELIVERED_CAPACITY: usize = 1024;

/// Echo answers with the received buffer; every other application frame
/// has its body checked, is counted and reported.
fn handler(
    frames: Rc<Cell<u64>>,
    delivered: async_channel::Sender<u64>,
) -> impl Fn(&Bus, Peer, Frame) + 'static {
    move |bus: &Bus, from: Peer, frame: Frame| {
        let Peer::Client(id) = from else { return };
        if frame.header().command_raw() == ECHO {
            let mut reply = frame.into_mut();
            reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
            reply.reseal_header();
            let _ = bus.send_to_client(id, reply.freeze());
        } else {
            let request = frame.header().request();
            if frame.body().iter().all(|b| *b == request.to_le_bytes()[0]) {
                frames.set(frames.get() + 1);
            }
            delivered
                .try_send(request)
                .expect("the test reads every report");
        }
    }
}

fn start(config: BusConfig) -> Node {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (report_tx, report) = mpsc::channel();
    let (stop, stop_rx) = async_channel::bounded::<()>(1);
    let (delivered_tx, delivered) = async_channel::bounded(DELIVERED_CAPACITY);
    let thread = std::thread::spawn(move || {
        let runtime = bus_core::runtime::new().expect("runtime");
        runtime.block_on(async move {
            let frames = Rc::new(Cell::new(0));
            let mut ws = WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
            ws.limits.read_buffer_bytes = 4 << 10;
            ws.limits.write_buffer_bytes = 4 << 10;
            ws.limits.max_frame_size_bytes = config.max_message_size_bytes;
            ws.validate(config.max_message_size_bytes).expect("valid");
            let bus = Bus::new(config, handler(frames.clone(), delivered_tx)).expect("bus");
            let listener = WsListener::bind(&ws).expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("addr");
            bus.serve(listener).expect("serve");
            let window = Window::start();
            let _ = stop_rx.recv().await;
            let peak = window.peak_growth();
            bus.shutdown(Duration::from_secs(1)).await;
            report_tx.send((peak, frames.get())).expect("report");
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("node started");
    Node {
        addr,
        delivered,
        stop,
        report,
        thread,
    }
}

impl Node {
    /// Stops the node; returns its thread's peak heap growth and the frames
    /// its handler saw whole (Echo aside).
    async fn finish(self) -> (usize, u64) {
        self.stop.send(()).await.expect("stop");
        let report = self
            .report
            .recv_timeout(Duration::from_secs(10))
            .expect("report");
        self.thread.join().expect("node thread");
        report
    }
}

fn frame(command: u8, request: u64, len: usize) -> Frame {
    let body = vec![request.to_le_bytes()[0]; len - 256];
    let mut f = FrameMut::with_body(Command::from_u8(command), &body);
    f.header_mut().set_request(request);
    f.seal();
    f.freeze()
}

fn config() -> BusConfig {
    let mut config = BusConfig::default();
    config.max_message_size_bytes = u32::try_from(2 * MIB).expect("fits");
    config.read_buffer_bytes = 4 << 10;
    config
}

/// A raw socket upgraded to WebSocket on `/`: the `101` is read (byte by
/// byte, so nothing after it is consumed) and nothing else.
async fn raw_ws(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = tcp_connect(addr).await;
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bus.v1\r\n\r\n";
    let BufResult(res, _) = within(
        "upgrade request",
        stream.write_all(request.as_bytes().to_vec()),
    )
    .await;
    res.expect("upgrade request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let BufResult(res, byte) = within("the 101", stream.read(Vec::with_capacity(1))).await;
        assert_eq!(res.expect("read"), 1, "closed during the upgrade: {head:?}");
        head.extend_from_slice(&byte);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A client floods WebSocket pings (125-byte payloads) and never reads the
/// pongs. The pongs fill the kernel's socket buffers; then the node, which
/// answers one pong at a time, stops reading that client. Its heap stays
/// within the queue bound, the budget and the constant, and another
/// client's Echo keeps working.
#[compio::test]
async fn a_ping_flood_without_reading_cannot_grow_the_node() {
    let queue = 4 * MIB;
    let budget = 4 * MIB;
    let mut config = config();
    config.queue_capacity_bytes = queue;
    config.inbound_budget_bytes = budget as u64;
    let node = start(config);
    let mut hog = raw_ws(node.addr).await;
    let ping = ws_wire_frame(0x89, Some(WS_MASK), &[0x5A; 125]);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    // Up to 512 MiB of pings (≈ 4 M), nothing read: as much as the kernel
    // lets through before the node stops reading.
    let mut sent = 0usize;
    let writing = async {
        for _ in 0..8192 {
            let BufResult(res, _) = hog.write_all(burst.clone()).await;
            if res.is_err() {
                break;
            }
            sent += burst.len();
        }
    };
    let _ = compio::runtime::time::timeout(Duration::from_secs(3), writing).await;
    let mut polite = WsClient::connect(node.addr).await;
    for request in 1..=20u64 {
        polite.send(&frame(ECHO, request, 1000)).await;
        let reply = polite.recv_frame().await;
        assert_eq!(reply.header().command_raw(), ECHO_REPLY);
        assert_eq!(reply.header().request(), request);
    }
    drop(hog);
    let (peak, _) = node.finish().await;
    let bound = queue + budget + CONSTANT;
    println!("{sent} bytes of pings sent; node heap grew at most {peak} bytes (bound {bound})");
    assert!(sent >= MIB, "a flood, not a trickle: {sent} bytes");
    // Read backpressure: once the pongs back up, the node reads no more
    // pings, so the writes stall after what the kernel buffers hold (a few
    // MiB), far below the 512 MiB offered.
    assert!(
        sent < 64 * MIB,
        "the node kept reading pings it could not answer: {sent} bytes"
    );
    assert!(
        peak <= bound,
        "the node held {peak} bytes for a ping flood; bound {bound}"
    );
}

/// 24 connections each send half of a 1 MiB message and wait (the issue's
/// 24 unfinished 63 MiB messages, scaled). A message larger than the read
/// buffer reserves its frame's size from the inbound budget before
/// anything is allocated, so at most the budget is held in partial
/// messages; the other connections are not read meanwhile. When the
/// senders finish, every frame is delivered whole.
#[compio::test]
async fn unfinished_messages_hold_at_most_the_inbound_budget() {
    const CONNECTIONS: u64 = 24;
    let budget = 4 * MIB;
    let mut config = config();
    config.inbound_budget_bytes = budget as u64;
    let node = start(config);
    let mut senders = Vec::new();
    for request in 1..=CONNECTIONS {
        let stream = raw_ws(node.addr).await;
        let wire = ws_wire_frame(0x82, Some(WS_MASK), frame(RECORD, request, MIB).as_bytes());
        senders.push((stream, wire));
    }
    for (stream, wire) in &mut senders {
        let half = wire[..MIB / 2].to_vec();
        let BufResult(res, _) = within("first half", stream.write_all(half)).await;
        res.expect("first half");
    }
    // The senders wait here, so the node holds what it holds now.
    for (stream, wire) in &mut senders {
        let rest = wire[MIB / 2..].to_vec();
        let BufResult(res, _) = within("second half", stream.write_all(rest)).await;
        res.expect("second half");
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..CONNECTIONS {
        let request = within("a delivered frame", node.delivered.recv())
            .await
            .expect("the node reports");
        assert!(seen.insert(request), "frame {request} delivered twice");
    }
    drop(senders);
    let (peak, frames) = node.finish().await;
    assert_eq!(frames, CONNECTIONS, "every frame delivered whole, once");
    let bound = budget + CONSTANT;
    println!("node heap grew at most {peak} bytes (bound {bound})");
    assert!(
        peak <= bound,
        "partial messages held {peak} bytes; the budget is {budget}"
    );
}
