//! End-to-end loopback benchmark over TCP, TLS and QUIC: a bus echoing sealed
//! frames on one thread, a load generator on another, each on its own compio
//! runtime.
//!
//! For each case (frame size × connections) every connection keeps `depth`
//! requests in flight; the generator writes replacements for every batch of
//! replies in one vectored write. Reports frames/s, MB/s (payload both ways
//! counted once) and p50/p99 round-trip latency. Run with
//! `cargo xtask bench` (release build); `--seconds N` sets each case's
//! measuring time (default 3), `--quick` runs 1 s per case, `--transport
//! tcp|tls|quic|all` picks the transports (default all). Each TLS row also
//! shows its ratio to the TCP row of the same case; each QUIC row its ratios
//! to the TCP and TLS rows.

use std::{
    cell::RefCell,
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
    Quic,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Quic => "quic",
        }
    }
}

#[derive(Debug, Clone)]
struct Addrs {
    tcp: SocketAddr,
    tls: SocketAddr,
    quic: SocketAddr,
    /// The self-signed certificate the TLS listener serves.
    cert: std::path::PathBuf,
}

/// Starts the server thread; returns its addresses and a stopper.
fn server() -> (
    Addrs,
    mpsc::Sender<()>,
    std::thread::JoinHandle<bus::BusStats>,
) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
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
            addr_tx
                .send(Addrs {
                    tcp,
                    tls,
                    quic,
                    cert,
                })
                .expect("send");
            // Poll for the stop request without blocking the runtime.
            while stop_rx.try_recv().is_err() {
                compio::runtime::time::sleep(Duration::from_millis(20)).await;
            }
            let stats = bus.stats();
            bus.shutdown(Duration::from_secs(2)).await;
            stats
        })
    });
    (addr_rx.recv().expect("server address"), stop_tx, handle)
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
            Transport::Quic => {
                let config = bus::quic::QuicClientConfig::new(&addrs.cert, "localhost");
                let quic = bus::quic::ClientQuic::new(&config).expect("client QUIC");
                let (connection, send, recv) =
                    quic.connect_raw(addrs.quic).await.expect("QUIC connect");
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

/// How a row compares with the TCP (and for QUIC the TLS) row of its case.
fn ratios(transport: Transport, rate: f64, tcp_rate: Option<f64>, tls_rate: Option<f64>) -> String {
    let vs = |name: &str, base: Option<f64>| {
        base.map_or_else(String::new, |b| format!(" ({:.2}× {name})", rate / b))
    };
    match transport {
        Transport::Tcp => String::new(),
        Transport::Tls => format!("  {}", vs("TCP", tcp_rate)),
        Transport::Quic => format!("  {}{}", vs("TCP", tcp_rate), vs("TLS", tls_rate)),
    }
}

#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut measure = Duration::from_secs(3);
    let all = vec![Transport::Tcp, Transport::Tls, Transport::Quic];
    let mut transports = all.clone();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => measure = Duration::from_secs(1),
            "--seconds" => {
                let s: u64 = it.next().and_then(|v| v.parse().ok()).expect("--seconds N");
                measure = Duration::from_secs(s);
            }
            "--transport" => {
                transports = match it.next().map(String::as_str) {
                    Some("tcp") => vec![Transport::Tcp],
                    Some("tls") => vec![Transport::Tls],
                    Some("quic") => vec![Transport::Quic],
                    Some("all") => all.clone(),
                    other => panic!("--transport tcp|tls|quic|all, not {other:?}"),
                };
            }
            other => panic!(
                "unknown argument {other}; use --quick, --seconds N or --transport tcp|tls|quic|all"
            ),
        }
    }
    let (addrs, stop, server) = server();
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
    for case in &cases {
        let mut tcp_rate = None;
        let mut tls_rate = None;
        for &transport in &transports {
            let o = run_case(transport, &addrs, case, measure);
            let rate = o.frames as f64 / o.elapsed.as_secs_f64();
            let mbps = rate * case.frame_bytes as f64 / 1e6;
            match transport {
                Transport::Tcp => tcp_rate = Some(rate),
                Transport::Tls => tls_rate = Some(rate),
                Transport::Quic => {}
            }
            let ratio = ratios(transport, rate, tcp_rate, tls_rate);
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
    stop.send(()).expect("stop server");
    let stats = server.join().expect("server thread");
    println!(
        "server: {} frames in, {} out, average write batch {:.1} frames, {} queue-full",
        stats.frames_in,
        stats.frames_out,
        stats.average_batch(),
        stats.queue_full
    );
}
