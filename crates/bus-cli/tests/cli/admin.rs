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

/// The admin endpoint's own limits (request head, connections at once, the
/// I/O bound), served in-process from a source with no shards.
mod limits {
    use std::{
        net::SocketAddr,
        sync::Arc,
        time::{Duration, Instant},
    };

    use bus_cli::admin::{
        AdminServer, IO_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_HEAD_BYTES, NodeInfo, ShardView,
        StatsSource,
    };
    use bus_tests::within;
    use compio::{
        BufResult,
        io::{AsyncRead, AsyncWriteExt},
        net::TcpStream,
    };

    /// How much later than [`IO_TIMEOUT`] a timed-out request may be
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
    async fn a_request_not_received_within_the_io_timeout_gets_408() {
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
            took >= IO_TIMEOUT && took <= IO_TIMEOUT + TIMEOUT_SLACK,
            "answered after {took:?}, {IO_TIMEOUT:?} promised"
        );
    }

    #[compio::test]
    async fn connections_beyond_64_are_closed_at_once_and_the_slots_come_back() {
        let server = admin().await;
        let addr = server.local_addr();
        assert_eq!(MAX_CONNECTIONS, 64, "the documented limit");
        // 64 connections that never send a request hold every slot, each
        // until its I/O timeout.
        let mut held = Vec::with_capacity(MAX_CONNECTIONS);
        for _ in 0..MAX_CONNECTIONS {
            held.push(open(addr).await);
        }
        let held_since = Instant::now();
        // The server accepts in order: the next one finds no slot and is
        // closed without an answer, long before any I/O timeout.
        let mut extra = open(addr).await;
        send(&mut extra, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        let answer = read_to_end(&mut extra).await;
        assert_eq!(answer, "", "closed without an answer");
        assert!(
            held_since.elapsed() < IO_TIMEOUT,
            "closed at once, not by a timeout: {:?}",
            held_since.elapsed()
        );
        // Each held connection gets its 408; then the slots are free again.
        for stream in &mut held {
            let answer = read_to_end(stream).await;
            assert_eq!(status(&answer), Some(408), "{answer}");
        }
        drop(held);
        let answer = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&answer), Some(200), "{answer}");
    }
}
