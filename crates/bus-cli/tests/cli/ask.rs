//! `bus serve`'s `Ask` (spec §8, §9): the node asks the client a `Question`
//! as a request from the server and reports the client's answer in an
//! `Answer`, on every transport; an unanswered `Ask` times out. And the
//! node's flush at shutdown: a shutdown record that cannot be written makes
//! `bus serve` exit non-zero.

use std::time::{Duration, Instant};

use bus_cli::node::{ANSWER, ANSWERED, ASK, QUESTION, TIMED_OUT};
use bus_client::{Client, ClientOptions};
use bus_core::{Command, FrameMut};
use bus_tests::{STEP, within};

use crate::common::ServeProcess;

const EVERY_TRANSPORT: [&str; 5] = ["tcp", "tls", "ws", "wss", "quic"];
/// The timeout of an `Ask` nobody answers.
const MILLIS: u32 = 200;

/// `bus serve` on every transport, with `extra` flags.
fn every_transport(extra: &[&str]) -> ServeProcess {
    let mut args = vec![];
    for scheme in EVERY_TRANSPORT {
        args.extend([format!("--{scheme}"), "127.0.0.1:0".to_owned()]);
    }
    args.extend(extra.iter().map(|&a| a.to_owned()));
    ServeProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn connect(node: &ServeProcess, scheme: &str) -> Client {
    let mut options = ClientOptions::default();
    options.ca_file = Some(node.data_dir.join("tls").join("cert.pem"));
    let url = format!("{scheme}://{}", node.addrs[scheme]);
    within(scheme, Client::connect(&url, options))
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"))
}

/// An `Ask` with a timeout of `millis` (0: the node's default).
fn ask(body: &[u8], millis: u32) -> FrameMut {
    let mut frame = FrameMut::with_body(Command::from_u8(ASK), body);
    frame.header_mut().command_area_mut()[..4].copy_from_slice(&millis.to_le_bytes());
    frame
}

#[compio::test]
async fn ask_is_answered_with_the_clients_answer_over_every_transport() {
    let mut node = every_transport(&[]);
    for scheme in EVERY_TRANSPORT {
        let client = connect(&node, scheme).await;
        let body = format!("what is {scheme}?");
        let asking = client.request(ask(body.as_bytes(), 0));
        let answering = async {
            let question = within("the question", client.recv_request())
                .await
                .expect("a question");
            assert_eq!(
                question.frame().header().command_raw(),
                QUESTION,
                "{scheme}"
            );
            assert_eq!(question.frame().body(), body.as_bytes(), "{scheme}");
            assert!(question.frame().header().is_sealed(), "{scheme}");
            let answer = format!("{scheme} is a transport");
            question
                .answer(FrameMut::with_body(Command::from_u8(40), answer.as_bytes()))
                .expect("answered");
            answer
        };
        let (answer, sent) = futures_util::join!(within("the answer", asking), answering);
        let answer = answer.unwrap_or_else(|err| panic!("{scheme}: {err}"));
        assert_eq!(answer.header().command_raw(), ANSWER, "{scheme}");
        assert_eq!(answer.header().command_area()[0], ANSWERED, "{scheme}");
        assert_eq!(answer.body(), sent.as_bytes(), "{scheme}");
        assert!(answer.header().is_sealed(), "{scheme}");
        client.close().await;
    }
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
}

#[compio::test]
async fn an_unanswered_ask_times_out_over_every_transport() {
    let mut node = every_transport(&["--admin", "127.0.0.1:0"]);
    for scheme in EVERY_TRANSPORT {
        let client = connect(&node, scheme).await;
        let started = Instant::now();
        let asking = client.request(ask(b"anyone?", MILLIS));
        let ignoring = async {
            // The question arrives; the client keeps it and never answers.
            within("the question", client.recv_request())
                .await
                .expect("a question")
        };
        let (answer, _kept) = futures_util::join!(within("the answer", asking), ignoring);
        let answer = answer.unwrap_or_else(|err| panic!("{scheme}: {err}"));
        let waited = started.elapsed();
        assert_eq!(answer.header().command_raw(), ANSWER, "{scheme}");
        assert_eq!(answer.header().command_area()[0], TIMED_OUT, "{scheme}");
        assert!(answer.body().is_empty(), "{scheme}");
        assert!(
            waited >= Duration::from_millis(u64::from(MILLIS)),
            "{scheme}: answered after {waited:?}"
        );
        client.close().await;
    }
    // Every one of them is counted as timed out in /metrics.
    let admin = node.admin.expect("admin endpoint");
    let (status, metrics) = crate::common::http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let timed_out: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("bus_requests_timed_out_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(timed_out, 5, "{metrics}");
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
}

#[compio::test]
async fn a_shutdown_record_that_cannot_be_written_makes_serve_exit_non_zero() {
    let mut node = ServeProcess::start(&["--tcp", "127.0.0.1:0", "--shards", "1"]);
    // A file where the node's `shutdown` directory must go: the flush
    // cannot write its record (whatever the process's privileges).
    std::fs::write(node.data_dir.join("shutdown"), b"in the way").expect("block");
    node.signal(libc::SIGTERM);
    let line = node.wait_line("shutdown flush failed");
    assert!(line.contains("shard 0"), "{line}");
    let status = node.wait_exit(Duration::from_secs(8) + STEP);
    assert!(!status.success(), "{status:?}");
}

#[compio::test]
async fn serve_writes_each_shards_record_at_shutdown_and_exits_zero() {
    let mut node = ServeProcess::start(&["--tcp", "127.0.0.1:0", "--shards", "2"]);
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
    for shard in 0..2 {
        let path = node
            .data_dir
            .join("shutdown")
            .join(format!("shard-{shard}.json"));
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("record written"))
                .expect("JSON");
        assert_eq!(record["connections"], 0, "{record}");
    }
}
