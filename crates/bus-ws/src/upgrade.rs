//! The HTTP/1.1 upgrade (spec §7): what the server accepts and what the
//! client asks for.
//!
//! tungstenite parses the request and checks the RFC 6455 headers
//! (`Upgrade`, `Connection`, `Sec-WebSocket-Version: 13`, the key). On top of
//! that the server checks, in this order:
//!
//! 1. the path (query ignored) is the configured one, else `404`;
//! 2. the client offers the `bus.v1` subprotocol, else `400` with a body
//!    naming it;
//! 3. when an Origin allow-list is configured, the `Origin` header is on it
//!    (ASCII case-insensitive), else `403`.
//!
//! On success the `101` response echoes `Sec-WebSocket-Protocol: bus.v1`
//! (tungstenite clients abort without it, `dependencies.md` #7).

use std::sync::Arc;

use async_tungstenite::tungstenite::{
    handshake::server::{Callback, ErrorResponse, Request, Response},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN, SEC_WEBSOCKET_PROTOCOL},
    },
};
use bus_core::limits::PROTOCOL_ID;

/// What the server accepts, shared by every connection of a listener.
#[derive(Debug)]
pub(crate) struct UpgradePolicy {
    pub(crate) path: String,
    pub(crate) allowed_origins: Vec<String>,
}

/// The tungstenite callback for one upgrade.
#[derive(Debug)]
pub(crate) struct CheckUpgrade(pub(crate) Arc<UpgradePolicy>);

impl Callback for CheckUpgrade {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let policy = &self.0;
        let path = request.uri().path();
        if path != policy.path {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                &format!(
                    "no bus endpoint at {path:?}; upgrade on {:?}\n",
                    policy.path
                ),
            ));
        }
        if !offers_bus_protocol(request.headers()) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                &format!("expected subprotocol: Sec-WebSocket-Protocol: {PROTOCOL_ID}\n"),
            ));
        }
        if !policy.allowed_origins.is_empty() {
            let origin = request
                .headers()
                .get(ORIGIN)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !policy
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    &format!("origin {origin:?} is not allowed\n"),
                ));
            }
        }
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(PROTOCOL_ID),
        );
        Ok(response)
    }
}

/// Whether any `Sec-WebSocket-Protocol` header lists `bus.v1` (the header
/// may repeat, and each holds a comma-separated list).
fn offers_bus_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL_ID)
}

/// A plain-text refusal; the connection closes after it.
fn refuse(status: StatusCode, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "the test helper returns tungstenite's callback result as it is"
)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder()
            .uri(format!("ws://localhost{path}"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    fn check(policy: UpgradePolicy, request: &Request) -> Result<Response, ErrorResponse> {
        let response =
            async_tungstenite::tungstenite::handshake::server::create_response(request).unwrap();
        CheckUpgrade(Arc::new(policy)).on_request(request, response)
    }

    fn policy(origins: &[&str]) -> UpgradePolicy {
        UpgradePolicy {
            path: "/bus".into(),
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn accepts_bus_protocol_among_others_and_echoes_it() {
        let req = request("/bus?x=1", &[("Sec-WebSocket-Protocol", "chat, bus.v1")]);
        let response = check(policy(&[]), &req).unwrap();
        assert_eq!(response.headers()[SEC_WEBSOCKET_PROTOCOL], "bus.v1");
    }

    #[test]
    fn refuses_missing_or_other_protocol_with_400_naming_bus_v1() {
        for headers in [&[][..], &[("Sec-WebSocket-Protocol", "bus.v2")][..]] {
            let err = check(policy(&[]), &request("/bus", headers)).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.body().as_deref().unwrap().contains("bus.v1"));
        }
    }

    #[test]
    fn refuses_other_path_with_404() {
        let req = request("/other", &[("Sec-WebSocket-Protocol", "bus.v1")]);
        let err = check(policy(&[]), &req).unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn origin_allow_list() {
        let allowed = policy(&["https://app.example.com"]);
        let ok = request(
            "/bus",
            &[
                ("Sec-WebSocket-Protocol", "bus.v1"),
                ("Origin", "https://APP.example.com"),
            ],
        );
        assert!(check(allowed, &ok).is_ok());
        for origin in [&[("Origin", "https://evil.example")][..], &[][..]] {
            let mut headers = vec![("Sec-WebSocket-Protocol", "bus.v1")];
            headers.extend_from_slice(origin);
            let err = check(
                policy(&["https://app.example.com"]),
                &request("/bus", &headers),
            )
            .unwrap_err();
            assert_eq!(err.status(), StatusCode::FORBIDDEN);
        }
    }
}
