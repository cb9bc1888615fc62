//! `bus ping URL`: connect, send `Ping`s, print each round-trip time and a
//! summary. Any failure (refused, handshake, `Goodbye`, timeout) ends it
//! with the reason and a non-zero exit.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use bus_client::{Client, ClientOptions};
use compio::runtime::time;

use crate::{Error, cli::PingArgs};

/// Runs `bus ping`.
pub fn run(args: &PingArgs) -> Result<ExitCode, Error> {
    let runtime = compio::runtime::Runtime::new().map_err(|source| Error::Io {
        what: "cannot start the compio runtime",
        source,
    })?;
    runtime.block_on(ping(args))
}

async fn ping(args: &PingArgs) -> Result<ExitCode, Error> {
    let mut options = ClientOptions::default();
    options.connect_timeout = args.timeout;
    options.handshake_timeout = args.timeout;
    options.request_timeout = args.timeout;
    options.ca_file.clone_from(&args.ca);
    options.server_name.clone_from(&args.server_name);
    let started = Instant::now();
    let client = Client::connect(&args.url, options).await?;
    println!(
        "connected to {} in {}",
        client.endpoint(),
        millis(started.elapsed())
    );
    let mut rtts = Vec::with_capacity(args.count as usize);
    for seq in 1..=args.count {
        if seq > 1 {
            time::sleep(args.interval).await;
        }
        let rtt = client.ping().await?;
        println!(
            "pong from {}: seq={seq} time={}",
            client.endpoint(),
            millis(rtt)
        );
        rtts.push(rtt);
    }
    client.close().await;
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let total: Duration = rtts.iter().sum();
        let avg = total / u32::try_from(rtts.len()).unwrap_or(u32::MAX);
        println!(
            "{} pings, {} pongs, rtt min/avg/max = {}/{}/{}",
            args.count,
            rtts.len(),
            millis(*min),
            millis(avg),
            millis(*max)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
