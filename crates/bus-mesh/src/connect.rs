//! Making replica connections: a socket accepted on the replica listener
//! (handed over by shard 0 before any byte was read) and each dialed peer's
//! redial loop. Both run on the shard that will own the connection, as
//! tasks tracked with the bus's handshakes, so shutdown cancels them first.
//!
//! Bounds: a dial by `tcp.connect_timeout`; from then on (or from the
//! hand-over, accepting) TLS and the replica handshake together by
//! `handshake_grace`; the wait between dials by the backoff
//! (`reconnect_max`, with a floor).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bus_core::{Bus, ConnectionInfo, TransportKind, transport::Connection};
use bus_replica::{Binding, TLS_EXPORTER_LABEL};
use bus_tcp::TcpConnection;
use compio::{net::TcpStream, runtime::time};

use crate::{
    backoff::{Backoff, OsJitter},
    error::HandshakeError,
    exchange::{self, Transport, handshake_read_settings, io_error},
    limits::STABLE_LINK,
    state::{PeerSlot, Shared},
};

/// Serves one socket accepted on the replica listener: TLS (when on), the
/// acceptor's side of the handshake, registration.
pub(crate) async fn serve_accepted(bus: Bus, shared: Arc<Shared>, stream: std::net::TcpStream) {
    let started = Instant::now();
    let deadline = started + shared.config.handshake_grace;
    let peer_addr = stream.peer_addr().ok();
    match accept_connection(&bus, &shared, stream, started, deadline).await {
        Ok(peer) => {
            shared.handshake_done();
            tracing::info!(peer, ?peer_addr, "replica connected (accepted)");
        }
        Err((peer, err)) => {
            // Anyone can connect to the replica port: rate-limited.
            static REFUSED: bus_core::RateLimitedLog = bus_core::RateLimitedLog::new();
            if let Some(suppressed) = REFUSED.allow() {
                tracing::info!(?peer, ?peer_addr, %err, suppressed, "replica handshake refused or failed (accepting)");
            }
            shared.handshake_failed(peer, &err);
        }
    }
}

async fn accept_connection(
    bus: &Bus,
    shared: &Shared,
    stream: std::net::TcpStream,
    started: Instant,
    deadline: Instant,
) -> Result<u8, (Option<u8>, HandshakeError)> {
    let tcp = TcpConnection::from_std(stream).map_err(|e| (None, io_error(&e)))?;
    let settings = handshake_read_settings(bus);
    let grace = shared.config.handshake_grace;
    let Some(tls) = &shared.tls else {
        let (reader, writer, info) = tcp
            .establish(settings)
            .await
            .map_err(|e| (None, HandshakeError::Io(e.to_string())))?;
        let transport = Transport {
            reader,
            writer,
            info,
            binding: Binding::PLAIN_TCP,
        };
        return exchange::accept(bus, shared, transport, started, deadline).await;
    };
    let peer_addr = tcp.peer_addr();
    let session = match time::timeout_at(
        deadline,
        tls.server()
            .accept(tcp.into_stream(), settings.read_buffer_bytes),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => return Err((None, HandshakeError::Tls(err.to_string()))),
        Err(_) => return Err((None, HandshakeError::Timeout(grace))),
    };
    let transport = tls_transport(session, peer_addr, &settings).map_err(|e| (None, e))?;
    exchange::accept(bus, shared, transport, started, deadline).await
}

/// The frame halves of a TLS session and its channel binding.
fn tls_transport(
    session: bus_tls::TlsStream<TcpStream>,
    peer_addr: std::net::SocketAddr,
    settings: &bus_core::ReadSettings,
) -> Result<Transport<bus_tls::TlsSource, bus_tls::TlsWriter>, HandshakeError> {
    let exporter = session
        .export_keying_material::<32>(TLS_EXPORTER_LABEL)
        .map_err(|e| HandshakeError::NoExporter(e.to_string()))?;
    let mut info = ConnectionInfo::new(TransportKind::Tls, peer_addr);
    info.identity = session.peer_identity();
    let (reader, writer) = bus_tls::frame_halves(session, settings);
    Ok(Transport {
        reader,
        writer,
        info,
        binding: Binding::tls_exporter(exporter),
    })
}

/// One dial of `peer`: TCP, TLS (when on), the dialer's side of the
/// handshake, registration.
async fn dial_connection(
    bus: &Bus,
    shared: &Shared,
    peer: &PeerSlot,
) -> Result<(), HandshakeError> {
    let tcp = bus_tcp::connect(peer.addr, &shared.connector)
        .await
        .map_err(|e| HandshakeError::Connect(e.to_string()))?;
    let started = Instant::now();
    let grace = shared.config.handshake_grace;
    let deadline = started + grace;
    let settings = handshake_read_settings(bus);
    let Some(tls) = &shared.tls else {
        let (reader, writer, info) = tcp
            .establish(settings)
            .await
            .map_err(|e| HandshakeError::Io(e.to_string()))?;
        let transport = Transport {
            reader,
            writer,
            info,
            binding: Binding::PLAIN_TCP,
        };
        return exchange::dial(bus, shared, peer.id, transport, started, deadline).await;
    };
    let client = tls
        .client(peer.id)
        .ok_or(HandshakeError::NoTlsClient { replica: peer.id })?;
    let session = match time::timeout_at(deadline, client.handshake(tcp.into_stream())).await {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => return Err(HandshakeError::Tls(err.to_string())),
        Err(_) => return Err(HandshakeError::Timeout(grace)),
    };
    let transport = tls_transport(session, peer.addr, &settings)?;
    exchange::dial(bus, shared, peer.id, transport, started, deadline).await
}

/// Keeps the link with the dialed peer `shared.peers[index]` up until the
/// bus shuts down: dial; while connected, wait for the loss; after a
/// failure or a loss, back off (exponential, full jitter, floored) and
/// dial again.
///
/// # Cancel safety
/// Meant to be cancelled by the bus's shutdown: a handshake in progress is
/// dropped with its socket; a registered connection belongs to the bus.
pub(crate) async fn dial_loop(bus: Bus, shared: Arc<Shared>, index: usize) {
    let Some(peer) = shared.peers.get(index) else {
        return;
    };
    let mut backoff = Backoff::new(shared.config.reconnect_max);
    let mut redial = false;
    while !bus.is_shutting_down() {
        shared.dialing(peer.id, redial);
        redial = true;
        match dial_connection(&bus, &shared, peer).await {
            Ok(()) => {
                shared.handshake_done();
                tracing::info!(peer = peer.id, addr = %peer.addr, "replica connected (dialed)");
                let connected = Instant::now();
                peer.released().await;
                // A link that stayed up starts the backoff over; one that
                // drops at once (the peer refusing our MAC after we took
                // its) keeps backing off.
                if connected.elapsed() >= STABLE_LINK {
                    backoff.reset();
                }
            }
            Err(HandshakeError::ShuttingDown) => return,
            Err(err) => {
                tracing::info!(peer = peer.id, addr = %peer.addr, %err, "replica dial failed");
                shared.handshake_failed(Some(peer.id), &err);
            }
        }
        let delay: Duration = backoff.next_delay(&mut OsJitter);
        shared.backing_off(peer.id);
        tracing::debug!(peer = peer.id, ?delay, "redialing after backoff");
        time::sleep(delay).await;
    }
}
