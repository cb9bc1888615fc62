//! The replica plane on the admin endpoint: `GET /replicaz` (JSON) and the
//! `bus_replica_*` series of `/metrics`.
//!
//! ```json
//! {"self_id": 0, "cluster": "0x2a", "peers": [
//!   {"id": 1, "addr": "127.0.0.1:7175", "state": "connected", "direction": "dial",
//!    "since": 1767225600000, "frames_in": 12, "frames_out": 12, "last_error": null}]}
//! ```
//!
//! `state` is `connected`, `connecting` (dialing, or waiting for a lower id
//! to dial us), `backoff` (waiting to redial) or `refused` (the last
//! handshake was turned down, by the peer or by us); `since` is when the
//! peer entered that state, in milliseconds since the Unix epoch;
//! `frames_in`/`frames_out` count the live connection's frames (0 while
//! there is none); `last_error` says why the last attempt or connection
//! ended (`null` until one did).
//!
//! This module only renders: [`ReplicasView`] is filled by whoever knows
//! the mesh (`server.rs`), so the admin endpoint needs no replica types.

use std::fmt::Write as _;

use serde::Serialize;

/// The replica plane as `/replicaz` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicasView {
    /// This node's replica id.
    pub self_id: u8,
    /// The cluster id.
    pub cluster: u128,
    /// Every configured peer.
    pub peers: Vec<PeerView>,
    /// Dials made so far.
    pub dials: u64,
    /// Dials after a failure, a refusal or a loss.
    pub reconnects: u64,
    /// Handshakes that authenticated a link.
    pub handshakes: u64,
    /// Failed handshakes by reason label, every reason listed.
    pub handshake_failures: Vec<(&'static str, u64)>,
    /// Frames from a replica with another cluster or replica id.
    pub frames_rejected: u64,
}

/// One peer in [`ReplicasView`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerView {
    /// Its replica id.
    pub id: u8,
    /// Its configured address.
    pub addr: String,
    /// `connected`, `connecting`, `backoff` or `refused`.
    pub state: &'static str,
    /// `dial` or `accept`.
    pub direction: &'static str,
    /// When it entered `state`, in ms since the Unix epoch.
    pub since_unix_ms: u64,
    /// Frames received on the live connection.
    pub frames_in: u64,
    /// Frames sent on the live connection.
    pub frames_out: u64,
    /// Bytes received on the live connection.
    pub bytes_in: u64,
    /// Bytes sent on the live connection.
    pub bytes_out: u64,
    /// Why the last attempt or connection ended.
    pub last_error: Option<String>,
}

impl ReplicasView {
    /// A view of node `self_id` of `cluster` with these peers and no
    /// counters yet.
    pub fn new(self_id: u8, cluster: u128, peers: Vec<PeerView>) -> Self {
        Self {
            self_id,
            cluster,
            peers,
            dials: 0,
            reconnects: 0,
            handshakes: 0,
            handshake_failures: Vec::new(),
            frames_rejected: 0,
        }
    }
}

impl PeerView {
    /// A peer with no live connection counters yet.
    pub fn new(
        id: u8,
        addr: String,
        state: &'static str,
        direction: &'static str,
        since_unix_ms: u64,
    ) -> Self {
        Self {
            id,
            addr,
            state,
            direction,
            since_unix_ms,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            last_error: None,
        }
    }
}

#[derive(Serialize)]
struct Replicaz<'a> {
    self_id: u8,
    cluster: String,
    peers: Vec<PeerJson<'a>>,
}

#[derive(Serialize)]
struct PeerJson<'a> {
    id: u8,
    addr: &'a str,
    state: &'static str,
    direction: &'static str,
    since: u64,
    frames_in: u64,
    frames_out: u64,
    last_error: Option<&'a str>,
}

/// Renders `/replicaz`.
pub fn render_replicaz(view: &ReplicasView) -> String {
    let body = Replicaz {
        self_id: view.self_id,
        cluster: format!("{:#x}", view.cluster),
        peers: view
            .peers
            .iter()
            .map(|p| PeerJson {
                id: p.id,
                addr: &p.addr,
                state: p.state,
                direction: p.direction,
                since: p.since_unix_ms,
                frames_in: p.frames_in,
                frames_out: p.frames_out,
                last_error: p.last_error.as_deref(),
            })
            .collect(),
    };
    let mut json =
        serde_json::to_string_pretty(&body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    json.push('\n');
    json
}

/// Appends the `bus_replica_*` series to a `/metrics` answer.
pub fn render_metrics(out: &mut String, view: &ReplicasView) {
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP bus_replica_{name} {help}");
        let _ = writeln!(out, "# TYPE bus_replica_{name} {kind}");
    };
    let connected = view.peers.iter().filter(|p| p.state == "connected").count();
    family(out, "peers", "gauge", "Configured replica peers.");
    let _ = writeln!(out, "bus_replica_peers {}", view.peers.len());
    family(
        out,
        "peers_connected",
        "gauge",
        "Replica peers with a live authenticated link.",
    );
    let _ = writeln!(out, "bus_replica_peers_connected {connected}");
    family(
        out,
        "peer_up",
        "gauge",
        "1 while the link with the peer is up, else 0.",
    );
    for p in &view.peers {
        let up = u8::from(p.state == "connected");
        let _ = writeln!(
            out,
            "bus_replica_peer_up{{peer=\"{}\",direction=\"{}\"}} {up}",
            p.id, p.direction
        );
    }
    for (name, help, value) in [
        ("dials_total", "Dials to replica peers.", view.dials),
        (
            "reconnects_total",
            "Dials after a failed dial, a refusal or a lost link.",
            view.reconnects,
        ),
        (
            "handshakes_total",
            "Replica handshakes that authenticated a link (both directions).",
            view.handshakes,
        ),
        (
            "frames_rejected_total",
            "Frames from a replica carrying another cluster or replica id (link closed).",
            view.frames_rejected,
        ),
    ] {
        family(out, name, "counter", help);
        let _ = writeln!(out, "bus_replica_{name} {value}");
    }
    family(
        out,
        "handshake_failures_total",
        "counter",
        "Replica handshakes refused or failed, by reason (both directions).",
    );
    for (reason, count) in &view.handshake_failures {
        let _ = writeln!(
            out,
            "bus_replica_handshake_failures_total{{reason=\"{reason}\"}} {count}"
        );
    }
    for (name, help, get) in [
        (
            "frames_in_total",
            "Frames received from the peer on its live link.",
            (|p| p.frames_in) as fn(&PeerView) -> u64,
        ),
        (
            "frames_out_total",
            "Frames sent to the peer on its live link.",
            |p| p.frames_out,
        ),
        (
            "bytes_in_total",
            "Bytes received from the peer on its live link.",
            |p| p.bytes_in,
        ),
        (
            "bytes_out_total",
            "Bytes sent to the peer on its live link.",
            |p| p.bytes_out,
        ),
    ] {
        family(out, name, "counter", help);
        for p in &view.peers {
            let _ = writeln!(out, "bus_replica_{name}{{peer=\"{}\"}} {}", p.id, get(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ReplicasView {
        let mut up = PeerView::new(1, "127.0.0.1:7175".into(), "connected", "dial", 1000);
        up.frames_in = 5;
        up.frames_out = 6;
        let mut down = PeerView::new(2, "127.0.0.1:7275".into(), "refused", "dial", 2000);
        down.last_error = Some("refused with status 2".into());
        let mut view = ReplicasView::new(0, 0x2a, vec![up, down]);
        view.handshake_failures = vec![("wrong_cluster", 3), ("bad_mac", 0)];
        view
    }

    #[test]
    fn replicaz_has_exactly_the_documented_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&render_replicaz(&view())).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "self_id": 0,
                "cluster": "0x2a",
                "peers": [
                    {"id": 1, "addr": "127.0.0.1:7175", "state": "connected", "direction": "dial",
                     "since": 1000, "frames_in": 5, "frames_out": 6, "last_error": null},
                    {"id": 2, "addr": "127.0.0.1:7275", "state": "refused", "direction": "dial",
                     "since": 2000, "frames_in": 0, "frames_out": 0,
                     "last_error": "refused with status 2"},
                ]
            })
        );
    }

    #[test]
    fn metrics_have_the_replica_series() {
        let mut out = String::new();
        render_metrics(&mut out, &view());
        for line in [
            "bus_replica_peers_connected 1\n",
            "bus_replica_peer_up{peer=\"2\",direction=\"dial\"} 0\n",
            "bus_replica_handshake_failures_total{reason=\"wrong_cluster\"} 3\n",
            "bus_replica_frames_in_total{peer=\"1\"} 5\n",
            "# TYPE bus_replica_reconnects_total counter\n",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }
}
