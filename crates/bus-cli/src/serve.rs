//! `bus serve`: build the configuration (embedded defaults ← file ←
//! flags), start the node, print what listens where, and run until SIGINT or
//! SIGTERM, then shut down gracefully.
//!
//! Startup output (stdout) ends with one machine-readable line, so scripts
//! and tests can find the real ports when binding port 0:
//!
//! ```text
//! listening tcp=127.0.0.1:7070 replica=127.0.0.1:7075 admin=127.0.0.1:7079
//! ```
//!
//! (`replica=` only when `[replicas] enabled = true`.)

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use bus_config::{Config, LogLevel};
use bus_core::TransportKind;

use crate::{
    Error,
    admin::NodeInfo,
    cli::{Listen, ServeArgs},
    server::Node,
    signals::{Signal, Signals},
    transports,
};

/// Runs `bus serve`.
pub fn run(args: &ServeArgs) -> Result<ExitCode, Error> {
    let (config, source) = build_config(args)?;
    Node::check(&config)?;
    init_logging(config.log.level);
    // Before anything opens a descriptor of its own.
    let descriptors = crate::rlimit::raise_nofile();
    let runtime = compio::runtime::Runtime::new().map_err(|source| Error::Io {
        what: "cannot start the compio runtime",
        source,
    })?;
    let driver = format!("{:?}", runtime.driver_type());
    let descriptors = match descriptors {
        Ok(d) => d.summary(config.bus.max_connections),
        Err(err) => format!("descriptors: cannot read or raise RLIMIT_NOFILE: {err}"),
    };
    let started = Started {
        source,
        driver,
        descriptors,
    };
    runtime.block_on(serve(config, started, args.data_dir.clone()))
}

/// What start-up found, for the summary.
struct Started {
    source: String,
    driver: String,
    descriptors: String,
}

async fn serve(
    config: Config,
    started: Started,
    data_dir: Option<PathBuf>,
) -> Result<ExitCode, Error> {
    // Before anything listens: from here on the signals are ours.
    let mut signals = Signals::install().await.map_err(|source| Error::Io {
        what: "cannot install signal handlers",
        source,
    })?;
    let info = NodeInfo {
        version: env!("CARGO_PKG_VERSION"),
        driver: started.driver.clone(),
    };
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    let node = Node::start(&config, info, &data_dir).await?;
    print!("{}", summary(&config, &node, &started, &data_dir));
    let grace = shutdown_grace(&config);
    let signal = loop {
        match signals.next().await {
            Ok(Signal::Hangup) => reload(&node),
            Ok(signal) => break signal,
            Err(err) => {
                tracing::error!(%err, "waiting for signals failed; shutting down");
                break Signal::Terminate;
            }
        }
    };
    println!(
        "{}: shutting down ({} connections on {} shards, grace {:?})",
        signal.name(),
        node.connection_count(),
        node.shard_count(),
        grace
    );
    let report = node.shutdown(grace).await;
    let cancelled: usize = report.shards.iter().map(|s| s.bus.cancelled).sum();
    println!(
        "stopped in {:.1?}: {} connections open, {} Goodbyes written, {} cancelled, {} of {} shards stopped",
        report.elapsed,
        report.connections(),
        report.goodbyes_written(),
        cancelled,
        report.threads_joined,
        report.threads_joined + report.threads_left
    );
    // The application's flush (each shard's shutdown record): a failure is
    // the exit status too, so a supervisor sees that state was not saved.
    let failed: Vec<String> = report
        .shards
        .iter()
        .filter(|s| !s.bus.flush.is_done())
        .map(|s| format!("shard {}: {:?}", s.shard, s.bus.flush))
        .collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("shutdown flush failed: {}", failed.join("; "));
    Ok(ExitCode::FAILURE)
}

/// SIGHUP: re-read the certificate files and the replica key files; new
/// handshakes use them, live connections are untouched, and a broken file
/// keeps what is in use. The outcome goes to stdout too, so scripts can
/// wait for it.
fn reload(node: &Node) {
    match node.reload_certificates() {
        Ok(true) => println!("SIGHUP: certificate reloaded"),
        Ok(false) => println!("SIGHUP: no certificate to reload (no TLS-based transport runs)"),
        Err(err) => println!("SIGHUP: reload failed, the current certificate stays: {err}"),
    }
    match node.reload_replica_keys() {
        Ok(true) => println!("SIGHUP: replica keys reloaded"),
        Ok(false) => {}
        Err(err) => println!("SIGHUP: replica key reload failed, the keys in use stay: {err}"),
    }
}

/// Where generated files go without `--data-dir`: `$XDG_DATA_HOME/bus`,
/// else `$HOME/.local/share/bus`, else `./bus-data`.
pub fn default_data_dir() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("bus");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".local/share/bus");
    }
    PathBuf::from("bus-data")
}

/// How long a graceful shutdown may take: each connection's close bound
/// (flush + Goodbye) plus the wait for the peer's close, and a margin for
/// cancelling what is left.
pub fn shutdown_grace(config: &Config) -> Duration {
    config.bus.close_grace + config.bus.close_peer_timeout + Duration::from_secs(1)
}

fn summary(config: &Config, node: &Node, started: &Started, data_dir: &std::path::Path) -> String {
    let (source, driver) = (&started.source, &started.driver);
    let mut out = String::new();
    let shards = node.shard_count();
    let _ = writeln!(
        out,
        "bus {} node: {shards} shard{}, I/O driver {driver}, config: {source}",
        env!("CARGO_PKG_VERSION"),
        if shards == 1 { "" } else { "s" }
    );
    let how = if config.shards.count == 0 {
        "shards.count = 0: one per core"
    } else {
        "shards.count"
    };
    let _ = writeln!(
        out,
        "  shards: {shards} ({how}); tcp, tls, ws and wss accepted on shard 0 and served on every shard; quic served on shard 0"
    );
    for l in node.listening() {
        let _ = writeln!(
            out,
            "  {:<6} {}://{}",
            l.transport.as_str(),
            l.transport,
            l.addr
        );
    }
    if let (Some(addr), Some(replicas)) = (node.replica_addr(), replicas_summary(config)) {
        let _ = writeln!(out, "  {:<6} {addr} ({replicas})", "replica");
    }
    if let Some(addr) = node.admin_addr() {
        let replicaz = if node.replica_addr().is_some() {
            "  /replicaz"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<6} http://{addr}/metrics  /connz  /healthz{replicaz}",
            "admin"
        );
    }
    let missing: Vec<_> = transports::ALL
        .into_iter()
        .filter(|k| !transports::is_available(*k))
        .map(TransportKind::as_str)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(out, "  not in this build: {}", missing.join(", "));
    }
    let _ = writeln!(out, "  data dir: {}", data_dir.display());
    if let Some((cert, generated)) = node.certificate() {
        let how = if generated {
            "generated now, self-signed for localhost; clients trust this file"
        } else {
            "clients trust this file or its CA"
        };
        let _ = writeln!(out, "  certificate: {} ({how})", cert.display());
    }
    let _ = writeln!(out, "  {}", started.descriptors);
    let _ = writeln!(
        out,
        "  max message {}, handshake grace {}, Ctrl-C or SIGTERM stops gracefully",
        config.bus.max_message_size,
        bus_config::format_duration(config.bus.handshake_grace)
    );
    let mut line = String::from("listening");
    for l in node.listening() {
        let _ = write!(line, " {}={}", l.transport, l.addr);
    }
    if let Some(addr) = node.replica_addr() {
        let _ = write!(line, " replica={addr}");
    }
    if let Some(addr) = node.admin_addr() {
        let _ = write!(line, " admin={addr}");
    }
    let _ = writeln!(out, "{line}");
    out
}

/// How `[replicas]` reads in the start-up summary; `None` when off.
fn replicas_summary(config: &Config) -> Option<String> {
    let r = &config.replicas;
    if !r.enabled {
        return None;
    }
    let dial: Vec<String> = r
        .peers
        .iter()
        .filter(|p| p.id > r.self_id)
        .map(|p| format!("{}@{}", p.id, p.addr))
        .collect();
    let accept: Vec<String> = r
        .peers
        .iter()
        .filter(|p| p.id < r.self_id)
        .map(|p| p.id.to_string())
        .collect();
    Some(format!(
        "{}, cluster {:#x}, self_id {}, dials [{}], accepts [{}], reconnect_max {}",
        if r.tls { "tls" } else { "tcp" },
        r.cluster,
        r.self_id,
        dial.join(", "),
        accept.join(", "),
        bus_config::format_duration(r.reconnect_max)
    ))
}

fn init_logging(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_str()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The configuration `bus serve` runs with: the embedded defaults, the
/// file merged over them, the flags over both; validated. Also returns a
/// description of where it came from.
pub fn build_config(args: &ServeArgs) -> Result<(Config, String), Error> {
    let (mut config, source) = match &args.config {
        None => (Config::embedded_defaults(), "embedded defaults".to_owned()),
        Some(path) => {
            let source = path.display().to_string();
            let config = Config::load(path).map_err(|error| config_error(error, &source, None))?;
            (config, source)
        }
    };
    let flags = apply_flags(&mut config, args)?;
    let source = if flags.is_empty() {
        source
    } else {
        format!("{source} + flags")
    };
    config.validate().map_err(|error| {
        let field = match &error {
            bus_config::Error::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let flag = field
            .as_deref()
            .and_then(|f| flags.iter().find(|(field, _)| *field == f))
            .map(|(_, flag)| *flag);
        config_error(error, &source, flag)
    })?;
    Ok((config, source))
}

/// Applies the override flags; returns which fields they set, with the
/// flag that set each.
fn apply_flags(
    config: &mut Config,
    args: &ServeArgs,
) -> Result<Vec<(&'static str, &'static str)>, Error> {
    let mut set = Vec::new();
    for (kind, flag, listen) in [
        (TransportKind::Tcp, "--tcp", args.tcp),
        (TransportKind::Tls, "--tls", args.tls),
        (TransportKind::Ws, "--ws", args.ws),
        (TransportKind::Wss, "--wss", args.wss),
        (TransportKind::Quic, "--quic", args.quic),
    ] {
        if let Some(listen) = listen {
            let addr = match listen {
                Listen::Off => None,
                Listen::At(addr) => Some(addr),
            };
            transports::set_listen(config, kind, addr);
            if addr.is_some() && !transports::is_available(kind) {
                return Err(Error::TransportNotAvailable {
                    transport: kind,
                    how: flag.into(),
                });
            }
            set.push((listen_field(kind), flag));
        }
    }
    if let Some(listen) = args.admin {
        match listen {
            Listen::Off => config.admin.enabled = false,
            Listen::At(addr) => {
                config.admin.enabled = true;
                config.admin.listen = addr;
            }
        }
        set.push(("admin.listen", "--admin"));
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(key.clone());
        set.push(("tls.cert", "--cert"));
        set.push(("tls.key", "--key"));
    }
    if let Some(shards) = args.shards {
        config.shards.count = shards;
        set.push(("shards.count", "--shards"));
    }
    if let Some(grace) = args.handshake_grace {
        config.bus.handshake_grace = grace;
        set.push(("bus.handshake_grace", "--handshake-grace"));
    }
    if let Some(size) = args.max_message_size {
        config.bus.max_message_size = size;
        set.push(("bus.max_message_size", "--max-message-size"));
    }
    if let Some(level) = &args.log {
        config.log.level = parse_level(level)?;
        set.push(("log.level", "--log"));
    }
    Ok(set)
}

fn listen_field(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Tls => "tls.listen",
        TransportKind::Ws => "ws.listen",
        TransportKind::Wss => "wss.listen",
        TransportKind::Quic => "quic.listen",
        _ => "tcp.listen",
    }
}

fn parse_level(text: &str) -> Result<LogLevel, Error> {
    Ok(match text {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        other => {
            return Err(Error::Usage(format!(
                "--log {other}: expected error, warn, info, debug or trace"
            )));
        }
    })
}

/// A config error with the fix spelled out.
fn config_error(error: bus_config::Error, source: &str, flag: Option<&str>) -> Error {
    let fix = match (&error, flag) {
        (bus_config::Error::Invalid { field, allowed, .. }, Some(flag)) => {
            format!("give {flag} a value in {allowed} (it sets `{field}`)")
        }
        (bus_config::Error::Invalid { field, allowed, .. }, None) => {
            let (section, key) = field.split_once('.').unwrap_or(("", field));
            let default = default_of(field)
                .map(|d| format!(", or delete the line to use the default {d}"))
                .unwrap_or_default();
            format!("set `{key}` under [{section}] to a value in {allowed}{default}")
        }
        (bus_config::Error::Parse { .. }, _) => {
            "check the key's spelling, its section and the value's type and unit; `bus config` prints every key with its default".to_owned()
        }
        (bus_config::Error::Io { .. }, _) => {
            "check the path given to --config, or leave --config out to run on the embedded defaults".to_owned()
        }
        _ => "`bus config` prints every key with its default".to_owned(),
    };
    Error::Config {
        source_name: source.to_owned(),
        error,
        fix,
    }
}

/// The embedded default of a dotted field, as written in `defaults.toml`.
fn default_of(field: &str) -> Option<String> {
    let table: toml::Table = Config::default_toml().parse().ok()?;
    let mut value = None::<&toml::Value>;
    let mut current = &table;
    for part in field.split('.') {
        let found = current.get(part)?;
        if let toml::Value::Table(t) = found {
            current = t;
        }
        value = Some(found);
    }
    match value? {
        toml::Value::String(s) => Some(format!("\"{s}\"")),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_and_off_disables() {
        let args = ServeArgs {
            tcp: Some(Listen::At("127.0.0.1:0".parse().unwrap())),
            admin: Some(Listen::At("127.0.0.1:0".parse().unwrap())),
            handshake_grace: Some(Duration::from_secs(3)),
            ..ServeArgs::default()
        };
        let (config, source) = build_config(&args).unwrap();
        assert_eq!(config.tcp.listen.port(), 0);
        assert!(config.admin.enabled);
        assert_eq!(config.bus.handshake_grace, Duration::from_secs(3));
        assert_eq!(source, "embedded defaults + flags");
        let off = ServeArgs {
            tcp: Some(Listen::Off),
            ..ServeArgs::default()
        };
        assert!(!build_config(&off).unwrap().0.tcp.enabled);
    }

    #[test]
    fn a_bad_flag_value_names_the_flag_and_the_field() {
        let args = ServeArgs {
            max_message_size: Some(bus_config::ByteSize(100)),
            ..ServeArgs::default()
        };
        let err = build_config(&args).unwrap_err().to_string();
        assert!(err.contains("bus.max_message_size"), "{err}");
        assert!(err.contains("--max-message-size"), "{err}");
    }

    #[test]
    fn defaults_are_found_by_dotted_field() {
        assert_eq!(default_of("bus.max_batch_frames").as_deref(), Some("64"));
        assert_eq!(default_of("nope.x"), None);
    }
}
