//! Floods from outside against a `bus serve` process, with its log read:
//! 5 000 connections refused and reset write a bounded number of log
//! lines; with a low `RLIMIT_NOFILE` new sockets are refused (closed at
//! once), the clients already connected are served, the log stays bounded,
//! and everything recovers once the sockets close.
//!
//! The bound on log lines: every warning an outside peer can trigger goes
//! through a `RateLimitedLog`, at most `LOG_RATE_BURST_LINES` (10) lines
//! per call site per `LOG_RATE_INTERVAL` (10 s).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use bus_cli::node::{ECHO, ECHO_REPLY};
use bus_core::{
    Command as BusCommand, FrameMut, Header,
    limits::{LOG_RATE_BURST_LINES, LOG_RATE_INTERVAL},
};
use bus_tests::STEP;

use crate::common::{BUS, http_get};

/// `bus serve` as a child with its stderr (the log) collected.
struct Node {
    child: Child,
    tcp: SocketAddr,
    admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    /// The start-up summary (stdout up to the `listening` line).
    summary: Vec<String>,
}

impl Node {
    /// Starts `bus serve` with `config` (TOML) under `sh -c "ulimit -n
    /// LIMIT; exec bus serve …"` when `nofile` is given.
    fn start(config: &str, nofile: Option<u32>) -> Self {
        Self::start_under(
            config,
            &nofile.map_or_else(String::new, |n| format!("ulimit -n {n} && ")),
        )
    }

    /// Starts `bus serve` with `config` after the shell commands `limit`.
    fn start_under(config: &str, limit: &str) -> Self {
        let dir = bus_tests::pki::unique_dir("flood");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("bus.toml");
        std::fs::write(&file, config).expect("config");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(r#"{limit}exec "$0" "$@""#))
            .arg(BUS)
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn bus serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut summary = Vec::new();
        let listening = loop {
            match rx.recv_timeout(STEP) {
                Ok(line) if line.starts_with("listening ") => break line,
                Ok(line) => summary.push(line),
                Err(err) => panic!("no listening line: {err}; log: {:?}", log.lock()),
            }
        };
        let addr = |key: &str| {
            listening
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(|a| a.parse().expect("address"))
        };
        Self {
            child,
            tcp: addr("tcp=").expect("tcp listener"),
            admin: addr("admin="),
            log,
            summary,
        }
    }

    /// Log lines at WARN so far.
    fn warnings(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("WARN"))
            .cloned()
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The most WARN lines `sites` rate-limited call sites may write in
/// `elapsed`.
fn log_bound(sites: u64, elapsed: Duration) -> u64 {
    let windows = 1 + elapsed.as_secs() / LOG_RATE_INTERVAL.as_secs();
    sites * u64::from(LOG_RATE_BURST_LINES) * windows
}

/// A raw client that has echoed once (so it holds a registered slot).
fn echo_client(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, STEP).ok()?;
    stream.set_read_timeout(Some(STEP)).ok()?;
    echo(&mut stream).then_some(stream)
}

/// One echo on `stream`: `false` when the server closed it instead.
fn echo(stream: &mut TcpStream) -> bool {
    let mut frame = FrameMut::with_body(BusCommand::from_u8(ECHO), b"flood");
    frame.seal();
    if stream.write_all(frame.freeze().as_bytes()).is_err() {
        return false;
    }
    let mut header = [0u8; 256];
    if stream.read_exact(&mut header).is_err() {
        return false;
    }
    let mut body = [0u8; 5];
    stream.read_exact(&mut body).is_ok()
        && &body == b"flood"
        && Header::from_bytes(&header).command_raw() == ECHO_REPLY
}

/// Connects and expects the server to close at once, before any byte.
fn expect_refused(addr: SocketAddr) {
    let mut stream = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close at once, got {other:?}"),
    }
}

/// Connects and resets at once (`SO_LINGER` 0, then close).
fn connect_and_reset(addr: SocketAddr) {
    let stream = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(stream);
}

#[test]
fn five_thousand_refused_resets_write_a_bounded_number_of_log_lines() {
    const FLOOD: u64 = 5_000;
    let node = Node::start(
        "[bus]\nmax_connections = 1\n[shards]\ncount = 2\n[tls]\nenabled = false\n\
         [ws]\nenabled = false\n[wss]\nenabled = false\n[quic]\nenabled = false\n\
         [tcp]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
        None,
    );
    let started = Instant::now();
    let mut held = echo_client(node.tcp).expect("the one slot");
    for _ in 0..FLOOD {
        connect_and_reset(node.tcp);
    }
    let admin = node.admin.expect("admin");
    let refused = format!(
        "bus_connections_refused_total{{transport=\"tcp\",listener=\"{}\",cap=\"max_connections\"}} {FLOOD}",
        node.tcp
    );
    let deadline = Instant::now() + STEP;
    while !http_get(admin, "/metrics").1.contains(&refused) {
        assert!(
            Instant::now() < deadline,
            "refusals never counted: {refused}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(echo(&mut held), "the live client is still served");
    let warnings = node.warnings();
    // The refusal's call site, and the accept loop's (a reset may fail the
    // accept itself).
    let bound = log_bound(2, started.elapsed());
    eprintln!("{} WARN lines for {FLOOD} refused resets", warnings.len());
    assert!(
        !warnings.is_empty() && warnings.len() as u64 <= bound,
        "{} WARN lines for {FLOOD} refused resets, bound {bound}: {warnings:#?}",
        warnings.len()
    );
    assert!(
        warnings.iter().any(|l| l.contains("connection refused")),
        "{warnings:#?}"
    );
}

/// Resets before take-over with no cap in the way: each used to write one
/// warning (5 000 resets, 4 989 lines).
#[test]
fn five_thousand_resets_before_take_over_write_a_bounded_number_of_log_lines() {
    const FLOOD: u64 = 5_000;
    let node = Node::start(
        "[shards]\ncount = 2\n[tls]\nenabled = false\n[ws]\nenabled = false\n\
         [wss]\nenabled = false\n[quic]\nenabled = false\n[tcp]\nlisten = \"127.0.0.1:0\"\n",
        None,
    );
    let started = Instant::now();
    let mut held = echo_client(node.tcp).expect("a client");
    for _ in 0..FLOOD {
        connect_and_reset(node.tcp);
    }
    // Served after the flood: the flood's sockets were all seen before it.
    assert!(echo(&mut held), "the live client is still served");
    let mut late = echo_client(node.tcp).expect("a client after the flood");
    assert!(echo(&mut late));
    let warnings = node.warnings();
    eprintln!("{} WARN lines for {FLOOD} resets", warnings.len());
    // Take-over and install failures, accept failures, refused hand-overs,
    // failed duplicates.
    let bound = log_bound(5, started.elapsed());
    assert!(
        warnings.len() as u64 <= bound,
        "{} WARN lines for {FLOOD} resets, bound {bound}: {warnings:#?}",
        warnings.len()
    );
}

#[test]
fn descriptor_exhaustion_refuses_new_sockets_serves_the_others_and_recovers() {
    const LIMIT: u32 = 64;
    let node = Node::start(
        "[shards]\ncount = 1\n[tls]\nenabled = false\n[ws]\nenabled = false\n\
         [wss]\nenabled = false\n[quic]\nenabled = false\n[tcp]\nlisten = \"127.0.0.1:0\"\n",
        Some(LIMIT),
    );
    let started = Instant::now();
    // Fill every descriptor the node has left.
    let mut held = Vec::new();
    while let Some(client) = echo_client(node.tcp) {
        held.push(client);
        assert!(held.len() < LIMIT as usize, "never ran out of descriptors");
    }
    assert!(held.len() >= 8, "only {} clients fit", held.len());
    // New sockets are refused at once, again and again.
    for _ in 0..200 {
        expect_refused(node.tcp);
    }
    for client in &mut held {
        assert!(echo(client), "a connected client is still served");
    }
    let warnings = node.warnings();
    eprintln!(
        "{} clients fit under {LIMIT} descriptors; {} WARN lines: {warnings:#?}",
        held.len(),
        warnings.len()
    );
    // Accept failures, refused sockets, failed duplicates.
    let bound = log_bound(3, started.elapsed());
    assert!(
        warnings.len() as u64 <= bound,
        "{} WARN lines, bound {bound}: {warnings:#?}",
        warnings.len()
    );
    // Full recovery: once the sockets close, as many clients fit again.
    let fitted = held.len();
    drop(held);
    let deadline = Instant::now() + STEP;
    let mut again = Vec::new();
    while again.len() < fitted {
        if let Some(client) = echo_client(node.tcp) {
            again.push(client);
        } else {
            // The node is still closing the old ones.
            assert!(Instant::now() < deadline, "only {} fit again", again.len());
            thread::sleep(Duration::from_millis(10));
        }
    }
    for client in &mut again {
        assert!(echo(client));
    }
}

/// `bus serve` raises its soft descriptor limit to the hard one and says
/// so, beside `max_connections`.
#[test]
fn serve_raises_the_soft_descriptor_limit_and_reports_both() {
    let node = Node::start_under(
        "[tls]\nenabled = false\n[ws]\nenabled = false\n[wss]\nenabled = false\n\
         [quic]\nenabled = false\n[tcp]\nlisten = \"127.0.0.1:0\"\n",
        "ulimit -S -n 256 && ",
    );
    let line = node
        .summary
        .iter()
        .find(|l| l.trim_start().starts_with("descriptors: "))
        .unwrap_or_else(|| panic!("no descriptors line in {:#?}", node.summary));
    let hard = {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable `rlimit` for the call.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
        assert_eq!(rc, 0);
        limit.rlim_max
    };
    if hard > 256 {
        assert!(line.contains("(raised from 256)"), "{line}");
    }
    assert!(line.contains("max_connections 10000"), "{line}");
    let _ = node.tcp;
}
