//! Raw clients: they speak the wire format directly, so they can send
//! anything, including what a well-behaved client never would.
#![allow(async_fn_in_trait, reason = "single-threaded test harness")]

use std::net::SocketAddr;

use bus_core::{Command, DecodeLimits, Error, Frame, Goodbye, GoodbyeReason, read_frame};
use compio::{
    BufResult,
    io::{AsyncRead, AsyncWriteExt},
    net::TcpStream,
};

use crate::within;

/// What a client accepts from the server.
pub const CLIENT_LIMITS: DecodeLimits = DecodeLimits {
    max_message_size_bytes: 1 << 30,
    require_sealed: false,
};

/// A client that sends raw bytes and reads frames.
pub trait RawClient {
    /// Sends one unit of bytes: on a stream, bytes; on a message transport,
    /// one message.
    async fn send_raw(&mut self, bytes: &[u8]);

    /// Sends a frame.
    async fn send(&mut self, frame: &Frame) {
        self.send_raw(frame.as_bytes()).await;
    }

    /// Receives the next frame (bounded by [`crate::STEP`]).
    async fn recv(&mut self) -> Result<Frame, Error>;

    /// Closes the client's sending side.
    async fn close(&mut self);

    /// Receives the next frame, failing the test on any error.
    async fn recv_frame(&mut self) -> Frame {
        match self.recv().await {
            Ok(frame) => frame,
            Err(err) => panic!("expected a frame, got {err}"),
        }
    }

    /// Expects a `Goodbye` with `reason`, then the end of the connection.
    async fn expect_goodbye_then_close(&mut self, reason: GoodbyeReason) -> Goodbye {
        let frame = self.recv_frame().await;
        assert_eq!(
            frame.header().command(),
            Command::Goodbye,
            "expected Goodbye, got {frame:?}"
        );
        let goodbye = Goodbye::decode(frame.header().command_area());
        assert_eq!(goodbye.reason, reason, "goodbye detail: {}", goodbye.detail);
        self.expect_closed().await;
        goodbye
    }

    /// Expects the server to end the connection with no further frame.
    async fn expect_closed(&mut self) {
        match self.recv().await {
            Err(Error::Closed | Error::Io(_)) => {}
            Ok(frame) => panic!("expected the connection to close, got {frame:?}"),
            Err(other) => panic!("expected the connection to close, got {other}"),
        }
    }
}

/// A raw TCP client.
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
}

impl TcpClient {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// If the connection fails or times out.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream }
    }

    /// The socket, for tests that need it.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl RawClient for TcpClient {
    async fn send_raw(&mut self, bytes: &[u8]) {
        let BufResult(res, _) = within("tcp write", self.stream.write_all(bytes.to_vec())).await;
        res.expect("tcp write");
    }

    async fn send(&mut self, frame: &Frame) {
        let BufResult(res, _) = within("tcp write", self.stream.write_all(frame.clone())).await;
        res.expect("tcp write");
    }

    async fn recv(&mut self) -> Result<Frame, Error> {
        within(
            "a frame from the server",
            read_frame(&mut self.stream, CLIENT_LIMITS),
        )
        .await
    }

    async fn close(&mut self) {
        let _ = within(
            "tcp shutdown",
            compio::io::AsyncWrite::shutdown(&mut self.stream),
        )
        .await;
    }
}

/// Reads whatever the server sends until it closes, bounded; returns the
/// byte count. Used to drain a peer that was deliberately not reading.
///
/// # Panics
/// If the server does not close within the bound.
pub async fn drain_tcp(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        let BufResult(res, b) = within("drain", stream.read(buf)).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}
