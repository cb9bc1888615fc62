//! A bounded WebSocket echo for instruction counts (`valgrind --tool=
//! callgrind`): a bus with a WS listener on its own thread echoes, and this
//! crate's client half sends `ROUNDS` batches of `DEPTH` frames of `SIZE`
//! bytes and reads every reply. Usage: `ws_echo [SIZE] [ROUNDS] [DEPTH]`
//! (default 256 B, 2000 rounds, 16 deep). Prints what it did; the run is
//! the same amount of work every time, so instruction counts compare.
//! `WS_ECHO_DRIVER=poll` runs both runtimes on compio's polling driver:
//! valgrind does not see `io_uring` completions, so a callgrind run needs it
//! (the user-space path above the driver is the same). `WS_ECHO_TLS=1`
//! (feature `wss`) runs WSS instead, on a self-signed certificate generated
//! under the temporary directory.

use std::{sync::mpsc, time::Duration};

use bus_core::{
    Bus, BusConfig, Command, DecodeLimits, Frame, FrameMut, Peer, ReadSettings,
    transport::{Connection as _, FrameReader as _, FrameWriter as _, Listener as _},
};
use bus_ws::{WsConnectorConfig, WsListener, WsListenerConfig};

const ECHO: u8 = 16;
const ECHO_REPLY: u8 = 17;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// A runtime on the driver `WS_ECHO_DRIVER` names (default: compio's own
/// choice, `io_uring` where available).
fn runtime() -> compio::runtime::Runtime {
    let mut proactor = compio::driver::ProactorBuilder::new();
    if std::env::var("WS_ECHO_DRIVER").is_ok_and(|d| d == "poll") {
        proactor.driver_type(compio::driver::DriverType::Poll);
    }
    compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .expect("runtime")
}

/// Whether `WS_ECHO_TLS=1` asks for WSS.
fn tls() -> bool {
    std::env::var("WS_ECHO_TLS").is_ok_and(|t| t == "1")
}

/// The self-signed certificate's directory of a WSS run.
#[cfg(feature = "wss")]
fn cert_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("bus-ws-echo-tls")
}

/// The listener: WS, or WSS when asked (and built with `wss`).
fn listen(ws: &WsListenerConfig) -> WsListener {
    #[cfg(feature = "wss")]
    if tls() {
        let mut config = bus_tls::TlsServerConfig::new(bus_tls::CertificateSource::SelfSigned {
            dir: cert_dir(),
        });
        config.alpn = vec![bus_tls::ALPN_HTTP1.to_vec()];
        let tls = bus_tls::ServerTls::new(&config).expect("certificate");
        return WsListener::bind_tls(ws, tls).expect("bind");
    }
    assert!(!tls(), "WS_ECHO_TLS=1 needs feature `wss`");
    WsListener::bind(ws).expect("bind")
}

/// Dials WS, or WSS when asked.
async fn dial(addr: std::net::SocketAddr, ws: &WsConnectorConfig) -> bus_ws::WsConnection {
    #[cfg(feature = "wss")]
    if tls() {
        let cert = bus_tls::ensure_self_signed(&cert_dir()).expect("certificate");
        let mut config = bus_tls::TlsClientConfig::new(cert.cert, "localhost");
        config.alpn = vec![bus_tls::ALPN_HTTP1.to_vec()];
        let tls = bus_tls::ClientTls::new(&config).expect("client TLS");
        return bus_ws::connect_tls(addr, ws, &tls).await.expect("dial");
    }
    bus_ws::connect(addr, ws).await.expect("dial")
}

fn main() {
    let (size, rounds, depth) = (arg(1, 256).max(256), arg(2, 2000), arg(3, 16));
    let max = u32::try_from(size.max(1 << 20) * 2).expect("fits");
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let server = std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut config = BusConfig::default();
            config.max_message_size_bytes = max;
            let echo = |bus: &Bus, from: Peer, frame: Frame| {
                if let Peer::Client(id) = from {
                    let mut reply = frame.into_mut();
                    reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
                    reply.reseal_header();
                    let _ = bus.send_to_client(id, reply.freeze());
                }
            };
            let mut ws = WsListenerConfig::new("127.0.0.1:0".parse().expect("addr"));
            ws.limits.max_frame_size_bytes = max;
            let bus = Bus::new(config, echo).expect("bus");
            let listener = listen(&ws);
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("addr");
            bus.serve(listener).expect("serve");
            let _ = stop_rx.recv().await;
            bus.shutdown(Duration::from_secs(1)).await;
        });
    });
    let addr = addr_rx.recv().expect("server started");
    runtime().block_on(async move {
        let mut ws = WsConnectorConfig::default();
        ws.limits.max_frame_size_bytes = max;
        let connection = dial(addr, &ws).await;
        let limits = DecodeLimits {
            max_message_size_bytes: max,
            require_sealed: false,
        };
        let (mut reader, mut writer, _) = connection
            .establish(ReadSettings::new(limits))
            .await
            .expect("establish");
        let mut request = FrameMut::new(Command::from_u8(ECHO), size - 256);
        request.seal();
        let request = request.freeze();
        let mut batch = Vec::with_capacity(depth);
        let mut bytes = 0usize;
        for _ in 0..rounds {
            batch.extend(std::iter::repeat_n(request.clone(), depth));
            let compio::BufResult(res, back) = writer.write_batch(batch).await;
            res.expect("write");
            batch = back;
            batch.clear();
            for _ in 0..depth {
                let reply = reader.read_frame().await.expect("reply");
                assert_eq!(reply.header().command_raw(), ECHO_REPLY);
                bytes += reply.len();
            }
        }
        println!("{} echoes of {size} B, {bytes} bytes back", rounds * depth);
        writer.close(None).await.expect("close");
    });
    stop_tx.send_blocking(()).expect("stop");
    server.join().expect("server");
}
