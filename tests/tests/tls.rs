//! Every transport scenario over TLS 1.3, plus what only TLS has:
//! protocol-version and ALPN policy, certificates, mutual TLS, reload,
//! cancel-safe reads and a clean close.
#![allow(
    clippy::large_futures,
    reason = "a rustls handshake state lives in the test's future; boxing it buys nothing here"
)]

use bus_tests::transport::Tls;

bus_tests::transport_suite!(Tls);

#[compio::test]
async fn silent_client_gets_idle_timeout_at_the_first_frame_grace() {
    bus_tests::scenarios::silent_client_gets_idle_timeout_at_the_first_frame_grace::<Tls>().await;
}

#[compio::test]
async fn a_client_that_pings_first_stays_past_the_grace() {
    bus_tests::scenarios::a_client_that_pings_first_stays_past_the_grace::<Tls>().await;
}

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    bus_tests::scenarios::silent_peer_is_dropped_after_handshake_grace::<Tls>().await;
}

#[compio::test]
async fn frame_dribbled_one_byte_at_a_time_is_delivered_whole() {
    bus_tests::scenarios::frame_dribbled_one_byte_at_a_time_is_delivered_whole::<Tls>().await;
}

use std::{sync::Arc, time::Duration};

use bus_core::{Command, Error, GoodbyeReason, transport::Listener};
use bus_tests::{
    client::{RawClient, TlsClient},
    eventually,
    frames::{ECHO, ECHO_REPLY, app, assert_pattern},
    pki::{SERVER_NAME, pki, unique_dir},
    scenarios::{connect, start, start_on, stop, test_config},
    within,
};
use bus_tls::{
    CertificateSource, ClientTls, ServerTls, TlsClientConfig, TlsError, TlsServerConfig,
    rustls::{self, ClientConfig},
};

/// A rustls client config trusting the test CA, with `versions` and
/// `alpn`.
fn raw_client(versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]) -> ClientTls {
    let roots = bus_tls::load_roots(&pki().ca).expect("roots");
    let mut config = ClientConfig::builder_with_provider(bus_tls::crypto_provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    ClientTls::from_rustls(Arc::new(config), SERVER_NAME).expect("client")
}

async fn echo(client: &mut TlsClient, request: u64) {
    client.send(&app(ECHO, request, 100)).await;
    let reply = client.recv_frame().await;
    assert_eq!(reply.header().command_raw(), ECHO_REPLY);
    assert_eq!(reply.header().request(), request);
    assert_pattern(reply.body(), request, 100);
}

/// The server refused a handshake: counted, nothing registered, no task
/// left behind for it.
async fn assert_refused(node: &bus_tests::scenarios::Node) {
    eventually("the handshake failure is counted", || {
        node.bus.stats().handshake_failures == 1
    })
    .await;
    let stats = node.bus.stats();
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.connections_total, 0);
    eventually("the handshake task is reaped", || {
        node.bus.stats().tasks == 1
    })
    .await;
    assert!(
        node.events.drain_now().is_empty(),
        "the handler saw nothing"
    );
}

#[compio::test]
async fn tls12_only_client_is_refused() {
    let node = start::<Tls>(test_config()).await;
    let client = raw_client(&[&rustls::version::TLS12], &[b"bus.v1"]);
    let err = within("handshake", client.connect(node.addr))
        .await
        .expect_err("TLS 1.2 is refused");
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    assert_refused(&node).await;
    stop(&node).await;
}

#[compio::test]
async fn client_offering_only_h2_is_refused() {
    let node = start::<Tls>(test_config()).await;
    let client = raw_client(&[&rustls::version::TLS13], &[b"h2"]);
    let err = within("handshake", client.connect(node.addr))
        .await
        .expect_err("ALPN without bus.v1 is refused");
    assert!(matches!(err, TlsError::Handshake { .. }), "{err}");
    // The server says why: its alert reaches the client.
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    assert_refused(&node).await;
    stop(&node).await;
}

#[compio::test]
async fn client_offering_no_alpn_is_accepted() {
    let node = start::<Tls>(test_config()).await;
    let client = raw_client(&[&rustls::version::TLS13], &[]);
    let mut client = TlsClient::connect(&client, node.addr).await;
    node.events.connected().await;
    assert_eq!(client.session().alpn(), None);
    echo(&mut client, 1).await;
    stop(&node).await;
}

#[compio::test]
async fn bus_alpn_is_negotiated_on_tls_13() {
    let node = start::<Tls>(test_config()).await;
    let (client, _) = connect::<Tls>(&node).await;
    assert_eq!(client.session().alpn(), Some(&b"bus.v1"[..]));
    assert_eq!(
        client.session().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    stop(&node).await;
}

#[compio::test]
async fn wrong_ca_fails_the_client_cleanly_and_frees_the_slot() {
    let node = start::<Tls>(test_config()).await;
    let config = TlsClientConfig::new(&pki().other_ca, SERVER_NAME);
    let client = ClientTls::new(&config).expect("client");
    let err = within("handshake", client.connect(node.addr))
        .await
        .expect_err("untrusted server certificate");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert!(err.to_string().contains(&node.addr.to_string()), "{err}");
    assert_refused(&node).await;
    // The slot is free: a trusting client is served.
    let (mut good, _) = connect::<Tls>(&node).await;
    echo(&mut good, 2).await;
    stop(&node).await;
}

fn mutual_tls_server() -> ServerTls {
    let mut config = TlsServerConfig::new(CertificateSource::Files {
        cert: pki().server.cert.clone(),
        key: pki().server.key.clone(),
    });
    config.client_ca = Some(pki().ca.clone());
    ServerTls::new(&config).expect("server TLS")
}

#[compio::test]
async fn mutual_tls_refuses_a_client_without_certificate() {
    let node = start_on(Tls::listen_with(mutual_tls_server()), test_config());
    // In TLS 1.3 the client may finish its side before the server refuses,
    // so the refusal shows on the handshake or on the first read.
    match within("handshake", Tls::client_tls().connect(node.addr)).await {
        Err(err) => assert!(matches!(err, TlsError::Handshake { .. }), "{err}"),
        Ok(session) => {
            let mut client = TlsClient::new(session);
            match client.recv().await {
                Err(Error::Io(err)) => {
                    assert!(err.to_string().contains("CertificateRequired"), "{err}");
                }
                other => panic!("expected the server's alert, got {other:?}"),
            }
        }
    }
    assert_refused(&node).await;
    stop(&node).await;
}

#[compio::test]
async fn mutual_tls_identity_is_visible_to_the_handler() {
    let node = start_on(Tls::listen_with(mutual_tls_server()), test_config());
    let mut config = TlsClientConfig::new(&pki().ca, SERVER_NAME);
    config.client_cert = Some((pki().client.cert.clone(), pki().client.key.clone()));
    let mut client = TlsClient::connect(&ClientTls::new(&config).expect("client"), node.addr).await;
    let (peer, info) = node.events.connected_info().await;
    let expected = "CN=alice, DNS=alice.clients.test";
    assert_eq!(info.identity.as_deref(), Some(expected));
    let bus_core::Peer::Client(id) = peer else {
        panic!("a client")
    };
    let snapshot = node.bus.client(id).expect("registered");
    assert_eq!(snapshot.info.identity.as_deref(), Some(expected));
    assert_eq!(
        client.session().peer_identity().as_deref(),
        Some("CN=bus-test-server, DNS=localhost"),
        "the client sees the server's verified identity"
    );
    echo(&mut client, 3).await;
    stop(&node).await;
}

#[compio::test]
async fn read_cancelled_while_pending_loses_nothing() {
    const FRAMES: u64 = 150;
    let mut listener = <Tls as bus_tests::transport::TestTransport>::listen().await;
    let addr = listener.local_addr().expect("addr");
    // The client sends each frame in three TLS records with pauses, so the
    // server's reads are often pending when their timeout cancels them.
    let sender = compio::runtime::spawn(async move {
        let mut client = TlsClient::connect(&Tls::client_tls(), addr).await;
        for request in 1..=FRAMES {
            let body = usize::try_from(request * 37 % 3000).expect("fits");
            let frame = app(ECHO, request, body);
            let bytes = frame.as_bytes();
            let (a, rest) = bytes.split_at(bytes.len() / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            for part in [a, b, c] {
                client.send_raw(part).await;
                compio::runtime::time::sleep(Duration::from_millis(1)).await;
            }
        }
        client.close().await;
    });
    let incoming = within("accept", listener.accept()).await.expect("accept");
    let limits = bus_core::DecodeLimits {
        max_message_size_bytes: 1 << 20,
        require_sealed: false,
    };
    let (mut reader, _writer, _) = within(
        "handshake",
        bus_core::transport::Connection::establish(
            incoming,
            bus_core::ReadSettings::new(limits).read_buffer(4096),
        ),
    )
    .await
    .expect("handshake");
    let mut cancelled = 0u32;
    let all = async {
        for request in 1..=FRAMES {
            let frame = loop {
                let read = bus_core::transport::FrameReader::read_frame(&mut reader);
                match compio::runtime::time::timeout(Duration::from_micros(300), read).await {
                    Ok(frame) => break frame.expect("a frame"),
                    Err(_) => cancelled += 1,
                }
            };
            assert_eq!(frame.header().request(), request, "in order, none lost");
            let body = usize::try_from(request * 37 % 3000).expect("fits");
            assert_pattern(frame.body(), request, body);
        }
        let end = bus_core::transport::FrameReader::read_frame(&mut reader).await;
        assert!(matches!(end, Err(Error::Closed)), "clean end: {end:?}");
    };
    within("every frame", all).await;
    within("sender", sender).await.expect("sender ok");
    assert!(
        cancelled > 10,
        "reads were cancelled mid-flight ({cancelled})"
    );
}

#[compio::test]
async fn shutdown_sends_goodbye_then_close_notify() {
    let node = start::<Tls>(test_config()).await;
    let (mut client, _) = connect::<Tls>(&node).await;
    let shutdown = node.bus.shutdown(Duration::from_secs(5));
    let observe = async {
        let goodbye = client.recv_frame().await;
        assert_eq!(goodbye.header().command(), Command::Goodbye);
        assert_eq!(
            bus_core::Goodbye::decode(goodbye.header().command_area()).reason,
            GoodbyeReason::ShuttingDown
        );
        // `Closed` (not `UnexpectedEof`): the server's close_notify came
        // before its FIN, so this is a clean TLS close, not a truncation.
        match client.recv().await {
            Err(Error::Closed) => {}
            other => panic!("expected a clean TLS close, got {other:?}"),
        }
        client.close().await;
    };
    let (report, ()) = within("shutdown", futures_util::future::join(shutdown, observe)).await;
    assert_eq!(report.tasks_left, 0);
    assert_eq!(report.cancelled, 0, "{report:?}");
}

#[compio::test]
async fn a_peer_that_stops_reading_cannot_stretch_close_past_close_grace() {
    let mut config = test_config();
    config.queue_capacity_frames = 64;
    config.close_grace = Duration::from_millis(400);
    config.close_peer_timeout = Duration::from_millis(200);
    let node = start::<Tls>(config).await;
    let (_stuck, peer) = connect::<Tls>(&node).await;
    let bus_core::Peer::Client(id) = peer else {
        panic!("a client")
    };
    bus_tests::scenarios::fill_until_queue_full(&node.bus, id).await;
    let started = std::time::Instant::now();
    node.bus
        .close_client(id, GoodbyeReason::Evicted, "test")
        .expect("connected");
    let reason = node.events.lost(peer).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(400 + 200) + Duration::from_secs(1),
        "close took {took:?}"
    );
    // The queued frames can never be written, so the close runs into
    // close_grace (400 ms), and the connection is dropped right then.
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before close_grace ran out"
    );
    assert!(
        took <= Duration::from_millis(400) + bus_tests::scenarios::IDLE_SLACK,
        "closed {took:?} after it started, close_grace 400 ms"
    );
    assert_eq!(
        reason,
        bus_core::CloseReason::Closed(GoodbyeReason::Evicted)
    );
    stop(&node).await;
}

/// Copies of the test server's files in a fresh directory, so a test can
/// overwrite them.
fn server_files_copy(what: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = unique_dir(what);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&pki().server.cert, &cert).expect("copy cert");
    std::fs::copy(&pki().server.key, &key).expect("copy key");
    (cert, key)
}

async fn server_identity(addr: std::net::SocketAddr) -> String {
    let client = TlsClient::connect(&Tls::client_tls(), addr).await;
    client.session().peer_identity().expect("server identity")
}

#[compio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() {
    let (cert, key) = server_files_copy("reload");
    let tls = ServerTls::new(&TlsServerConfig::new(CertificateSource::Files {
        cert: cert.clone(),
        key: key.clone(),
    }))
    .expect("server TLS");
    let node = start_on(Tls::listen_with(tls.clone()), test_config());
    let (mut before, _) = connect::<Tls>(&node).await;
    assert!(
        before
            .session()
            .peer_identity()
            .expect("identity")
            .starts_with("CN=bus-test-server,")
    );
    // Rotate on disk, then reload.
    std::fs::copy(&pki().server_b.cert, &cert).expect("rotate cert");
    std::fs::copy(&pki().server_b.key, &key).expect("rotate key");
    tls.reload().expect("reload");
    assert!(
        server_identity(node.addr)
            .await
            .starts_with("CN=bus-test-server-b,")
    );
    node.events.connected().await;
    echo(&mut before, 4).await;
    stop(&node).await;
}

#[compio::test]
async fn a_broken_replacement_is_rejected_and_the_old_certificate_stays() {
    let (cert, key) = server_files_copy("broken-reload");
    let tls = ServerTls::new(&TlsServerConfig::new(CertificateSource::Files {
        cert: cert.clone(),
        key: key.clone(),
    }))
    .expect("server TLS");
    let node = start_on(Tls::listen_with(tls.clone()), test_config());
    std::fs::write(&cert, "not a certificate\n").expect("break cert");
    let err = tls.reload().expect_err("broken file refused");
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("CERTIFICATE"), "{err}");
    assert!(
        server_identity(node.addr)
            .await
            .starts_with("CN=bus-test-server,")
    );
    // A key that belongs to another certificate is refused too.
    let mismatched = TlsServerConfig::new(CertificateSource::Files {
        cert: pki().server_b.cert.clone(),
        key: pki().server.key.clone(),
    });
    let err = tls.reload_with(&mismatched).expect_err("mismatch refused");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    node.events.connected().await;
    assert!(
        server_identity(node.addr)
            .await
            .starts_with("CN=bus-test-server,")
    );
    stop(&node).await;
}

fn load_error(cert: &std::path::Path, key: &std::path::Path) -> TlsError {
    ServerTls::new(&TlsServerConfig::new(CertificateSource::Files {
        cert: cert.to_owned(),
        key: key.to_owned(),
    }))
    .expect_err("load fails")
}

#[test]
fn missing_certificate_file_is_named() {
    let missing = unique_dir("missing").join("nope.pem");
    let err = load_error(&missing, &pki().server.key);
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn certificate_file_without_certificates_is_named() {
    let empty = unique_dir("empty").join("empty.pem");
    std::fs::write(&empty, "# nothing here\n").expect("write");
    let err = load_error(&empty, &pki().server.key);
    assert!(
        err.to_string().contains(&empty.display().to_string()),
        "{err}"
    );
    assert!(
        err.to_string().contains("no `-----BEGIN CERTIFICATE-----`"),
        "{err}"
    );
}

#[test]
fn unreadable_private_key_is_named() {
    let key = unique_dir("badkey").join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let err = load_error(&pki().server.cert, &key);
    assert!(
        err.to_string().contains(&key.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("private key"), "{err}");
    let no_key = unique_dir("nokey").join("key.pem");
    std::fs::write(&no_key, "nothing\n").expect("write");
    let err = load_error(&pki().server.cert, &no_key);
    assert!(
        err.to_string().contains(&no_key.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("no private key block"), "{err}");
}

#[test]
fn key_that_does_not_match_the_certificate_names_both_files() {
    let err = load_error(&pki().server.cert, &pki().client.key);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&pki().server.cert.display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&pki().client.key.display().to_string()),
        "{text}"
    );
}

#[test]
fn missing_client_ca_file_is_named() {
    let missing = unique_dir("noca").join("ca.pem");
    let mut config = TlsServerConfig::new(CertificateSource::Files {
        cert: pki().server.cert.clone(),
        key: pki().server.key.clone(),
    });
    config.client_ca = Some(missing.clone());
    let err = ServerTls::new(&config).expect_err("missing CA");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("CA"), "{err}");
}

#[compio::test]
async fn self_signed_certificate_is_generated_once_and_trusted_by_clients() {
    let dir = unique_dir("self-signed");
    let source = CertificateSource::SelfSigned { dir: dir.clone() };
    let tls = ServerTls::new(&TlsServerConfig::new(source.clone())).expect("generate");
    let served = tls.served();
    assert!(served.generated);
    assert_eq!(served.cert, dir.join("cert.pem"));
    let again = ServerTls::new(&TlsServerConfig::new(source)).expect("reuse");
    assert!(!again.served().generated, "reused, not regenerated");
    assert_eq!(
        std::fs::read(&served.cert).expect("cert"),
        std::fs::read(again.cert_path()).expect("cert")
    );
    let node = start_on(Tls::listen_with(tls), test_config());
    let trusting =
        ClientTls::new(&TlsClientConfig::new(&served.cert, "localhost")).expect("client");
    let mut client = TlsClient::connect(&trusting, node.addr).await;
    node.events.connected().await;
    echo(&mut client, 5).await;
    stop(&node).await;
}

#[compio::test]
async fn admission_refuses_connection_n_plus_1_counts_it_and_reuses_a_freed_slot() {
    bus_tests::admission::connection_n_plus_1_is_refused_counted_and_a_freed_slot_is_reused::<
        bus_tests::transport::Tls,
    >()
    .await;
}

#[compio::test]
async fn admission_refuses_handshakes_beyond_max_handshakes_until_one_ends() {
    bus_tests::admission::handshakes_beyond_the_cap_are_refused_until_one_ends::<
        bus_tests::transport::Tls,
    >()
    .await;
}

/// Limits for the record-driver tests: frames up to 32 MiB, unsealed.
const BIG_LIMITS: bus_core::DecodeLimits = bus_core::DecodeLimits {
    max_message_size_bytes: 32 << 20,
    require_sealed: false,
};

/// The server half of one accepted connection, established on the record
/// driver with a small read buffer (so frames cross the large-frame path).
async fn accept_records(
    listener: &mut bus_tls::TlsListener,
) -> (bus_tls::TlsReader, bus_tls::TlsWriter) {
    let incoming = within("accept", listener.accept()).await.expect("accept");
    let (reader, writer, _) = within(
        "server handshake",
        bus_core::transport::Connection::establish(
            incoming,
            bus_core::ReadSettings::new(BIG_LIMITS).read_buffer(4096),
        ),
    )
    .await
    .expect("server handshake");
    (reader, writer)
}

#[compio::test]
async fn a_16_mib_frame_crosses_many_records_intact_both_ways() {
    use bus_core::transport::{FrameReader, FrameWriter};
    const BODY: usize = 16 << 20;
    let mut listener = <Tls as bus_tests::transport::TestTransport>::listen().await;
    let addr = listener.local_addr().expect("addr");
    // Both ends on the record driver: the client half is what bus-client
    // uses (`TlsOutgoing`).
    let client = compio::runtime::spawn(async move {
        let outgoing = within("dial", Tls::client_tls().dial(addr))
            .await
            .expect("dial");
        let (mut reader, mut writer, _) = within(
            "client handshake",
            bus_core::transport::Connection::establish(
                outgoing,
                bus_core::ReadSettings::new(BIG_LIMITS),
            ),
        )
        .await
        .expect("client handshake");
        // A small frame first and last: packing small frames into records
        // must not reorder them around the large one.
        let batch = vec![app(ECHO, 1, 10), app(ECHO, 2, BODY), app(ECHO, 3, 7)];
        let compio::BufResult(res, _) = within("send", writer.write_batch(batch)).await;
        res.expect("send");
        for (request, body) in [(1, 10), (2, BODY), (3, 7)] {
            let frame = within("echo", reader.read_frame()).await.expect("echo");
            assert_eq!(frame.header().request(), request);
            assert_pattern(frame.body(), request, body);
        }
        within("close", writer.close(None)).await.expect("close");
    });
    let (mut reader, mut writer) = accept_records(&mut listener).await;
    for (request, body) in [(1, 10), (2, BODY), (3, 7)] {
        let frame = within("frame", reader.read_frame()).await.expect("frame");
        assert_eq!(frame.header().request(), request);
        assert_pattern(frame.body(), request, body);
        let compio::BufResult(res, _) = within("echo", writer.write_batch(vec![frame])).await;
        res.expect("echo");
    }
    let end = within("end", reader.read_frame()).await;
    assert!(matches!(end, Err(Error::Closed)), "clean end: {end:?}");
    within("client", client).await.expect("client ok");
}

#[compio::test]
async fn one_byte_records_and_full_records_both_work() {
    use bus_core::transport::{FrameReader, FrameWriter};
    let mut listener = <Tls as bus_tests::transport::TestTransport>::listen().await;
    let addr = listener.local_addr().expect("addr");
    let small = app(ECHO, 1, 300);
    let large = app(ECHO, 2, 5 * 16384 + 17);
    let (small_bytes, large_bytes) = (small.clone(), large.clone());
    // A buffered rustls client: every flushed write is its own record, so
    // byte-by-byte writes make one-byte records, and one large write makes
    // records of the maximum size (16 KiB of plaintext).
    let sender = compio::runtime::spawn(async move {
        let mut client = TlsClient::connect(&Tls::client_tls(), addr).await;
        for byte in small_bytes.as_bytes() {
            client.send_raw(std::slice::from_ref(byte)).await;
        }
        client.send_raw(large_bytes.as_bytes()).await;
        // The server echoes both; its replies to a one-frame batch of 80 KiB
        // are full records too.
        for (request, body) in [(1, 300), (2, 5 * 16384 + 17)] {
            let frame = client.recv_frame().await;
            assert_eq!(frame.header().request(), request);
            assert_pattern(frame.body(), request, body);
        }
        client.close().await;
    });
    let (mut reader, mut writer) = accept_records(&mut listener).await;
    for expected in [&small, &large] {
        let frame = within("frame", reader.read_frame()).await.expect("frame");
        assert_eq!(frame.as_bytes(), expected.as_bytes());
        let compio::BufResult(res, _) = within("echo", writer.write_batch(vec![frame])).await;
        res.expect("echo");
    }
    let end = within("end", reader.read_frame()).await;
    assert!(matches!(end, Err(Error::Closed)), "clean end: {end:?}");
    within("sender", sender).await.expect("sender ok");
}

/// A blocking rustls client (buffered API, its own thread) that sends
/// `frames`, reads each echo back whole and, after each, asks for a key
/// update (`KeyUpdate` with `update_requested`): the server must answer with
/// its own key update before its next record, and both directions go on
/// with new keys. Ends with `close_notify`.
fn key_updating_client(addr: std::net::SocketAddr, frames: &[bus_core::Frame]) {
    use std::io::{Read, Write};
    let roots = bus_tls::load_roots(&pki().ca).expect("roots");
    let mut config = ClientConfig::builder_with_provider(bus_tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"bus.v1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut sock = std::net::TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(bus_tests::STEP))
        .expect("timeout");
    sock.set_write_timeout(Some(bus_tests::STEP))
        .expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    for frame in frames {
        tls.write_all(frame.as_bytes()).expect("send");
        tls.flush().expect("flush");
        let mut echo = vec![0; frame.len()];
        tls.read_exact(&mut echo).expect("echo");
        assert_eq!(echo, frame.as_bytes(), "the echo is the frame");
        tls.conn.refresh_traffic_keys().expect("key update");
    }
    tls.conn.send_close_notify();
    tls.flush().expect("close_notify");
}

#[compio::test]
async fn key_updates_are_answered_and_traffic_goes_on() {
    use bus_core::transport::{FrameReader, FrameWriter};
    let mut listener = <Tls as bus_tests::transport::TestTransport>::listen().await;
    let addr = listener.local_addr().expect("addr");
    let frames: Vec<_> = (1..=4)
        .map(|r| app(ECHO, r, 700 * usize::try_from(r).expect("fits")))
        .collect();
    let sent = frames.clone();
    let client = std::thread::spawn(move || key_updating_client(addr, &sent));
    let (mut reader, mut writer) = accept_records(&mut listener).await;
    for expected in &frames {
        let frame = within("frame", reader.read_frame()).await.expect("frame");
        assert_eq!(frame.as_bytes(), expected.as_bytes());
        let compio::BufResult(res, _) = within("echo", writer.write_batch(vec![frame])).await;
        res.expect("echo");
    }
    let end = within("end", reader.read_frame()).await;
    assert!(matches!(end, Err(Error::Closed)), "clean end: {end:?}");
    client.join().expect("the client saw every echo");
}

/// A client that speaks plain HTTP to the TLS listener gets rustls'
/// `decode_error` alert (one plaintext alert record) and the end of the
/// stream; the refusal is counted and the node goes on serving TLS. Asking
/// rustls for a second alert after the first used to panic the connection's
/// task in debug builds (and the shard with it).
#[compio::test]
async fn a_client_speaking_plain_http_gets_one_alert_and_the_node_keeps_serving() {
    use compio::io::{AsyncReadExt, AsyncWriteExt};
    let node = start::<Tls>(test_config()).await;
    let mut raw = within("connect", compio::net::TcpStream::connect(node.addr))
        .await
        .expect("connect");
    let compio::BufResult(res, _) = within(
        "write",
        raw.write_all(b"GET / HTTP/1.1\r\nHost: not-tls\r\n\r\n".to_vec()),
    )
    .await;
    res.expect("write");
    let compio::BufResult(res, answer) = within("the alert", raw.read_to_end(Vec::new())).await;
    res.expect("read to the end");
    // content type 21 (alert), legacy version, length 2, fatal (2), decode_error (50)
    assert_eq!(answer.len(), 7, "exactly one alert record: {answer:?}");
    assert_eq!(answer[0], 21, "an alert record: {answer:?}");
    assert_eq!(
        &answer[3..],
        &[0, 2, 2, 50],
        "fatal decode_error: {answer:?}"
    );
    assert_refused(&node).await;
    let (mut client, _) = connect::<Tls>(&node).await;
    echo(&mut client, 1).await;
    stop(&node).await;
}
