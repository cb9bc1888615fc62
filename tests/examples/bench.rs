//! End-to-end loopback benchmark over TCP: a bus echoing sealed frames on one
//! thread, a load generator on another, each on its own compio runtime.
//!
//! For each case (frame size × connections) every connection keeps `depth`
//! requests in flight; the generator writes replacements for every batch of
//! replies in one vectored write. Reports frames/s, MB/s (payload both ways
//! counted once) and p50/p99 round-trip latency. Run with
//! `cargo xtask bench` (release build); `--seconds N` sets each case's
//! measuring time (default 3), `--quick` runs 1 s per case.
//!
//! A second part runs the same echo load against the multi-shard runtime
//! (`bus-shard`) with 1 and then 2 shards, and measures what one
//! `send_to_client` costs when the client is on the sending shard (a queue
//! push) and when it is on another shard (a push into that shard's inbox).

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

/// Starts the server thread; returns its address and a stopper.
fn server() -> (
    SocketAddr,
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
            addr_tx
                .send(bus::transport::Listener::local_addr(&listener).expect("addr"))
                .expect("send");
            bus.serve(listener).expect("serve");
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

async fn drive_connection(
    addr: SocketAddr,
    case_body: usize,
    origin: Instant,
    warm_at: Instant,
    end_at: Instant,
    out: Rc<RefCell<Outcome>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut rx, mut tx) = stream.into_split();
    let limits = DecodeLimits {
        max_message_size_bytes: 64 << 20,
        require_sealed: false,
    };
    let mut decoder = Decoder::new(limits);
    let initial: Vec<Frame> = (0..DEPTH)
        .map(|_| request_frame(case_body, nanos_since(origin)))
        .collect();
    let BufResult(res, _) = tx.write_vectored_all(initial).await;
    res.expect("write");
    let mut in_flight = DEPTH;
    let mut buf = Vec::with_capacity(256 << 10);
    while in_flight > 0 {
        buf.clear();
        let BufResult(res, b) = rx.read(buf).await;
        buf = b;
        let n = res.expect("read");
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
            let BufResult(res, _) = tx.write_vectored_all(next).await;
            res.expect("write");
            in_flight += replies;
        }
    }
}

fn run_case(addr: SocketAddr, case: &Case, measure: Duration) -> Outcome {
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
                    addr,
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

#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut measure = Duration::from_secs(3);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => measure = Duration::from_secs(1),
            "--seconds" => {
                let s: u64 = it.next().and_then(|v| v.parse().ok()).expect("--seconds N");
                measure = Duration::from_secs(s);
            }
            other => panic!("unknown argument {other}; use --quick or --seconds N"),
        }
    }
    let (addr, stop, server) = server();
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
        "TCP loopback, depth {DEPTH} per connection, {measure:?} per case after {WARMUP:?} warm-up"
    );
    println!(
        "{:>10} {:>6} {:>14} {:>10} {:>11} {:>11}",
        "frame", "conns", "frames/s", "MB/s", "p50 µs", "p99 µs"
    );
    let mut first_rate = None;
    for case in &cases {
        let o = run_case(addr, case, measure);
        let rate = o.frames as f64 / o.elapsed.as_secs_f64();
        let mbps = rate * case.frame_bytes as f64 / 1e6;
        let base = *first_rate.get_or_insert(rate);
        println!(
            "{:>10} {:>6} {:>14.0} {:>10.1} {:>11.1} {:>11.1}   ({:.2}× the first row's frames/s)",
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
            rate / base,
        );
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
    shards::run(measure);
}
