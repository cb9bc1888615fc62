//! Admission control over the shard layer, per TCP-based transport: the
//! node-wide `max_connections` and the per-listener `max_handshakes`.
//! Beyond a cap a connection is refused right after accept (TCP and TLS
//! closed, plain WS answered with `503`), counted per listener; the live
//! connections keep being served and a freed slot is reused.
//!
//! `handshake_grace` is 90 s here, so a close the test sees within
//! [`STEP`](crate::STEP) is the refusal, never the grace.

use std::{net::SocketAddr, time::Duration};

use bus_core::{BusConfig, transport::TransportKind};
use bus_shard::{Shards, ShardsConfig};
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    client::RawClient as _,
    eventually,
    shard::{Client, GRACE, Harness, ShardTransport, connect_many, loopback, shutdown},
    transport::TestTransport,
    within,
};

/// Far beyond every step of these tests.
const LONG_GRACE: Duration = Duration::from_secs(90);

/// A WebSocket upgrade request, as a browser would send it.
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bus.v1\r\n\r\n";

fn start<T: ShardTransport>(
    harness: &Harness,
    max_connections: usize,
    max_handshakes: usize,
) -> Shards {
    let mut bus = BusConfig::default();
    bus.max_connections = max_connections;
    bus.handshake_grace = LONG_GRACE;
    let mut listener = loopback();
    listener.max_handshakes = max_handshakes;
    harness.start(Shards::builder(ShardsConfig::new(2), bus).listen(listener, T::delegated()))
}

/// Connects a raw socket, sends what a client of `T` would send first, and
/// returns everything the server sent before it closed. The server must
/// close within [`STEP`](crate::STEP).
pub async fn refused<T: TestTransport>(addr: SocketAddr) -> Vec<u8> {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    if T::KIND == TransportKind::Ws {
        let BufResult(sent, _) = stream.write_all(UPGRADE).await;
        sent.expect("send the upgrade request");
    }
    within("the refusal's close", async {
        let mut got = Vec::new();
        loop {
            let BufResult(read, buf) = stream.read(Vec::with_capacity(4096)).await;
            match read {
                Ok(n) if n > 0 => got.extend_from_slice(&buf),
                // EOF, or a reset (the server did not read our bytes).
                _ => return got,
            }
        }
    })
    .await
}

/// What a refused client of `T` sees: nothing (closed before any
/// handshake byte), or for plain WS an HTTP `503`.
fn assert_refusal<T: TestTransport>(got: &[u8]) {
    if T::KIND == TransportKind::Ws {
        let text = String::from_utf8_lossy(got);
        assert!(
            text.starts_with("HTTP/1.1 503 "),
            "a refused upgrade gets 503, got {text:?}"
        );
        assert!(text.ends_with("server at capacity\r\n"), "{text:?}");
    } else {
        assert!(
            got.is_empty(),
            "refused before any handshake byte, got {got:?}"
        );
    }
}

/// `max_connections` = 4 on two shards: connection 5 is refused and
/// counted, the four keep echoing, and once one leaves a new one gets its
/// slot.
pub async fn connection_n_plus_1_is_refused_counted_and_a_freed_slot_is_reused<
    T: ShardTransport,
>() {
    const N: usize = 4;
    let harness = Harness::new();
    let shards = start::<T>(&harness, N, 16);
    let addr = shards.local_addrs()[0];
    let admission = shards.admission().clone();
    let mut clients = connect_many::<T>(addr, N).await;
    assert_eq!(admission.live(), N);

    for round in 1..=3 {
        assert_refusal::<T>(&refused::<T>(addr).await);
        let stats = &admission.listeners()[0];
        assert_eq!(stats.refused_connections, round, "{stats:?}");
        assert_eq!(stats.refused_handshakes, 0);
    }
    for c in &mut clients {
        c.barrier().await;
    }

    let mut gone = clients.pop().expect("a client");
    gone.raw.close().await;
    drop(gone);
    eventually("the slot is freed", || admission.live() == N - 1).await;
    clients.push(Client::new(T::connect(addr).await).await);
    assert_eq!(admission.live(), N);
    assert_refusal::<T>(&refused::<T>(addr).await);
    for c in &mut clients {
        c.barrier().await;
    }
    assert_eq!(admission.listeners()[0].refused_connections, 4);
    assert_eq!(admission.listeners()[0].kind, Some(T::KIND));
    drop(clients);
    shutdown(shards, GRACE).await;
}

/// `max_handshakes` = 1: a silent socket holds the listener's only
/// handshake slot, so the next connection is refused (and counted as a
/// handshake refusal); live connections are untouched; once the silent
/// socket leaves, a client connects again.
pub async fn handshakes_beyond_the_cap_are_refused_until_one_ends<T: ShardTransport>() {
    let harness = Harness::new();
    let shards = start::<T>(&harness, 100, 1);
    let addr = shards.local_addrs()[0];
    let admission = shards.admission().clone();
    let mut live = Client::new(T::connect(addr).await).await;
    let silent = T::connect_silent(addr).await;
    eventually("the silent socket holds the handshake slot", || {
        admission.listeners()[0].handshaking == 1
    })
    .await;

    assert_refusal::<T>(&refused::<T>(addr).await);
    let stats = &admission.listeners()[0];
    assert_eq!(stats.refused_handshakes, 1, "{stats:?}");
    assert_eq!(stats.refused_connections, 0);
    live.barrier().await;

    drop(silent);
    eventually("the handshake slot is freed", || {
        admission.listeners()[0].handshaking == 0
    })
    .await;
    let mut again = Client::new(T::connect(addr).await).await;
    again.barrier().await;
    live.barrier().await;
    drop((live, again));
    shutdown(shards, GRACE).await;
}

/// QUIC counts in the node-wide cap through the same counter: with
/// `max_connections` = 1 held by a TCP client, a QUIC attempt is refused
/// (and counted on the QUIC listener's gate); once the TCP client leaves,
/// a QUIC client connects and echoes.
pub async fn quic_connections_count_in_the_node_wide_cap() {
    use crate::transport::{Quic, Tcp};
    let harness = Harness::new();
    let mut bus = BusConfig::default();
    bus.max_connections = 1;
    bus.handshake_grace = LONG_GRACE;
    let builder = Shards::builder(ShardsConfig::new(2), bus)
        .listen(loopback(), bus_shard::Tcp)
        .serve_on(0, || {
            Ok::<_, bus_quic::QuicError>(Quic::listen_with(&Quic::listener_config()))
        });
    let shards = harness.start(builder);
    let (tcp, quic) = (shards.local_addrs()[0], shards.local_addrs()[1]);
    let admission = shards.admission().clone();
    let mut held = Client::new(Tcp::connect(tcp).await).await;

    let mut config = Quic::client_config();
    config.connect_timeout = Duration::from_secs(2);
    let client = bus_quic::ClientQuic::new(&config).expect("client QUIC");
    if let Ok((connection, send, recv)) =
        within("a refused QUIC attempt", client.connect_raw(quic)).await
    {
        // The client may finish its side first; the stream never works.
        let mut raw = crate::client::QuicClient::new(connection, send, recv);
        raw.send_raw(bus_quic::opening_ping().as_bytes()).await;
        assert!(
            raw.recv().await.is_err(),
            "a refused QUIC connection is not served"
        );
    }
    let gates = admission.listeners();
    let quic_gate = gates
        .iter()
        .find(|g| g.kind == Some(TransportKind::Quic))
        .expect("the QUIC listener's gate");
    assert_eq!(quic_gate.refused_connections, 1, "{quic_gate:?}");
    held.barrier().await;

    drop(held);
    eventually("the TCP slot is freed", || admission.live() == 0).await;
    let mut quic_client = Client::new(Quic::connect(quic).await).await;
    quic_client.barrier().await;
    assert_eq!(admission.live(), 1);
    drop(quic_client);
    shutdown(shards, GRACE).await;
}
