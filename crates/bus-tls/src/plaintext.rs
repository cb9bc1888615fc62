//! The plaintext halves of a record-driven session, for a protocol layered
//! on TLS (WebSocket over TLS): decrypted bytes come in through a
//! [`TlsSource`] (`ByteSource::read_into` a caller's buffer), plaintext goes
//! out through a [`TlsSink`], packed into records and sealed straight into
//! the bounded send buffer, one write per flush. Both run on the same
//! unbuffered driver as the bus's TLS connections (`records`), so neither
//! direction goes through compio's adapter or futures-rustls.
//!
//! There is no keying-material exporter on these sessions (rustls 0.23's
//! unbuffered connections have none): replica links keep [`TlsStream`].
//!
//! [`TlsStream`]: crate::TlsStream

use std::io;

use compio::net::TcpStream;

use crate::{ClientTls, ServerTls, records, stream::TlsSource};

/// An established TLS 1.3 session split into its plaintext halves.
#[derive(Debug)]
#[non_exhaustive]
pub struct TlsHalves {
    /// Decrypted bytes from the peer. Reads are cancel safe.
    pub source: TlsSource,
    /// Plaintext to the peer.
    pub sink: TlsSink,
    /// The verified identity of the peer's certificate: the client's under
    /// mutual TLS, the server's on a client (see
    /// [`identity_of`](crate::identity_of)).
    pub identity: Option<String>,
}

impl TlsHalves {
    fn new(session: records::Session) -> Self {
        let identity = crate::stream::session_identity(&session);
        let (source, writer) = records::split(session);
        Self {
            source: TlsSource::records(source),
            sink: TlsSink { writer },
            identity,
        }
    }
}

/// The sending half of [`TlsHalves`]: plaintext written with
/// [`TlsSink::write`] is packed into records (up to a record's plaintext is
/// copied once into the staging record; longer runs are sealed straight
/// from the caller's bytes) and leaves with [`TlsSink::flush`].
pub struct TlsSink {
    writer: records::Writer,
}

impl std::fmt::Debug for TlsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSink").finish_non_exhaustive()
    }
}

impl TlsSink {
    /// Queues `data` for the peer; it is written by the next
    /// [`TlsSink::flush`], or earlier when the send buffer fills.
    ///
    /// # Cancel safety
    /// Not cancel safe: a write in flight is lost with its buffer, and the
    /// session must be dropped.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.write_plain(data).await
    }

    /// Encrypts what is queued and writes it.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`TlsSink::write`].
    pub async fn flush(&mut self) -> io::Result<()> {
        self.writer.flush_plain().await
    }

    /// Sends what is queued, then `close_notify`, then shuts the TCP write
    /// side.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`TlsSink::write`].
    pub async fn close(&mut self) -> io::Result<()> {
        self.writer.flush_plain().await?;
        self.writer.close().await
    }
}

impl ServerTls {
    /// Runs the server side of a TLS 1.3 handshake on `stream` with the
    /// config current now, on the unbuffered driver the bus's own TLS
    /// connections use, and returns the session's plaintext halves.
    /// `buffer_bytes` sizes the receive and send buffers (at least
    /// [`MIN_BUFFER_BYTES`](crate::MIN_BUFFER_BYTES)).
    ///
    /// # Cancel safety
    /// Dropping it abandons the handshake and drops the socket.
    pub async fn accept_halves(
        &self,
        stream: TcpStream,
        buffer_bytes: usize,
    ) -> io::Result<TlsHalves> {
        Ok(TlsHalves::new(
            self.accept_records(stream, buffer_bytes).await?,
        ))
    }
}

impl ClientTls {
    /// Runs the client side of a TLS 1.3 handshake on `stream`, on the
    /// unbuffered driver, and returns the session's plaintext halves.
    ///
    /// # Cancel safety
    /// Dropping it abandons the handshake and drops the socket.
    pub async fn handshake_halves(&self, stream: TcpStream) -> io::Result<TlsHalves> {
        Ok(TlsHalves::new(self.handshake_records(stream).await?))
    }
}
