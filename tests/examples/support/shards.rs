//! The multi-shard part of the benchmark: echo throughput with 1 and 2
//! shards, and the cost of a cross-shard send against a local one.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bus::{
    Bus, BusConfig, ClientId, Command, DecodeLimits, Decoder, Frame, FrameMut, Peer,
    shard::{ShardContext, Shards, ShardsConfig},
    tcp::TcpListenerConfig,
};
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
};

use super::{Addrs, Case, ECHO, Transport, echo, run_case};

/// Ask the handler to send `command_area[16..20]` frames to the client in
/// `command_area[0..16]` in one tight loop, and to report how long the
/// loop took.
const PUMP: u8 = 50;
const PUMPED: u8 = 51;
/// `command_area[0..8]` = nanoseconds of the send loop, `[8..12]` = sends
/// refused.
const PUMP_REPORT: u8 = 52;
/// Sends per round: below the queue (1024) and inbox (4096) capacities, so
/// the loop measures the send itself, never a refusal.
const PUMP_BATCH: u32 = 1000;

/// Shards serving TCP (first address) and TLS (second) with the bench's
/// echo, plus the pump.
fn sharded_server(count: u16) -> (Shards, Addrs) {
    let dir = std::env::temp_dir().join(format!("bus-bench-shards-{}", std::process::id()));
    let tls = bus::tls::ServerTls::new(&bus::tls::TlsServerConfig::new(
        bus::tls::CertificateSource::SelfSigned { dir },
    ))
    .expect("self-signed certificate");
    let cert = tls.cert_path();
    let any_port = TcpListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
    let shards = Shards::builder(ShardsConfig::new(count), BusConfig::default())
        .listen_tcp(any_port.clone())
        .listen(any_port, tls)
        .start(|ctx: &ShardContext| {
            // Built once per shard: every pumped send shares it.
            let mut pumped = FrameMut::new(Command::from_u8(PUMPED), 0);
            pumped.seal();
            let pumped = pumped.freeze();
            let shard = ctx.shard;
            move |bus: &Bus, from: Peer, frame: Frame| {
                if frame.header().command_raw() != PUMP {
                    return echo(bus, from, frame);
                }
                let Peer::Client(id) = from else { return };
                debug_assert_eq!(id.shard(), shard);
                let area = frame.header().command_area();
                let target =
                    ClientId::from_raw(u128::from_le_bytes(area[..16].try_into().expect("16")));
                let count = u32::from_le_bytes(area[16..20].try_into().expect("4"));
                let started = Instant::now();
                let mut refused = 0u32;
                for _ in 0..count {
                    refused += u32::from(bus.send_to_client(target, pumped.clone()).is_err());
                }
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "a send loop lasts < 584 years"
                )]
                let nanos = started.elapsed().as_nanos() as u64;
                let mut report = FrameMut::new(Command::from_u8(PUMP_REPORT), 0);
                report.header_mut().command_area_mut()[..8].copy_from_slice(&nanos.to_le_bytes());
                report.header_mut().command_area_mut()[8..12]
                    .copy_from_slice(&refused.to_le_bytes());
                report.seal();
                let _ = bus.send_to_client(id, report.freeze());
            }
        })
        .expect("start shards");
    let addrs = Addrs {
        tcp: shards.local_addrs()[0],
        tls: shards.local_addrs()[1],
        ws: None,
        wss: None,
        quic: None,
        cert,
    };
    (shards, addrs)
}

/// A raw client that reads frames with a `Decoder`.
struct RawPeer {
    stream: TcpStream,
    decoder: Decoder,
    buf: Vec<u8>,
    pos: usize,
}

impl RawPeer {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let limits = DecodeLimits {
            max_message_size_bytes: 64 << 20,
            require_sealed: false,
        };
        Self {
            stream,
            decoder: Decoder::new(limits),
            buf: Vec::with_capacity(256 << 10),
            pos: 0,
        }
    }

    async fn send(&mut self, frame: Frame) {
        let BufResult(res, _) = self.stream.write_all(frame).await;
        res.expect("write");
    }

    async fn recv(&mut self) -> Frame {
        loop {
            if self.pos < self.buf.len() {
                let mut input = &self.buf[self.pos..];
                let decoded = self.decoder.decode(&mut input).expect("valid frame");
                self.pos = self.buf.len() - input.len();
                if let Some(frame) = decoded {
                    return frame;
                }
                continue;
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            self.pos = 0;
            let BufResult(res, b) = self.stream.read(buf).await;
            self.buf = b;
            assert!(res.expect("read") > 0, "server closed");
        }
    }

    /// Echoes once; returns the id the server stamped.
    async fn id(&mut self) -> ClientId {
        let mut frame = FrameMut::new(Command::from_u8(ECHO), 0);
        frame.seal();
        self.send(frame.freeze()).await;
        ClientId::from_raw(self.recv().await.header().client())
    }
}

struct PumpOutcome {
    nanos_per_send: f64,
    delivered_per_second: f64,
}

/// `from` makes its shard send to `to`, round after round, for `measure`.
#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
async fn pump(
    from: &mut RawPeer,
    to: &mut RawPeer,
    target: ClientId,
    measure: Duration,
) -> PumpOutcome {
    let mut area = [0u8; 20];
    area[..16].copy_from_slice(&target.as_raw().to_le_bytes());
    area[16..].copy_from_slice(&PUMP_BATCH.to_le_bytes());
    let (mut nanos, mut rounds) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < measure {
        let mut request = FrameMut::new(Command::from_u8(PUMP), 0);
        request.header_mut().command_area_mut()[..20].copy_from_slice(&area);
        request.seal();
        from.send(request.freeze()).await;
        let report = from.recv().await;
        let a = report.header().command_area();
        nanos += u64::from_le_bytes(a[..8].try_into().expect("8"));
        assert_eq!(
            u32::from_le_bytes(a[8..12].try_into().expect("4")),
            0,
            "no send refused"
        );
        for _ in 0..PUMP_BATCH {
            assert_eq!(to.recv().await.header().command_raw(), PUMPED);
        }
        rounds += 1;
    }
    let sends = (rounds * u64::from(PUMP_BATCH)) as f64;
    PumpOutcome {
        nanos_per_send: nanos as f64 / sends,
        delivered_per_second: sends / started.elapsed().as_secs_f64(),
    }
}

/// Runs the shard cases and prints their table.
#[allow(clippy::cast_precision_loss, reason = "figures for humans")]
pub(crate) fn run(measure: Duration, transports: &[Transport]) {
    println!();
    println!("Shards: echo, 32 connections, depth 32, placement round-robin");
    println!(
        "{:>10} {:>5} {:>6} {:>14} {:>10}   ratio",
        "frame", "", "shards", "frames/s", "MB/s"
    );
    for (transport, frame_bytes) in [
        (Transport::Tcp, 256),
        (Transport::Tcp, 64 << 10),
        (Transport::Tls, 256),
        (Transport::Tls, 64 << 10),
    ] {
        if !transports.contains(&transport) {
            continue;
        }
        let mut one = None;
        for count in [1u16, 2] {
            let (shards, addrs) = sharded_server(count);
            let case = Case {
                frame_bytes,
                connections: 32,
            };
            let o = run_case(transport, &addrs, &case, measure);
            let rate = o.frames as f64 / o.elapsed.as_secs_f64();
            let base = *one.get_or_insert(rate);
            println!(
                "{:>10} {:>5} {:>6} {:>14.0} {:>10.1}   {:.2}× 1 shard",
                if frame_bytes >= 1024 {
                    format!("{} KiB", frame_bytes >> 10)
                } else {
                    format!("{frame_bytes} B")
                },
                transport.name(),
                count,
                rate,
                rate * frame_bytes as f64 / 1e6,
                rate / base,
            );
            let report = shards.shutdown(Duration::from_secs(2));
            assert_eq!(report.threads_left, 0);
        }
    }

    // Local vs cross-shard send: 2 shards, round-robin puts clients 0 and
    // 2 on shard 0 and client 1 on shard 1.
    let (shards, addrs) = sharded_server(2);
    let addr = addrs.tcp;
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    let (local, cross) = runtime.block_on(async {
        let mut sender = RawPeer::connect(addr).await;
        let mut remote = RawPeer::connect(addr).await;
        let mut near = RawPeer::connect(addr).await;
        let (s, r, n) = (sender.id().await, remote.id().await, near.id().await);
        assert_eq!(
            (s.shard(), r.shard(), n.shard()),
            (0, 1, 0),
            "round-robin placement"
        );
        // Warm both paths before measuring.
        pump(&mut sender, &mut near, n, Duration::from_millis(200)).await;
        pump(&mut sender, &mut remote, r, Duration::from_millis(200)).await;
        let local = pump(&mut sender, &mut near, n, measure).await;
        let cross = pump(&mut sender, &mut remote, r, measure).await;
        (local, cross)
    });
    drop(runtime);
    println!();
    println!(
        "send_to_client from a handler, {PUMP_BATCH} 256 B frames per loop, one shared allocation"
    );
    println!("{:>12} {:>12} {:>16}", "target", "ns/send", "delivered/s");
    for (name, o) in [("same shard", &local), ("other shard", &cross)] {
        println!(
            "{name:>12} {:>12.1} {:>16.0}",
            o.nanos_per_send, o.delivered_per_second
        );
    }
    println!(
        "cross-shard send costs {:.2}× a local one; end-to-end delivery {:.2}× the local rate",
        cross.nanos_per_send / local.nanos_per_send,
        cross.delivered_per_second / local.delivered_per_second,
    );
    let report = shards.shutdown(Duration::from_secs(2));
    assert_eq!(report.threads_left, 0);
}
