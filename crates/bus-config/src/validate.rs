//! Validation: the ranges of single values and the relations between them.
//!
//! Parsing already refused what has the wrong shape (types, units, unknown
//! keys, enum names such as `log.level`); this module refuses what parsed but
//! cannot run. Every error names the field by its dotted TOML path, the value
//! and what is allowed. The bus's own ranges come from `bus_core::limits`, so
//! the two crates cannot disagree.

use std::{fmt::Display, net::SocketAddr, ops::RangeInclusive, time::Duration};

use bus_core::limits;

use crate::{
    ByteSize, Config, Error, WsSection,
    units::{format_duration, format_optional_duration},
};

// Bounds of `bus-config`'s own sections; the `[bus]` bounds live in
// `bus_core::limits`.

/// `bus.max_message_size`.
const MAX_MESSAGE_SIZE: RangeInclusive<ByteSize> =
    ByteSize(limits::MIN_MAX_MESSAGE_SIZE_BYTES as u64)
        ..=ByteSize(limits::MAX_MAX_MESSAGE_SIZE_BYTES as u64);
/// `bus.max_batch_frames`.
const MAX_BATCH_FRAMES: RangeInclusive<usize> = 1..=limits::MAX_BATCH_FRAMES_LIMIT;
/// `bus.read_buffer`.
const READ_BUFFER: RangeInclusive<ByteSize> =
    ByteSize(limits::MIN_READ_BUFFER_BYTES as u64)..=ByteSize(limits::MAX_READ_BUFFER_BYTES as u64);
/// `tcp.backlog`: `listen(2)` takes an int, and the kernel caps it at
/// `somaxconn` anyway.
const BACKLOG: RangeInclusive<u32> = 1..=65_535;
/// `ws.read_buffer`, `ws.write_buffer` (and `wss.*`).
const WS_BUFFER: RangeInclusive<ByteSize> = ByteSize::kib(4)..=ByteSize::mib(16);
/// Smallest `ws.max_frame_size`: one bare frame header. The largest is
/// `bus.max_message_size`.
const MIN_WS_FRAME_SIZE: ByteSize = ByteSize(limits::HEADER_SIZE as u64);
/// `quic.stream_receive_window`, `quic.connection_receive_window`,
/// `quic.send_window`.
const QUIC_WINDOW: RangeInclusive<ByteSize> = ByteSize::kib(1)..=ByteSize::gib(1);
/// `quic.initial_mtu`: QUIC's smallest allowed datagram (RFC 9000 §14) up to
/// the largest `max_udp_payload_size` (RFC 9000 §18.2).
const QUIC_INITIAL_MTU: RangeInclusive<u16> = 1200..=65_527;
/// `quic.udp_send_buffer`, `quic.udp_receive_buffer`.
const UDP_BUFFER: RangeInclusive<ByteSize> = ByteSize::kib(4)..=ByteSize::gib(1);
/// Largest `shards.count`; 0 means one per core. The shard layer's own
/// bound, so the two cannot disagree.
pub(crate) use bus_shard::config::MAX_SHARDS;

// The ws.max_frame_size range is never empty.
const _: () = assert!(MIN_WS_FRAME_SIZE.0 <= limits::MIN_MAX_MESSAGE_SIZE_BYTES as u64);

impl Config {
    /// Checks every range and every relation between fields; the first
    /// violation is returned as [`Error::Invalid`] naming the field.
    ///
    /// [`from_toml_str`](Self::from_toml_str) and [`load`](Self::load) call
    /// this already; call it again after changing fields in code.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_bus()?;
        self.validate_tcp()?;
        self.validate_tls()?;
        self.validate_ws("ws", &self.ws)?;
        self.validate_ws("wss", &self.wss)?;
        self.validate_quic()?;
        self.validate_shards()?;
        self.validate_replicas()?;
        self.validate_listeners()
    }

    fn validate_bus(&self) -> Result<(), Error> {
        let bus = &self.bus;
        in_range(
            "bus.max_message_size",
            bus.max_message_size,
            MAX_MESSAGE_SIZE,
        )?;
        at_least("bus.queue_capacity_frames", bus.queue_capacity_frames, 1)?;
        at_least("bus.max_connections", bus.max_connections, 1)?;
        for (field, bytes) in [
            ("bus.queue_capacity_bytes", bus.queue_capacity_bytes),
            ("bus.inbound_budget", bus.inbound_budget),
        ] {
            check(
                bytes >= bus.max_message_size,
                field,
                bytes,
                format!(">= bus.max_message_size ({})", bus.max_message_size),
            )?;
        }
        at_least(
            "bus.max_outstanding_requests",
            bus.max_outstanding_requests,
            1,
        )?;
        in_range(
            "bus.max_batch_frames",
            bus.max_batch_frames,
            MAX_BATCH_FRAMES,
        )?;
        in_range("bus.read_buffer", bus.read_buffer, READ_BUFFER)?;
        positive("bus.handshake_grace", bus.handshake_grace)?;
        positive("bus.shutdown_flush_timeout", bus.shutdown_flush_timeout)?;
        positive("bus.close_grace", bus.close_grace)?;
        positive("bus.close_peer_timeout", bus.close_peer_timeout)?;
        // The parser maps zero to "off"; this catches a zero set in code.
        check(
            bus.idle_timeout.is_none_or(|d| !d.is_zero()),
            "bus.idle_timeout",
            format_optional_duration(bus.idle_timeout),
            "\"off\" or > 0 s",
        )
    }

    fn validate_tcp(&self) -> Result<(), Error> {
        in_range("tcp.backlog", self.tcp.backlog, BACKLOG)?;
        at_least("tcp.max_handshakes", self.tcp.max_handshakes, 1)?;
        positive("tcp.connect_timeout", self.tcp.connect_timeout)
    }

    fn validate_tls(&self) -> Result<(), Error> {
        let tls = &self.tls;
        at_least("tls.max_handshakes", tls.max_handshakes, 1)?;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                return Err(Error::invalid(
                    "tls.key",
                    "(not set)",
                    "a path whenever tls.cert is set (cert and key come as a pair)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "tls.cert",
                    "(not set)",
                    "a path whenever tls.key is set (cert and key come as a pair)",
                ));
            }
            (Some(_), Some(_)) | (None, None) => {}
        }
        let users = [
            ("tls.enabled", tls.enabled),
            ("wss.enabled", self.wss.enabled),
            ("quic.enabled", self.quic.enabled),
            ("replicas.tls", self.replicas.enabled && self.replicas.tls),
        ];
        if let Some((user, _)) = users.iter().find(|(_, on)| *on)
            && tls.cert.is_none()
            && !tls.self_signed
        {
            return Err(Error::invalid(
                "tls.self_signed",
                false,
                format!(
                    "true while tls.cert and tls.key are not set, because {user} needs a \
                     certificate (or set tls.cert and tls.key)"
                ),
            ));
        }
        Ok(())
    }

    fn validate_ws(&self, section: &str, ws: &WsSection) -> Result<(), Error> {
        at_least(&format!("{section}.max_handshakes"), ws.max_handshakes, 1)?;
        check(
            ws.path.starts_with('/'),
            format!("{section}.path"),
            format!("{:?}", ws.path),
            "a path starting with \"/\"",
        )?;
        for (i, origin) in ws.allowed_origins.iter().enumerate() {
            check(
                is_origin(origin),
                format!("{section}.allowed_origins[{i}]"),
                format!("{origin:?}"),
                "an origin such as \"https://app.example.com\" or \"http://localhost:8080\" \
                 (scheme and host, no path)",
            )?;
        }
        in_range(format!("{section}.read_buffer"), ws.read_buffer, WS_BUFFER)?;
        in_range(
            format!("{section}.write_buffer"),
            ws.write_buffer,
            WS_BUFFER,
        )?;
        // The size chain: a WebSocket frame <= the message that carries one
        // bus frame <= bus.max_message_size. A disabled listener is held only
        // to the absolute bounds, so lowering bus.max_message_size does not
        // force editing a section that does not run.
        let (max, max_name) = if ws.enabled {
            (self.bus.max_message_size, "bus.max_message_size")
        } else {
            (*MAX_MESSAGE_SIZE.end(), "the largest bus.max_message_size")
        };
        let Some(frame) = ws.max_frame_size else {
            // Unset: derived within the range (`effective_max_frame_size`).
            return Ok(());
        };
        check(
            (MIN_WS_FRAME_SIZE..=max).contains(&frame),
            format!("{section}.max_frame_size"),
            frame,
            format!("{MIN_WS_FRAME_SIZE} ..= {max_name} ({max})"),
        )
    }

    fn validate_quic(&self) -> Result<(), Error> {
        let quic = &self.quic;
        positive("quic.max_idle_timeout", quic.max_idle_timeout)?;
        check(
            quic.keep_alive
                .is_none_or(|k| !k.is_zero() && k < quic.max_idle_timeout),
            "quic.keep_alive",
            format_optional_duration(quic.keep_alive),
            format!(
                "\"off\", or > 0 s and below quic.max_idle_timeout ({})",
                format_duration(quic.max_idle_timeout)
            ),
        )?;
        in_range(
            "quic.stream_receive_window",
            quic.stream_receive_window,
            QUIC_WINDOW,
        )?;
        in_range(
            "quic.connection_receive_window",
            quic.connection_receive_window,
            QUIC_WINDOW,
        )?;
        check(
            quic.stream_receive_window <= quic.connection_receive_window,
            "quic.stream_receive_window",
            quic.stream_receive_window,
            format!(
                "at most quic.connection_receive_window ({})",
                quic.connection_receive_window
            ),
        )?;
        in_range("quic.send_window", quic.send_window, QUIC_WINDOW)?;
        in_range("quic.initial_mtu", quic.initial_mtu, QUIC_INITIAL_MTU)?;
        in_range("quic.udp_send_buffer", quic.udp_send_buffer, UDP_BUFFER)?;
        in_range(
            "quic.udp_receive_buffer",
            quic.udp_receive_buffer,
            UDP_BUFFER,
        )?;
        at_least("quic.max_connections", quic.max_connections, 1)?;
        check(
            (1..=quic.max_connections).contains(&quic.max_handshakes),
            "quic.max_handshakes",
            quic.max_handshakes,
            format!("1 ..= quic.max_connections ({})", quic.max_connections),
        )?;
        check(
            quic.retry_threshold
                .is_none_or(|t| t <= quic.max_handshakes),
            "quic.retry_threshold",
            quic.retry_threshold.unwrap_or_default(),
            format!("0 ..= quic.max_handshakes ({})", quic.max_handshakes),
        )
    }

    fn validate_shards(&self) -> Result<(), Error> {
        let shards = &self.shards;
        check(
            shards.count <= MAX_SHARDS,
            "shards.count",
            shards.count,
            format!("0 (one shard per core) or 1 ..= {MAX_SHARDS}"),
        )?;
        at_least(
            "shards.inbox_capacity_frames",
            shards.inbox_capacity_frames,
            1,
        )
    }

    fn validate_replicas(&self) -> Result<(), Error> {
        let replicas = &self.replicas;
        check(
            !replicas.enabled || replicas.psk_file.is_some(),
            "replicas.psk_file",
            "(not set)",
            "a path to the pre-shared key while replicas.enabled = true",
        )?;
        // Whether a key file exists, is private and long enough is checked
        // when it is read (`bus_replica::ReplicaConfig::load_keys`).
        for (field, path) in [
            ("replicas.psk_file", &replicas.psk_file),
            ("replicas.verify_psk_file", &replicas.verify_psk_file),
            ("replicas.ca_file", &replicas.ca_file),
        ] {
            check(
                path.as_ref().is_none_or(|p| !p.as_os_str().is_empty()),
                field,
                "\"\"",
                "a path to a file, or the key left out",
            )?;
        }
        positive("replicas.reconnect_max", replicas.reconnect_max)?;
        // The parser maps zero to "off"; these catch a zero set in code.
        check(
            replicas.idle_timeout.is_none_or(|d| !d.is_zero()),
            "replicas.idle_timeout",
            format_optional_duration(replicas.idle_timeout),
            "\"off\" or > 0 s",
        )?;
        if let Some(idle) = replicas.idle_timeout {
            check(
                replicas.keepalive.is_none_or(|k| !k.is_zero() && k < idle),
                "replicas.keepalive",
                format_optional_duration(replicas.keepalive),
                format!(
                    "\"off\", or > 0 s and below replicas.idle_timeout ({})",
                    format_duration(idle)
                ),
            )?;
        } else {
            check(
                replicas.keepalive.is_none_or(|k| !k.is_zero()),
                "replicas.keepalive",
                format_optional_duration(replicas.keepalive),
                "\"off\" or > 0 s",
            )?;
        }
        for (i, peer) in replicas.peers.iter().enumerate() {
            let field = format!("replicas.peers[{i}].id");
            check(
                peer.id != replicas.self_id,
                &field,
                peer.id,
                format!("any id but replicas.self_id ({})", replicas.self_id),
            )?;
            if let Some(first) = replicas.peers[..i].iter().position(|p| p.id == peer.id) {
                return Err(Error::invalid(
                    field,
                    peer.id,
                    format!("an id no other peer has (replicas.peers[{first}] has it)"),
                ));
            }
        }
        Ok(())
    }

    /// Two enabled TCP listeners must not bind the same address. QUIC binds
    /// UDP, so it may share a TCP listener's port.
    fn validate_listeners(&self) -> Result<(), Error> {
        let listeners = [
            ("tcp.listen", self.tcp.enabled, self.tcp.listen),
            ("tls.listen", self.tls.enabled, self.tls.listen),
            ("ws.listen", self.ws.enabled, self.ws.listen),
            ("wss.listen", self.wss.enabled, self.wss.listen),
            (
                "replicas.listen",
                self.replicas.enabled,
                self.replicas.listen,
            ),
            ("admin.listen", self.admin.enabled, self.admin.listen),
        ];
        let bound = || {
            listeners
                .iter()
                .filter(|(_, on, addr)| *on && addr.port() != 0)
        };
        for (i, (field, _, addr)) in bound().enumerate() {
            if let Some((other, _, _)) = bound().take(i).find(|(_, _, a)| overlaps(*a, *addr)) {
                return Err(Error::invalid(
                    *field,
                    addr,
                    format!("an address no other enabled listener binds ({other} takes it)"),
                ));
            }
        }
        Ok(())
    }
}

/// Whether binding both `a` and `b` would fail with "address in use".
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// Whether binding `wide` takes `narrow`'s address too: a wildcard covers its
/// own family, and an IPv6 wildcard is dual-stack by default on Linux.
fn covers(wide: SocketAddr, narrow: SocketAddr) -> bool {
    wide.ip().is_unspecified() && (wide.is_ipv6() || narrow.is_ipv4())
}

/// `scheme://host[:port]` with scheme http or https and nothing after.
fn is_origin(origin: &str) -> bool {
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    host.is_some_and(|host| !host.is_empty() && !host.contains(['/', '?', '#', ' ']))
}

fn check(
    ok: bool,
    field: impl Into<String>,
    value: impl Display,
    allowed: impl Into<String>,
) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, value, allowed))
    }
}

fn in_range<T: PartialOrd + Display>(
    field: impl Into<String>,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), Error> {
    let allowed = format!("{} ..= {}", range.start(), range.end());
    check(range.contains(&value), field, value, allowed)
}

fn at_least<T: PartialOrd + Display + Copy>(field: &str, value: T, min: T) -> Result<(), Error> {
    let allowed = format!(">= {min}");
    check(value >= min, field, value, allowed)
}

fn positive(field: &str, duration: Duration) -> Result<(), Error> {
    check(
        !duration.is_zero(),
        field,
        format_duration(duration),
        "> 0 s",
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::{is_origin, overlaps};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn overlapping_addresses() {
        assert!(overlaps(addr("127.0.0.1:1"), addr("127.0.0.1:1")));
        assert!(overlaps(addr("0.0.0.0:1"), addr("127.0.0.1:1")));
        assert!(overlaps(addr("127.0.0.1:1"), addr("[::]:1")));
        assert!(!overlaps(addr("127.0.0.1:1"), addr("127.0.0.1:2")));
        assert!(!overlaps(addr("127.0.0.1:1"), addr("127.0.0.2:1")));
        assert!(!overlaps(addr("0.0.0.0:1"), addr("[::1]:1")));
    }

    #[test]
    fn origins() {
        assert!(is_origin("https://app.example.com"));
        assert!(is_origin("http://localhost:8080"));
        assert!(!is_origin("app.example.com"));
        assert!(!is_origin("https://"));
        assert!(!is_origin("https://app.example.com/"));
        assert!(!is_origin("ftp://example.com"));
    }
}
