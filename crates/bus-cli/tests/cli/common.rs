//! Helpers: the `bus` binary as a child process, an in-process reference
//! node, and a bounded blocking HTTP GET.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use bus_cli::{admin::NodeInfo, server::Node};
use bus_config::Config;
use bus_tests::STEP;

/// The `bus` binary under test.
pub(crate) const BUS: &str = env!("CARGO_BIN_EXE_bus");

/// `bus serve` running as a child process; killed (by pid) if still alive
/// when dropped.
pub(crate) struct ServeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The TCP listener's address.
    pub(crate) tcp: SocketAddr,
    /// The admin endpoint's address, when enabled.
    pub(crate) admin: Option<SocketAddr>,
    /// Every listener of the `listening` line, by name (`tcp`, `tls`, ...).
    pub(crate) addrs: std::collections::HashMap<String, SocketAddr>,
    /// The node's `--data-dir` (a fresh directory per process).
    pub(crate) data_dir: std::path::PathBuf,
}

impl ServeProcess {
    /// Starts `bus serve` with `args` and waits (bounded) for its
    /// `listening` line.
    pub(crate) fn start(args: &[&str]) -> Self {
        let data_dir = bus_tests::pki::unique_dir("serve-data");
        // Transports the test does not ask for are off: the defaults would
        // bind fixed ports that parallel tests share.
        let off: Vec<&str> = ["--tls", "--ws", "--wss", "--quic"]
            .into_iter()
            .filter(|flag| !args.contains(flag))
            .flat_map(|flag| [flag, "off"])
            .collect();
        let mut child = Command::new(BUS)
            .arg("serve")
            .args(args)
            .args(&off)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bus serve");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut process = Self {
            child,
            lines,
            tcp: "0.0.0.0:0".parse().expect("addr"),
            admin: None,
            addrs: std::collections::HashMap::new(),
            data_dir,
        };
        let line = process.wait_line("listening ");
        for word in line.split_whitespace().skip(1) {
            let (key, value) = word.split_once('=').expect("key=value");
            let addr: SocketAddr = value.parse().expect("address");
            process.addrs.insert(key.to_owned(), addr);
            match key {
                "tcp" => process.tcp = addr,
                "admin" => process.admin = Some(addr),
                _ => {}
            }
        }
        assert_ne!(process.tcp.port(), 0, "no tcp listener in: {line}");
        process
    }

    /// The `tcp://` URL of the node.
    pub(crate) fn url(&self) -> String {
        format!("tcp://{}", self.tcp)
    }

    /// Waits (bounded) for a stdout line starting with `prefix`.
    pub(crate) fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(err) => panic!("no `{prefix}` line from bus serve: {err}"),
            }
        }
    }

    /// Sends `signal` to the child.
    pub(crate) fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits up to `bound` for the child to exit.
    pub(crate) fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        wait_child(&mut self.child, bound)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `bound` for `child` to exit, polling its status (the only
/// portable bounded wait on a child in std).
pub(crate) fn wait_child(child: &mut Child, bound: Duration) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {bound:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `bus ARGS` to completion (bounded by `bound`); returns status,
/// stdout and stderr.
pub(crate) fn run_bus(args: &[&str], bound: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(BUS)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bus");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, bound);
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// `GET path` on `addr`; returns the status code and the body. Blocking,
/// with read and write timeouts.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, STEP).expect("connect admin");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    stream.set_write_timeout(Some(STEP)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// The embedded defaults with TCP on `127.0.0.1:0` and nothing else.
pub(crate) fn loopback_config() -> Config {
    let mut config = Config::embedded_defaults();
    config.tcp.listen = "127.0.0.1:0".parse().expect("addr");
    config.tls.enabled = false;
    config.ws.enabled = false;
    config.wss.enabled = false;
    config.quic.enabled = false;
    config.shards.count = 1;
    config
}

/// The reference node on this thread's runtime.
pub(crate) async fn start_node(config: &Config) -> Node {
    let info = NodeInfo {
        version: "test",
        driver: "test".into(),
    };
    let data_dir = bus_tests::pki::unique_dir("node-data");
    Node::start(config, info, &data_dir)
        .await
        .expect("start node")
}
