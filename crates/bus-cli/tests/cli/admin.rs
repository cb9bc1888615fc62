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
