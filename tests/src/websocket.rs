//! WebSocket behaviours (spec §7, WS and WSS), each written once and run
//! for both through [`crate::websocket_suite!`].
#![allow(async_fn_in_trait, reason = "single-threaded test harness")]

use std::time::Duration;

use async_tungstenite::tungstenite::{self, Message, http::StatusCode};
use bus_core::{CloseReason, GoodbyeReason, limits::PROTOCOL_ID};
use bus_ws::{WsListener, WsListenerConfig};
use futures_util::{SinkExt, StreamExt};

use crate::{
    client::{RawClient, WsClient, WsStream, ws_request},
    frames::{ECHO, ECHO_REPLY, RECORD, app, assert_pattern},
    scenarios::{Node, start, start_on, stop, test_config},
    transport::{TestTransport, Ws, Wss},
    within,
};

/// A WebSocket transport: how to open the byte stream under a client and
/// how to listen with a given WebSocket config.
pub trait WsTransport: TestTransport<Listener = WsListener, Client = WsClient<Self::Io>> {
    /// The client's byte stream.
    type Io: WsStream;

    /// A connected byte stream (TCP, or TCP + TLS) to `addr`, not upgraded.
    async fn open(addr: std::net::SocketAddr) -> Self::Io;

    /// A listener on `127.0.0.1:0` with `config`'s path, origins and limits.
    fn listen_with(config: &WsListenerConfig) -> WsListener;

    /// A client connection of the crate itself (`bus_ws::connect`).
    async fn dial(addr: std::net::SocketAddr) -> bus_ws::WsConnection;
}

impl WsTransport for Ws {
    type Io = crate::client::WsIo;

    async fn open(addr: std::net::SocketAddr) -> Self::Io {
        crate::client::plain_ws_io(crate::client::tcp_connect(addr).await)
    }

    fn listen_with(config: &WsListenerConfig) -> WsListener {
        WsListener::bind(config).expect("bind")
    }

    async fn dial(addr: std::net::SocketAddr) -> bus_ws::WsConnection {
        within(
            "ws dial",
            bus_ws::connect(addr, &bus_ws::WsConnectorConfig::default()),
        )
        .await
        .expect("ws dial")
    }
}

impl WsTransport for Wss {
    type Io = bus_tls::TlsStream;

    async fn open(addr: std::net::SocketAddr) -> Self::Io {
        within("wss connect", Wss::client_tls().connect(addr))
            .await
            .expect("wss connect")
    }

    fn listen_with(config: &WsListenerConfig) -> WsListener {
        WsListener::bind_tls(config, Wss::server_tls()).expect("bind")
    }

    async fn dial(addr: std::net::SocketAddr) -> bus_ws::WsConnection {
        within(
            "wss dial",
            bus_ws::connect_tls(
                addr,
                &bus_ws::WsConnectorConfig::default(),
                &Wss::client_tls(),
            ),
        )
        .await
        .expect("wss dial")
    }
}

fn local() -> WsListenerConfig {
    WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"))
}

/// Upgrades with `protocols` and expects an HTTP refusal; returns it.
async fn refused<T: WsTransport>(
    node: &Node,
    path: &str,
    protocols: &[&str],
    origin: Option<&str>,
) -> (StatusCode, String) {
    let io = T::open(node.addr).await;
    let request = ws_request(node.addr, path, protocols, origin);
    match WsClient::upgrade(io, &request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// No `Sec-WebSocket-Protocol` → `400` naming `bus.v1`, no upgrade, and
/// the bus is still serving.
pub async fn missing_subprotocol_gets_400<T: WsTransport>() {
    let node = start::<T>(test_config()).await;
    let (status, body) = refused::<T>(&node, "/", &[], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains(PROTOCOL_ID),
        "the body names bus.v1: {body:?}"
    );
    let (mut client, _) = crate::scenarios::connect::<T>(&node).await;
    client.send(&app(ECHO, 1, 10)).await;
    assert_eq!(client.recv_frame().await.header().command_raw(), ECHO_REPLY);
    assert_eq!(node.bus.stats().handshake_failures, 1);
    assert_eq!(node.bus.stats().connections_total, 1, "no upgrade");
    stop(&node).await;
}

/// A different subprotocol only → `400`.
pub async fn wrong_subprotocol_gets_400<T: WsTransport>() {
    let node = start::<T>(test_config()).await;
    let (status, body) = refused::<T>(&node, "/", &["chat", "bus.v2"], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(PROTOCOL_ID), "{body:?}");
    assert_eq!(node.bus.stats().connections_total, 0);
    stop(&node).await;
}

/// An upgrade on another path → `404`; on the configured path it works.
pub async fn wrong_path_gets_404<T: WsTransport>() {
    let mut config = local();
    config.path = "/bus".into();
    let node = start_on(T::listen_with(&config), test_config());
    let (status, _) = refused::<T>(&node, "/", &[PROTOCOL_ID], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let io = T::open(node.addr).await;
    let request = ws_request(node.addr, "/bus?token=x", &[PROTOCOL_ID], None);
    let mut client = WsClient::upgrade(io, &request)
        .await
        .expect("upgrade on /bus");
    node.events.connected().await;
    client.send(&app(ECHO, 3, 0)).await;
    assert_eq!(client.recv_frame().await.header().request(), 3);
    stop(&node).await;
}

/// With an Origin allow-list, another origin or none → `403`; a listed one
/// connects.
pub async fn origin_allow_list_is_enforced<T: WsTransport>() {
    let mut config = local();
    config.allowed_origins = vec!["https://app.example.com".into()];
    let node = start_on(T::listen_with(&config), test_config());
    for origin in [Some("https://evil.example.com"), None] {
        let (status, _) = refused::<T>(&node, "/", &[PROTOCOL_ID], origin).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "origin {origin:?}");
    }
    let io = T::open(node.addr).await;
    let request = ws_request(
        node.addr,
        "/",
        &[PROTOCOL_ID],
        Some("https://app.example.com"),
    );
    WsClient::upgrade(io, &request)
        .await
        .expect("allowed origin");
    node.events.connected().await;
    stop(&node).await;
}

/// Sends `message` and expects `Goodbye(reason)`, close `code`, nothing
/// delivered and a lost callback naming the violation.
async fn expect_ws_violation<T: WsTransport>(message: Message, reason: GoodbyeReason, code: u16) {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    client.send_message(message).await;
    client.expect_goodbye_then_close_code(reason, code).await;
    client.close().await;
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::ProtocolViolation(reason)
    );
    assert_eq!(node.bus.stats().frames_in, 0, "nothing delivered");
    stop(&node).await;
}

/// A text message → `Goodbye(MalformedFrame)`, close 1003.
pub async fn text_message_gets_close_1003<T: WsTransport>() {
    expect_ws_violation::<T>(Message::text("hello"), GoodbyeReason::MalformedFrame, 1003).await;
}

/// A binary message longer than its frame's `size` → close 1002.
pub async fn message_longer_than_its_frame_gets_close_1002<T: WsTransport>() {
    let mut bytes = app(RECORD, 1, 100).as_bytes().to_vec();
    bytes.extend_from_slice(&[0; 7]);
    expect_ws_violation::<T>(Message::binary(bytes), GoodbyeReason::MalformedFrame, 1002).await;
}

/// A binary message shorter than its frame's `size` (a frame split over
/// two messages) → close 1002.
pub async fn message_shorter_than_its_frame_gets_close_1002<T: WsTransport>() {
    let bytes = app(RECORD, 1, 100).as_bytes()[..300].to_vec();
    expect_ws_violation::<T>(Message::binary(bytes), GoodbyeReason::MalformedFrame, 1002).await;
}

/// A binary message too short to hold a header → close 1002.
pub async fn message_shorter_than_a_header_gets_close_1002<T: WsTransport>() {
    expect_ws_violation::<T>(
        Message::binary(vec![1; 100]),
        GoodbyeReason::MalformedFrame,
        1002,
    )
    .await;
}

/// A message announced at 64 MiB, 32× the limit: the server answers
/// `Goodbye(FrameTooLarge)` and close 1009 after only 256 KiB of it were
/// sent, so it cannot have buffered it. Measured by the counting allocator
/// on this thread (server and client both run here): the heap never grew
/// by the limit, let alone the announced size, and no single allocation
/// (a reservation nobody touched would escape an RSS reading) came near it.
pub async fn message_over_the_limit_is_refused_before_it_is_buffered<T: WsTransport>() {
    const ANNOUNCED: u64 = 64 << 20;
    const SENT: usize = 256 << 10;
    let config = test_config();
    let limit = config.max_message_size_bytes as usize; // 2 MiB
    let node = start::<T>(config).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    // A masked binary frame header (FIN, opcode 2, 64-bit length, mask),
    // then only the first SENT bytes of its payload.
    let mut wire = vec![0x82, 0x80 | 127];
    wire.extend_from_slice(&ANNOUNCED.to_be_bytes());
    wire.extend_from_slice(&crate::client::WS_MASK);
    wire.resize(wire.len() + SENT, 0x5A);
    let window = crate::alloc::Window::start();
    client
        .write_below_framing(&wire)
        .await
        .expect("the first bytes are accepted");
    client
        .expect_goodbye_then_close_code(GoodbyeReason::FrameTooLarge, 1009)
        .await;
    let (grown, largest) = (window.peak_growth(), window.largest_allocation());
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::ProtocolViolation(GoodbyeReason::FrameTooLarge)
    );
    assert!(
        (grown as u64) < ANNOUNCED / 8,
        "memory grew by {grown} bytes for a refused {ANNOUNCED}-byte message"
    );
    assert!(
        grown < limit,
        "the heap grew by {grown} bytes, the limit is {limit}: the message was buffered"
    );
    assert!(
        largest < limit,
        "an allocation of {largest} bytes for a message refused at {limit}"
    );
    stop(&node).await;
}

/// Expects `Goodbye(reason)` then close `code` after `close` started the
/// close of `client`'s connection, and the lost callback with `lost`.
async fn expect_close_code<T: WsTransport>(
    node: &Node,
    client: &mut WsClient<T::Io>,
    peer: bus_core::Peer,
    reason: GoodbyeReason,
    code: u16,
    lost: CloseReason,
) {
    client.expect_goodbye_then_close_code(reason, code).await;
    client.close().await;
    assert_eq!(node.events.lost(peer).await, lost);
    assert_eq!(node.bus.stats().goodbyes_sent[reason.code() as usize], 1);
}

fn client_id(peer: bus_core::Peer) -> bus_core::ClientId {
    match peer {
        bus_core::Peer::Client(id) => id,
        bus_core::Peer::Replica(r) => panic!("expected a client, got replica {r}"),
    }
}

/// `close_client(.., Normal)` → `Goodbye(Normal)`, close 1000.
pub async fn close_client_normal_gets_close_1000<T: WsTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    node.bus
        .close_client(client_id(peer), GoodbyeReason::Normal, "done")
        .expect("connected");
    let closed = CloseReason::Closed(GoodbyeReason::Normal);
    expect_close_code::<T>(
        &node,
        &mut client,
        peer,
        GoodbyeReason::Normal,
        1000,
        closed,
    )
    .await;
    stop(&node).await;
}

/// An idle timeout → `Goodbye(IdleTimeout)`, close 1000.
pub async fn idle_timeout_gets_close_1000<T: WsTransport>() {
    let mut config = test_config();
    config.idle_timeout = Some(Duration::from_millis(300));
    let node = start::<T>(config).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    let reason = GoodbyeReason::IdleTimeout;
    expect_close_code::<T>(
        &node,
        &mut client,
        peer,
        reason,
        1000,
        CloseReason::Closed(reason),
    )
    .await;
    stop(&node).await;
}

/// Eviction (`close_client(.., Evicted)`) → `Goodbye(Evicted)`, close 1008.
pub async fn eviction_gets_close_1008<T: WsTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    node.bus
        .close_client(client_id(peer), GoodbyeReason::Evicted, "test eviction")
        .expect("connected");
    let reason = GoodbyeReason::Evicted;
    expect_close_code::<T>(
        &node,
        &mut client,
        peer,
        reason,
        1008,
        CloseReason::Closed(reason),
    )
    .await;
    stop(&node).await;
}

/// A slow consumer under policy `disconnect` → the frames already queued,
/// `Goodbye(SlowConsumer)`, close 1008.
pub async fn slow_consumer_gets_close_1008<T: WsTransport>() {
    let mut config = test_config();
    config.queue_capacity_frames = 4;
    config.slow_consumer = bus_core::SlowConsumerPolicy::Disconnect;
    let node = start::<T>(config).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    let id = client_id(peer);
    for request in 1..=4 {
        node.bus
            .send_to_client(id, app(RECORD, request, 0))
            .expect("queued");
    }
    assert_eq!(
        node.bus.send_to_client(id, app(RECORD, 5, 0)),
        Err(bus_core::SendError::QueueFull)
    );
    for request in 1..=4 {
        assert_eq!(client.recv_frame().await.header().request(), request);
    }
    let reason = GoodbyeReason::SlowConsumer;
    expect_close_code::<T>(
        &node,
        &mut client,
        peer,
        reason,
        1008,
        CloseReason::Closed(reason),
    )
    .await;
    stop(&node).await;
}

/// Writes `wire` below the WebSocket framing and expects RFC 6455's "fail
/// the connection": the socket is dropped with neither a Goodbye nor a
/// close frame, the lost callback says `Io(InvalidData)`, nothing reached
/// the handler and no Goodbye was counted.
async fn expect_dropped_for_broken_framing<T: WsTransport>(wire: &[u8]) {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    client
        .write_below_framing(wire)
        .await
        .expect("the bytes are written");
    match client.recv().await {
        Err(bus_core::Error::Io(_) | bus_core::Error::Closed) => {}
        Ok(frame) => panic!("expected the socket to be dropped, got {frame:?}"),
        Err(other) => panic!("expected the socket to be dropped, got {other}"),
    }
    assert!(
        client.close_frame().is_none(),
        "dropped without a close frame, got {:?}",
        client.close_frame()
    );
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Io(std::io::ErrorKind::InvalidData)
    );
    let stats = node.bus.stats();
    assert_eq!(stats.frames_in, 0, "nothing delivered");
    assert_eq!(stats.goodbyes_sent, [0; 10], "no Goodbye");
    stop(&node).await;
}

/// An unmasked client frame (RFC 6455 §5.1) drops the socket.
pub async fn unmasked_client_frame_drops_the_socket<T: WsTransport>() {
    let frame = app(RECORD, 1, 10);
    let wire = crate::client::ws_wire_frame(0x82, None, frame.as_bytes());
    expect_dropped_for_broken_framing::<T>(&wire).await;
}

/// A frame with a reserved bit set (no extension was negotiated) drops the
/// socket.
pub async fn reserved_bits_drop_the_socket<T: WsTransport>() {
    let frame = app(RECORD, 1, 10);
    let wire =
        crate::client::ws_wire_frame(0x82 | 0x40, Some(crate::client::WS_MASK), frame.as_bytes());
    expect_dropped_for_broken_framing::<T>(&wire).await;
}

/// An unknown opcode (3, reserved for data frames) drops the socket.
pub async fn unknown_opcode_drops_the_socket<T: WsTransport>() {
    let wire = crate::client::ws_wire_frame(0x83, Some(crate::client::WS_MASK), b"what");
    expect_dropped_for_broken_framing::<T>(&wire).await;
}

/// A control frame over 125 bytes (a 126-byte ping) drops the socket.
pub async fn oversized_control_frame_drops_the_socket<T: WsTransport>() {
    let wire = crate::client::ws_wire_frame(0x89, Some(crate::client::WS_MASK), &[7; 126]);
    expect_dropped_for_broken_framing::<T>(&wire).await;
}

/// A WebSocket ping is answered with a pong carrying the same payload, and
/// the connection keeps working.
pub async fn websocket_ping_gets_pong<T: WsTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, _) = crate::scenarios::connect::<T>(&node).await;
    client
        .send_message(Message::Ping(b"are you there".to_vec().into()))
        .await;
    match client.recv_message().await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    client.send(&app(ECHO, 4, 10)).await;
    assert_eq!(client.recv_frame().await.header().request(), 4);
    assert_eq!(node.bus.stats().frames_in, 1, "the ping is not a frame");
    stop(&node).await;
}

/// Shutdown: `Goodbye(ShuttingDown)`, then close 1001, then a clean end of
/// the byte stream (for WSS: `close_notify`, not a truncation).
pub async fn shutdown_sends_goodbye_then_close_1001<T: WsTransport>() {
    let node = start::<T>(test_config()).await;
    let (mut client, peer) = crate::scenarios::connect::<T>(&node).await;
    let shutdown = node.bus.shutdown(Duration::from_secs(5));
    let read = async {
        client
            .expect_goodbye_then_close_code(GoodbyeReason::ShuttingDown, 1001)
            .await;
        // The next read sends our close reply, then sees the end.
        match client.recv_message().await {
            None => {}
            other => panic!("expected a clean end after the close frame, got {other:?}"),
        }
    };
    let (report, ()) = within("shutdown", futures_util::future::join(shutdown, read)).await;
    assert_eq!(report.cancelled, 0, "{report:?}");
    assert_eq!(report.tasks_left, 0);
    assert_eq!(
        node.events.lost(peer).await,
        CloseReason::Closed(GoodbyeReason::ShuttingDown)
    );
}

/// A client that keeps sending requests while the replies stream back
/// (16 MiB each way, beyond the socket buffers): neither direction waits
/// for the other, every reply arrives in order.
pub async fn requests_and_replies_flow_at_the_same_time<T: WsTransport>() {
    const N: u64 = 4_000;
    const BODY: usize = 4 << 10;
    const CHUNK: u64 = 50;
    let mut config = test_config();
    config.queue_capacity_frames = 256;
    let node = start::<T>(config).await;
    let (client, _) = crate::scenarios::connect::<T>(&node).await;
    let (mut sink, mut stream) = client.into_inner().split();
    // Each step is bounded, not the whole exchange: a deadlock shows as a
    // step that makes no progress.
    let send = async {
        for request in 1..=N {
            let frame = app(ECHO, request, BODY);
            let message = Message::binary(frame.as_bytes().to_vec());
            within("feeding a request", sink.feed(message))
                .await
                .expect("feed");
            if request % CHUNK == 0 {
                within("flushing requests", sink.flush())
                    .await
                    .expect("flush");
            }
        }
        within("flushing requests", sink.flush())
            .await
            .expect("flush");
    };
    let receive = async {
        for request in 1..=N {
            let message = within("a reply", stream.next())
                .await
                .expect("open")
                .expect("a reply");
            let Message::Binary(bytes) = message else {
                panic!("expected a binary reply, got {message:?}");
            };
            let reply = crate::client::decode_message(&bytes).expect("one frame");
            assert_eq!(reply.header().request(), request, "replies in order");
            assert_pattern(reply.body(), request, BODY);
        }
    };
    futures_util::future::join(send, receive).await;
    let stats = node.bus.stats();
    assert_eq!(stats.frames_in, N);
    assert_eq!(stats.frames_out, N);
    assert_eq!(stats.queue_full, 0, "the writer kept up with the reader");
    stop(&node).await;
}

/// The crate's own client side (`bus_ws::connect`/`connect_tls` then
/// `establish`) exchanges frames with a bus and closes in order.
pub async fn crate_client_exchanges_frames_with_a_bus<T: WsTransport>() {
    use bus_core::transport::{Connection, FrameReader, FrameWriter};
    let node = start::<T>(test_config()).await;
    let connection = T::dial(node.addr).await;
    assert_eq!(connection.transport(), T::KIND);
    let limits = crate::client::CLIENT_LIMITS;
    let (mut reader, mut writer, info) = within(
        "client establish",
        connection.establish(bus_core::ReadSettings::new(limits)),
    )
    .await
    .expect("establish");
    assert_eq!(info.transport, T::KIND);
    let peer = node.events.connected().await;
    let batch = vec![app(ECHO, 1, 10), app(ECHO, 2, 70_000)];
    let compio::BufResult(res, _) = within("client write", writer.write_batch(batch)).await;
    res.expect("write batch");
    for (request, len) in [(1, 10), (2, 70_000)] {
        let reply = within("client read", reader.read_frame())
            .await
            .expect("reply");
        assert_eq!(reply.header().request(), request);
        assert_pattern(reply.body(), request, len);
    }
    within("client close", writer.close(Some(GoodbyeReason::Normal)))
        .await
        .expect("close");
    assert!(matches!(
        within("end", reader.read_frame()).await,
        Err(bus_core::Error::Closed)
    ));
    assert_eq!(node.events.lost(peer).await, CloseReason::PeerClosed);
    stop(&node).await;
}

/// Instantiates every WebSocket scenario of [`crate::websocket`] for one
/// WebSocket transport.
#[macro_export]
macro_rules! websocket_suite {
    ($transport:ty) => {
        $crate::instantiate_scenarios!(websocket, $transport;
            missing_subprotocol_gets_400,
            wrong_subprotocol_gets_400,
            wrong_path_gets_404,
            origin_allow_list_is_enforced,
            text_message_gets_close_1003,
            message_longer_than_its_frame_gets_close_1002,
            message_shorter_than_its_frame_gets_close_1002,
            message_shorter_than_a_header_gets_close_1002,
            message_over_the_limit_is_refused_before_it_is_buffered,
            close_client_normal_gets_close_1000,
            idle_timeout_gets_close_1000,
            eviction_gets_close_1008,
            slow_consumer_gets_close_1008,
            unmasked_client_frame_drops_the_socket,
            reserved_bits_drop_the_socket,
            unknown_opcode_drops_the_socket,
            oversized_control_frame_drops_the_socket,
            websocket_ping_gets_pong,
            shutdown_sends_goodbye_then_close_1001,
            requests_and_replies_flow_at_the_same_time,
            crate_client_exchanges_frames_with_a_bus,
        );
    };
}
