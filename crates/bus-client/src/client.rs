//! [`Client`]: the application's handle, and the state it shares with the
//! connection task (`Inner`).
//!
//! Everything lives on one thread (the compio runtime the client was created
//! on): plain `Cell`s and `RefCell`s, no locks. The connection task
//! (`driver`) owns the socket; the handle only queues frames, registers
//! outstanding requests and waits for their replies.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    rc::Rc,
    time::{Duration, Instant},
};

use bus_core::{
    CloseReason, Command, Frame, FrameMut, GoodbyeReason, Link, LinkConfig, RequestError, Role,
    SendError,
};
use compio::runtime::time;

use crate::{ClientError, ClientOptions, Endpoint, ServerRequest, event::Event};

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Dialing, in the transport handshake, or waiting to reconnect.
    Connecting,
    /// Connected: requests are sent now.
    Connected,
    /// Closed for good: closed by the application, or lost with no
    /// reconnect (left).
    Closed,
}

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Frames written to the node.
    pub frames_sent: u64,
    /// Bytes written to the node.
    pub bytes_sent: u64,
    /// Frames received from the node.
    pub frames_received: u64,
    /// Bytes received from the node.
    pub bytes_received: u64,
    /// Requests waiting for a reply right now.
    pub outstanding: usize,
    /// Replies that arrived after their request had given up (timed out or
    /// was dropped); discarded.
    pub late_replies: u64,
    /// Unsolicited frames dropped because their queue was full.
    pub unsolicited_dropped: u64,
    /// Requests from the node dropped because their queue was full.
    pub server_requests_dropped: u64,
    /// Connections established (1 + successful reconnects).
    pub connections: u64,
    /// Dial or handshake attempts that failed.
    pub failed_attempts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Traffic of the connections that ended (live ones count on their
    /// link).
    pub(crate) frames_sent: Cell<u64>,
    pub(crate) bytes_sent: Cell<u64>,
    pub(crate) frames_received: Cell<u64>,
    pub(crate) bytes_received: Cell<u64>,
    pub(crate) late_replies: Cell<u64>,
    pub(crate) unsolicited_dropped: Cell<u64>,
    pub(crate) server_requests_dropped: Cell<u64>,
    pub(crate) connections: Cell<u64>,
    pub(crate) failed_attempts: Cell<u64>,
}

pub(crate) fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

/// State shared by the handle and the connection task.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) endpoint: Endpoint,
    pub(crate) options: ClientOptions,
    state: Cell<ConnectionState>,
    /// Why the client is closed, once it is.
    terminal: RefCell<Option<ClientError>>,
    /// The most recent connection failure, for errors while connecting.
    pub(crate) last_failure: RefCell<Option<ClientError>>,
    /// The connection now up: bus-core's link (connection core, send
    /// queue, outstanding requests), the same engine a node runs.
    link: RefCell<Option<Rc<Link>>>,
    /// Any change of `state`, and every failed connection attempt.
    pub(crate) state_changed: Event,
    unsolicited: RefCell<VecDeque<Frame>>,
    unsolicited_ready: Event,
    server_requests: RefCell<VecDeque<ServerRequest>>,
    close_requested: Cell<bool>,
    pub(crate) counters: Counters,
}

impl Inner {
    pub(crate) fn new(endpoint: Endpoint, options: ClientOptions) -> Self {
        Self {
            endpoint,
            options,
            state: Cell::new(ConnectionState::Connecting),
            terminal: RefCell::default(),
            last_failure: RefCell::default(),
            link: RefCell::default(),
            state_changed: Event::default(),
            unsolicited: RefCell::default(),
            unsolicited_ready: Event::default(),
            server_requests: RefCell::default(),
            close_requested: Cell::new(false),
            counters: Counters::default(),
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.state.get()
    }

    /// The link configuration of this client's connections.
    pub(crate) fn link_config(&self) -> LinkConfig {
        let options = &self.options;
        let mut config = LinkConfig::new(Role::Client);
        config.queue_capacity_frames = options.send_queue_frames;
        config.queue_capacity_bytes = options.send_queue_bytes;
        config.max_batch_frames = options.max_batch_frames;
        config.close_grace = options.close_timeout;
        config.close_peer_timeout = options.close_timeout;
        config.max_outstanding_requests = options.max_outstanding_requests;
        config
    }

    /// A connection is up on `link`.
    pub(crate) fn set_connected(&self, link: Rc<Link>) {
        bump(&self.counters.connections, 1);
        *self.link.borrow_mut() = Some(link);
        self.state.set(ConnectionState::Connected);
        self.state_changed.notify_all();
        if self.close_requested() {
            self.close_link();
        }
    }

    /// The connection is gone (its link already failed what was
    /// outstanding on it): new requests wait for the next one, or fail once
    /// the client is closed.
    pub(crate) fn connection_lost(&self, error: &ClientError) {
        if self.state.get() == ConnectionState::Connected {
            self.state.set(ConnectionState::Connecting);
        }
        if let Some(link) = self.link.borrow_mut().take() {
            let c = &self.counters;
            let live = link.stats();
            bump(&c.frames_sent, live.frames_out);
            bump(&c.bytes_sent, live.bytes_out);
            bump(&c.frames_received, live.frames_in);
            bump(&c.bytes_received, live.bytes_in);
            bump(&c.late_replies, link.late_replies());
        }
        *self.last_failure.borrow_mut() = Some(error.clone());
        self.state_changed.notify_all();
    }

    pub(crate) fn attempt_failed(&self, error: ClientError) {
        bump(&self.counters.failed_attempts, 1);
        *self.last_failure.borrow_mut() = Some(error);
        self.state_changed.notify_all();
    }

    /// Closed for good, with `error` as the answer to every later call.
    pub(crate) fn set_closed(&self, error: ClientError) {
        self.connection_lost(&error);
        *self.terminal.borrow_mut() = Some(error);
        self.state.set(ConnectionState::Closed);
        self.state_changed.notify_all();
        self.unsolicited_ready.notify_all();
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.close_requested.get()
    }

    pub(crate) fn request_close(&self) {
        if !self.close_requested.replace(true) {
            self.close_link();
            self.state_changed.notify_all();
        }
    }

    /// Closes the live link in order: what is queued, then `Goodbye(Normal)`.
    fn close_link(&self) {
        if let Some(link) = &*self.link.borrow() {
            let reason = GoodbyeReason::Normal;
            link.close(reason, "client closing", CloseReason::Closed(reason));
        }
    }

    /// The link now up, or why there is none.
    fn live_link(&self) -> Result<Rc<Link>, ClientError> {
        match self.state.get() {
            ConnectionState::Connected => {}
            ConnectionState::Connecting => {
                return Err(ClientError::NotConnected(self.not_connected_detail()));
            }
            ConnectionState::Closed => return Err(self.terminal_error()),
        }
        self.link
            .borrow()
            .clone()
            .ok_or_else(|| ClientError::NotConnected(self.not_connected_detail()))
    }

    /// Queues a frame on the connection now up; never waits.
    pub(crate) fn enqueue(&self, frame: Frame) -> Result<(), ClientError> {
        let link = self.live_link()?;
        link.send(frame).map_err(|err| self.send_error(err))
    }

    /// What a refused send means to the application.
    fn send_error(&self, err: SendError) -> ClientError {
        match err {
            SendError::QueueFull => ClientError::QueueFull {
                capacity: self.options.send_queue_frames,
            },
            _ => self.lost_error(),
        }
    }

    /// The error of a connection that is going away.
    fn lost_error(&self) -> ClientError {
        if self.close_requested() {
            return ClientError::Closed;
        }
        let reason = self.link.borrow().as_ref().and_then(|l| l.close_reason());
        reason.map_or_else(
            || ClientError::NotConnected(self.not_connected_detail()),
            |reason| self.disconnected(&reason),
        )
    }

    /// The error for a connection that ended with `reason`.
    pub(crate) fn disconnected(&self, reason: &CloseReason) -> ClientError {
        if self.close_requested() {
            return ClientError::Closed;
        }
        let (goodbye, cause) = match reason {
            CloseReason::PeerGoodbye(goodbye) => (
                Some(goodbye.clone()),
                format!("the node said Goodbye({})", goodbye.reason),
            ),
            CloseReason::PeerClosed => (None, "the node closed the connection".into()),
            CloseReason::Io(kind) => (None, format!("the connection failed: {kind}")),
            CloseReason::ProtocolViolation(reason) => (
                None,
                format!("the node broke the protocol; we said Goodbye({reason})"),
            ),
            CloseReason::Closed(reason) => (None, format!("closed with Goodbye({reason})")),
            other => (None, format!("the connection ended: {other:?}")),
        };
        ClientError::Disconnected { goodbye, cause }
    }

    /// A request from the node arrived on `link`.
    pub(crate) fn push_server_request(&self, frame: Frame, link: &Rc<Link>) {
        let mut queue = self.server_requests.borrow_mut();
        if queue.len() >= self.options.server_request_queue {
            bump(&self.counters.server_requests_dropped, 1);
            return;
        }
        queue.push_back(ServerRequest::new(
            frame,
            link,
            self.options.seal,
            self.options.send_queue_frames,
        ));
        drop(queue);
        self.unsolicited_ready.notify_all();
    }

    pub(crate) fn push_unsolicited(&self, frame: Frame) {
        let mut queue = self.unsolicited.borrow_mut();
        if queue.len() >= self.options.unsolicited_queue_frames {
            bump(&self.counters.unsolicited_dropped, 1);
            return;
        }
        queue.push_back(frame);
        drop(queue);
        self.unsolicited_ready.notify_all();
    }

    fn terminal_error(&self) -> ClientError {
        self.terminal
            .borrow()
            .clone()
            .unwrap_or(ClientError::Closed)
    }

    fn not_connected_detail(&self) -> String {
        match &*self.last_failure.borrow() {
            Some(err) => format!("connecting to {} ({err})", self.endpoint),
            None => format!("connecting to {}", self.endpoint),
        }
    }

    /// Waits until connected, closed, or `deadline`.
    async fn wait_connected(&self, deadline: Instant) -> Result<(), ClientError> {
        loop {
            let changed = self.state_changed.changed();
            match self.state.get() {
                ConnectionState::Connected => return Ok(()),
                ConnectionState::Closed => return Err(self.terminal_error()),
                ConnectionState::Connecting => {}
            }
            if time::timeout_at(deadline, changed).await.is_err() {
                return Err(ClientError::NotConnected(self.not_connected_detail()));
            }
        }
    }

    fn stats(&self) -> ClientStats {
        let c = &self.counters;
        let link = self.link.borrow();
        let live = link.as_ref().map(|l| l.stats()).unwrap_or_default();
        ClientStats {
            frames_sent: c.frames_sent.get() + live.frames_out,
            bytes_sent: c.bytes_sent.get() + live.bytes_out,
            frames_received: c.frames_received.get() + live.frames_in,
            bytes_received: c.bytes_received.get() + live.bytes_in,
            outstanding: link.as_ref().map_or(0, |l| l.outstanding_requests()),
            late_replies: c.late_replies.get() + link.as_ref().map_or(0, |l| l.late_replies()),
            unsolicited_dropped: c.unsolicited_dropped.get(),
            server_requests_dropped: c.server_requests_dropped.get(),
            connections: c.connections.get(),
            failed_attempts: c.failed_attempts.get(),
        }
    }
}

/// Closes the connection when the last [`Client`] clone is dropped.
#[derive(Debug)]
struct Handle {
    inner: Rc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.request_close();
    }
}

/// A connection to a `bus` node, for one thread's compio runtime.
///
/// Cheap to clone; all clones share the connection, and dropping the last
/// one closes it (with `Goodbye(Normal)`). Replies are matched to requests
/// by the header's `request` field, so any number of requests (up to
/// [`ClientOptions::max_outstanding_requests`]) may be in flight at once,
/// from any number of tasks.
#[derive(Debug, Clone)]
pub struct Client {
    handle: Rc<Handle>,
}

impl Client {
    /// Connects to the node at `url` (`tcp://host:port`; see
    /// [`Endpoint::parse`]).
    ///
    /// Without [`ClientOptions::reconnect`], this returns once connected, or
    /// the dial or handshake error. With it, a node that cannot be reached
    /// yet is not an error: this returns after the first attempt and the
    /// client keeps trying in the background; requests wait for the
    /// connection up to their timeout. A bad URL, a scheme this build lacks
    /// or invalid options always fail at once.
    ///
    /// Must be called inside a compio runtime; the client lives on it.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the attempt; nothing stays behind.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(url)?;
        check_options(&options)?;
        if !endpoint.scheme.is_available() {
            return Err(ClientError::SchemeNotAvailable {
                scheme: endpoint.scheme.as_str(),
                feature: endpoint.scheme.feature(),
            });
        }
        let inner = Rc::new(Inner::new(endpoint, options));
        let client = Client {
            handle: Rc::new(Handle {
                inner: inner.clone(),
            }),
        };
        compio::runtime::spawn(crate::driver::drive(inner.clone())).detach();
        loop {
            let changed = inner.state_changed.changed();
            match inner.state() {
                ConnectionState::Connected => return Ok(client),
                ConnectionState::Closed => return Err(inner.terminal_error()),
                ConnectionState::Connecting
                    if inner.options.reconnect.is_some()
                        && inner.counters.failed_attempts.get() > 0 =>
                {
                    return Ok(client);
                }
                ConnectionState::Connecting => changed.await,
            }
        }
    }

    /// The node's URL.
    pub fn endpoint(&self) -> &Endpoint {
        &self.handle.inner.endpoint
    }

    /// The options this client runs with.
    pub fn options(&self) -> &ClientOptions {
        &self.handle.inner.options
    }

    /// Where the connection stands.
    pub fn state(&self) -> ConnectionState {
        self.handle.inner.state()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        self.handle.inner.stats()
    }

    /// Sends `frame` as a request and waits for the frame that answers it.
    ///
    /// The client sets the header's `request` field to a fresh id (any
    /// value already there is replaced) and seals the frame unless
    /// [`ClientOptions::seal`] is off. The command must be an application
    /// command (16..=255). If the client is reconnecting, the request waits
    /// for the connection within its timeout.
    ///
    /// Fails with the typed reason: [`ClientError::Timeout`] after
    /// [`ClientOptions::request_timeout`], [`ClientError::Disconnected`] (with
    /// the node's `Goodbye` when one arrived) as soon as the connection
    /// drops, [`ClientError::TooManyRequests`] or [`ClientError::QueueFull`]
    /// at once when a bound is reached.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future forgets the request. If it was
    /// already queued it is still sent, and its reply is discarded.
    pub async fn request(&self, frame: FrameMut) -> Result<Frame, ClientError> {
        if !matches!(frame.header().command(), Command::Application(_)) {
            return Err(ClientError::InvalidFrame(
                "a request carries an application command (16..=255)",
            ));
        }
        self.exchange(frame).await
    }

    /// Sends a `Ping` and returns the round-trip time until its `Pong`.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Client::request`].
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let inner = &self.handle.inner;
        let deadline = Instant::now() + inner.options.request_timeout;
        inner.wait_connected(deadline).await?;
        let started = Instant::now();
        self.exchange(FrameMut::new(Command::Ping, 0)).await?;
        Ok(started.elapsed())
    }

    /// Sends `frame` without waiting for an answer. Its `request` field is
    /// left as it is (0 means "expects no reply"); it is sealed unless
    /// [`ClientOptions::seal`] is off. Waits only while (re)connecting,
    /// within the request timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the frame may or may not have
    /// been queued.
    pub async fn send(&self, mut frame: FrameMut) -> Result<(), ClientError> {
        let inner = &self.handle.inner;
        if !matches!(frame.header().command(), Command::Application(_)) {
            return Err(ClientError::InvalidFrame(
                "send carries an application command (16..=255)",
            ));
        }
        inner
            .wait_connected(Instant::now() + inner.options.request_timeout)
            .await?;
        if inner.options.seal {
            frame.seal();
        }
        inner.enqueue(frame.freeze())
    }

    /// The next unsolicited frame: one that answers no request of this
    /// client, such as a `Delivery`. `None` once the client is closed and
    /// every queued frame was taken.
    ///
    /// # Cancel safety
    /// Cancel safe: a frame is removed from the queue only when returned.
    pub async fn recv(&self) -> Option<Frame> {
        let inner = &self.handle.inner;
        loop {
            let changed = inner.unsolicited_ready.changed();
            if let Some(frame) = inner.unsolicited.borrow_mut().pop_front() {
                return Some(frame);
            }
            if inner.state() == ConnectionState::Closed {
                return None;
            }
            changed.await;
        }
    }

    /// The next request from the node (spec §9), to answer with
    /// [`ServerRequest::answer`]. `None` once the client is closed and every
    /// queued request was taken.
    ///
    /// # Cancel safety
    /// Cancel safe: a request is removed from the queue only when returned.
    pub async fn recv_request(&self) -> Option<ServerRequest> {
        let inner = &self.handle.inner;
        loop {
            let changed = inner.unsolicited_ready.changed();
            if let Some(request) = inner.server_requests.borrow_mut().pop_front() {
                return Some(request);
            }
            if inner.state() == ConnectionState::Closed {
                return None;
            }
            changed.await;
        }
    }

    /// The next request from the node if one is queued.
    pub fn try_recv_request(&self) -> Option<ServerRequest> {
        self.handle.inner.server_requests.borrow_mut().pop_front()
    }

    /// The next unsolicited frame if one is queued.
    pub fn try_recv(&self) -> Option<Frame> {
        self.handle.inner.unsolicited.borrow_mut().pop_front()
    }

    /// Waits until the client is connected, within `timeout`. Useful with
    /// reconnect on.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        self.handle
            .inner
            .wait_connected(Instant::now() + timeout)
            .await
    }

    /// Closes the connection: what is queued is sent, then `Goodbye(Normal)`,
    /// then the client waits for the node to close its side, all within
    /// [`ClientOptions::close_timeout`]. Every clone of this client is
    /// closed; later calls fail with [`ClientError::Closed`].
    ///
    /// # Cancel safety
    /// Cancel safe: the close proceeds on the connection task anyway.
    pub async fn close(&self) {
        let inner = &self.handle.inner;
        inner.request_close();
        let deadline = Instant::now() + inner.options.close_timeout + Duration::from_secs(1);
        loop {
            let changed = inner.state_changed.changed();
            if inner.state() == ConnectionState::Closed {
                return;
            }
            if time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Stamps a request id, seals, queues, and waits for the reply (the
    /// link's request table matches it).
    async fn exchange(&self, mut frame: FrameMut) -> Result<Frame, ClientError> {
        let inner = &self.handle.inner;
        let timeout = inner.options.request_timeout;
        let deadline = Instant::now() + timeout;
        inner.wait_connected(deadline).await?;
        let link = inner.live_link()?;
        if inner.options.seal {
            frame.seal();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = link
            .request(frame, left)
            .map_err(|err| inner.request_error(err, timeout))?;
        reply.await.map_err(|err| inner.request_error(err, timeout))
    }
}

impl Inner {
    /// What a failed request means to the application.
    fn request_error(&self, err: RequestError, timeout: Duration) -> ClientError {
        match err {
            RequestError::Timeout(_) => ClientError::Timeout(timeout),
            RequestError::TooManyRequests { limit } => ClientError::TooManyRequests { limit },
            RequestError::Disconnected { reason } => self.disconnected(&reason),
            RequestError::Send(err) => self.send_error(err),
            other => ClientError::NotConnected(other.to_string()),
        }
    }
}

fn check_options(options: &ClientOptions) -> Result<(), ClientError> {
    let invalid = |what: &'static str| Err(ClientError::InvalidOptions(what));
    if options.max_outstanding_requests == 0 {
        return invalid("ClientOptions::max_outstanding_requests must be at least 1");
    }
    if options.send_queue_frames == 0 {
        return invalid("ClientOptions::send_queue_frames must be at least 1");
    }
    if options.send_queue_bytes < bus_core::limits::HEADER_SIZE {
        return invalid("ClientOptions::send_queue_bytes must hold at least one header (256 B)");
    }
    if options.max_batch_frames == 0 {
        return invalid("ClientOptions::max_batch_frames must be at least 1");
    }
    if options.max_message_size_bytes < bus_core::limits::MIN_MAX_MESSAGE_SIZE_BYTES {
        return invalid("ClientOptions::max_message_size_bytes must be at least 256");
    }
    Ok(())
}
