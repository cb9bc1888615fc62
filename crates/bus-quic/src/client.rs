//! The client side: QUIC connections to a bus server (or a replica).

use std::{net::SocketAddr, time::Duration};

use bus_core::{
    Command, FrameMut, ReadSettings,
    transport::{ConnectionInfo, FrameReader, FrameWriter, TransportKind},
};
use compio_quic::{ClientConfig, Endpoint, EndpointConfig};
use rustls::pki_types::ServerName;

use crate::{
    QuicClientConfig, QuicError, setup,
    stream::{self, QuicReader, QuicWriter},
};

/// The `request` of the `Ping` that opens the bus stream.
pub const OPENING_PING_REQUEST: u64 = 0;

/// A ready-to-use QUIC client: one UDP endpoint, any number of connections.
#[derive(Debug, Clone)]
pub struct ClientQuic {
    endpoint: Endpoint,
    config: ClientConfig,
    server_name: String,
    connect_timeout: Duration,
    close_ack_timeout: Duration,
}

impl ClientQuic {
    /// Loads the CA bundle (and client certificate) named by `config` and
    /// binds the local UDP socket. Must run inside a compio runtime.
    pub fn new(config: &QuicClientConfig) -> Result<Self, QuicError> {
        config.tuning.validate()?;
        bus_tls::install_default_provider();
        let roots = bus_tls::load_roots(&config.ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(bus_tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| QuicError::Crypto(err.to_string()))?
            .with_root_certificates(roots);
        let mut rustls = match &config.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = bus_tls::load_certificate_chain(cert)?;
                let der = bus_tls::load_private_key(key)?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|source| QuicError::ClientCertificate {
                        key: key.clone(),
                        source,
                    })?
            }
        };
        rustls.alpn_protocols.clone_from(&config.alpn);
        Self::from_rustls(rustls, &config.server_name, config)
    }

    /// Uses a rustls client config built elsewhere (for example with other
    /// ALPN, to test a server's refusals); `config` gives the rest. 0-RTT
    /// is turned off whatever `rustls` says.
    pub fn from_rustls(
        rustls: rustls::ClientConfig,
        server_name: &str,
        config: &QuicClientConfig,
    ) -> Result<Self, QuicError> {
        ServerName::try_from(server_name.to_owned()).map_err(|source| QuicError::ServerName {
            name: server_name.to_owned(),
            source,
        })?;
        let quic = setup::client_config(rustls, &config.tuning)?;
        let socket = setup::udp_socket(config.bind, &config.tuning)?;
        let endpoint =
            Endpoint::new(socket, EndpointConfig::default(), None, None).map_err(|source| {
                QuicError::Bind {
                    addr: config.bind,
                    source,
                }
            })?;
        Ok(Self {
            endpoint,
            config: quic,
            server_name: server_name.to_owned(),
            connect_timeout: config.connect_timeout,
            close_ack_timeout: config.tuning.close_ack_timeout,
        })
    }

    /// The local endpoint (to [shut it down](crate::shutdown_endpoint)).
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Connects to `addr` and opens the connection's raw handles: a server
    /// sees the stream only once something is sent on it.
    ///
    /// # Cancel safety
    /// Dropping it abandons the connection.
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
    ) -> Result<
        (
            compio_quic::Connection,
            compio_quic::SendStream,
            compio_quic::RecvStream,
        ),
        QuicError,
    > {
        let fail = |problem: String| QuicError::Connect { addr, problem };
        let open = async {
            let connecting = self
                .endpoint
                .connect(addr, &self.server_name, Some(self.config.clone()))
                .map_err(|err| fail(err.to_string()))?;
            let connection = connecting.await.map_err(|err| fail(err.to_string()))?;
            let (send, recv) = connection
                .open_bi_wait()
                .await
                .map_err(|err| fail(err.to_string()))?;
            Ok((connection, send, recv))
        };
        compio::runtime::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.connect_timeout)))?
    }

    /// Connects to `addr`, opens the bus stream with a `Ping` (spec §2) and
    /// waits for its `Pong`, so the returned halves are known to work.
    ///
    /// # Cancel safety
    /// Dropping it abandons the connection.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        reading: &ReadSettings,
    ) -> Result<(QuicReader, QuicWriter, ConnectionInfo), QuicError> {
        let fail = |problem: String| QuicError::Connect { addr, problem };
        let (connection, send, recv) = self.connect_raw(addr).await?;
        let info = ConnectionInfo::new(TransportKind::Quic, connection.remote_address());
        let (mut reader, mut writer) = stream::split(
            connection,
            send,
            recv,
            reading,
            self.close_ack_timeout,
            None,
        );
        let opened = async {
            let compio::BufResult(res, _) = writer.write_batch(vec![opening_ping()]).await;
            res.map_err(|err| fail(err.to_string()))?;
            let pong = reader
                .read_frame()
                .await
                .map_err(|err| fail(err.to_string()))?;
            if pong.header().command() == Command::Pong
                && pong.header().request() == OPENING_PING_REQUEST
            {
                Ok(())
            } else {
                Err(fail(format!(
                    "expected the Pong opening the stream, got {pong:?}"
                )))
            }
        };
        compio::runtime::time::timeout(self.connect_timeout, opened)
            .await
            .map_err(|_| fail(format!("no Pong within {:?}", self.connect_timeout)))??;
        Ok((reader, writer, info))
    }
}

/// The `Ping` that opens the bus stream: QUIC makes a stream visible to the
/// server only once data is sent on it, and the spec bounds the time to a
/// usable stream by `handshake_grace`, so a client with nothing to say yet
/// sends this. The bus answers with a `Pong` and never shows it to the
/// application.
pub fn opening_ping() -> bus_core::Frame {
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.header_mut().set_request(OPENING_PING_REQUEST);
    ping.seal();
    ping.freeze()
}
