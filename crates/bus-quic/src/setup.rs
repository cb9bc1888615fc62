//! Building the quinn configs and the UDP socket from our settings.

use std::{net::SocketAddr, sync::Arc};

use bus_core::limits::QUIC_ACK_ELICITING_THRESHOLD;

use compio_quic::{
    AckFrequencyConfig, ClientConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt,
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
};

use crate::{QuicError, QuicTuning};

/// Who a transport config is for: how many bidirectional streams it lets
/// the peer open.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// A server lets the client open exactly one, its bus stream (spec §7):
    /// a second cannot be opened (`open_bi` fails with `StreamsExhausted`,
    /// and a peer ignoring the limit is closed with `STREAM_LIMIT_ERROR`),
    /// so no task is needed to refuse further streams.
    Server,
    /// A client lets the server open none.
    Client,
}

/// The transport parameters of every bus connection, from `tuning`.
pub(crate) fn transport_config(
    tuning: &QuicTuning,
    side: Side,
) -> Result<TransportConfig, QuicError> {
    let peer_bidi_streams = match side {
        Side::Server => 1,
        Side::Client => 0,
    };
    let mut transport = TransportConfig::default();
    let idle =
        IdleTimeout::try_from(tuning.max_idle_timeout).map_err(|_| QuicError::InvalidConfig {
            field: "max_idle_timeout",
            value: format!("{:?}", tuning.max_idle_timeout),
            expected: "below 2^62 ms".into(),
        })?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(tuning.keep_alive)
        .stream_receive_window(varint(
            "stream_receive_window",
            tuning.stream_receive_window,
        )?)
        .receive_window(varint(
            "connection_receive_window",
            tuning.connection_receive_window,
        )?)
        .send_window(tuning.send_window)
        .initial_mtu(tuning.initial_mtu)
        .max_concurrent_bidi_streams(VarInt::from_u32(peer_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    // Ask the peer to acknowledge less often (see the constant's docs).
    let mut ack_frequency = AckFrequencyConfig::default();
    ack_frequency.ack_eliciting_threshold(VarInt::from_u32(QUIC_ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(ack_frequency));
    Ok(transport)
}

fn varint(field: &'static str, value: u64) -> Result<VarInt, QuicError> {
    VarInt::from_u64(value).map_err(|_| QuicError::InvalidConfig {
        field,
        value: value.to_string(),
        expected: "below 2^62".into(),
    })
}

/// A quinn server config from the rustls config bus-tls loaded (see
/// [`server_crypto`]), with a fresh random key for Retry tokens.
pub(crate) fn server_config(
    rustls: &rustls::ServerConfig,
    transport: &Arc<TransportConfig>,
) -> Result<ServerConfig, QuicError> {
    let mut config = ServerConfig::with_crypto(server_crypto(rustls)?);
    config.transport_config(transport.clone());
    Ok(config)
}

/// The QUIC crypto of a rustls server config, forced to the QUIC policy of
/// spec §7: ALPN `bus.v1` only and 0-RTT off (trap #5: never left to a
/// builder's defaults). A reload swaps only this part of the server config,
/// so the Retry token key, and with it every token in flight, survives it.
pub(crate) fn server_crypto(
    rustls: &rustls::ServerConfig,
) -> Result<Arc<QuicServerConfig>, QuicError> {
    let mut rustls = rustls.clone();
    rustls.alpn_protocols = vec![bus_tls::ALPN_BUS.to_vec()];
    rustls.max_early_data_size = 0;
    rustls.send_half_rtt_data = false;
    let crypto =
        QuicServerConfig::try_from(rustls).map_err(|err| QuicError::Crypto(err.to_string()))?;
    Ok(Arc::new(crypto))
}

/// A quinn client config from a rustls client config: 0-RTT off.
pub(crate) fn client_config(
    mut rustls: rustls::ClientConfig,
    tuning: &QuicTuning,
) -> Result<ClientConfig, QuicError> {
    rustls.enable_early_data = false;
    let crypto =
        QuicClientConfig::try_from(rustls).map_err(|err| QuicError::Crypto(err.to_string()))?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(tuning, Side::Client)?));
    Ok(config)
}

/// A non-blocking UDP socket bound to `addr` with the kernel buffers of
/// `tuning` (see [`QuicTuning`] for why they matter).
pub(crate) fn udp_socket(
    addr: SocketAddr,
    tuning: &QuicTuning,
) -> Result<compio::net::UdpSocket, QuicError> {
    let bind = |source| QuicError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind)?;
    socket
        .set_send_buffer_size(tuning.udp_send_buffer)
        .map_err(bind)?;
    socket
        .set_recv_buffer_size(tuning.udp_receive_buffer)
        .map_err(bind)?;
    socket.set_nonblocking(true).map_err(bind)?;
    socket.bind(&addr.into()).map_err(bind)?;
    let granted = (socket.send_buffer_size(), socket.recv_buffer_size());
    if let (Ok(send), Ok(recv)) = granted
        && (send < tuning.udp_send_buffer || recv < tuning.udp_receive_buffer)
    {
        tracing::warn!(
            %addr,
            asked_send = tuning.udp_send_buffer,
            asked_receive = tuning.udp_receive_buffer,
            got_send = send,
            got_receive = recv,
            "the kernel granted smaller UDP buffers than configured; raise \
             net.core.wmem_max / net.core.rmem_max"
        );
    }
    compio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(bind)
}
