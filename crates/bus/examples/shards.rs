//! A node on every transport (TCP, TLS, WebSocket, WebSocket over TLS,
//! QUIC) through `Shards`: one thread, one compio runtime and one `Bus` per
//! core. It answers like the reference node `bus serve` (spec §8): `Echo`
//! (16) gets an `EchoReply` (17); `Broadcast` (18) sends a `Delivery` (19)
//! to every client on every shard and transport, then a `BroadcastAck` (20)
//! to the sender.
//!
//! ```sh
//! cargo run -p bus --example shards --features full                   # ports 7070..=7074
//! cargo run -p bus --example shards --features full -- 127.0.0.1 0    # free ports (printed)
//! cargo run -p bus --example client --features full -- quic://127.0.0.1:7074 /tmp/bus-example-tls/cert.pem
//! ```
//!
//! TLS, WSS and QUIC serve a self-signed development certificate, made
//! once in `$TMPDIR/bus-example-tls/`; clients trust its `cert.pem`.
//! Ctrl-C stops every shard gracefully.

use std::{
    net::{IpAddr, SocketAddr},
    pin::pin,
    time::Duration,
};

use bus::{
    Bus, BusConfig, Command, Frame, FrameMut, GoodbyeReason, Peer,
    quic::{QuicListener, QuicListenerConfig},
    shard::{ShardContext, Shards, ShardsConfig},
    tcp::TcpListenerConfig,
    tls::{ALPN_HTTP1, CertificateSource, ServerTls, TlsServerConfig},
    ws::{WsAcceptor, WsListenerConfig},
};
use futures_util::future::poll_immediate;

const ECHO: u8 = 16;
const ECHO_REPLY: u8 = 17;
const BROADCAST: u8 = 18;
const DELIVERY: u8 = 19;
const BROADCAST_ACK: u8 = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `shards [IP] [FIRST_PORT]`: TCP on FIRST_PORT, TLS on the next port,
    // then WS, WSS and QUIC; FIRST_PORT 0 gives every listener a free port.
    let mut args = std::env::args().skip(1);
    let ip: IpAddr = args.next().as_deref().unwrap_or("127.0.0.1").parse()?;
    let first: u16 = args.next().as_deref().unwrap_or("7070").parse()?;
    let addr = |i: u16| SocketAddr::new(ip, if first == 0 { 0 } else { first + i });

    // One certificate for the TLS-based transports. TLS and QUIC offer ALPN
    // `bus.v1`; WSS offers HTTP's `http/1.1`, as browsers expect (spec §7).
    let cert_dir = std::env::temp_dir().join("bus-example-tls");
    let tls_config = TlsServerConfig::new(CertificateSource::SelfSigned { dir: cert_dir });
    let tls = ServerTls::new(&tls_config)?;
    let cert = tls.cert_path(); // what tls://, wss:// and quic:// clients trust
    let mut wss_config = tls_config.clone();
    wss_config.alpn = vec![ALPN_HTTP1.to_vec()];
    let wss_tls = ServerTls::new(&wss_config)?;

    let config = BusConfig::default();
    let ws = WsListenerConfig::new(addr(2));
    ws.validate(config.max_message_size_bytes)?;
    let wss = WsListenerConfig::new(addr(3));
    wss.validate(config.max_message_size_bytes)?;
    let quic = QuicListenerConfig::new(addr(4));
    let quic_tls = tls.clone();

    // Shard 0 accepts TCP, TLS, WS and WSS and hands each socket, before
    // any handshake, to a shard (round-robin); that shard runs the handshake
    // and serves the connection. QUIC's endpoint lives on one shard (here
    // 0) with all of its connections. `start` blocks until every shard runs.
    let shards = Shards::builder(ShardsConfig::new(0), config) // 0: one shard per core
        .listen_tcp(TcpListenerConfig::new(addr(0)))
        .listen(TcpListenerConfig::new(addr(1)), tls)
        .listen(ws.tcp.clone(), WsAcceptor::new(&ws))
        .listen(wss.tcp.clone(), WsAcceptor::new_tls(&wss, wss_tls)?)
        .serve_on(0, move || QuicListener::bind(&quic, quic_tls))
        .start(handler)?;

    let names = ["tcp", "tls", "ws", "wss", "quic"];
    let listening: Vec<String> = (names.iter().zip(shards.local_addrs()))
        .map(|(name, addr)| format!("{name}={addr}"))
        .collect();
    compio::runtime::Runtime::new()?.block_on(async {
        // Polled once, so Ctrl-C is ours before we say we are ready.
        let mut ctrl_c = pin!(compio::signal::ctrl_c());
        poll_immediate(&mut ctrl_c).await;
        println!("{} shards, certificate {}", shards.count(), cert.display());
        println!("listening {}", listening.join(" "));
        ctrl_c.await
    })?;

    // Every shard at once: Goodbye(ShuttingDown) to each client, bounded.
    let report = shards.shutdown(Duration::from_secs(5));
    println!("stopped: {} threads left", report.threads_left);
    Ok(())
}

/// Called once on each shard's own thread; the handler it returns serves
/// that shard's clients (so per-shard state needs no lock). `use<>`: the
/// handler keeps nothing borrowed from `ctx`.
fn handler(ctx: &ShardContext) -> impl Fn(&Bus, Peer, Frame) + use<> {
    let monitor = ctx.monitor().clone();
    move |bus, from, frame| {
        let Peer::Client(id) = from else { return };
        let request = frame.header().request();
        match frame.header().command_raw() {
            ECHO => {
                // The received buffer becomes the reply: nothing is copied.
                let mut reply = frame.into_mut();
                reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
                reply.header_mut().set_client(0);
                reply.seal();
                let _ = bus.send_to_client(id, reply.freeze());
            }
            BROADCAST => {
                let mut delivery = FrameMut::with_body(Command::from_u8(DELIVERY), frame.body());
                delivery.seal();
                // One allocation, queued to every client of every shard.
                bus.broadcast(&delivery.freeze());
                let clients = u32::try_from(monitor.total_live_connections()).unwrap_or(u32::MAX);
                let mut ack = FrameMut::new(Command::from_u8(BROADCAST_ACK), 0);
                ack.header_mut().set_request(request);
                ack.header_mut().command_area_mut()[..4].copy_from_slice(&clients.to_le_bytes());
                ack.seal();
                let _ = bus.send_to_client(id, ack.freeze());
            }
            other => {
                let why = format!("command {other}: this node serves 16 Echo and 18 Broadcast");
                let _ = bus.close_client(id, GoodbyeReason::ProtocolViolation, &why);
            }
        }
    }
}
