//! The replica mesh (spec §4) on real loopback sockets: nodes in this
//! process (each on its own shards), raw dialers speaking the handshake by
//! hand, and relays in the middle of a link.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use bus_core::{CloseReason, Command, FrameMut, GoodbyeReason, Peer, SendError, TransportKind};
use bus_mesh::{FailureReason, LinkDirection, PeerState};
use bus_replica::{
    Binding, Direction, Keys, Refusal, Transcript,
    auth::TranscriptFields,
    message::{Challenge, Finish, Hello},
};
use bus_tests::{
    client::{RawClient, TcpClient},
    eventually,
    mesh::{
        CLUSTER, Keyring, MeshEvent, NodeClient, NodeSpec, OUTSIDE, RECORD, RawDialer, Relay,
        TestNode, TlsRelay, key_of, start_mesh,
    },
    within,
};

/// A placeholder for a peer this node only accepts from.
fn nowhere() -> std::net::SocketAddr {
    "127.0.0.1:9".parse().expect("addr")
}

/// The shard (or [`OUTSIDE`]) a RECORD frame was sent from.
fn sent_from(frame: &bus_core::Frame) -> u16 {
    let area = frame.header().command_area();
    u16::from_le_bytes([area[0], area[1]])
}

#[compio::test]
async fn three_nodes_form_the_full_mesh_and_frames_arrive_once_sealed_with_cluster_and_replica() {
    let keys = Keyring::new("mesh3");
    let psk = keys.key("psk", 7);
    let nodes = start_mesh(3, &psk, NodeSpec::new);
    for node in &nodes {
        node.full_mesh().await;
        let status = node.status();
        assert_eq!(status.self_id, node.id);
        for peer in &status.peers {
            let expected = if peer.id > node.id {
                LinkDirection::Dial
            } else {
                LinkDirection::Accept
            };
            assert_eq!(
                peer.direction, expected,
                "node {} peer {}",
                node.id, peer.id
            );
            assert_eq!(peer.connections, 1);
        }
    }
    // From each shard of each node (a client on each: round-robin over two
    // shards), and from outside the shards.
    let mut expected: HashMap<u8, HashSet<Vec<u8>>> = HashMap::new();
    for node in &nodes {
        let mut clients = [
            NodeClient::connect(node).await,
            NodeClient::connect(node).await,
        ];
        for peer in node.mesh.peer_ids() {
            for (c, client) in clients.iter_mut().enumerate() {
                let body = format!("{} -> {peer} from client {c}", node.id).into_bytes();
                assert_eq!(client.send_to(peer, &body).await, 0, "queued");
                expected.entry(peer).or_default().insert(body);
            }
            let body = format!("{} -> {peer} from outside", node.id).into_bytes();
            node.send(peer, 9, &body).expect("queued from outside");
            expected.entry(peer).or_default().insert(body);
        }
    }
    for node in &nodes {
        let want = &expected[&node.id];
        let mut got: HashSet<Vec<u8>> = HashSet::new();
        let mut shards_seen: HashMap<u8, HashSet<u16>> = HashMap::new();
        while got.len() < want.len() {
            let MeshEvent::Frame { from, frame, .. } = node.next_event("a replica frame").await
            else {
                continue;
            };
            let header = frame.header();
            assert_eq!(header.command_raw(), RECORD);
            assert!(header.is_sealed(), "replica frames are sealed");
            assert_eq!(header.validate(1 << 20), Ok(()));
            assert_eq!(header.cluster(), CLUSTER);
            assert_eq!(header.replica(), from, "the sender's id");
            assert!(
                got.insert(frame.body().to_vec()),
                "arrived twice: {:?}",
                String::from_utf8_lossy(frame.body())
            );
            shards_seen
                .entry(from)
                .or_default()
                .insert(sent_from(&frame));
        }
        assert_eq!(&got, want, "node {}", node.id);
        for (from, shards) in shards_seen {
            // Both shards of the sender, and outside: every send reached
            // the shard that owns the link.
            assert_eq!(shards, HashSet::from([0, 1, OUTSIDE]), "from {from}");
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Node 1 of a three-node cluster, for the refusal tests: it accepts from
/// 0 and dials 2 (which is nowhere).
fn node1(keys: &Keyring) -> TestNode {
    let psk = keys.key("psk", 7);
    TestNode::start(
        NodeSpec::new(1, &psk)
            .peer(0, nowhere())
            .peer(2, nowhere())
            .shards(1),
    )
}

fn good_keys() -> Keys {
    Keys::new(key_of(7))
}

/// Expects a refusal with `refusal`'s status, then the close.
async fn expect_refusal(dialer: &mut RawDialer, to: u8, refusal: Refusal) {
    let (_, _, answer) = dialer.hello(to).await;
    assert_eq!(answer.header().command(), Command::ReplicaChallenge);
    let challenge = Challenge::decode(&answer).expect("a valid Challenge");
    assert_eq!(challenge.refusal(), Some(refusal));
    assert_eq!(challenge.status, refusal.status());
    assert_eq!(challenge.replica, 1, "the acceptor's id");
    assert_eq!(
        challenge.mac_a, [0; 32],
        "a refusal carries only the status"
    );
    dialer.client.expect_closed().await;
}

#[compio::test]
async fn a_hello_of_another_cluster_is_refused_with_status_2() {
    let keys = Keyring::new("refuse2");
    let node = node1(&keys);
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER ^ 1, 0, good_keys()).await;
    expect_refusal(&mut dialer, 1, Refusal::WrongCluster).await;
    eventually("counted", || {
        node.status().failures(FailureReason::WrongCluster) == 1
    })
    .await;
}

#[compio::test]
async fn a_hello_from_an_unknown_replica_is_refused_with_status_1() {
    let keys = Keyring::new("refuse1");
    let node = node1(&keys);
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER, 7, good_keys()).await;
    expect_refusal(&mut dialer, 1, Refusal::UnknownReplica).await;
    eventually("counted", || {
        node.status().failures(FailureReason::UnknownReplica) == 1
    })
    .await;
}

#[compio::test]
async fn a_hello_from_a_higher_id_is_refused_with_status_4() {
    let keys = Keyring::new("refuse4");
    let node = node1(&keys);
    // Replica 2 is configured, but node 1 dials it, not the other way.
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER, 2, good_keys()).await;
    expect_refusal(&mut dialer, 1, Refusal::WrongDirection).await;
    eventually("counted", || {
        node.status().failures(FailureReason::WrongDirection) == 1
    })
    .await;
}

#[compio::test]
async fn a_second_connection_from_a_connected_replica_is_refused_with_status_3_and_the_first_keeps_working()
 {
    let keys = Keyring::new("refuse3");
    let node = node1(&keys);
    let mut first = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    first.authenticate(1).await;
    let (_, info) = node.connected(0).await;
    assert_eq!(info.transport, TransportKind::Tcp);
    first.echo(1).await;
    let mut second = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    expect_refusal(&mut second, 1, Refusal::Duplicate).await;
    first.echo(2).await;
    let status = node.status();
    let peer = status.peer(0).expect("peer 0");
    assert_eq!(peer.state, PeerState::Connected, "{peer:?}");
    eventually("counted", || {
        node.status().failures(FailureReason::Duplicate) == 1
    })
    .await;
}

/// A Hello, the node's ok Challenge, and a Finish whose MAC is made with
/// `keys` (the right ones or not).
async fn finish_made_with(keys: &Keys, dialer: &mut RawDialer) -> bus_core::Frame {
    let nonce_d = [0x5a; 32];
    let hello = Hello {
        cluster: CLUSTER,
        replica: 0,
        nonce_d,
    }
    .encode();
    dialer.client.send(&hello).await;
    let challenge = Challenge::decode(&dialer.client.recv_frame().await).expect("Challenge");
    assert_eq!(challenge.refusal(), None, "an ok Challenge");
    let transcript = Transcript::new(&TranscriptFields {
        cluster: CLUSTER,
        dialer_id: 0,
        acceptor_id: 1,
        nonce_d: &nonce_d,
        nonce_a: &challenge.nonce_a,
        binding: &Binding::PLAIN_TCP,
    });
    Finish {
        cluster: CLUSTER,
        replica: 0,
        mac_d: keys.sign(&transcript, Direction::Dialer),
    }
    .encode()
}

#[compio::test]
async fn a_finish_made_with_the_wrong_key_gets_goodbye_handshake_failed() {
    let keys = Keyring::new("wrongpsk");
    let node = node1(&keys);
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    let finish = finish_made_with(&Keys::new(key_of(8)), &mut dialer).await;
    dialer.client.send(&finish).await;
    let goodbye = dialer
        .client
        .expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    assert!(goodbye.detail.contains("MAC"), "{}", goodbye.detail);
    eventually("counted", || {
        node.status().failures(FailureReason::BadMac) == 1
    })
    .await;
    let status = node.status();
    let peer = status.peer(0).expect("peer 0");
    assert_eq!(peer.state, PeerState::Refused);
    assert_eq!(peer.connections, 0);
    // And the same exchange with the right key authenticates.
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    let finish = finish_made_with(&good_keys(), &mut dialer).await;
    dialer.client.send(&finish).await;
    node.connected(0).await;
    dialer.echo(3).await;
}

#[compio::test]
async fn a_replayed_finish_gets_goodbye_handshake_failed() {
    let keys = Keyring::new("replay");
    let node = node1(&keys);
    let mut recorded = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    let (hello, finish) = recorded.authenticate(1).await;
    node.connected(0).await;
    recorded.echo(1).await;
    recorded.client.close().await;
    node.lost(0).await;
    // The same Hello and the same Finish on a new connection: the node's
    // fresh nonce makes the recorded MAC worthless.
    let mut replay = TcpClient::connect(node.replica_addr).await;
    replay.send(&hello).await;
    let challenge = Challenge::decode(&replay.recv_frame().await).expect("Challenge");
    assert_eq!(challenge.refusal(), None);
    replay.send(&finish).await;
    replay
        .expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    eventually("counted", || {
        node.status().failures(FailureReason::BadMac) == 1
    })
    .await;
    assert_eq!(node.status().peer(0).expect("peer").connections, 1);
}

#[compio::test]
async fn frames_other_than_the_handshake_before_it_get_goodbye_handshake_failed() {
    let keys = Keyring::new("early");
    let node = node1(&keys);
    // An application frame with a body: larger than a handshake message,
    // refused before its body is read.
    let mut raw = TcpClient::connect(node.replica_addr).await;
    raw.send(&bus_tests::frames::app(16, 1, 64)).await;
    raw.expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    // A bare application frame, and a Ping: not a Hello.
    for command in [Command::from_u8(16), Command::Ping] {
        let mut raw = TcpClient::connect(node.replica_addr).await;
        let mut frame = FrameMut::new(command, 0);
        frame.header_mut().set_cluster(CLUSTER);
        frame.seal();
        raw.send(&frame.freeze()).await;
        let goodbye = raw
            .expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
            .await;
        assert!(goodbye.detail.contains("expected"), "{}", goodbye.detail);
    }
    // An unsealed Hello.
    let mut raw = TcpClient::connect(node.replica_addr).await;
    let mut hello = Hello {
        cluster: CLUSTER,
        replica: 0,
        nonce_d: [1; 32],
    }
    .encode()
    .into_mut();
    hello.header_mut().set_checksum(0);
    raw.send(&hello.freeze()).await;
    raw.expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    eventually("counted", || {
        let status = node.status();
        status.failures(FailureReason::Malformed) == 2
            && status.failures(FailureReason::UnexpectedCommand) == 2
    })
    .await;
    assert_eq!(node.status().peer(0).expect("peer").connections, 0);
}

#[compio::test]
async fn an_unsealed_frame_after_the_handshake_gets_checksum_mismatch() {
    let keys = Keyring::new("unsealed");
    let node = node1(&keys);
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    dialer.authenticate(1).await;
    node.connected(0).await;
    dialer.echo(1).await;
    let mut frame = FrameMut::with_body(Command::from_u8(RECORD), b"not sealed");
    frame.header_mut().set_cluster(CLUSTER);
    frame.header_mut().set_replica(0);
    dialer.client.send(&frame.freeze()).await;
    // Keep-alive Pings may come before the Goodbye.
    loop {
        let next = dialer.client.recv_frame().await;
        if next.header().command() == Command::Ping {
            continue;
        }
        assert_eq!(next.header().command(), Command::Goodbye, "{next:?}");
        let goodbye = bus_core::Goodbye::decode(next.header().command_area());
        assert_eq!(goodbye.reason, GoodbyeReason::ChecksumMismatch);
        break;
    }
    dialer.client.expect_closed().await;
    assert_eq!(
        node.lost(0).await,
        CloseReason::ProtocolViolation(GoodbyeReason::ChecksumMismatch)
    );
}

#[compio::test]
async fn a_silent_connection_is_closed_after_handshake_grace() {
    let keys = Keyring::new("silent");
    let psk = keys.key("psk", 7);
    let grace = Duration::from_millis(800);
    let node = TestNode::start(
        NodeSpec::new(1, &psk)
            .peer(0, nowhere())
            .shards(1)
            .grace(grace),
    );
    let mut raw = TcpClient::connect(node.replica_addr).await;
    let start = Instant::now();
    let goodbye = raw
        .expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    let waited = start.elapsed();
    assert!(goodbye.detail.contains("within"), "{}", goodbye.detail);
    assert!(
        waited >= grace.saturating_sub(Duration::from_millis(50)),
        "{waited:?}"
    );
    assert!(waited < grace + Duration::from_secs(3), "{waited:?}");
    eventually("counted", || {
        node.status().failures(FailureReason::Timeout) == 1
    })
    .await;
}

#[compio::test]
async fn a_dialer_whose_peer_mac_does_not_verify_says_goodbye_handshake_failed() {
    let keys = Keyring::new("badmaca");
    let psk = keys.key("psk", 7);
    let listener = compio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let node = TestNode::start(NodeSpec::new(0, &psk).peer(1, addr).shards(1));
    let (stream, _) = within("the node dials", listener.accept())
        .await
        .expect("accept");
    let mut raw = TcpClient::new(stream);
    let hello = Hello::decode(&raw.recv_frame().await).expect("a Hello");
    assert_eq!((hello.cluster, hello.replica), (CLUSTER, 0));
    raw.send(&Challenge::accept(CLUSTER, 1, [3; 32], [4; 32]).encode())
        .await;
    let goodbye = raw
        .expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    assert!(goodbye.detail.contains("MAC"), "{}", goodbye.detail);
    node.peer_state(1, PeerState::Refused).await;
    let status = node.status();
    assert_eq!(status.failures(FailureReason::BadMac), 1);
    let last = status.peer(1).and_then(|p| p.last_error.clone());
    assert!(last.is_some_and(|e| e.contains("MAC")), "{status:?}");
}

#[compio::test]
async fn the_dialer_redials_after_the_acceptor_closes_within_reconnect_max_plus_grace() {
    let keys = Keyring::new("redial");
    let psk = keys.key("psk", 7);
    let nodes = start_mesh(2, &psk, |id, psk| NodeSpec::new(id, psk).shards(1));
    let (dialer, acceptor) = (&nodes[0], &nodes[1]);
    dialer.connected(1).await;
    acceptor.connected(0).await;
    let mut client = NodeClient::connect(acceptor).await;
    assert_eq!(client.close_replica(0).await, 0);
    let closed = Instant::now();
    let reason = dialer.lost(1).await;
    assert!(
        matches!(&reason, CloseReason::PeerGoodbye(g) if g.reason == GoodbyeReason::Normal),
        "{reason:?}"
    );
    assert_eq!(
        acceptor.lost(0).await,
        CloseReason::Closed(GoodbyeReason::Normal)
    );
    dialer.connected(1).await;
    let reconnected = closed.elapsed();
    let config = dialer.mesh.config();
    let bound = config.reconnect_max + config.handshake_grace;
    assert!(reconnected < bound, "{reconnected:?} >= {bound:?}");
    acceptor.connected(0).await;
    let status = dialer.status();
    assert_eq!(status.peer(1).expect("peer").connections, 2);
    assert!(status.reconnects >= 1);
    for node in nodes {
        node.shutdown().await;
    }
}

#[compio::test]
async fn a_restarted_acceptor_is_redialed_within_reconnect_max_plus_grace() {
    let keys = Keyring::new("restart");
    let psk = keys.key("psk", 7);
    let mut nodes = start_mesh(2, &psk, |id, psk| NodeSpec::new(id, psk).shards(1));
    let acceptor = nodes.pop().expect("node 1");
    let dialer = nodes.pop().expect("node 0");
    dialer.connected(1).await;
    // The dialer registers the link as soon as it sent its Finish; the
    // acceptor once it verified it. A shutdown in between cancels the
    // acceptor's handshake (the dialer sees a reset, not a Goodbye).
    acceptor.connected(0).await;
    let addr = acceptor.replica_addr;
    acceptor.shutdown().await;
    let reason = dialer.lost(1).await;
    assert!(
        matches!(&reason, CloseReason::PeerGoodbye(g) if g.reason == GoodbyeReason::ShuttingDown),
        "{reason:?}"
    );
    // While it is away, sends fail at once with a typed error.
    assert_eq!(dialer.send(1, 1, b"away"), Err(SendError::NotConnected));
    let mut spec = NodeSpec::new(1, &psk).peer(0, nowhere()).shards(1);
    spec.replicas.listen = addr;
    let restarted = TestNode::start(spec);
    let up = Instant::now();
    dialer.connected(1).await;
    let config = dialer.mesh.config();
    let bound = config.reconnect_max + config.handshake_grace;
    assert!(up.elapsed() < bound, "{:?} >= {bound:?}", up.elapsed());
    restarted.connected(0).await;
    dialer.send(1, 2, b"back").expect("queued");
    let got = restarted
        .wait_for(
            "the frame after the restart",
            |e| match e {
                MeshEvent::Frame { frame, .. } => Some(frame.body().to_vec()),
                _ => None,
            },
            |_| {},
        )
        .await;
    assert_eq!(got, b"back");
    dialer.shutdown().await;
    restarted.shutdown().await;
}

#[compio::test]
async fn a_refusing_peer_is_redialed_with_backoff_and_a_bounded_dial_rate() {
    let keys = Keyring::new("backoff");
    let psk = keys.key("psk", 7);
    let listener = compio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let node = TestNode::start(NodeSpec::new(0, &psk).peer(1, addr).shards(1));
    let window = Duration::from_secs(3);
    let start = Instant::now();
    let mut dials = Vec::new();
    while start.elapsed() < window {
        let left = window.saturating_sub(start.elapsed());
        let Ok(accepted) = compio::runtime::time::timeout(left, listener.accept()).await else {
            break;
        };
        let (stream, _) = accepted.expect("accept");
        dials.push(Instant::now());
        let mut raw = TcpClient::new(stream);
        Hello::decode(&raw.recv_frame().await).expect("a Hello");
        raw.send(&Challenge::refuse(CLUSTER, 1, Refusal::Duplicate).encode())
            .await;
        raw.close().await;
    }
    let n = dials.len();
    // reconnect_max is 1 s: at least one dial per second keeps coming.
    assert!(n >= 3, "only {n} dials in {window:?}");
    // The floor (100 ms) bounds the rate: at most 10 per second.
    let floor = bus_mesh::limits::REDIAL_FLOOR;
    let most = usize::try_from(window.as_millis() / floor.as_millis()).expect("small") + 1;
    assert!(n <= most, "{n} dials in {window:?}");
    for pair in dials.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= floor.saturating_sub(Duration::from_millis(10)),
            "{gap:?}"
        );
    }
    let status = node.status();
    let peer = status.peer(1).expect("peer 1");
    assert!(
        matches!(peer.state, PeerState::Refused | PeerState::Connecting),
        "{peer:?}"
    );
    assert!(
        peer.last_error
            .as_deref()
            .is_some_and(|e| e.contains("status 3")),
        "{peer:?}"
    );
    assert!(status.failures(FailureReason::Duplicate) >= 3);
    assert!(status.reconnects >= 2);
}

#[compio::test]
async fn nodes_mid_rotation_form_the_mesh_and_a_node_with_a_third_key_is_refused() {
    let keys = Keyring::new("rotation");
    let old = keys.key("old", 1);
    let new = keys.key("new", 2);
    let third = keys.key("third", 3);
    let nodes = start_mesh(3, &old, |id, _| match id {
        // Signs with the new key, still verifies the old.
        0 => NodeSpec::new(0, &new).verify_with(&old),
        // Signs with the old key, already verifies the new.
        1 => NodeSpec::new(1, &old).verify_with(&new),
        _ => NodeSpec::new(2, &third),
    });
    nodes[0].connected(1).await;
    nodes[1].connected(0).await;
    for dialer in &nodes[..2] {
        dialer.peer_state(2, PeerState::Refused).await;
        eventually("two refusals", || {
            dialer.status().failures(FailureReason::BadMac) >= 2
        })
        .await;
        let status = dialer.status();
        let peer = status.peer(2).expect("peer 2");
        assert_eq!(peer.connections, 0);
        assert!(
            peer.last_error
                .as_deref()
                .is_some_and(|e| e.contains("MAC")),
            "{peer:?}"
        );
    }
    let third_node = &nodes[2];
    eventually("node 2 heard both dialers give up", || {
        third_node.status().failures(FailureReason::PeerGoodbye) >= 2
    })
    .await;
    let status = third_node.status();
    assert!(
        status.peers.iter().all(|p| p.connections == 0),
        "{status:?}"
    );
    assert_eq!(status.handshakes, 0);
    // Node 0 and node 1 kept their link the whole time.
    assert_eq!(nodes[0].status().peer(1).expect("peer").connections, 1);
}

#[compio::test]
async fn keys_roll_through_a_reload_without_losing_the_link() {
    let keys = Keyring::new("reload");
    let files: Vec<_> = (0..2)
        .map(|id| {
            (
                keys.key(&format!("sign{id}"), 1),
                keys.key(&format!("verify{id}"), 1),
            )
        })
        .collect();
    let acceptor = TestNode::start(
        NodeSpec::new(1, &files[1].0)
            .verify_with(&files[1].1)
            .peer(0, nowhere())
            .shards(1),
    );
    let relay = Relay::start(acceptor.replica_addr);
    let dialer = TestNode::start(
        NodeSpec::new(0, &files[0].0)
            .verify_with(&files[0].1)
            .peer(1, relay.addr())
            .shards(1),
    );
    dialer.connected(1).await;
    acceptor.connected(0).await;
    let nodes = [&dialer, &acceptor];
    // (sign, verify) of every node after each step, one node at a time.
    let steps = [(1, 2), (2, 1), (2, 2)];
    let mut cuts = 0;
    for (sign, verify) in steps {
        for (id, node) in nodes.iter().enumerate() {
            keys.key(&format!("sign{id}"), sign);
            keys.key(&format!("verify{id}"), verify);
            node.mesh.reload().expect("reload");
            // New handshakes use the new keys: force one.
            relay.cut();
            cuts += 1;
            dialer.lost(1).await;
            acceptor.lost(0).await;
            dialer.connected(1).await;
            acceptor.connected(0).await;
        }
    }
    let status = dialer.status();
    assert_eq!(status.peer(1).expect("peer").connections, 1 + cuts);
    // A broken key file is refused with the fix; the keys in use stay.
    keys.file("sign0", &[2; 32], 0o644);
    let err = dialer
        .mesh
        .reload()
        .expect_err("group-readable")
        .to_string();
    assert!(err.contains("sign0") && err.contains("chmod 600"), "{err}");
    relay.cut();
    dialer.lost(1).await;
    dialer.connected(1).await;
    dialer.shutdown().await;
    acceptor.shutdown().await;
}

#[compio::test]
async fn the_mesh_forms_over_tls() {
    let keys = Keyring::new("tls");
    let psk = keys.key("psk", 7);
    let nodes = start_mesh(3, &psk, |id, psk| NodeSpec::new(id, psk).tls());
    for node in &nodes {
        for _ in 0..2 {
            let MeshEvent::Connected { peer, info, .. } =
                node.next_event("a replica connected").await
            else {
                panic!("expected a connection first");
            };
            let Peer::Replica(id) = peer else {
                panic!("{peer:?}");
            };
            assert_eq!(info.transport, TransportKind::Tls);
            // The dialer verified the acceptor's certificate; acceptors ask
            // for none (the PSK authenticates the dialer).
            if id > node.id {
                assert!(
                    info.identity
                        .as_deref()
                        .is_some_and(|name| name.contains("bus-test-server")),
                    "{info:?}"
                );
            } else {
                assert_eq!(info.identity, None);
            }
        }
        assert!(node.status().tls);
    }
    nodes[0].send(2, 1, b"over tls").expect("queued");
    let got = nodes[2]
        .wait_for(
            "the frame over TLS",
            |e| match e {
                MeshEvent::Frame { from: 0, frame, .. } => Some(frame.body().to_vec()),
                _ => None,
            },
            |_| {},
        )
        .await;
    assert_eq!(got, b"over tls");
    for node in nodes {
        node.shutdown().await;
    }
}

#[compio::test]
async fn a_relay_terminating_tls_on_both_sides_cannot_complete_a_handshake() {
    let keys = Keyring::new("tlsrelay");
    let psk = keys.key("psk", 7);
    let acceptor = TestNode::start(NodeSpec::new(1, &psk).peer(0, nowhere()).tls());
    let relay = TlsRelay::start(acceptor.replica_addr);
    let dialer = TestNode::start(NodeSpec::new(0, &psk).peer(1, relay.addr()).tls());
    eventually("the dialer refused twice", || {
        dialer.status().failures(FailureReason::BadMac) >= 2
    })
    .await;
    dialer.peer_state(1, PeerState::Refused).await;
    // The relay's TLS was fine on both sides: Hello, Challenge and the
    // dialer's Goodbye passed through it.
    assert!(relay.forwarded() >= 6, "{}", relay.forwarded());
    eventually("the acceptor heard the Goodbyes", || {
        acceptor.status().failures(FailureReason::PeerGoodbye) >= 2
    })
    .await;
    assert_eq!(acceptor.status().handshakes, 0);
    assert_eq!(dialer.status().handshakes, 0);
    assert!(acceptor.events.is_empty(), "no connection registered");
}

#[compio::test]
async fn a_cut_link_is_reported_lost_once_and_redialed() {
    let keys = Keyring::new("cut");
    let psk = keys.key("psk", 7);
    let acceptor = TestNode::start(NodeSpec::new(1, &psk).peer(0, nowhere()));
    let relay = Relay::start(acceptor.replica_addr);
    let dialer = TestNode::start(NodeSpec::new(0, &psk).peer(1, relay.addr()));
    dialer.connected(1).await;
    acceptor.connected(0).await;
    relay.cut();
    let cut = Instant::now();
    dialer.lost(1).await;
    acceptor.lost(0).await;
    // `lost` fails on a second loss before the reconnection; `connected`
    // then skips nothing but frames.
    dialer.connected(1).await;
    acceptor.connected(0).await;
    let config = dialer.mesh.config();
    assert!(cut.elapsed() < config.reconnect_max + config.handshake_grace);
    dialer.send(1, 1, b"after the cut").expect("queued");
    let got = acceptor
        .wait_for(
            "a frame after the cut",
            |e| match e {
                MeshEvent::Frame { frame, .. } => Some(frame.body().to_vec()),
                _ => None,
            },
            |e| panic!("unexpected {e:?}"),
        )
        .await;
    assert_eq!(got, b"after the cut");
    assert_eq!(relay.accepted(), 2);
}

#[compio::test]
async fn a_blackholed_link_is_detected_within_the_idle_timeout_and_healed() {
    let keys = Keyring::new("blackhole");
    let psk = keys.key("psk", 7);
    let keepalive = Duration::from_millis(250);
    let idle = Duration::from_secs(1);
    let spec = |id| {
        NodeSpec::new(id, &psk)
            .liveness(keepalive, idle)
            .grace(Duration::from_secs(1))
    };
    let acceptor = TestNode::start(spec(1).peer(0, nowhere()));
    let relay = Relay::start(acceptor.replica_addr);
    let dialer = TestNode::start(spec(0).peer(1, relay.addr()));
    dialer.connected(1).await;
    acceptor.connected(0).await;
    // Quiet links stay up: keep-alive Pings answer the idle bound.
    let quiet = Instant::now();
    while quiet.elapsed() < 3 * idle {
        assert!(
            compio::runtime::time::timeout(idle, dialer.events.recv())
                .await
                .is_err(),
            "no event on a healthy quiet link"
        );
    }
    relay.blackhole();
    let black = Instant::now();
    let reason = dialer.lost(1).await;
    let detected = black.elapsed();
    assert_eq!(reason, CloseReason::Closed(GoodbyeReason::IdleTimeout));
    assert_eq!(
        acceptor.lost(0).await,
        CloseReason::Closed(GoodbyeReason::IdleTimeout)
    );
    // The bound: idle_timeout after the last frame to notice, then close_grace +
    // close_peer_timeout to give up on the silent peer, plus slack for a
    // loaded machine.
    let bound = idle + Duration::from_millis(500 + 300) + Duration::from_secs(1);
    assert!(detected < bound, "{detected:?} >= {bound:?}");
    assert!(
        detected >= idle.saturating_sub(2 * keepalive),
        "{detected:?}"
    );
    relay.heal();
    dialer.connected(1).await;
    acceptor.connected(0).await;
    dialer.send(1, 1, b"healed").expect("queued");
    let got = acceptor
        .wait_for(
            "a frame after healing",
            |e| match e {
                MeshEvent::Frame { frame, .. } => Some(frame.body().to_vec()),
                _ => None,
            },
            |_| {},
        )
        .await;
    assert_eq!(got, b"healed");
}

#[compio::test]
async fn a_delayed_link_carries_frames_in_order() {
    let keys = Keyring::new("delay");
    let psk = keys.key("psk", 7);
    let acceptor = TestNode::start(NodeSpec::new(1, &psk).peer(0, nowhere()));
    let relay = Relay::start(acceptor.replica_addr);
    relay.delay(Duration::from_millis(100));
    let dialer = TestNode::start(NodeSpec::new(0, &psk).peer(1, relay.addr()));
    dialer.connected(1).await;
    acceptor.connected(0).await;
    for i in 0..20u64 {
        dialer.send(1, i, &i.to_le_bytes()).expect("queued");
    }
    for i in 0..20u64 {
        let got = acceptor
            .wait_for(
                "a delayed frame",
                |e| match e {
                    MeshEvent::Frame { frame, .. } => Some(frame.header().request()),
                    _ => None,
                },
                |e| panic!("unexpected {e:?}"),
            )
            .await;
        assert_eq!(got, i, "in order");
    }
}

#[compio::test]
async fn two_handshakes_racing_for_one_replica_id_register_only_one() {
    let keys = Keyring::new("race");
    let psk = keys.key("psk", 7);
    // Two shards: the two connections may well land on different ones; the
    // claim is node-wide.
    let node = TestNode::start(NodeSpec::new(1, &psk).peer(0, nowhere()));
    let mut a = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    let mut b = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    // Both pass the status-3 check: neither is authenticated yet.
    let (dialer_a, _, challenge_a) = a.hello(1).await;
    let (dialer_b, _, challenge_b) = b.hello(1).await;
    let finish = |dialer: bus_replica::Dialer, challenge: &bus_core::Frame| match dialer
        .receive(challenge)
    {
        bus_replica::DialerOutcome::Authenticated { finish, .. } => finish,
        other => panic!("{other:?}"),
    };
    let (finish_a, finish_b) = (
        finish(dialer_a, &challenge_a),
        finish(dialer_b, &challenge_b),
    );
    a.client.send(&finish_a).await;
    node.connected(0).await;
    b.client.send(&finish_b).await;
    let goodbye = b
        .client
        .expect_goodbye_then_close(GoodbyeReason::HandshakeFailed)
        .await;
    assert!(
        goodbye.detail.contains("connected already"),
        "{}",
        goodbye.detail
    );
    a.echo(1).await;
    eventually("counted", || {
        node.status().failures(FailureReason::Duplicate) == 1
    })
    .await;
    assert_eq!(node.status().peer(0).expect("peer").connections, 1);
}

#[compio::test]
async fn a_replica_frame_of_another_cluster_closes_the_link_with_protocol_violation() {
    let keys = Keyring::new("mismatch");
    let node = node1(&keys);
    let mut dialer = RawDialer::connect(node.replica_addr, CLUSTER, 0, good_keys()).await;
    dialer.authenticate(1).await;
    node.connected(0).await;
    dialer.echo(1).await;
    let mut frame = FrameMut::with_body(Command::from_u8(RECORD), b"elsewhere");
    frame.header_mut().set_cluster(CLUSTER ^ 0xff);
    frame.header_mut().set_replica(0);
    frame.seal();
    dialer.client.send(&frame.freeze()).await;
    loop {
        let next = dialer.client.recv_frame().await;
        if next.header().command() == Command::Ping {
            continue;
        }
        let goodbye = bus_core::Goodbye::decode(next.header().command_area());
        assert_eq!(goodbye.reason, GoodbyeReason::ProtocolViolation);
        assert!(goodbye.detail.contains("cluster"), "{}", goodbye.detail);
        break;
    }
    dialer.client.expect_closed().await;
    // The frame never reached the application.
    let reason = node
        .wait_for(
            "the loss",
            |e| match e {
                MeshEvent::Lost { reason, .. } => Some(reason.clone()),
                _ => None,
            },
            |e| {
                // The Echo went through; the frame of the other cluster not.
                if let MeshEvent::Frame { frame, .. } = &e {
                    assert_ne!(frame.header().command_raw(), RECORD, "{e:?}");
                }
            },
        )
        .await;
    assert_eq!(
        reason,
        CloseReason::Closed(GoodbyeReason::ProtocolViolation)
    );
    assert_eq!(node.status().frames_rejected, 1);
}

#[compio::test]
async fn a_request_to_a_replica_gets_its_reply_through_the_owning_shard() {
    let keys = Keyring::new("request");
    let psk = keys.key("psk", 7);
    let nodes = start_mesh(2, &psk, NodeSpec::new);
    nodes[0].connected(1).await;
    nodes[1].connected(0).await;
    // Both ways over the one link: the dialer's request ids keep bit 63
    // clear, the acceptor's set it, so neither takes the other's request
    // for a late reply.
    for (from, to) in [(0u8, 1u8), (1, 0)] {
        let mut ask =
            FrameMut::with_body(Command::from_u8(bus_tests::mesh::ECHO), b"are you there");
        ask.header_mut().set_cluster(CLUSTER);
        ask.header_mut().set_replica(from);
        ask.seal();
        let reply = nodes[usize::from(from)]
            .shards()
            .request_replica(to, ask, Duration::from_secs(5))
            .expect("sent");
        let reply = within("the replica's reply", reply.outcome())
            .await
            .expect("answered");
        assert_eq!(reply.header().command_raw(), bus_tests::mesh::ECHO_REPLY);
        assert_eq!(reply.body(), b"are you there");
        assert_eq!(reply.header().replica(), to);
        let bit63 = reply.header().request() >> 63;
        assert_eq!(bit63, u64::from(from == 1), "request id of node {from}");
    }
    assert!(
        matches!(
            nodes[0].shards().request_replica(
                7,
                FrameMut::new(Command::from_u8(16), 0),
                Duration::from_secs(1)
            ),
            Err(bus_core::RequestError::Send(SendError::NotConnected))
        ),
        "no link to replica 7"
    );
}
