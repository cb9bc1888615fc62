//! The admin endpoint's live dashboard in a real headless Chromium: a node
//! with two shards, traffic from Rust clients over TCP on another thread,
//! a client closed for a protocol violation and a failed TLS handshake. The
//! page's rates move while traffic runs and fall to zero after; once the
//! node is quiet, every number the page shows equals `/stats`. Screenshots
//! (desktop and phone-sized) go to the test's temp dir; on the phone-sized
//! viewport the page does not scroll sideways. The replica mesh section
//! says the node has none, and draws a mesh when given one.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use bus_cli::node::ECHO;
use bus_client::{Client, ClientOptions};
use bus_core::{Command, FrameMut, GoodbyeReason};
use bus_tests::{STEP, pki::unique_dir, within};
use serde_json::{Value, json};

use crate::{
    browser::{Browser, Tab},
    common::{ServeProcess, http_get},
};

/// Bound on the page reaching a state it waits for.
const PAGE_BOUND: Duration = Duration::from_secs(20);
/// Bound on the traffic thread's whole life.
const TRAFFIC_BOUND: Duration = Duration::from_mins(2);
/// Clients sending traffic: more than one per shard on two shards.
const CLIENTS: usize = 3;
/// Body of every traffic frame.
const BODY_BYTES: usize = 1000;
/// The page's state (what `wait_for` shows when it does not get there).
const PAGE_TEXT: &str = "document.body?.dataset.state + '\\n' + document.body?.innerText";

/// JS: what the page shows, as JSON in the shape of [`expected_view`].
/// Counts are read from the text a person sees; byte totals (shown with
/// units) from the exact value the page keeps next to them.
const PAGE_VIEW: &str = r"(() => {
  const number = (el) => Number(el.textContent.replaceAll(',', ''));
  const text = (id) => number(document.getElementById(id));
  const exact = (id) => Number(document.getElementById(id).dataset.value);
  const connections = {};
  for (const row of document.querySelectorAll('#connections tbody tr')) {
    connections[row.dataset.shard] = Object.fromEntries(
      [...row.querySelectorAll('td[data-key]')].map((td) => [td.dataset.key, number(td)]));
  }
  const goodbyes = Object.fromEntries([...document.querySelectorAll('#goodbyes tbody tr')]
    .map((row) => [row.dataset.reason, number(row.querySelector('td[data-key=all]'))]));
  return JSON.stringify({
    connections: text('total-connections'),
    frames_in: text('total-frames-in'),
    frames_out: text('total-frames-out'),
    bytes_in: exact('total-bytes-in'),
    bytes_out: exact('total-bytes-out'),
    queue_full: text('total-queue-full'),
    handshake_failures: text('total-handshake-failures'),
    by_shard: connections,
    goodbyes,
  });
})()";

/// `/stats`, parsed.
fn stats(admin: SocketAddr) -> Value {
    let (status, body) = http_get(admin, "/stats");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/stats is JSON")
}

/// What the page must show for `stats`, in [`PAGE_VIEW`]'s shape.
fn expected_view(stats: &Value) -> Value {
    let transports = ["tcp", "tls", "ws", "wss", "quic"];
    let sum = |connections: &Value| -> u64 {
        transports
            .iter()
            .map(|t| connections[t].as_u64().expect("count"))
            .sum()
    };
    let row = |connections: &Value| {
        let mut row: serde_json::Map<String, Value> = transports
            .iter()
            .map(|&t| (t.to_owned(), connections[t].clone()))
            .collect();
        row.insert("all".into(), json!(sum(connections)));
        Value::Object(row)
    };
    let totals = &stats["totals"];
    let mut by_shard = serde_json::Map::new();
    for shard in stats["shards"].as_array().expect("shards") {
        by_shard.insert(shard["shard"].to_string(), row(&shard["connections"]));
    }
    by_shard.insert("all".into(), row(&totals["connections"]));
    json!({
        "connections": sum(&totals["connections"]),
        "frames_in": totals["frames_in"],
        "frames_out": totals["frames_out"],
        "bytes_in": totals["bytes_in"],
        "bytes_out": totals["bytes_out"],
        "queue_full": totals["queue_full"],
        "handshake_failures": totals["handshake_failures"],
        "by_shard": by_shard,
        "goodbyes": totals["goodbyes_sent"],
    })
}

fn page_view(browser: &mut Browser, tab: &Tab) -> Value {
    let view = browser.evaluate(tab, PAGE_VIEW);
    serde_json::from_str(view.as_str().expect("a JSON string")).expect("page view is JSON")
}

/// What the traffic thread reports.
enum Event {
    /// Every client is connected and has had a reply.
    Connected,
    /// Traffic stopped after this many Echo round trips in all.
    Stopped(u64),
    /// The extra client that sent an unknown command was closed, with this
    /// Goodbye reason.
    Evicted(Option<GoodbyeReason>),
}

/// Rust clients on their own thread and compio runtime: Echo round trips
/// until `stop`, then one client closed for an unknown command; the others
/// stay connected until `quit` (or the bound).
struct Traffic {
    stop: Arc<AtomicBool>,
    events: mpsc::Receiver<Event>,
    quit: mpsc::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let (quit, quit_rx) = mpsc::channel::<()>();
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let runtime = compio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async move {
                let echo = || FrameMut::with_body(Command::from_u8(ECHO), &[7; BODY_BYTES]);
                let mut clients = Vec::new();
                let mut echoes = 0u64;
                for _ in 0..CLIENTS {
                    let client = within("connect", Client::connect(&url, ClientOptions::default()))
                        .await
                        .expect("connect");
                    within("first echo", client.request(echo()))
                        .await
                        .expect("echo");
                    echoes += 1;
                    clients.push(client);
                }
                tx.send(Event::Connected).expect("test alive");
                let deadline = Instant::now() + TRAFFIC_BOUND;
                while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for client in &clients {
                        within("echo", client.request(echo())).await.expect("echo");
                        echoes += 1;
                    }
                }
                tx.send(Event::Stopped(echoes)).expect("test alive");

                // Command 99 is not served: Goodbye(ProtocolViolation).
                let bad = within("connect", Client::connect(&url, ClientOptions::default()))
                    .await
                    .expect("connect");
                bad.send(FrameMut::with_body(Command::from_u8(99), b"?"))
                    .await
                    .expect("send");
                let after = within("the eviction", bad.recv()).await;
                assert!(after.is_none(), "nothing but the Goodbye");
                let reason = bad
                    .wait_connected(Duration::ZERO)
                    .await
                    .err()
                    .and_then(|err| err.goodbye_reason());
                tx.send(Event::Evicted(reason)).expect("test alive");

                // Connected (and counted) until the test has compared.
                let _ = quit_rx.recv_timeout(TRAFFIC_BOUND);
                for client in &clients {
                    client.close().await;
                }
            });
        });
        Self {
            stop,
            events,
            quit,
            thread: Some(thread),
        }
    }

    fn next(&self, what: &str) -> Event {
        self.events
            .recv_timeout(PAGE_BOUND)
            .unwrap_or_else(|err| panic!("traffic thread: no {what} ({err})"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.quit.send(());
        if let Some(thread) = self.thread.take()
            && !thread::panicking()
        {
            // Bounded: every wait in the thread is, and it was told to quit.
            thread.join().expect("traffic thread");
        }
    }
}

/// A TCP client that speaks garbage to the TLS listener: one handshake
/// failure on the node. Returns once the node has closed the socket.
fn fail_a_tls_handshake(tls: SocketAddr) {
    let mut stream = TcpStream::connect_timeout(&tls, STEP).expect("connect tls");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    stream.set_write_timeout(Some(STEP)).expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: not-tls\r\n\r\n")
        .expect("write");
    let mut rest = Vec::new();
    // The node answers with an alert (or resets); either way it closes.
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the node did not close the failed handshake: {err}"),
    }
}

/// JS: the number an element keeps in `data-value`.
fn value_of(id: &str) -> String {
    format!("Number(document.getElementById('{id}').dataset.value)")
}

/// Opens the dashboard (polling every 200 ms) and waits for its first
/// sample; it shows two shards and no replica plane.
fn open_dashboard(admin: SocketAddr) -> (Browser, Tab) {
    let mut browser = Browser::launch();
    let tab = browser.open(&format!("http://{admin}/dashboard?interval=200"));
    browser.wait_for(
        &tab,
        "document.body?.dataset.state === 'live'",
        "its first sample (state `live`)",
        PAGE_BOUND,
        PAGE_TEXT,
    );
    assert_eq!(
        browser.evaluate(&tab, "document.getElementById('shard-count').textContent"),
        "2"
    );
    assert_eq!(
        browser.evaluate(
            &tab,
            "document.getElementById('no-replicas')?.textContent ?? ''"
        ),
        "This node has no replica plane: nothing to draw."
    );
    (browser, tab)
}

/// While traffic runs: frames and bytes per second above zero, in total and
/// on both shards, and the frames-in total growing.
fn wait_for_moving_numbers(browser: &mut Browser, tab: &Tab) {
    let shard_rate = |shard: u16| {
        format!(
            "Number(document.querySelector('#traffic tr[data-shard=\"{shard}\"] \
             td[data-key=\"frames-in\"]')?.dataset.value ?? 0)"
        )
    };
    browser.wait_for(
        tab,
        &format!(
            "{} > 0 && {} > 0 && {} > 0 && {} > 0 && {} === {CLIENTS}",
            value_of("rate-frames-in"),
            value_of("rate-bytes-out"),
            shard_rate(0),
            shard_rate(1),
            value_of("total-connections"),
        ),
        "frames and bytes per second above zero on both shards, every client connected",
        PAGE_BOUND,
        PAGE_TEXT,
    );
    let first = browser.evaluate(tab, &value_of("total-frames-in"));
    browser.wait_for(
        tab,
        &format!("{} > {first}", value_of("total-frames-in")),
        "the frames-in total growing",
        PAGE_BOUND,
        PAGE_TEXT,
    );
}

/// Once the node has settled (the eviction, the failed handshake and
/// `frames_in` counted), every number on the page equals `/stats`; then
/// the rates fall to zero. Returns the settled `/stats`.
fn wait_for_page_to_match_stats(
    browser: &mut Browser,
    tab: &Tab,
    admin: SocketAddr,
    frames_in: u64,
) -> Value {
    let deadline = Instant::now() + PAGE_BOUND;
    let settled = loop {
        let now = stats(admin);
        let totals = &now["totals"];
        let settled = totals["handshake_failures"] == 1
            && totals["goodbyes_sent"]["ProtocolViolation"] == 1
            && totals["connections"]["tcp"] == CLIENTS
            && totals["frames_in"] == frames_in;
        let seen = page_view(browser, tab);
        if settled && seen == expected_view(&now) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "within {PAGE_BOUND:?} the page should show /stats once settled \
             (handshake failures 1, ProtocolViolation 1, {CLIENTS} TCP connections, \
             frames in {frames_in}):\n/stats: {now}\npage:   {seen}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    browser.wait_for(
        tab,
        &format!(
            "{} === 0 && {} === 0",
            value_of("rate-frames-in"),
            value_of("rate-bytes-out")
        ),
        "rates back to zero",
        PAGE_BOUND,
        PAGE_TEXT,
    );
    let alert = browser.evaluate(
        tab,
        "document.getElementById('card-handshake-failures').classList.contains('alert')",
    );
    assert_eq!(alert, true, "a handshake failure is flagged");
    settled
}

/// On a phone-sized viewport the page does not scroll sideways (wide
/// tables scroll inside their box); a screenshot of it goes to `dir`.
fn check_phone_layout(browser: &mut Browser, tab: &Tab, dir: &std::path::Path) {
    browser.set_viewport(tab, 390, 844, true);
    browser.wait_for(
        tab,
        "window.innerWidth === 390 && document.documentElement.scrollWidth <= window.innerWidth",
        "no sideways scrolling at 390 px",
        PAGE_BOUND,
        "`scrollWidth ${document.documentElement.scrollWidth}, innerWidth ${window.innerWidth}`",
    );
    let png = browser.screenshot(tab, &dir.join("dashboard-phone.png"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
}

/// The mesh section draws what a node with a replica plane reports: every
/// replica a node, every link an edge in its state, this node marked.
fn check_mesh_rendering(browser: &mut Browser, tab: &Tab) {
    let mesh = browser.evaluate(
        tab,
        r"(() => {
          const box = document.createElement('div');
          busDashboard.renderMesh(box, [
            { replica: 0, self: true, addr: '10.0.0.1:7075',
              links: [{ to: 1, state: 'connected' }, { to: 2, state: 'connecting' }] },
            { replica: 1, self: false, addr: null, links: [{ to: 2, state: 'down' }] },
            { replica: 2, self: false, addr: null, links: [] },
          ]);
          return JSON.stringify({
            nodes: box.querySelectorAll('circle').length,
            self: box.querySelector('circle.self')?.dataset.replica,
            links: [...box.querySelectorAll('line')]
              .map((l) => `${l.dataset.from}-${l.dataset.to}:${l.dataset.state}`).sort(),
            legend: box.querySelector('ul').innerText,
          });
        })()",
    );
    let mesh: Value = serde_json::from_str(mesh.as_str().expect("JSON")).expect("JSON");
    assert_eq!(mesh["nodes"], 3, "{mesh}");
    assert_eq!(mesh["self"], "0", "{mesh}");
    assert_eq!(
        mesh["links"],
        json!(["0-1:connected", "0-2:connecting", "1-2:down"]),
        "{mesh}"
    );
    assert!(
        mesh["legend"]
            .as_str()
            .is_some_and(|legend| legend.contains("R0 – R1: connected")),
        "{mesh}"
    );
}

#[test]
fn dashboard_shows_live_numbers_that_match_stats_in_headless_chromium() {
    let node = ServeProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--shards",
        "2",
    ]);
    let admin = node.admin.expect("admin address");
    let before = stats(admin);
    assert_eq!(
        before["shards"].as_array().map(Vec::len),
        Some(2),
        "{before}"
    );
    assert_eq!(before["totals"]["frames_in"], 0, "{before}");
    assert!(
        before.get("replicas").is_none(),
        "no replica plane: {before}"
    );
    let (status, index) = http_get(admin, "/");
    assert_eq!(status, 200);
    assert!(
        index.contains("href=\"/dashboard\""),
        "/ links the dashboard"
    );
    let (mut browser, tab) = open_dashboard(admin);
    let screenshots = unique_dir("dashboard");

    let traffic = Traffic::start(node.url());
    assert!(matches!(traffic.next("connection"), Event::Connected));
    wait_for_moving_numbers(&mut browser, &tab);
    let busy = browser.screenshot(&tab, &screenshots.join("dashboard-busy.png"));
    assert!(busy.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");

    // Quiet: no more traffic, one eviction, one failed TLS handshake.
    traffic.stop.store(true, Ordering::Relaxed);
    let Event::Stopped(echoes) = traffic.next("stop") else {
        panic!("expected the traffic to stop");
    };
    let Event::Evicted(reason) = traffic.next("eviction") else {
        panic!("expected the eviction");
    };
    assert_eq!(reason, Some(GoodbyeReason::ProtocolViolation));
    fail_a_tls_handshake(node.addrs["tls"]);
    // Every Echo, the evicted client's one frame, and each of the four
    // clients' opening Ping (spec §7: a client with nothing to say yet
    // sends a Ping on connect).
    let settled = wait_for_page_to_match_stats(&mut browser, &tab, admin, echoes + 1 + 4);
    assert!(
        settled["totals"]["connections_accepted"].as_u64() >= Some(4),
        "{settled}"
    );
    browser.screenshot(&tab, &screenshots.join("dashboard.png"));

    check_phone_layout(&mut browser, &tab, &screenshots);
    check_mesh_rendering(&mut browser, &tab);
    eprintln!("dashboard screenshots in {}", screenshots.display());
}
