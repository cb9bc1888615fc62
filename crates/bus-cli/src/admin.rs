//! The admin endpoint: a minimal HTTP/1.1 server for operators, off by
//! default (`[admin]`, `--admin ADDR`).
//!
//! | path       | answer |
//! |------------|--------|
//! | `/healthz` | `200 ok` while serving, `503` once shutting down |
//! | `/metrics` | Prometheus text format 0.0.4: connections by transport and shard, frames and bytes in/out, queue-full and drops, Goodbyes by reason, handshake failures, panics |
//! | `/connz`   | JSON: every connection with its metadata and counters |
//! | `/replicaz` | JSON: the replica mesh, every peer's state (see [`crate::replicaz`]); 404 when the node is in no mesh |
//! | `/stats`   | compact JSON: counters per shard and in total, connections per transport, the replica mesh when there is one ([`dashboard`]) |
//! | `/dashboard` | the live dashboard: a page polling `/stats` (`dashboard.html`) |
//! | `/`, `/demo` | the demo page: a chat over the node's WebSocket listener (`demo.html`) |
//! | `/demo/config.json` | JSON: where the demo page finds the WebSocket listener |
//!
//! Only `GET` (and `HEAD`), one request per connection (`Connection:
//! close`). Everything is bounded: the request head (8 KiB), the time to
//! read it ([`HEADER_TIMEOUT`], 1.5 s: an idle connection is cut) and to
//! write the answer (5 s), and the connections served at once (64; when all
//! are taken, a new one evicts the oldest still waiting for its request, so
//! idle connections cannot blind the endpoint). `/healthz`, `/metrics` and
//! `/connz` keep answering through the shutdown grace (`/healthz` with
//! `503 shutting down`). It reads every shard's counters
//! and connections through [`StatsSource`], on a blocking helper thread
//! (the shards answer within `bus_shard`'s `STATS_TIMEOUT`, 5 s).

use std::{
    borrow::Cow,
    cell::{Cell, RefCell},
    collections::VecDeque,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant, UNIX_EPOCH},
};

use bus_core::{BusStats, ConnectionSnapshot, GOODBYE_REASONS, GoodbyeReason, Peer, TransportKind};
use bus_shard::ShardStats;
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::{JoinHandle, time},
};
use futures_util::future::{AbortHandle, abortable};
use serde::Serialize;

use crate::{
    Error,
    dashboard::{self, ReplicaView},
    replicaz::{self, ReplicasView},
    transports,
};

/// Largest request head accepted.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 << 10;
/// Bound on writing an answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on receiving a request head: an idle admin connection is cut
/// (with `408`) after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);
/// Most admin connections served at once. When all are taken, a new one
/// evicts the oldest that is still waiting for its request head; only when
/// every one is already answering is the new one closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The demo page: one static HTML file with inline JavaScript that speaks
/// `bus.v1` over the node's WebSocket listener (spec §1, §7, §8).
pub const DEMO_PAGE: &str = include_str!("demo.html");

/// Where the demo page connects: the node's plain WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoTarget {
    /// The WS listener's bound address. An unspecified IP (`0.0.0.0`,
    /// `::`) makes the page use the host it was loaded from.
    pub addr: SocketAddr,
    /// The HTTP path of the upgrade request (`[ws] path`).
    pub path: String,
}

impl DemoTarget {
    /// The WS listener at `addr`, upgrading on `path`.
    pub fn new(addr: SocketAddr, path: impl Into<String>) -> Self {
        Self {
            addr,
            path: path.into(),
        }
    }
}

/// One shard's counters and connections, as the admin endpoint shows them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardView {
    /// The shard index.
    pub shard: u16,
    /// Its bus counters.
    pub stats: BusStats,
    /// Its shard-layer counters (inbox, forwarding, hand-overs), when it
    /// runs under `bus-shard`.
    pub layer: Option<ShardStats>,
    /// Its live connections.
    pub connections: Vec<ConnectionSnapshot>,
}

impl ShardView {
    /// The view of one shard of the shard layer.
    pub fn new(stats: ShardStats, connections: Vec<ConnectionSnapshot>) -> Self {
        Self {
            shard: stats.shard,
            stats: stats.bus,
            layer: Some(stats),
            connections,
        }
    }

    /// The view of a bus that is not part of the shard layer.
    pub fn of_bus(shard: u16, stats: BusStats, connections: Vec<ConnectionSnapshot>) -> Self {
        Self {
            shard,
            stats,
            layer: None,
            connections,
        }
    }
}

/// Where the admin endpoint reads the node's state from. Called on a
/// blocking helper thread, so it may block (boundedly).
pub trait StatsSource: Send + Sync + 'static {
    /// A view of every shard, now; or why it could not be had (answered
    /// with `503`).
    fn shards(&self) -> Result<Vec<ShardView>, String>;
    /// Whether the node is shutting down.
    fn is_shutting_down(&self) -> bool;
    /// The replica mesh now, when the node is in one (`/replicaz`, and the
    /// `bus_replica_*` series of `/metrics`).
    fn replicaz(&self) -> Result<Option<ReplicasView>, String> {
        Ok(None)
    }
    /// The replica mesh as this node sees it, for `/stats` and the
    /// dashboard; `None` (the default) when the node has no replica plane.
    fn replicas(&self) -> Option<Vec<ReplicaView>> {
        None
    }
    /// The node's admission control (`max_connections`, every listener's
    /// refusals), for `/metrics`; `None` (the default) when it has none.
    fn admission(&self) -> Option<bus_core::Admission> {
        None
    }
}

/// Facts about the node shown in `bus_info`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `bus` version.
    pub version: &'static str,
    /// The compio I/O driver (`IoUring`, `Poll`, ...).
    pub driver: String,
}

/// What one admin connection needs to answer.
struct Context {
    source: Arc<dyn StatsSource>,
    info: NodeInfo,
    demo: Option<DemoTarget>,
    /// When the endpoint started: `/stats`' `uptime_ms`.
    started: Instant,
}

/// A running admin endpoint; dropping it stops accepting.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    _accept: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `listen` and serves on this thread's compio runtime. `demo`
    /// is the WebSocket listener the demo page connects to; `None` when WS
    /// is off (the page then says how to turn it on).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it resolves closes the
    /// listener, if it was bound, and serves nothing.
    pub async fn start(
        source: Arc<dyn StatsSource>,
        listen: SocketAddr,
        info: NodeInfo,
        demo: Option<DemoTarget>,
    ) -> Result<Self, Error> {
        let bind_error = |e: std::io::Error| Error::Bind {
            what: "admin".into(),
            addr: listen,
            message: e.to_string(),
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let context = Arc::new(Context {
            source,
            info,
            demo,
            started: Instant::now(),
        });
        let accept = compio::runtime::spawn(accept_loop(listener, context));
        Ok(Self {
            addr,
            _accept: accept,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One admin connection holding a slot, oldest first.
struct Slot {
    id: u64,
    abort: AbortHandle,
    /// Still waiting for its request head (so it may be evicted).
    waiting: Rc<Cell<bool>>,
}

/// The admin connections holding a slot.
#[derive(Default)]
struct Slots {
    next_id: u64,
    held: VecDeque<Slot>,
}

impl Slots {
    /// Whether a new connection may have a slot: one is free, or the
    /// oldest connection still waiting for its request head is evicted
    /// (its task ends at its next poll, closing its socket).
    fn make_room(&mut self) -> bool {
        if self.held.len() < MAX_CONNECTIONS {
            return true;
        }
        let Some(oldest) = self.held.iter().position(|s| s.waiting.get()) else {
            return false;
        };
        if let Some(slot) = self.held.remove(oldest) {
            slot.abort.abort();
        }
        true
    }

    fn release(&mut self, id: u64) {
        if let Some(at) = self.held.iter().position(|s| s.id == id) {
            self.held.remove(at);
        }
    }
}

async fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    let slots = Rc::new(RefCell::new(Slots::default()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                bus_core::admission::accept_failed(&err).await;
                continue;
            }
        };
        if !slots.borrow_mut().make_room() {
            continue; // dropping the stream closes it
        }
        let waiting = Rc::new(Cell::new(true));
        let (task, abort) = abortable(serve_connection(stream, context.clone(), waiting.clone()));
        let id = {
            let mut slots = slots.borrow_mut();
            let id = slots.next_id;
            slots.next_id += 1;
            slots.held.push_back(Slot { id, abort, waiting });
            id
        };
        let slots = slots.clone();
        compio::runtime::spawn(async move {
            let _done = scopeguard::guard(slots, |slots| slots.borrow_mut().release(id));
            let _ = task.await;
        })
        .detach();
    }
}

async fn serve_connection(mut stream: TcpStream, context: Arc<Context>, waiting: Rc<Cell<bool>>) {
    let head = time::timeout(HEADER_TIMEOUT, read_head(&mut stream)).await;
    // Answering now: no longer evicted for a newer connection.
    waiting.set(false);
    let response = match head {
        // Reading the shards blocks (boundedly): not on this runtime.
        Ok(Ok(request)) => compio::runtime::spawn_blocking(move || respond(&request, &context))
            .await
            .unwrap_or_else(|_| {
                Response::text(500, "Internal Server Error", "the answer panicked\n")
            }),
        Ok(Err(response)) => response,
        Err(_) => Response::text(408, "Request Timeout", "request not received in time\n"),
    };
    let bytes = response.into_bytes();
    let _ = time::timeout(IO_TIMEOUT, async {
        let BufResult(res, _) = stream.write_all(bytes).await;
        if res.is_ok() {
            let _ = compio::io::AsyncWrite::shutdown(&mut stream).await;
        }
    })
    .await;
}

/// Reads up to the end of the request head and parses it.
async fn read_head(stream: &mut TcpStream) -> Result<Request, Response> {
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk: Vec<u8> = Vec::with_capacity(2048);
    loop {
        match parse_request(&head) {
            RequestHead::Request(request) => return Ok(request),
            RequestHead::Refused(refusal) => {
                return Err(Response::text(refusal.status, refusal.reason, refusal.body));
            }
            RequestHead::Incomplete => {}
        }
        chunk.clear();
        let BufResult(res, returned) = stream.read(chunk).await;
        chunk = returned;
        match res {
            Ok(0) | Err(_) => {
                return Err(Response::text(400, "Bad Request", "incomplete request\n"));
            }
            Ok(_) => head.extend_from_slice(&chunk),
        }
    }
}

/// What the bytes received so far of an admin request say (pure; the
/// fuzz target `admin_request` drives it).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHead {
    /// No end of head yet and under [`MAX_REQUEST_HEAD_BYTES`]: read more.
    Incomplete,
    /// A `GET` or `HEAD` request for a path.
    Request(Request),
    /// Answered with an error status, without routing.
    Refused(Refusal),
}

/// A request the admin endpoint routes.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The target without its query string.
    pub path: String,
    /// `HEAD`: answer without a body.
    pub head_only: bool,
}

/// A request refused before routing.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub status: u16,
    /// HTTP reason phrase.
    pub reason: &'static str,
    /// The short text body.
    pub body: &'static str,
}

impl Refusal {
    const fn head(status: u16, reason: &'static str, body: &'static str) -> RequestHead {
        RequestHead::Refused(Self {
            status,
            reason,
            body,
        })
    }
}

/// Parses the bytes received so far of one admin request: its head ends at
/// the first empty line, is at most [`MAX_REQUEST_HEAD_BYTES`] long before
/// that line is found, is UTF-8, and starts with `METHOD TARGET HTTP/1.x`.
#[doc(hidden)]
pub fn parse_request(buf: &[u8]) -> RequestHead {
    let Some(end) = find_head_end(buf) else {
        if buf.len() >= MAX_REQUEST_HEAD_BYTES {
            return Refusal::head(
                431,
                "Request Header Fields Too Large",
                "request head over 8 KiB\n",
            );
        }
        return RequestHead::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Refusal::head(400, "Bad Request", "request head is not UTF-8\n");
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Refusal::head(400, "Bad Request", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Refusal::head(505, "HTTP Version Not Supported", "HTTP/1.x only\n");
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Refusal::head(405, "Method Not Allowed", "GET or HEAD only\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    RequestHead::Request(Request {
        path: path.to_owned(),
        head_only,
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// An HTTP answer.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Cow<'static, str>,
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: Cow::Owned(body.to_owned()),
            head_only: false,
        }
    }

    fn with_body(content_type: &'static str, body: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: 200,
            reason: "OK",
            content_type,
            body: body.into(),
            head_only: false,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Routes one request to its answer.
fn respond(request: &Request, context: &Context) -> Response {
    let source = &*context.source;
    let path = request.path.as_str();
    let head_only = request.head_only;
    let mut response = match path {
        "/healthz" if source.is_shutting_down() => {
            Response::text(503, "Service Unavailable", "shutting down\n")
        }
        "/healthz" => Response::text(200, "OK", "ok\n"),
        "/metrics" | "/connz" | "/stats" => match source.shards() {
            Ok(shards) if path == "/metrics" => {
                let mut text = render_metrics(&shards, &context.info);
                if let Some(admission) = source.admission() {
                    render_admission(&mut text, &admission);
                }
                if let Ok(Some(view)) = source.replicaz() {
                    replicaz::render_metrics(&mut text, &view);
                }
                Response::with_body("text/plain; version=0.0.4; charset=utf-8", text)
            }
            Ok(shards) if path == "/stats" => Response::with_body(
                "application/json",
                dashboard::render_stats(&shards, &context.info, context.started.elapsed(), source),
            ),
            Ok(shards) => Response::with_body("application/json", render_connz(&shards)),
            Err(err) => Response::text(
                503,
                "Service Unavailable",
                &format!("cannot read the shards: {err}\n"),
            ),
        },
        "/replicaz" => match source.replicaz() {
            Ok(Some(view)) => {
                Response::with_body("application/json", replicaz::render_replicaz(&view))
            }
            Ok(None) => Response::text(
                404,
                "Not Found",
                "this node is in no replica mesh ([replicas] enabled = false)\n",
            ),
            Err(err) => Response::text(
                503,
                "Service Unavailable",
                &format!("cannot read the replica mesh: {err}\n"),
            ),
        },
        "/" | "/demo" => Response::with_body("text/html; charset=utf-8", DEMO_PAGE),
        "/dashboard" => Response::with_body("text/html; charset=utf-8", dashboard::PAGE),
        "/demo/config.json" => Response::with_body(
            "application/json",
            render_demo_config(context.demo.as_ref()),
        ),
        _ => Response::text(
            404,
            "Not Found",
            "try / (demo page), /dashboard, /healthz, /metrics, /connz, /stats or /replicaz\n",
        ),
    };
    response.head_only = head_only;
    response
}

/// The `bus_admission_*` and `bus_connections_refused_total` series.
pub fn render_admission(out: &mut String, admission: &bus_core::Admission) {
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP bus_{name} {help}");
        let _ = writeln!(out, "# TYPE bus_{name} {kind}");
    };
    family(
        out,
        "admission_live_connections",
        "gauge",
        "Client connections holding a slot of max_connections (handshaking or established), node-wide.",
    );
    let _ = writeln!(out, "bus_admission_live_connections {}", admission.live());
    family(
        out,
        "admission_max_connections",
        "gauge",
        "The node-wide cap on live client connections ([bus] max_connections).",
    );
    let _ = writeln!(
        out,
        "bus_admission_max_connections {}",
        admission.max_connections()
    );
    let listeners = admission.listeners();
    let label = |g: &bus_core::GateStats| {
        let transport = g.kind.map_or("unknown", TransportKind::as_str);
        format!("transport=\"{transport}\",listener=\"{}\"", g.addr)
    };
    family(
        out,
        "connections_refused_total",
        "counter",
        "Connections refused right after accept, by listener and by the cap that refused them.",
    );
    for g in &listeners {
        let label = label(g);
        let _ = writeln!(
            out,
            "bus_connections_refused_total{{{label},cap=\"max_connections\"}} {}",
            g.refused_connections
        );
        let _ = writeln!(
            out,
            "bus_connections_refused_total{{{label},cap=\"max_handshakes\"}} {}",
            g.refused_handshakes
        );
        let _ = writeln!(
            out,
            "bus_connections_refused_total{{{label},cap=\"descriptors\"}} {}",
            g.refused_descriptors
        );
    }
    family(
        out,
        "handshakes_in_flight",
        "gauge",
        "Connections of a listener between admission and the end of their handshake.",
    );
    for g in &listeners {
        let _ = writeln!(
            out,
            "bus_handshakes_in_flight{{{}}} {}",
            label(g),
            g.handshaking
        );
    }
}

/// `/demo/config.json`: `{"ws": null}` when the node has no WS listener.
#[derive(Serialize)]
struct DemoConfig<'a> {
    ws: Option<DemoWs<'a>>,
}

#[derive(Serialize)]
struct DemoWs<'a> {
    /// The listener's host for a URL (`[::1]` bracketed), or `null` when it
    /// listens on every address: the page then uses its own host.
    host: Option<String>,
    port: u16,
    path: &'a str,
}

/// Renders `/demo/config.json`.
fn render_demo_config(demo: Option<&DemoTarget>) -> String {
    let config = DemoConfig {
        ws: demo.map(|d| DemoWs {
            host: match d.addr.ip() {
                ip if ip.is_unspecified() => None,
                IpAddr::V4(v4) => Some(v4.to_string()),
                IpAddr::V6(v6) => Some(format!("[{v6}]")),
            },
            port: d.addr.port(),
            path: &d.path,
        }),
    };
    let mut json =
        serde_json::to_string(&config).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    json.push('\n');
    json
}

/// Every Goodbye reason with a counter slot, in code order.
const REASONS: [GoodbyeReason; GOODBYE_REASONS] = [
    GoodbyeReason::Normal,
    GoodbyeReason::ShuttingDown,
    GoodbyeReason::FrameTooLarge,
    GoodbyeReason::MalformedFrame,
    GoodbyeReason::ChecksumMismatch,
    GoodbyeReason::IdleTimeout,
    GoodbyeReason::SlowConsumer,
    GoodbyeReason::HandshakeFailed,
    GoodbyeReason::ProtocolViolation,
    GoodbyeReason::Evicted,
];

/// The shard counters exported as `bus_<name>_total`, with their help text.
type CounterField = (&'static str, &'static str, fn(&BusStats) -> u64);

const COUNTERS: [CounterField; 15] = [
    (
        "connections_accepted",
        "Connections accepted or installed.",
        |s| s.connections_total,
    ),
    (
        "handshake_failures",
        "Connections whose transport handshake failed or timed out.",
        |s| s.handshake_failures,
    ),
    ("frames_in", "Frames received.", |s| s.frames_in),
    ("bytes_in", "Bytes received (whole frames).", |s| s.bytes_in),
    ("frames_out", "Frames written.", |s| s.frames_out),
    ("bytes_out", "Bytes written.", |s| s.bytes_out),
    (
        "write_batches",
        "Writes issued (frames_out / write_batches is the average batch).",
        |s| s.write_batches,
    ),
    (
        "queue_full",
        "Sends refused because the connection's outbound queue was full.",
        |s| s.queue_full,
    ),
    (
        "frames_dropped",
        "Queued frames dropped when their connection closed without flushing.",
        |s| s.frames_dropped,
    ),
    ("handler_panics", "Handler calls that panicked.", |s| {
        s.handler_panics
    }),
    (
        "connection_panics",
        "Connection tasks that panicked outside the handler.",
        |s| s.connection_panics,
    ),
    (
        "requests_replied",
        "Requests from the node (spec §9) completed by the peer's reply.",
        |s| s.requests.replied,
    ),
    (
        "requests_timed_out",
        "Requests from the node that gave up at their timeout.",
        |s| s.requests.timed_out,
    ),
    (
        "requests_disconnected",
        "Requests from the node failed because their connection closed first.",
        |s| s.requests.disconnected,
    ),
    (
        "requests_late_replies",
        "Replies that came after their request had given up (dropped).",
        |s| s.requests.late_replies,
    ),
];

/// `bus_requests_outstanding`: requests from the node waiting for their
/// reply, per shard.
fn render_requests_outstanding(out: &mut String, shards: &[ShardView]) {
    let _ = writeln!(
        out,
        "# HELP bus_requests_outstanding Requests from the node (spec §9) waiting for their reply."
    );
    let _ = writeln!(out, "# TYPE bus_requests_outstanding gauge");
    for view in shards {
        let _ = writeln!(
            out,
            "bus_requests_outstanding{{shard=\"{}\"}} {}",
            view.shard, view.stats.requests.outstanding
        );
    }
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render_metrics(shards: &[ShardView], info: &NodeInfo) -> String {
    let mut out = String::with_capacity(4096);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP bus_{name} {help}");
        let _ = writeln!(out, "# TYPE bus_{name} {kind}");
    };
    family(
        &mut out,
        "info",
        "gauge",
        "Node build and runtime facts; always 1.",
    );
    let _ = writeln!(
        out,
        "bus_info{{version=\"{}\",driver=\"{}\"}} 1",
        info.version, info.driver
    );
    family(
        &mut out,
        "connections",
        "gauge",
        "Live connections by transport and shard.",
    );
    for view in shards {
        for kind in transports::ALL {
            let count = view
                .connections
                .iter()
                .filter(|c| c.info.transport == kind)
                .count();
            let _ = writeln!(
                out,
                "bus_connections{{shard=\"{}\",transport=\"{}\"}} {count}",
                view.shard,
                kind.as_str()
            );
        }
    }
    render_requests_outstanding(&mut out, shards);
    for (name, help, get) in COUNTERS {
        family(&mut out, &format!("{name}_total"), "counter", help);
        for view in shards {
            let _ = writeln!(
                out,
                "bus_{name}_total{{shard=\"{}\"}} {}",
                view.shard,
                get(&view.stats)
            );
        }
    }
    family(
        &mut out,
        "goodbyes_sent_total",
        "counter",
        "Goodbyes sent, by reason.",
    );
    for view in shards {
        for (reason, count) in REASONS.iter().zip(view.stats.goodbyes_sent) {
            let _ = writeln!(
                out,
                "bus_goodbyes_sent_total{{shard=\"{}\",reason=\"{reason}\"}} {count}",
                view.shard
            );
        }
    }
    family(
        &mut out,
        "tasks",
        "gauge",
        "Live background tasks of the bus.",
    );
    for view in shards {
        let _ = writeln!(
            out,
            "bus_tasks{{shard=\"{}\"}} {}",
            view.shard, view.stats.tasks
        );
    }
    for (name, kind, help, get) in LAYER {
        if shards.iter().all(|view| view.layer.is_none()) {
            break;
        }
        family(&mut out, name, kind, help);
        for view in shards {
            if let Some(layer) = &view.layer {
                let _ = writeln!(out, "bus_{name}{{shard=\"{}\"}} {}", view.shard, get(layer));
            }
        }
    }
    #[cfg(feature = "quic")]
    render_quic_totals(&mut out);
    out
}

/// The QUIC listeners' admission counters, summed over the process (the
/// listeners live on their shards; see `bus_quic::totals`).
#[cfg(feature = "quic")]
fn render_quic_totals(out: &mut String) {
    let totals = bus_quic::totals();
    for (name, help, value) in [
        (
            "quic_retries_total",
            "QUIC connection attempts from unvalidated addresses answered with a Retry.",
            totals.retries,
        ),
        (
            "quic_refused_total",
            "QUIC connection attempts refused by max_connections or max_handshakes.",
            totals.refused,
        ),
    ] {
        let _ = writeln!(out, "# HELP bus_{name} {help}");
        let _ = writeln!(out, "# TYPE bus_{name} counter");
        let _ = writeln!(out, "bus_{name} {value}");
    }
}

/// The shard layer's metrics: name, type, help, value.
type LayerField = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStats) -> u64,
);

const LAYER: [LayerField; 8] = [
    (
        "shard_inbox_depth",
        "gauge",
        "Frames waiting in the shard's cross-shard inbox.",
        |s| u64::try_from(s.inbox_depth).unwrap_or(u64::MAX),
    ),
    (
        "shard_inbox_full_total",
        "counter",
        "Sends to the shard refused because its inbox was full.",
        |s| s.inbox_full,
    ),
    (
        "shard_inbox_undeliverable_total",
        "counter",
        "Forwarded sends that reached the shard but could not be queued.",
        |s| s.inbox_undeliverable,
    ),
    (
        "shard_forwarded_total",
        "counter",
        "Sends and broadcasts from the shard's handlers forwarded to other shards.",
        |s| s.forwarded,
    ),
    (
        "shard_handoffs_in_total",
        "counter",
        "Connections handed to the shard by shard 0.",
        |s| s.handoffs_in,
    ),
    (
        "shard_handoffs_refused_total",
        "counter",
        "Accepted connections shard 0 could not hand over (closed).",
        |s| s.handoffs_refused,
    ),
    (
        "shard_handoff_failures_total",
        "counter",
        "Handed-over sockets the transport could not wrap.",
        |s| s.handoff_failures,
    ),
    (
        "shard_pending_connections",
        "gauge",
        "Connections in hand-over or handshake on the shard.",
        |s| u64::try_from(s.pending_connections).unwrap_or(u64::MAX),
    ),
];

#[derive(Serialize)]
struct Connz {
    connections: usize,
    shards: Vec<ShardConnz>,
}

#[derive(Serialize)]
struct ShardConnz {
    shard: u16,
    connections: Vec<ConnectionEntry>,
}

#[derive(Serialize)]
struct ConnectionEntry {
    /// `"client"` or `"replica"`.
    kind: &'static str,
    /// Client id (hex) or replica id.
    id: String,
    transport: &'static str,
    peer_addr: String,
    connected_since_unix_ms: u128,
    identity: Option<String>,
    closing: bool,
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    write_batches: u64,
    queue_full: u64,
    queue_depth: usize,
}

fn transport_name(kind: TransportKind) -> &'static str {
    kind.as_str()
}

/// Renders `/connz`.
pub fn render_connz(shards: &[ShardView]) -> String {
    let shards: Vec<ShardConnz> = shards
        .iter()
        .map(|view| ShardConnz {
            shard: view.shard,
            connections: view
                .connections
                .iter()
                .map(|c| {
                    let (kind, id) = match c.peer {
                        Peer::Client(id) => ("client", format!("{:#x}", id.as_raw())),
                        Peer::Replica(r) => ("replica", r.to_string()),
                    };
                    ConnectionEntry {
                        kind,
                        id,
                        transport: transport_name(c.info.transport),
                        peer_addr: c.info.peer_addr.to_string(),
                        connected_since_unix_ms: c
                            .info
                            .connected_since
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis()),
                        identity: c.info.identity.clone(),
                        closing: c.closing,
                        frames_in: c.stats.frames_in,
                        bytes_in: c.stats.bytes_in,
                        frames_out: c.stats.frames_out,
                        bytes_out: c.stats.bytes_out,
                        write_batches: c.stats.write_batches,
                        queue_full: c.stats.queue_full,
                        queue_depth: c.stats.queue_depth,
                    }
                })
                .collect(),
        })
        .collect();
    let connz = Connz {
        connections: shards.iter().map(|s| s.connections.len()).sum(),
        shards,
    };
    let mut json =
        serde_json::to_string_pretty(&connz).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<ShardView>);

    impl StatsSource for Fixed {
        fn shards(&self) -> Result<Vec<ShardView>, String> {
            Ok(self.0.clone())
        }
        fn is_shutting_down(&self) -> bool {
            false
        }
    }

    fn info() -> NodeInfo {
        NodeInfo {
            version: "0.1.0",
            driver: "IoUring".into(),
        }
    }

    fn context(demo: Option<DemoTarget>) -> Context {
        Context {
            source: Arc::new(Fixed(vec![ShardView::of_bus(
                0,
                BusStats::default(),
                Vec::new(),
            )])),
            info: info(),
            demo,
            started: Instant::now(),
        }
    }

    #[test]
    fn serves_the_demo_page_and_where_it_connects() {
        let demo = DemoTarget::new("127.0.0.1:7072".parse().expect("addr"), "/bus");
        let context = context(Some(demo));
        for path in ["/", "/demo", "/?ws=ws://[::1]:1/bus"] {
            let page = respond_line(&format!("GET {path} HTTP/1.1"), &context);
            assert_eq!(page.status, 200, "{path}");
            assert_eq!(page.content_type, "text/html; charset=utf-8");
            assert_eq!(page.body, DEMO_PAGE);
        }
        let config = respond_line("GET /demo/config.json HTTP/1.1", &context);
        assert_eq!(config.content_type, "application/json");
        assert_eq!(
            config.body,
            "{\"ws\":{\"host\":\"127.0.0.1\",\"port\":7072,\"path\":\"/bus\"}}\n"
        );
    }

    #[test]
    fn demo_config_brackets_ipv6_and_leaves_wildcards_to_the_page() {
        let v6 = DemoTarget::new("[::1]:9".parse().expect("addr"), "/x");
        assert_eq!(
            render_demo_config(Some(&v6)),
            "{\"ws\":{\"host\":\"[::1]\",\"port\":9,\"path\":\"/x\"}}\n"
        );
        let any = DemoTarget::new("0.0.0.0:9".parse().expect("addr"), "/bus");
        assert_eq!(
            render_demo_config(Some(&any)),
            "{\"ws\":{\"host\":null,\"port\":9,\"path\":\"/bus\"}}\n"
        );
        assert_eq!(render_demo_config(None), "{\"ws\":null}\n");
    }

    #[test]
    fn routes_and_refuses() {
        let context = context(None);
        let get = |line: &str| respond_line(line, &context);
        assert_eq!(get("GET /healthz HTTP/1.1\r\nHost: x").status, 200);
        assert_eq!(get("GET /metrics?x=1 HTTP/1.1").status, 200);
        assert_eq!(get("GET /connz HTTP/1.0").status, 200);
        let stats = get("GET /stats HTTP/1.1");
        assert_eq!(
            (stats.status, stats.content_type),
            (200, "application/json")
        );
        let dashboard = get("GET /dashboard HTTP/1.1");
        assert_eq!(dashboard.content_type, "text/html; charset=utf-8");
        assert_eq!(dashboard.body, dashboard::PAGE);
        assert_eq!(get("GET /nope HTTP/1.1").status, 404);
        assert_eq!(get("POST /metrics HTTP/1.1").status, 405);
        assert_eq!(get("GET /metrics SPDY/3").status, 505);
        assert_eq!(get("garbage").status, 400);
        assert!(
            get("HEAD /healthz HTTP/1.1")
                .into_bytes()
                .ends_with(b"\r\n\r\n")
        );
    }

    #[test]
    fn metrics_have_help_type_and_every_transport() {
        let mut stats = BusStats::default();
        stats.frames_in = 7;
        stats.goodbyes_sent[1] = 3;
        let text = render_metrics(&[ShardView::of_bus(0, stats, Vec::new())], &info());
        assert!(
            text.contains(
                "# TYPE bus_frames_in_total counter\nbus_frames_in_total{shard=\"0\"} 7\n"
            )
        );
        assert!(text.contains("bus_goodbyes_sent_total{shard=\"0\",reason=\"ShuttingDown\"} 3\n"));
        for kind in ["tcp", "tls", "ws", "wss", "quic"] {
            assert!(text.contains(&format!(
                "bus_connections{{shard=\"0\",transport=\"{kind}\"}} 0\n"
            )));
        }
        #[cfg(feature = "quic")]
        for name in ["quic_retries_total", "quic_refused_total"] {
            assert!(text.contains(&format!("# TYPE bus_{name} counter\nbus_{name} ")));
        }
    }

    /// What the endpoint answers to a request whose head is `head`.
    fn respond_line(head: &str, context: &Context) -> Response {
        match parse_request(format!("{head}\r\n\r\n").as_bytes()) {
            RequestHead::Request(request) => respond(&request, context),
            RequestHead::Refused(r) => Response::text(r.status, r.reason, r.body),
            RequestHead::Incomplete => panic!("a complete head parsed as incomplete"),
        }
    }

    #[test]
    fn request_heads_are_parsed_or_refused() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n"),
            RequestHead::Incomplete
        );
        let big = vec![b'a'; MAX_REQUEST_HEAD_BYTES];
        assert!(matches!(
            parse_request(&big),
            RequestHead::Refused(Refusal { status: 431, .. })
        ));
        assert!(matches!(
            parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"),
            RequestHead::Refused(Refusal { status: 400, .. })
        ));
        assert_eq!(
            parse_request(b"HEAD /metrics?a=b HTTP/1.1\r\nHost: x\r\n\r\n"),
            RequestHead::Request(Request {
                path: "/metrics".into(),
                head_only: true
            })
        );
    }

    #[test]
    fn head_end_is_found_only_when_complete() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
