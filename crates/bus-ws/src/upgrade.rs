//! The HTTP/1.1 upgrade (spec §7): what the server accepts, what it answers,
//! and what the client asks for and checks. Pure functions over a parsed
//! request or response; `handshake.rs` does the I/O.
//!
//! The server checks, in this order, and answers a refusal with a status,
//! a short plain-text body and `Connection: close`:
//!
//! | check | refusal |
//! |-------|---------|
//! | the method is `GET` | `405`, `Allow: GET` |
//! | the version is HTTP/1.1 | `400` |
//! | `Upgrade: websocket` is there (a plain GET is not an upgrade) | `426`, `Upgrade: websocket` |
//! | `Sec-WebSocket-Version: 13` | `426`, `Sec-WebSocket-Version: 13` |
//! | `Connection` lists `Upgrade` | `400` |
//! | `Sec-WebSocket-Key` is 16 bytes in base64 | `400` |
//! | the path (query ignored) is the configured one | `404` |
//! | the client offers the `bus.v1` subprotocol | `400`, the body names it |
//! | with an Origin allow-list, `Origin` is on it (ASCII case-insensitive) | `403` |
//!
//! A request that is not HTTP at all gets `400`, one whose head exceeds
//! [`WS_MAX_UPGRADE_HEAD_BYTES`] or [`WS_MAX_UPGRADE_HEADERS`] gets `431`.
//! On success the `101` response echoes `Sec-WebSocket-Protocol: bus.v1`
//! (tungstenite clients abort without it, `dependencies.md` #7).
//!
//! [`WS_MAX_UPGRADE_HEAD_BYTES`]: bus_core::limits::WS_MAX_UPGRADE_HEAD_BYTES
//! [`WS_MAX_UPGRADE_HEADERS`]: bus_core::limits::WS_MAX_UPGRADE_HEADERS

use std::fmt::Write as _;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use bus_core::limits::PROTOCOL_ID;

/// What the server accepts, shared by every connection of a listener.
#[derive(Debug)]
pub(crate) struct UpgradePolicy {
    pub(crate) path: String,
    pub(crate) allowed_origins: Vec<String>,
}

/// A refused upgrade: what the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The HTTP status.
    pub(crate) status: u16,
    /// One extra header line (without CRLF), if the status calls for it.
    pub(crate) extra: Option<&'static str>,
    /// The plain-text body.
    pub(crate) body: String,
}

impl Refusal {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            extra: None,
            body: body.into(),
        }
    }

    fn with(mut self, extra: &'static str) -> Self {
        self.extra = Some(extra);
        self
    }

    /// The whole response.
    pub(crate) fn response(&self) -> String {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.body.len()
        );
        if let Some(extra) = self.extra {
            let _ = write!(out, "{extra}\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The refusal for a request head that could not be parsed.
pub(crate) fn unparsable(err: httparse::Error) -> Refusal {
    match err {
        httparse::Error::TooManyHeaders => Refusal::new(431, "too many request headers\n"),
        _ => Refusal::new(400, "not an HTTP/1.1 request\n"),
    }
}

/// The refusal for a head longer than the limit.
pub(crate) fn too_large() -> Refusal {
    Refusal::new(431, "request head too large\n")
}

/// The values of every header named `name` (ASCII case-insensitive).
fn values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Whether a comma-separated list header named `name` holds `token`.
fn lists(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `key` is the base64 form of 16 bytes (RFC 6455 §4.1).
fn is_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

impl UpgradePolicy {
    /// Checks a parsed request (see the module docs); returns the
    /// `Sec-WebSocket-Key` to answer.
    pub(crate) fn check<'r>(
        &self,
        request: &httparse::Request<'_, 'r>,
    ) -> Result<&'r str, Refusal> {
        if request.method != Some("GET") {
            return Err(Refusal::new(405, "a WebSocket upgrade is a GET\n").with("Allow: GET"));
        }
        if request.version != Some(1) {
            return Err(Refusal::new(400, "a WebSocket upgrade needs HTTP/1.1\n"));
        }
        let headers: &[httparse::Header<'r>] = request.headers;
        if !lists(headers, "upgrade", "websocket") {
            return Err(Refusal::new(426, "this endpoint speaks WebSocket only\n")
                .with("Upgrade: websocket"));
        }
        if !values(headers, "sec-websocket-version").any(|v| v.trim() == "13") {
            return Err(
                Refusal::new(426, "WebSocket version 13 only\n").with("Sec-WebSocket-Version: 13")
            );
        }
        if !lists(headers, "connection", "upgrade") {
            return Err(Refusal::new(400, "expected Connection: Upgrade\n"));
        }
        let key = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
            .filter(|k| is_key(k));
        let Some(key) = key else {
            return Err(Refusal::new(400, "missing or invalid Sec-WebSocket-Key\n"));
        };
        let target = request.path.unwrap_or("");
        let path = target.split('?').next().unwrap_or("");
        if path != self.path {
            return Err(Refusal::new(
                404,
                format!("no bus endpoint at {path:?}; upgrade on {:?}\n", self.path),
            ));
        }
        if !values(headers, "sec-websocket-protocol")
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == PROTOCOL_ID)
        {
            return Err(Refusal::new(
                400,
                format!("expected subprotocol: Sec-WebSocket-Protocol: {PROTOCOL_ID}\n"),
            ));
        }
        if !self.allowed_origins.is_empty() {
            let origin = values(headers, "origin").next().unwrap_or("");
            if !self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            {
                return Err(Refusal::new(
                    403,
                    format!("origin {origin:?} is not allowed\n"),
                ));
            }
        }
        Ok(key)
    }
}

/// The `101` answer to a request with `key`.
pub(crate) fn accepted(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {PROTOCOL_ID}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRequest {
    /// `Host` header.
    pub(crate) host: String,
    /// Path and query.
    pub(crate) target: String,
    /// `Origin` header, if any.
    pub(crate) origin: Option<String>,
}

impl ClientRequest {
    /// The request head with `key`.
    pub(crate) fn head(&self, key: &str) -> String {
        let mut out = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL_ID}\r\n",
            self.target, self.host
        );
        if let Some(origin) = &self.origin {
            let _ = write!(out, "Origin: {origin}\r\n");
        }
        out.push_str("\r\n");
        out
    }
}

/// Why a server's answer to our upgrade is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResponseError {
    /// Not `101`.
    #[error("the server refused the upgrade with HTTP {status}")]
    Status {
        /// The status it sent.
        status: u16,
    },
    /// `Sec-WebSocket-Accept` does not match our key.
    #[error("the server's Sec-WebSocket-Accept does not match the key")]
    Accept,
    /// The server did not echo `bus.v1`.
    #[error("the server did not select the bus.v1 subprotocol")]
    Subprotocol,
}

/// Checks a server's parsed response to a request with `key`.
pub(crate) fn check_response(
    response: &httparse::Response<'_, '_>,
    key: &str,
) -> Result<(), ResponseError> {
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(ResponseError::Status { status });
    }
    let expected = derive_accept_key(key.as_bytes());
    if !values(response.headers, "sec-websocket-accept").any(|v| v.trim() == expected) {
        return Err(ResponseError::Accept);
    }
    if !values(response.headers, "sec-websocket-protocol").any(|v| v.trim() == PROTOCOL_ID) {
        return Err(ResponseError::Subprotocol);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn check(policy: &UpgradePolicy, head: &str) -> Result<String, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head.as_bytes()).expect("parses");
        policy.check(&request).map(str::to_owned)
    }

    fn status(policy: &UpgradePolicy, head: &str) -> u16 {
        check(policy, head).expect_err("refused").status
    }

    fn policy(origins: &[&str]) -> UpgradePolicy {
        UpgradePolicy {
            path: "/bus".into(),
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn get(path: &str, extra: &str) -> String {
        format!("GET {path} HTTP/1.1\r\n{BASE}{extra}\r\n")
    }

    #[test]
    fn accepts_bus_protocol_among_others() {
        let head = get("/bus?x=1", "Sec-WebSocket-Protocol: chat, bus.v1\r\n");
        assert_eq!(
            check(&policy(&[]), &head).unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let answer = accepted("dGhlIHNhbXBsZSBub25jZQ==");
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(answer.contains("Sec-WebSocket-Protocol: bus.v1\r\n"));
    }

    #[test]
    fn refusals_in_order() {
        let p = policy(&[]);
        let proto = "Sec-WebSocket-Protocol: bus.v1\r\n";
        let post = get("/bus", proto).replacen("GET", "POST", 1);
        let refusal = check(&p, &post).unwrap_err();
        assert_eq!((refusal.status, refusal.extra), (405, Some("Allow: GET")));
        assert_eq!(
            status(&p, &get("/bus", proto).replacen("HTTP/1.1", "HTTP/1.0", 1)),
            400
        );
        assert_eq!(status(&p, "GET /bus HTTP/1.1\r\nHost: x\r\n\r\n"), 426);
        let v8 = get("/bus", proto).replace("Version: 13", "Version: 8");
        let refusal = check(&p, &v8).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.extra),
            (426, Some("Sec-WebSocket-Version: 13"))
        );
        let no_key =
            get("/bus", proto).replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(status(&p, &no_key), 400);
        let bad_key = get("/bus", proto).replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(status(&p, &bad_key), 400);
        assert_eq!(status(&p, &get("/other", proto)), 404);
        for protocols in ["", "Sec-WebSocket-Protocol: bus.v2\r\n"] {
            let refusal = check(&p, &get("/bus", protocols)).unwrap_err();
            assert_eq!(refusal.status, 400);
            assert!(refusal.body.contains("bus.v1"));
        }
    }

    #[test]
    fn origin_allow_list() {
        let p = policy(&["https://app.example.com"]);
        let proto = "Sec-WebSocket-Protocol: bus.v1\r\n";
        let ok = get(
            "/bus",
            &format!("{proto}Origin: https://APP.example.com\r\n"),
        );
        assert!(check(&p, &ok).is_ok());
        let evil = get("/bus", &format!("{proto}Origin: https://evil.example\r\n"));
        assert_eq!(status(&p, &evil), 403);
        assert_eq!(status(&p, &get("/bus", proto)), 403);
    }

    #[test]
    fn refusal_response_is_complete_http() {
        let refusal = Refusal::new(426, "v13\n").with("Sec-WebSocket-Version: 13");
        assert_eq!(
            refusal.response(),
            "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\nv13\n"
        );
    }
}
