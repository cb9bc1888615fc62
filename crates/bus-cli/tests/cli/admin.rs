//! The admin endpoint of a `bus serve` process: `/healthz`, `/metrics`
//! (checked against the Prometheus text format) and `/connz`.

#![allow(
    clippy::float_cmp,
    reason = "the counters compared are small integers, exact in f64"
)]

use std::collections::{HashMap, HashSet};

use bus_cli::node::ECHO;
use bus_client::{Client, ClientOptions};
use bus_core::{Command, FrameMut};
use bus_tests::within;

use crate::common::{ServeProcess, http_get};

/// Parses Prometheus text format 0.0.4 strictly enough to catch malformed
/// output: every sample is `name{label="value",...} number`, belongs to a
/// family announced by `# TYPE` before it, and every family has `# HELP`.
/// Returns `name{labels}` → value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut typed = HashSet::new();
    let mut helped = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (kind, name, value) = (words.next(), words.next(), words.next());
            let name = name.expect("metric name after # HELP/# TYPE");
            match kind {
                Some("HELP") => {
                    helped.insert(name.to_owned());
                }
                Some("TYPE") => {
                    let t = value.expect("type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type: {line}"
                    );
                    typed.insert(name.to_owned());
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels: {line}"));
            for pair in inner.split(',') {
                let (key, quoted) = pair.split_once('=').expect("label=value");
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name: {line}"
                );
                assert!(
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                    "label value not quoted: {line}"
                );
            }
        }
        assert!(typed.contains(name), "sample before its # TYPE: {line}");
        assert!(helped.contains(name), "sample without # HELP: {line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

#[compio::test]
async fn metrics_parse_as_prometheus_text_and_counters_move() {
    let node = ServeProcess::start(&["--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let admin = node.admin.expect("admin address");
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    let (status, before) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let before = parse_prometheus(&before);
    let frames_in = |m: &HashMap<String, f64>| m["bus_frames_in_total{shard=\"0\"}"];
    let tcp_conns = "bus_connections{shard=\"0\",transport=\"tcp\"}";
    assert_eq!(before[tcp_conns], 0.0);

    let client = within(
        "connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    for i in 0..5u8 {
        within(
            "echo",
            client.request(FrameMut::with_body(Command::from_u8(ECHO), &[i; 100])),
        )
        .await
        .expect("echo");
    }
    let (_, after) = http_get(admin, "/metrics");
    let after = parse_prometheus(&after);
    // The five echoes and the client's opening Ping (spec §7).
    assert_eq!(frames_in(&after) - frames_in(&before), 6.0);
    assert_eq!(after[tcp_conns], 1.0);
    assert!(after["bus_bytes_out_total{shard=\"0\"}"] >= 5.0 * 356.0);
    assert_eq!(after["bus_connections_accepted_total{shard=\"0\"}"], 1.0);
    for reason in ["Normal", "ShuttingDown", "ProtocolViolation", "Evicted"] {
        let key = format!("bus_goodbyes_sent_total{{shard=\"0\",reason=\"{reason}\"}}");
        assert!(after.contains_key(&key), "missing {key}");
    }
    assert!(after.contains_key("bus_handshake_failures_total{shard=\"0\"}"));
    assert!(after.contains_key("bus_queue_full_total{shard=\"0\"}"));
    assert!(after.contains_key("bus_frames_dropped_total{shard=\"0\"}"));
    let listener = format!("transport=\"tcp\",listener=\"{}\"", node.tcp);
    for cap in ["max_connections", "max_handshakes"] {
        let key = format!("bus_connections_refused_total{{{listener},cap=\"{cap}\"}}");
        assert_eq!(after.get(&key), Some(&0.0), "{key}");
    }
    assert_eq!(after["bus_admission_live_connections"], 1.0);
    assert_eq!(after["bus_admission_max_connections"], 10_000.0);
    assert_eq!(http_get(admin, "/nope").0, 404);
}

#[compio::test]
async fn connz_lists_a_connected_client() {
    let node = ServeProcess::start(&["--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let admin = node.admin.expect("admin address");
    let client = within(
        "connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    within(
        "echo",
        client.request(FrameMut::with_body(Command::from_u8(ECHO), b"hi")),
    )
    .await
    .expect("echo");
    let (status, body) = http_get(admin, "/connz");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["connections"], 1, "{json}");
    let conn = &json["shards"][0]["connections"][0];
    assert_eq!(conn["kind"], "client", "{json}");
    assert_eq!(conn["transport"], "tcp", "{json}");
    // The client's opening Ping (spec §7) and the echo; its Pong and the reply.
    assert_eq!(conn["frames_in"], 2, "{json}");
    assert_eq!(conn["frames_out"], 2, "{json}");
    assert!(
        conn["peer_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{json}"
    );
    assert!(
        conn["id"].as_str().is_some_and(|id| id.starts_with("0x")),
        "{json}"
    );
}

/// During the shutdown grace (a client that never closes holds it open)
/// `/healthz` says "shutting down" and `/metrics` and `/connz` still answer.
#[compio::test]
async fn metrics_and_connz_answer_during_the_shutdown_grace() {
    // A long wait for the peer's close: the grace lasts until the test
    // drops its client.
    let dir = bus_tests::pki::unique_dir("admin-grace");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bus.toml");
    std::fs::write(&file, "[bus]\nclose_peer_timeout = \"30 s\"\n").expect("config");
    let file = file.to_str().expect("utf-8 path");
    let node = ServeProcess::start(&[
        "--config",
        file,
        "--tcp",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = node.admin.expect("admin address");
    // A raw client: registered by its first frame, then it never reads nor
    // closes, so the node waits out close_peer_timeout for it.
    let mut client = std::net::TcpStream::connect(node.tcp).expect("connect");
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.seal();
    std::io::Write::write_all(&mut client, ping.freeze().as_bytes()).expect("ping");
    let deadline = std::time::Instant::now() + bus_tests::STEP;
    while !http_get(admin, "/connz").1.contains("\"tcp\"") {
        assert!(std::time::Instant::now() < deadline, "client never listed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    node.signal(libc::SIGTERM);
    let deadline = std::time::Instant::now() + bus_tests::STEP;
    loop {
        let (status, body) = http_get(admin, "/healthz");
        if status == 503 {
            assert_eq!(body, "shutting down\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never shutting down");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let metrics = parse_prometheus(&metrics);
    assert!(metrics.contains_key("bus_frames_in_total{shard=\"0\"}"));
    let (status, connz) = http_get(admin, "/connz");
    assert_eq!(status, 200, "{connz}");
    drop(client);
    let mut node = node;
    assert!(node.wait_exit(bus_tests::STEP).success());
}

/// The admin endpoint's own limits (request head, connections at once, the
/// header timeout, eviction of idle connections), served in-process from a source with no shards.
mod limits {
    use std::{
        net::SocketAddr,
        sync::Arc,
        time::{Duration, Instant},
    };

    use bus_cli::admin::{
        AdminServer, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_HEAD_BYTES, NodeInfo, ShardView,
        StatsSource,
    };
    use bus_tests::within;
    use compio::{
        BufResult,
        io::{AsyncRead, AsyncWriteExt},
        net::TcpStream,
    };

    /// How much later than [`HEADER_TIMEOUT`] a timed-out request may be
    /// answered on a loaded machine.
    const TIMEOUT_SLACK: Duration = Duration::from_secs(1);

    struct NoShards;

    impl StatsSource for NoShards {
        fn shards(&self) -> Result<Vec<ShardView>, String> {
            Ok(Vec::new())
        }

        fn is_shutting_down(&self) -> bool {
            false
        }
    }

    async fn admin() -> AdminServer {
        let info = NodeInfo {
            version: "test",
            driver: "test".into(),
        };
        let listen = "127.0.0.1:0".parse().expect("addr");
        within(
            "admin start",
            AdminServer::start(Arc::new(NoShards), listen, info, None),
        )
        .await
        .expect("admin endpoint")
    }

    async fn open(addr: SocketAddr) -> TcpStream {
        within("admin connect", TcpStream::connect(addr))
            .await
            .expect("connect")
    }

    async fn send(stream: &mut TcpStream, bytes: &[u8]) {
        let BufResult(res, _) = within("admin write", stream.write_all(bytes.to_vec())).await;
        res.expect("write");
    }

    /// Reads until the server closes; returns everything it sent.
    async fn read_to_end(stream: &mut TcpStream) -> String {
        let mut all = Vec::new();
        loop {
            let BufResult(res, chunk) =
                within("admin answer", stream.read(Vec::with_capacity(4096))).await;
            match res {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&all).into_owned(),
                Ok(_) => all.extend_from_slice(&chunk),
            }
        }
    }

    fn status(response: &str) -> Option<u16> {
        response
            .strip_prefix("HTTP/1.1 ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }

    async fn get(addr: SocketAddr, head: &str) -> String {
        let mut stream = open(addr).await;
        send(&mut stream, head.as_bytes()).await;
        read_to_end(&mut stream).await
    }

    #[compio::test]
    async fn a_request_head_over_8_kib_gets_431_and_one_under_is_served() {
        let server = admin().await;
        let addr = server.local_addr();
        // A head just under the limit, its end included, is served.
        let filler = "a".repeat(MAX_REQUEST_HEAD_BYTES - 200);
        let fits = format!("GET /healthz HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n");
        assert!(fits.len() < MAX_REQUEST_HEAD_BYTES);
        let answer = get(addr, &fits).await;
        assert_eq!(status(&answer), Some(200), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        // Twice the limit with no end in sight: refused once 8 KiB are in.
        let filler = "a".repeat(2 * MAX_REQUEST_HEAD_BYTES);
        let answer = get(
            addr,
            &format!("GET /healthz HTTP/1.1\r\nX-Filler: {filler}"),
        )
        .await;
        assert_eq!(status(&answer), Some(431), "{answer}");
        assert!(answer.ends_with("request head over 8 KiB\n"), "{answer}");
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
    }

    #[compio::test]
    async fn a_request_not_received_within_the_header_timeout_gets_408() {
        let server = admin().await;
        let mut stream = open(server.local_addr()).await;
        let started = Instant::now();
        // Half a request, then silence.
        send(&mut stream, b"GET /healthz HTTP/1.1\r\n").await;
        let answer = read_to_end(&mut stream).await;
        let took = started.elapsed();
        assert_eq!(status(&answer), Some(408), "{answer}");
        assert!(
            answer.ends_with("request not received in time\n"),
            "{answer}"
        );
        assert!(
            took >= HEADER_TIMEOUT && took <= HEADER_TIMEOUT + TIMEOUT_SLACK,
            "answered after {took:?}, {HEADER_TIMEOUT:?} promised"
        );
    }

    /// Holds `idle` admin connections that never send a request, then
    /// asks for `/metrics`: it is answered (the oldest idle connection is
    /// evicted for it). The newest idle one was not evicted: it gets its
    /// 408 at the header timeout.
    async fn metrics_answer_while_idle_connections_are_held(idle: usize) {
        // 500 sockets each side in this process, with other tests beside.
        let _ = bus_cli::rlimit::raise_nofile();
        let server = admin().await;
        let addr = server.local_addr();
        let mut held = Vec::with_capacity(idle);
        for _ in 0..idle {
            held.push(open(addr).await);
        }
        let answer = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), Some(200), "{answer}");
        let newest = held.last_mut().expect("held connections");
        let answer = read_to_end(newest).await;
        assert_eq!(status(&answer), Some(408), "{answer}");
        // The oldest was evicted (closed without an answer), or had timed
        // out already on a slow machine.
        let oldest = read_to_end(&mut held[0]).await;
        assert!(
            oldest.is_empty() || status(&oldest) == Some(408),
            "{oldest}"
        );
        drop(held);
        let answer = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), Some(200), "{answer}");
    }

    #[compio::test]
    async fn with_64_idle_connections_held_metrics_still_answers() {
        assert_eq!(MAX_CONNECTIONS, 64, "the documented limit");
        metrics_answer_while_idle_connections_are_held(MAX_CONNECTIONS).await;
    }

    #[compio::test]
    async fn with_500_idle_connections_held_metrics_still_answers() {
        metrics_answer_while_idle_connections_are_held(500).await;
    }
}
