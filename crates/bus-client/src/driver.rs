//! The connection task: dial, handshake, run the connection on bus-core's
//! link (the engine a node runs too: connection core, send queue, request
//! table, reader and writer), and when it ends reconnect with backoff if
//! asked to.
//!
//! ```text
//! drive ─▶ dial (≤ connect_timeout) ─▶ establish (≤ handshake_timeout) ─▶ link::run
//!   ▲                                                                       replies → their requests,
//!   │                                                                       other frames → unsolicited queue
//!   └── backoff with full jitter ◀── connection lost: the link failed every outstanding request at once
//! ```
//!
//! Per transport the session is monomorphic ([`Dialed`] names the concrete
//! connection); a transport not compiled in has no variant.

use std::{
    hash::{BuildHasher, RandomState},
    io,
    pin::pin,
    rc::Rc,
    time::Instant,
};

use bus_core::{
    CloseReason, Command, DecodeLimits, Frame, FrameMut, Link, ReadSettings, SERVER_REQUEST_BIT,
    TransportKind,
    link::{self, Delivery, Panicked},
    transport::Connection,
};
use compio::runtime::time;
use futures_util::{FutureExt, select_biased};

use crate::{ClientError, client::Inner, url::Scheme};

/// A dialed connection, before its transport handshake: one variant per
/// compiled-in transport.
pub(crate) enum Dialed {
    /// Plain TCP.
    #[cfg(feature = "tcp")]
    Tcp(bus_tcp::TcpConnection),
    /// TCP, TLS handshake pending.
    #[cfg(feature = "tls")]
    Tls(bus_tls::TlsOutgoing),
    /// TCP, WebSocket upgrade (and for `wss://` the TLS handshake) pending.
    #[cfg(feature = "ws")]
    Ws(bus_ws::WsConnection),
    /// A QUIC connection whose stream is already open.
    #[cfg(feature = "quic")]
    Quic(Box<Opened<bus_quic::QuicReader, bus_quic::QuicWriter>>),
}

/// Dials the endpoint with the transport its scheme names.
async fn dial(inner: &Inner) -> Result<Dialed, ClientError> {
    let endpoint = &inner.endpoint;
    match endpoint.scheme {
        #[cfg(feature = "tcp")]
        Scheme::Tcp => dial_tcp(inner).await.map(Dialed::Tcp),
        #[cfg(feature = "tls")]
        Scheme::Tls => dial_tls(inner).await.map(Dialed::Tls),
        #[cfg(feature = "ws")]
        Scheme::Ws => dial_ws(inner, false).await.map(Dialed::Ws),
        #[cfg(feature = "wss")]
        Scheme::Wss => dial_ws(inner, true).await.map(Dialed::Ws),
        #[cfg(feature = "quic")]
        Scheme::Quic => dial_quic(inner).await.map(|o| Dialed::Quic(Box::new(o))),
        #[allow(
            unreachable_patterns,
            reason = "reachable in builds without some transport features"
        )]
        other => Err(ClientError::SchemeNotAvailable {
            scheme: other.as_str(),
            feature: other.feature(),
        }),
    }
}

/// Resolves the host and tries each address in turn.
async fn resolve(inner: &Inner) -> Result<Vec<std::net::SocketAddr>, ClientError> {
    use compio::net::ToSocketAddrsAsync;
    let endpoint = &inner.endpoint;
    let resolve_error = |message: String| ClientError::Resolve {
        host: endpoint.host.clone(),
        message,
    };
    let target = (endpoint.host.as_str(), endpoint.port);
    let lookup = target.to_socket_addrs_async();
    let addrs: Vec<_> = match time::timeout(inner.options.connect_timeout, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(err)) => return Err(resolve_error(err.to_string())),
        Err(_) => {
            return Err(resolve_error(format!(
                "no answer within {:?}",
                inner.options.connect_timeout
            )));
        }
    };
    if addrs.is_empty() {
        return Err(resolve_error("no addresses".into()));
    }
    Ok(addrs)
}

#[cfg(feature = "tcp")]
async fn dial_tcp(inner: &Inner) -> Result<bus_tcp::TcpConnection, ClientError> {
    let mut config = bus_tcp::TcpConnectorConfig::default();
    config.connect_timeout = inner.options.connect_timeout;
    let mut last = None;
    for addr in resolve(inner).await? {
        match bus_tcp::connect(addr, &config).await {
            Ok(connection) => return Ok(connection),
            Err(err) => last = Some(err),
        }
    }
    let err = last.expect("resolve returns at least one address");
    // The URL is in ClientError's message already; keep only the cause.
    let (kind, message) = match &err {
        bus_tcp::TcpError::Connect { source, .. } => (source.kind(), source.to_string()),
        bus_tcp::TcpError::ConnectTimeout { timeout, .. } => (
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ),
        other => (io::ErrorKind::Other, other.to_string()),
    };
    Err(ClientError::Connect {
        url: inner.endpoint.to_string(),
        kind,
        message,
    })
}

/// Dials TCP for a TLS session: trusts `ClientOptions::ca_file`, expects a
/// certificate for `server_name` (default: the URL's host). The handshake
/// runs in `establish`, bounded by the handshake timeout.
#[cfg(feature = "tls")]
async fn dial_tls(inner: &Inner) -> Result<bus_tls::TlsOutgoing, ClientError> {
    let options = &inner.options;
    let connect_error = |kind: io::ErrorKind, message: String| ClientError::Connect {
        url: inner.endpoint.to_string(),
        kind,
        message,
    };
    let mut config = bus_tls::TlsClientConfig::new(ca_file(inner)?, server_name(inner));
    config.tcp.connect_timeout = options.connect_timeout;
    config.handshake_timeout = options.handshake_timeout;
    let tls = bus_tls::ClientTls::new(&config)
        .map_err(|err| connect_error(io::ErrorKind::InvalidInput, err.to_string()))?;
    let mut last = None;
    for addr in resolve(inner).await? {
        match tls.dial(addr).await {
            Ok(connection) => return Ok(connection),
            Err(err) => last = Some(err),
        }
    }
    let err = last.expect("resolve returns at least one address");
    let kind = match &err {
        bus_tls::TlsError::Tcp(bus_tcp::TcpError::Connect { source, .. }) => source.kind(),
        bus_tls::TlsError::Tcp(bus_tcp::TcpError::ConnectTimeout { .. }) => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    Err(connect_error(kind, err.to_string()))
}

/// The CA file a TLS-based scheme trusts, or an error saying how to set it.
#[cfg(feature = "tls")]
fn ca_file(inner: &Inner) -> Result<&std::path::Path, ClientError> {
    inner
        .options
        .ca_file
        .as_deref()
        .ok_or_else(|| ClientError::Connect {
            url: inner.endpoint.to_string(),
            kind: io::ErrorKind::InvalidInput,
            message: format!(
                "{}:// needs a CA file to trust (ClientOptions::ca_file; for a development \
             node, the cert.pem that `bus serve` prints)",
                inner.endpoint.scheme.as_str()
            ),
        })
}

/// The name the server's certificate must carry: `server_name`, else the
/// URL's host.
#[cfg(feature = "tls")]
fn server_name(inner: &Inner) -> String {
    inner
        .options
        .server_name
        .clone()
        .unwrap_or_else(|| inner.endpoint.host.clone())
}

/// Dials TCP for a WebSocket session on the URL's path (`wss`: TLS 1.3
/// with ALPN `http/1.1` first). The handshakes run in `establish`.
#[cfg(feature = "ws")]
async fn dial_ws(inner: &Inner, secure: bool) -> Result<bus_ws::WsConnection, ClientError> {
    let options = &inner.options;
    let connect_error = |kind: io::ErrorKind, message: String| ClientError::Connect {
        url: inner.endpoint.to_string(),
        kind,
        message,
    };
    let mut config = bus_ws::WsConnectorConfig::default();
    config.tcp.connect_timeout = options.connect_timeout;
    config.path.clone_from(&inner.endpoint.path);
    config.host = Some(format!("{}:{}", inner.endpoint.host, inner.endpoint.port));
    config.limits.max_frame_size_bytes = options.max_message_size_bytes;
    #[cfg(feature = "wss")]
    let tls = if secure {
        let mut tls = bus_tls::TlsClientConfig::new(ca_file(inner)?, server_name(inner));
        tls.alpn = vec![bus_tls::ALPN_HTTP1.to_vec()];
        tls.handshake_timeout = options.handshake_timeout;
        Some(
            bus_tls::ClientTls::new(&tls)
                .map_err(|err| connect_error(io::ErrorKind::InvalidInput, err.to_string()))?,
        )
    } else {
        None
    };
    #[cfg(not(feature = "wss"))]
    let _ = secure;
    let mut last = None;
    for addr in resolve(inner).await? {
        #[cfg(feature = "wss")]
        let dialed = match &tls {
            Some(tls) => bus_ws::connect_tls(addr, &config, tls).await,
            None => bus_ws::connect(addr, &config).await,
        };
        #[cfg(not(feature = "wss"))]
        let dialed = bus_ws::connect(addr, &config).await;
        match dialed {
            Ok(connection) => return Ok(connection),
            Err(err) => last = Some(err),
        }
    }
    let err = last.expect("resolve returns at least one address");
    Err(connect_error(io_kind(&err), err.to_string()))
}

/// The `io::ErrorKind` at the bottom of an error chain, if any.
#[cfg(any(feature = "ws", feature = "quic"))]
fn io_kind(err: &(dyn std::error::Error + 'static)) -> io::ErrorKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.kind();
        }
        cause = e.source();
    }
    io::ErrorKind::Other
}

/// A connection whose transport handshake already ran (QUIC opens its
/// stream with a `Ping` while connecting); `establish` hands the halves
/// over.
#[cfg(feature = "quic")]
pub(crate) struct Opened<R, W> {
    reader: R,
    writer: W,
    info: bus_core::ConnectionInfo,
}

#[cfg(feature = "quic")]
impl<R: bus_core::transport::FrameReader, W: bus_core::transport::FrameWriter> Connection
    for Opened<R, W>
{
    type Reader = R;
    type Writer = W;

    fn transport(&self) -> bus_core::TransportKind {
        self.info.transport
    }

    fn peer_addr(&self) -> std::net::SocketAddr {
        self.info.peer_addr
    }

    async fn establish(
        self,
        _reading: ReadSettings,
    ) -> Result<(R, W, bus_core::ConnectionInfo), bus_core::Error> {
        Ok((self.reader, self.writer, self.info))
    }
}

/// Connects QUIC (TLS 1.3, ALPN `bus.v1`) and opens the bus stream, all
/// within the connect timeout.
#[cfg(feature = "quic")]
async fn dial_quic(
    inner: &Inner,
) -> Result<Opened<bus_quic::QuicReader, bus_quic::QuicWriter>, ClientError> {
    let options = &inner.options;
    let connect_error = |kind: io::ErrorKind, message: String| ClientError::Connect {
        url: inner.endpoint.to_string(),
        kind,
        message,
    };
    let mut config = bus_quic::QuicClientConfig::new(ca_file(inner)?, server_name(inner));
    config.connect_timeout = options.connect_timeout + options.handshake_timeout;
    let quic = bus_quic::ClientQuic::new(&config)
        .map_err(|err| connect_error(io::ErrorKind::InvalidInput, err.to_string()))?;
    let limits = DecodeLimits {
        max_message_size_bytes: options.max_message_size_bytes,
        require_sealed: false,
    };
    let mut last = None;
    for addr in resolve(inner).await? {
        let reading = ReadSettings::new(limits).read_buffer(options.read_buffer_bytes);
        match quic.connect(addr, &reading).await {
            Ok((reader, writer, info)) => {
                return Ok(Opened {
                    reader,
                    writer,
                    info,
                });
            }
            Err(err) => last = Some(err),
        }
    }
    let err = last.expect("resolve returns at least one address");
    Err(connect_error(io_kind(&err), err.to_string()))
}

/// Runs a dialed connection until it ends.
async fn run_dialed(inner: &Inner, dialed: Dialed) -> Result<ClientError, ClientError> {
    match dialed {
        #[cfg(feature = "tcp")]
        Dialed::Tcp(connection) => run_session(inner, connection).await,
        #[cfg(feature = "tls")]
        Dialed::Tls(connection) => run_session(inner, connection).await,
        #[cfg(feature = "ws")]
        Dialed::Ws(connection) => run_session(inner, connection).await,
        #[cfg(feature = "quic")]
        Dialed::Quic(opened) => run_session(inner, *opened).await,
    }
}

/// The connection task of one client, until it is closed for good.
pub(crate) async fn drive(inner: Rc<Inner>) {
    let mut attempt: u32 = 0;
    let mut rng = Rng::new();
    let terminal = loop {
        if inner.close_requested() {
            break ClientError::Closed;
        }
        let outcome = match abortable(&inner, dial(&inner)).await {
            None => break ClientError::Closed,
            Some(Ok(dialed)) => run_dialed(&inner, dialed).await,
            Some(Err(err)) => Err(err),
        };
        let last = match outcome {
            // The connection was up and is gone: start counting afresh.
            // (`run_session` already failed what was outstanding.)
            Ok(lost) => {
                attempt = 0;
                lost
            }
            Err(failed) => {
                tracing::debug!(endpoint = %inner.endpoint, %failed, "connection attempt failed");
                inner.attempt_failed(failed.clone());
                failed
            }
        };
        if inner.close_requested() {
            break ClientError::Closed;
        }
        let Some(policy) = inner.options.reconnect else {
            break last;
        };
        if policy.max_attempts.is_some_and(|max| attempt >= max) {
            break ClientError::GaveUp {
                endpoint: inner.endpoint.to_string(),
                attempts: attempt,
                last: Box::new(last),
            };
        }
        let delay = policy.delay(attempt, rng.next());
        attempt = attempt.saturating_add(1);
        if abortable(&inner, time::sleep(delay)).await.is_none() {
            break ClientError::Closed;
        }
    };
    inner.set_closed(terminal);
}

/// Runs `fut` unless the client is closed first.
async fn abortable<F: Future>(inner: &Inner, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut.fuse());
    loop {
        let mut changed = pin!(inner.state_changed.changed().fuse());
        if inner.close_requested() {
            return None;
        }
        select_biased! {
            out = fut => return Some(out),
            () = changed => {}
        }
    }
}

/// Handshake, then the link until it ends. `Ok(error)` once an established
/// connection ended (the link failed what was outstanding on it at once);
/// `Err` when the handshake failed.
async fn run_session<C: Connection>(
    inner: &Inner,
    connection: C,
) -> Result<ClientError, ClientError> {
    let options = &inner.options;
    let started = Instant::now();
    let kind = connection.transport();
    let limits = DecodeLimits {
        max_message_size_bytes: options.max_message_size_bytes,
        require_sealed: false,
    };
    let reading = ReadSettings::new(limits).read_buffer(options.read_buffer_bytes);
    let handshake = connection.establish(reading);
    let (mut reader, mut writer, _info) =
        match time::timeout(options.handshake_timeout, handshake).await {
            Ok(Ok(established)) => established,
            Ok(Err(err)) => {
                return Err(ClientError::Connect {
                    url: inner.endpoint.to_string(),
                    kind: io::ErrorKind::Other,
                    message: format!("handshake failed: {err}"),
                });
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    url: inner.endpoint.to_string(),
                    kind: io::ErrorKind::TimedOut,
                    message: format!(
                        "handshake did not complete within {:?}",
                        options.handshake_timeout
                    ),
                });
            }
        };
    let link = Rc::new(Link::new(&inner.link_config(), started));
    // A node closes a connection that sends nothing within its
    // handshake_grace (spec §7): say something now. (QUIC opened its
    // stream with a Ping already.)
    if kind != TransportKind::Quic {
        let _ = link.send(opening_ping());
    }
    inner.set_connected(link.clone());
    let delivery = ToInner { inner, link: &link };
    link::run(&link, &mut reader, &mut writer, &delivery).await;
    let reason = link.close_reason().unwrap_or(CloseReason::PeerClosed);
    let error = inner.disconnected(&reason);
    inner.connection_lost(&error);
    Ok(error)
}

/// The `Ping` a client sends as its first frame when it has nothing else to
/// say yet; the node answers it itself and its `Pong` is dropped here.
fn opening_ping() -> Frame {
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.seal();
    ping.freeze()
}

/// Where a connection's frames that answer no request of ours go: requests
/// from the node (bit 63 set, spec §9) to their queue, the rest to the
/// queue of unsolicited frames.
struct ToInner<'a> {
    inner: &'a Inner,
    link: &'a Rc<Link>,
}

impl Delivery for ToInner<'_> {
    fn deliver(&self, frame: Frame) -> Result<(), Panicked> {
        if frame.header().request() & SERVER_REQUEST_BIT != 0 {
            self.inner.push_server_request(frame, self.link);
        } else {
            self.inner.push_unsolicited(frame);
        }
        Ok(())
    }
}

/// xorshift64*: jitter needs spread, not secrecy. Seeded from the
/// process's random hasher keys.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = RandomState::new().hash_one(Instant::now());
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
