//! The soak: one `bus serve` process on every transport (TCP, TLS, WS,
//! WSS, QUIC) under a bounded mixed load for `--duration` seconds, then
//! checks that nothing was lost and that the node went back to where it
//! started. Run with `cargo xtask soak [--duration SECONDS]`, which builds
//! the `bus` binary and passes it as `--bus PATH`.
//!
//! The load, each loop on its own task and each stopping by itself at the
//! deadline:
//!
//! - well-behaved clients ([`WELL_BEHAVED_PER_TRANSPORT`] per transport,
//!   `bus-client`): `Echo` requests pipelined [`DEPTH`] deep, every reply
//!   checked (command, request, body); the round trips go into a histogram;
//! - churn: connect on each transport in turn, one `Ping`, close;
//! - abrupt resets: TCP connections that send half a frame and are reset
//!   (`SO_LINGER` 0);
//! - slow readers: TCP clients that send 64 KiB `Echo` frames and read the
//!   replies a little at a time, then close;
//! - silent sockets: TCP, TLS and WS connections that send nothing after
//!   their handshake; the node must close them within the grace plus slack;
//! - ping floods: bursts of [`PING_BURST`] `Ping`s written at once, every
//!   `Pong` counted;
//! - hostile frames on every transport in turn: a bad protocol field, a bad
//!   checksum, an oversized `size`, each answered with the right `Goodbye`
//!   and a close.
//!
//! Asserted at the end (the bounds are constants below):
//!
//! - no reply lost, duplicated or late for the well-behaved clients (every
//!   request answered once, `late_replies == 0`, no reconnect);
//! - the node's descriptors (`/proc/PID/fd`), its tasks (`bus_tasks` in
//!   `/metrics`) and connections back to their baseline once the load
//!   stopped (waited for, bounded);
//! - the node's RSS after warm-up within [`RSS_GROWTH_PERCENT`] % (plus
//!   [`RSS_SLACK_MIB`] MiB) of its plateau during the warm-up (the first
//!   minute, or the first quarter of a shorter run);
//! - the well-behaved round trip p99 under [`P99_BOUND`]: loose, for a
//!   loaded 2-core CI machine and a debug build.

use std::{
    cell::RefCell,
    collections::HashMap,
    io::{BufRead, BufReader, Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    rc::Rc,
    sync::mpsc,
    time::{Duration, Instant},
};

use bus::{Client, ClientOptions, Command as Cmd, FrameMut, GoodbyeReason};
use bus_tests::{
    client::{QuicClient, RawClient, TcpClient, TlsClient, WsClient},
    frames::{ECHO, ECHO_REPLY, app},
    within,
};
use compio::{
    BufResult,
    io::AsyncWriteExt,
    net::TcpStream,
    runtime::time::{sleep, timeout},
};
use hdrhistogram::Histogram;

/// Every transport of the node.
const TRANSPORTS: [&str; 5] = ["tcp", "tls", "ws", "wss", "quic"];
/// Well-behaved clients on each transport.
const WELL_BEHAVED_PER_TRANSPORT: usize = 2;
/// Requests each well-behaved client keeps in flight.
const DEPTH: usize = 8;
/// Body of a well-behaved `Echo` (bytes).
const ECHO_BODY: usize = 512;
/// `Ping`s a flood writes at once.
const PING_BURST: usize = 2_000;
/// Frames a slow reader sends before it reads (64 KiB bodies).
const SLOW_FRAMES: u64 = 32;
/// The node's first-frame grace (`--handshake-grace`).
const GRACE: Duration = Duration::from_secs(2);
/// How long after the grace a silent socket may still be open.
const GRACE_SLACK: Duration = Duration::from_secs(5);
/// Bound on the node settling back to its baseline after the load.
const SETTLE: Duration = Duration::from_secs(20);
/// RSS after warm-up may exceed the warm-up plateau by this much ...
const RSS_GROWTH_PERCENT: u64 = 50;
/// ... plus this many MiB.
const RSS_SLACK_MIB: u64 = 32;
/// Bound on the well-behaved round-trip p99.
const P99_BOUND: Duration = Duration::from_millis(750);
/// The longest warm-up (the "first-minute plateau").
const WARM_UP_MAX: Duration = Duration::from_mins(1);

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    replies: u64,
    lost: u64,
    wrong: u64,
    late: u64,
    reconnects: u64,
    churned: u64,
    resets: u64,
    slow: u64,
    silent_closed: u64,
    silent_late: u64,
    pongs: u64,
    pongs_missing: u64,
    hostile: u64,
    hostile_wrong: u64,
    errors: Vec<String>,
}

type Shared = Rc<RefCell<Tally>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut duration = Duration::from_mins(1);
    let mut bus = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--duration" => {
                let secs: u64 = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .expect("--duration SECONDS");
                duration = Duration::from_secs(secs.max(10));
                i += 1;
            }
            "--bus" => {
                bus = Some(PathBuf::from(args.get(i + 1).expect("--bus PATH")));
                i += 1;
            }
            other => panic!("soak: unknown argument `{other}` (--duration SECONDS, --bus PATH)"),
        }
        i += 1;
    }
    let bus = bus.expect("soak: --bus PATH of the `bus` binary");
    let node = Node::start(&bus);
    let failures = compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(soak(&node, duration));
    drop(node);
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("soak FAILED: {failure}");
        }
        std::process::exit(1);
    }
    println!("soak ok");
}

/// `bus serve` as a child process, killed when dropped.
struct Node {
    child: Child,
    addrs: HashMap<String, SocketAddr>,
    data_dir: PathBuf,
}

impl Node {
    fn start(bus: &Path) -> Self {
        let data_dir = bus_tests::pki::unique_dir("soak-data");
        let mut command = Command::new(bus);
        command.arg("serve");
        for scheme in TRANSPORTS.iter().chain(&["admin"]) {
            command.args([format!("--{scheme}"), "127.0.0.1:0".to_owned()]);
        }
        let mut child = command
            .args([
                "--handshake-grace",
                "2s",
                "--max-message-size",
                "1 MiB",
                "--log",
                "error",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bus serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("listening ") => break line,
                Ok(_) => {}
                Err(err) => panic!("soak: no `listening` line from bus serve: {err}"),
            }
        };
        let addrs = line
            .split_whitespace()
            .skip(1)
            .filter_map(|word| word.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect();
        Self {
            child,
            addrs,
            data_dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn addr(&self, scheme: &str) -> SocketAddr {
        self.addrs[scheme]
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Sum of `bus_tasks` and of `bus_connections` in `/metrics`.
    fn tasks_and_connections(&self) -> (u64, u64) {
        let text = http_get(self.addr("admin"), "/metrics");
        let sum = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        (sum("bus_tasks"), sum("bus_connections"))
    }

    fn options(&self) -> ClientOptions {
        let mut options = ClientOptions::default();
        options.ca_file = Some(self.data_dir.join("tls").join("cert.pem"));
        options.request_timeout = Duration::from_secs(10);
        options
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A blocking, bounded HTTP GET of the admin endpoint; the body.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// What the node looked like after the load.
struct Settled {
    fds: usize,
    tasks: u64,
    connections: u64,
}

/// The run: baseline, warm-up, load, settle, checks. Returns the failures.
async fn soak(node: &Node, duration: Duration) -> Vec<String> {
    let start = Instant::now();
    let deadline = start + duration;
    let warm_up = (duration / 4).min(WARM_UP_MAX);
    let baseline_fds = node.fds();
    let (baseline_tasks, _) = node.tasks_and_connections();
    let tally: Shared = Rc::default();
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let tasks = spawn_load(node, deadline, &tally, &histogram);

    // Sample RSS once a second until the deadline.
    let mut rss = Vec::new();
    while Instant::now() < deadline {
        rss.push((start.elapsed(), node.rss_kib()));
        sleep(Duration::from_secs(1)).await;
    }
    for task in tasks {
        if !matches!(timeout(Duration::from_mins(1), task).await, Ok(Ok(()))) {
            let mut t = tally.borrow_mut();
            t.errors
                .push("a load task panicked or did not stop".to_owned());
        }
    }
    let load_time = start.elapsed();
    let end_rss = node.rss_kib();
    let settled = settle(node, baseline_fds, baseline_tasks).await;

    let tally = tally.borrow();
    let histogram = histogram.borrow();
    let plateau = rss
        .iter()
        .filter(|(t, _)| *t <= warm_up)
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(0);
    let after = rss
        .iter()
        .filter(|(t, _)| *t > warm_up)
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(plateau);
    let rss_bound = plateau + plateau * RSS_GROWTH_PERCENT / 100 + RSS_SLACK_MIB * 1024;
    let p50 = Duration::from_micros(histogram.value_at_quantile(0.50));
    let p99 = Duration::from_micros(histogram.value_at_quantile(0.99));
    report(&tally, &histogram, load_time);
    println!(
        "  node RSS: warm-up plateau {plateau} KiB, max after warm-up {after} KiB \
         (bound {rss_bound} KiB), at the end {end_rss} KiB"
    );
    println!(
        "  node fds: baseline {baseline_fds}, after settling {}; tasks: baseline \
         {baseline_tasks}, after {}; connections after {}",
        settled.fds, settled.tasks, settled.connections
    );
    println!("  round trip p50 {p50:?}, p99 {p99:?} (bound {P99_BOUND:?})");

    let mut failures = load_failures(&tally);
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(
        settled.fds <= baseline_fds,
        format!("descriptors {} > baseline {baseline_fds}", settled.fds),
    );
    check(
        settled.tasks <= baseline_tasks,
        format!("tasks {} > baseline {baseline_tasks}", settled.tasks),
    );
    check(
        settled.connections == 0,
        format!("{} connections still open", settled.connections),
    );
    check(
        after <= rss_bound,
        format!("RSS {after} KiB over the bound {rss_bound} KiB"),
    );
    check(p99 <= P99_BOUND, format!("p99 {p99:?} over {P99_BOUND:?}"));
    failures
}

/// Starts every load loop.
fn spawn_load(
    node: &Node,
    deadline: Instant,
    tally: &Shared,
    histogram: &Rc<RefCell<Histogram<u64>>>,
) -> Vec<compio::runtime::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for scheme in TRANSPORTS {
        for n in 0..WELL_BEHAVED_PER_TRANSPORT {
            let url = format!("{scheme}://{}", node.addr(scheme));
            tasks.push(compio::runtime::spawn(well_behaved(
                url,
                node.options(),
                n as u64,
                deadline,
                tally.clone(),
                histogram.clone(),
            )));
        }
    }
    let urls: Vec<String> = TRANSPORTS
        .iter()
        .map(|s| format!("{s}://{}", node.addr(s)))
        .collect();
    tasks.push(compio::runtime::spawn(churn(
        urls,
        node.options(),
        deadline,
        tally.clone(),
    )));
    let tcp = node.addr("tcp");
    tasks.push(compio::runtime::spawn(resets(tcp, deadline, tally.clone())));
    tasks.push(compio::runtime::spawn(slow_reader(
        tcp,
        deadline,
        tally.clone(),
    )));
    let tls = bus_tls::ClientTls::new(&bus_tls::TlsClientConfig::new(
        node.data_dir.join("tls").join("cert.pem"),
        "127.0.0.1",
    ))
    .expect("client TLS for the node's certificate");
    tasks.push(compio::runtime::spawn(silent(
        [tcp, node.addr("tls"), node.addr("ws")],
        tls,
        deadline,
        tally.clone(),
    )));
    tasks.push(compio::runtime::spawn(ping_flood(
        tcp,
        deadline,
        tally.clone(),
    )));
    tasks.push(compio::runtime::spawn(hostile(
        Hostile::new(node),
        deadline,
        tally.clone(),
    )));
    tasks
}

/// Where, and with which client settings, the hostile frames go: every
/// transport of the node.
struct Hostile {
    tcp: SocketAddr,
    tls: SocketAddr,
    ws: SocketAddr,
    wss: SocketAddr,
    quic: SocketAddr,
    tls_client: bus_tls::ClientTls,
    wss_client: bus_tls::ClientTls,
    quic_client: bus_quic::ClientQuic,
}

impl Hostile {
    fn new(node: &Node) -> Self {
        let cert = node.data_dir.join("tls").join("cert.pem");
        let tls_config = bus_tls::TlsClientConfig::new(cert.clone(), "127.0.0.1");
        let mut wss_config = tls_config.clone();
        wss_config.alpn = vec![bus_tls::ALPN_HTTP1.to_vec()];
        let mut quic_config = bus_quic::QuicClientConfig::new(cert, "127.0.0.1");
        quic_config.bind = "127.0.0.1:0".parse().expect("addr");
        Self {
            tcp: node.addr("tcp"),
            tls: node.addr("tls"),
            ws: node.addr("ws"),
            wss: node.addr("wss"),
            quic: node.addr("quic"),
            tls_client: bus_tls::ClientTls::new(&tls_config).expect("client TLS"),
            wss_client: bus_tls::ClientTls::new(&wss_config).expect("client WSS"),
            quic_client: bus_quic::ClientQuic::new(&quic_config).expect("client QUIC"),
        }
    }

    /// Sends `bytes` on a new connection of `transport` (an index into
    /// [`TRANSPORTS`]); whether it got `Goodbye(reason)` and a close.
    async fn refused(&self, transport: usize, bytes: &[u8], reason: GoodbyeReason) -> bool {
        match TRANSPORTS[transport] {
            "tcp" => {
                let mut client = TcpClient::connect(self.tcp).await;
                client.send_raw(bytes).await;
                refused(&mut client, reason).await
            }
            "tls" => {
                let mut client = TlsClient::connect(&self.tls_client, self.tls).await;
                client.send_raw(bytes).await;
                refused(&mut client, reason).await
            }
            "ws" => {
                let mut client = WsClient::connect(self.ws).await;
                client.send_raw(bytes).await;
                refused(&mut client, reason).await
            }
            "wss" => {
                let mut client = WsClient::connect_tls(&self.wss_client, self.wss).await;
                client.send_raw(bytes).await;
                refused(&mut client, reason).await
            }
            _ => {
                let mut client = QuicClient::connect(&self.quic_client, self.quic).await;
                client.send_raw(bytes).await;
                refused(&mut client, reason).await
            }
        }
    }
}

/// Waits (bounded by [`SETTLE`]) for the node to close every connection
/// and give back its descriptors and tasks.
async fn settle(node: &Node, baseline_fds: usize, baseline_tasks: u64) -> Settled {
    let started = Instant::now();
    loop {
        let fds = node.fds();
        let (tasks, connections) = node.tasks_and_connections();
        let settled = Settled {
            fds,
            tasks,
            connections,
        };
        let back = fds <= baseline_fds && tasks <= baseline_tasks && connections == 0;
        if back || started.elapsed() >= SETTLE {
            return settled;
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Prints what the load saw.
fn report(tally: &Tally, histogram: &Histogram<u64>, load_time: Duration) {
    println!(
        "soak: {:.0} s of load on {}",
        load_time.as_secs_f64(),
        TRANSPORTS.join(", ")
    );
    println!(
        "  well-behaved: {} replies, {} lost, {} wrong, {} late, {} reconnects (max round trip {:?})",
        tally.replies,
        tally.lost,
        tally.wrong,
        tally.late,
        tally.reconnects,
        Duration::from_micros(histogram.max())
    );
    println!(
        "  churn {} connections, resets {}, slow readers {}, silent closed {} ({} late), \
         pongs {} ({} missing), hostile {} ({} wrong)",
        tally.churned,
        tally.resets,
        tally.slow,
        tally.silent_closed,
        tally.silent_late,
        tally.pongs,
        tally.pongs_missing,
        tally.hostile,
        tally.hostile_wrong
    );
}

/// The failures the load loops themselves saw.
fn load_failures(tally: &Tally) -> Vec<String> {
    let mut failures = tally.errors.clone();
    let counts = [
        (tally.lost, "replies lost"),
        (tally.wrong, "replies wrong"),
        (tally.late, "replies late or duplicated"),
        (tally.reconnects, "well-behaved reconnects"),
        (tally.silent_late, "silent sockets outlived the grace"),
        (tally.pongs_missing, "pongs missing"),
        (
            tally.hostile_wrong,
            "hostile frames not refused as expected",
        ),
    ];
    for (count, what) in counts {
        if count > 0 {
            failures.push(format!("{count} {what}"));
        }
    }
    if tally.replies == 0 {
        failures.push("no well-behaved reply at all".to_owned());
    }
    if tally.churned == 0 || tally.resets == 0 || tally.slow == 0 || tally.hostile == 0 {
        failures.push("a load loop never ran".to_owned());
    }
    failures
}

/// One well-behaved client: `DEPTH` `Echo`s at a time, every reply checked.
async fn well_behaved(
    url: String,
    options: ClientOptions,
    n: u64,
    deadline: Instant,
    tally: Shared,
    histogram: Rc<RefCell<Histogram<u64>>>,
) {
    let client = match timeout(Duration::from_secs(10), Client::connect(&url, options)).await {
        Ok(Ok(client)) => client,
        other => {
            tally
                .borrow_mut()
                .errors
                .push(format!("{url}: well-behaved connect failed: {other:?}"));
            return;
        }
    };
    let mut seq = n << 48;
    while Instant::now() < deadline {
        let batch: Vec<_> = (0..DEPTH)
            .map(|_| {
                seq += 1;
                let id = seq;
                let client = &client;
                async move {
                    let mut frame = FrameMut::with_body(Cmd::from_u8(ECHO), &body(id));
                    frame
                        .header_mut()
                        .set_view(u32::try_from(id & 0xFFFF_FFFF).unwrap_or(0));
                    let sent = Instant::now();
                    (id, sent, client.request(frame).await)
                }
            })
            .collect();
        for (id, sent, reply) in futures_util::future::join_all(batch).await {
            let mut t = tally.borrow_mut();
            match reply {
                Ok(frame)
                    if frame.header().command_raw() == ECHO_REPLY
                        && frame.body() == body(id).as_slice() =>
                {
                    t.replies += 1;
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = histogram.borrow_mut().record(micros.max(1));
                }
                Ok(_) => t.wrong += 1,
                Err(err) => {
                    t.lost += 1;
                    if t.errors.len() < 20 {
                        t.errors.push(format!("{url}: request failed: {err}"));
                    }
                }
            }
        }
    }
    let stats = client.stats();
    let mut unsolicited = 0;
    while client.try_recv().is_some() {
        unsolicited += 1;
    }
    {
        let mut t = tally.borrow_mut();
        t.late += stats.late_replies + unsolicited;
        t.reconnects += stats.connections.saturating_sub(1);
    }
    client.close().await;
}

/// The body of well-behaved request `id`: its bytes, repeated.
fn body(id: u64) -> Vec<u8> {
    id.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(ECHO_BODY)
        .collect()
}

/// Connect, ping, close, on each transport in turn.
async fn churn(urls: Vec<String>, options: ClientOptions, deadline: Instant, tally: Shared) {
    let mut i = 0;
    while Instant::now() < deadline {
        let url = &urls[i % urls.len()];
        i += 1;
        match timeout(
            Duration::from_secs(10),
            Client::connect(url, options.clone()),
        )
        .await
        {
            Ok(Ok(client)) => {
                if let Err(err) = client.ping().await {
                    tally
                        .borrow_mut()
                        .errors
                        .push(format!("{url}: churn ping: {err}"));
                }
                client.close().await;
                tally.borrow_mut().churned += 1;
            }
            other => tally
                .borrow_mut()
                .errors
                .push(format!("{url}: churn connect: {other:?}")),
        }
    }
}

/// TCP connections that send half a frame and are reset.
async fn resets(addr: SocketAddr, deadline: Instant, tally: Shared) {
    let half = app(ECHO, 1, 4096);
    while Instant::now() < deadline {
        let Ok(Ok(stream)) = timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
        else {
            tally
                .borrow_mut()
                .errors
                .push("reset connect failed".into());
            continue;
        };
        let BufResult(_, _) = stream
            .clone()
            .write_all(half.as_bytes()[..2000].to_vec())
            .await;
        reset(&stream);
        drop(stream);
        tally.borrow_mut().resets += 1;
        sleep(Duration::from_millis(5)).await;
    }
}

/// Sets `SO_LINGER` to 0, so closing the socket sends a reset.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a valid `linger` value
    // and its exact size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(0),
        );
    }
}

/// TCP clients that write 64 KiB `Echo`s and read the replies slowly.
async fn slow_reader(addr: SocketAddr, deadline: Instant, tally: Shared) {
    while Instant::now() < deadline {
        let mut client = TcpClient::connect(addr).await;
        let frames: Vec<_> = (1..=SLOW_FRAMES).map(|r| app(ECHO, r, 64 << 10)).collect();
        client.send_all(&frames).await;
        let stop = (Instant::now() + Duration::from_secs(5)).min(deadline);
        let mut read = 0;
        while Instant::now() < stop && read < SLOW_FRAMES {
            sleep(Duration::from_millis(100)).await;
            if client.recv().await.is_ok() {
                read += 1;
            }
        }
        client.close().await;
        tally.borrow_mut().slow += 1;
    }
}

/// Silent connections after their handshake: the node must close them
/// within the grace plus slack.
async fn silent(addrs: [SocketAddr; 3], tls: bus_tls::ClientTls, deadline: Instant, tally: Shared) {
    while Instant::now() + GRACE + GRACE_SLACK < deadline {
        let opened = Instant::now();
        let mut tcp = TcpClient::connect(addrs[0]).await;
        let mut tls = TlsClient::connect(&tls, addrs[1]).await;
        let mut ws = WsClient::connect(addrs[2]).await;
        let tcp_end = closed(&mut tcp);
        let tls_end = closed(&mut tls);
        let ws_end = closed(&mut ws);
        let (a, b, c) = futures_util::join!(tcp_end, tls_end, ws_end);
        let mut t = tally.borrow_mut();
        for ok in [a, b, c] {
            if ok && opened.elapsed() <= GRACE + GRACE_SLACK + Duration::from_secs(1) {
                t.silent_closed += 1;
            } else {
                t.silent_late += 1;
            }
        }
    }
}

/// Whether the server closed `client` (after its `Goodbye`) within the
/// grace plus slack.
async fn closed<C: RawClient>(client: &mut C) -> bool {
    let bound = GRACE + GRACE_SLACK;
    let started = Instant::now();
    while started.elapsed() < bound {
        match timeout(bound, client.recv()).await {
            Ok(Ok(frame)) if frame.header().command() == Cmd::Goodbye => {}
            Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => return false,
        }
    }
    false
}

/// Bursts of `Ping`s written at once; every `Pong` counted.
async fn ping_flood(addr: SocketAddr, deadline: Instant, tally: Shared) {
    let mut burst = Vec::with_capacity(PING_BURST * 256);
    for i in 0..PING_BURST as u64 {
        let mut ping = FrameMut::new(Cmd::Ping, 0);
        ping.header_mut().set_request(i + 1);
        burst.extend_from_slice(ping.as_bytes());
    }
    while Instant::now() < deadline {
        let mut client = TcpClient::connect(addr).await;
        let BufResult(res, _) =
            within("ping burst", client.stream().write_all(burst.clone())).await;
        if res.is_err() {
            tally
                .borrow_mut()
                .errors
                .push("ping burst write failed".into());
            continue;
        }
        let mut pongs = 0;
        while pongs < PING_BURST {
            match client.recv().await {
                Ok(frame) if frame.header().command() == Cmd::Pong => pongs += 1,
                _ => break,
            }
        }
        client.close().await;
        let mut t = tally.borrow_mut();
        t.pongs += pongs as u64;
        t.pongs_missing += (PING_BURST - pongs) as u64;
    }
}

/// Frames that break a rule, on every transport in turn: each gets the
/// right `Goodbye`, then a close.
async fn hostile(targets: Hostile, deadline: Instant, tally: Shared) {
    let good = app(ECHO, 7, 100);
    let mut bad_protocol = good.as_bytes().to_vec();
    bad_protocol[62] = 9;
    let mut bad_checksum = good.as_bytes().to_vec();
    bad_checksum[300] ^= 0xFF;
    let mut oversize = good.as_bytes().to_vec();
    oversize[48..52].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let cases = [
        (bad_protocol, GoodbyeReason::MalformedFrame),
        (bad_checksum, GoodbyeReason::ChecksumMismatch),
        (oversize, GoodbyeReason::FrameTooLarge),
    ];
    let mut i = 0;
    while Instant::now() < deadline {
        let (bytes, reason) = &cases[i % cases.len()];
        let transport = i % TRANSPORTS.len();
        i += 1;
        let ok = Box::pin(targets.refused(transport, bytes, *reason)).await;
        {
            let mut t = tally.borrow_mut();
            t.hostile += 1;
            if !ok {
                t.hostile_wrong += 1;
                if t.errors.len() < 20 {
                    t.errors.push(format!(
                        "hostile frame on {} not refused with {reason:?}",
                        TRANSPORTS[transport]
                    ));
                }
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `client` gets `Goodbye(reason)` and then the end of the stream.
async fn refused<C: RawClient>(client: &mut C, reason: GoodbyeReason) -> bool {
    match client.recv().await {
        Ok(frame) if frame.header().command() == Cmd::Goodbye => {
            let goodbye = bus::Goodbye::decode(frame.header().command_area());
            goodbye.reason == reason && client.recv().await.is_err()
        }
        _ => false,
    }
}
