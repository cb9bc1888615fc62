//! End-to-end loopback benchmark over TCP, TLS, WS and WSS: a bus echoing
//! sealed frames on one thread, a load generator on another, each on its own
//! compio runtime.
//!
//! For each case (frame size × connections) every connection keeps `depth`
//! requests in flight; the generator writes replacements for every batch of
//! replies in one vectored write. Reports frames/s, MB/s (payload both ways
//! counted once) and p50/p99 round-trip latency. Run with
//! `cargo xtask bench` (release build); `--seconds N` sets each case's
//! measuring time (default 3), `--quick` runs 1 s per case, `--transport
//! tcp|tls|ws|wss|all` picks the transports (default all). Each non-TCP row
//! also shows its ratio to the TCP row of the same case.
//!
//! `--idle N` (default 1000, 0 skips it) then opens N idle connections per
//! transport and reports the server's heap per connection: a counting
//! allocator tracks the live bytes allocated by the server thread, sampled
//! before and after the bus registered the N connections. Kernel socket
//! buffers are not included.
//!
//! A further part runs the echo load against the multi-shard runtime
//! (`bus-shard`) with 1 and then 2 shards, and measures what one
//! `send_to_client` costs when the client is on the sending shard (a queue
//! push) and when it is on another shard (a push into that shard's inbox).
//!
//! The last part is the replica plane: two mesh nodes, one authenticated
//! link, sealed 256 B and 64 KiB frames pipelined `depth` deep from node 0
//! to node 1 and echoed back, next to the TCP client plane's one-connection
//! rows (`--no-replica` skips it).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::{Cell, RefCell},
    net::SocketAddr,
    rc::Rc,
    sync::mpsc,
    time::{Duration, Instant},
};

use bus::{Bus, BusConfig, Command, DecodeLimits, Decoder, Frame, FrameMut, Peer};
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
};
use hdrhistogram::Histogram;

/// Counts the live heap bytes each thread allocated (and freed itself).
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

#[allow(
    clippy::cast_possible_wrap,
    reason = "an allocation never exceeds isize::MAX bytes"
)]
fn count(delta: usize, sign: i64) {
    // `try_with`: allocations during thread teardown are not counted.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + sign * delta as i64));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only observes sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;
#[path = "support/replica.rs"]
mod replica;
#[path = "support/shards.rs"]
mod shards;

const ECHO: u8 = 16;
const DEPTH: usize = 32;
const WARMUP: Duration = Duration::from_millis(500);

struct Case {
    frame_bytes: usize,
    connections: usize,
}

struct Outcome {
    frames: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

fn echo(bus: &Bus, from: Peer, frame: Frame) {
    if let Peer::Client(id) = from {
        let mut reply = frame.into_mut();
        reply.header_mut().set_command(Command::from_u8(ECHO + 1));
        reply.seal();
        let _ = bus.send_to_client(id, reply.freeze());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
    Quic,
}

impl Transport {
    const ALL: [Self; 5] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss, Self::Quic];

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
        }
    }
}

#[derive(Debug, Clone)]
struct Addrs {
    tcp: SocketAddr,
    tls: SocketAddr,
    /// WebSocket listeners, where the server has them.
    ws: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    quic: Option<SocketAddr>,
    /// The self-signed certificate the TLS listener serves.
    cert: std::path::PathBuf,
}

/// What the server thread reports when probed: its live heap bytes and
/// how many connections its bus holds.
type Probe = (i64, usize);

/// The server thread's controls: stop it, or probe it.
struct Server {
    stop: mpsc::Sender<()>,
    probe: mpsc::Sender<mpsc::Sender<Probe>>,
    handle: std::thread::JoinHandle<bus::BusStats>,
}

/// Starts the server thread; returns its addresses and its controls.
fn server() -> (Addrs, Server) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (probe_tx, probe_rx) = mpsc::channel::<mpsc::Sender<Probe>>();
    let handle = std::thread::spawn(move || {
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        println!("server I/O driver: {:?}", runtime.driver_type());
        runtime.block_on(async move {
            let bus = Bus::new(BusConfig::default(), echo).expect("bus");
            let config = bus::tcp::TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
            let listener = bus::tcp::TcpListener::bind(&config).expect("bind");
            let tcp = bus::transport::Listener::local_addr(&listener).expect("addr");
            bus.serve(listener).expect("serve");
            let dir = std::env::temp_dir().join(format!("bus-bench-{}", std::process::id()));
            let tls = bus::tls::ServerTls::new(&bus::tls::TlsServerConfig::new(
                bus::tls::CertificateSource::SelfSigned { dir },
            ))
            .expect("self-signed certificate");
            let cert = tls.cert_path();
            let quic_config =
                bus::quic::QuicListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
            let listener = bus::quic::QuicListener::bind(&quic_config, tls.clone()).expect("bind");
            let quic = bus::transport::Listener::local_addr(&listener).expect("addr");
            bus.serve(listener).expect("serve");
            let listener = bus::tls::TlsListener::bind(&config, tls).expect("bind");
            let tls = bus::transport::Listener::local_addr(&listener).expect("addr");
            bus.serve(listener).expect("serve");
            let ws_config = bus::ws::WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
            let mut ws_config = ws_config;
            if let Ok(kib) = std::env::var("BENCH_WS_BUFFER_KIB") {
                let bytes = kib.parse::<usize>().expect("KiB") << 10;
                ws_config.limits.read_buffer_bytes = bytes;
                ws_config.limits.write_buffer_bytes = bytes;
            }
            let listener = bus::ws::WsListener::bind(&ws_config).expect("bind");
            let ws = bus::transport::Listener::local_addr(&listener).expect("addr");
            bus.serve(listener).expect("serve");
            let mut wss_tls = bus::tls::TlsServerConfig::new(bus::tls::CertificateSource::Files {
                cert: cert.clone(),
                key: cert.with_file_name("key.pem"),
            });
            wss_tls.alpn = vec![bus::tls::ALPN_HTTP1.to_vec()];
            let wss_tls = bus::tls::ServerTls::new(&wss_tls).expect("WSS certificate");
            let listener = bus::ws::WsListener::bind_tls(&ws_config, wss_tls).expect("bind");
            let wss = bus::transport::Listener::local_addr(&listener).expect("addr");
            bus.serve(listener).expect("serve");
            addr_tx
                .send(Addrs {
                    tcp,
                    tls,
                    ws: Some(ws),
                    wss: Some(wss),
                    quic: Some(quic),
                    cert,
                })
                .expect("send");
            // Poll for requests without blocking the runtime.
            while stop_rx.try_recv().is_err() {
                while let Ok(reply) = probe_rx.try_recv() {
                    let live = LIVE_BYTES.with(Cell::get);
                    let _ = reply.send((live, bus.stats().connections));
                }
                compio::runtime::time::sleep(Duration::from_millis(20)).await;
            }
            let stats = bus.stats();
            bus.shutdown(Duration::from_secs(2)).await;
            stats
        })
    });
    let server = Server {
        stop: stop_tx,
        probe: probe_tx,
        handle,
    };
    (addr_rx.recv().expect("server address"), server)
}

impl Server {
    fn probe(&self) -> Probe {
        let (tx, rx) = mpsc::channel();
        self.probe.send(tx).expect("server alive");
        rx.recv().expect("probe answer")
    }

    /// Probes until the bus holds `connections` (bounded: 30 s).
    fn probe_when(&self, connections: usize) -> Probe {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = self.probe();
            if probe.1 == connections {
                return probe;
            }
            assert!(
                Instant::now() < deadline,
                "the bus holds {} connections, expected {connections}",
                probe.1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn request_frame(body: usize, sent_at_nanos: u64) -> Frame {
    let mut frame = FrameMut::new(Command::from_u8(ECHO), body);
    frame.header_mut().set_request(sent_at_nanos);
    frame.seal();
    frame.freeze()
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "nanoseconds of a benchmark run fit in u64"
)]
fn nanos_since(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// A WebSocket client's byte stream.
trait WsIo: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin + 'static {}
impl<S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin + 'static> WsIo for S {}

type WsStream = async_tungstenite::WebSocketStream<Box<dyn WsIo>>;

/// The load generator's side of one connection.
enum Client {
    Tcp {
        rx: TcpStream,
        tx: TcpStream,
    },
    Tls(Box<bus::tls::TlsStream>),
    Quic {
        send: bus::quic::compio_quic::SendStream,
        recv: bus::quic::compio_quic::RecvStream,
        /// Keeps the connection open.
        _connection: bus::quic::compio_quic::Connection,
        chunks: Vec<bytes::Bytes>,
    },
    Ws(Box<WsStream>),
}

/// Upgrades `io` on `/` with the bus subprotocol.
async fn upgrade(io: Box<dyn WsIo>, addr: SocketAddr, scheme: &str) -> WsStream {
    let uri = format!("{scheme}://{addr}/").parse().expect("uri");
    let request =
        async_tungstenite::tungstenite::ClientRequestBuilder::new(uri).with_sub_protocol("bus.v1");
    let config = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    async_tungstenite::client_async_with_config(request, io, Some(config))
        .await
        .expect("upgrade")
        .0
}

impl Client {
    async fn connect(transport: Transport, addrs: &Addrs) -> Self {
        match transport {
            Transport::Tcp => {
                let stream = TcpStream::connect(addrs.tcp).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (rx, tx) = stream.into_split();
                Self::Tcp { rx, tx }
            }
            Transport::Tls => {
                let config = bus::tls::TlsClientConfig::new(&addrs.cert, "localhost");
                let tls = bus::tls::ClientTls::new(&config).expect("client TLS");
                Self::Tls(Box::new(tls.connect(addrs.tls).await.expect("TLS connect")))
            }
            Transport::Ws => {
                let addr = addrs.ws.expect("a WS listener");
                let stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let io = Box::new(compio::io::compat::AsyncStream::new(stream));
                let io: Box<dyn WsIo> = Box::new(Box::into_pin(io));
                Self::Ws(Box::new(upgrade(io, addr, "ws").await))
            }
            Transport::Wss => {
                let mut config = bus::tls::TlsClientConfig::new(&addrs.cert, "localhost");
                config.alpn = vec![bus::tls::ALPN_HTTP1.to_vec()];
                let tls = bus::tls::ClientTls::new(&config).expect("client TLS");
                let addr = addrs.wss.expect("a WSS listener");
                let session = tls.connect(addr).await.expect("TLS connect");
                Self::Ws(Box::new(upgrade(Box::new(session), addr, "wss").await))
            }
            Transport::Quic => {
                let config = bus::quic::QuicClientConfig::new(&addrs.cert, "localhost");
                let quic = bus::quic::ClientQuic::new(&config).expect("client QUIC");
                let addr = addrs.quic.expect("a QUIC listener");
                let (connection, send, recv) = quic.connect_raw(addr).await.expect("QUIC connect");
                let mut client = Self::Quic {
                    send,
                    recv,
                    _connection: connection,
                    chunks: Vec::new(),
                };
                // Open the stream with a Ping and take its 256-byte Pong.
                client.write(vec![bus::quic::opening_ping()]).await;
                let mut pong = 0;
                let mut buf = Vec::with_capacity(256);
                while pong < 256 {
                    let (n, b) = client.read(buf).await;
                    buf = b;
                    assert!(n > 0, "server closed");
                    pong += n;
                }
                assert_eq!(pong, 256, "only the Pong before any request");
                client
            }
        }
    }

    async fn write(&mut self, frames: Vec<Frame>) {
        match self {
            Self::Tcp { tx, .. } => {
                let BufResult(res, _) = tx.write_vectored_all(frames).await;
                res.expect("write");
            }
            Self::Tls(stream) => {
                use futures_util::AsyncWriteExt;
                for frame in &frames {
                    stream.write_all(frame.as_bytes()).await.expect("write");
                }
                stream.flush().await.expect("flush");
            }
            Self::Ws(ws) => {
                use futures_util::SinkExt;
                for frame in &frames {
                    let message =
                        async_tungstenite::tungstenite::Message::binary(frame.as_bytes().to_vec());
                    ws.feed(message).await.expect("write");
                }
                ws.flush().await.expect("flush");
            }
            Self::Quic { send, chunks, .. } => {
                chunks.extend(
                    frames
                        .iter()
                        .map(|f| bytes::Bytes::copy_from_slice(f.as_bytes())),
                );
                send.write_all_chunks(chunks).await.expect("write");
                chunks.clear();
            }
        }
    }

    async fn read(&mut self, mut buf: Vec<u8>) -> (usize, Vec<u8>) {
        match self {
            Self::Tcp { rx, .. } => {
                buf.clear();
                let BufResult(res, buf) = rx.read(buf).await;
                (res.expect("read"), buf)
            }
            Self::Tls(stream) => {
                use futures_util::AsyncReadExt;
                buf.resize(buf.capacity(), 0);
                let n = stream.read(&mut buf).await.expect("read");
                buf.truncate(n);
                (n, buf)
            }
            // Every message already received (one frame each), like one
            // socket read on a stream: the first awaited, the rest taken
            // only if ready (`next` on a WebSocket is cancel safe).
            Self::Ws(ws) => {
                use async_tungstenite::tungstenite::Message;
                use futures_util::{FutureExt, StreamExt};
                buf.clear();
                let mut next = Some(ws.next().await);
                while let Some(item) = next {
                    match item.expect("open").expect("read") {
                        Message::Binary(bytes) => buf.extend_from_slice(&bytes),
                        other => assert!(!other.is_close(), "server closed"),
                    }
                    next = if buf.is_empty() {
                        Some(ws.next().await)
                    } else {
                        ws.next().now_or_never()
                    };
                }
                (buf.len(), buf)
            }
            Self::Quic { recv, .. } => {
                buf.clear();
                let chunk = recv
                    .read_chunk(buf.capacity().max(1), true)
                    .await
                    .expect("read")
                    .expect("server closed");
                buf.extend_from_slice(&chunk.bytes);
                (buf.len(), buf)
            }
        }
    }
}

async fn drive_connection(
    transport: Transport,
    addrs: Addrs,
    case_body: usize,
    origin: Instant,
    warm_at: Instant,
    end_at: Instant,
    out: Rc<RefCell<Outcome>>,
) {
    let mut client = Client::connect(transport, &addrs).await;
    let limits = DecodeLimits {
        max_message_size_bytes: 64 << 20,
        require_sealed: false,
    };
    let mut decoder = Decoder::new(limits);
    let initial: Vec<Frame> = (0..DEPTH)
        .map(|_| request_frame(case_body, nanos_since(origin)))
        .collect();
    client.write(initial).await;
    let mut in_flight = DEPTH;
    let mut buf = Vec::with_capacity(256 << 10);
    while in_flight > 0 {
        let (n, b) = client.read(buf).await;
        buf = b;
        assert!(n > 0, "server closed");
        let mut input = &buf[..];
        let mut replies = 0;
        while !input.is_empty() {
            if let Some(reply) = decoder.decode(&mut input).expect("valid reply") {
                replies += 1;
                let now = Instant::now();
                if now >= warm_at && now < end_at {
                    let mut o = out.borrow_mut();
                    o.frames += 1;
                    let _ = o
                        .latency
                        .record(nanos_since(origin).saturating_sub(reply.header().request()));
                }
            }
        }
        in_flight -= replies;
        if Instant::now() < end_at && replies > 0 {
            let next: Vec<Frame> = (0..replies)
                .map(|_| request_frame(case_body, nanos_since(origin)))
                .collect();
            client.write(next).await;
            in_flight += replies;
        }
    }
}

fn run_case(transport: Transport, addrs: &Addrs, case: &Case, measure: Duration) -> Outcome {
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let origin = Instant::now();
        let warm_at = origin + WARMUP;
        let end_at = warm_at + measure;
        let out = Rc::new(RefCell::new(Outcome {
            frames: 0,
            elapsed: measure,
            latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram"),
        }));
        let body = case.frame_bytes - 256;
        let tasks: Vec<_> = (0..case.connections)
            .map(|_| {
                compio::runtime::spawn(drive_connection(
                    transport,
                    addrs.clone(),
                    body,
                    origin,
                    warm_at,
                    end_at,
                    out.clone(),
                ))
            })
            .collect();
        for task in tasks {
            task.await.expect("connection task");
        }
        Rc::try_unwrap(out)
            .ok()
            .expect("all tasks done")
            .into_inner()
    })
}

/// Opens `n` idle connections and returns the server's heap growth per
/// connection, in bytes.
#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
fn idle_memory(transport: Transport, addrs: &Addrs, server: &Server, n: usize) -> f64 {
    let before = server.probe_when(0);
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    let per_connection = runtime.block_on(async {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(Client::connect(transport, addrs).await);
        }
        let after = server.probe_when(n);
        drop(clients);
        (after.0 - before.0) as f64 / n as f64
    });
    drop(runtime);
    server.probe_when(0);
    per_connection
}

/// `--quick`, `--seconds N`, `--transport NAME`, `--idle N`,
/// `--no-replica`.
fn parse_args() -> (Duration, Vec<Transport>, usize, bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut measure = Duration::from_secs(3);
    let mut transports = Transport::ALL.to_vec();
    let mut idle: usize = 1000;
    let mut with_replica = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => measure = Duration::from_secs(1),
            "--seconds" => {
                let s: u64 = it.next().and_then(|v| v.parse().ok()).expect("--seconds N");
                measure = Duration::from_secs(s);
            }
            "--transport" => {
                let name = it.next().map(String::as_str);
                transports = match name {
                    Some("all") => Transport::ALL.to_vec(),
                    _ => vec![
                        *Transport::ALL
                            .iter()
                            .find(|t| Some(t.name()) == name)
                            .unwrap_or_else(|| {
                                panic!("--transport tcp|tls|ws|wss|quic|all, not {name:?}")
                            }),
                    ],
                };
            }
            "--idle" => {
                idle = it.next().and_then(|v| v.parse().ok()).expect("--idle N");
            }
            "--no-replica" => with_replica = false,
            other => panic!(
                "unknown argument {other}; use --quick, --seconds N, --idle N, --no-replica or \
                 --transport tcp|tls|ws|wss|quic|all"
            ),
        }
    }
    (measure, transports, idle, with_replica)
}

#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
fn main() {
    let (measure, transports, idle, with_replica) = parse_args();
    let (addrs, server) = server();
    let cases = [
        Case {
            frame_bytes: 256,
            connections: 1,
        },
        Case {
            frame_bytes: 256,
            connections: 32,
        },
        Case {
            frame_bytes: 64 << 10,
            connections: 1,
        },
        Case {
            frame_bytes: 64 << 10,
            connections: 32,
        },
    ];
    println!(
        "loopback, depth {DEPTH} per connection, {measure:?} per case after {WARMUP:?} warm-up"
    );
    println!(
        "{:>5} {:>10} {:>6} {:>14} {:>10} {:>11} {:>11}",
        "", "frame", "conns", "frames/s", "MB/s", "p50 µs", "p99 µs"
    );
    let mut tcp_single = Vec::new();
    for case in &cases {
        let mut tcp_rate = None;
        for &transport in &transports {
            let o = run_case(transport, &addrs, case, measure);
            let rate = o.frames as f64 / o.elapsed.as_secs_f64();
            if transport == Transport::Tcp && case.connections == 1 {
                tcp_single.push((
                    case.frame_bytes,
                    rate,
                    o.latency.value_at_quantile(0.50),
                    o.latency.value_at_quantile(0.99),
                ));
            }
            let mbps = rate * case.frame_bytes as f64 / 1e6;
            let ratio = match (transport, tcp_rate) {
                (Transport::Tcp, _) => {
                    tcp_rate = Some(rate);
                    String::new()
                }
                (_, Some(base)) => format!("   ({:.2}× TCP)", rate / base),
                (_, None) => String::new(),
            };
            println!(
                "{:>5} {:>10} {:>6} {:>14.0} {:>10.1} {:>11.1} {:>11.1}{ratio}",
                transport.name(),
                if case.frame_bytes >= 1024 {
                    format!("{} KiB", case.frame_bytes >> 10)
                } else {
                    format!("{} B", case.frame_bytes)
                },
                case.connections,
                rate,
                mbps,
                o.latency.value_at_quantile(0.50) as f64 / 1e3,
                o.latency.value_at_quantile(0.99) as f64 / 1e3,
            );
        }
    }
    if idle > 0 {
        println!("server heap per idle connection ({idle} connections, after the handshake):");
        for &transport in &transports {
            let per_connection = idle_memory(transport, &addrs, &server, idle);
            println!(
                "{:>5} {:>10.1} KiB",
                transport.name(),
                per_connection / 1024.0
            );
        }
    }
    server.stop.send(()).expect("stop server");
    let stats = server.handle.join().expect("server thread");
    println!(
        "server: {} frames in, {} out, average write batch {:.1} frames, {} queue-full",
        stats.frames_in,
        stats.frames_out,
        stats.average_batch(),
        stats.queue_full
    );
    shards::run(measure, &transports);
    if with_replica {
        run_replica(measure, &tcp_single);
    }
}

/// The replica plane's rows, each next to the TCP client plane's row of
/// the same frame size with one connection (when it ran).
#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
fn run_replica(measure: Duration, tcp_single: &[(usize, f64, u64, u64)]) {
    println!(
        "replica plane: two nodes, one link (plain TCP, sealed), depth {DEPTH}, echo from node 1"
    );
    println!(
        "{:>8} {:>10} {:>14} {:>10} {:>11} {:>11}",
        "", "frame", "frames/s", "MB/s", "p50 µs", "p99 µs"
    );
    for frame_bytes in [256, 64 << 10] {
        let o = replica::run_case(frame_bytes, measure);
        let rate = o.frames as f64 / o.elapsed.as_secs_f64();
        let size = if frame_bytes >= 1024 {
            format!("{} KiB", frame_bytes >> 10)
        } else {
            format!("{frame_bytes} B")
        };
        let tcp = tcp_single.iter().find(|row| row.0 == frame_bytes);
        if let Some(&(_, tcp_rate, p50, p99)) = tcp {
            println!(
                "{:>8} {:>10} {:>14.0} {:>10.1} {:>11.1} {:>11.1}",
                "tcp",
                size,
                tcp_rate,
                tcp_rate * frame_bytes as f64 / 1e6,
                p50 as f64 / 1e3,
                p99 as f64 / 1e3
            );
        }
        let ratio = tcp.map_or(String::new(), |row| {
            format!("   ({:.2}× TCP)", rate / row.1)
        });
        println!(
            "{:>8} {:>10} {:>14.0} {:>10.1} {:>11.1} {:>11.1}{ratio}",
            "replica",
            size,
            rate,
            rate * frame_bytes as f64 / 1e6,
            o.latency.value_at_quantile(0.50) as f64 / 1e3,
            o.latency.value_at_quantile(0.99) as f64 / 1e3,
        );
    }
}
