//! `bus bench`: a load generator. `connections` clients per transport, each
//! with `depth` Echo requests in flight, for `warmup` + `duration`; every
//! round trip's latency goes into an HDR histogram.
//!
//! By default it starts the reference node in-process, on its own thread
//! and compio runtime, listening on `127.0.0.1:0` for each chosen
//! transport; `--target URL` loads a running node instead. The load runs on
//! the calling thread's runtime through the client library, so a result is
//! what an application using `bus-client` gets.
//!
//! Counted: a frame is one completed round trip (request and reply);
//! MB/s counts the bytes of both directions (10^6 bytes per MB).

use std::{
    cell::{Cell, RefCell},
    fmt::Write as _,
    process::ExitCode,
    rc::Rc,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use bus_client::{Client, ClientOptions, ConnectionState};
use bus_config::Config;
use bus_core::{Command, FrameMut, TransportKind, limits::HEADER_SIZE};
use compio::runtime::time;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    Error,
    admin::NodeInfo,
    cli::BenchArgs,
    node,
    server::{Listening, Node},
    transports,
};

/// Largest frame `bus bench` sends (the node's default `max_message_size`).
pub const MAX_FRAME_BYTES: u64 = bus_core::limits::DEFAULT_MAX_MESSAGE_SIZE_BYTES as u64;
/// Highest latency the histogram tracks (60 s, in microseconds).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest round trip.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// The outcome of benchmarking one target.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Transport (URL scheme).
    pub transport: String,
    /// The URL loaded.
    pub target: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Bytes per frame, header included.
    pub frame_bytes: u64,
    /// Measured seconds (warm-up excluded).
    pub duration_s: f64,
    /// Round trips completed while measuring.
    pub frames: u64,
    /// Round trips per second.
    pub frames_per_sec: f64,
    /// Megabytes per second, both directions (10^6 bytes).
    pub mb_per_sec: f64,
    /// Round-trip latency, microseconds.
    pub latency_us: Latency,
    /// Failed requests (warm-up included).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Runs `bus bench`.
pub fn run(args: &BenchArgs) -> Result<ExitCode, Error> {
    check(args)?;
    let (targets, node) = if args.target.is_empty() {
        let kinds = chosen_transports(&args.transport)?;
        let node = InProcessNode::start(&kinds)?;
        let targets = node
            .listening
            .iter()
            .map(|l| {
                (
                    l.transport.as_str().to_owned(),
                    format!("{}://{}", l.transport, l.addr),
                )
            })
            .collect();
        (targets, Some(node))
    } else {
        let targets = args
            .target
            .iter()
            .map(|url| {
                let endpoint = bus_client::Endpoint::parse(url)?;
                Ok((endpoint.scheme.as_str().to_owned(), url.clone()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        (targets, None)
    };
    let runtime = compio::runtime::Runtime::new().map_err(|source| Error::Io {
        what: "cannot start the compio runtime",
        source,
    })?;
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        for (transport, url) in &targets {
            let ca = node.as_ref().and_then(|n| n.certificate.as_deref());
            results.push(bench_one(transport, url, args, ca).await?);
        }
        Ok::<_, Error>(results)
    });
    if let Some(node) = node {
        node.stop();
    }
    let results = results?;
    if args.json {
        let json = serde_json::json!({ "results": results });
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print!("{}", table(&results));
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, crate::plot::latency_svg(&results)).map_err(|source| Error::Io {
            what: "cannot write the plot",
            source,
        })?;
        eprintln!("latency plot written to {}", path.display());
    }
    let failed = results.iter().any(|r| r.errors > 0 || r.frames == 0);
    Ok(if failed {
        ExitCode::from(crate::error::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

fn check(args: &BenchArgs) -> Result<(), Error> {
    let usage = |m: String| Err(Error::Usage(m));
    if args.connections == 0 || args.connections > 10_000 {
        return usage(format!(
            "--connections {}: use 1 ..= 10000",
            args.connections
        ));
    }
    if args.depth == 0 || args.depth > 4096 {
        return usage(format!("--depth {}: use 1 ..= 4096", args.depth));
    }
    let size = args.size.bytes();
    if size < HEADER_SIZE as u64 || size > MAX_FRAME_BYTES {
        return usage(format!(
            "--size {}: a frame is 256 B ..= 64 MiB (header included)",
            args.size
        ));
    }
    if args.duration.is_zero() {
        return usage("--duration must be above zero".into());
    }
    Ok(())
}

fn chosen_transports(list: &str) -> Result<Vec<TransportKind>, Error> {
    if list == "all" {
        return Ok(transports::ALL
            .into_iter()
            .filter(|k| transports::is_available(*k))
            .collect());
    }
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = transports::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--transport {name}: expected tcp, tls, ws, wss, quic or all"
                ))
            })?;
        if !transports::is_available(kind) {
            return Err(Error::TransportNotAvailable {
                transport: kind,
                how: "--transport".into(),
            });
        }
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(Error::Usage(
            "--transport: name at least one transport".into(),
        ));
    }
    Ok(kinds)
}

/// The reference node on its own thread; stopped by closing `stop`.
struct InProcessNode {
    listening: Vec<Listening>,
    /// The self-signed certificate of its TLS-based transports.
    certificate: Option<std::path::PathBuf>,
    stop: std::os::unix::net::UnixStream,
    thread: thread::JoinHandle<()>,
}

impl InProcessNode {
    fn start(kinds: &[TransportKind]) -> Result<Self, Error> {
        let mut config = Config::embedded_defaults();
        for kind in transports::ALL {
            let addr = kinds
                .contains(&kind)
                .then(|| "127.0.0.1:0".parse().expect("loopback address"));
            transports::set_listen(&mut config, kind, addr);
        }
        config.admin.enabled = false;
        config.shards.count = 1;
        let (stop, stop_rx) =
            std::os::unix::net::UnixStream::pair().map_err(|source| Error::Io {
                what: "cannot create the in-process node's stop channel",
                source,
            })?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, String>>();
        let thread = thread::Builder::new()
            .name("bus-bench-node".into())
            .spawn(move || node_thread(&config, stop_rx, &ready_tx))
            .map_err(|source| Error::Io {
                what: "cannot start the in-process node's thread",
                source,
            })?;
        let (listening, certificate) = ready_rx
            .recv()
            .map_err(|_| {
                Error::Usage("the in-process node thread ended before it was ready".into())
            })?
            .map_err(Error::Usage)?;
        Ok(Self {
            listening,
            certificate,
            stop,
            thread,
        })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// What the in-process node reports once it listens.
type Ready = (Vec<Listening>, Option<std::path::PathBuf>);

fn node_thread(
    config: &Config,
    stop: std::os::unix::net::UnixStream,
    ready: &mpsc::Sender<Result<Ready, String>>,
) {
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(format!(
                "in-process node: cannot start a runtime: {err}"
            )));
            return;
        }
    };
    let driver = format!("{:?}", runtime.driver_type());
    runtime.block_on(async move {
        let info = NodeInfo {
            version: env!("CARGO_PKG_VERSION"),
            driver,
        };
        // A per-process directory for the development certificate.
        let data_dir = std::env::temp_dir().join(format!("bus-bench-{}", std::process::id()));
        let node = match Node::start(config, info, &data_dir).await {
            Ok(node) => node,
            Err(err) => {
                let _ = ready.send(Err(format!("in-process node: {err}")));
                return;
            }
        };
        let certificate = node.certificate().map(|(cert, _)| cert);
        let _ = ready.send(Ok((node.listening().to_vec(), certificate)));
        // Runs until the other end of `stop` is closed.
        if let Ok(mut stop) = compio::net::UnixStream::from_std(stop) {
            let _ = compio::io::AsyncRead::read(&mut stop, Vec::with_capacity(1)).await;
        }
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// Counters shared by the workers of one run.
struct Tally {
    histogram: RefCell<Histogram<u64>>,
    frames: Cell<u64>,
    bytes: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

async fn bench_one(
    transport: &str,
    url: &str,
    args: &BenchArgs,
    ca: Option<&std::path::Path>,
) -> Result<BenchResult, Error> {
    let frame_bytes = args.size.bytes();
    let mut options = ClientOptions::default();
    options.max_outstanding_requests = args.depth;
    options.send_queue_frames = args.depth;
    options.ca_file = args
        .ca
        .clone()
        .or_else(|| ca.map(std::path::Path::to_path_buf));
    options.max_message_size_bytes =
        u32::try_from(frame_bytes.max(u64::from(options.max_message_size_bytes)))
            .unwrap_or(u32::MAX);
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(Client::connect(url, options.clone()).await?);
    }
    let tally = Rc::new(Tally {
        histogram: RefCell::new(
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
        ),
        frames: Cell::new(0),
        bytes: Cell::new(0),
        errors: Cell::new(0),
        first_error: RefCell::new(None),
    });
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + args.duration;
    let body_len = usize::try_from(frame_bytes).unwrap_or(usize::MAX) - HEADER_SIZE;
    let mut workers = Vec::with_capacity(args.connections * args.depth);
    for client in &clients {
        for _ in 0..args.depth {
            let client = client.clone();
            let tally = tally.clone();
            workers.push(compio::runtime::spawn(async move {
                worker(&client, &tally, body_len, measure_from, end).await;
            }));
        }
    }
    let progress = (!args.quiet).then(|| {
        let tally = tally.clone();
        let label = transport.to_owned();
        let total = args.duration;
        compio::runtime::spawn(progress(label, tally, measure_from, end, total))
    });
    for worker in workers {
        let _ = worker.await;
    }
    drop(progress);
    if !args.quiet {
        eprintln!();
    }
    for client in &clients {
        client.close().await;
    }
    let measured = end.saturating_duration_since(measure_from).as_secs_f64();
    let histogram = tally.histogram.borrow();
    let frames = tally.frames.get();
    #[allow(clippy::cast_precision_loss, reason = "rates for humans")]
    let (frames_per_sec, mb_per_sec) = (
        frames as f64 / measured,
        tally.bytes.get() as f64 / measured / 1e6,
    );
    Ok(BenchResult {
        transport: transport.to_owned(),
        target: url.to_owned(),
        connections: args.connections,
        depth: args.depth,
        frame_bytes,
        duration_s: measured,
        frames,
        frames_per_sec,
        mb_per_sec,
        latency_us: Latency {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        },
        errors: tally.errors.get(),
        first_error: tally.first_error.borrow().clone(),
    })
}

/// One request loop: Echo, wait for the reply, record, repeat until `end`.
async fn worker(
    client: &Client,
    tally: &Tally,
    body_len: usize,
    measure_from: Instant,
    end: Instant,
) {
    loop {
        let sent = Instant::now();
        if sent >= end {
            return;
        }
        let frame = FrameMut::new(Command::Application(node::ECHO), body_len);
        match client.request(frame).await {
            Ok(reply) => {
                if sent >= measure_from {
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally
                        .histogram
                        .borrow_mut()
                        .saturating_record(micros.max(1));
                    tally.frames.set(tally.frames.get() + 1);
                    let bytes = (HEADER_SIZE + body_len + reply.len()) as u64;
                    tally.bytes.set(tally.bytes.get() + bytes);
                }
            }
            Err(err) => {
                tally.errors.set(tally.errors.get() + 1);
                tally
                    .first_error
                    .borrow_mut()
                    .get_or_insert_with(|| err.to_string());
                if client.state() == ConnectionState::Closed {
                    return;
                }
            }
        }
    }
}

/// The progress line on stderr, once a second.
async fn progress(
    label: String,
    tally: Rc<Tally>,
    measure_from: Instant,
    end: Instant,
    total: Duration,
) {
    use std::io::Write as _;
    let mut last = (Instant::now(), tally.frames.get());
    loop {
        time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        if now >= end {
            return;
        }
        let frames = tally.frames.get();
        #[allow(clippy::cast_precision_loss, reason = "a rate for humans")]
        let rate = (frames - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, frames);
        let line = if now < measure_from {
            format!("\r  {label:<5} warming up ...{:30}", "")
        } else {
            format!(
                "\r  {label:<5} {:>5.1} s / {:.1} s  {:>12.0} frames/s  errors {}",
                now.duration_since(measure_from).as_secs_f64(),
                total.as_secs_f64(),
                rate,
                tally.errors.get()
            )
        };
        let mut err = std::io::stderr();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }
}

/// The results table.
pub fn table(results: &[BenchResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:>5} {:>5} {:>9} {:>12} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}",
        "transport",
        "conns",
        "depth",
        "frame",
        "frames/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<9} {:>5} {:>5} {:>9} {:>12.0} {:>9.1} {:>8} {:>8} {:>9} {:>8} {:>6}",
            r.transport,
            r.connections,
            r.depth,
            bus_config::ByteSize(r.frame_bytes).to_string(),
            r.frames_per_sec,
            r.mb_per_sec,
            r.latency_us.p50,
            r.latency_us.p99,
            r.latency_us.p999,
            r.latency_us.max,
            r.errors
        );
        if let Some(err) = &r.first_error {
            let _ = writeln!(out, "  first error on {}: {err}", r.transport);
        }
    }
    out
}
