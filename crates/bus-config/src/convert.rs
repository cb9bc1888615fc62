//! Conversions from the TOML schema into the runtime config types of the
//! crates that run the bus.
//!
//! Sections without a runtime type (admin, log) are read from the public
//! fields directly.

use std::{num::NonZeroUsize, thread};

use bus_core::{BusConfig, SlowConsumerPolicy};
use bus_shard::ShardsConfig;
use bus_tcp::{TcpConnectorConfig, TcpListenerConfig};

use crate::{Config, Placement, SlowConsumer, validate::MAX_SHARDS};

impl Config {
    /// The runtime configuration of the bus on shard `shard`.
    ///
    /// Expects a [validated](Self::validate) config. A value that does not
    /// fit the runtime type (possible only after editing fields in code) is
    /// saturated, so [`BusConfig::validate`] still refuses it.
    pub fn bus_config(&self, shard: u16) -> BusConfig {
        let bus = &self.bus;
        let mut config = BusConfig::default();
        config.shard = shard;
        config.max_message_size_bytes =
            u32::try_from(bus.max_message_size.bytes()).unwrap_or(u32::MAX);
        config.queue_capacity_frames = bus.queue_capacity_frames;
        config.queue_capacity_bytes =
            usize::try_from(bus.queue_capacity_bytes.bytes()).unwrap_or(usize::MAX);
        config.inbound_budget_bytes = bus.inbound_budget.bytes();
        config.max_outstanding_requests = bus.max_outstanding_requests;
        config.shutdown_flush_timeout = bus.shutdown_flush_timeout;
        config.max_batch_frames = bus.max_batch_frames;
        config.read_buffer_bytes = usize::try_from(bus.read_buffer.bytes()).unwrap_or(usize::MAX);
        config.handshake_grace = bus.handshake_grace;
        config.close_grace = bus.close_grace;
        config.close_peer_timeout = bus.close_peer_timeout;
        config.idle_timeout = bus.idle_timeout;
        config.require_sealed_clients = bus.require_sealed_clients;
        config.require_sealed_replicas = self.replicas.require_sealed;
        config.replica_keepalive = self.replicas.keepalive;
        config.replica_idle_timeout = self.replicas.idle_timeout;
        config.max_connections = bus.max_connections;
        config.slow_consumer = match bus.slow_consumer {
            SlowConsumer::Keep => SlowConsumerPolicy::Keep,
            SlowConsumer::Disconnect => SlowConsumerPolicy::Disconnect,
        };
        config
    }

    /// The server-side settings of the plain TCP transport.
    pub fn tcp_listener_config(&self) -> TcpListenerConfig {
        let mut config = TcpListenerConfig::new(self.tcp.listen);
        config.backlog = self.tcp.backlog;
        config.nodelay = self.tcp.nodelay;
        config.max_handshakes = self.tcp.max_handshakes;
        config
    }

    /// The client-side settings of the plain TCP transport.
    pub fn tcp_connector_config(&self) -> TcpConnectorConfig {
        let mut config = TcpConnectorConfig::default();
        config.connect_timeout = self.tcp.connect_timeout;
        config.nodelay = self.tcp.nodelay;
        config
    }

    /// The TCP listener settings of the TLS port: `tls.listen` with the
    /// `[tcp]` backlog and `TCP_NODELAY`.
    pub fn tls_listener_config(&self) -> TcpListenerConfig {
        let mut config = self.tcp_listener_config();
        config.listen = self.tls.listen;
        config.max_handshakes = self.tls.max_handshakes;
        config
    }

    /// The server-side TLS settings (ALPN `bus.v1`): `tls.cert`/`tls.key`
    /// when set, otherwise a self-signed development certificate kept in
    /// `data_dir/tls`. Expects a [validated](Self::validate) config, which
    /// refuses a TLS user with neither.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_server_config(&self, data_dir: &std::path::Path) -> bus_tls::TlsServerConfig {
        let tls = &self.tls;
        let certificate = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => bus_tls::CertificateSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => bus_tls::CertificateSource::SelfSigned {
                dir: bus_tls::self_signed_dir(data_dir),
            },
        };
        let mut config = bus_tls::TlsServerConfig::new(certificate);
        config.client_ca.clone_from(&tls.client_ca);
        config.keylog = tls.keylog;
        config
    }

    /// The server-side settings of the WebSocket listener (`[ws]`, with the
    /// `[tcp]` backlog and `TCP_NODELAY`).
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn ws_listener_config(&self) -> bus_ws::WsListenerConfig {
        self.ws_section_config(&self.ws)
    }

    /// The server-side settings of the WebSocket-over-TLS listener
    /// (`[wss]`); its TLS comes from [`Config::wss_server_config`].
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn wss_listener_config(&self) -> bus_ws::WsListenerConfig {
        self.ws_section_config(&self.wss)
    }

    /// The `[tls]` certificate for the WSS listener, offering ALPN
    /// `http/1.1` instead of `bus.v1` (spec §7).
    #[cfg(feature = "wss")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
    pub fn wss_server_config(&self, data_dir: &std::path::Path) -> bus_tls::TlsServerConfig {
        let mut config = self.tls_server_config(data_dir);
        config.alpn = vec![bus_tls::ALPN_HTTP1.to_vec()];
        config
    }

    #[cfg(feature = "ws")]
    fn ws_section_config(&self, section: &crate::WsSection) -> bus_ws::WsListenerConfig {
        let mut tcp = self.tcp_listener_config();
        tcp.listen = section.listen;
        tcp.max_handshakes = section.max_handshakes;
        let mut config = bus_ws::WsListenerConfig::new(section.listen);
        config.tcp = tcp;
        config.path.clone_from(&section.path);
        config.allowed_origins.clone_from(&section.allowed_origins);
        // Saturated like `bus_config`, so the runtime check still refuses a
        // value edited out of range in code.
        config.limits.read_buffer_bytes =
            usize::try_from(section.read_buffer.bytes()).unwrap_or(usize::MAX);
        config.limits.write_buffer_bytes =
            usize::try_from(section.write_buffer.bytes()).unwrap_or(usize::MAX);
        config.limits.max_frame_size_bytes = u32::try_from(
            section
                .effective_max_frame_size(self.bus.max_message_size)
                .bytes(),
        )
        .unwrap_or(u32::MAX);
        config
    }

    /// The server-side QUIC settings: `[quic]` as a `bus-quic` listener
    /// config. The certificate is [`Self::tls_server_config`]'s. Expects a
    /// [validated](Self::validate) config; sizes beyond `usize` saturate, so
    /// [`bus_quic::QuicListenerConfig::validate`] still refuses them.
    #[cfg(feature = "quic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
    pub fn quic_listener_config(&self) -> bus_quic::QuicListenerConfig {
        let quic = &self.quic;
        let mut config = bus_quic::QuicListenerConfig::new(quic.listen);
        config.max_connections = quic.max_connections;
        config.max_handshakes = quic.max_handshakes;
        config.retry_threshold = quic.retry_threshold;
        let tuning = &mut config.tuning;
        tuning.max_idle_timeout = quic.max_idle_timeout;
        tuning.keep_alive = quic.keep_alive;
        tuning.stream_receive_window = quic.stream_receive_window.bytes();
        tuning.connection_receive_window = quic.connection_receive_window.bytes();
        tuning.send_window = quic.send_window.bytes();
        tuning.initial_mtu = quic.initial_mtu;
        tuning.udp_send_buffer =
            usize::try_from(quic.udp_send_buffer.bytes()).unwrap_or(usize::MAX);
        tuning.udp_receive_buffer =
            usize::try_from(quic.udp_receive_buffer.bytes()).unwrap_or(usize::MAX);
        config
    }

    /// The replica plane's runtime settings: `[replicas]` with
    /// `[bus] handshake_grace`, or `None` while `replicas.enabled` is off.
    ///
    /// An unset `ca_file` becomes `tls.cert` (spec: "default: the `[tls]`
    /// certificate"); it stays `None` only when that certificate is the
    /// self-signed development one. Expects a [validated](Self::validate)
    /// config; a `psk_file` left unset in code becomes an empty path, which
    /// [`bus_replica::ReplicaConfig::validate`] refuses.
    #[cfg(feature = "replica")]
    #[cfg_attr(docsrs, doc(cfg(feature = "replica")))]
    pub fn replicas_config(&self) -> Option<bus_replica::ReplicaConfig> {
        let replicas = &self.replicas;
        if !replicas.enabled {
            return None;
        }
        let mut config = bus_replica::ReplicaConfig::new(
            replicas.cluster,
            replicas.self_id,
            replicas.psk_file.clone().unwrap_or_default(),
            replicas.listen,
        );
        config.verify_psk_file.clone_from(&replicas.verify_psk_file);
        config.peers = replicas
            .peers
            .iter()
            .map(|peer| bus_replica::PeerConfig {
                id: peer.id,
                addr: peer.addr,
            })
            .collect();
        config.require_sealed = replicas.require_sealed;
        config.tls = replicas.tls;
        config.ca_file = replicas.ca_file.clone().or_else(|| self.tls.cert.clone());
        config.reconnect_max = replicas.reconnect_max;
        config.handshake_grace = self.bus.handshake_grace;
        Some(config)
    }

    /// How many shards to run: `shards.count`, or when that is 0 the number
    /// of cores this process may use (1 if unknown), capped at 1024.
    pub fn shard_count(&self) -> u16 {
        let count = match self.shards.count {
            0 => thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => usize::from(n),
        };
        u16::try_from(count)
            .unwrap_or(MAX_SHARDS)
            .clamp(1, MAX_SHARDS)
    }

    /// The runtime settings of the shard layer, with `count` resolved as
    /// [`shard_count`](Self::shard_count) does.
    pub fn shards_config(&self) -> ShardsConfig {
        let shards = &self.shards;
        let mut config = ShardsConfig::new(self.shard_count());
        config.pin_cpus = shards.pin_cpus;
        config.placement = match shards.placement {
            Placement::RoundRobin => bus_shard::Placement::RoundRobin,
            Placement::LeastConnections => bus_shard::Placement::LeastConnections,
        };
        config.shard0_takes_clients = shards.shard0_takes_clients;
        config.inbox_capacity_frames = shards.inbox_capacity_frames;
        config
    }
}
