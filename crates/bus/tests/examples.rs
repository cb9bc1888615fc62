//! The examples as a user runs them: each binary (built by `cargo test` and
//! `cargo xtask ci` with the test) starts as a child process on loopback
//! with free ports, does one round trip, and is stopped by its pid with
//! SIGINT (what Ctrl-C sends), after which it must exit 0 within a bound.
//!
//! Every example that serves TLS makes its development certificate under
//! `$TMPDIR`: each child gets a fresh `TMPDIR`, so parallel tests never
//! share one.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command as Process, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use bus::{Client, ClientError, ClientOptions, Command, FrameMut, GoodbyeReason};

/// Bound on every wait of a test step.
const STEP: Duration = Duration::from_secs(10);
/// Bound on an example's start-up: it may generate a certificate and start
/// a shard per core on a loaded machine.
const START: Duration = Duration::from_secs(30);
/// The transports, in the order the examples print them.
const TRANSPORTS: [&str; 5] = ["tcp", "tls", "ws", "wss", "quic"];

/// `future`, or a panic naming `what` after [`STEP`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    compio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {STEP:?}"))
}

/// Where cargo put the example binaries: `target/<profile>/examples`, next
/// to the `deps` directory holding this test.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo build -p bus --examples --all-features`; \
         `cargo test` and `cargo xtask ci` build them with the tests)",
        path.display()
    );
    path
}

/// A running example; killed (by its pid) if still alive when dropped.
struct Example {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    seen: Vec<String>,
    tmp: PathBuf,
}

impl Example {
    fn start(name: &'static str, args: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tmp = std::env::temp_dir().join(format!(
            "bus-example-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&tmp).expect("create TMPDIR");
        let mut child = Process::new(example_binary(name))
            .args(args)
            .env("TMPDIR", &tmp)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("start example {name}: {err}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            name,
            child,
            lines,
            seen: Vec::new(),
            tmp,
        }
    }

    /// Reads stdout until a line satisfies `done`, within `bound`; returns
    /// that line.
    fn read_until(&mut self, what: &str, bound: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if done(&line) {
                        return line;
                    }
                }
                Err(err) => panic!(
                    "example {}: no {what} within {bound:?} ({err}); its output:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The first line seen so far, or read within `bound`, that satisfies
    /// `wanted`.
    fn line(&mut self, what: &str, bound: Duration, wanted: impl Fn(&str) -> bool) -> String {
        match self.seen.iter().find(|line| wanted(line)) {
            Some(line) => line.clone(),
            None => self.read_until(what, bound, wanted),
        }
    }

    /// Reads stdout until every line of `wanted` was seen, within `bound`.
    fn read_all(&mut self, what: &str, bound: Duration, mut wanted: BTreeSet<String>) {
        let deadline = Instant::now() + bound;
        wanted.retain(|line| !self.seen.contains(line));
        while !wanted.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("{what} (missing {wanted:?})");
            let line = self.read_until(&what, left, |l| wanted.contains(l));
            wanted.remove(&line);
        }
    }

    /// The words of the `listening tcp=ADDR tls=ADDR ...` line.
    fn listening(&mut self) -> HashMap<String, SocketAddr> {
        let line = self.read_until("`listening` line", START, |l| l.starts_with("listening "));
        line.split_whitespace()
            .skip(1)
            .map(|word| {
                let (name, addr) = word.split_once('=').expect("name=addr");
                (name.to_owned(), addr.parse().expect("address"))
            })
            .collect()
    }

    /// SIGINT to the example's pid, as Ctrl-C would.
    fn interrupt(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on the pid of a child we spawned and have not
        // reaped, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill({pid}, SIGINT)");
    }

    /// Waits for the exit (bounded) and reads the rest of stdout.
    fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "example {} did not exit within {bound:?}; its output:\n{}",
                self.name,
                self.seen.join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        };
        // The pipe is closed once the process is gone: read what is left.
        while let Ok(line) = self.lines.recv_timeout(STEP) {
            self.seen.push(line);
        }
        status
    }

    /// Interrupts the example and expects a clean exit within the
    /// examples' grace (5 s) plus [`STEP`].
    fn stop(&mut self) {
        self.interrupt();
        let status = self.wait_exit(Duration::from_secs(5) + STEP);
        assert!(
            status.success(),
            "example {} exited with {status}; its output:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Client options trusting the examples' development certificate.
fn trusting(cert: PathBuf) -> ClientOptions {
    let mut options = ClientOptions::default();
    options.ca_file = Some(cert);
    options
}

/// After the node said Goodbye: the client is closed, and why.
async fn assert_shut_down(client: &Client) {
    assert!(
        within("close", client.recv()).await.is_none(),
        "no frame after the Goodbye"
    );
    let err = client
        .wait_connected(Duration::ZERO)
        .await
        .expect_err("closed");
    assert!(matches!(err, ClientError::Disconnected { .. }), "{err:?}");
    assert_eq!(
        err.goodbye_reason(),
        Some(GoodbyeReason::ShuttingDown),
        "{err}"
    );
}

#[compio::test]
async fn echo_example_echoes_a_frame_and_stops_on_ctrl_c() {
    let mut echo = Example::start("echo", &["127.0.0.1:0"]);
    let line = echo.read_until("`listening on` line", START, |l| {
        l.starts_with("listening on ")
    });
    let url = line.trim_start_matches("listening on ");
    assert!(url.starts_with("tcp://127.0.0.1:"), "{line}");
    let client = within("connect", Client::connect(url, ClientOptions::default()))
        .await
        .expect("connect");
    let frame = FrameMut::with_body(Command::from_u8(42), b"round trip");
    let reply = within("echo", client.request(frame)).await.expect("reply");
    assert_eq!(reply.header().command_raw(), 42, "echoed unchanged");
    assert_eq!(reply.body(), b"round trip");

    echo.interrupt();
    assert_shut_down(&client).await;
    let status = echo.wait_exit(Duration::from_secs(5) + STEP);
    assert!(status.success(), "{status}");
    assert!(
        echo.seen
            .iter()
            .any(|l| l.starts_with("stopped: 1 connections closed")),
        "{:?}",
        echo.seen
    );
}

#[compio::test]
async fn shards_example_serves_every_transport_and_broadcasts_across_them() {
    let mut node = Example::start("shards", &["127.0.0.1", "0"]);
    let cert = node.read_until("certificate line", START, |l| {
        l.contains(" shards, certificate ")
    });
    let cert = PathBuf::from(cert.split(", certificate ").nth(1).expect("path"));
    assert!(
        cert.starts_with(&node.tmp),
        "{} under TMPDIR",
        cert.display()
    );
    let addrs = node.listening();
    let mut clients = Vec::new();
    for name in TRANSPORTS {
        let url = format!("{name}://{}", addrs[name]);
        let client = within(&url, Client::connect(&url, trusting(cert.clone())))
            .await
            .unwrap_or_else(|err| panic!("connect {url}: {err}"));
        let echo = FrameMut::with_body(Command::from_u8(16), name.as_bytes());
        let reply = within("echo", client.request(echo))
            .await
            .expect("echo reply");
        assert_eq!(reply.header().command_raw(), 17, "EchoReply over {name}");
        assert_eq!(reply.body(), name.as_bytes());
        clients.push(client);
    }
    let broadcast = FrameMut::with_body(Command::from_u8(18), b"to every transport");
    let ack = within("broadcast", clients[4].request(broadcast))
        .await
        .expect("ack");
    assert_eq!(ack.header().command_raw(), 20, "BroadcastAck");
    assert_eq!(&ack.header().command_area()[..4], &5u32.to_le_bytes());
    for (name, client) in TRANSPORTS.iter().zip(&clients) {
        let delivery = within("delivery", client.recv()).await.expect("delivery");
        assert_eq!(delivery.header().command_raw(), 19, "Delivery over {name}");
        assert_eq!(delivery.body(), b"to every transport");
    }

    node.interrupt();
    for client in &clients {
        assert_shut_down(client).await;
    }
    let status = node.wait_exit(Duration::from_secs(5) + STEP);
    assert!(status.success(), "{status}");
    assert!(
        node.seen.iter().any(|l| l == "stopped: 0 threads left"),
        "{:?}",
        node.seen
    );
}

#[test]
fn client_example_gets_a_reply_and_an_unsolicited_delivery() {
    let mut node = Example::start("shards", &["127.0.0.1", "0"]);
    let cert = node.read_until("certificate line", START, |l| {
        l.contains(" shards, certificate ")
    });
    let cert = cert
        .split(", certificate ")
        .nth(1)
        .expect("path")
        .to_owned();
    let addrs = node.listening();
    // Plain TCP needs no certificate; QUIC is checked against the node's.
    for (url, extra) in [
        (format!("tcp://{}", addrs["tcp"]), None),
        (format!("quic://{}", addrs["quic"]), Some(cert.as_str())),
    ] {
        let mut args = vec![url.as_str()];
        args.extend(extra);
        let mut client = Example::start("client", &args);
        let status = client.wait_exit(STEP + STEP);
        assert!(
            status.success(),
            "client {url}: {status}: {:?}",
            client.seen
        );
        let output = client.seen.join("\n");
        for expected in [
            format!("connected to {url}"),
            "reply 17: hello".to_owned(),
            "unsolicited 19: hi everyone".to_owned(),
        ] {
            assert!(
                client.seen.contains(&expected),
                "client {url}: no `{expected}` in:\n{output}"
            );
        }
        // At least this client; the previous one may still be leaving.
        let addressed: u32 = client
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("broadcast addressed to "))
            .and_then(|rest| rest.strip_suffix(" clients"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("client {url}: no broadcast count in:\n{output}"));
        assert!(addressed >= 1, "{output}");
    }
    node.stop();
}

#[compio::test]
async fn chat_example_every_transport_hears_every_other_and_a_websocket_guest() {
    let mut chat = Example::start("chat", &["127.0.0.1", "0"]);
    let addrs = chat.listening();
    // Each of the five clients hears the five hellos, itself included.
    let hellos = TRANSPORTS
        .iter()
        .flat_map(|to| {
            TRANSPORTS
                .iter()
                .map(move |from| format!("{to} heard [{from}] hello from {from}"))
        })
        .collect();
    chat.read_all("every hello heard by every client", STEP, hellos);
    let page = chat.line("the browser line", STEP, |l| l.starts_with("browser: "));
    let expected = format!("?ws=ws://{}/", addrs["ws"]);
    assert!(page.ends_with(&expected), "{page}");
    let file = page
        .trim_start_matches("browser: open file://")
        .trim_end_matches(&expected);
    assert!(PathBuf::from(file).is_file(), "{page}");

    // A guest over WebSocket, as the browser page joins: everyone hears it.
    let guest = within(
        "ws connect",
        Client::connect(&format!("ws://{}/", addrs["ws"]), ClientOptions::default()),
    )
    .await
    .expect("ws connect");
    within("ping", guest.ping()).await.expect("registered");
    let say = FrameMut::with_body(Command::from_u8(18), b"hi from a guest");
    within("say", guest.send(say)).await.expect("say");
    let heard = within("heard", guest.recv()).await.expect("heard");
    assert_eq!(heard.header().command_raw(), 19);
    assert_eq!(heard.body(), b"[ws] hi from a guest");
    let guest_lines = TRANSPORTS
        .iter()
        .map(|to| format!("{to} heard [ws] hi from a guest"))
        .collect();
    chat.read_all("the guest heard by every client", STEP, guest_lines);

    chat.interrupt();
    assert_shut_down(&guest).await;
    let status = chat.wait_exit(Duration::from_secs(5) + STEP);
    assert!(status.success(), "{status}: {:?}", chat.seen);
    for name in TRANSPORTS {
        let left = format!("{name} left");
        assert!(chat.seen.contains(&left), "no `{left}` in {:?}", chat.seen);
    }
}
