//! The connection core driven directly: no socket, no runtime, no clock
//! (every instant is made up), so each rule is checked in isolation.

use std::time::{Duration, Instant};

use super::*;
use crate::{
    config::SlowConsumerPolicy,
    framing::{DecodeLimits, Decoder},
    goodbye::Goodbye,
    header::Header,
    limits::HEADER_SIZE,
    requests::{Issuer, SERVER_REQUEST_BIT},
};

const GRACE: Duration = Duration::from_secs(5);
const PEER: Duration = Duration::from_secs(2);

/// A millisecond short of `bound`.
fn just_under(bound: Duration) -> Duration {
    bound.saturating_sub(Duration::from_millis(1))
}
const CLIENT_ID: u128 = 0x0001_0000_0000_0000_0000_0000_0000_002A;

fn config() -> CoreConfig {
    CoreConfig {
        queue: QueueBounds {
            frames: 8,
            bytes: 64 << 10,
        },
        slow_consumer: SlowConsumerPolicy::Keep,
        close_grace: GRACE,
        close_peer_timeout: PEER,
        idle_timeout: None,
        keepalive: None,
        first_frame_grace: None,
        stamp_client: Some(CLIENT_ID),
        issuer: Issuer::Server,
        max_outstanding_requests: 4,
    }
}

fn app(command: u8, request: u64, body: &[u8]) -> Frame {
    let mut f = FrameMut::with_body(Command::Application(command), body);
    f.header_mut().set_request(request);
    f.seal();
    f.freeze()
}

fn ping(request: u64) -> Frame {
    let mut f = FrameMut::new(Command::Ping, 0);
    f.header_mut().set_request(request);
    f.header_mut().command_area_mut()[..4].copy_from_slice(b"abcd");
    f.seal();
    f.freeze()
}

/// How the writer stopped: it closed our side (with the Goodbye reason it
/// sent, if any), or it has nothing to do for now.
#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    Closed(Option<GoodbyeReason>),
    Idle,
}

/// Everything the writer does until it has nothing to do: each batch's
/// frames, then how it stopped.
fn drain_writer(core: &mut ConnCore) -> (Vec<Frame>, Stopped) {
    let mut written = Vec::new();
    loop {
        let mut batch = Vec::new();
        match core.next_write(&mut batch, 4) {
            WriteStep::Write { .. } => {
                written.append(&mut batch);
                core.written();
            }
            WriteStep::CloseOurSide(reason) => return (written, Stopped::Closed(reason)),
            WriteStep::Wait | WriteStep::Finished => return (written, Stopped::Idle),
        }
    }
}

fn goodbye_of(frame: &Frame) -> Goodbye {
    assert_eq!(frame.header().command(), Command::Goodbye, "{frame:?}");
    assert!(frame.header().validate(1 << 20).is_ok(), "a sealed Goodbye");
    Goodbye::decode(frame.header().command_area())
}

#[test]
fn an_application_frame_is_delivered_stamped_and_still_verifies() {
    let mut core = ConnCore::new(config(), Instant::now());
    let Received::Deliver(frame) = core.receive(app(16, 7, b"hello")) else {
        panic!("delivered")
    };
    assert_eq!(frame.header().client(), CLIENT_ID);
    assert_eq!(frame.header().request(), 7);
    assert_eq!(
        frame.header().validate(1 << 20),
        Ok(()),
        "re-sealed after stamping"
    );
    assert_eq!(frame.to_mut().verify_body(), Ok(()));
}

#[test]
fn ping_is_answered_with_a_pong_carrying_its_request_and_command_area() {
    let mut core = ConnCore::new(config(), Instant::now());
    assert!(matches!(core.receive(ping(99)), Received::Consumed));
    let (written, closed) = drain_writer(&mut core);
    assert_eq!(closed, Stopped::Idle);
    assert_eq!(written.len(), 1);
    let pong = written[0].header();
    assert_eq!(pong.command(), Command::Pong);
    assert_eq!(pong.request(), 99);
    assert_eq!(&pong.command_area()[..4], b"abcd");
    assert!(pong.is_sealed());
    // A Pong from the peer is consumed, never delivered.
    let mut theirs = FrameMut::new(Command::Pong, 0);
    theirs.seal();
    assert!(matches!(core.receive(theirs.freeze()), Received::Consumed));
}

/// Every receiver rule of spec §1, each as the decoder reports it, ends
/// the same way: what was queued, then `Goodbye(reason)`, then our side
/// closes; the rest of the input is discarded; the cause names it.
#[test]
fn every_receiver_rule_ends_with_queued_frames_then_its_goodbye() {
    let limits = DecodeLimits {
        max_message_size_bytes: 4096,
        require_sealed: true,
    };
    let bad: Vec<(Vec<u8>, GoodbyeReason)> = vec![
        (
            with_header(|h| h.set_size(8192)),
            GoodbyeReason::FrameTooLarge,
        ),
        (
            with_header(|h| h.set_size(255)),
            GoodbyeReason::MalformedFrame,
        ),
        (
            with_header(|h| h.set_protocol(2)),
            GoodbyeReason::MalformedFrame,
        ),
        (
            with_header(|h| h.set_command(Command::Invalid)),
            GoodbyeReason::MalformedFrame,
        ),
        (
            with_header(|h| h.set_command(Command::from_u8(9))),
            GoodbyeReason::MalformedFrame,
        ),
        (tampered_header(), GoodbyeReason::ChecksumMismatch),
        (tampered_body(), GoodbyeReason::ChecksumMismatch),
        (unsealed(), GoodbyeReason::ChecksumMismatch),
    ];
    for (bytes, reason) in bad {
        let err = Decoder::new(limits)
            .decode(&mut &bytes[..])
            .expect_err("the decoder refuses it");
        assert_eq!(err.goodbye_reason(), reason, "{err}");
        let now = Instant::now();
        let mut core = ConnCore::new(config(), now);
        core.enqueue(app(17, 1, b"queued before")).unwrap();
        core.read_failed(err, now);
        assert_eq!(core.read_side(), ReadSide::Discard);
        assert!(!core.is_open());
        assert_eq!(core.enqueue(app(17, 2, b"")), Err(SendError::NotConnected));
        let (written, closed) = drain_writer(&mut core);
        assert_eq!(written.len(), 2, "{err}");
        assert_eq!(written[0].header().request(), 1, "queued frames first");
        assert_eq!(goodbye_of(&written[1]).reason, reason);
        assert_eq!(goodbye_of(&written[1]).detail, err.to_string());
        assert_eq!(closed, Stopped::Closed(Some(reason)));
        assert_eq!(
            core.close_reason(),
            Some(CloseReason::ProtocolViolation(reason))
        );
    }
}

fn with_header(change: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut frame = FrameMut::with_body(Command::Application(16), b"body");
    change(frame.header_mut());
    frame.as_bytes().to_vec()
}

fn tampered_header() -> Vec<u8> {
    let mut bytes = app(16, 1, b"body").as_bytes().to_vec();
    bytes[80] ^= 1;
    bytes
}

fn tampered_body() -> Vec<u8> {
    let mut bytes = app(16, 1, b"body").as_bytes().to_vec();
    bytes[HEADER_SIZE] ^= 1;
    bytes
}

fn unsealed() -> Vec<u8> {
    FrameMut::with_body(Command::Application(16), b"body")
        .as_bytes()
        .to_vec()
}

#[test]
fn reserved_and_replica_commands_from_a_client_are_violations() {
    let mut core = ConnCore::new(config(), Instant::now());
    let mut hello = FrameMut::new(Command::ReplicaHello, 0);
    hello.seal();
    assert!(matches!(core.receive(hello.freeze()), Received::Stop));
    core.arm_close_bound(Instant::now());
    let (written, closed) = drain_writer(&mut core);
    assert_eq!(
        goodbye_of(&written[0]).reason,
        GoodbyeReason::ProtocolViolation
    );
    assert_eq!(
        closed,
        Stopped::Closed(Some(GoodbyeReason::ProtocolViolation))
    );
}

#[test]
fn a_peer_goodbye_stops_sending_drops_the_queue_and_sends_no_goodbye_back() {
    let now = Instant::now();
    let mut core = ConnCore::new(config(), now);
    core.enqueue(app(17, 1, b"never written")).unwrap();
    let goodbye = Goodbye::frame(GoodbyeReason::ShuttingDown, "bye");
    assert!(matches!(core.receive(goodbye), Received::Stop));
    core.arm_close_bound(now);
    assert_eq!(core.read_side(), ReadSide::Discard);
    let (written, closed) = drain_writer(&mut core);
    assert!(
        written.is_empty(),
        "a peer that said Goodbye reads nothing more"
    );
    assert_eq!(closed, Stopped::Closed(None));
    assert_eq!(core.take_dropped(), 1);
    let Some(CloseReason::PeerGoodbye(said)) = core.close_reason() else {
        panic!("{:?}", core.close_reason())
    };
    assert_eq!(said.reason, GoodbyeReason::ShuttingDown);
    assert_eq!(said.detail, "bye");
}

#[test]
fn closing_writes_the_queue_then_the_goodbye_then_waits_for_the_peer() {
    let t0 = Instant::now();
    let mut core = ConnCore::new(config(), t0);
    for request in 1..=3 {
        core.enqueue(app(17, request, b"reply")).unwrap();
    }
    let reason = GoodbyeReason::Evicted;
    assert!(core.close(reason, "go", CloseReason::Closed(reason), t0));
    assert!(!core.close(GoodbyeReason::Normal, "again", CloseReason::PeerClosed, t0));
    assert_eq!(core.next_deadline(), Some(t0 + GRACE));
    let (written, closed) = drain_writer(&mut core);
    let requests: Vec<u64> = written.iter().map(|f| f.header().request()).collect();
    assert_eq!(requests, [1, 2, 3, 0]);
    assert_eq!(goodbye_of(&written[3]).reason, GoodbyeReason::Evicted);
    assert_eq!(closed, Stopped::Closed(Some(GoodbyeReason::Evicted)));
    let t1 = t0 + Duration::from_millis(10);
    core.our_side_closed(t1);
    assert!(!core.is_done(), "waits for the peer's end of stream");
    assert_eq!(core.next_deadline(), Some(t1 + PEER));
    core.read_ended(t1 + Duration::from_millis(5));
    assert!(core.is_done());
    assert_eq!(
        core.close_reason(),
        Some(CloseReason::Closed(GoodbyeReason::Evicted)),
        "the first cause"
    );
}

#[test]
fn close_grace_bounds_a_close_whose_writes_never_finish() {
    let t0 = Instant::now();
    let mut core = ConnCore::new(config(), t0);
    core.enqueue(app(17, 1, b"stuck")).unwrap();
    core.close(
        GoodbyeReason::ShuttingDown,
        "",
        CloseReason::Closed(GoodbyeReason::ShuttingDown),
        t0,
    );
    let mut batch = Vec::new();
    assert!(matches!(
        core.next_write(&mut batch, 4),
        WriteStep::Write { .. }
    ));
    // The write never completes; time passes.
    core.tick(t0 + just_under(GRACE));
    assert!(!core.is_done());
    core.tick(t0 + GRACE);
    assert!(core.is_done(), "abandoned at close_grace");
}

#[test]
fn close_peer_timeout_bounds_a_peer_that_never_closes() {
    let t0 = Instant::now();
    let mut core = ConnCore::new(config(), t0);
    core.close(
        GoodbyeReason::Normal,
        "",
        CloseReason::Closed(GoodbyeReason::Normal),
        t0,
    );
    let (_, closed) = drain_writer(&mut core);
    assert!(matches!(closed, Stopped::Closed(_)));
    core.our_side_closed(t0);
    core.tick(t0 + just_under(PEER));
    assert!(!core.is_done());
    core.tick(t0 + PEER);
    assert!(core.is_done());
}

#[test]
fn end_of_stream_flushes_what_is_queued_without_a_goodbye() {
    let t0 = Instant::now();
    let mut core = ConnCore::new(config(), t0);
    core.enqueue(app(17, 5, b"late reply")).unwrap();
    core.read_ended(t0);
    assert_eq!(core.read_side(), ReadSide::Ended);
    assert!(!core.wants_input());
    let (written, closed) = drain_writer(&mut core);
    assert_eq!(written.len(), 1, "a half-closed peer may still read");
    assert_eq!(closed, Stopped::Closed(None));
    core.our_side_closed(t0);
    assert!(core.is_done(), "the peer already closed its side");
    assert_eq!(core.close_reason(), Some(CloseReason::PeerClosed));
}

#[test]
fn idle_timeout_closes_a_silent_connection_and_traffic_resets_it() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(3);
    let mut core = ConnCore::new(
        CoreConfig {
            idle_timeout: Some(idle),
            ..config()
        },
        t0,
    );
    assert_eq!(core.next_deadline(), Some(t0 + idle));
    assert!(core.tracks_arrivals());
    let t1 = t0 + Duration::from_secs(1);
    core.frame_arrived_at(t1);
    let _ = core.receive(app(16, 1, b""));
    core.tick(t0 + idle);
    assert!(core.is_open(), "a frame arrived within the timeout");
    assert_eq!(
        core.next_deadline(),
        Some(t1 + idle),
        "one timeout after the last frame"
    );
    core.tick(t1 + just_under(idle));
    assert!(core.is_open());
    core.tick(t1 + idle);
    assert!(!core.is_open());
    let (written, _) = drain_writer(&mut core);
    assert_eq!(goodbye_of(&written[0]).reason, GoodbyeReason::IdleTimeout);
}

#[test]
fn a_connection_that_sends_no_first_frame_within_the_grace_is_closed() {
    let t0 = Instant::now();
    let grace = Duration::from_secs(10);
    let silent_config = CoreConfig {
        first_frame_grace: Some(grace),
        ..config()
    };
    let mut silent = ConnCore::new(silent_config.clone(), t0);
    silent.tick(t0 + just_under(grace));
    assert!(silent.is_open());
    silent.tick(t0 + grace);
    let (written, _) = drain_writer(&mut silent);
    let goodbye = goodbye_of(&written[0]);
    assert_eq!(goodbye.reason, GoodbyeReason::IdleTimeout);
    assert!(
        goodbye.detail.contains("handshake_grace"),
        "{}",
        goodbye.detail
    );
    // One that pinged first stays, and the bound is gone.
    let mut pinged = ConnCore::new(silent_config, t0);
    let _ = pinged.receive(ping(1));
    assert!(pinged.take_timer_moved(), "the driver re-arms its timer");
    assert_eq!(pinged.next_deadline(), None);
    pinged.tick(t0 + grace * 2);
    assert!(pinged.is_open());
}

#[test]
fn a_full_queue_refuses_sends_and_pauses_the_connections_own_input() {
    let mut core = ConnCore::new(config(), Instant::now());
    for request in 0..8 {
        core.enqueue(app(17, request, b"")).unwrap();
    }
    assert_eq!(core.enqueue(app(17, 9, b"")), Err(SendError::QueueFull));
    assert!(core.is_open(), "policy Keep");
    assert!(!core.wants_input(), "read backpressure");
    let mut batch = Vec::new();
    assert!(matches!(
        core.next_write(&mut batch, 8),
        WriteStep::Write { .. }
    ));
    core.written();
    assert!(core.wants_input(), "drained: input flows again");
}

#[test]
fn the_disconnect_policy_closes_a_slow_consumer_with_its_goodbye() {
    let t0 = Instant::now();
    let mut core = ConnCore::new(
        CoreConfig {
            slow_consumer: SlowConsumerPolicy::Disconnect,
            ..config()
        },
        t0,
    );
    for request in 0..8 {
        core.enqueue(app(17, request, b"")).unwrap();
    }
    assert_eq!(core.enqueue(app(17, 9, b"")), Err(SendError::QueueFull));
    assert!(!core.is_open());
    core.arm_close_bound(t0);
    assert_eq!(core.next_deadline(), Some(t0 + GRACE));
    let (written, closed) = drain_writer(&mut core);
    assert_eq!(written.len(), 9, "the queue, then the Goodbye");
    assert_eq!(goodbye_of(&written[8]).reason, GoodbyeReason::SlowConsumer);
    assert_eq!(closed, Stopped::Closed(Some(GoodbyeReason::SlowConsumer)));
}

#[test]
fn the_queue_is_bounded_in_bytes_too() {
    let mut core = ConnCore::new(
        CoreConfig {
            queue: QueueBounds {
                frames: 100,
                bytes: 3000,
            },
            ..config()
        },
        Instant::now(),
    );
    core.enqueue(app(17, 1, &[0; 2000])).unwrap();
    assert_eq!(
        core.enqueue(app(17, 2, &[0; 1000])),
        Err(SendError::QueueFull)
    );
    core.enqueue(app(17, 3, &[0; 100])).unwrap();
    assert_eq!(core.queue_bytes(), 2256 + 356);
    // The batch being written still counts until it is written.
    let mut batch = Vec::new();
    assert!(matches!(
        core.next_write(&mut batch, 8),
        WriteStep::Write { .. }
    ));
    assert_eq!(core.queue_depth(), 0);
    assert_eq!(core.queue_bytes(), 2256 + 356);
    assert_eq!(
        core.enqueue(app(17, 4, &[0; 1000])),
        Err(SendError::QueueFull)
    );
    core.written();
    core.enqueue(app(17, 4, &[0; 1000])).unwrap();
}

#[test]
fn keepalive_pings_only_when_the_peer_was_quiet() {
    let t0 = Instant::now();
    let every = Duration::from_secs(1);
    let mut core = ConnCore::new(
        CoreConfig {
            keepalive: Some(every),
            stamp_client: None,
            ..config()
        },
        t0,
    );
    let _ = core.receive(app(16, 1, b""));
    core.tick(t0 + every);
    assert!(drain_writer(&mut core).0.is_empty(), "heard from the peer");
    core.tick(t0 + every * 2);
    let (written, _) = drain_writer(&mut core);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].header().command(), Command::Ping);
}

#[test]
fn outstanding_requests_fail_at_once_when_closing_starts_and_replies_complete_once() {
    let t0 = Instant::now();
    let mut core = ConnCore::new(config(), t0);
    let (id, _slot) = core.issue_request().unwrap();
    assert_eq!(id & SERVER_REQUEST_BIT, SERVER_REQUEST_BIT);
    assert!(matches!(
        core.receive(app(24, id, b"answer")),
        Received::Consumed
    ));
    assert!(
        matches!(core.receive(app(24, id, b"again")), Received::Consumed),
        "late"
    );
    assert_eq!(core.late_replies(), 1);
    let (_, _pending) = core.issue_request().unwrap();
    assert_eq!(core.requests_outstanding(), 1);
    core.read_ended(t0);
    assert_eq!(
        core.requests_outstanding(),
        0,
        "failed when closing started"
    );
    assert!(core.issue_request().is_none());
}

#[test]
fn the_loss_is_reported_exactly_once_with_how_the_task_ended() {
    let mut completed = ConnCore::new(config(), Instant::now());
    completed.abort(CloseReason::Io(std::io::ErrorKind::ConnectionReset));
    completed.task_completed();
    assert_eq!(
        completed.loss_report(),
        CloseReason::Io(std::io::ErrorKind::ConnectionReset)
    );
    let mut panicked = ConnCore::new(config(), Instant::now());
    assert_eq!(panicked.loss_report(), CloseReason::Panicked);
    let mut cancelled = ConnCore::new(config(), Instant::now());
    cancelled.task_cancelling();
    assert_eq!(cancelled.loss_report(), CloseReason::Cancelled);
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cancelled.loss_report()));
    assert!(again.is_err(), "a second report is a broken invariant");
}
