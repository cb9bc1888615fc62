//! Requests from the server (spec §9) and the application's flush at
//! shutdown, written once and run on every transport
//! ([`transport_suite!`](crate::transport_suite)).
//!
//! The server side is the bus's own API (`Bus::request_client`); the client
//! side is a raw client that reads the request and answers it by hand, so
//! the wire rule (bit 63, same id back) is what is tested.

use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};

use bus_core::{
    Bus, BusConfig, CloseReason, Command, Frame, FrameMut, GoodbyeReason, Handler, Peer,
    RequestError, SERVER_REQUEST_BIT, SendError, ShutdownFlush, transport::Listener,
};

use crate::{
    client::RawClient,
    frames::{PANIC_HANDLER, RECORD, app, app_mut},
    scenarios::{assert_goodbye, connect, start, stop, test_config},
    transport::TestTransport,
    within,
};

/// A command the client answers a request with.
const ANSWER: u8 = 40;
/// What "promptly" means for a request woken by its connection's close:
/// far below the 30 s timeout it would otherwise wait.
const PROMPTLY: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(30);

fn client_id(peer: Peer) -> bus_core::ClientId {
    match peer {
        Peer::Client(id) => id,
        Peer::Replica(r) => panic!("expected a client, got replica {r}"),
    }
}

fn question(body_len: usize) -> FrameMut {
    let mut frame = app_mut(RECORD, 0, body_len);
    frame.seal();
    frame
}

/// Reads the request the server sent and checks it carries a server id.
async fn read_request<C: RawClient>(client: &mut C) -> Frame {
    let request = client.recv_frame().await;
    assert_eq!(request.header().command_raw(), RECORD, "{request:?}");
    let id = request.header().request();
    assert_ne!(
        id & SERVER_REQUEST_BIT,
        0,
        "a server request id has bit 63 set"
    );
    request
}

/// The client's answer to `request`.
fn answer_to(request: &Frame, body_len: usize) -> Frame {
    app(ANSWER, request.header().request(), body_len)
}

/// The reply resolves with the client's frame, and the handler never sees
/// it; the counters say one replied.
pub async fn a_request_to_a_client_resolves_with_its_reply<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let reply = node
        .bus
        .request_client(client_id(peer), question(100), LONG)
        .expect("queued");
    let request = read_request(&mut client).await;
    client.send(&answer_to(&request, 50)).await;
    let answer = within("the reply", reply).await.expect("answered");
    assert_eq!(answer.header().command_raw(), ANSWER);
    assert_eq!(answer.header().request(), request.header().request());
    crate::frames::assert_pattern(answer.body(), request.header().request(), 50);
    assert!(
        node.events.drain_now().is_empty(),
        "the handler never sees a reply"
    );
    let stats = node.bus.stats().requests;
    assert_eq!((stats.replied, stats.outstanding), (1, 0), "{stats:?}");
    stop(&node).await;
}

/// With a 30 s timeout outstanding, the connection closes: the client
/// goes away, the application evicts it, or the handler panics on another
/// of its frames. Each time the reply completes with `Disconnected` in
/// well under a second, naming the cause.
pub async fn a_close_wakes_its_outstanding_request_at_once<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    // The client goes away.
    let (mut client, peer) = connect::<T>(&node).await;
    let reply = node
        .bus
        .request_client(client_id(peer), question(10), LONG)
        .expect("queued");
    read_request(&mut client).await;
    client.close().await;
    drop(client);
    let started = Instant::now();
    let outcome = within("the reply", reply).await;
    assert!(
        matches!(outcome, Err(RequestError::Disconnected { .. })),
        "{outcome:?}"
    );
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    node.events.lost(peer).await;

    // The application evicts it.
    let (mut client, peer) = connect::<T>(&node).await;
    let reply = node
        .bus
        .request_client(client_id(peer), question(10), LONG)
        .expect("queued");
    read_request(&mut client).await;
    let started = Instant::now();
    node.bus
        .close_client(client_id(peer), GoodbyeReason::Evicted, "go")
        .expect("closing");
    let outcome = within("the reply", reply).await;
    assert_eq!(
        outcome,
        Err(RequestError::Disconnected {
            reason: CloseReason::Closed(GoodbyeReason::Evicted)
        })
    );
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    client
        .expect_goodbye_then_close(GoodbyeReason::Evicted)
        .await;
    client.close().await;
    node.events.lost(peer).await;

    // The handler panics on another frame of the same connection.
    let (mut client, peer) = connect::<T>(&node).await;
    let reply = node
        .bus
        .request_client(client_id(peer), question(10), LONG)
        .expect("queued");
    read_request(&mut client).await;
    let started = Instant::now();
    client.send(&app(PANIC_HANDLER, 1, 0)).await;
    let outcome = within("the reply", reply).await;
    assert_eq!(
        outcome,
        Err(RequestError::Disconnected {
            reason: CloseReason::HandlerPanicked
        })
    );
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    assert_eq!(node.events.lost(peer).await, CloseReason::HandlerPanicked);
    assert_eq!(node.bus.stats().requests.disconnected, 3);
    stop(&node).await;
}

/// Two connections with outstanding requests: closing one wakes only its
/// own; the other still resolves on its reply.
pub async fn closing_one_connection_leaves_the_others_requests<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut doomed, doomed_peer) = connect::<T>(&node).await;
    let (mut kept, kept_peer) = connect::<T>(&node).await;
    let doomed_reply = node
        .bus
        .request_client(client_id(doomed_peer), question(10), LONG)
        .expect("queued");
    let kept_reply = node
        .bus
        .request_client(client_id(kept_peer), question(10), LONG)
        .expect("queued");
    read_request(&mut doomed).await;
    let request = read_request(&mut kept).await;
    node.bus
        .close_client(client_id(doomed_peer), GoodbyeReason::Evicted, "only you")
        .expect("closing");
    assert!(matches!(
        within("the doomed reply", doomed_reply).await,
        Err(RequestError::Disconnected { .. })
    ));
    kept.send(&answer_to(&request, 7)).await;
    let answer = within("the kept reply", kept_reply)
        .await
        .expect("still answered");
    assert_eq!(answer.header().request(), request.header().request());
    doomed.close().await;
    stop(&node).await;
}

/// A reply that came before the close completes the request once; the
/// close afterwards does not complete it again (and nothing panics). A
/// reply after the request timed out is dropped and counted, never
/// delivered, and the connection stays usable.
pub async fn a_request_completes_once_and_a_late_reply_is_dropped<T: TestTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = connect::<T>(&node).await;
    let id = client_id(peer);
    let answered = node
        .bus
        .request_client(id, question(10), LONG)
        .expect("queued");
    let request = read_request(&mut client).await;
    client.send(&answer_to(&request, 3)).await;
    // The same answer twice: the second is late.
    client.send(&answer_to(&request, 3)).await;
    let answer = within("the reply", answered).await.expect("answered");
    assert_eq!(answer.header().request(), request.header().request());

    let short = Duration::from_millis(100);
    let timing_out = node
        .bus
        .request_client(id, question(10), short)
        .expect("queued");
    let late = read_request(&mut client).await;
    assert_eq!(
        within("the reply", timing_out).await,
        Err(RequestError::Timeout(short))
    );
    client.send(&answer_to(&late, 3)).await;
    // The connection stays usable: an Echo still comes back.
    client.send(&app(crate::frames::ECHO, 77, 5)).await;
    let echo = client.recv_frame().await;
    assert_eq!(echo.header().request(), 77);
    let stats = node.bus.stats().requests;
    assert_eq!(stats.replied, 1, "{stats:?}");
    assert_eq!(stats.timed_out, 1, "{stats:?}");
    assert_eq!(
        stats.late_replies, 2,
        "the duplicate and the late one: {stats:?}"
    );
    // The handler saw only the Echo.
    let (_, seen) = node.events.frame().await;
    assert_eq!(seen.header().request(), 77);
    assert!(node.events.drain_now().is_empty());
    stop(&node).await;
}

/// Requests beyond `max_outstanding_requests` on one connection fail at
/// once with the typed error; nothing is sent for them.
pub async fn requests_beyond_the_cap_fail_at_once<T: TestTransport>() {
    let mut config = test_config();
    config.max_outstanding_requests = 2;
    let node = start::<T>(config).await;
    let (_client, peer) = connect::<T>(&node).await;
    let id = client_id(peer);
    let first = node
        .bus
        .request_client(id, question(1), LONG)
        .expect("queued");
    let second = node
        .bus
        .request_client(id, question(1), LONG)
        .expect("queued");
    let started = Instant::now();
    let third = node.bus.request_client(id, question(1), LONG);
    assert!(
        matches!(third, Err(RequestError::TooManyRequests { limit: 2 })),
        "{third:?}"
    );
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(node.bus.stats().requests.outstanding, 2);
    drop((first, second));
    assert_eq!(
        node.bus.stats().requests.outstanding,
        0,
        "dropping forgets them"
    );
    // A request to nobody is a send error.
    let nobody = bus_core::ClientId::from_raw(id.as_raw() + 1000);
    assert!(matches!(
        node.bus.request_client(nobody, question(1), LONG),
        Err(RequestError::Send(SendError::NotConnected))
    ));
    stop(&node).await;
}

/// What the shutdown hook of [`HookHandler`] does.
#[derive(Debug, Clone, Copy)]
enum Hook {
    /// Sends every client a frame, then succeeds.
    Tell,
    /// Fails.
    Fail,
    /// Never finishes.
    Hang,
}

/// A handler whose `on_shutdown` does what its [`Hook`] says, and that
/// remembers which clients it saw.
struct HookHandler {
    hook: Hook,
    clients: Rc<RefCell<Vec<bus_core::ClientId>>>,
}

impl Handler for HookHandler {
    fn on_frame(&self, _bus: &Bus, _from: Peer, _frame: Frame) {}

    fn on_connected(&self, _bus: &Bus, peer: Peer, _info: &bus_core::ConnectionInfo) {
        self.clients.borrow_mut().push(client_id(peer));
    }

    fn on_shutdown(&self, bus: &Bus) -> ShutdownFlush {
        match self.hook {
            Hook::Tell => {
                for id in self.clients.borrow().iter() {
                    bus.send_to_client(*id, app(RECORD, 99, 4))
                        .expect("sends still work while the application flushes");
                }
                ShutdownFlush::done()
            }
            Hook::Fail => ShutdownFlush::new(async { Err("the disk is full".into()) }),
            Hook::Hang => ShutdownFlush::new(std::future::pending()),
        }
    }
}

/// A node whose handler runs `hook` at shutdown, and one connected client
/// (past its first frame, so it is usable).
async fn hooked_node<T: TestTransport>(
    hook: Hook,
    config: BusConfig,
) -> (Bus, T::Client, std::net::SocketAddr) {
    let clients = Rc::new(RefCell::new(Vec::new()));
    let bus = Bus::new(
        config,
        HookHandler {
            hook,
            clients: clients.clone(),
        },
    )
    .expect("bus");
    let listener = T::listen().await;
    let addr = listener.local_addr().expect("addr");
    bus.serve(listener).expect("serve");
    let mut client = T::connect(addr).await;
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.seal();
    client.send(&ping.freeze()).await;
    assert_eq!(client.recv_frame().await.header().command(), Command::Pong);
    assert_eq!(clients.borrow().len(), 1);
    (bus, client, addr)
}

/// The flush hook runs after the bus stopped accepting and before any
/// connection closes: a frame sent from inside it reaches the client
/// before its `Goodbye(ShuttingDown)`.
pub async fn the_shutdown_flush_runs_before_connections_close<T: TestTransport>() {
    let (bus, mut client, _addr) = hooked_node::<T>(Hook::Tell, test_config()).await;
    let shutdown = compio::runtime::spawn({
        let bus = bus.clone();
        async move { bus.shutdown(Duration::from_secs(5)).await }
    });
    let told = client.recv_frame().await;
    assert_eq!(told.header().request(), 99, "the hook's frame comes first");
    assert_goodbye(&client.recv_frame().await, GoodbyeReason::ShuttingDown);
    client.expect_closed().await;
    client.close().await;
    let report = within("shutdown", shutdown).await.expect("shutdown task");
    assert!(report.flush.is_done(), "{report:?}");
    assert_eq!(report.goodbyes_written, 1, "{report:?}");
    assert_eq!(report.tasks_left, 0);
}

/// A failing hook is reported; a hook that hangs is cut at
/// `shutdown_flush_timeout` and reported as such, and the shutdown then
/// proceeds as usual.
pub async fn a_failing_or_hanging_shutdown_flush_is_reported<T: TestTransport>() {
    let (bus, mut client, _) = hooked_node::<T>(Hook::Fail, test_config()).await;
    let shutdown = compio::runtime::spawn({
        let bus = bus.clone();
        async move { bus.shutdown(Duration::from_secs(5)).await }
    });
    assert_goodbye(&client.recv_frame().await, GoodbyeReason::ShuttingDown);
    client.close().await;
    let report = within("shutdown", shutdown).await.expect("shutdown task");
    assert_eq!(
        report.flush,
        bus_core::FlushOutcome::Failed("the disk is full".into())
    );

    let bound = Duration::from_millis(300);
    let mut config = test_config();
    config.shutdown_flush_timeout = bound;
    let (bus, mut client, _) = hooked_node::<T>(Hook::Hang, config).await;
    let started = Instant::now();
    let shutdown = compio::runtime::spawn({
        let bus = bus.clone();
        async move { bus.shutdown(Duration::from_secs(5)).await }
    });
    assert_goodbye(&client.recv_frame().await, GoodbyeReason::ShuttingDown);
    let cut_after = started.elapsed();
    assert!(
        cut_after >= bound && cut_after < bound + PROMPTLY,
        "the Goodbye came {cut_after:?} after the start, the flush bound is {bound:?}"
    );
    client.close().await;
    let report = within("shutdown", shutdown).await.expect("shutdown task");
    assert_eq!(report.flush, bus_core::FlushOutcome::TimedOut(bound));
    assert_eq!(report.tasks_left, 0);
}
