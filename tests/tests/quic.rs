//! Every transport scenario over QUIC, plus what only QUIC has: ALPN
//! policy, stream refusal, the handshake bound, admission caps, the close
//! code on shutdown and the bounded endpoint shutdown, and the settings'
//! validation.

use std::{
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bus_core::{
    Command, GoodbyeReason,
    transport::{FrameReader, FrameWriter, Listener},
};
use bus_quic::{
    QuicListenerConfig, QuicTuning, codes,
    compio_quic::{ConnectionError, OpenStreamError, SendDatagramError, TransportErrorCode},
};
use bus_tests::{
    client::{QuicClient, RawClient},
    eventually,
    frames::{ECHO, ECHO_REPLY, app, assert_pattern},
    pki::{SERVER_NAME, pki},
    scenarios::{self, Node, start_on, test_config},
    transport::Quic,
    within,
};
use bus_tls::rustls::{
    NamedGroup,
    client::{
        ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
        Tls13ClientSessionValue,
    },
    pki_types::ServerName,
};
use futures_util::future::{Either, select};

bus_tests::transport_suite!(Quic);

#[compio::test]
async fn a_client_that_pings_first_stays_past_the_grace() {
    bus_tests::scenarios::a_client_that_pings_first_stays_past_the_grace::<Quic>().await;
}

#[compio::test]
async fn frame_dribbled_one_byte_at_a_time_is_delivered_whole() {
    scenarios::frame_dribbled_one_byte_at_a_time_is_delivered_whole::<Quic>().await;
}

#[compio::test]
async fn read_cancelled_while_pending_loses_nothing() {
    scenarios::read_cancelled_while_pending_loses_nothing::<Quic>().await;
}

async fn echo(client: &mut QuicClient, request: u64, body_len: usize) {
    client.send(&app(ECHO, request, body_len)).await;
    let reply = client.recv_frame().await;
    assert_eq!(reply.header().command_raw(), ECHO_REPLY);
    assert_eq!(reply.header().request(), request);
    assert_pattern(reply.body(), request, body_len);
}

/// A rustls client config trusting the test CA, offering `alpn`.
fn rustls_client(alpn: &[&[u8]]) -> bus_tls::rustls::ClientConfig {
    let roots = bus_tls::load_roots(&pki().ca).expect("test CA");
    let mut config =
        bus_tls::rustls::ClientConfig::builder_with_provider(bus_tls::crypto_provider())
            .with_protocol_versions(&[&bus_tls::rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[compio::test]
async fn wrong_or_missing_alpn_is_refused() {
    let node = scenarios::start::<Quic>(test_config()).await;
    for alpn in [&[b"h3".as_slice()][..], &[]] {
        let client = bus_quic::ClientQuic::from_rustls(
            rustls_client(alpn),
            SERVER_NAME,
            &Quic::client_config(),
        )
        .expect("client");
        let err = within("connect with wrong ALPN", client.connect_raw(node.addr))
            .await
            .expect_err("refused in the handshake");
        assert!(err.to_string().contains(&node.addr.to_string()), "{err}");
        // The server says why: TLS alert 120, no_application_protocol.
        assert!(
            err.to_string()
                .contains("the cryptographic handshake failed: error 120"),
            "{err}"
        );
    }
    // Refused while quinn reads the ClientHello, inside `accept`: nothing
    // reached the bus, and the server is fine.
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    echo(&mut client, 7, 10).await;
    assert_eq!(node.bus.stats().connections_total, 1);
    assert_eq!(
        node.bus.stats().handshake_failures,
        0,
        "the refused attempts never reached the bus"
    );
    scenarios::stop(&node).await;
}

#[compio::test]
async fn a_second_stream_is_refused_while_the_first_keeps_working() {
    let node = scenarios::start::<Quic>(test_config()).await;
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    // The server gives credit for the bus stream only: a second one cannot
    // even be opened, now or after traffic on the first.
    for request in [3, 4] {
        assert!(
            matches!(
                client.connection().open_bi(),
                Err(OpenStreamError::StreamsExhausted)
            ),
            "no credit for a second bidirectional stream"
        );
        echo(&mut client, request, 100).await;
    }
    assert!(matches!(
        client.connection().open_bi(),
        Err(OpenStreamError::StreamsExhausted)
    ));
    for request in [3, 4] {
        let (_, frame) = node.events.frame().await;
        assert_eq!(frame.header().request(), request, "only the bus stream");
    }
    scenarios::stop(&node).await;
}

#[compio::test]
async fn a_client_that_never_opens_a_stream_is_closed_after_handshake_grace() {
    let mut config = test_config();
    config.handshake_grace = Duration::from_millis(300);
    let node = scenarios::start::<Quic>(config).await;
    let silent = Quic::client();
    // Handshake done, stream opened locally but never sent on: the server
    // never sees it.
    let (connection, _send, _recv) = within("silent connect", silent.connect_raw(node.addr))
        .await
        .expect("handshake");
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    echo(&mut client, 1, 10).await;
    let closed = within("server closes the silent client", connection.closed()).await;
    assert!(
        matches!(closed, ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
    assert_eq!(node.bus.stats().handshake_failures, 1);
    assert_eq!(node.bus.stats().connections, 1);
    scenarios::stop(&node).await;
}

/// Starts a real handshake with `server` and goes silent: captures a
/// client's first Initial packet on a socket we own, replays it to the
/// server from that socket, and never reads the answer. Returns the socket
/// (the half-open handshake lives while the server waits for it).
async fn half_open_handshake(server: SocketAddr) -> compio::net::UdpSocket {
    let trap = compio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let trap_addr = trap.local_addr().expect("addr");
    let client = Quic::client();
    let initial = {
        let connect = pin!(client.connect_raw(trap_addr));
        let recv = pin!(trap.recv_from(vec![0u8; 2048]));
        match within("the client's Initial", select(connect, recv)).await {
            Either::Right((compio::BufResult(res, mut buf), _)) => {
                let (len, _) = res.expect("recv");
                buf.truncate(len);
                buf
            }
            Either::Left((res, _)) => panic!("connect to a trap finished: {res:?}"),
        }
    };
    let compio::BufResult(res, _) = trap.send_to(initial, server).await;
    res.expect("replay the Initial");
    trap
}

#[compio::test]
async fn a_handshake_gone_silent_does_not_delay_another_client() {
    let mut config = test_config();
    config.handshake_grace = Duration::from_millis(500);
    let node = scenarios::start::<Quic>(config).await;
    let _trap = half_open_handshake(node.addr).await;
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    echo(&mut client, 1, 10).await;
    eventually("the silent handshake times out", || {
        node.bus.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(node.bus.stats().connections, 1);
    scenarios::stop(&node).await;
}

fn start_capped(
    max_connections: u32,
    max_handshakes: u32,
    handshake_grace: Duration,
) -> (Node, bus_quic::AdmissionStats) {
    let mut config = Quic::listener_config();
    config.max_connections = max_connections;
    config.max_handshakes = max_handshakes;
    let listener = Quic::listen_with(&config);
    let admission = listener.admission();
    let mut bus_config = test_config();
    bus_config.handshake_grace = handshake_grace;
    (start_on(listener, bus_config), admission)
}

#[compio::test]
async fn connections_beyond_the_cap_are_refused_quickly_and_the_server_stays_responsive() {
    let (node, admission) = start_capped(1, 1, Duration::from_secs(5));
    let (mut first, first_peer) = scenarios::connect::<Quic>(&node).await;
    let started = Instant::now();
    let refused = within("refused connect", Quic::client().connect_raw(node.addr))
        .await
        .expect_err("beyond max_connections");
    assert!(
        refused
            .to_string()
            .contains("refused to accept a new connection"),
        "CONNECTION_REFUSED: {refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not by a timeout: {:?}",
        started.elapsed()
    );
    // One round trip on loopback, not the client's 10 s connect timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once: {:?}",
        started.elapsed()
    );
    assert_eq!(admission.refused(), 1);
    echo(&mut first, 1, 10).await;
    // The slot comes back when the connection ends.
    first.close().await;
    node.events.lost(first_peer).await;
    eventually("the slot is free", || admission.open() == 0).await;
    let (mut next, _) = scenarios::connect::<Quic>(&node).await;
    echo(&mut next, 2, 10).await;
    scenarios::stop(&node).await;
}

#[compio::test]
async fn handshakes_beyond_the_cap_are_refused_until_one_finishes() {
    let (node, admission) = start_capped(10, 1, Duration::from_secs(2));
    let _trap = half_open_handshake(node.addr).await;
    eventually("the half-open handshake holds the slot", || {
        admission.handshaking() == 1
    })
    .await;
    let refused = within("refused connect", Quic::client().connect_raw(node.addr))
        .await
        .expect_err("beyond max_handshakes");
    assert!(
        refused
            .to_string()
            .contains("refused to accept a new connection"),
        "CONNECTION_REFUSED: {refused}"
    );
    assert!(admission.refused() >= 1);
    // handshake_grace frees the slot.
    eventually("the half-open handshake is dropped", || {
        admission.handshaking() == 0
    })
    .await;
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    echo(&mut client, 1, 10).await;
    scenarios::stop(&node).await;
}

#[compio::test]
async fn shutdown_sends_goodbye_then_closes_with_the_shutdown_code() {
    let listener = Quic::listen_with(&Quic::listener_config());
    let endpoint = listener.endpoint();
    let node = start_on(listener, test_config());
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    let shutdown = node.bus.shutdown(Duration::from_secs(5));
    let read = async {
        client
            .expect_goodbye_then_close(GoodbyeReason::ShuttingDown)
            .await;
        client.close().await;
        client.connection().closed().await
    };
    let (report, closed) = within("shutdown", futures_util::future::join(shutdown, read)).await;
    assert_eq!(report.tasks_left, 0, "{report:?}");
    assert!(
        matches!(&closed, ConnectionError::ApplicationClosed(c) if c.error_code == codes::SHUTTING_DOWN),
        "{closed:?}"
    );
    let bound = Duration::from_secs(2);
    let started = Instant::now();
    let finished = bus_quic::shutdown_endpoint(endpoint, codes::SHUTTING_DOWN, bound).await;
    assert!(started.elapsed() < bound + Duration::from_secs(1));
    assert!(
        finished,
        "nothing holds the endpoint after the bus shut down"
    );
}

#[compio::test]
async fn endpoint_shutdown_is_bounded_when_a_handle_is_still_held() {
    let listener = Quic::listen_with(&Quic::listener_config());
    let endpoint = listener.endpoint();
    let held = endpoint.clone();
    drop(listener);
    let bound = Duration::from_millis(300);
    let started = Instant::now();
    let finished = bus_quic::shutdown_endpoint(endpoint, codes::SHUTTING_DOWN, bound).await;
    let took = started.elapsed();
    assert!(!finished, "a held handle keeps the endpoint alive");
    assert!(took < bound + Duration::from_secs(1));
    assert!(
        took >= bound,
        "gave up after {took:?}, before its {bound:?}"
    );
    drop(held);
}

#[compio::test]
async fn protocol_violation_closes_the_connection_with_0x1004() {
    let node = scenarios::start::<Quic>(test_config()).await;
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    let mut bad = bus_tests::frames::app_mut(ECHO, 1, 10);
    bad.header_mut().set_size(255);
    client.send_raw(bad.as_bytes()).await;
    client
        .expect_goodbye_then_close(GoodbyeReason::MalformedFrame)
        .await;
    client.close().await;
    let closed = within("close", client.connection().closed()).await;
    assert!(
        matches!(&closed, ConnectionError::ApplicationClosed(c) if c.error_code == codes::PROTOCOL_VIOLATION),
        "{closed:?}"
    );
    scenarios::stop(&node).await;
}

#[compio::test]
async fn the_library_client_opens_its_stream_with_a_ping() {
    let node = scenarios::start::<Quic>(test_config()).await;
    let client = Quic::client();
    let (mut reader, mut writer, info) = within(
        "connect",
        client.connect(
            node.addr,
            &bus_core::ReadSettings::new(bus_tests::client::CLIENT_LIMITS),
        ),
    )
    .await
    .expect("connect");
    assert_eq!(info.transport, bus_core::TransportKind::Quic);
    node.events.connected().await;
    let compio::BufResult(res, _) = writer.write_batch(vec![app(ECHO, 5, 1000)]).await;
    res.expect("write");
    let reply = within("echo", reader.read_frame()).await.expect("reply");
    assert_eq!(reply.header().command(), Command::Application(ECHO_REPLY));
    assert_pattern(reply.body(), 5, 1000);
    scenarios::stop(&node).await;
}

fn invalid(config: &QuicListenerConfig, field: &str) {
    let err = config.validate().expect_err(field);
    assert!(err.to_string().contains(field), "{field}: {err}");
}

#[test]
fn each_setting_out_of_range_is_rejected_naming_the_field() {
    let base = Quic::listener_config();
    base.validate().expect("defaults are valid");
    let with = |edit: &dyn Fn(&mut QuicTuning)| {
        let mut config = base.clone();
        edit(&mut config.tuning);
        config
    };
    invalid(
        &with(&|t| t.max_idle_timeout = Duration::ZERO),
        "max_idle_timeout",
    );
    invalid(
        &with(&|t| t.keep_alive = Some(Duration::ZERO)),
        "keep_alive",
    );
    invalid(
        &with(&|t| t.keep_alive = Some(t.max_idle_timeout)),
        "keep_alive",
    );
    invalid(
        &with(&|t| t.stream_receive_window = 512),
        "stream_receive_window",
    );
    invalid(
        &with(&|t| t.stream_receive_window = t.connection_receive_window + 1),
        "stream_receive_window",
    );
    invalid(
        &with(&|t| t.connection_receive_window = 2 << 30),
        "connection_receive_window",
    );
    invalid(&with(&|t| t.send_window = 1023), "send_window");
    invalid(&with(&|t| t.initial_mtu = 1199), "initial_mtu");
    invalid(&with(&|t| t.udp_send_buffer = 1024), "udp_send_buffer");
    invalid(
        &with(&|t| t.udp_receive_buffer = 2 << 30),
        "udp_receive_buffer",
    );
    invalid(
        &with(&|t| t.close_ack_timeout = Duration::ZERO),
        "close_ack_timeout",
    );
    let mut config = base.clone();
    config.max_connections = 0;
    invalid(&config, "max_connections");
    let mut config = base.clone();
    config.max_handshakes = config.max_connections + 1;
    invalid(&config, "max_handshakes");
    config.max_handshakes = 0;
    invalid(&config, "max_handshakes");
    let mut config = base.clone();
    config.retry_threshold = Some(config.max_handshakes + 1);
    invalid(&config, "retry_threshold");
    config.retry_threshold = Some(0);
    config
        .validate()
        .expect("a Retry for every unvalidated attempt");
    assert_eq!(config.effective_retry_threshold(), 0);
    config.retry_threshold = None;
    assert_eq!(config.effective_retry_threshold(), 64, "a quarter of 256");
    config.max_handshakes = 1;
    assert_eq!(config.effective_retry_threshold(), 1, "rounded up");
    // Keep-alive off is allowed.
    with(&|t| t.keep_alive = None)
        .validate()
        .expect("keep-alive off");
}

#[compio::test]
async fn bind_refuses_an_invalid_setting_and_a_taken_port() {
    let mut config = Quic::listener_config();
    config.tuning.initial_mtu = 1000;
    let err = bus_quic::QuicListener::bind(&config, bus_tests::transport::Tls::server_tls())
        .expect_err("invalid");
    assert!(err.to_string().contains("initial_mtu"), "{err}");
    let first = Quic::listen_with(&Quic::listener_config());
    let addr = first.local_addr().expect("addr");
    let config = QuicListenerConfig::new(addr);
    let err = bus_quic::QuicListener::bind(&config, bus_tests::transport::Tls::server_tls())
        .expect_err("port taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn the_config_file_section_converts_into_valid_settings() {
    let config = bus::config::Config::from_toml_str(
        "[quic]\nmax_idle_timeout = \"20 s\"\nkeep_alive = \"off\"\ninitial_mtu = 1400\n\
         udp_receive_buffer = \"8 MiB\"\nmax_connections = 50\nmax_handshakes = 5",
    )
    .expect("valid");
    let quic = config.quic_listener_config();
    quic.validate().expect("converted settings are valid");
    assert_eq!(quic.tuning.max_idle_timeout, Duration::from_secs(20));
    assert_eq!(quic.tuning.keep_alive, None);
    assert_eq!(quic.tuning.initial_mtu, 1400);
    assert_eq!(quic.tuning.udp_receive_buffer, 8 << 20);
    assert_eq!(quic.tuning.stream_receive_window, 8 << 20);
    assert_eq!((quic.max_connections, quic.max_handshakes), (50, 5));
    assert_eq!(quic.retry_threshold, None, "unset: derived");
    assert_eq!(quic.effective_retry_threshold(), 2);
    let config = bus::config::Config::from_toml_str("[quic]\nretry_threshold = 0").expect("valid");
    assert_eq!(config.quic_listener_config().retry_threshold, Some(0));
}

fn server_identity(client: &QuicClient) -> String {
    let chain = client.connection().peer_identity().expect("server chain");
    bus_tls::identity_of(chain.first().expect("leaf")).expect("identity")
}

#[compio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() {
    let tls = bus_tests::transport::Tls::server_tls();
    let listener =
        bus_quic::QuicListener::bind(&Quic::listener_config(), tls.clone()).expect("bind");
    let node = start_on(listener, test_config());
    let (mut before, _) = scenarios::connect::<Quic>(&node).await;
    assert!(server_identity(&before).starts_with("CN=bus-test-server,"));
    let b = &pki().server_b;
    tls.reload_with(&bus_tls::TlsServerConfig::new(
        bus_tls::CertificateSource::Files {
            cert: b.cert.clone(),
            key: b.key.clone(),
        },
    ))
    .expect("reload");
    let (mut after, _) = scenarios::connect::<Quic>(&node).await;
    assert!(server_identity(&after).starts_with("CN=bus-test-server-b,"));
    echo(&mut before, 1, 10).await;
    echo(&mut after, 2, 10).await;
    scenarios::stop(&node).await;
}

#[compio::test]
async fn mutual_tls_identity_is_visible_to_the_handler() {
    let mut tls = bus_tls::TlsServerConfig::new(bus_tls::CertificateSource::Files {
        cert: pki().server.cert.clone(),
        key: pki().server.key.clone(),
    });
    tls.client_ca = Some(pki().ca.clone());
    let tls = bus_tls::ServerTls::new(&tls).expect("server TLS");
    let listener = bus_quic::QuicListener::bind(&Quic::listener_config(), tls).expect("bind");
    let node = start_on(listener, test_config());
    // Without a certificate: refused.
    let refused = within(
        "connect without a certificate",
        Quic::client().connect_raw(node.addr),
    )
    .await;
    // The refusal is TLS alert 116, certificate_required, as a QUIC crypto
    // error (0x100 + 116).
    match refused {
        Err(err) => assert!(
            err.to_string()
                .contains("the cryptographic handshake failed: error 116"),
            "{err}"
        ),
        Ok((connection, mut send, _recv)) => {
            // TLS 1.3 lets the client finish first; the server's refusal
            // follows.
            let _ = send
                .write_all_chunks(&mut [bus_quic::opening_ping().as_bytes().to_vec().into()])
                .await;
            let closed = within("refusal", connection.closed()).await;
            assert!(
                !matches!(closed, ConnectionError::LocallyClosed),
                "{closed:?}"
            );
            assert!(
                matches!(&closed, ConnectionError::ConnectionClosed(c)
                    if c.error_code == TransportErrorCode::crypto(116)),
                "certificate_required: {closed:?}"
            );
        }
    }
    eventually("the refused handshake is counted", || {
        node.bus.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(node.bus.stats().connections_total, 0, "nothing registered");
    assert!(
        node.events.drain_now().is_empty(),
        "the handler saw nothing of it"
    );
    let mut config = Quic::client_config();
    config.client_cert = Some((pki().client.cert.clone(), pki().client.key.clone()));
    let client = bus_quic::ClientQuic::new(&config).expect("client");
    let mut client = QuicClient::connect(&client, node.addr).await;
    let (_, info) = node.events.connected_info().await;
    assert_eq!(
        info.identity.as_deref(),
        Some("CN=alice, DNS=alice.clients.test")
    );
    echo(&mut client, 1, 10).await;
    scenarios::stop(&node).await;
}

/// A client session store that remembers what the server's tickets allow.
#[derive(Debug)]
struct TicketLog {
    inner: ClientSessionMemoryCache,
    /// `max_early_data_size` of every TLS 1.3 ticket the server sent.
    early_data_allowed: Mutex<Vec<u32>>,
    /// Tickets handed out for resumption.
    taken: AtomicUsize,
}

impl ClientSessionStore for TicketLog {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.early_data_allowed
            .lock()
            .expect("lock")
            .push(value.max_early_data_size());
        self.inner.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let ticket = self.inner.take_tls13_ticket(server_name);
        if ticket.is_some() {
            self.taken.fetch_add(1, Ordering::SeqCst);
        }
        ticket
    }
}

#[compio::test]
async fn zero_rtt_is_never_accepted() {
    let node = scenarios::start::<Quic>(test_config()).await;
    // A client that would use 0-RTT if the server's tickets allowed it, and
    // that records what the tickets allow.
    let tickets = Arc::new(TicketLog {
        inner: ClientSessionMemoryCache::new(16),
        early_data_allowed: Mutex::new(Vec::new()),
        taken: AtomicUsize::new(0),
    });
    let mut rustls = rustls_client(&[bus_tls::ALPN_BUS]);
    rustls.enable_early_data = true;
    rustls.resumption = Resumption::store(tickets.clone());
    let crypto = bus_quic::compio_quic::crypto::rustls::QuicClientConfig::try_from(rustls)
        .expect("QUIC-capable rustls config");
    let config = bus_quic::compio_quic::ClientConfig::new(Arc::new(crypto));
    let endpoint = bus_quic::compio_quic::Endpoint::client("127.0.0.1:0")
        .await
        .expect("client endpoint");
    // A full handshake first, so the client holds the server's ticket.
    let connection = within(
        "first handshake",
        endpoint
            .connect(node.addr, SERVER_NAME, Some(config.clone()))
            .expect("connect"),
    )
    .await
    .expect("handshake");
    let (send, recv) = within("open", connection.open_bi_wait())
        .await
        .expect("stream");
    let mut first = QuicClient::new(connection, send, recv);
    first.send(&bus_quic::opening_ping()).await;
    assert_eq!(first.recv_frame().await.header().command(), Command::Pong);
    eventually("the server's session ticket", || {
        !tickets.early_data_allowed.lock().expect("lock").is_empty()
    })
    .await;
    let allowed = tickets.early_data_allowed.lock().expect("lock").clone();
    assert!(
        allowed.iter().all(|&bytes| bytes == 0),
        "every ticket allows no early data: {allowed:?}"
    );
    // Resuming with that ticket: it does not allow early data, so there is
    // no 0-RTT, and a 1-RTT handshake still works.
    let connecting = endpoint
        .connect(node.addr, SERVER_NAME, Some(config))
        .expect("connect");
    assert_eq!(
        tickets.taken.load(Ordering::SeqCst),
        1,
        "the client offered the ticket: this is a resumption attempt"
    );
    let Err(connecting) = connecting.into_0rtt() else {
        panic!("the server's ticket allowed 0-RTT")
    };
    let resumed = within("1-RTT handshake", connecting)
        .await
        .expect("a 1-RTT handshake still works");
    let (send, recv) = within("open", resumed.open_bi_wait())
        .await
        .expect("stream");
    let mut second = QuicClient::new(resumed, send, recv);
    second.send(&bus_quic::opening_ping()).await;
    assert_eq!(second.recv_frame().await.header().command(), Command::Pong);
    scenarios::stop(&node).await;
}

/// Spec §7: one bidirectional stream, no unidirectional streams, no
/// datagrams. A client with quinn's default transport settings (datagrams
/// on, unidirectional streams wanted) finds the server grants no
/// unidirectional stream credit and advertises no datagram support, so it
/// can open or send neither, and its bus stream keeps working.
#[compio::test]
async fn unidirectional_streams_and_datagrams_are_not_allowed() {
    let node = scenarios::start::<Quic>(test_config()).await;
    let crypto =
        bus_quic::compio_quic::crypto::rustls::QuicClientConfig::try_from(rustls_client(&[
            bus_tls::ALPN_BUS,
        ]))
        .expect("QUIC-capable rustls config");
    let config = bus_quic::compio_quic::ClientConfig::new(Arc::new(crypto));
    let endpoint = bus_quic::compio_quic::Endpoint::client("127.0.0.1:0")
        .await
        .expect("client endpoint");
    let connection = within(
        "handshake",
        endpoint
            .connect(node.addr, SERVER_NAME, Some(config))
            .expect("connect"),
    )
    .await
    .expect("handshake");
    let (send, recv) = within("open", connection.open_bi_wait())
        .await
        .expect("stream");
    let mut client = QuicClient::new(connection, send, recv);
    client.send(&bus_quic::opening_ping()).await;
    assert_eq!(client.recv_frame().await.header().command(), Command::Pong);
    node.events.connected().await;

    let uni = client.connection().open_uni();
    assert!(
        matches!(uni, Err(OpenStreamError::StreamsExhausted)),
        "no unidirectional stream credit: {:?}",
        uni.map(|_| "a stream")
    );
    assert_eq!(
        client.connection().max_datagram_size(),
        None,
        "the server advertises no datagram support"
    );
    let sent = client
        .connection()
        .send_datagram(bytes::Bytes::from_static(b"datagram"));
    assert!(
        matches!(sent, Err(SendDatagramError::UnsupportedByPeer)),
        "{sent:?}"
    );
    echo(&mut client, 1, 10).await;
    let (_, only) = node.events.frame().await;
    assert_eq!(only.header().request(), 1, "only the bus stream's frame");
    scenarios::stop(&node).await;
}

#[compio::test]
async fn quic_connections_count_in_the_node_wide_max_connections() {
    bus_tests::admission::quic_connections_count_in_the_node_wide_cap().await;
}

/// Initials per second the flood aims at (it catches up after a stall, so
/// its average holds on a loaded machine).
const FLOOD_RATE_PER_S: u64 = 1000;
/// The flood stops by itself after this many Initials (30 s at its rate).
const FLOOD_MAX_INITIALS: u64 = 30 * FLOOD_RATE_PER_S;

/// Sends well-formed client Initials that never complete, at
/// [`FLOOD_RATE_PER_S`], each from a fresh source port and never reading a
/// reply, until `stop` is set or [`FLOOD_MAX_INITIALS`] are sent. Each is a
/// real client's first datagram (quinn-proto builds it: a new connection ID,
/// a real `ClientHello`) whose connection state is thrown away. Counts
/// what it sent in `sent`.
fn initial_flood(
    server: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(rustls_client(&[
        bus_tls::ALPN_BUS,
    ]))
    .expect("QUIC client crypto");
    let config = quinn_proto::ClientConfig::new(Arc::new(crypto));
    std::thread::spawn(move || {
        let endpoint = || {
            quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            )
        };
        let mut quinn = endpoint();
        let mut datagram = Vec::with_capacity(2048);
        let started = Instant::now();
        let mut count = 0u64;
        while count < FLOOD_MAX_INITIALS && !stop.load(Ordering::Relaxed) {
            let due = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
                * FLOOD_RATE_PER_S
                / 1000;
            while count < due.min(FLOOD_MAX_INITIALS) {
                // The endpoint remembers every connection it made: start a
                // fresh one now and then so the flood's memory stays flat.
                if count % 1000 == 999 {
                    quinn = endpoint();
                }
                let now = Instant::now();
                let (_, mut connection) = quinn
                    .connect(now, config.clone(), server, SERVER_NAME)
                    .expect("connect");
                datagram.clear();
                let transmit = connection
                    .poll_transmit(now, 1, &mut datagram)
                    .expect("the client's Initial");
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket
                    .send_to(&datagram[..transmit.size], server)
                    .expect("send the Initial");
                count += 1;
                sent.store(
                    usize::try_from(count).unwrap_or(usize::MAX),
                    Ordering::Relaxed,
                );
            }
            // Pacing, not synchronisation: the next Initials are due in 1 ms.
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

#[compio::test]
async fn real_clients_keep_connecting_through_a_flood_of_never_completing_initials() {
    // Listener defaults: 256 handshakes, Retry from 64 in flight.
    let config = Quic::listener_config();
    let threshold = config.effective_retry_threshold();
    let listener = Quic::listen_with(&config);
    let admission = listener.admission();
    // handshake_grace (5 s) outlives the flood's first 512 Initials: without
    // Retry they alone would hold all 256 handshake slots.
    let node = start_on(listener, test_config());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = initial_flood(node.addr, stop.clone(), sent.clone());
    let _stop_on_panic = scopeguard_stop(stop.clone());
    eventually("the flood has sent twice max_handshakes", || {
        sent.load(Ordering::Relaxed) >= 2 * config.max_handshakes as usize
    })
    .await;
    // The server reads the flood at its own pace (and the kernel may drop
    // some of it): wait until it has answered with Retries.
    eventually("the flood is answered with Retries", || {
        admission.retried() > 0
    })
    .await;
    let mut connected = 0;
    let mut failures = Vec::new();
    for request in 1..=10 {
        match within(
            "a client during the flood",
            Quic::client().connect_raw(node.addr),
        )
        .await
        {
            Ok((connection, send, recv)) => {
                let mut client = QuicClient::new(connection, send, recv);
                echo(&mut client, request, 100).await;
                connected += 1;
            }
            Err(err) => failures.push(err.to_string()),
        }
        assert!(
            admission.handshaking() <= threshold + 1,
            "unvalidated handshakes stay within the Retry threshold: {}",
            admission.handshaking()
        );
    }
    let during = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("the flood thread");
    assert!(connected >= 9, "{connected} of 10 connected: {failures:?}");
    assert!(
        during > 2 * config.max_handshakes as usize,
        "the flood went on while the clients connected"
    );
    assert_eq!(admission.refused(), 0, "nothing reached the caps");
    scenarios::stop(&node).await;
}

/// Sets `stop` when dropped, so a failing test ends its flood thread.
fn scopeguard_stop(stop: Arc<std::sync::atomic::AtomicBool>) -> impl Drop {
    struct Stop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    Stop(stop)
}

#[compio::test]
async fn a_client_asked_to_retry_validates_and_echoes() {
    let mut config = Quic::listener_config();
    config.retry_threshold = Some(0);
    let listener = Quic::listen_with(&config);
    let admission = listener.admission();
    let node = start_on(listener, test_config());
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    echo(&mut client, 1, 1000).await;
    echo(&mut client, 2, 100_000).await;
    assert_eq!(admission.retried(), 1, "one Retry, then validated");
    assert_eq!((admission.open(), admission.refused()), (1, 0));
    assert!(bus_quic::totals().retries >= 1);
    scenarios::stop(&node).await;
}

#[compio::test]
async fn small_and_large_replies_in_one_batch_arrive_whole_and_in_order() {
    let node = scenarios::start::<Quic>(test_config()).await;
    let (mut client, _) = scenarios::connect::<Quic>(&node).await;
    // Around the coalescing bound (4 KiB) and the send chunk (64 KiB): small
    // replies are copied into the shared chunk, large ones go by reference,
    // and a chunk fills up mid-batch.
    let sizes = [
        0, 10, 4_000, 4_096, 4_097, 300, 100_000, 1, 60_000, 4_000, 4_000, 70_000, 5,
    ];
    let mut burst = Vec::new();
    for round in 0..4u64 {
        for (i, &len) in sizes.iter().enumerate() {
            let request = round * 100 + i as u64 + 1;
            burst.extend_from_slice(app(ECHO, request, len).as_bytes());
        }
    }
    client.send_raw(&burst).await;
    for round in 0..4u64 {
        for (i, &len) in sizes.iter().enumerate() {
            let request = round * 100 + i as u64 + 1;
            let reply = client.recv_frame().await;
            assert_eq!(reply.header().command_raw(), ECHO_REPLY);
            assert_eq!(reply.header().request(), request, "in order");
            assert_pattern(reply.body(), request, len);
        }
    }
    scenarios::stop(&node).await;
}
