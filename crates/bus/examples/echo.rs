//! A TCP echo server embedding `bus`: every frame a client sends comes back
//! to that client unchanged. Ctrl-C stops it; each client gets
//! `Goodbye(ShuttingDown)`.
//!
//! ```sh
//! cargo run -p bus --example echo -- 127.0.0.1:7070   # the default; port 0: any free port
//! cargo run -p bus-cli -- ping tcp://127.0.0.1:7070   # in another terminal
//! ```

use std::{pin::pin, time::Duration};

use bus::{
    Bus, BusConfig, Frame, Peer,
    tcp::{TcpListener, TcpListenerConfig},
    transport::Listener as _,
};
use futures_util::future::poll_immediate;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7070".into());
    // One compio runtime (io_uring on Linux) on this thread; the bus and
    // all its connections live on it.
    compio::runtime::Runtime::new()?.block_on(async {
        // The application: called on this thread for every frame a client
        // sends. A send never waits: it queues the frame for the client's
        // writer or returns why not (QueueFull, NotConnected, ShuttingDown).
        let echo = |bus: &Bus, from: Peer, frame: Frame| {
            if let Peer::Client(id) = from
                && let Err(err) = bus.send_to_client(id, frame)
            {
                eprintln!("echo to {id}: {err}");
            }
        };
        let bus = Bus::new(BusConfig::default(), echo)?;
        let listener = TcpListener::bind(&TcpListenerConfig::new(addr.parse()?))?;
        let local = listener.local_addr()?;
        bus.serve(listener)?; // accepts and serves in the background

        // Polled once, so Ctrl-C is ours before we say we are ready.
        let mut ctrl_c = pin!(compio::signal::ctrl_c());
        poll_immediate(&mut ctrl_c).await;
        println!("listening on tcp://{local}");
        ctrl_c.await?;

        // Goodbye to every client, flush, close: bounded by the grace.
        let report = bus.shutdown(Duration::from_secs(5)).await;
        println!("stopped: {} connections closed", report.connections);
        Ok(())
    })
}
