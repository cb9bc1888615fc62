//! A chat through one node: a client on every transport (TCP, TLS,
//! WebSocket, WebSocket over TLS, QUIC) and a browser, all talking through
//! one `Bus` in this process.
//!
//! ```sh
//! cargo run -p bus --example chat --features full                 # ports 7070..=7074
//! cargo run -p bus --example chat --features full -- 127.0.0.1 0  # free ports (printed)
//! ```
//!
//! Each of the five clients says hello and prints what it hears. Then open
//! the page it prints (`examples/chat.html`, which joins over WS) in a
//! browser and say something: every client hears it, tagged `[ws]`. The
//! protocol is the reference node's Broadcast (spec §8): a `Say` (18) from
//! anyone becomes a `Heard` (19) to everyone, sender included. Ctrl-C stops.

use std::{
    net::{IpAddr, SocketAddr},
    pin::pin,
    time::Duration,
};

use bus::{
    Bus, BusConfig, Client, ClientOptions, Command, Frame, FrameMut, Peer,
    quic::{QuicListener, QuicListenerConfig},
    tcp::{TcpListener, TcpListenerConfig},
    tls::{ALPN_HTTP1, CertificateSource, ServerTls, TlsListener, TlsServerConfig},
    transport::Listener as _,
    ws::{WsListener, WsListenerConfig},
};
use futures_util::future::poll_immediate;

/// Someone says something.
const SAY: u8 = 18;
/// Everyone hears it, tagged with the speaker's transport.
const HEARD: u8 = 19;
/// The listeners, in the order of their ports.
const TRANSPORTS: [&str; 5] = ["tcp", "tls", "ws", "wss", "quic"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `chat [IP] [FIRST_PORT]`: TCP on FIRST_PORT, then TLS, WS, WSS, QUIC
    // on the next ports; FIRST_PORT 0 gives every listener a free port.
    let mut args = std::env::args().skip(1);
    let ip: IpAddr = args.next().as_deref().unwrap_or("127.0.0.1").parse()?;
    let first: u16 = args.next().as_deref().unwrap_or("7070").parse()?;
    let addr = |i: u16| SocketAddr::new(ip, if first == 0 { 0 } else { first + i });

    // A self-signed certificate for TLS, WSS and QUIC (see the shards example).
    let cert_dir = std::env::temp_dir().join("bus-example-tls");
    let tls_config = TlsServerConfig::new(CertificateSource::SelfSigned { dir: cert_dir });
    let tls = ServerTls::new(&tls_config)?;
    let mut wss_config = tls_config.clone();
    wss_config.alpn = vec![ALPN_HTTP1.to_vec()];
    let wss_tls = ServerTls::new(&wss_config)?;

    compio::runtime::Runtime::new()?.block_on(async {
        // The application: every `Say` goes to every client as a `Heard`,
        // tagged with the speaker's transport.
        let chat = |bus: &Bus, from: Peer, frame: Frame| {
            let Peer::Client(id) = from else { return };
            if frame.header().command_raw() != SAY {
                return;
            }
            let transport = bus.client(id).map_or("?", |c| c.info.transport.as_str());
            let text = String::from_utf8_lossy(frame.body());
            let heard = format!("[{transport}] {text}");
            let mut frame = FrameMut::with_body(Command::from_u8(HEARD), heard.as_bytes());
            frame.seal();
            // Never waits: a client whose queue is full misses this line.
            bus.broadcast(&frame.freeze());
        };
        // One bus serves all five listeners.
        let bus = Bus::new(BusConfig::default(), chat)?;
        let max = bus.config().max_message_size_bytes;
        let ws = WsListenerConfig::new(addr(2));
        let wss = WsListenerConfig::new(addr(3));
        ws.validate(max)?;
        wss.validate(max)?;
        let tcp = TcpListener::bind(&TcpListenerConfig::new(addr(0)))?;
        let tls_listener = TlsListener::bind(&TcpListenerConfig::new(addr(1)), tls.clone())?;
        let ws = WsListener::bind(&ws)?;
        let wss = WsListener::bind_tls(&wss, wss_tls)?;
        let quic = QuicListener::bind(&QuicListenerConfig::new(addr(4)), tls.clone())?;
        let addrs = [
            tcp.local_addr()?,
            tls_listener.local_addr()?,
            ws.local_addr()?,
            wss.local_addr()?,
            quic.local_addr()?,
        ];
        bus.serve(tcp)?;
        bus.serve(tls_listener)?;
        bus.serve(ws)?;
        bus.serve(wss)?;
        bus.serve(quic)?;

        // One client per transport, on this same thread and runtime.
        let mut options = ClientOptions::default();
        options.ca_file = Some(tls.cert_path());
        let mut clients = Vec::new();
        for (name, addr) in TRANSPORTS.into_iter().zip(addrs) {
            let client = Client::connect(&format!("{name}://{addr}"), options.clone()).await?;
            // A round trip: the node has registered us once it answers.
            client.ping().await?;
            let listener = compio::runtime::spawn(listen(name, client.clone()));
            clients.push((name, client, listener));
        }
        for (name, client, _) in &clients {
            let hello = format!("hello from {name}");
            client
                .send(FrameMut::with_body(Command::from_u8(SAY), hello.as_bytes()))
                .await?;
        }

        let mut ctrl_c = pin!(compio::signal::ctrl_c());
        poll_immediate(&mut ctrl_c).await;
        let listening = TRANSPORTS.iter().zip(addrs);
        let listening: Vec<String> = listening.map(|(n, a)| format!("{n}={a}")).collect();
        println!("listening {}", listening.join(" "));
        let page = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chat.html");
        println!("browser: open file://{page}?ws=ws://{}/", addrs[2]);
        ctrl_c.await?;

        // Goodbye(ShuttingDown) reaches our own five clients too; each one
        // is closed (bounded by its close timeout) before we leave.
        bus.shutdown(Duration::from_secs(5)).await;
        for (_, client, listener) in clients {
            client.close().await;
            let _ = listener.await;
        }
        Ok(())
    })
}

/// Prints what `client` hears until its connection closes.
async fn listen(name: &'static str, client: Client) {
    while let Some(frame) = client.recv().await {
        println!("{name} heard {}", String::from_utf8_lossy(frame.body()));
    }
    println!("{name} left");
}
