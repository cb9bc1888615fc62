//! `bus serve`, `bus ping` and `bus bench` as a user runs them: child
//! processes on ephemeral loopback ports.

use std::time::{Duration, Instant};

use bus_cli::node::{BROADCAST, BROADCAST_ACK, DELIVERY, ECHO, ECHO_REPLY, broadcast_ack_count};
use bus_client::{Client, ClientOptions, ConnectionState};
use bus_core::{Command, FrameMut, GoodbyeReason};
use bus_tests::{
    STEP,
    client::{RawClient, TcpClient},
    frames, within,
};

use crate::common::{ServeProcess, run_bus};

fn frame(command: u8, body: &[u8]) -> FrameMut {
    FrameMut::with_body(Command::from_u8(command), body)
}

#[compio::test]
async fn serve_answers_echo_and_broadcast_over_tcp() {
    let node = ServeProcess::start(&["--tcp", "127.0.0.1:0"]);
    let a = within(
        "connect a",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect a");
    let b = within(
        "connect b",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect b");
    // TCP has no handshake: `b` is registered (on whichever shard it was
    // handed to) once it has had a reply.
    within("echo b", b.request(frame(ECHO, b"b")))
        .await
        .expect("echo b");

    let mut echo = frame(ECHO, b"hello node");
    echo.header_mut().set_view(7);
    echo.header_mut().set_release(9);
    echo.header_mut().reserved_frame_mut()[0] = 0xAB;
    echo.header_mut().command_area_mut()[5] = 0xCD;
    let reply = within("echo", a.request(echo)).await.expect("echo reply");
    let h = reply.header();
    assert_eq!(h.command_raw(), ECHO_REPLY);
    assert_eq!(reply.body(), b"hello node");
    assert_eq!((h.view(), h.release()), (7, 9));
    assert_eq!(h.reserved_frame()[0], 0xAB);
    assert_eq!(h.command_area()[5], 0xCD);
    assert!(h.is_sealed(), "replies are sealed");
    assert_eq!(h.validate(1 << 20), Ok(()));

    let ack = within("broadcast", a.request(frame(BROADCAST, b"to everyone")))
        .await
        .expect("broadcast ack");
    assert_eq!(ack.header().command_raw(), BROADCAST_ACK);
    assert_eq!(broadcast_ack_count(&ack), 2, "both clients addressed");
    for (name, client) in [("a", &a), ("b", &b)] {
        let delivery = within("delivery", client.recv()).await.expect("delivery");
        assert_eq!(delivery.header().command_raw(), DELIVERY, "client {name}");
        assert_eq!(delivery.body(), b"to everyone", "client {name}");
        assert!(delivery.header().is_sealed());
    }
}

#[compio::test]
async fn unknown_command_gets_protocol_violation_and_a_close() {
    let node = ServeProcess::start(&["--tcp", "127.0.0.1:0"]);
    let mut raw = TcpClient::connect(node.tcp).await;
    raw.send(&frames::app(99, 1, 10)).await;
    let goodbye = raw
        .expect_goodbye_then_close(GoodbyeReason::ProtocolViolation)
        .await;
    assert!(goodbye.detail.contains("99"), "{}", goodbye.detail);
}

#[compio::test]
async fn sigterm_says_goodbye_shutting_down_to_every_client_and_exits_zero() {
    let mut node = ServeProcess::start(&["--tcp", "127.0.0.1:0"]);
    let mut raw = TcpClient::connect(node.tcp).await;
    let client = within(
        "connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    // Both connections are registered once each has had a reply.
    raw.send(&frames::app(ECHO, 1, 0)).await;
    assert_eq!(raw.recv_frame().await.header().command_raw(), ECHO_REPLY);
    within("echo", client.request(frame(ECHO, b"x")))
        .await
        .expect("echo");

    let signalled = Instant::now();
    node.signal(libc::SIGTERM);
    raw.expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
        .await;
    // The library client saw the same Goodbye: it closes (recv ends), and
    // what it is asked afterwards fails with that Goodbye.
    assert!(within("client closed", client.recv()).await.is_none());
    let err = client
        .request(frame(ECHO, b"y"))
        .await
        .expect_err("closed by the node");
    assert_eq!(
        err.goodbye_reason(),
        Some(GoodbyeReason::ShuttingDown),
        "{err}"
    );
    assert_eq!(client.state(), ConnectionState::Closed);
    // Grace: close_grace 5 s + close_peer_timeout 2 s + 1 s.
    let status = node.wait_exit(Duration::from_secs(8) + STEP);
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(8), "exited within the grace");
    // `raw` read the Goodbye and the end but never closes its side: the
    // node waits close_peer_timeout (2 s by default) for it, no less.
    assert!(
        took >= Duration::from_secs(2),
        "exited {took:?} after the signal, before close_peer_timeout ran out"
    );
    node.wait_line("stopped in");
    drop(raw);
}

/// SIGINT stops the node like SIGTERM (`Goodbye(ShuttingDown)`, exit 0),
/// within the documented bound and no sooner than its close bounds allow:
/// with `close_grace` 1 s and `close_peer_timeout` 500 ms the grace is
/// 1 + 0.5 + 1 = 2.5 s, the node returns within grace + 2 s, and a client
/// that reads the Goodbye but never closes its side holds it for the
/// 500 ms the node waits for that close.
#[compio::test]
async fn sigint_says_goodbye_and_exits_zero_within_its_close_bounds() {
    let dir = bus_tests::pki::unique_dir("sigint");
    let config = dir.join("bus.toml");
    std::fs::write(
        &config,
        "[bus]\nclose_grace = \"1 s\"\nclose_peer_timeout = \"500 ms\"\n",
    )
    .expect("write config");
    let mut node = ServeProcess::start(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--tcp",
        "127.0.0.1:0",
    ]);
    let mut raw = TcpClient::connect(node.tcp).await;
    raw.send(&frames::app(ECHO, 1, 0)).await;
    assert_eq!(raw.recv_frame().await.header().command_raw(), ECHO_REPLY);

    let signalled = Instant::now();
    node.signal(libc::SIGINT);
    raw.expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
        .await;
    let grace = Duration::from_millis(2500);
    let status = node.wait_exit(grace + Duration::from_secs(2) + STEP);
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took <= grace + Duration::from_secs(2),
        "exited {took:?} after SIGINT, grace {grace:?} + 2 s promised"
    );
    assert!(
        took >= Duration::from_millis(500),
        "exited {took:?} after SIGINT, before close_peer_timeout ran out"
    );
    let line = node.wait_line("SIGINT: shutting down");
    assert!(line.contains("grace 2.5s"), "{line}");
    let stopped = node.wait_line("stopped in");
    assert!(
        stopped.contains("1 connections open, 1 Goodbyes written, 0 cancelled"),
        "{stopped}"
    );
    drop(raw);
}

#[test]
fn config_error_exits_non_zero_naming_the_field_and_the_fix() {
    let dir = std::env::temp_dir().join(format!("bus-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[bus]\nmax_batch_frames = 0\n").expect("write config");
    let (status, _out, err) = run_bus(
        &[
            "serve",
            "--config",
            path.to_str().expect("utf-8 path"),
            "--tcp",
            "127.0.0.1:0",
        ],
        STEP,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("bus.max_batch_frames"), "{err}");
    assert!(err.contains("1 ..= 512"), "{err}");
    assert!(err.contains("fix:"), "{err}");
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let (status, _out, err) = run_bus(
        &[
            "serve",
            "--tcp",
            "127.0.0.1:0",
            "--max-message-size",
            "100 B",
        ],
        STEP,
    );
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("bus.max_message_size"), "{err}");
    assert!(err.contains("--max-message-size"), "{err}");
}

#[test]
fn ping_prints_round_trip_times() {
    let node = ServeProcess::start(&["--tcp", "127.0.0.1:0"]);
    let (status, out, err) = run_bus(&["ping", &node.url(), "-c", "3", "-i", "10 ms"], STEP);
    assert!(status.success(), "stdout: {out}\nstderr: {err}");
    assert_eq!(out.matches("pong from").count(), 3, "{out}");
    assert!(out.contains("3 pings, 3 pongs"), "{out}");
}

#[test]
fn ping_of_a_closed_port_fails_with_a_readable_reason() {
    // A port nobody listens on: bind one, then let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let (status, _out, err) = run_bus(&["ping", &format!("tcp://{addr}"), "-c", "1"], STEP);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
}

#[test]
fn bench_in_process_reports_throughput_and_no_errors() {
    let (status, out, err) = run_bus(
        &[
            "bench",
            "--duration",
            "2",
            "--warmup",
            "200 ms",
            "--json",
            "--quiet",
            "--connections",
            "2",
            "--depth",
            "8",
            "--size",
            "512",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "stdout: {out}\nstderr: {err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let results = json["results"].as_array().expect("results");
    assert!(!results.is_empty());
    for r in results {
        assert!(r["frames"].as_u64().expect("frames") > 0, "{r}");
        assert!(r["frames_per_sec"].as_f64().expect("rate") > 0.0, "{r}");
        assert!(r["mb_per_sec"].as_f64().expect("MB/s") > 0.0, "{r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
        assert_eq!(r["frame_bytes"].as_u64(), Some(512), "{r}");
        let latency = &r["latency_us"];
        assert!(latency["p50"].as_u64() <= latency["p99"].as_u64(), "{r}");
        assert!(latency["p99"].as_u64() <= latency["max"].as_u64(), "{r}");
    }
    let transports: Vec<_> = results.iter().map(|r| r["transport"].as_str()).collect();
    assert!(transports.contains(&Some("tcp")), "{transports:?}");
}

#[test]
fn bench_against_a_target_writes_a_plot() {
    let node = ServeProcess::start(&["--tcp", "127.0.0.1:0"]);
    let dir = std::env::temp_dir().join(format!("bus-cli-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let plot = dir.join("latency.svg");
    let (status, out, err) = run_bus(
        &[
            "bench",
            "--target",
            &node.url(),
            "--duration",
            "1",
            "--warmup",
            "0",
            "--quiet",
            "--connections",
            "1",
            "--depth",
            "4",
            "--plot",
            plot.to_str().expect("utf-8"),
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("frames/s"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("tcp ")), "{out}");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polyline"), "one series per transport");
}

#[compio::test]
async fn sighup_reloads_without_stopping_the_node() {
    let mut node = ServeProcess::start(&["--tcp", "127.0.0.1:0"]);
    // Back to back: the second must not meet the default action (terminate).
    node.signal(libc::SIGHUP);
    node.signal(libc::SIGHUP);
    let client = within(
        "connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    within("ping", client.ping())
        .await
        .expect("the node still answers");
    client.close().await;
    node.signal(libc::SIGHUP);
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(8) + STEP);
    assert!(status.success(), "exit status {status}");
}

/// `bus serve --shards 2`: clients land on both shards (their ids carry
/// the shard, spec §5, as `/connz` shows), a Broadcast reaches every one of
/// them and its ack counts them all, and SIGTERM says Goodbye to each
/// before a clean exit.
#[compio::test]
async fn two_shards_broadcast_to_every_client_and_stop_together() {
    const CLIENTS: usize = 4;
    let mut node = ServeProcess::start(&[
        "--shards",
        "2",
        "--tcp",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = within(
            "connect",
            Client::connect(&node.url(), ClientOptions::default()),
        )
        .await
        .expect("connect");
        // Registered on its shard once it has had a reply.
        within("echo", client.request(frame(ECHO, b"x")))
            .await
            .expect("echo");
        clients.push(client);
    }

    // Every connection is listed under the shard its id names, and both
    // shards serve some.
    let (status, connz) = crate::common::http_get(node.admin.expect("admin"), "/connz");
    assert_eq!(status, 200);
    let connz: serde_json::Value = serde_json::from_str(&connz).expect("connz JSON");
    assert_eq!(connz["connections"], CLIENTS, "{connz}");
    let shards = connz["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2, "{connz}");
    for shard in shards {
        let index = shard["shard"].as_u64().expect("shard index");
        let listed = shard["connections"].as_array().expect("connections");
        assert!(
            !listed.is_empty(),
            "shard {index} serves no client: {connz}"
        );
        for connection in listed {
            let id = connection["id"].as_str().expect("id");
            let id = u128::from_str_radix(id.trim_start_matches("0x"), 16).expect("hex id");
            assert_eq!(u64::try_from(id >> 112).ok(), Some(index), "{connz}");
        }
    }

    let ack = within(
        "broadcast",
        clients[0].request(frame(BROADCAST, b"to every shard")),
    )
    .await
    .expect("broadcast ack");
    assert_eq!(ack.header().command_raw(), BROADCAST_ACK);
    assert_eq!(
        usize::try_from(broadcast_ack_count(&ack)).ok(),
        Some(CLIENTS),
        "every client on both shards addressed"
    );
    for (i, client) in clients.iter().enumerate() {
        let delivery = within("delivery", client.recv()).await.expect("delivery");
        assert_eq!(delivery.header().command_raw(), DELIVERY, "client {i}");
        assert_eq!(delivery.body(), b"to every shard", "client {i}");
    }

    node.signal(libc::SIGTERM);
    for (i, client) in clients.iter().enumerate() {
        assert!(
            within("closed", client.recv()).await.is_none(),
            "client {i} still open"
        );
        let err = client
            .request(frame(ECHO, b"y"))
            .await
            .expect_err("closed by the node");
        assert_eq!(
            err.goodbye_reason(),
            Some(GoodbyeReason::ShuttingDown),
            "client {i}: {err}"
        );
    }
    let status = node.wait_exit(Duration::from_secs(10) + STEP);
    assert!(status.success(), "exit status {status}");
    let stopped = node.wait_line("stopped in");
    assert!(stopped.contains("2 of 2 shards stopped"), "{stopped}");
}

/// The shutdown summary counts only Goodbyes actually written: a client
/// that never reads, with the node's queue and socket buffers full, gets no
/// Goodbye out, and the summary says so.
#[test]
fn a_goodbye_that_cannot_be_written_is_not_counted_in_the_summary() {
    use std::io::Write as _;
    let dir = bus_tests::pki::unique_dir("unread-goodbye");
    let config = dir.join("bus.toml");
    std::fs::write(
        &config,
        "[bus]\nmax_message_size = \"1 MiB\"\nqueue_capacity_bytes = \"1 MiB\"\n\
         inbound_budget = \"1 MiB\"\nclose_grace = \"1 s\"\nclose_peer_timeout = \"500 ms\"\n\
         [shards]\ncount = 1\n",
    )
    .expect("write config");
    let mut node = ServeProcess::start(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--tcp",
        "127.0.0.1:0",
    ]);
    // A client with a tiny receive window that sends echoes and never reads.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&node.tcp.into(), STEP)
        .expect("connect");
    let mut client: std::net::TcpStream = socket.into();
    // A write that makes no progress for 2 s: the node has stopped reading.
    client
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut echo = frame(ECHO, &vec![7u8; 64 << 10]);
    echo.seal();
    let echo = echo.freeze();
    // Up to 32 MiB of echoes: their replies fill the node's socket buffer
    // (the client's window is 4 KiB) and then its 1 MiB queue, whose input
    // then pauses, so the writes stall (the write timeout ends them) long
    // before the 512th.
    let mut stalled = false;
    for _ in 0..512 {
        if let Err(err) = client.write_all(echo.as_bytes()) {
            assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "write an echo: {err}"
            );
            stalled = true;
            break;
        }
    }
    assert!(stalled, "the node kept reading a client that never reads");
    node.signal(libc::SIGTERM);
    let stopped = node.wait_line("stopped in");
    assert!(
        stopped.contains("1 connections open, 0 Goodbyes written"),
        "{stopped}"
    );
    assert!(node.wait_exit(STEP).success());
    drop(client);
}
