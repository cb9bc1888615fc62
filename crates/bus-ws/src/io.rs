//! The byte stream under a WebSocket: TCP through compio's compat adapter,
//! or (feature `wss`) a `bus-tls` TLS 1.3 session. Both are `futures-io`
//! streams whose reads are cancel safe and whose read and write sides do not
//! wait for each other.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use compio::{io::compat::AsyncStream, net::TcpStream};
use futures_util::io::{AsyncRead, AsyncWrite};

/// TCP, or TLS over TCP.
pub(crate) enum Io {
    /// Plain TCP; the adapter splits the socket into two handles.
    Plain(Pin<Box<AsyncStream<TcpStream>>>),
    /// TLS 1.3 (WSS).
    #[cfg(feature = "wss")]
    Tls(Box<bus_tls::TlsStream>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Io::Plain"),
            #[cfg(feature = "wss")]
            Self::Tls(tls) => f.debug_tuple("Io::Tls").field(tls).finish(),
        }
    }
}

impl Io {
    /// Plain TCP with `base` bytes of read and of write buffering, growing
    /// to at most `cap` while one operation needs it.
    pub(crate) fn plain(stream: TcpStream, base: usize, cap: usize) -> Self {
        Self::Plain(Box::pin(AsyncStream::with_limits(base, cap, stream)))
    }
}

/// Forwards one `futures-io` call to whichever stream this is.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Io::Plain($s) => {
                let $s = $s.as_mut();
                $call
            }
            #[cfg(feature = "wss")]
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $call
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => s.poll_flush(cx))
    }

    /// TCP: shuts the write side (FIN). TLS: `close_notify`, then FIN.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => s.poll_close(cx))
    }
}
