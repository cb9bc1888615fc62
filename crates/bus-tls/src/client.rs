//! The client side: TLS 1.3 connections to a bus server (or a replica).

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bus_core::{
    Error, ReadSettings,
    transport::{Connection, ConnectionInfo, TransportKind},
};
use bus_tcp::{TcpConnection, TcpConnectorConfig};
use compio::{
    io::{AsyncRead, AsyncWrite, util::Splittable},
    net::TcpStream,
    runtime::time,
};
use rustls::{ClientConfig, pki_types::ServerName};

use crate::{
    ALPN_BUS, TlsError, certs,
    provider::crypto_provider,
    stream::{self, TlsReader, TlsStream, TlsWriter, adapt, send_alert},
};

/// Default bound on a client's TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = bus_core::limits::DEFAULT_HANDSHAKE_GRACE;
/// Default socket buffering of a client session.
pub const DEFAULT_BUFFER_BYTES: usize = bus_core::limits::TLS_DEFAULT_BUFFER_BYTES;

/// Client-side TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsClientConfig {
    /// PEM bundle of the CAs that may sign the server's certificate (for a
    /// development node: its self-signed `cert.pem`).
    pub ca_file: PathBuf,
    /// The name the server's certificate must be valid for (also sent as
    /// SNI unless it is an IP address).
    pub server_name: String,
    /// ALPN protocols to offer. Default: `bus.v1`.
    pub alpn: Vec<Vec<u8>>,
    /// A PEM certificate chain and key to present (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// TCP settings (connect timeout, `TCP_NODELAY`).
    pub tcp: TcpConnectorConfig,
    /// Bound on the TLS handshake after TCP connects.
    pub handshake_timeout: Duration,
    /// Socket buffering of the session (bytes).
    pub buffer_bytes: usize,
}

impl TlsClientConfig {
    /// Trust `ca_file`, expect a certificate for `server_name`; every other
    /// field at its default.
    pub fn new(ca_file: impl Into<PathBuf>, server_name: impl Into<String>) -> Self {
        Self {
            ca_file: ca_file.into(),
            server_name: server_name.into(),
            alpn: vec![ALPN_BUS.to_vec()],
            client_cert: None,
            tcp: TcpConnectorConfig::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
        }
    }
}

/// A ready-to-use client TLS setup: build once, connect many times.
#[derive(Debug, Clone)]
pub struct ClientTls {
    rustls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpConnectorConfig,
    handshake_timeout: Duration,
    buffer_bytes: usize,
}

impl ClientTls {
    /// Loads the CA bundle (and client certificate) named by `config`.
    pub fn new(config: &TlsClientConfig) -> Result<Self, TlsError> {
        crate::provider::install_default_provider();
        let roots = certs::load_roots(&config.ca_file)?;
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| TlsError::Config(err.to_string()))?
            .with_root_certificates(roots);
        let mut rustls = match &config.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certs::load_certificate_chain(cert)?;
                let der = certs::load_private_key(key)?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|err| TlsError::Invalid {
                        what: "private key",
                        path: key.clone(),
                        problem: format!("unusable with {}: {err}", cert.display()),
                    })?
            }
        };
        rustls.alpn_protocols.clone_from(&config.alpn);
        rustls.enable_early_data = false;
        let mut client = Self::from_rustls(Arc::new(rustls), &config.server_name)?;
        client.tcp = config.tcp.clone();
        client.handshake_timeout = config.handshake_timeout;
        client.buffer_bytes = config.buffer_bytes;
        Ok(client)
    }

    /// Uses a rustls config built elsewhere (for example with other
    /// protocol versions or ALPN, to test a server's refusals).
    pub fn from_rustls(rustls: Arc<ClientConfig>, server_name: &str) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|source| {
            TlsError::ServerName {
                name: server_name.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            rustls,
            server_name,
            tcp: TcpConnectorConfig::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
        })
    }

    /// Runs the client side of a TLS handshake on a connected `stream`.
    ///
    /// # Cancel safety
    /// Dropping it abandons the handshake and drops the socket.
    pub async fn handshake<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: Splittable + 'static,
        S::ReadHalf: AsyncRead + Unpin,
        S::WriteHalf: AsyncWrite + Unpin,
    {
        let connector = futures_rustls::TlsConnector::from(self.rustls.clone());
        let connect = connector
            .connect(self.server_name.clone(), adapt(stream, self.buffer_bytes))
            .into_fallible();
        match connect.await {
            Ok(session) => Ok(TlsStream::new(session.into())),
            Err((err, io)) => Err(send_alert(err, io).await),
        }
    }

    /// The client handshake of a bus connection, on rustls' unbuffered API
    /// (see `records`).
    ///
    /// # Cancel safety
    /// Dropping it abandons the handshake and drops the socket.
    pub(crate) async fn handshake_records(
        &self,
        stream: TcpStream,
    ) -> io::Result<crate::records::Session> {
        let conn = rustls::client::UnbufferedClientConnection::new(
            self.rustls.clone(),
            self.server_name.clone(),
        )
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        crate::records::handshake(
            crate::records::Conn::Client(Box::new(conn)),
            stream,
            self.buffer_bytes,
        )
        .await
    }

    /// Connects to `addr` and completes the handshake, each step bounded.
    ///
    /// # Cancel safety
    /// Dropping it drops the socket.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TlsStream<TcpStream>, TlsError> {
        let tcp = bus_tcp::connect(addr, &self.tcp).await?.into_stream();
        match time::timeout(self.handshake_timeout, self.handshake(tcp)).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(source)) => Err(TlsError::Handshake { addr, source }),
            Err(_) => Err(TlsError::HandshakeTimeout {
                addr,
                timeout: self.handshake_timeout,
            }),
        }
    }

    /// Connects TCP to `addr` and returns a connection whose TLS handshake
    /// runs in [`Connection::establish`], for a bus to install (a replica
    /// link) under its own `handshake_grace`.
    pub async fn dial(&self, addr: SocketAddr) -> Result<TlsOutgoing, TlsError> {
        let tcp = bus_tcp::connect(addr, &self.tcp).await?;
        Ok(TlsOutgoing {
            tcp,
            tls: self.clone(),
        })
    }
}

/// Splits an established client session into frame halves, for a client
/// that speaks the bus protocol without a bus (a client library).
pub fn frame_halves(
    session: TlsStream<TcpStream>,
    reading: &ReadSettings,
) -> (TlsReader, TlsWriter) {
    stream::split(session, reading)
}

/// A dialed TCP connection whose client handshake has not started.
#[derive(Debug)]
pub struct TlsOutgoing {
    tcp: TcpConnection,
    tls: ClientTls,
}

impl Connection for TlsOutgoing {
    type Reader = TlsReader;
    type Writer = TlsWriter;

    fn transport(&self) -> TransportKind {
        TransportKind::Tls
    }

    fn peer_addr(&self) -> SocketAddr {
        self.tcp.peer_addr()
    }

    async fn establish(
        self,
        reading: ReadSettings,
    ) -> Result<(TlsReader, TlsWriter, ConnectionInfo), Error> {
        let peer = self.tcp.peer_addr();
        let session = self
            .tls
            .handshake_records(self.tcp.into_stream())
            .await
            .map_err(|err| Error::handshake(TransportKind::Tls, err))?;
        Ok(stream::established(session, peer, &reading))
    }
}
