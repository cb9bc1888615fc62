//! Which transports this binary has, which the config enables, and how each
//! one is declared on the shards.
//!
//! This is the one file a new transport touches: add its cargo feature,
//! return `true` from [`is_available`] under it, and declare its listener in
//! [`declare`] (the config section is already parsed by `bus-config`). A
//! transport that is not compiled in is simply absent: enabling it is a
//! configuration error that says how to get it.
#![cfg_attr(
    not(feature = "tcp"),
    allow(
        dead_code,
        unused_variables,
        reason = "a build without transports serves nothing"
    )
)]

use std::net::SocketAddr;

use bus_config::Config;
use bus_core::TransportKind;
use bus_shard::ShardsBuilder;

use crate::Error;

/// Every transport, in the order of spec §7.
pub const ALL: [TransportKind; 5] = [
    TransportKind::Tcp,
    TransportKind::Tls,
    TransportKind::Ws,
    TransportKind::Wss,
    TransportKind::Quic,
];

/// Whether this binary was built with `kind`.
#[allow(
    clippy::match_like_matches_macro,
    reason = "one arm per transport, added as each lands"
)]
pub const fn is_available(kind: TransportKind) -> bool {
    match kind {
        TransportKind::Tcp => cfg!(feature = "tcp"),
        TransportKind::Tls => cfg!(feature = "tls"),
        TransportKind::Ws => cfg!(feature = "ws"),
        TransportKind::Wss => cfg!(feature = "wss"),
        TransportKind::Quic => cfg!(feature = "quic"),
        _ => false,
    }
}

/// Whether the config turns `kind` on.
pub fn is_enabled(config: &Config, kind: TransportKind) -> bool {
    match kind {
        TransportKind::Tcp => config.tcp.enabled,
        TransportKind::Tls => config.tls.enabled,
        TransportKind::Ws => config.ws.enabled,
        TransportKind::Wss => config.wss.enabled,
        TransportKind::Quic => config.quic.enabled,
        _ => false,
    }
}

/// The address the config binds `kind` to.
pub fn listen_addr(config: &Config, kind: TransportKind) -> SocketAddr {
    match kind {
        TransportKind::Tls => config.tls.listen,
        TransportKind::Ws => config.ws.listen,
        TransportKind::Wss => config.wss.listen,
        TransportKind::Quic => config.quic.listen,
        _ => config.tcp.listen,
    }
}

/// Sets `kind`'s section to enabled on `addr`, or disabled for `None`.
pub fn set_listen(config: &mut Config, kind: TransportKind, addr: Option<SocketAddr>) {
    let (enabled, listen) = match kind {
        TransportKind::Tls => (&mut config.tls.enabled, &mut config.tls.listen),
        TransportKind::Ws => (&mut config.ws.enabled, &mut config.ws.listen),
        TransportKind::Wss => (&mut config.wss.enabled, &mut config.wss.listen),
        TransportKind::Quic => (&mut config.quic.enabled, &mut config.quic.listen),
        _ => (&mut config.tcp.enabled, &mut config.tcp.listen),
    };
    *enabled = addr.is_some();
    if let Some(addr) = addr {
        *listen = addr;
    }
}

/// The transports the config enables, in spec order.
pub fn enabled(config: &Config) -> Vec<TransportKind> {
    ALL.into_iter()
        .filter(|kind| is_enabled(config, *kind))
        .collect()
}

/// Declares `kind`'s listener on the shards, as configured. TCP, TLS, WS
/// and WSS are delegated: shard 0 accepts plain TCP and each connection
/// (its TLS handshake and WebSocket upgrade too) is served on the shard the
/// placement policy picks. QUIC is served on shard 0: its connections stay
/// there, and sends to them from other shards are forwarded. Binding
/// happens when the shards start.
pub fn declare(
    builder: ShardsBuilder,
    config: &Config,
    kind: TransportKind,
    certs: &Certificates,
) -> Result<ShardsBuilder, Error> {
    match kind {
        #[cfg(feature = "tcp")]
        TransportKind::Tcp => Ok(builder.listen_tcp(config.tcp_listener_config())),
        #[cfg(feature = "tls")]
        TransportKind::Tls => Ok(builder.listen(config.tls_listener_config(), certs.server_tls()?)),
        #[cfg(feature = "ws")]
        TransportKind::Ws => {
            let settings = ws_settings(config, kind, config.ws_listener_config())?;
            Ok(builder.listen(settings.tcp.clone(), bus_ws::WsAcceptor::new(&settings)))
        }
        #[cfg(feature = "wss")]
        TransportKind::Wss => {
            let settings = ws_settings(config, kind, config.wss_listener_config())?;
            let acceptor = bus_ws::WsAcceptor::new_tls(&settings, certs.wss_tls()?)
                .map_err(|e| Error::Tls(e.to_string()))?;
            Ok(builder.listen(settings.tcp.clone(), acceptor))
        }
        #[cfg(feature = "quic")]
        TransportKind::Quic => {
            let settings = config.quic_listener_config();
            let tls = certs.server_tls()?;
            Ok(builder.serve_on(0, move || bus_quic::QuicListener::bind(&settings, tls)))
        }
        other => {
            let _ = (builder, config, certs);
            Err(Error::TransportNotAvailable {
                transport: other,
                how: format!("{other}.enabled"),
            })
        }
    }
}

/// `settings`, checked: a WebSocket acceptor does not check them itself.
#[cfg(feature = "ws")]
fn ws_settings(
    config: &Config,
    kind: TransportKind,
    settings: bus_ws::WsListenerConfig,
) -> Result<bus_ws::WsListenerConfig, Error> {
    settings
        .validate(config.bus_config(0).max_message_size_bytes)
        .map_err(|e| Error::Bind {
            what: kind.to_string(),
            addr: settings.tcp.listen,
            message: e.to_string(),
        })?;
    Ok(settings)
}

/// The node's certificate for every TLS-based transport, loaded once (or
/// generated into the data dir) when the first of them is bound, and
/// reloaded on SIGHUP.
#[derive(Debug, Default)]
pub struct Certificates {
    /// ALPN `bus.v1`: TLS, QUIC and replica TLS.
    #[cfg(feature = "tls")]
    server: Option<bus_tls::ServerTls>,
    /// The same certificate with ALPN `http/1.1`: WSS (spec §7).
    #[cfg(feature = "wss")]
    wss: Option<bus_tls::ServerTls>,
}

impl Certificates {
    /// Loads the `[tls]` certificate if any enabled transport needs one.
    pub fn load(config: &Config, data_dir: &std::path::Path) -> Result<Self, Error> {
        #[cfg(feature = "tls")]
        {
            let wanted = |kinds: &[TransportKind]| {
                kinds
                    .iter()
                    .any(|&kind| is_available(kind) && is_enabled(config, kind))
            };
            let load = |settings: bus_tls::TlsServerConfig| {
                bus_tls::ServerTls::new(&settings).map_err(|e| Error::Tls(e.to_string()))
            };
            // Replica TLS serves the same certificate (ALPN bus.v1).
            let replica_tls = config.replicas.enabled && config.replicas.tls;
            let server = if wanted(&[TransportKind::Tls, TransportKind::Quic]) || replica_tls {
                Some(load(config.tls_server_config(data_dir))?)
            } else {
                None
            };
            #[cfg(feature = "wss")]
            let wss = if wanted(&[TransportKind::Wss]) {
                Some(load(config.wss_server_config(data_dir))?)
            } else {
                None
            };
            Ok(Self {
                server,
                #[cfg(feature = "wss")]
                wss,
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (config, data_dir);
            Ok(Self::default())
        }
    }

    /// The server TLS state, for a TLS-based listener.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn server_tls(&self) -> Result<bus_tls::ServerTls, Error> {
        self.server
            .clone()
            .ok_or_else(|| Error::Tls("no certificate was loaded".into()))
    }

    /// The WSS TLS state (ALPN `http/1.1`).
    #[cfg(feature = "wss")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
    pub fn wss_tls(&self) -> Result<bus_tls::ServerTls, Error> {
        self.wss
            .clone()
            .ok_or_else(|| Error::Tls("no certificate was loaded".into()))
    }

    /// The certificate file served (what clients of a self-signed
    /// certificate trust), and whether this start generated it.
    pub fn served(&self) -> Option<(std::path::PathBuf, bool)> {
        #[cfg(feature = "tls")]
        {
            let any = self.server.as_ref();
            #[cfg(feature = "wss")]
            let any = any.or(self.wss.as_ref());
            any.map(|tls| {
                let served = tls.served();
                (served.cert, served.generated)
            })
        }
        #[cfg(not(feature = "tls"))]
        None
    }

    /// Re-reads the certificate files for new handshakes; on error the
    /// current certificate stays. `Ok(false)` when nothing is loaded.
    #[cfg_attr(
        not(feature = "tls"),
        allow(unused_mut, reason = "set only when TLS is built in")
    )]
    pub fn reload(&self) -> Result<bool, Error> {
        let mut reloaded = false;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.server {
            tls.reload().map_err(|e| Error::Tls(e.to_string()))?;
            reloaded = true;
        }
        #[cfg(feature = "wss")]
        if let Some(tls) = &self.wss {
            tls.reload().map_err(|e| Error::Tls(e.to_string()))?;
            reloaded = true;
        }
        Ok(reloaded)
    }
}

/// The innermost cause of an error, without the "cannot listen on ADDR"
/// prefix our own message already has.
pub(crate) fn error_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
