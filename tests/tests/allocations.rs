//! The hot path does not allocate per frame (docs/ARCHITECTURE.md, "No
//! allocation per frame"): a counting global allocator watches the node's
//! thread while 10 000 Echo frames of 256 B go through it over TCP.
//!
//! The node runs on its own thread and runtime; only allocations made on
//! that thread are counted, so the client (on the test's thread) does not
//! disturb the count. What remains is per socket operation, not per frame:
//! compio keeps each submitted read or write in one small heap cell, and
//! the node reads 64 KiB at a time and writes up to `max_batch_frames`
//! replies per `writev`.
//!
//! The same holds over WebSocket (`bus-ws` on compio's owned buffers): the
//! reader parses and unmasks from its read buffer into a pooled frame, the
//! writer packs replies with their headers into one pooled write buffer.
//!
//! The counter is process-wide state: the tests take turns (`SERIAL`).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use bus_core::{
    Bus, BusConfig, Command, Frame, FrameMut, Peer, StreamReader,
    transport::{FrameReader, Listener as _},
};
use bus_tcp::{TcpListener, TcpListenerConfig, TcpSource};
use bus_tests::within;
use bus_ws::{WsListener, WsListenerConfig};
use compio::{BufResult, io::AsyncWriteExt, net::TcpStream};

/// Counts allocations made on threads that opted in.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// One counting test at a time (under `cargo test` they share a process).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn watched() -> bool {
    COUNTING.load(Ordering::Relaxed) && WATCHED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; counting has no effect on the
// memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if watched() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if watched() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ECHO: u8 = 16;
const ECHO_REPLY: u8 = 17;
const FRAMES: u64 = 10_000;
/// Frames the client keeps in flight.
const WINDOW: u64 = 64;
const BODY: usize = 256;

/// The reference node's Echo: the received buffer becomes the reply.
fn echo(bus: &Bus, from: Peer, frame: Frame) {
    let Peer::Client(id) = from else { return };
    let mut reply = frame.into_mut();
    reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
    reply.header_mut().set_client(0);
    reply.reseal_header();
    let _ = bus.send_to_client(id, reply.freeze());
}

fn request(id: u64) -> Frame {
    let mut frame = FrameMut::with_body(Command::from_u8(ECHO), &[(id % 251) as u8; BODY]);
    frame.header_mut().set_request(id);
    frame.seal();
    frame.freeze()
}

/// Sends `count` requests starting at `first` in bursts of `WINDOW` (one
/// write each) and checks every reply before the next burst.
async fn echo_round(
    stream: &mut TcpStream,
    reader: &mut StreamReader<TcpSource>,
    first: u64,
    count: u64,
) {
    let end = first + count;
    let mut next = first;
    while next < end {
        let burst: Vec<Frame> = (next..end.min(next + WINDOW)).map(request).collect();
        let sent = burst.len() as u64;
        let BufResult(res, _) = within("write", stream.write_vectored_all(burst)).await;
        res.expect("write");
        for expected in next..next + sent {
            let reply = within("reply", reader.read_frame()).await.expect("reply");
            assert_eq!(reply.header().command_raw(), ECHO_REPLY);
            assert_eq!(reply.header().request(), expected, "in order, none lost");
            assert_eq!(reply.body(), &[(expected % 251) as u8; BODY]);
        }
        next += sent;
    }
}

/// Runs `test` on a compio runtime of the test's thread, one counting test
/// at a time.
fn in_turn(test: impl std::future::Future<Output = ()>) {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(test);
}

#[test]
fn echoing_10000_frames_allocates_per_socket_operation_not_per_frame() {
    in_turn(tcp_echo());
}

#[test]
fn echoing_10000_frames_over_websocket_allocates_per_socket_operation_not_per_frame() {
    in_turn(ws_echo());
}

async fn tcp_echo() {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let node = std::thread::spawn(move || {
        WATCHED.with(|w| w.set(true));
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let mut config = BusConfig::default();
            config.max_batch_frames = 512;
            let bus = Bus::new(config, echo).expect("bus");
            let listener = TcpListener::bind(&TcpListenerConfig::new(
                "127.0.0.1:0".parse().expect("addr"),
            ))
            .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send addr");
            bus.serve(listener).expect("serve");
            let _ = stop_rx.recv().await;
            bus.shutdown(Duration::from_secs(1)).await;
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("node started");
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = StreamReader::new(
        TcpSource::new(stream.clone()),
        bus_core::Decoder::new(bus_tests::client::CLIENT_LIMITS),
    );
    // Warm up: the connection's buffers, the frame pools of both threads,
    // the queue's and the registry's capacity.
    echo_round(&mut stream, &mut reader, 1, 2_000).await;
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    echo_round(&mut stream, &mut reader, 1_000_000, FRAMES).await;
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    stop_tx.send(()).await.expect("stop");
    node.join().expect("node thread");
    println!("node-thread allocations while echoing {FRAMES} frames: {allocations}");
    // Without the pools this was at least 3 per frame (30 000): the frame
    // buffer, its reference count, and the reply's. What is left is per
    // burst: the node reads a burst with one or two reads and answers it
    // with one `writev`, and compio keeps each submitted operation in one
    // small heap cell.
    let bursts = FRAMES.div_ceil(WINDOW);
    assert!(
        allocations <= 4 * bursts,
        "{allocations} allocations for {FRAMES} frames in {bursts} bursts: \
         something on the hot path allocates per frame"
    );
}

/// Sends `count` requests starting at `first` over WebSocket in bursts of
/// `WINDOW` (one batch each) and checks every reply before the next burst.
async fn ws_echo_round(
    reader: &mut bus_ws::WsReader,
    writer: &mut bus_ws::WsWriter,
    first: u64,
    count: u64,
) {
    use bus_core::transport::FrameWriter as _;
    let end = first + count;
    let mut next = first;
    while next < end {
        let burst: Vec<Frame> = (next..end.min(next + WINDOW)).map(request).collect();
        let sent = burst.len() as u64;
        let BufResult(res, _) = within("write", writer.write_batch(burst)).await;
        res.expect("write");
        for expected in next..next + sent {
            let reply = within("reply", reader.read_frame()).await.expect("reply");
            assert_eq!(reply.header().command_raw(), ECHO_REPLY);
            assert_eq!(reply.header().request(), expected, "in order, none lost");
            assert_eq!(reply.body(), &[(expected % 251) as u8; BODY]);
        }
        next += sent;
    }
}

async fn ws_echo() {
    use bus_core::{ReadSettings, transport::Connection as _};
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let node = std::thread::spawn(move || {
        WATCHED.with(|w| w.set(true));
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let mut config = BusConfig::default();
            config.max_batch_frames = 512;
            let mut ws = WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
            // A burst in one read and its replies in one write, as on TCP.
            ws.limits.read_buffer_bytes = 64 << 10;
            ws.limits.write_buffer_bytes = 64 << 10;
            ws.validate(config.max_message_size_bytes).expect("config");
            let bus = Bus::new(config, echo).expect("bus");
            let listener = WsListener::bind(&ws).expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send addr");
            bus.serve(listener).expect("serve");
            let _ = stop_rx.recv().await;
            bus.shutdown(Duration::from_secs(1)).await;
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("node started");
    let mut dial = bus_ws::WsConnectorConfig::default();
    dial.limits.read_buffer_bytes = 64 << 10;
    dial.limits.write_buffer_bytes = 64 << 10;
    let connection = within("connect", bus_ws::connect(addr, &dial))
        .await
        .expect("connect");
    let settings = ReadSettings::new(bus_tests::client::CLIENT_LIMITS);
    let (mut reader, mut writer, _) = within("upgrade", connection.establish(settings))
        .await
        .expect("upgrade");
    // Warm up, as over TCP.
    ws_echo_round(&mut reader, &mut writer, 1, 2_000).await;
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    ws_echo_round(&mut reader, &mut writer, 1_000_000, FRAMES).await;
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    stop_tx.send(()).await.expect("stop");
    node.join().expect("node thread");
    println!("node-thread allocations while echoing {FRAMES} frames over WebSocket: {allocations}");
    // What is left is per burst, as over TCP: a read or two and one write,
    // each one small heap cell inside compio.
    let bursts = FRAMES.div_ceil(WINDOW);
    assert!(
        allocations <= 4 * bursts,
        "{allocations} allocations for {FRAMES} frames in {bursts} bursts: \
         something on the WebSocket hot path allocates per frame"
    );
}
