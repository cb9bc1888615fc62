//! The reference node of spec §8 over plain TCP, on one shard: `Echo` (16)
//! is answered with `EchoReply` (17), `Broadcast` (18) with a `Delivery`
//! (19) to every client and a `BroadcastAck` (20) to the sender; any other
//! application command gets `Goodbye(ProtocolViolation)`.
//!
//! Runs on the embedded defaults (TCP on 127.0.0.1:7070) or on a TOML file:
//!
//! ```text
//! cargo run --release -p bus --features full --example echo-server [-- --config FILE]
//! ```
//!
//! Ctrl-C shuts it down gracefully: every client gets `Goodbye(ShuttingDown)`.
//! (This example stands in for `bus serve` until the demo node lands.)

use std::{process::ExitCode, time::Duration};

use bus::{Bus, Command, Frame, GoodbyeReason, Peer, config::Config};

const ECHO: u8 = 16;
const ECHO_REPLY: u8 = 17;
const BROADCAST: u8 = 18;
const DELIVERY: u8 = 19;
const BROADCAST_ACK: u8 = 20;

fn reply(frame: Frame, command: u8) -> Frame {
    let mut reply = frame.into_mut();
    reply.header_mut().set_command(Command::from_u8(command));
    reply.header_mut().set_client(0);
    reply.seal();
    reply.freeze()
}

fn handle(bus: &Bus, from: Peer, frame: Frame) {
    let Peer::Client(id) = from else { return };
    match frame.header().command_raw() {
        ECHO => {
            let _ = bus.send_to_client(id, reply(frame, ECHO_REPLY));
        }
        BROADCAST => {
            let request = frame.header().request();
            let mut ack = bus::FrameMut::new(Command::from_u8(BROADCAST_ACK), 0);
            let mut delivery = bus::FrameMut::with_body(Command::from_u8(DELIVERY), frame.body());
            delivery.seal();
            let report = bus.broadcast(&delivery.freeze());
            let addressed = u32::try_from(report.queued + report.queue_full).unwrap_or(u32::MAX);
            ack.header_mut().set_request(request);
            ack.header_mut().command_area_mut()[0..4].copy_from_slice(&addressed.to_le_bytes());
            ack.seal();
            let _ = bus.send_to_client(id, ack.freeze());
        }
        other => {
            let detail = format!("command {other} is not served by this node");
            let _ = bus.close_client(id, GoodbyeReason::ProtocolViolation, &detail);
        }
    }
}

fn load_config() -> Result<Config, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(Config::embedded_defaults()),
        [flag, path] if flag == "--config" => Config::load(path).map_err(|e| e.to_string()),
        _ => Err("usage: echo-server [--config FILE]".into()),
    }
}

fn main() -> ExitCode {
    let config = match load_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| config.log.level.as_str().into()),
        )
        .init();
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the compio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let driver = runtime.driver_type();
    runtime.block_on(async move {
        let bus = match Bus::new(config.bus_config(0), handle) {
            Ok(bus) => bus,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match bus::tcp::TcpListener::bind(&config.tcp_listener_config()) {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        let addr = bus::transport::Listener::local_addr(&listener)
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        if let Err(err) = bus.serve(listener) {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
        println!("bus echo-server: tcp://{addr} (I/O driver: {driver:?}); Ctrl-C to stop");
        if let Err(err) = compio::signal::ctrl_c().await {
            eprintln!("error: cannot wait for Ctrl-C: {err}");
        }
        let report = bus.shutdown(Duration::from_secs(10)).await;
        println!(
            "shut down in {:?}: {} connections closed, {} cancelled",
            report.elapsed, report.connections, report.cancelled
        );
        ExitCode::SUCCESS
    })
}
