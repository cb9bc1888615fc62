//! Dialing WebSocket servers.

use std::net::SocketAddr;

use async_tungstenite::tungstenite::http::Uri;

use crate::{WsConnection, WsConnectorConfig, WsError, stream::Security, upgrade::ClientRequest};

/// Dials `addr` within the configured connect timeout. The result is a
/// [`WsConnection`] whose [`establish`] runs the client side of the upgrade,
/// offering `Sec-WebSocket-Protocol: bus.v1` and requiring the server to
/// echo it. Bound `establish` yourself (the bus does, with
/// `handshake_grace`, for connections it installs).
///
/// [`establish`]: bus_core::transport::Connection::establish
pub async fn connect(
    addr: SocketAddr,
    config: &WsConnectorConfig,
) -> Result<WsConnection, WsError> {
    dial(addr, config, Security::Plain).await
}

/// Like [`connect`], for WSS: [`establish`] first runs a TLS 1.3 handshake
/// with `tls`, then the upgrade. Build `tls` with ALPN `http/1.1` (or
/// none): a WSS server does not offer `bus.v1` (spec §7).
///
/// [`establish`]: bus_core::transport::Connection::establish
#[cfg(feature = "wss")]
#[cfg_attr(docsrs, doc(cfg(feature = "wss")))]
pub async fn connect_tls(
    addr: SocketAddr,
    config: &WsConnectorConfig,
    tls: &bus_tls::ClientTls,
) -> Result<WsConnection, WsError> {
    dial(addr, config, Security::ClientTls(tls.clone())).await
}

async fn dial(
    addr: SocketAddr,
    config: &WsConnectorConfig,
    security: Security,
) -> Result<WsConnection, WsError> {
    let scheme = match security {
        Security::Plain => "ws",
        #[cfg(feature = "wss")]
        _ => "wss",
    };
    let request = request(addr, config, scheme)?;
    let tcp = bus_tcp::connect(addr, &config.tcp).await?;
    Ok(WsConnection::client(
        tcp.into_stream(),
        addr,
        request,
        config.limits,
        security,
    ))
}

/// The upgrade request for `addr`: `ws://host/path` (or `wss://`), the bus
/// subprotocol and the configured `Origin`. The URI is checked whole, so a
/// host or path that would break the request line is refused here.
fn request(
    addr: SocketAddr,
    config: &WsConnectorConfig,
    scheme: &str,
) -> Result<ClientRequest, WsError> {
    let host = config.host.clone().unwrap_or_else(|| addr.to_string());
    let uri = format!("{scheme}://{host}{}", config.path);
    let parsed: Uri = uri.parse().map_err(|e| WsError::Upgrade {
        addr,
        reason: format!("invalid request URI {uri:?}: {e}"),
    })?;
    let target = parsed
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let origin = config.origin.clone();
    if origin.as_deref().is_some_and(|o| o.contains(['\r', '\n'])) {
        return Err(WsError::Upgrade {
            addr,
            reason: "the Origin header holds a line break".to_owned(),
        });
    }
    Ok(ClientRequest {
        host,
        target,
        origin,
    })
}
