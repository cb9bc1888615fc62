//! `bus serve` in a replica mesh (`[replicas] enabled = true`): child
//! processes forming the mesh, spec §8's replica rows (Echo, Relay), the
//! admin endpoint's `/replicaz`, SIGTERM and SIGKILL, and the key file
//! checks at start-up.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bus_cli::node::{
    BROADCAST, BROADCAST_ACK, DELIVERY, ECHO, ECHO_REPLY, RELAY, broadcast_ack_count,
};
use bus_client::{Client, ClientOptions};
use bus_core::{Command, FrameMut, GoodbyeReason, Peer, SendError};
use bus_replica::Keys;
use bus_tests::{
    STEP,
    client::RawClient,
    mesh::{CLUSTER, Keyring, MeshEvent, NodeSpec, RawDialer, TestNode, key_of},
    within,
};

use crate::common::{ServeProcess, http_get, run_bus};

/// A node's config file: TCP clients and admin on port 0, two shards, the
/// replica plane of [`CLUSTER`] on `listen` with `peers`.
fn node_config(
    dir: &Path,
    self_id: u8,
    psk: &Path,
    listen: SocketAddr,
    peers: &[(u8, SocketAddr)],
) -> PathBuf {
    node_config_with(dir, self_id, psk, listen, peers, "", "")
}

/// [`node_config`] with `before` ahead of the sections (a `[tls]` section)
/// and `replicas` appended to `[replicas]`.
fn node_config_with(
    dir: &Path,
    self_id: u8,
    psk: &Path,
    listen: SocketAddr,
    peers: &[(u8, SocketAddr)],
    before: &str,
    replicas: &str,
) -> PathBuf {
    let peers: Vec<String> = peers
        .iter()
        .map(|(id, addr)| format!("{{ id = {id}, addr = \"{addr}\" }}"))
        .collect();
    let text = format!(
        "{before}[shards]\ncount = 2\n\
         [admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [replicas]\nenabled = true\ncluster = \"{CLUSTER:#x}\"\nself_id = {self_id}\n\
         psk_file = \"{}\"\nlisten = \"{listen}\"\nreconnect_max = \"1 s\"\n\
         peers = [{}]\n{replicas}",
        psk.display(),
        peers.join(", ")
    );
    let path = dir.join(format!("node{self_id}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn serve(config: &Path) -> ServeProcess {
    ServeProcess::start(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--tcp",
        "127.0.0.1:0",
    ])
}

fn replica_addr(node: &ServeProcess) -> SocketAddr {
    *node
        .addrs
        .get("replica")
        .expect("a replica= entry on the listening line")
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn nowhere() -> SocketAddr {
    "127.0.0.1:9".parse().expect("addr")
}

/// `/replicaz` of `node`, parsed.
fn replicaz(node: &ServeProcess) -> serde_json::Value {
    let (status, body) = http_get(node.admin.expect("admin on"), "/replicaz");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Polls `/replicaz` of `node` (bounded by [`STEP`]) until `check` holds
/// for it; returns the last answer.
fn replicaz_until(
    node: &ServeProcess,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + STEP;
    loop {
        let json = replicaz(node);
        if check(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{what}: {json:#}");
        // Polling a status endpoint: it has no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_connected(json: &serde_json::Value) -> bool {
    json["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().all(|p| p["state"] == "connected"))
}

fn frame(command: u8, body: &[u8]) -> FrameMut {
    FrameMut::with_body(Command::from_u8(command), body)
}

/// A client of `node`, registered (it has had an Echo answered).
async fn client(node: &ServeProcess) -> Client {
    let client = within(
        "connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    within("echo", client.request(frame(ECHO, b"hi")))
        .await
        .expect("echo");
    client
}

#[compio::test]
async fn three_nodes_form_the_mesh_relay_broadcasts_and_survive_a_sigterm() {
    let keys = Keyring::new("serve-mesh");
    let psk = keys.key("cluster.psk", 9);
    let dir = keys.dir();
    let node2 = serve(&node_config(
        dir,
        2,
        &psk,
        any(),
        &[(0, nowhere()), (1, nowhere())],
    ));
    let node1 = serve(&node_config(
        dir,
        1,
        &psk,
        any(),
        &[(0, nowhere()), (2, replica_addr(&node2))],
    ));
    let mut node0 = serve(&node_config(
        dir,
        0,
        &psk,
        any(),
        &[(1, replica_addr(&node1)), (2, replica_addr(&node2))],
    ));
    let nodes = [&node0, &node1, &node2];
    for (id, node) in nodes.iter().enumerate() {
        let json = replicaz_until(node, "every peer connected", all_connected);
        assert_eq!(json["self_id"], id);
        assert_eq!(json["cluster"], format!("{CLUSTER:#x}"));
        let peers = json["peers"].as_array().expect("peers");
        assert_eq!(peers.len(), 2);
        for peer in peers {
            let peer_id = peer["id"].as_u64().expect("id");
            let direction = if peer_id > id as u64 {
                "dial"
            } else {
                "accept"
            };
            assert_eq!(peer["direction"], direction, "{peer}");
            assert!(peer["since"].as_u64().is_some_and(|t| t > 0), "{peer}");
            assert!(
                peer["frames_in"].is_u64() && peer["frames_out"].is_u64(),
                "{peer}"
            );
            assert!(peer.get("last_error").is_some(), "{peer}");
        }
    }
    // The replica series are in /metrics.
    let (_, metrics) = http_get(node0.admin.expect("admin"), "/metrics");
    assert!(
        metrics.contains("bus_replica_peers_connected 2\n"),
        "{metrics}"
    );

    let sender = client(&node0).await;
    let c1 = client(&node1).await;
    let c2 = client(&node2).await;
    let ack = within(
        "broadcast",
        sender.request(frame(BROADCAST, b"to the cluster")),
    )
    .await
    .expect("ack");
    assert_eq!(ack.header().command_raw(), BROADCAST_ACK);
    assert_eq!(broadcast_ack_count(&ack), 1, "node 0's own clients only");
    let own = within("own delivery", sender.recv())
        .await
        .expect("delivery");
    assert_eq!(own.body(), b"to the cluster");
    // A marker after it: each remote client gets the broadcast once, then
    // the marker (one link per pair keeps the order).
    within("marker", sender.request(frame(BROADCAST, b"marker")))
        .await
        .expect("ack");
    for (name, c) in [("node 1", &c1), ("node 2", &c2)] {
        for body in [&b"to the cluster"[..], b"marker"] {
            let delivery = within("delivery", c.recv()).await.expect("delivery");
            assert_eq!(delivery.header().command_raw(), DELIVERY, "{name}");
            assert_eq!(delivery.body(), body, "{name}");
            assert!(delivery.header().is_sealed());
        }
    }

    // SIGTERM on node 0: its replicas hear Goodbye(ShuttingDown).
    node0.signal(libc::SIGTERM);
    let status = node0.wait_exit(Duration::from_secs(8) + STEP);
    assert!(status.success(), "{status}");
    for node in [&node1, &node2] {
        let json = replicaz_until(node, "node 0 gone", |json| {
            json["peers"][0]["state"] != "connected"
        });
        let error = json["peers"][0]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("Goodbye(ShuttingDown)"), "{json:#}");
        assert_eq!(json["peers"][1]["state"], "connected", "{json:#}");
    }
    // The others keep serving: a broadcast on node 1 reaches node 2.
    let ack = within("broadcast", c1.request(frame(BROADCAST, b"still here")))
        .await
        .expect("ack");
    assert_eq!(broadcast_ack_count(&ack), 1);
    let delivery = within("delivery", c2.recv()).await.expect("delivery");
    assert_eq!(delivery.body(), b"still here");
}

#[compio::test]
async fn a_node_answers_a_replica_echo_relays_both_ways_and_says_goodbye_shutting_down() {
    let keys = Keyring::new("serve-rows");
    let psk = keys.key("cluster.psk", 9);
    let mut node = serve(&node_config(keys.dir(), 1, &psk, any(), &[(0, nowhere())]));
    let mut replica =
        RawDialer::connect(replica_addr(&node), CLUSTER, 0, Keys::new(key_of(9))).await;
    replica.authenticate(1).await;
    replicaz_until(&node, "replica 0 connected", all_connected);
    // Echo from a replica: EchoReply, stamped with the node's ids.
    replica.echo(7).await;
    // A client's Broadcast reaches the replica as a Relay.
    let c = client(&node).await;
    let ack = within("broadcast", c.request(frame(BROADCAST, b"relay me")))
        .await
        .expect("ack");
    assert_eq!(broadcast_ack_count(&ack), 1, "own clients only");
    let relay = loop {
        let f = replica.client.recv_frame().await;
        if f.header().command() != Command::Ping {
            break f;
        }
    };
    assert_eq!(relay.header().command_raw(), RELAY);
    assert_eq!(relay.body(), b"relay me");
    assert!(relay.header().is_sealed());
    assert_eq!(
        (relay.header().cluster(), relay.header().replica()),
        (CLUSTER, 1)
    );
    assert_eq!(
        within("own delivery", c.recv())
            .await
            .expect("delivery")
            .body(),
        b"relay me"
    );
    // A Relay from the replica reaches the node's clients, and comes back
    // to no replica.
    replica
        .client
        .send(&replica.frame(RELAY, 1, b"from the replica"))
        .await;
    let delivery = within("delivery", c.recv()).await.expect("delivery");
    assert_eq!(delivery.header().command_raw(), DELIVERY);
    assert_eq!(delivery.body(), b"from the replica");
    replica.echo(8).await; // nothing came back in between
    let reply = c.request(frame(ECHO, b"x")).await.expect("echo");
    assert_eq!(reply.header().command_raw(), ECHO_REPLY);
    // SIGTERM: the replica hears Goodbye(ShuttingDown).
    node.signal(libc::SIGTERM);
    let goodbye = loop {
        let f = replica.client.recv_frame().await;
        if f.header().command() != Command::Ping {
            break f;
        }
    };
    assert_eq!(goodbye.header().command(), Command::Goodbye);
    let goodbye = bus_core::Goodbye::decode(goodbye.header().command_area());
    assert_eq!(goodbye.reason, GoodbyeReason::ShuttingDown);
    replica.client.expect_closed().await;
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
}

#[compio::test]
async fn an_unknown_command_from_a_replica_closes_its_link_with_protocol_violation() {
    let keys = Keyring::new("serve-unknown");
    let psk = keys.key("cluster.psk", 9);
    let node = serve(&node_config(keys.dir(), 1, &psk, any(), &[(0, nowhere())]));
    let mut replica =
        RawDialer::connect(replica_addr(&node), CLUSTER, 0, Keys::new(key_of(9))).await;
    replica.authenticate(1).await;
    replica.client.send(&replica.frame(99, 1, b"?")).await;
    let goodbye = loop {
        let f = replica.client.recv_frame().await;
        if f.header().command() != Command::Ping {
            break f;
        }
    };
    let goodbye = bus_core::Goodbye::decode(goodbye.header().command_area());
    assert_eq!(goodbye.reason, GoodbyeReason::ProtocolViolation);
    assert!(goodbye.detail.contains("99"), "{}", goodbye.detail);
}

#[compio::test]
async fn a_node_killed_with_sigkill_and_restarted_rejoins_and_sends_meanwhile_fail_typed() {
    let keys = Keyring::new("serve-kill");
    let psk = keys.key("cluster.psk", 9);
    let config = node_config(keys.dir(), 1, &psk, any(), &[(0, nowhere())]);
    let mut child = serve(&config);
    let addr = replica_addr(&child);
    // Node 0 runs in this process and dials the child.
    let observer = TestNode::start(NodeSpec::new(0, &psk).peer(1, addr));
    observer.connected(1).await;
    child.signal(libc::SIGKILL);
    let _ = child.wait_exit(STEP);
    let reason = observer.lost(1).await;
    assert!(
        matches!(
            reason,
            bus_core::CloseReason::PeerClosed | bus_core::CloseReason::Io(_)
        ),
        "a killed process says no Goodbye: {reason:?}"
    );
    // While it is away every send fails at once, typed.
    for i in 0..3 {
        assert_eq!(observer.send(1, i, b"away"), Err(SendError::NotConnected));
    }
    // Restarted on the same replica address, it rejoins.
    let restarted_config = node_config(keys.dir(), 1, &psk, addr, &[(0, nowhere())]);
    let restarted = serve(&restarted_config);
    assert_eq!(replica_addr(&restarted), addr);
    let c = client(&restarted).await;
    let up = Instant::now();
    observer
        .wait_for(
            "node 0 rejoined by node 1",
            |e| {
                matches!(
                    e,
                    MeshEvent::Connected {
                        peer: Peer::Replica(1),
                        ..
                    }
                )
                .then_some(())
            },
            |e| {
                assert!(
                    !matches!(
                        e,
                        MeshEvent::Lost {
                            peer: Peer::Replica(1),
                            ..
                        }
                    ),
                    "lost twice: {e:?}"
                );
            },
        )
        .await;
    let bound = observer.mesh.config().reconnect_max + observer.mesh.config().handshake_grace;
    assert!(up.elapsed() < bound, "{:?}", up.elapsed());
    // Sends work again: a Relay from node 0 reaches the restarted node's
    // client.
    let mut relay = FrameMut::with_body(Command::from_u8(RELAY), b"welcome back");
    relay.header_mut().set_request(1);
    observer
        .shards()
        .send_to_replica(1, observer.mesh.stamp().stamp(relay))
        .expect("queued");
    let delivery = within("delivery", c.recv()).await.expect("delivery");
    assert_eq!(delivery.body(), b"welcome back");
    let json = replicaz(&restarted);
    assert_eq!(json["peers"][0]["state"], "connected");
}

#[test]
fn a_group_readable_key_file_is_refused_at_start_naming_the_path_and_the_fix() {
    let keys = Keyring::new("serve-perm");
    let psk = keys.file("open.psk", &[1; 32], 0o644);
    let config = node_config(keys.dir(), 0, &psk, any(), &[(1, nowhere())]);
    let (status, _out, err) = run_bus(
        &[
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
            "--tcp",
            "127.0.0.1:0",
            "--tls",
            "off",
            "--ws",
            "off",
            "--wss",
            "off",
            "--quic",
            "off",
        ],
        STEP,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&psk.display().to_string()), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(err.contains("replicas.psk_file"), "{err}");
    // An empty key file is refused the same way.
    let empty = keys.file("empty.psk", b"", 0o600);
    let config = node_config(keys.dir(), 0, &empty, any(), &[(1, nowhere())]);
    let (status, _out, err) = run_bus(
        &[
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
            "--tcp",
            "127.0.0.1:0",
            "--tls",
            "off",
            "--ws",
            "off",
            "--wss",
            "off",
            "--quic",
            "off",
        ],
        STEP,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn the_cluster_example_configs_are_valid_and_consistent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster");
    let mut nodes = Vec::new();
    for id in 0..3u8 {
        let path = dir.join(format!("node{id}.toml"));
        let config =
            bus_config::Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(config.replicas.enabled);
        assert_eq!(config.replicas.self_id, id);
        nodes.push(config);
    }
    for a in &nodes {
        assert_eq!(a.replicas.cluster, nodes[0].replicas.cluster);
        assert_eq!(a.replicas.psk_file, nodes[0].replicas.psk_file);
        for b in &nodes {
            if a.replicas.self_id == b.replicas.self_id {
                continue;
            }
            let peer = a
                .replicas
                .peers
                .iter()
                .find(|p| p.id == b.replicas.self_id)
                .expect("every other node is a peer");
            assert_eq!(peer.addr, b.replicas.listen, "where the peer listens");
        }
    }
    // Three nodes on one machine: no two bind one address.
    let mut addrs = std::collections::HashSet::new();
    for c in &nodes {
        for addr in [c.tcp.listen, c.replicas.listen, c.admin.listen] {
            assert!(addrs.insert(addr), "{addr} bound twice");
        }
    }
}

#[test]
fn sighup_reloads_the_replica_keys() {
    let keys = Keyring::new("serve-hup");
    let psk = keys.key("cluster.psk", 9);
    let mut node = serve(&node_config(keys.dir(), 0, &psk, any(), &[(1, nowhere())]));
    node.signal(libc::SIGHUP);
    node.wait_line("SIGHUP: replica keys reloaded");
    keys.file("cluster.psk", &[9; 32], 0o640);
    node.signal(libc::SIGHUP);
    let line = node.wait_line("SIGHUP: replica key reload failed");
    assert!(line.contains("chmod 600"), "{line}");
}

#[compio::test]
async fn two_nodes_form_the_mesh_over_tls_with_the_client_tls_listener_off() {
    let keys = Keyring::new("serve-tls");
    let psk = keys.key("cluster.psk", 9);
    let pki = bus_tests::pki::pki();
    // ServeProcess turns the client TLS listener off (`--tls off`); the
    // replica listener serves the [tls] certificate all the same.
    let before = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.server.cert.display(),
        pki.server.key.display()
    );
    let replicas = format!("tls = true\nca_file = \"{}\"\n", pki.ca.display());
    let node1 = serve(&node_config_with(
        keys.dir(),
        1,
        &psk,
        any(),
        &[(0, nowhere())],
        &before,
        &replicas,
    ));
    assert!(!node1.addrs.contains_key("tls"), "no client TLS listener");
    let node0 = serve(&node_config_with(
        keys.dir(),
        0,
        &psk,
        any(),
        &[(1, replica_addr(&node1))],
        &before,
        &replicas,
    ));
    for node in [&node0, &node1] {
        replicaz_until(node, "the peer connected over TLS", all_connected);
    }
    let (_, connz) = http_get(node0.admin.expect("admin"), "/connz");
    let connz: serde_json::Value = serde_json::from_str(&connz).expect("JSON");
    let replica = connz["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .flat_map(|shard| shard["connections"].as_array().expect("connections").iter())
        .find(|c| c["kind"] == "replica")
        .cloned()
        .expect("a replica connection in /connz");
    assert_eq!(replica["transport"], "tls", "{replica}");
    let c0 = client(&node0).await;
    let c1 = client(&node1).await;
    within("broadcast", c0.request(frame(BROADCAST, b"over tls")))
        .await
        .expect("ack");
    let delivery = within("delivery", c1.recv()).await.expect("delivery");
    assert_eq!(delivery.body(), b"over tls");
}
