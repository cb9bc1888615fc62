//! The multi-shard runtime over loopback: every scenario of
//! `bus_tests::shard` for each delegated transport (TCP, TLS, WS, WSS),
//! QUIC served on one shard, plus what only the shard layer's own API has
//! (`serve_on`, CPU pinning, start-up failures).

use std::{
    collections::BTreeSet,
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

use bus_core::{Bus, Frame, Peer, transport::Listener};
use bus_shard::{ShardContext, ShardError, Shards, ShardsConfig};
use bus_tcp::TcpListenerConfig;
use bus_tests::{
    scenarios::{SHUTDOWN_SETTLE, WAKE_SLACK},
    shard::{
        Client, DELIVERY, GRACE, Harness, RELAY, RELAY_ACK, connect_many, loopback, per_shard,
        shutdown,
    },
    transport::{Quic, Tcp, Tls},
    within,
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

/// The CPUs the calling thread may use, from the kernel's
/// `Cpus_allowed_list` (`0-3,6`).
fn allowed_cpus() -> Option<BTreeSet<usize>> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = BTreeSet::new();
    for range in list.split(',') {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        cpus.extend(low.parse::<usize>().ok()?..=high.parse::<usize>().ok()?);
    }
    Some(cpus)
}

/// What `pin_cpus` gives shard `shard` when the starting thread may use
/// `allowed` and sees `cores` of them (operations.md, `[shards]`): CPU
/// `shard mod cores` if it is one the thread may use, else no pinning, so
/// the shard keeps the starting thread's CPUs.
fn expected_affinity(shard: u16, cores: usize, allowed: &BTreeSet<usize>) -> BTreeSet<usize> {
    let cpu = usize::from(shard) % cores;
    if allowed.contains(&cpu) {
        BTreeSet::from([cpu])
    } else {
        allowed.clone()
    }
}

/// Starts `count` pinned shards from the calling thread and returns each
/// shard's CPU set as its factory saw it, in shard order, and what the
/// starting thread was allowed.
fn start_pinned(count: u16) -> (Vec<BTreeSet<usize>>, BTreeSet<usize>, usize) {
    let allowed = allowed_cpus().expect("/proc/thread-self/status");
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut config = ShardsConfig::new(count);
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
        usize::from(count),
        "the factory ran once per shard before start returned"
    );
    let report = shards.shutdown(GRACE);
    assert_eq!(report.threads_left, 0, "{report:?}");
    let sets = seen
        .into_iter()
        .map(|(_, cpus)| cpus.expect("the shard's CPU list"))
        .collect();
    (sets, allowed, cores)
}

#[test]
fn pinned_shards_run_on_their_own_cpu() {
    let (seen, allowed, cores) = start_pinned(2);
    // Checked in every environment: pinned where the CPU is allowed, left
    // unpinned (on the starting thread's CPUs) where it is not.
    for (shard, cpus) in (0u16..).zip(&seen) {
        assert_eq!(
            cpus,
            &expected_affinity(shard, cores, &allowed),
            "shard {shard} (allowed {allowed:?}, {cores} cores)"
        );
    }
    if allowed.len() == cores && allowed.iter().copied().eq(0..cores) {
        for (shard, cpus) in (0u16..).zip(&seen) {
            assert_eq!(cpus.len(), 1, "shard {shard} is pinned to one CPU");
        }
    } else {
        println!(
            "note: this process may use CPUs {allowed:?}, not 0..{cores}: shards whose CPU \
             is not allowed stay unpinned (checked above)"
        );
    }
}

/// A thread that may use only the machine's last CPU starts pinned shards:
/// `available_parallelism` sees one core, every shard asks for CPU 0, which
/// is not allowed, so every shard stays unpinned, on the starting thread's
/// CPU (the branch `pinned_shards_run_on_their_own_cpu` cannot reach on an
/// unrestricted machine).
#[test]
fn pinned_shards_stay_unpinned_when_their_cpu_is_not_allowed() {
    let allowed = allowed_cpus().expect("/proc/thread-self/status");
    let Some(&last) = allowed.iter().next_back().filter(|&&cpu| cpu != 0) else {
        println!("SKIP: this process may use only CPU 0, so no CPU other than 0 can be chosen");
        return;
    };
    let seen = std::thread::spawn(move || {
        restrict_this_thread_to(last);
        assert_eq!(allowed_cpus(), Some(BTreeSet::from([last])));
        start_pinned(2).0
    })
    .join()
    .expect("the restricted thread");
    for (shard, cpus) in seen.iter().enumerate() {
        assert_eq!(
            cpus,
            &BTreeSet::from([last]),
            "shard {shard} stays on the starting thread's CPU"
        );
    }
}

/// Restricts the calling thread (only) to `cpu`.
fn restrict_this_thread_to(cpu: usize) {
    // SAFETY: `cpu_set_t` is a plain bitset that may be zeroed; `CPU_SET`
    // only sets a bit of it (`cpu` is below `CPU_SETSIZE`: the kernel
    // reported it); `sched_setaffinity` reads `size_of::<cpu_set_t>()`
    // bytes of it for the calling thread (pid 0).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// A client that never closes cannot stretch `Shards::shutdown` past its
/// bound: each shard's bus waits out the grace (the client keeps its side
/// open for longer, `close_peer_timeout` 2 s), cancels it within 500 ms,
/// and the whole call returns within `grace + bus_shard::config::SHUTDOWN_MARGIN`, every
/// thread joined.
#[compio::test]
async fn shutdown_is_bounded_by_clients_that_never_close() {
    let grace = Duration::from_millis(300);
    let harness = Harness::new();
    let shards = harness.start(builder(ShardsConfig::new(2)).listen_tcp(loopback()));
    let clients = connect_many::<Tcp>(shards.local_addrs()[0], 2).await;
    assert_eq!(per_shard(&clients, 2), [1, 1]);
    let started = Instant::now();
    let report = within(
        "shutdown",
        compio::runtime::spawn_blocking(move || shards.shutdown(grace)),
    )
    .await
    .expect("no panic");
    let took = started.elapsed();
    assert_eq!(report.threads_joined, 2, "{report:?}");
    assert_eq!(report.threads_left, 0, "{report:?}");
    assert_eq!(report.tasks_left(), 0, "{report:?}");
    for exit in &report.shards {
        assert_eq!(
            exit.bus.cancelled, 1,
            "shard {}: {:?}",
            exit.shard, exit.bus
        );
        assert!(
            exit.bus.elapsed >= grace && exit.bus.elapsed <= grace + SHUTDOWN_SETTLE,
            "shard {} shut down in {:?}, grace {grace:?} + 500 ms promised",
            exit.shard,
            exit.bus.elapsed
        );
    }
    assert!(
        report.elapsed >= grace && report.elapsed <= grace + bus_shard::config::SHUTDOWN_MARGIN,
        "{report:?}"
    );
    assert!(
        took <= grace + bus_shard::config::SHUTDOWN_MARGIN + WAKE_SLACK,
        "the caller waited {took:?}"
    );
    drop(clients);
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
