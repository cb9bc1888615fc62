//! The server side: a QUIC endpoint whose connections finish their
//! handshake and open the bus stream in [`Connection::establish`], on the
//! connection's own task, within the bus's `handshake_grace`.

use std::{io, net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

use bus_core::{
    Error, ReadSettings,
    transport::{Connection, ConnectionInfo, Listener, TransportKind},
};
use bus_tls::ServerTls;
use compio_quic::{Connecting, Endpoint, EndpointConfig, ServerConfig, VarInt};

use crate::{
    QuicError, QuicListenerConfig,
    admission::{Admission, AdmissionGuard, AdmissionStats, HandshakeGuard, Verdict},
    codes, setup,
    stream::{self, QuicReader, QuicWriter},
};

/// Accepts QUIC connections on one UDP socket. QUIC connections stay on the
/// shard of their endpoint (dependencies.md #12): run one listener per
/// shard, each on its own port or behind a load balancer.
///
/// Dropping the listener stops new connections (they are refused) but lets
/// established ones finish; [`shutdown_endpoint`](crate::shutdown_endpoint)
/// closes the endpoint for good within a bound.
#[derive(Debug)]
pub struct QuicListener {
    endpoint: Endpoint,
    tls: ServerTls,
    /// The rustls config `server` was built from.
    current: Arc<rustls::ServerConfig>,
    /// What new connections are accepted with. An attempt captures the
    /// endpoint's config when its first packet arrives, so accepting with
    /// this one is what makes a reload reach an attempt already waiting.
    server: ServerConfig,
    admission: Rc<Admission>,
    close_ack_timeout: Duration,
    udp_buffers: (usize, usize),
}

impl QuicListener {
    /// Binds `config.listen` and serves `tls` (ALPN forced to `bus.v1`,
    /// 0-RTT off). Must run inside a compio runtime. Keep a clone of `tls`
    /// to [reload](ServerTls::reload) it: new handshakes pick it up.
    pub fn bind(config: &QuicListenerConfig, tls: ServerTls) -> Result<Self, QuicError> {
        config.validate()?;
        bus_tls::install_default_provider();
        let tuning = &config.tuning;
        let transport = Arc::new(setup::transport_config(tuning, setup::Side::Server)?);
        let current = tls.rustls_config();
        let server = setup::server_config(&current, &transport)?;
        let socket = setup::udp_socket(config.listen, tuning)?;
        let udp_buffers = socket_buffers(&socket);
        let endpoint = Endpoint::new(
            socket,
            EndpointConfig::default(),
            Some(server.clone()),
            None,
        )
        .map_err(|source| QuicError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Self {
            endpoint,
            tls,
            current,
            server,
            admission: Rc::new(Admission::new(
                config.max_connections,
                config.max_handshakes,
                config.effective_retry_threshold(),
            )),
            close_ack_timeout: tuning.close_ack_timeout,
            udp_buffers,
        })
    }

    /// The endpoint, for [`shutdown_endpoint`](crate::shutdown_endpoint)
    /// after the bus has shut down.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The TLS state this listener hands to new handshakes.
    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }

    /// The UDP send and receive buffer sizes the kernel granted (Linux
    /// reports twice the usable size).
    pub fn udp_buffers(&self) -> (usize, usize) {
        self.udp_buffers
    }

    /// A handle on the admission counters, valid after the listener is
    /// handed to the bus.
    pub fn admission(&self) -> AdmissionStats {
        AdmissionStats(self.admission.clone())
    }

    /// Rebuilds the endpoint's server config if the TLS state was reloaded.
    fn follow_reload(&mut self) {
        let now = self.tls.rustls_config();
        if Arc::ptr_eq(&now, &self.current) {
            return;
        }
        match setup::server_crypto(&now) {
            Ok(crypto) => {
                self.server.crypto = crypto;
                self.endpoint.set_server_config(Some(self.server.clone()));
            }
            Err(err) => {
                tracing::error!(%err, "reloaded TLS config unusable for QUIC; keeping the old one");
            }
        }
        self.current = now;
    }
}

fn socket_buffers(socket: &compio::net::UdpSocket) -> (usize, usize) {
    let socket = socket2::SockRef::from(socket);
    (
        socket.send_buffer_size().unwrap_or(0),
        socket.recv_buffer_size().unwrap_or(0),
    )
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        // Refuse new connections; established ones keep running.
        self.endpoint.set_server_config(None);
    }
}

impl Listener for QuicListener {
    type Connection = QuicIncoming;

    /// Waits for a connection attempt and hands it over, or turns it away
    /// and goes on waiting: beyond the caps it is refused (a stateless
    /// `CONNECTION_REFUSED`), and from the Retry threshold on an attempt
    /// from an unvalidated address is answered with a stateless Retry. Both
    /// cost no slot and no crypto work.
    ///
    /// # Cancel safety
    /// Cancel safe: no attempt is taken from the endpoint until it is
    /// returned.
    async fn accept(&mut self) -> io::Result<QuicIncoming> {
        loop {
            let Some(incoming) = self.endpoint.wait_incoming().await else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the QUIC endpoint is closed",
                ));
            };
            let peer = incoming.remote_address();
            let (slot, handshake) = match self.admission.judge(incoming.remote_address_validated())
            {
                Verdict::Admit(slot, handshake) => (slot, handshake),
                Verdict::Retry => {
                    if let Err(err) = incoming.retry() {
                        // Only an attempt already carrying a Retry token
                        // cannot be retried, and those count as validated.
                        self.admission.retry_failed();
                        err.into_incoming().refuse();
                    }
                    continue;
                }
                Verdict::Refuse => {
                    incoming.refuse();
                    continue;
                }
            };
            self.follow_reload();
            match incoming.accept_with(self.server.clone()) {
                Ok(connecting) => {
                    return Ok(QuicIncoming {
                        connecting,
                        peer,
                        slot,
                        handshake,
                        close_ack_timeout: self.close_ack_timeout,
                    });
                }
                Err(err) => tracing::debug!(%peer, %err, "QUIC connection attempt failed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// A QUIC connection attempt whose handshake has not completed.
#[derive(Debug)]
pub struct QuicIncoming {
    connecting: Connecting,
    peer: SocketAddr,
    slot: AdmissionGuard,
    handshake: HandshakeGuard,
    close_ack_timeout: Duration,
}

impl Connection for QuicIncoming {
    type Reader = QuicReader;
    type Writer = QuicWriter;

    fn transport(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Completes the handshake, checks ALPN `bus.v1`, and waits for the
    /// client's bidirectional stream (which exists for us once the client
    /// has sent on it).
    ///
    /// # Cancel safety
    /// See [`Connection::establish`]: dropping it closes the connection.
    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(QuicReader, QuicWriter, ConnectionInfo), Error> {
        let Self {
            connecting,
            peer,
            slot,
            handshake,
            close_ack_timeout,
        } = self;
        let failed = |err: QuicError| Error::handshake(TransportKind::Quic, err);
        let mut connection = connecting
            .await
            .map_err(|source| failed(QuicError::Handshake { peer, source }))?;
        drop(handshake);
        let alpn = connection
            .handshake_data()
            .ok()
            .and_then(|data| data.protocol);
        if alpn.as_deref() != Some(bus_tls::ALPN_BUS) {
            connection.close(codes::PROTOCOL_VIOLATION, b"ALPN bus.v1 required");
            return Err(failed(QuicError::NoAlpn { peer }));
        }
        let (send, recv) = connection
            .accept_bi()
            .await
            .map_err(|source| failed(QuicError::NoStream { peer, source }))?;
        // No credit for another stream, even once this one is closed.
        connection.set_max_concurrent_bi_streams(VarInt::from_u32(0));
        if recv.is_0rtt() {
            connection.close(codes::PROTOCOL_VIOLATION, b"0-RTT refused");
            return Err(failed(QuicError::ZeroRtt { peer }));
        }
        let mut info = ConnectionInfo::new(TransportKind::Quic, connection.remote_address());
        info.identity = connection
            .peer_identity()
            .and_then(|chain| chain.first().and_then(bus_tls::identity_of));
        let (reader, writer) = stream::split(
            connection,
            send,
            recv,
            &reading,
            close_ack_timeout,
            Some(slot),
        );
        Ok((reader, writer, info))
    }
}
