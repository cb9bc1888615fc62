//! A bounded TLS echo over loopback for instruction counts (callgrind):
//! one server half and one client half in one process, both on this
//! crate's frame halves.
//!
//! `cargo run --release -p bus-tls --example echo_bench -- SIZE BATCH ROUNDS`
//! sends ROUNDS batches of BATCH frames with SIZE-byte bodies and reads every
//! echo back. Not a test: it asserts only that every frame came back.

use std::{net::SocketAddr, time::Duration};

use bus_core::{
    Command, DecodeLimits, FrameMut, ReadSettings,
    transport::{Connection, FrameReader, FrameWriter, Listener},
};
use bus_tcp::TcpListenerConfig;
use bus_tls::{
    CertificateSource, ClientTls, ServerTls, TlsClientConfig, TlsListener, TlsServerConfig,
};

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[compio::main]
async fn main() {
    let (size, batch, rounds) = (arg(1, 256), arg(2, 32), arg(3, 2000));
    let dir = std::env::temp_dir().join(format!("bus-tls-bench-{}", std::process::id()));
    let server = ServerTls::new(&TlsServerConfig::new(CertificateSource::SelfSigned {
        dir: dir.clone(),
    }))
    .expect("server tls");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut listener =
        TlsListener::bind(&TcpListenerConfig::new(any), server.clone()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = DecodeLimits {
        max_message_size_bytes: 64 << 20,
        require_sealed: false,
    };
    let settings = ReadSettings::new(limits);
    let serve_settings = settings.clone();
    let echo = compio::runtime::spawn(async move {
        let incoming = listener.accept().await.expect("accept");
        let (mut reader, mut writer, _) =
            incoming.establish(serve_settings).await.expect("handshake");
        let mut out = Vec::new();
        while let Ok(frame) = reader.read_frame().await {
            out.push(frame);
            let compio::BufResult(res, back) = writer.write_batch(std::mem::take(&mut out)).await;
            res.expect("echo write");
            out = back;
        }
        let _ = writer.close(None).await;
    });
    let mut config = TlsClientConfig::new(server.cert_path(), "localhost");
    config.handshake_timeout = Duration::from_secs(10);
    let client = ClientTls::new(&config).expect("client tls");
    let outgoing = client.dial(addr).await.expect("dial");
    let (mut reader, mut writer, _) = outgoing
        .establish(settings)
        .await
        .expect("client handshake");
    let mut frame = FrameMut::new(Command::Application(16), size);
    frame.seal();
    let frame = frame.freeze();
    let mut buf = Vec::with_capacity(batch);
    for _ in 0..rounds {
        buf.extend((0..batch).map(|_| frame.clone()));
        let compio::BufResult(res, back) = writer.write_batch(std::mem::take(&mut buf)).await;
        res.expect("write");
        buf = back;
        for _ in 0..batch {
            let got = reader.read_frame().await.expect("echo");
            assert_eq!(got.len(), frame.len());
        }
    }
    writer.close(None).await.expect("close");
    echo.await.expect("server");
    let _ = std::fs::remove_dir_all(dir);
    println!("{rounds} rounds of {batch} frames of {size} bytes echoed");
}
