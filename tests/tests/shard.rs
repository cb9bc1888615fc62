//! The multi-shard runtime over loopback: every scenario of
//! `bus_tests::shard` for each delegated transport (TCP, TLS, WS, WSS),
//! QUIC served on one shard, plus what only the shard layer's own API has
//! (`serve_on`, CPU pinning, start-up failures).

use std::sync::{Mutex, mpsc};

use bus_core::{Bus, Frame, Peer, transport::Listener};
use bus_shard::{ShardContext, ShardError, Shards, ShardsConfig};
use bus_tcp::TcpListenerConfig;
use bus_tests::{
    shard::{
        Client, DELIVERY, GRACE, Harness, RELAY, RELAY_ACK, connect_many, loopback, per_shard,
        shutdown,
    },
    transport::{Quic, Tcp, Tls},
};

bus_tests::shard_suite!(Tcp);

/// TLS: shard 0 accepts TCP and hands the socket over before the TLS
/// handshake, which runs on the owning shard.
mod tls {
    bus_tests::shard_suite!(bus_tests::transport::Tls);
}

/// WebSocket: the socket is handed over before the HTTP upgrade, which
/// runs on the owning shard.
mod ws {
    bus_tests::shard_suite!(bus_tests::transport::Ws);
}

/// WSS: the socket is handed over before the TLS handshake and the upgrade,
/// both of which run on the owning shard.
mod wss {
    bus_tests::shard_suite!(bus_tests::transport::Wss);
}

fn builder(config: ShardsConfig) -> bus_shard::ShardsBuilder {
    Shards::builder(config, bus_core::BusConfig::default())
}

/// QUIC's model: a listener bound and served on one shard keeps its clients
/// there, and a send from another shard is forwarded to them.
#[compio::test]
async fn a_listener_served_on_one_shard_keeps_its_clients_there_and_is_reachable_from_others() {
    let harness = Harness::new();
    let shards = harness.start(
        builder(ShardsConfig::new(3))
            .listen_tcp(loopback())
            .serve_on(2, || bus_tcp::TcpListener::bind(&loopback())),
    );
    let addrs = shards.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let mut pinned = connect_many::<Tcp>(addrs[1], 4).await;
    assert_eq!(per_shard(&pinned, 3), [0, 0, 4]);
    let mut other = Client::new(bus_tests::client::TcpClient::connect(addrs[0]).await).await;
    assert_eq!(other.id.shard(), 0);
    other
        .send(RELAY, 3, &pinned[0].id.as_raw().to_le_bytes(), b"cross")
        .await;
    assert_eq!(other.expect(RELAY_ACK).await.header().command_area()[0], 0);
    assert_eq!(pinned[0].expect(DELIVERY).await.body(), b"cross");
    pinned[0].barrier().await;
    drop((pinned, other));
    shutdown(shards, GRACE).await;
}

/// QUIC stays on its endpoint's shard: a QUIC listener served on shard 1
/// keeps every client there (ids carry shard 1, shard 1's handler answers),
/// a send from a TCP client on shard 0 is forwarded to a QUIC client, and a
/// QUIC client's send is forwarded back.
#[compio::test]
async fn a_quic_listener_served_on_one_shard_keeps_its_clients_there_and_is_reachable_from_others()
{
    const QUIC_SHARD: u16 = 1;
    let harness = Harness::new();
    let tls = Tls::server_tls();
    let shards = harness.start(
        builder(ShardsConfig::new(3))
            .listen_tcp(loopback())
            .serve_on(QUIC_SHARD, move || {
                bus_quic::QuicListener::bind(&Quic::listener_config(), tls)
            }),
    );
    let addrs = shards.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let mut quic = connect_many::<Quic>(addrs[1], 4).await;
    assert_eq!(per_shard(&quic, 3), [0, 4, 0]);
    for c in &quic {
        assert_eq!(c.handler_shard, QUIC_SHARD, "its shard's handler answered");
    }
    let mut tcp = Client::new(bus_tests::client::TcpClient::connect(addrs[0]).await).await;
    assert_eq!(tcp.id.shard(), 0);

    tcp.send(RELAY, 3, &quic[2].id.as_raw().to_le_bytes(), b"to quic")
        .await;
    assert_eq!(tcp.expect(RELAY_ACK).await.header().command_area()[0], 0);
    let delivery = quic[2].expect(DELIVERY).await;
    assert_eq!(delivery.body(), b"to quic");
    assert_eq!(delivery.header().request(), 3);
    quic[2].barrier().await;

    quic[3]
        .send(RELAY, 4, &tcp.id.as_raw().to_le_bytes(), b"from quic")
        .await;
    assert_eq!(
        quic[3].expect(RELAY_ACK).await.header().command_area()[0],
        0
    );
    assert_eq!(tcp.expect(DELIVERY).await.body(), b"from quic");
    tcp.barrier().await;

    let stats = shards.stats().expect("stats");
    assert_eq!(stats[1].bus.connections, 4, "every QUIC client on shard 1");
    assert_eq!(stats[1].handoffs_in, 0, "QUIC is never handed over");
    assert_eq!(stats[1].inbox_received, 1, "the send from shard 0");
    assert_eq!(stats[0].inbox_received, 1, "the send from shard 1");
    drop((quic, tcp));
    shutdown(shards, GRACE).await;
}

/// The CPU list this process may use, as the kernel prints it.
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

#[compio::test]
async fn pinned_shards_run_on_their_own_cpu() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let whole_machine = if cores == 1 {
        "0".to_owned()
    } else {
        format!("0-{}", cores - 1)
    };
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut config = ShardsConfig::new(2);
    config.pin_cpus = true;
    let shards = builder(config)
        .start(move |ctx: &ShardContext| {
            tx.lock()
                .expect("lock")
                .send((ctx.shard, allowed_cpus()))
                .expect("send");
            |_: &Bus, _: Peer, _: Frame| {}
        })
        .expect("start");
    let mut seen: Vec<_> = rx.try_iter().collect();
    seen.sort();
    assert_eq!(
        seen.len(),
        2,
        "the factory ran once per shard before start returned"
    );
    // Pinning assumes the process may use CPUs 0..cores; elsewhere (taskset,
    // cpusets) compio leaves the thread unpinned, which is all we can check.
    if allowed_cpus().as_deref() == Some(whole_machine.as_str()) {
        for (shard, allowed) in seen {
            let expected = (usize::from(shard) % cores).to_string();
            assert_eq!(allowed.as_deref(), Some(expected.as_str()), "shard {shard}");
        }
    }
    shutdown(shards, GRACE).await;
}

#[compio::test]
async fn a_listener_that_cannot_bind_fails_start_and_names_the_address() {
    let taken = bus_tcp::TcpListener::bind(&loopback()).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let harness = Harness::new();
    let err = builder(ShardsConfig::new(3))
        .listen_tcp(TcpListenerConfig::new(addr))
        .start(harness.factory())
        .expect_err("port taken");
    assert!(
        matches!(err, ShardError::Listen { shard: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[compio::test]
async fn a_listener_on_a_shard_that_does_not_exist_is_refused() {
    let err = builder(ShardsConfig::new(2))
        .serve_on(5, || bus_tcp::TcpListener::bind(&loopback()))
        .start(|_: &ShardContext| |_: &Bus, _: Peer, _: Frame| {})
        .expect_err("no shard 5");
    assert!(
        matches!(
            err,
            ShardError::NoSuchShard {
                listener: 0,
                shard: 5,
                count: 2
            }
        ),
        "{err:?}"
    );
}

#[compio::test]
async fn a_handler_factory_that_panics_fails_start_and_names_the_shard() {
    let err = builder(ShardsConfig::new(3))
        .listen_tcp(loopback())
        .start(|ctx: &ShardContext| {
            assert!(ctx.shard != 1, "factory refuses shard 1");
            |_: &Bus, _: Peer, _: Frame| {}
        })
        .expect_err("shard 1 never starts");
    assert!(matches!(err, ShardError::Exited { shard: 1 }), "{err:?}");
}

/// `Monitor`: live counts and connection listings of every shard, from
/// any thread; its requests fail with `Stopped` once the shards are gone.
#[compio::test]
async fn the_monitor_counts_and_lists_every_shards_connections() {
    let harness = Harness::new();
    let shards = harness.start(builder(ShardsConfig::new(2)).listen_tcp(loopback()));
    let monitor = shards.monitor();
    assert_eq!(monitor.count(), 2);
    let clients = connect_many::<Tcp>(shards.local_addrs()[0], 5).await;
    let placed = per_shard(&clients, 2);
    assert_eq!(placed, [3, 2], "round-robin");
    // Each client had its echo answered: registered and counted.
    assert_eq!(
        [monitor.live_connections(0), monitor.live_connections(1)],
        [3, 2]
    );
    assert_eq!(monitor.total_live_connections(), 5);
    assert_eq!(monitor.live_connections(7), 0, "no such shard");

    let listed = std::thread::spawn({
        let monitor = monitor.clone();
        move || monitor.connections()
    })
    .join()
    .expect("monitor thread")
    .expect("connections");
    assert_eq!(listed.len(), 2);
    let mut ids = Vec::new();
    for (shard, connections) in (0u16..).zip(&listed) {
        assert_eq!(connections.len(), placed[usize::from(shard)]);
        for c in connections {
            let Peer::Client(id) = c.peer else {
                panic!("a replica on shard {shard}")
            };
            assert_eq!(id.shard(), shard, "listed under its own shard");
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut expected: Vec<_> = clients.iter().map(|c| c.id).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every client listed once");
    let stats = monitor.stats().expect("stats");
    assert_eq!(
        stats.iter().map(|s| s.bus.connections).collect::<Vec<_>>(),
        [3, 2]
    );

    drop(clients);
    shutdown(shards, GRACE).await;
    assert!(matches!(
        monitor.connections(),
        Err(ShardError::Stopped { .. })
    ));
}
