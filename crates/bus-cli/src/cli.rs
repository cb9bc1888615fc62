//! The command line: `bus serve`, `bus ping`, `bus bench`, `bus config`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bus_config::ByteSize;
use clap::{Args, Parser, Subcommand};

/// `bus`: a message bus node, a client probe and a load generator.
#[derive(Debug, Parser)]
#[command(name = "bus", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the reference node (spec §8: Echo and Broadcast) on every enabled
    /// transport. With no arguments: the embedded defaults (TCP on
    /// 127.0.0.1:7070).
    Serve(ServeArgs),
    /// Connect to a node, send Pings and print round-trip times.
    Ping(PingArgs),
    /// Load generator: Echo round trips, pipelined, against an in-process
    /// node (default) or `--target`.
    Bench(BenchArgs),
    /// Print the embedded default configuration, every key commented: a
    /// starting point for `--config FILE`.
    Config,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Do not serve this.
    Off,
    /// Serve on this address (port 0 picks a free port).
    At(SocketAddr),
}

fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen::Off);
    }
    text.parse()
        .map(Listen::At)
        .map_err(|_| format!("`{text}` is not IP:port (e.g. 127.0.0.1:7070) or `off`"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    bus_config::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.parse::<ByteSize>().map_err(|e| e.to_string())
}

/// `bus serve` options. Each flag overrides the file, which overrides the
/// embedded defaults.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML config file, merged over the embedded defaults (`bus config`
    /// prints them).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve plain TCP on ADDR, or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    pub tcp: Option<Listen>,
    /// Serve TLS 1.3 on ADDR, or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    pub tls: Option<Listen>,
    /// Serve WebSocket on ADDR, or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    pub ws: Option<Listen>,
    /// Serve WebSocket over TLS on ADDR, or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    pub wss: Option<Listen>,
    /// Serve QUIC on UDP ADDR, or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    pub quic: Option<Listen>,
    /// Serve the admin endpoint (/healthz, /metrics, /connz) on ADDR, or
    /// `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    pub admin: Option<Listen>,
    /// PEM certificate chain for TLS, WSS and QUIC (with --key).
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for TLS, WSS and QUIC (with --cert).
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where the node keeps generated files (the self-signed development
    /// certificate).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (threads); 0 = one per core.
    #[arg(long, value_name = "N")]
    pub shards: Option<u16>,
    /// Bound from accept to a usable connection, e.g. `10 s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_grace: Option<Duration>,
    /// Largest accepted frame, e.g. `64 MiB`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<ByteSize>,
    /// Log level: error, warn, info, debug or trace (`RUST_LOG` wins).
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
}

/// `bus ping` options.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The node, e.g. `tcp://127.0.0.1:7070`.
    pub url: String,
    /// Pings to send.
    #[arg(short = 'c', long, default_value_t = 4)]
    pub count: u32,
    /// Pause between pings.
    #[arg(short = 'i', long, default_value = "1 s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Bound on connecting and on each ping.
    #[arg(long, default_value = "5 s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// PEM bundle of CAs to trust (tls://, wss://, quic://).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Name to verify the node's certificate against.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

/// `bus bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A running node to load, e.g. `tcp://127.0.0.1:7070` (repeatable);
    /// without it an in-process node is started.
    #[arg(long, value_name = "URL")]
    pub target: Vec<String>,
    /// Transports to bench against the in-process node: a comma list, or
    /// `all` (every transport in this build).
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub transport: String,
    /// Connections per transport.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 32)]
    pub depth: usize,
    /// Size of each frame, header included (256 B at least).
    #[arg(long, default_value = "1 KiB", value_parser = parse_size)]
    pub size: ByteSize,
    /// How long to measure, per transport.
    #[arg(long, default_value = "10 s", value_parser = parse_duration_or_seconds)]
    pub duration: Duration,
    /// Load before measuring starts (not counted).
    #[arg(long, default_value = "1 s", value_parser = parse_duration_or_seconds)]
    pub warmup: Duration,
    /// Print the results as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Draw latency percentiles per transport into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Do not print the progress line.
    #[arg(long)]
    pub quiet: bool,
    /// PEM bundle of CAs to trust for --target (tls://, wss://, quic://).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
}

/// A duration with a unit (`2 s`, `500 ms`), or a plain number of seconds.
fn parse_duration_or_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn listen_accepts_addresses_and_off() {
        assert_eq!(parse_listen("off"), Ok(Listen::Off));
        assert_eq!(
            parse_listen("127.0.0.1:0"),
            Ok(Listen::At("127.0.0.1:0".parse().unwrap()))
        );
        assert!(parse_listen("localhost:1").unwrap_err().contains("IP:port"));
    }

    #[test]
    fn bench_duration_takes_plain_seconds() {
        assert_eq!(parse_duration_or_seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_duration_or_seconds("250 ms"),
            Ok(Duration::from_millis(250))
        );
    }
}
