//! `bus serve` over TLS: the development certificate in the data dir, a
//! broadcast across TCP and TLS clients, and SIGHUP reloading the
//! certificate files.

use std::time::Duration;

use bus_cli::node::{BROADCAST, BROADCAST_ACK, DELIVERY, ECHO, ECHO_REPLY, broadcast_ack_count};
use bus_client::{Client, ClientOptions};
use bus_core::{Command, FrameMut};
use bus_tests::{STEP, pki::pki, pki::unique_dir, within};

use crate::common::ServeProcess;

fn tls_options(ca: &std::path::Path) -> ClientOptions {
    let mut options = ClientOptions::default();
    options.ca_file = Some(ca.to_owned());
    options
}

#[compio::test]
async fn serve_over_tls_with_a_generated_certificate_and_broadcast_across_transports() {
    let mut node = ServeProcess::start(&["--tcp", "127.0.0.1:0", "--tls", "127.0.0.1:0"]);
    let cert = node.data_dir.join("tls").join("cert.pem");
    assert!(
        cert.is_file(),
        "the development certificate is in the data dir"
    );
    let tls_url = format!("tls://{}", node.addrs["tls"]);
    let secure = within("tls connect", Client::connect(&tls_url, tls_options(&cert)))
        .await
        .expect("tls connect");
    let plain = within(
        "tcp connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("tcp connect");
    // Plain TCP has no handshake: `plain` is registered (on whichever shard
    // it was handed to) once it has had a reply.
    within(
        "tcp echo",
        plain.request(FrameMut::with_body(Command::from_u8(ECHO), b"x")),
    )
    .await
    .expect("tcp echo");
    let reply = within(
        "echo",
        secure.request(FrameMut::with_body(Command::from_u8(ECHO), b"over tls")),
    )
    .await
    .expect("echo");
    assert_eq!(reply.header().command_raw(), ECHO_REPLY);
    assert_eq!(reply.body(), b"over tls");
    let ack = within(
        "broadcast",
        secure.request(FrameMut::with_body(Command::from_u8(BROADCAST), b"hi all")),
    )
    .await
    .expect("ack");
    assert_eq!(ack.header().command_raw(), BROADCAST_ACK);
    assert_eq!(broadcast_ack_count(&ack), 2);
    for client in [&secure, &plain] {
        let delivery = within("delivery", client.recv()).await.expect("delivery");
        assert_eq!(delivery.header().command_raw(), DELIVERY);
        assert_eq!(delivery.body(), b"hi all");
    }
    // Without a CA to trust, a tls:// client fails with a reason.
    let err = within(
        "untrusting",
        Client::connect(&tls_url, ClientOptions::default()),
    )
    .await
    .expect_err("no CA file");
    assert!(err.to_string().contains("CA"), "{err}");
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
}

async fn served_identity(addr: std::net::SocketAddr) -> String {
    let config = bus_tls::TlsClientConfig::new(&pki().ca, "localhost");
    let tls = bus_tls::ClientTls::new(&config).expect("client");
    let session = within("tls connect", tls.connect(addr))
        .await
        .expect("connect");
    session.peer_identity().expect("server identity")
}

#[compio::test]
async fn sighup_reloads_the_certificate_files() {
    let dir = unique_dir("sighup-certs");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&pki().server.cert, &cert).expect("copy");
    std::fs::copy(&pki().server.key, &key).expect("copy");
    let mut node = ServeProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().expect("utf-8"),
        "--key",
        key.to_str().expect("utf-8"),
    ]);
    let addr = node.addrs["tls"];
    assert!(
        served_identity(addr)
            .await
            .starts_with("CN=bus-test-server,")
    );
    // A broken replacement is refused and the old certificate stays.
    std::fs::write(&cert, "broken").expect("break");
    node.signal(libc::SIGHUP);
    let line = node.wait_line("SIGHUP:");
    assert!(
        line.contains("reload failed") && line.contains("cert.pem"),
        "{line}"
    );
    assert!(
        served_identity(addr)
            .await
            .starts_with("CN=bus-test-server,")
    );
    // A rotated certificate is served to new connections.
    std::fs::copy(&pki().server_b.cert, &cert).expect("rotate");
    std::fs::copy(&pki().server_b.key, &key).expect("rotate");
    node.signal(libc::SIGHUP);
    assert_eq!(node.wait_line("SIGHUP:"), "SIGHUP: certificate reloaded");
    assert!(
        served_identity(addr)
            .await
            .starts_with("CN=bus-test-server-b,")
    );
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
}

/// The node on all five transports: each answers Echo, and a Broadcast
/// from any of them reaches a client on every transport.
#[compio::test]
async fn serve_answers_echo_and_broadcast_over_every_transport() {
    let mut node = ServeProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--wss",
        "127.0.0.1:0",
        "--quic",
        "127.0.0.1:0",
    ]);
    let cert = node.data_dir.join("tls").join("cert.pem");
    let mut clients = Vec::new();
    for scheme in ["tcp", "tls", "ws", "wss", "quic"] {
        let url = format!("{scheme}://{}", node.addrs[scheme]);
        let client = within(scheme, Client::connect(&url, tls_options(&cert)))
            .await
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let body = format!("echo over {scheme}");
        let reply = within(
            scheme,
            client.request(FrameMut::with_body(Command::from_u8(ECHO), body.as_bytes())),
        )
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"));
        assert_eq!(reply.header().command_raw(), ECHO_REPLY, "{scheme}");
        assert_eq!(reply.body(), body.as_bytes(), "{scheme}");
        assert!(reply.header().is_sealed(), "{scheme}");
        clients.push((scheme, client));
    }
    let (_, sender) = &clients[4];
    let ack = within(
        "broadcast from quic",
        sender.request(FrameMut::with_body(
            Command::from_u8(BROADCAST),
            b"to all five",
        )),
    )
    .await
    .expect("ack");
    assert_eq!(broadcast_ack_count(&ack), 5);
    for (scheme, client) in &clients {
        let delivery = within(scheme, client.recv()).await.expect("delivery");
        assert_eq!(delivery.header().command_raw(), DELIVERY, "{scheme}");
        assert_eq!(delivery.body(), b"to all five", "{scheme}");
    }
    for (_, client) in clients {
        client.close().await;
    }
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(8) + STEP).success());
}
