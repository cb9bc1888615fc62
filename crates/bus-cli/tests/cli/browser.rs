//! A headless Chromium driven over the Chrome `DevTools` protocol on a pipe
//! (`--remote-debugging-pipe`): the browser reads commands from its fd 3
//! and writes answers and events to its fd 4, each one JSON message ended
//! by a NUL byte. Every wait is bounded; the browser runs in its own
//! process group, killed (by its pid) if it does not close in time.

use std::{
    ffi::OsString,
    fs::File,
    io::{ErrorKind, PipeReader, PipeWriter, Read, Write},
    os::{
        fd::{AsRawFd, RawFd},
        unix::process::CommandExt,
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// Environment variable naming the browser binary; `chromium` otherwise.
const BROWSER_ENV: &str = "BUS_TEST_CHROMIUM";
/// Bound on the browser's first answer: it starts cold on a loaded machine.
const LAUNCH_BOUND: Duration = Duration::from_mins(1);
/// Bound on any later answer.
const ANSWER_BOUND: Duration = Duration::from_secs(20);
/// How often a condition on the page is re-checked.
const POLL: Duration = Duration::from_millis(50);

/// A running headless browser.
pub(crate) struct Browser {
    child: Child,
    commands: PipeWriter,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    /// Its profile directory; `chromium.log` there holds its stderr.
    profile: PathBuf,
    answered: bool,
}

/// A tab attached over a flat `DevTools` session.
pub(crate) struct Tab {
    session: String,
}

impl Browser {
    /// Starts the browser, failing the test with how to install it when
    /// it is missing.
    pub(crate) fn launch() -> Self {
        let binary = PathBuf::from(
            std::env::var_os(BROWSER_ENV).unwrap_or_else(|| OsString::from("chromium")),
        );
        let profile = bus_tests::pki::unique_dir("chromium");
        let log = File::create(profile.join("chromium.log")).expect("create chromium.log");
        let (their_commands, commands) = std::io::pipe().expect("pipe");
        let (messages_in, their_messages) = std::io::pipe().expect("pipe");
        let (command_fd, message_fd) = (their_commands.as_raw_fd(), their_messages.as_raw_fd());
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless=new",
                "--no-sandbox", // CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls fcntl(2) and dup2(2), which are async-signal-safe; it
        // touches no memory shared with other threads.
        unsafe {
            command.pre_exec(move || place_fds(command_fd, message_fd));
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == ErrorKind::NotFound => panic!(
                "the browser tests (demo page, dashboard) need a headless browser and `{}` was not found: \
                 install it with `sudo apt-get install -y chromium` (Debian; `.ci/run` does \
                 this when it is missing), or set {BROWSER_ENV} to a Chromium or Chrome binary",
                binary.display()
            ),
            Err(err) => panic!("cannot start `{}`: {err}", binary.display()),
        };
        // The child holds its own copies now; ours must close so that the
        // reader sees end of file when the browser exits.
        drop((their_commands, their_messages));
        let (tx, messages) = mpsc::channel();
        thread::spawn(move || read_messages(messages_in, &tx));
        Self {
            child,
            commands,
            messages,
            next_id: 1,
            profile,
            answered: false,
        }
    }

    /// Opens `url` in a new tab and attaches to it.
    pub(crate) fn open(&mut self, url: &str) -> Tab {
        let target = self.call(None, "Target.createTarget", &json!({ "url": url }));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            &json!({ "targetId": target_id, "flatten": true }),
        );
        Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_owned(),
        }
    }

    /// Evaluates `expression` in `tab` and returns its value (awaiting it
    /// if it is a promise).
    pub(crate) fn evaluate(&mut self, tab: &Tab, expression: &str) -> Value {
        let answer = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            &json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        answer["result"]["value"].clone()
    }

    /// Resizes `tab`'s viewport to `width` × `height` CSS pixels, as a
    /// phone (`mobile`: touch, mobile viewport rules) or a desktop window.
    pub(crate) fn set_viewport(&mut self, tab: &Tab, width: u32, height: u32, mobile: bool) {
        self.call(
            Some(&tab.session),
            "Emulation.setDeviceMetricsOverride",
            &json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    /// Captures `tab` as a PNG into `path` and returns its bytes.
    pub(crate) fn screenshot(&mut self, tab: &Tab, path: &std::path::Path) -> Vec<u8> {
        let shot = self.call(
            Some(&tab.session),
            "Page.captureScreenshot",
            &json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        std::fs::write(path, &png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        png
    }

    /// Re-evaluates `condition` until it is `true`, failing the test with
    /// `what` and `diagnostic`'s value after `bound`.
    pub(crate) fn wait_for(
        &mut self,
        tab: &Tab,
        condition: &str,
        what: &str,
        bound: Duration,
        diagnostic: &str,
    ) {
        let deadline = Instant::now() + bound;
        loop {
            if self.evaluate(tab, condition) == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let seen = self.evaluate(tab, diagnostic);
                panic!(
                    "the page did not show {what} within {bound:?}\n\
                     `{condition}` is still false; the page shows:\n{}\n\
                     (browser log: {})",
                    seen.as_str()
                        .map_or_else(|| seen.to_string(), str::to_owned),
                    self.profile.join("chromium.log").display()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Sends one `DevTools` command (to the browser, or to a tab's session)
    /// and waits, bounded, for its answer; events in between are skipped.
    fn call(&mut self, session: Option<&str>, method: &str, params: &Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap_or_else(|err| {
            panic!("{method}: the browser is gone ({err}); {}", self.log_hint())
        });
        let bound = if self.answered {
            ANSWER_BOUND
        } else {
            LAUNCH_BOUND
        };
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.messages.recv_timeout(left) {
                Ok(answer) => answer,
                Err(err) => panic!(
                    "{method}: no answer within {bound:?} ({err}); {}",
                    self.log_hint()
                ),
            };
            if answer["id"] != json!(id) {
                continue;
            }
            self.answered = true;
            if let Some(error) = answer.get("error") {
                panic!("{method} failed: {error}");
            }
            return answer["result"].clone();
        }
    }

    fn log_hint(&self) -> String {
        let log = self.profile.join("chromium.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("browser log {}:\n{}", log.display(), tail.join("\n"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask politely, then kill the browser's process group (its helpers
        // share it) by the pid we started.
        let _ = self
            .commands
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            thread::sleep(POLL);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group the browser we spawned
            // leads (process_group(0)); nothing else is in it.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        if !thread::panicking() {
            // Kept on failure: its chromium.log is named in the panic.
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// Decodes standard base64 (`DevTools` sends binary data so); panics on a
/// character outside the alphabet.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", char::from(c)),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | u32::from(d) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// In the forked child: the command pipe on fd 3, the message pipe on fd 4.
/// Both are first copied above 9 so neither `dup2` clobbers the other.
fn place_fds(command_fd: RawFd, message_fd: RawFd) -> std::io::Result<()> {
    let high = |fd: RawFd| {
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor the child inherited.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if copy < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(copy)
        }
    };
    let (command_copy, message_copy) = (high(command_fd)?, high(message_fd)?);
    for (from, to) in [(command_copy, 3), (message_copy, 4)] {
        // SAFETY: dup2(2) between descriptors of this child; the new fd
        // is not close-on-exec, so the browser inherits it.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Splits the browser's output on NUL and parses each message; ends when
/// the browser closes its end or the receiver is gone.
fn read_messages(mut pipe: PipeReader, tx: &mpsc::Sender<Value>) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == 0) {
            let message: Vec<u8> = pending.drain(..=end).collect();
            let Ok(value) = serde_json::from_slice(&message[..end]) else {
                continue;
            };
            if tx.send(value).is_err() {
                return;
            }
        }
    }
}
