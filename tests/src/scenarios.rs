//! Behaviours of the bus, each written once and run per transport through
//! [`crate::transport_suite!`]. Names say the behaviour.

use std::{
    cell::Cell,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use bus_core::{
    Bus, BusConfig, ClientId, CloseReason, Command, DecodeLimits, Error, Frame, FrameMut, Goodbye,
    GoodbyeReason, Header, Peer, ReadSettings, SendError, SlowConsumerPolicy,
    transport::{Connection, FrameReader, Listener},
};

use crate::{
    client::RawClient,
    frames::{ECHO, ECHO_REPLY, PANIC_HANDLER, RECORD, app, app_mut, assert_pattern},
    leaks::{Liveness, open_socket_inodes, sockets_on_local_port},
    recorder::{Event, Events, Recorder},
    transport::{PANIC_WRITER_COMMAND, PanicListener, TestTransport, TrackedListener},
    within, yield_now,
};

/// What `Bus::shutdown` may take beyond its grace: "at most 500 ms for
/// cancellations to settle" (docs/operations.md, Shutdown).
pub const SHUTDOWN_SETTLE: Duration = Duration::from_millis(500);

/// Scheduling slack for a measurement taken by the test around a bounded
/// call (the call's own report is held to the promise exactly): a loaded
/// two-core machine may run the test's task a little after the bus's timer
/// fired.
pub const WAKE_SLACK: Duration = Duration::from_millis(250);

/// How much later than `idle_timeout` an idle close may reach the client:
/// the timer firing, one Goodbye written and read on loopback, on a loaded
/// machine.
pub const IDLE_SLACK: Duration = Duration::from_millis(500);

/// Asserts that `frame` is a `Goodbye` with `reason`; returns it.
///
/// # Panics
/// If it is anything else.
pub fn assert_goodbye(frame: &Frame, reason: GoodbyeReason) -> Goodbye {
    assert_eq!(
        frame.header().command(),
        Command::Goodbye,
        "expected Goodbye, got {frame:?}"
    );
    let goodbye = Goodbye::decode(frame.header().command_area());
    assert_eq!(goodbye.reason, reason, "goodbye detail: {}", goodbye.detail);
    goodbye
}

/// A bus serving one listener, with a recording handler.
#[derive(Debug)]
pub struct Node {
    /// The bus.
    pub bus: Bus,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What its handler saw.
    pub events: Events,
}

/// The configuration scenarios start from: short close bounds so failures
/// show quickly, everything else at its default.
pub fn test_config() -> BusConfig {
    let mut config = BusConfig::default();
    config.close_grace = Duration::from_secs(2);
    config.close_peer_timeout = Duration::from_secs(1);
    config.handshake_grace = Duration::from_secs(5);
    config.max_message_size_bytes = 2 << 20;
    config
}

/// Starts a node on `listener`.
///
/// # Panics
/// If the bus refuses the config or the listener.
pub fn start_on<L: Listener>(listener: L, config: BusConfig) -> Node {
    let (recorder, events) = Recorder::new();
    let bus = Bus::new(config, recorder).expect("valid config");
    let addr = listener.local_addr().expect("local addr");
    bus.serve(listener).expect("serve");
    Node { bus, addr, events }
}

/// Starts a node on a fresh listener of transport `T`.
pub async fn start<T: TestTransport>(config: BusConfig) -> Node {
    start_on(T::listen().await, config)
}

/// Connects a client and waits until the bus has registered it.
pub async fn connect<T: TestTransport>(node: &Node) -> (T::Client, Peer) {
    let client = T::connect(node.addr).await;
    let peer = node.events.connected().await;
    (client, peer)
}

fn client_id(peer: Peer) -> bus_core::ClientId {
    match peer {
        Peer::Client(id) => id,
        Peer::Replica(r) => panic!("expected a client, got replica {r}"),
    }
}

/// Shuts the node down and checks nothing is left running.
pub async fn stop(node: &Node) {
    let report = within("shutdown", node.bus.shutdown(Duration::from_secs(5))).await;
    assert_eq!(report.tasks_left, 0, "{report:?}");
    assert_eq!(node.bus.stats().tasks, 0);
}

async fn echo_round_trip<C: RawClient>(client: &mut C, request: u64, body_len: usize) {
    client.send(&app(ECHO, request, body_len)).await;
    let reply = client.recv_frame().await;
    let header = reply.header();
    assert_eq!(header.command_raw(), ECHO_REPLY);
    assert_eq!(header.request(), request);
    assert!(header.is_sealed(), "replies are sealed");
    assert_pattern(reply.body(), request, body_len);
}

async fn round_trip<T: TestTransport>(frame_size: usize) {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let body_len = frame_size - Header::zeroed().as_bytes().len();
    echo_round_trip(&mut client, 7, body_len).await;
    let (from, seen) = node.events.frame().await;
    assert_eq!(from, peer);
    assert_eq!(seen.len(), frame_size);
    assert_eq!(
        seen.header().client(),
        client_id(peer).as_raw(),
        "client id stamped (spec §5)"
    );
    assert_eq!(
        seen.header().validate(u32::MAX),
        Ok(()),
        "a stamped sealed frame still verifies"
    );
    assert_eq!(seen.to_mut().verify_body(), Ok(()));
    stop(&node).await;
}

/// A 256-byte frame (header only) goes through the handler and back.
pub async fn round_trip_256_bytes<T: TestTransport>() {
    round_trip::<T>(256).await;
}

/// A 64 KiB frame goes through the handler and back, body intact.
pub async fn round_trip_64_kib<T: TestTransport>() {
    round_trip::<T>(64 << 10).await;
}

/// A 1 MiB frame goes through the handler and back, body intact.
pub async fn round_trip_1_mib<T: TestTransport>() {
    round_trip::<T>(1 << 20).await;
}

/// 10 000 frames sent back to back are handled once each, in order, and
/// their replies come back complete and in order, written in batches.
pub async fn pipelined_10000_frames_arrive_once_in_order_and_batched<T: TestTransport>() {
    const N: u64 = 10_000;
    const BODY: usize = 64;
    let mut config = test_config();
    // Every reply fits in the queue even if the client reads only after
    // sending everything.
    config.queue_capacity_frames = 16_384;
    let node = start::<T>(config).await;
    let (mut client, _peer) = connect::<T>(&node).await;
    if T::STREAM {
        let mut wire = Vec::with_capacity(usize::try_from(N).expect("fits") * (256 + BODY));
        for request in 1..=N {
            wire.extend_from_slice(app(ECHO, request, BODY).as_bytes());
        }
        client.send_raw(&wire).await;
    } else {
        let frames: Vec<_> = (1..=N).map(|request| app(ECHO, request, BODY)).collect();
        client.send_all(&frames).await;
    }
    for request in 1..=N {
        let reply = client.recv_frame().await;
        assert_eq!(
            reply.header().request(),
            request,
            "replies in order, none missing or doubled"
        );
        assert_pattern(reply.body(), request, BODY);
    }
    for request in 1..=N {
        let (_, frame) = node.events.frame().await;
        assert_eq!(
            frame.header().request(),
            request,
            "handler sees each frame once, in order"
        );
    }
    let stats = node.bus.stats();
    assert_eq!(stats.frames_in, N + T::OPENING_FRAMES);
    assert_eq!(stats.frames_out, N + T::OPENING_FRAMES);
    assert!(stats.average_batch() > 1.0, "writer batches: {stats:?}");
    stop(&node).await;
}

/// Sends `bytes` and expects `Goodbye(reason)`, a close, no delivery and a
/// lost callback naming the violation.
async fn expect_violation<T: TestTransport>(bytes: &[u8], reason: GoodbyeReason) {
    let mut config = test_config();
    config.max_message_size_bytes = 1 << 20;
    let node = start::<T>(config).await;
    let (mut client, peer) = connect::<T>(&node).await;
    client.send_raw(bytes).await;
    client.expect_goodbye_then_close(reason).await;
    client.close().await;
    let lost = node.events.lost(peer).await;
    assert_eq!(lost, CloseReason::ProtocolViolation(reason));
    assert_eq!(node.events.lost_count(peer), 1);
    assert!(
        node.events
            .drain_now()
            .iter()
            .all(|e| !matches!(e, Event::Frame(..))),
        "nothing reaches the handler"
    );
    assert_eq!(node.bus.stats().goodbyes_sent[reason.code() as usize], 1);
    stop(&node).await;
}

fn header_bytes(edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut frame = app_mut(RECORD, 1, 0);
    edit(frame.header_mut());
    frame.as_bytes().to_vec()
}

/// `size` above `max_message_size` → `Goodbye(FrameTooLarge)`, close.
pub async fn oversize_frame_gets_frame_too_large_then_close<T: TestTransport>() {
    let bytes = header_bytes(|h| h.set_size((1 << 20) + 1));
    expect_violation::<T>(&bytes, GoodbyeReason::FrameTooLarge).await;
}

/// `size` below 256 → `Goodbye(MalformedFrame)`, close.
pub async fn undersize_frame_gets_malformed_then_close<T: TestTransport>() {
    let bytes = header_bytes(|h| h.set_size(255));
    expect_violation::<T>(&bytes, GoodbyeReason::MalformedFrame).await;
}

/// `protocol != 1` → `Goodbye(MalformedFrame)`, close.
pub async fn wrong_protocol_gets_malformed_then_close<T: TestTransport>() {
    let bytes = header_bytes(|h| h.set_protocol(2));
    expect_violation::<T>(&bytes, GoodbyeReason::MalformedFrame).await;
}

/// Command 0 → `Goodbye(MalformedFrame)`, close.
pub async fn command_zero_gets_malformed_then_close<T: TestTransport>() {
    let bytes = header_bytes(|h| h.set_command(Command::Invalid));
    expect_violation::<T>(&bytes, GoodbyeReason::MalformedFrame).await;
}

/// Commands 7 and 15 (reserved) → `Goodbye(MalformedFrame)`, close.
pub async fn reserved_commands_get_malformed_then_close<T: TestTransport>() {
    for command in [7, 11, 15] {
        let bytes = header_bytes(|h| h.set_command(Command::from_u8(command)));
        expect_violation::<T>(&bytes, GoodbyeReason::MalformedFrame).await;
    }
}

/// A sealed frame whose header was changed after sealing →
/// `Goodbye(ChecksumMismatch)`, close.
pub async fn bad_header_seal_gets_checksum_mismatch_then_close<T: TestTransport>() {
    let mut frame = app_mut(RECORD, 1, 100);
    frame.seal();
    frame.header_mut().set_view(99);
    expect_violation::<T>(frame.as_bytes(), GoodbyeReason::ChecksumMismatch).await;
}

/// A sealed frame whose body was changed after sealing →
/// `Goodbye(ChecksumMismatch)`, close.
pub async fn bad_body_seal_gets_checksum_mismatch_then_close<T: TestTransport>() {
    let mut frame = app_mut(RECORD, 1, 100);
    frame.seal();
    frame.body_mut()[50] ^= 0xFF;
    expect_violation::<T>(frame.as_bytes(), GoodbyeReason::ChecksumMismatch).await;
}

/// A replica-handshake command on a client connection →
/// `Goodbye(ProtocolViolation)`, close.
pub async fn replica_command_from_client_gets_protocol_violation<T: TestTransport>() {
    let bytes = header_bytes(|h| h.set_command(Command::ReplicaHello));
    expect_violation::<T>(&bytes, GoodbyeReason::ProtocolViolation).await;
}

/// A frame with `checksum == 0` is accepted on the client plane.
pub async fn unsealed_frames_are_accepted<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, _) = connect::<T>(&node).await;
    let unsealed = app_mut(ECHO, 5, 300).freeze();
    assert!(!unsealed.header().is_sealed());
    client.send(&unsealed).await;
    let reply = client.recv_frame().await;
    assert_eq!(reply.header().request(), 5);
    assert_pattern(reply.body(), 5, 300);
    stop(&node).await;
}

/// good, bad, good in one write: the handler sees only the first.
pub async fn nothing_after_a_bad_frame_reaches_the_handler<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let mut bad = app_mut(RECORD, 2, 10);
    bad.seal();
    bad.body_mut()[0] ^= 1;
    if T::STREAM {
        let mut wire = app(RECORD, 1, 10).as_bytes().to_vec();
        wire.extend_from_slice(bad.as_bytes());
        wire.extend_from_slice(app(RECORD, 3, 10).as_bytes());
        client.send_raw(&wire).await;
    } else {
        client.send(&app(RECORD, 1, 10)).await;
        client.send_raw(bad.as_bytes()).await;
        client.send(&app(RECORD, 3, 10)).await;
    }
    client
        .expect_goodbye_then_close(GoodbyeReason::ChecksumMismatch)
        .await;
    client.close().await;
    let mut delivered = Vec::new();
    loop {
        match node.events.next().await {
            Event::Frame(_, f) => delivered.push(f.header().request()),
            Event::Lost(p, _) if p == peer => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        delivered,
        vec![1],
        "only the frame before the bad one is delivered"
    );
    stop(&node).await;
}

/// `Ping` → `Pong` with the same `request` and `command_area`; the handler
/// never sees it.
pub async fn ping_is_answered_with_pong_and_never_reaches_the_handler<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, _) = connect::<T>(&node).await;
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.header_mut().set_request(0xDEAD_BEEF);
    for (i, b) in ping.header_mut().command_area_mut().iter_mut().enumerate() {
        *b = u8::try_from(i).expect("< 128");
    }
    ping.seal();
    let ping = ping.freeze();
    client.send(&ping).await;
    let answer = client.recv_frame().await;
    assert_eq!(answer.header().command(), Command::Pong);
    assert_eq!(answer.header().request(), 0xDEAD_BEEF);
    assert_eq!(answer.header().command_area(), ping.header().command_area());
    client.send(&app(RECORD, 9, 0)).await;
    let (_, first) = node.events.frame().await;
    assert_eq!(first.header().request(), 9, "the Ping was not delivered");
    stop(&node).await;
}

/// A client's `Goodbye` closes the connection without a Goodbye back.
pub async fn peer_goodbye_closes_the_connection<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    client
        .send(&bus_core::Goodbye::frame(GoodbyeReason::Normal, "bye"))
        .await;
    client.expect_closed().await;
    match node.events.lost(peer).await {
        CloseReason::PeerGoodbye(g) => {
            assert_eq!(g.reason, GoodbyeReason::Normal);
            assert_eq!(g.detail, "bye");
        }
        other => panic!("expected PeerGoodbye, got {other:?}"),
    }
    stop(&node).await;
}

/// A peer that disconnects in the middle of a frame causes no delivery and
/// no panic, and the bus keeps serving others.
pub async fn peer_vanishing_mid_frame_delivers_nothing<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let frame = app(RECORD, 1, 1000);
    if T::STREAM {
        client.send_raw(&frame.as_bytes()[..300]).await;
    }
    drop(client);
    let lost = node.events.lost(peer).await;
    assert!(
        matches!(lost, CloseReason::Io(_) | CloseReason::PeerClosed),
        "{lost:?}"
    );
    let (mut other, _) = connect::<T>(&node).await;
    echo_round_trip(&mut other, 2, 10).await;
    let stats = node.bus.stats();
    assert_eq!(stats.handler_panics + stats.connection_panics, 0);
    let (_, only) = node.events.frame().await;
    assert_eq!(
        only.header().request(),
        2,
        "the partial frame was never delivered"
    );
    stop(&node).await;
}

/// Sends 64 KiB frames to a peer that never reads until `QueueFull`,
/// yielding now and then so the writer fills the socket too; returns how
/// many sends succeeded. Loopback socket buffers hold a few MiB, so
/// 10 000 × 64 KiB is far more than enough.
pub async fn fill_until_queue_full(bus: &Bus, id: bus_core::ClientId) -> usize {
    let big = app(RECORD, 0, 64 << 10);
    for i in 0..10_000 {
        match bus.send_to_client(id, big.clone()) {
            Ok(()) => {}
            Err(SendError::QueueFull) => return i,
            Err(other) => panic!("unexpected {other}"),
        }
        if i % 8 == 7 {
            yield_now().await; // let the writer push into the socket
        }
    }
    panic!("no QueueFull within 10 000 sends");
}

/// Sending to a peer that never reads: `QueueFull` within a bounded number
/// of calls, no call ever waits, and another peer's traffic keeps flowing.
pub async fn slow_peer_gets_queue_full_without_blocking_other_peers<T: TestTransport>() {
    let mut config = test_config();
    config.queue_capacity_frames = 8;
    let node = start::<T>(config).await;
    let (_slow, slow_peer) = connect::<T>(&node).await;
    let (mut fast, _) = connect::<T>(&node).await;
    let slow = client_id(slow_peer);
    let full_after = fill_until_queue_full(&node.bus, slow).await;
    assert!(full_after >= 8, "the queue itself holds 8 frames");
    for request in 1..=20 {
        echo_round_trip(&mut fast, request, 1000).await;
    }
    let conn = node
        .bus
        .client(slow)
        .expect("slow peer still connected (policy Keep)");
    assert!(conn.stats.queue_full >= 1);
    assert!(node.bus.stats().queue_full >= 1);
    stop(&node).await;
}

/// With the `Disconnect` policy a full queue closes the connection with
/// `Goodbye(SlowConsumer)` after the frames already queued.
pub async fn slow_consumer_policy_disconnect_sends_goodbye<T: TestTransport>() {
    let mut config = test_config();
    config.queue_capacity_frames = 4;
    config.slow_consumer = SlowConsumerPolicy::Disconnect;
    config.close_grace = Duration::from_secs(8);
    let node = start::<T>(config).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let id = client_id(peer);
    let mut sent = 0;
    loop {
        match node.bus.send_to_client(id, app(RECORD, sent + 1, 0)) {
            Ok(()) => sent += 1,
            Err(SendError::QueueFull) => break,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(sent, 4);
    assert_eq!(
        node.bus.send_to_client(id, app(RECORD, 99, 0)),
        Err(SendError::NotConnected)
    );
    for request in 1..=sent {
        assert_eq!(client.recv_frame().await.header().request(), request);
    }
    client
        .expect_goodbye_then_close(GoodbyeReason::SlowConsumer)
        .await;
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::SlowConsumer)
    );
    stop(&node).await;
}

/// After a connection died of a panic: another client is still served, the
/// lost callback fired once and the slot is gone.
async fn assert_isolated<C: RawClient>(node: &Node, victim: Peer, other: &mut C) {
    echo_round_trip(other, 5, 100).await;
    assert_eq!(node.events.lost_count(victim), 1);
    assert!(node.bus.client(client_id(victim)).is_none(), "slot evicted");
}

/// A handler panic closes that connection only; the lost callback fires
/// once; other connections keep working.
pub async fn handler_panic_closes_only_its_connection<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut victim, victim_peer) = connect::<T>(&node).await;
    let (mut other, _) = connect::<T>(&node).await;
    victim.send(&app(PANIC_HANDLER, 1, 0)).await;
    victim.expect_closed().await;
    assert_eq!(
        node.events.lost(victim_peer).await,
        CloseReason::HandlerPanicked
    );
    assert_isolated(&node, victim_peer, &mut other).await;
    assert_eq!(node.bus.stats().handler_panics, 1);
    stop(&node).await;
    assert_eq!(
        node.events.lost_count(victim_peer),
        1,
        "still once after shutdown"
    );
}

/// A writer panic closes that connection only; the lost callback fires
/// once; other connections keep working.
pub async fn writer_panic_closes_only_its_connection<T: TestTransport>() {
    let node = start_on(PanicListener(T::listen().await), test_config());
    let (mut victim, victim_peer) = connect::<T>(&node).await;
    let (mut other, _) = connect::<T>(&node).await;
    node.bus
        .send_to_client(client_id(victim_peer), app(PANIC_WRITER_COMMAND, 1, 0))
        .expect("queued");
    assert_eq!(node.events.lost(victim_peer).await, CloseReason::Panicked);
    victim.expect_closed().await;
    assert_isolated(&node, victim_peer, &mut other).await;
    assert_eq!(node.bus.stats().connection_panics, 1);
    stop(&node).await;
    assert_eq!(
        node.events.lost_count(victim_peer),
        1,
        "still once after shutdown"
    );
}

/// Frames queued before shutdown arrive before `Goodbye(ShuttingDown)`,
/// then the connection ends, and no task is left.
pub async fn shutdown_flushes_queued_frames_before_goodbye<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let id = client_id(peer);
    for request in 1..=5 {
        node.bus
            .send_to_client(id, app(RECORD, request, 1000))
            .expect("queued");
    }
    let shutdown = node.bus.shutdown(Duration::from_secs(5));
    let read = async {
        for request in 1..=5 {
            let frame = client.recv_frame().await;
            assert_eq!(frame.header().request(), request);
            assert_pattern(frame.body(), request, 1000);
        }
        client
            .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
            .await;
        client.close().await;
    };
    let (report, ()) = within("shutdown", futures_util::future::join(shutdown, read)).await;
    assert_eq!(report.connections, 1);
    assert_eq!(report.cancelled, 0, "{report:?}");
    assert_eq!(report.tasks_left, 0);
    assert!(
        report.elapsed <= Duration::from_secs(5) + SHUTDOWN_SETTLE,
        "within grace + 500 ms: {report:?}"
    );
    assert_eq!(node.bus.stats().tasks, 0);
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::ShuttingDown)
    );
    assert_eq!(
        node.bus.send_to_client(id, app(RECORD, 6, 0)),
        Err(SendError::ShuttingDown)
    );
    // The listener is closed after shutdown, probed the way its transport
    // would be reached (TCP connect refused; QUIC's UDP port free again).
    T::assert_not_listening(node.addr).await;
}

/// A peer that never reads cannot stretch shutdown past its grace period.
pub async fn shutdown_is_bounded_by_a_peer_that_never_reads<T: TestTransport>() {
    let mut config = test_config();
    config.queue_capacity_frames = 64;
    config.close_grace = Duration::from_secs(30);
    config.close_peer_timeout = Duration::from_secs(30);
    let node = start::<T>(config).await;
    let (_stuck, peer) = connect::<T>(&node).await;
    let id = client_id(peer);
    fill_until_queue_full(&node.bus, id).await;
    let grace = Duration::from_millis(500);
    let started = Instant::now();
    let report = within("shutdown", node.bus.shutdown(grace)).await;
    let took = started.elapsed();
    // The peer's connection cannot finish (close bounds of 30 s), so the
    // whole grace is used, and then at most 500 ms to cancel it.
    assert!(
        report.elapsed >= grace,
        "not before the grace ran out: {report:?}"
    );
    assert!(
        report.elapsed <= grace + SHUTDOWN_SETTLE,
        "within grace + 500 ms: {report:?}"
    );
    assert!(
        took >= grace && took <= grace + SHUTDOWN_SETTLE + WAKE_SLACK,
        "the caller waited {took:?}"
    );
    assert!(report.cancelled >= 1, "{report:?}");
    assert_eq!(report.tasks_left, 0);
    assert_eq!(node.bus.stats().tasks, 0);
    assert_eq!(node.events.lost(peer).await, CloseReason::Cancelled);
    assert_eq!(node.events.lost_count(peer), 1);
}

/// A transport-level connection that never completes its handshake is
/// dropped after `handshake_grace` while another client is served. (For
/// transports with a handshake.)
pub async fn silent_peer_is_dropped_after_handshake_grace<T: TestTransport>() {
    let mut config = test_config();
    config.handshake_grace = Duration::from_millis(300);
    let node = start::<T>(config).await;
    let mut silent = T::connect_silent(node.addr).await;
    let (mut client, _) = connect::<T>(&node).await;
    echo_round_trip(&mut client, 1, 10).await;
    crate::client::drain_tcp(&mut silent).await;
    assert_eq!(node.bus.stats().handshake_failures, 1);
    assert_eq!(node.bus.stats().connections, 1);
    stop(&node).await;
}

/// Spec §7: a connection is usable once its first frame arrives. One that
/// got through the transport handshake (TCP accept, TLS, WebSocket
/// upgrade) but sends no frame within `handshake_grace` gets
/// `Goodbye(IdleTimeout)` and is closed, and the lost callback says so.
pub async fn silent_client_gets_idle_timeout_at_the_first_frame_grace<T: TestTransport>() {
    const GRACE: Duration = Duration::from_millis(400);
    let mut config = test_config();
    config.handshake_grace = GRACE;
    let node = start::<T>(config).await;
    let connecting = Instant::now();
    let (mut client, peer) = connect::<T>(&node).await;
    let goodbye = client.recv_frame().await;
    let after = connecting.elapsed();
    let goodbye = assert_goodbye(&goodbye, GoodbyeReason::IdleTimeout);
    assert!(
        goodbye.detail.contains("handshake_grace"),
        "{}",
        goodbye.detail
    );
    // The grace counts from the accept, which happened after `connecting`.
    assert!(
        after >= GRACE,
        "closed after {after:?}, before the {GRACE:?} grace"
    );
    assert!(
        after <= GRACE + IDLE_SLACK,
        "closed {after:?} after connecting, {GRACE:?} promised"
    );
    client.expect_closed().await;
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::IdleTimeout)
    );
    stop(&node).await;
}

/// A client whose first frame is a `Ping` (what a client with nothing to
/// say sends, spec §7) is usable: it stays past the first-frame grace and
/// keeps working.
pub async fn a_client_that_pings_first_stays_past_the_grace<T: TestTransport>() {
    const GRACE: Duration = Duration::from_millis(300);
    let mut config = test_config();
    config.handshake_grace = GRACE;
    let node = start::<T>(config).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.header_mut().set_request(5);
    ping.seal();
    client.send(&ping.freeze()).await;
    let answer = client.recv_frame().await;
    assert_eq!(answer.header().command(), Command::Pong);
    // Outlive the grace twice over with nothing more sent: the point is that
    // nothing happens in this window, so it is waited out.
    compio::runtime::time::sleep(GRACE * 2).await;
    echo_round_trip(&mut client, 6, 10).await;
    assert!(
        node.bus.client(client_id(peer)).is_some(),
        "still connected"
    );
    stop(&node).await;
}

/// Per-connection metadata: transport, peer address, connected-since,
/// frames and bytes in and out.
pub async fn connection_metadata_is_visible<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let before = std::time::SystemTime::now();
    let (mut client, peer) = connect::<T>(&node).await;
    echo_round_trip(&mut client, 1, 100).await;
    // The writer counts a batch when its write completes, which the client
    // may see before the server's task has run again.
    let id = client_id(peer);
    for _ in 0..1000 {
        if node.bus.client(id).is_some_and(|c| c.stats.frames_out == 1) {
            break;
        }
        yield_now().await;
    }
    let snap = node.bus.client(id).expect("connected");
    assert_eq!(snap.peer, peer);
    assert_eq!(snap.info.transport, T::KIND);
    assert!(snap.info.peer_addr.ip().is_loopback());
    assert_ne!(snap.info.peer_addr.port(), 0);
    assert!(snap.info.connected_since + Duration::from_secs(1) >= before);
    // Plus the Ping/Pong pairs a transport needs to open its stream, 256
    // bytes each way.
    let opening = T::OPENING_FRAMES;
    assert_eq!(snap.stats.frames_in, 1 + opening);
    assert_eq!(snap.stats.bytes_in, 356 + 256 * opening);
    assert_eq!(snap.stats.frames_out, 1 + opening);
    assert_eq!(snap.stats.bytes_out, 356 + 256 * opening);
    assert_eq!(node.bus.connections().len(), 1);
    stop(&node).await;
}

/// A broadcast reaches every client; all queues share one allocation.
pub async fn broadcast_reaches_every_client_with_one_allocation<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect::<T>(&node).await.0);
    }
    let frame = app(RECORD, 77, 5000);
    let report = node.bus.broadcast(&frame);
    assert_eq!(report.queued, 3);
    assert_eq!(
        frame.ref_count(),
        4,
        "three queued handles plus ours, one allocation"
    );
    for client in &mut clients {
        let got = client.recv_frame().await;
        assert_eq!(got.as_bytes(), frame.as_bytes());
    }
    stop(&node).await;
}

/// `close_client` sends `Goodbye(Evicted)` after queued frames, then closes.
pub async fn close_client_sends_goodbye_evicted<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let id = client_id(peer);
    node.bus
        .send_to_client(id, app(RECORD, 1, 10))
        .expect("queued");
    node.bus
        .close_client(id, GoodbyeReason::Evicted, "test eviction")
        .expect("closing");
    assert_eq!(client.recv_frame().await.header().request(), 1);
    let goodbye = client
        .expect_goodbye_then_close(GoodbyeReason::Evicted)
        .await;
    assert_eq!(goodbye.detail, "test eviction");
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::Evicted)
    );
    stop(&node).await;
}

/// With an idle timeout, a silent connection gets `Goodbye(IdleTimeout)`,
/// no sooner than the timeout after it was registered and not much later.
pub async fn idle_timeout_closes_silent_connection<T: TestTransport>() {
    const IDLE: Duration = Duration::from_millis(300);
    let mut config = test_config();
    config.idle_timeout = Some(IDLE);
    let node = start::<T>(config).await;
    let connecting = Instant::now();
    let (mut client, peer) = connect::<T>(&node).await;
    // Registered between `connecting` and now: the timer started in there.
    let registered = Instant::now();
    let goodbye = client.recv_frame().await;
    let (since_connecting, since_registered) = (connecting.elapsed(), registered.elapsed());
    assert_goodbye(&goodbye, GoodbyeReason::IdleTimeout);
    assert!(
        since_connecting >= IDLE,
        "closed after {since_connecting:?}, before the {IDLE:?} idle timeout"
    );
    assert!(
        since_registered <= IDLE + IDLE_SLACK,
        "closed {since_registered:?} after registration, {IDLE:?} promised"
    );
    client.expect_closed().await;
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::IdleTimeout)
    );
    stop(&node).await;
}

/// A frame written one byte at a time is delivered whole (stream
/// transports).
pub async fn frame_dribbled_one_byte_at_a_time_is_delivered_whole<T: TestTransport>() {
    assert!(T::STREAM, "only for stream transports");
    let node = start::<T>(test_config()).await;
    let (mut client, _) = connect::<T>(&node).await;
    let frame = app(ECHO, 3, 700);
    for byte in frame.as_bytes() {
        client.send_raw(std::slice::from_ref(byte)).await;
    }
    let reply = client.recv_frame().await;
    assert_eq!(reply.header().request(), 3);
    assert_pattern(reply.body(), 3, 700);
    let (_, seen) = node.events.frame().await;
    assert_eq!(seen.body(), frame.body());
    stop(&node).await;
}

/// Traffic resets the idle timer: a client that sends a frame more often
/// than `idle_timeout` stays connected for several timeouts, and once it
/// falls silent gets `Goodbye(IdleTimeout)` no sooner than the timeout
/// after its last frame, and not much later.
pub async fn traffic_resets_the_idle_timer<T: TestTransport>() {
    const IDLE: Duration = Duration::from_millis(600);
    const EVERY: Duration = Duration::from_millis(100);
    const ROUNDS: u64 = 18; // three idle periods of traffic
    let mut config = test_config();
    config.idle_timeout = Some(IDLE);
    let node = start::<T>(config).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let started = Instant::now();
    let mut last_sent = Instant::now();
    for round in 1..=ROUNDS {
        // Bus frames and application frames both count as traffic.
        last_sent = Instant::now();
        if round % 2 == 0 {
            echo_round_trip(&mut client, round, 10).await;
        } else {
            let mut request = FrameMut::new(Command::Ping, 0);
            request.header_mut().set_request(round);
            client.send(&request.freeze()).await;
            let answer = client.recv_frame().await;
            assert_eq!(answer.header().command(), Command::Pong, "round {round}");
            assert_eq!(answer.header().request(), round);
        }
        compio::runtime::time::sleep(EVERY).await;
    }
    assert!(
        started.elapsed() >= 3 * IDLE,
        "connected for three idle periods while talking"
    );
    let goodbye = client.recv_frame().await;
    let silent_for = last_sent.elapsed();
    assert_goodbye(&goodbye, GoodbyeReason::IdleTimeout);
    assert!(
        silent_for >= IDLE,
        "closed {silent_for:?} after the last frame, before the {IDLE:?} timeout"
    );
    assert!(
        silent_for <= IDLE + EVERY + IDLE_SLACK,
        "closed {silent_for:?} after the last frame, {IDLE:?} promised"
    );
    client.expect_closed().await;
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::IdleTimeout)
    );
    stop(&node).await;
}

/// After shutdown nothing of the bus is left, seen from outside the
/// library: the sockets it held (its listener and each connection's socket,
/// found by port and inode in `/proc`) are closed, every connection and both
/// its halves were dropped, no queue still holds a frame, the listener no
/// longer answers, and the handler dies with the last `Bus` handle.
pub async fn shutdown_releases_every_socket_connection_and_the_handler<T: TestTransport>() {
    const CLIENTS: usize = 3;
    let connections = Liveness::default();
    let listener = TrackedListener::new(T::listen().await, connections.clone());
    let node = start_on(listener, test_config());
    let mut clients = Vec::new();
    for request in (1..).take(CLIENTS) {
        let (mut client, peer) = connect::<T>(&node).await;
        echo_round_trip(&mut client, request, 10).await;
        assert_eq!(node.events.frame().await.0, peer);
        clients.push(client);
    }
    let held = sockets_on_local_port(node.addr.port());
    let expected = 1 + if T::SOCKET_PER_CONNECTION { CLIENTS } else { 0 };
    assert_eq!(
        held.len(),
        expected,
        "the bus's own sockets are found (listener, and one per connection on TCP): {held:?}"
    );
    assert_eq!(connections.issued(), CLIENTS);
    assert_eq!(connections.alive(), CLIENTS);
    let frame = app(RECORD, 99, 1000);
    assert_eq!(node.bus.broadcast(&frame).queued, CLIENTS);

    let shutdown = node.bus.shutdown(Duration::from_secs(5));
    let close = async {
        for client in &mut clients {
            assert_eq!(client.recv_frame().await.as_bytes(), frame.as_bytes());
            client
                .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
                .await;
            client.close().await;
        }
    };
    let (report, ()) = within("shutdown", futures_util::future::join(shutdown, close)).await;
    assert_eq!(report.cancelled, 0, "{report:?}");
    assert_eq!(report.tasks_left, 0, "{report:?}");
    drop(clients);

    assert_eq!(
        connections.alive(),
        0,
        "every connection and both of its halves were dropped"
    );
    assert_eq!(frame.ref_count(), 1, "no queue still holds the broadcast");
    // A socket's descriptor is closed by the runtime once its last handle
    // is dropped, on one of its next turns.
    crate::eventually("the bus's sockets to be closed", || {
        open_socket_inodes().is_disjoint(&held)
    })
    .await;
    T::assert_not_listening(node.addr).await;
    let Node { bus, events, .. } = node;
    assert!(!events.handler_dropped(), "the bus still holds its handler");
    drop(bus);
    assert!(
        events.handler_dropped(),
        "the handler died with the last Bus handle: no task or cycle keeps it"
    );
}

/// A bus with a recording handler that serves no listener.
///
/// # Panics
/// If the bus refuses `config`.
pub fn recording_bus(config: BusConfig) -> (Bus, Events) {
    let (recorder, events) = Recorder::new();
    (Bus::new(config, recorder).expect("valid config"), events)
}

/// Accepts one connection of transport `T` from `listener` and hands it to
/// `bus` as replica `replica`; returns the client end, past its handshake.
///
/// # Panics
/// If accepting, installing or connecting fails.
pub async fn connect_replica<T: TestTransport>(
    bus: &Bus,
    listener: &mut T::Listener,
    replica: u8,
) -> T::Client {
    let addr = listener.local_addr().expect("addr");
    // The client's handshake needs the server's, which runs on the bus once
    // the connection is installed: the client runs on its own task.
    let client = compio::runtime::spawn(T::connect(addr));
    let connection = within("accept", listener.accept()).await.expect("accept");
    bus.install_replica(connection, replica)
        .expect("install_replica");
    within("replica client", client)
        .await
        .expect("the client task")
}

/// `install_replica` serves an authenticated connection as a replica: the
/// handler sees `Peer::Replica`, its frames arrive unstamped (spec §4),
/// `send_to_replica` reaches it and only it, broadcasts skip it, and
/// shutdown says `Goodbye(ShuttingDown)` to it too.
pub async fn install_replica_serves_a_replica_and_send_to_replica_reaches_it<T: TestTransport>() {
    let (bus, events) = recording_bus(test_config());
    let mut listener = T::listen().await;
    let mut replica = connect_replica::<T>(&bus, &mut listener, 7).await;
    let (peer, info) = events.connected_info().await;
    assert_eq!(peer, Peer::Replica(7));
    assert_eq!(info.transport, T::KIND);

    let mut sent = app_mut(RECORD, 1, 100);
    sent.header_mut().set_client(0xABCD);
    sent.seal();
    let sent = sent.freeze();
    replica.send(&sent).await;
    let (from, seen) = events.frame().await;
    assert_eq!(from, Peer::Replica(7));
    assert_eq!(
        seen.as_bytes(),
        sent.as_bytes(),
        "a replica's frame is delivered as sent: its client field is not stamped"
    );

    bus.send_to_replica(7, app(RECORD, 2, 300)).expect("queued");
    let got = replica.recv_frame().await;
    assert_eq!(got.header().request(), 2);
    assert_pattern(got.body(), 2, 300);
    assert_eq!(
        bus.send_to_replica(8, app(RECORD, 3, 0)),
        Err(SendError::NotConnected)
    );
    let listed = bus.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].peer, Peer::Replica(7));
    assert_eq!(bus.stats().connections, 1);
    assert_eq!(bus.stats().connections_total, 1);
    assert_eq!(
        bus.broadcast(&app(RECORD, 4, 0)).queued,
        0,
        "a broadcast goes to clients only"
    );

    let shutdown = bus.shutdown(Duration::from_secs(5));
    let read = async {
        replica
            .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
            .await;
        replica.close().await;
    };
    let (report, ()) = within("shutdown", futures_util::future::join(shutdown, read)).await;
    assert_eq!(report.connections, 1);
    assert_eq!(report.cancelled, 0, "{report:?}");
    assert_eq!(
        events.lost(Peer::Replica(7)).await,
        CloseReason::Closed(GoodbyeReason::ShuttingDown)
    );
    assert_eq!(
        bus.send_to_replica(7, app(RECORD, 5, 0)),
        Err(SendError::ShuttingDown)
    );
}

/// Replica frames must be sealed by default (`require_sealed_replicas`):
/// an unsealed one gets `Goodbye(ChecksumMismatch)` (spec §4) and reaches
/// nobody.
pub async fn unsealed_frame_from_a_replica_gets_checksum_mismatch<T: TestTransport>() {
    let config = test_config();
    assert!(config.require_sealed_replicas, "the default");
    let (bus, events) = recording_bus(config);
    let mut listener = T::listen().await;
    let mut replica = connect_replica::<T>(&bus, &mut listener, 3).await;
    assert_eq!(events.connected().await, Peer::Replica(3));
    let unsealed = app_mut(RECORD, 1, 10).freeze();
    assert!(!unsealed.header().is_sealed());
    replica.send(&unsealed).await;
    replica
        .expect_goodbye_then_close(GoodbyeReason::ChecksumMismatch)
        .await;
    replica.close().await;
    assert_eq!(
        events.lost(Peer::Replica(3)).await,
        CloseReason::ProtocolViolation(GoodbyeReason::ChecksumMismatch)
    );
    assert!(
        events
            .drain_now()
            .iter()
            .all(|e| !matches!(e, Event::Frame(..))),
        "nothing reached the handler"
    );
    let report = within("shutdown", bus.shutdown(Duration::from_secs(5))).await;
    assert_eq!(report.tasks_left, 0);
}

/// A second connection for the same replica id replaces the first, which
/// is closed with `Goodbye(Normal, "replaced")` (spec §4); sends go to the
/// newer one.
pub async fn a_second_connection_for_a_replica_replaces_the_first<T: TestTransport>() {
    let (bus, events) = recording_bus(test_config());
    let mut listener = T::listen().await;
    let mut first = connect_replica::<T>(&bus, &mut listener, 5).await;
    assert_eq!(events.connected().await, Peer::Replica(5));
    let mut second = connect_replica::<T>(&bus, &mut listener, 5).await;
    assert_eq!(events.connected().await, Peer::Replica(5));
    let goodbye = first.expect_goodbye_then_close(GoodbyeReason::Normal).await;
    assert_eq!(goodbye.detail, "replaced");
    first.close().await;
    assert_eq!(
        events.lost(Peer::Replica(5)).await,
        CloseReason::Closed(GoodbyeReason::Normal)
    );
    assert_eq!(bus.connections().len(), 1, "only the newer one is left");
    bus.send_to_replica(5, app(RECORD, 8, 20)).expect("queued");
    let got = second.recv_frame().await;
    assert_eq!(got.header().request(), 8, "the newer connection gets it");
    let shutdown = bus.shutdown(Duration::from_secs(5));
    let read = async {
        second
            .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
            .await;
        second.close().await;
    };
    let (report, ()) = within("shutdown", futures_util::future::join(shutdown, read)).await;
    assert_eq!(report.cancelled, 0, "{report:?}");
}

/// A forwarder that records what it was asked to forward.
#[derive(Debug, Default)]
struct CountingForwarder {
    broadcasts: Cell<usize>,
    sends: Cell<usize>,
    last_broadcast: std::cell::RefCell<Option<Frame>>,
}

/// What [`CountingForwarder::broadcast`] reports: three other shards.
const OTHER_SHARDS: usize = 3;

impl bus_core::Forwarder for CountingForwarder {
    fn send_to_client(&self, _id: ClientId, _frame: Frame) -> Result<(), SendError> {
        self.sends.set(self.sends.get() + 1);
        Err(SendError::InboxFull)
    }

    fn broadcast(&self, frame: &Frame) -> usize {
        self.broadcasts.set(self.broadcasts.get() + 1);
        *self.last_broadcast.borrow_mut() = Some(frame.clone());
        OTHER_SHARDS
    }
}

/// `broadcast_local` queues to this shard's clients only and never asks
/// the forwarder; `broadcast` does both, passing the same allocation on; a
/// send to another shard's id goes to the forwarder, whose error the
/// caller gets.
pub async fn broadcast_local_stays_on_this_shard_and_broadcast_forwards<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let forwarder = Rc::new(CountingForwarder::default());
    node.bus.set_forwarder(forwarder.clone());
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(connect::<T>(&node).await.0);
    }

    let local = app(RECORD, 1, 100);
    let report = node.bus.broadcast_local(&local);
    assert_eq!(
        (report.queued, report.queue_full, report.shards_forwarded),
        (2, 0, 0)
    );
    assert_eq!(
        forwarder.broadcasts.get(),
        0,
        "broadcast_local never forwards"
    );
    assert_eq!(local.ref_count(), 3, "two queues share our allocation");
    for client in &mut clients {
        assert_eq!(client.recv_frame().await.as_bytes(), local.as_bytes());
    }

    let everywhere = app(RECORD, 2, 100);
    let report = node.bus.broadcast(&everywhere);
    assert_eq!(
        (report.queued, report.shards_forwarded),
        (2, OTHER_SHARDS),
        "{report:?}"
    );
    assert_eq!(forwarder.broadcasts.get(), 1);
    let passed_on = forwarder
        .last_broadcast
        .borrow_mut()
        .take()
        .expect("forwarded");
    assert!(
        Frame::ptr_eq(&passed_on, &everywhere),
        "the forwarder got the same allocation"
    );
    for client in &mut clients {
        assert_eq!(client.recv_frame().await.as_bytes(), everywhere.as_bytes());
    }

    let foreign = ClientId::from_raw((5_u128 << 112) | 1);
    assert_eq!(
        node.bus.send_to_client(foreign, app(RECORD, 3, 0)),
        Err(SendError::InboxFull),
        "the forwarder's answer"
    );
    assert_eq!(forwarder.sends.get(), 1);
    drop(clients);
    stop(&node).await;
    let after = node.bus.broadcast_local(&app(RECORD, 4, 0));
    assert_eq!(after.queued, 0, "nothing is queued once shut down");
    assert_eq!(forwarder.broadcasts.get(), 1);
}

/// A transport reader that claims cancel safety loses nothing when many of
/// its reads are dropped while pending: the client sends each frame in
/// three pieces with pauses (for WebSocket: pieces of the WebSocket frames,
/// some messages in two fragments), the reader's every call is cut off
/// after 300 µs, and every frame still arrives whole, once, in order, then
/// a clean end.
pub async fn read_cancelled_while_pending_loses_nothing<T: TestTransport>() {
    const FRAMES: u64 = 150;
    let body_len = |request: u64| usize::try_from(request * 37 % 3000).expect("fits");
    let mut listener = T::listen().await;
    let addr = listener.local_addr().expect("addr");
    let (done, verdict) = async_channel::bounded::<()>(1);
    let sender = compio::runtime::spawn(async move {
        let mut client = T::connect_unanswered(addr).await;
        for request in 1..=FRAMES {
            let frame = app(ECHO, request, body_len(request));
            client
                .send_in_pieces(&frame, Duration::from_millis(1))
                .await;
        }
        client.close().await;
        // Hold the connection until the reader has seen the end: a QUIC
        // connection dropped early takes unread stream data with it.
        let _ = within("the reader's verdict", verdict.recv()).await;
    });
    let incoming = within("accept", listener.accept()).await.expect("accept");
    let limits = DecodeLimits {
        max_message_size_bytes: 1 << 20,
        require_sealed: false,
    };
    let (mut reader, _writer, _) = within(
        "handshake",
        Connection::establish(incoming, ReadSettings::new(limits).read_buffer(4096)),
    )
    .await
    .expect("handshake");
    let mut cancelled = 0u32;
    let all = async {
        for request in 1..=FRAMES {
            let frame = loop {
                let read = reader.read_frame();
                match compio::runtime::time::timeout(Duration::from_micros(300), read).await {
                    Ok(frame) => break frame.expect("a frame"),
                    Err(_) => cancelled += 1,
                }
            };
            assert_eq!(frame.header().request(), request, "in order, none lost");
            assert_pattern(frame.body(), request, body_len(request));
        }
        let end = reader.read_frame().await;
        assert!(matches!(end, Err(Error::Closed)), "clean end: {end:?}");
    };
    within("every frame", all).await;
    done.send(()).await.expect("the sender waits");
    within("sender", sender).await.expect("sender ok");
    assert!(
        cancelled > 10,
        "reads were cancelled mid-flight ({cancelled})"
    );
}
