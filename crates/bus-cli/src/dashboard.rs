//! The live dashboard of the admin endpoint: the page at `/dashboard`
//! (`dashboard.html`, embedded, no external assets) and the compact JSON it
//! polls at `/stats`.
//!
//! `/stats` is one line of JSON, counters since start (the page turns two
//! samples into rates with their `uptime_ms`):
//!
//! ```text
//! { "version": "0.1.0", "driver": "IoUring", "uptime_ms": 81234, "shutting_down": false,
//!   "totals": COUNTERS,
//!   "shards": [ { "shard": 0, ...COUNTERS }, ... ],
//!   "replicas": [ REPLICA, ... ] }         <- only when the node runs a replica plane
//!
//! COUNTERS = { "connections": { "tcp": 1, "tls": 0, "ws": 0, "wss": 0, "quic": 0 },
//!   "connections_accepted", "handshake_failures", "frames_in", "frames_out", "bytes_in",
//!   "bytes_out", "queue_full", "inbox_full", "frames_dropped", "handler_panics",
//!   "connection_panics": u64,
//!   "goodbyes_sent": { "Normal": 0, "ShuttingDown": 0, ... every reason, in code order } }
//!
//! REPLICA = { "replica": 1, "self": false, "addr": "10.0.0.2:7075" | null,
//!   "links": [ { "to": 2, "state": "connected" | "handshaking" | "connecting" | "down" } ] }
//! ```
//!
//! A node with a replica plane reports one entry per replica of its mesh,
//! itself included (`"self": true`) with the links it holds; the page draws
//! every entry as a node and every reported link as an edge coloured by its
//! state. Without one (today's `bus serve`) the key is absent and the page
//! says so. What fills it is [`StatsSource::replicas`].
//!
//! This module does not read the shards itself or serve HTTP: `admin` does
//! both and calls [`render_stats`].

use std::time::Duration;

use bus_core::{GOODBYE_REASONS, GoodbyeReason};
use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::{
    admin::{NodeInfo, ShardView, StatsSource},
    transports,
};

/// The dashboard: one static HTML file with inline CSS and JavaScript that
/// polls `/stats`.
pub const PAGE: &str = include_str!("dashboard.html");

/// One replica of the mesh, as `/stats` reports it for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplicaView {
    /// Its replica id.
    pub replica: u8,
    /// Whether it is this node.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Where it listens for replicas, when known.
    pub addr: Option<String>,
    /// The links it holds, as this node knows them (a node knows its own).
    pub links: Vec<ReplicaLink>,
}

impl ReplicaView {
    /// Replica `replica` (this node when `is_self`) at `addr`, no links yet.
    pub fn new(replica: u8, is_self: bool, addr: Option<String>) -> Self {
        Self {
            replica,
            is_self,
            addr,
            links: Vec::new(),
        }
    }
}

/// A link of the mesh and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplicaLink {
    /// The replica at the other end.
    pub to: u8,
    /// Where the link stands.
    pub state: LinkState,
}

impl ReplicaLink {
    /// A link to `to` in `state`.
    pub fn new(to: u8, state: LinkState) -> Self {
        Self { to, state }
    }
}

/// Where a replica link stands (spec §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LinkState {
    /// Dialing, or waiting to dial again (backoff).
    Connecting,
    /// Connected, in the replica handshake.
    Handshaking,
    /// Authenticated and carrying frames.
    Connected,
    /// Not connected, and not trying (refused, or the acceptor's side
    /// waiting for the peer to dial).
    Down,
}

#[derive(Serialize)]
struct Stats<'a> {
    version: &'a str,
    driver: &'a str,
    uptime_ms: u64,
    shutting_down: bool,
    totals: Counters,
    shards: Vec<ShardCounters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<&'a [ReplicaView]>,
}

#[derive(Serialize)]
struct ShardCounters {
    shard: u16,
    #[serde(flatten)]
    counters: Counters,
}

/// The counters of one shard, or of all of them summed.
#[derive(Debug, Default, Serialize)]
struct Counters {
    connections: ByTransport,
    connections_accepted: u64,
    handshake_failures: u64,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    queue_full: u64,
    inbox_full: u64,
    frames_dropped: u64,
    handler_panics: u64,
    connection_panics: u64,
    goodbyes_sent: Goodbyes,
}

impl Counters {
    fn of(view: &ShardView) -> Self {
        let s = &view.stats;
        let mut connections = ByTransport::default();
        for conn in &view.connections {
            if let Some(i) = transports::ALL
                .iter()
                .position(|&kind| kind == conn.info.transport)
            {
                connections.0[i] += 1;
            }
        }
        Self {
            connections,
            connections_accepted: s.connections_total,
            handshake_failures: s.handshake_failures,
            frames_in: s.frames_in,
            frames_out: s.frames_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            queue_full: s.queue_full,
            inbox_full: view.layer.as_ref().map_or(0, |layer| layer.inbox_full),
            frames_dropped: s.frames_dropped,
            handler_panics: s.handler_panics,
            connection_panics: s.connection_panics,
            goodbyes_sent: Goodbyes(s.goodbyes_sent),
        }
    }

    fn add(&mut self, other: &Self) {
        for (sum, n) in self.connections.0.iter_mut().zip(other.connections.0) {
            *sum += n;
        }
        for (sum, n) in [
            (&mut self.connections_accepted, other.connections_accepted),
            (&mut self.handshake_failures, other.handshake_failures),
            (&mut self.frames_in, other.frames_in),
            (&mut self.frames_out, other.frames_out),
            (&mut self.bytes_in, other.bytes_in),
            (&mut self.bytes_out, other.bytes_out),
            (&mut self.queue_full, other.queue_full),
            (&mut self.inbox_full, other.inbox_full),
            (&mut self.frames_dropped, other.frames_dropped),
            (&mut self.handler_panics, other.handler_panics),
            (&mut self.connection_panics, other.connection_panics),
        ] {
            *sum = sum.wrapping_add(n);
        }
        for (sum, n) in self.goodbyes_sent.0.iter_mut().zip(other.goodbyes_sent.0) {
            *sum = sum.wrapping_add(n);
        }
    }
}

/// Live connections per transport, serialized as `{"tcp": n, ...}` in
/// spec order.
#[derive(Debug, Default)]
struct ByTransport([usize; transports::ALL.len()]);

impl Serialize for ByTransport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (kind, count) in transports::ALL.iter().zip(self.0) {
            map.serialize_entry(kind.as_str(), &count)?;
        }
        map.end()
    }
}

/// Goodbyes sent per reason, serialized as `{"Normal": n, ...}` in code
/// order.
#[derive(Debug, Default)]
struct Goodbyes([u64; GOODBYE_REASONS]);

impl Serialize for Goodbyes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (code, count) in (0u32..).zip(self.0) {
            map.serialize_entry(&GoodbyeReason::from_code(code).to_string(), &count)?;
        }
        map.end()
    }
}

/// Renders `/stats` for `shards`, `uptime` after the endpoint started.
pub fn render_stats(
    shards: &[ShardView],
    info: &NodeInfo,
    uptime: Duration,
    source: &dyn StatsSource,
) -> String {
    let per_shard: Vec<ShardCounters> = shards
        .iter()
        .map(|view| ShardCounters {
            shard: view.shard,
            counters: Counters::of(view),
        })
        .collect();
    let mut totals = Counters::default();
    for shard in &per_shard {
        totals.add(&shard.counters);
    }
    let replicas = source.replicas();
    let stats = Stats {
        version: info.version,
        driver: &info.driver,
        uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        shutting_down: source.is_shutting_down(),
        totals,
        shards: per_shard,
        replicas: replicas.as_deref(),
    };
    let mut json =
        serde_json::to_string(&stats).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use bus_core::BusStats;

    use super::*;

    struct Source(Option<Vec<ReplicaView>>);

    impl StatsSource for Source {
        fn shards(&self) -> Result<Vec<ShardView>, String> {
            Ok(Vec::new())
        }
        fn is_shutting_down(&self) -> bool {
            false
        }
        fn replicas(&self) -> Option<Vec<ReplicaView>> {
            self.0.clone()
        }
    }

    fn info() -> NodeInfo {
        NodeInfo {
            version: "0.1.0",
            driver: "IoUring".into(),
        }
    }

    fn shard(index: u16, frames_in: u64, protocol_violations: u64) -> ShardView {
        let mut stats = BusStats::default();
        stats.frames_in = frames_in;
        stats.goodbyes_sent[8] = protocol_violations;
        ShardView::of_bus(index, stats, Vec::new())
    }

    #[test]
    fn stats_sum_the_shards_and_name_every_transport_and_reason() {
        let json = render_stats(
            &[shard(0, 3, 1), shard(1, 4, 2)],
            &info(),
            Duration::from_millis(1500),
            &Source(None),
        );
        assert!(
            json.ends_with('\n') && !json.trim_end().contains('\n'),
            "one line"
        );
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(value["uptime_ms"], 1500);
        assert_eq!(value["driver"], "IoUring");
        assert_eq!(value["totals"]["frames_in"], 7);
        assert_eq!(value["totals"]["goodbyes_sent"]["ProtocolViolation"], 3);
        assert_eq!(value["shards"][1]["shard"], 1);
        assert_eq!(value["shards"][1]["frames_in"], 4);
        assert!(value.get("replicas").is_none(), "no replica plane: no key");
        // Keys in spec order (transports) and code order (reasons).
        let connections =
            json.find("\"connections\":{\"tcp\":0,\"tls\":0,\"ws\":0,\"wss\":0,\"quic\":0}");
        assert!(connections.is_some(), "{json}");
        let goodbyes = json.find("\"goodbyes_sent\":{\"Normal\":0,\"ShuttingDown\":0,\"FrameTooLarge\":0,\"MalformedFrame\":0,\"ChecksumMismatch\":0,\"IdleTimeout\":0,\"SlowConsumer\":0,\"HandshakeFailed\":0,\"ProtocolViolation\":3,\"Evicted\":0}");
        assert!(goodbyes.is_some(), "{json}");
    }

    #[test]
    fn stats_carry_the_replica_mesh_when_the_node_has_one() {
        let mut me = ReplicaView::new(0, true, Some("127.0.0.1:7075".into()));
        me.links = vec![
            ReplicaLink::new(1, LinkState::Connected),
            ReplicaLink::new(2, LinkState::Handshaking),
        ];
        let peer = ReplicaView::new(1, false, None);
        let json = render_stats(&[], &info(), Duration::ZERO, &Source(Some(vec![me, peer])));
        assert!(
            json.contains(
                "\"replicas\":[{\"replica\":0,\"self\":true,\"addr\":\"127.0.0.1:7075\",\
                 \"links\":[{\"to\":1,\"state\":\"connected\"},{\"to\":2,\"state\":\"handshaking\"}]},\
                 {\"replica\":1,\"self\":false,\"addr\":null,\"links\":[]}]"
            ),
            "{json}"
        );
    }
}
