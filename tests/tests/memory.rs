//! No client, nor set of clients, makes a node hold more than its
//! configured memory: the outbound queue's byte bound, the node-wide
//! inbound budget, and a stated constant (read buffers, frame pools,
//! bookkeeping).
//!
//! The node runs on its own thread and runtime; a counting allocator
//! measures the heap growth of that thread only, so the clients (on the
//! test's thread) do not count. Sizes are scaled down from the attacks in
//! the issue (16 MiB frames, 64 MiB frames) to keep the test fast; the
//! bounds scale with the configuration, not with the traffic.

use std::{cell::Cell, rc::Rc, sync::mpsc, time::Duration};

use bus_core::{Bus, BusConfig, Command, Frame, FrameMut, Peer, transport::Listener as _};
use bus_tcp::{TcpListener, TcpListenerConfig};
use bus_tests::{
    alloc::{Counting, Window},
    client::{RawClient, TcpClient},
    within,
};
use compio::{BufResult, io::AsyncWriteExt, net::TcpStream};

#[global_allocator]
static ALLOC: Counting = Counting;

const ECHO: u8 = 16;
const ECHO_REPLY: u8 = 17;
const MIB: usize = 1 << 20;
/// What the node holds besides the queue and the budget: per-connection
/// read buffers (4 KiB here), the frame pools of its thread (at most 9 MiB
/// in size classes and 4 MiB of larger buffers, little of it used here),
/// tasks and bookkeeping.
const CONSTANT: usize = 4 * MIB;

/// A node on its own thread: its address, the frames its handler saw
/// whole (Echo aside), the way to stop it, and at the end the most its
/// thread's heap grew while it served.
struct Node {
    addr: std::net::SocketAddr,
    delivered: async_channel::Receiver<u64>,
    stop: async_channel::Sender<()>,
    report: mpsc::Receiver<Report>,
    thread: std::thread::JoinHandle<()>,
}

/// What a node reports when it stops: its thread's peak heap growth, the
/// frames its handler saw whole (Echo aside), and the sends its queues
/// refused.
struct Report {
    peak: usize,
    whole: u64,
    queue_full: u64,
    /// Allocations above 64 KiB the node's thread made.
    large_allocations: u64,
}

/// Most frames the handler reports before the test reads them.
const DELIVERED_CAPACITY: usize = 1024;

/// The node's handler: Echo answers with the received buffer; every other
/// application frame has its body checked, is counted and reported.
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
            let whole = frame.body().iter().all(|b| *b == request.to_le_bytes()[0]);
            if whole {
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
            let bus = Bus::new(config, handler(frames.clone(), delivered_tx)).expect("bus");
            let listener = TcpListener::bind(&TcpListenerConfig::new(
                "127.0.0.1:0".parse().expect("addr"),
            ))
            .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("addr");
            bus.serve(listener).expect("serve");
            let window = Window::start();
            let _ = stop_rx.recv().await;
            let peak = window.peak_growth();
            let large_allocations = window.large_allocations();
            let queue_full = bus.stats().queue_full;
            bus.shutdown(Duration::from_secs(1)).await;
            report_tx
                .send(Report {
                    peak,
                    whole: frames.get(),
                    queue_full,
                    large_allocations,
                })
                .expect("report");
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
    /// Stops the node and returns its report.
    async fn finish(self) -> Report {
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

/// A client sends Echo frames of 1 MiB and never reads the replies. The
/// replies fill the kernel's socket buffers, then the node's queue up to
/// its byte bound; then the node stops reading that client. What the node
/// holds stays within the queue bound, the budget and the constant, while
/// another client's Echo keeps working.
#[compio::test]
async fn a_client_that_never_reads_its_echoes_cannot_grow_the_node_past_its_queue() {
    let queue = 4 * MIB;
    let budget = 4 * MIB;
    let mut config = config();
    config.queue_capacity_bytes = queue;
    config.inbound_budget_bytes = budget as u64;
    let node = start(config);
    let mut hog = within("connect", TcpStream::connect(node.addr))
        .await
        .expect("connect");
    // 48 MiB sent, nothing read: as much as the kernel lets through.
    let writing = async {
        for request in 1..=48u64 {
            let BufResult(res, _) = hog.write_all(frame(ECHO, request, MIB)).await;
            if res.is_err() {
                break;
            }
        }
    };
    // The writes stall once the node stops reading; stop trying after a
    // while (the point is what the node holds meanwhile).
    let _ = compio::runtime::time::timeout(Duration::from_secs(3), writing).await;
    let mut polite = TcpClient::connect(node.addr).await;
    for request in 1..=20u64 {
        polite.send(&frame(ECHO, request, 1000)).await;
        let reply = polite.recv_frame().await;
        assert_eq!(reply.header().command_raw(), ECHO_REPLY);
        assert_eq!(reply.header().request(), request);
    }
    drop(hog);
    let Report { peak, .. } = node.finish().await;
    let bound = queue + budget + CONSTANT;
    println!("node heap grew at most {peak} bytes (bound {bound})");
    assert!(
        peak <= bound,
        "the node held {peak} bytes for a client that does not read; bound {bound}"
    );
}

/// A client sends Echo frames of 100 000 bytes (the queue is no multiple
/// of them) and never reads. Its input is paused
/// once its queue holds half its byte bound, before a reply would be
/// refused: the node reads no further, so no reply is dropped (before, it
/// kept reading and dropping replies as `QueueFull` for as long as the
/// client kept writing).
#[compio::test]
async fn a_client_that_never_reads_is_paused_before_a_reply_is_refused() {
    let mut config = config();
    config.queue_capacity_bytes = 2 * MIB;
    let node = start(config);
    let mut hog = within("connect", TcpStream::connect(node.addr))
        .await
        .expect("connect");
    // 64 MiB offered, far beyond the queue and the kernel's buffers.
    let writing = async {
        for request in 1..=1024u64 {
            let BufResult(res, _) = hog.write_all(frame(ECHO, request, 100_000)).await;
            if res.is_err() {
                break;
            }
        }
    };
    // Whether the writes stall (paused) or not (the node reads and drops),
    // stop after a while: the count of refused replies tells which.
    let _ = compio::runtime::time::timeout(Duration::from_secs(3), writing).await;
    drop(hog);
    let Report { queue_full, .. } = node.finish().await;
    assert_eq!(
        queue_full, 0,
        "replies refused while the client was still read"
    );
}

/// 200 connections each send half of a 1 MiB frame and wait. Frames larger
/// than the read buffer reserve their size from the inbound budget before
/// anything is allocated, so at most the budget is held in partial frames;
/// the other connections are not read meanwhile (flow control holds their
/// bytes in the kernel). When the senders finish, every frame is delivered
/// whole.
#[compio::test]
async fn two_hundred_half_sent_frames_hold_at_most_the_inbound_budget() {
    const CONNECTIONS: u64 = 200;
    let budget = 8 * MIB;
    let mut config = config();
    config.inbound_budget_bytes = budget as u64;
    let node = start(config);
    let mut senders = Vec::new();
    for request in 1..=CONNECTIONS {
        let stream = within("connect", TcpStream::connect(node.addr))
            .await
            .expect("connect");
        senders.push((stream, frame(18, request, MIB)));
    }
    for (stream, frame) in &mut senders {
        let half = frame.as_bytes()[..MIB / 2].to_vec();
        let BufResult(res, _) = within("first half", stream.write_all(half)).await;
        res.expect("first half");
    }
    for (stream, frame) in &mut senders {
        let rest = frame.as_bytes()[MIB / 2..].to_vec();
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
    let Report {
        peak,
        whole: frames,
        ..
    } = node.finish().await;
    assert_eq!(frames, CONNECTIONS, "every frame delivered whole, once");
    let bound = budget + CONSTANT;
    println!("node heap grew at most {peak} bytes (bound {bound})");
    assert!(
        peak <= bound,
        "partial frames held {peak} bytes; the budget is {budget}"
    );
}

/// A client echoes 100 frames of 1 MiB, two in flight. Frames larger than
/// the pooled size classes come from the thread's large-buffer cache once
/// it is warm, so the node allocates a handful of them, not one per frame
/// (before the cache, each frame landed on fresh pages: 100 allocations).
#[compio::test]
async fn echoing_large_frames_reuses_their_buffers() {
    const FRAMES: u64 = 100;
    let node = start(config());
    let mut client = TcpClient::connect(node.addr).await;
    let mut next = 1;
    let mut received = 0;
    while received < FRAMES {
        while next <= FRAMES && next - received <= 2 {
            client.send(&frame(ECHO, next, MIB)).await;
            next += 1;
        }
        let reply = client.recv_frame().await;
        received += 1;
        assert_eq!(reply.header().command_raw(), ECHO_REPLY);
        assert_eq!(reply.header().request(), received, "in order, none lost");
        assert_eq!(reply.len(), MIB);
    }
    drop(client);
    let Report {
        large_allocations, ..
    } = node.finish().await;
    println!("node allocated {large_allocations} buffers above 64 KiB for {FRAMES} frames");
    assert!(
        large_allocations <= 8,
        "{large_allocations} large allocations for {FRAMES} frames of 1 MiB: \
         their buffers are not reused"
    );
}
