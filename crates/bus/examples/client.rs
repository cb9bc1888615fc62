//! A client with `bus::Client`: a request and its reply, then an unsolicited
//! frame the node pushes. Talks to the reference node (`bus serve`) or to
//! the `shards` example, on any transport this build has.
//!
//! ```sh
//! cargo run -p bus --example client --features client            # tcp://127.0.0.1:7070
//! cargo run -p bus --example client --features full -- wss://127.0.0.1:7073 /tmp/bus-example-tls/cert.pem
//! ```
//!
//! `tls://`, `wss://` and `quic://` need a certificate to trust: the second
//! argument (the node's own certificate when it is self-signed).

use std::time::Duration;

use bus::{Client, ClientOptions, Command, FrameMut};

/// The reference node's commands (spec §8).
const ECHO: u8 = 16;
const BROADCAST: u8 = 18;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or("tcp://127.0.0.1:7070".into());
    let mut options = ClientOptions::default();
    options.ca_file = args.next().map(Into::into);

    // The client lives on this thread's compio runtime; one task drives its
    // connection. Every wait below is bounded by the options' timeouts.
    compio::runtime::Runtime::new()?.block_on(async {
        let client = Client::connect(&url, options).await?;
        println!("connected to {url}");
        // Ping and Pong are answered by the node's bus, not its application.
        println!("ping: {:?}", client.ping().await?);

        // Request/reply: the client gives the frame a fresh `request` id and
        // the node's answer carrying that id completes this call.
        let hello = FrameMut::with_body(Command::from_u8(ECHO), b"hello");
        let reply = client.request(hello).await?;
        let text = String::from_utf8_lossy(reply.body());
        println!("reply {}: {text}", reply.header().command_raw());

        // Unsolicited: a Broadcast makes the node push a Delivery to every
        // client, this one included. The BroadcastAck is the reply; the
        // Delivery is not a reply to anything, so it waits in `recv`.
        let news = FrameMut::with_body(Command::from_u8(BROADCAST), b"hi everyone");
        let ack = client.request(news).await?;
        let area = ack.header().command_area();
        let clients = u32::from_le_bytes([area[0], area[1], area[2], area[3]]);
        println!("broadcast addressed to {clients} clients");
        let pushed = compio::time::timeout(Duration::from_secs(5), client.recv())
            .await?
            .ok_or("the connection closed")?;
        let text = String::from_utf8_lossy(pushed.body());
        println!("unsolicited {}: {text}", pushed.header().command_raw());

        // Goodbye(Normal), bounded by `close_timeout`.
        client.close().await;
        Ok(())
    })
}
