//! Node addresses as URLs: `scheme://host[:port][/path]`.
//!
//! Every scheme of spec §7 is known here whether or not its transport is
//! compiled in, so a URL for a missing transport fails with a message that
//! says which feature to enable rather than "unknown scheme". The port
//! defaults to the node's documented default for the scheme (the embedded
//! defaults of `bus-config`). Host names are resolved when connecting, not
//! here.

use std::fmt;

use bus_core::limits;

use crate::ClientError;

/// A transport, as named by a URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `tcp://`: frames back to back on TCP.
    Tcp,
    /// `tls://`: TCP + TLS 1.3, ALPN `bus.v1`.
    Tls,
    /// `ws://`: WebSocket, subprotocol `bus.v1`.
    Ws,
    /// `wss://`: WebSocket over TLS 1.3.
    Wss,
    /// `quic://`: one bidirectional QUIC stream, ALPN `bus.v1`.
    Quic,
}

impl Scheme {
    /// Every scheme, in the order of spec §7.
    pub const ALL: [Scheme; 5] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss, Self::Quic];

    /// The scheme as written in a URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
        }
    }

    /// The port a node listens on for this scheme by default.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Tcp => limits::DEFAULT_TCP_PORT,
            Self::Tls => limits::DEFAULT_TLS_PORT,
            Self::Ws => limits::DEFAULT_WS_PORT,
            Self::Wss => limits::DEFAULT_WSS_PORT,
            Self::Quic => limits::DEFAULT_QUIC_PORT,
        }
    }

    /// Whether this build of the client can connect with this scheme.
    #[allow(
        clippy::match_like_matches_macro,
        reason = "one arm per transport, added as each lands"
    )]
    pub const fn is_available(self) -> bool {
        match self {
            Self::Tcp => cfg!(feature = "tcp"),
            Self::Tls => cfg!(feature = "tls"),
            Self::Ws => cfg!(feature = "ws"),
            Self::Wss => cfg!(feature = "wss"),
            Self::Quic => cfg!(feature = "quic"),
        }
    }

    /// The cargo feature that compiles this scheme in.
    pub const fn feature(self) -> &'static str {
        self.as_str()
    }

    /// The scheme named `name` (lower case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed node URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port; the scheme's default when the URL has none.
    pub port: u16,
    /// HTTP path of the WebSocket upgrade (`/` when absent); unused by the
    /// other schemes.
    pub path: String,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/path]`. IPv6 hosts are bracketed
    /// (`tcp://[::1]:7070`).
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme_name, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://host:port, e.g. tcp://127.0.0.1:7070"))?;
        let scheme = Scheme::from_name(scheme_name).ok_or_else(|| {
            invalid("unknown scheme; use tcp://, tls://, ws://, wss:// or quic://")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(invalid("missing host"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed `[` in IPv6 host"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(invalid("expected `:port` after `]`")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("port must be a number in 1 ..= 65535"))?,
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}", self.port)?;
        if matches!(self.scheme, Scheme::Ws | Scheme::Wss) && self.path != "/" {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Endpoint {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_defaults() {
        let e = Endpoint::parse("tcp://127.0.0.1:9000").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Tcp, "127.0.0.1", 9000)
        );
        let e = Endpoint::parse("quic://localhost").unwrap();
        assert_eq!(e.port, 7074);
        let e = Endpoint::parse("ws://[::1]:8080/bus").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 8080, "/bus")
        );
        assert_eq!(e.to_string(), "ws://[::1]:8080/bus");
        assert_eq!(Endpoint::parse("tls://[::1]").unwrap().port, 7071);
    }

    #[test]
    fn refuses_malformed_urls_with_a_reason() {
        for (url, needle) in [
            ("127.0.0.1:7070", "expected scheme://"),
            ("http://x:1", "unknown scheme"),
            ("tcp://", "missing host"),
            ("tcp://:7070", "missing host"),
            ("tcp://h:0", "port must be"),
            ("tcp://h:99999", "port must be"),
            ("tcp://[::1", "unclosed"),
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains(url), "{url}: {err}");
        }
    }
}
