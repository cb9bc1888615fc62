//! A link: one established connection driven by its connection core, for
//! either side (the bus's connections and `bus-client`'s connection run on
//! the same code).
//!
//! [`Link`] holds the core (`state.rs`: protocol state, outbound queue,
//! outstanding requests), the wake-ups of the link's task and its counters.
//! [`run`] is the task: a thin shell that runs a reader, a writer and the
//! core's timer side by side, feeds the core what happens and does what it
//! decides:
//!
//! ```text
//!  read_loop:  reader.read_frame → core.receive → Delivery::deliver (application frames)
//!  write_loop: core.next_write → writer.write_batch / writer.close
//!  timer:      core.next_deadline → core.tick
//! ```
//!
//! No protocol decision is taken here. The core is borrowed for the length
//! of one call, never across an await and never while the application runs,
//! so an application may send on the link it is handling.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    io,
    pin::pin,
    rc::{Rc, Weak},
    time::{Duration, Instant},
};

use compio::{BufResult, runtime::time};
use futures_util::{FutureExt, future::pending, select_biased};

use crate::{
    buf::{Frame, FrameMut},
    config::SlowConsumerPolicy,
    error::{Error, RequestError, SendError},
    goodbye::GoodbyeReason,
    notify::Notify,
    queue::QueueBounds,
    requests::{Issuer, Unanswered},
    state::{CloseReason, ConnCore, CoreConfig, ReadSide, Received, WriteStep},
    stats::{ConnectionStats, RequestStats},
    transport::{FrameReader, FrameWriter},
};

/// Which end of the connection a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// The accepting end (a node): stamps client ids, bounds the time to
    /// the first frame, issues request ids with bit 63 set.
    Server,
    /// The dialing end (a client library): issues request ids with bit 63
    /// clear.
    Client,
}

/// The bounds and policies of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// Which end this is.
    pub role: Role,
    /// Outbound queue capacity in frames (spec §6).
    pub queue_capacity_frames: usize,
    /// Outbound queue capacity in bytes (waiting plus being written).
    pub queue_capacity_bytes: usize,
    /// What a full queue does.
    pub slow_consumer: SlowConsumerPolicy,
    /// Most frames handed to one write.
    pub max_batch_frames: usize,
    /// Bound on writing what is queued, the `Goodbye` and closing our side.
    pub close_grace: Duration,
    /// After our side is closed, how long the peer has to close its side.
    pub close_peer_timeout: Duration,
    /// Close with `Goodbye(IdleTimeout)` after this long without a frame.
    pub idle_timeout: Option<Duration>,
    /// Send a `Ping` after this long without receiving a frame (shorter
    /// than `idle_timeout`, so a live but quiet peer answers in time).
    pub keepalive: Option<Duration>,
    /// Close with `Goodbye(IdleTimeout)` when no frame arrived this long
    /// after the start (spec §7); `None` for a side that speaks first.
    pub first_frame_grace: Option<Duration>,
    /// The client id stamped into received application frames (spec §5).
    pub stamp_client: Option<u128>,
    /// Most requests of this side outstanding at once (spec §9).
    pub max_outstanding_requests: usize,
}

impl LinkConfig {
    /// The defaults of `bus-core`'s limits for `role`.
    pub fn new(role: Role) -> Self {
        use crate::limits;
        Self {
            role,
            queue_capacity_frames: limits::DEFAULT_QUEUE_CAPACITY_FRAMES,
            queue_capacity_bytes: limits::DEFAULT_QUEUE_CAPACITY_BYTES,
            slow_consumer: SlowConsumerPolicy::Keep,
            max_batch_frames: limits::DEFAULT_MAX_BATCH_FRAMES,
            close_grace: limits::DEFAULT_CLOSE_GRACE,
            close_peer_timeout: limits::DEFAULT_CLOSE_PEER_TIMEOUT,
            idle_timeout: None,
            keepalive: None,
            first_frame_grace: None,
            stamp_client: None,
            max_outstanding_requests: limits::DEFAULT_MAX_OUTSTANDING_REQUESTS,
        }
    }

    fn core(&self) -> CoreConfig {
        CoreConfig {
            queue: QueueBounds {
                frames: self.queue_capacity_frames,
                bytes: self.queue_capacity_bytes,
            },
            slow_consumer: self.slow_consumer,
            close_grace: self.close_grace,
            close_peer_timeout: self.close_peer_timeout,
            idle_timeout: self.idle_timeout,
            keepalive: self.keepalive,
            first_frame_grace: self.first_frame_grace,
            stamp_client: self.stamp_client,
            issuer: match self.role {
                Role::Server => Issuer::Server,
                Role::Client => Issuer::Client,
            },
            max_outstanding_requests: self.max_outstanding_requests,
        }
    }
}

/// Where a link's received application frames go.
pub trait Delivery {
    /// An application frame arrived (not a reply to one of this side's
    /// requests: those complete their request). Return `Err` when the
    /// application panicked on it: the link is then dropped at once.
    fn deliver(&self, frame: Frame) -> Result<(), Panicked>;

    /// A `Goodbye` with `reason` was written to the peer.
    fn goodbye_written(&self, reason: GoodbyeReason) {
        let _ = reason;
    }
}

/// The application panicked on a frame (see [`Delivery::deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) frames_in: Cell<u64>,
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) frames_out: Cell<u64>,
    pub(crate) bytes_out: Cell<u64>,
    pub(crate) write_batches: Cell<u64>,
    pub(crate) queue_full: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

/// One established connection's protocol engine (see the module docs).
#[derive(Debug)]
pub struct Link {
    pub(crate) core: RefCell<ConnCore>,
    max_batch_frames: usize,
    /// Wakes the writer: frames queued, or closing started.
    wake_writer: Notify,
    /// Wakes the reader: the outbound queue has room again.
    wake_reader: Notify,
    /// Wakes the task to re-arm its timer: a deadline changed.
    wake_timer: Notify,
    pub(crate) counters: LinkCounters,
}

impl Link {
    /// A link that started at `started` (when the connection was accepted
    /// or dialed: the first-frame bound counts from there).
    pub fn new(config: &LinkConfig, started: Instant) -> Self {
        Self {
            core: RefCell::new(ConnCore::new(config.core(), started)),
            max_batch_frames: config.max_batch_frames.max(1),
            wake_writer: Notify::default(),
            wake_reader: Notify::default(),
            wake_timer: Notify::default(),
            counters: LinkCounters::default(),
        }
    }

    /// Whether sends are accepted (the link is open).
    pub fn is_open(&self) -> bool {
        self.core.borrow().is_open()
    }

    /// Whether the link has nothing more to do.
    pub fn is_done(&self) -> bool {
        self.core.borrow().is_done()
    }

    /// Queues a frame. Never waits.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        let mut core = self.core.borrow_mut();
        let result = core.enqueue(frame);
        match result {
            Ok(()) => {
                drop(core);
                self.wake_writer.notify();
            }
            Err(SendError::QueueFull) => {
                bump(&self.counters.queue_full, 1);
                // The slow-consumer policy may have started a close: arm its
                // bound (the clock is read only on this rare path).
                core.arm_close_bound(Instant::now());
                drop(core);
                self.wake_all();
            }
            Err(_) => {}
        }
        result
    }

    /// Closes on purpose: what is queued, then `Goodbye(reason, detail)`,
    /// then our side, within `close_grace`. `cause` is what the loss report
    /// will say. Returns whether this call started the close.
    pub fn close(&self, reason: GoodbyeReason, detail: &str, cause: CloseReason) -> bool {
        let started = self
            .core
            .borrow_mut()
            .close(reason, detail, cause, Instant::now());
        if started {
            self.wake_all();
        }
        started
    }

    /// Sends `frame` as a request of this side and returns the future of
    /// its reply. The request id is issued here (a server's carry bit 63,
    /// spec §9) and written into the header; a sealed frame is re-sealed.
    /// The frame is queued before this returns; nothing here waits.
    ///
    /// The future completes with the frame that carries the id, with
    /// [`RequestError::Timeout`] after `timeout`, or with
    /// [`RequestError::Disconnected`] as soon as the link closes. Dropping
    /// it forgets the request: a reply that comes later is dropped and
    /// counted.
    pub fn request(
        self: &Rc<Self>,
        mut frame: FrameMut,
        timeout: Duration,
    ) -> Result<impl Future<Output = Result<Frame, RequestError>> + use<>, RequestError> {
        let (id, slot) = {
            let mut core = self.core.borrow_mut();
            if !core.is_open() {
                return Err(RequestError::Send(SendError::NotConnected));
            }
            let limit = core.requests_limit();
            core.issue_request()
                .ok_or(RequestError::TooManyRequests { limit })?
        };
        frame.header_mut().set_request(id);
        if frame.header().is_sealed() {
            frame.reseal_header();
        }
        let forget = Forget {
            link: Rc::downgrade(self),
            id,
            timed_out: false,
        };
        if let Err(err) = self.send(frame.freeze()) {
            drop(forget);
            return Err(RequestError::Send(err));
        }
        let deadline = Instant::now() + timeout;
        Ok(async move {
            let mut forget = forget;
            let outcome = time::timeout_at(deadline, poll_fn(|cx| slot.poll_outcome(cx))).await;
            match outcome {
                Ok(Ok(frame)) => Ok(frame),
                Ok(Err(Unanswered::Disconnected(reason))) => {
                    Err(RequestError::Disconnected { reason })
                }
                Err(_) => {
                    forget.timed_out = true;
                    Err(RequestError::Timeout(timeout))
                }
            }
        })
    }

    /// Requests of this side waiting for a reply now.
    pub fn outstanding_requests(&self) -> usize {
        self.core.borrow().requests_outstanding()
    }

    /// Replies that arrived after their request gave up.
    pub fn late_replies(&self) -> u64 {
        self.core.borrow().late_replies()
    }

    /// Why the link ended (or is ending), once known.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.core.borrow().close_reason()
    }

    /// Wakes every part of the link's task: its state changed.
    pub(crate) fn wake_all(&self) {
        self.wake_writer.notify();
        self.wake_reader.notify();
        self.wake_timer.notify();
    }

    /// This side's requests on this link: outstanding now, and completed
    /// by outcome.
    pub fn request_stats(&self) -> RequestStats {
        self.core
            .try_borrow()
            .map_or_else(|_| RequestStats::default(), |core| core.request_stats())
    }

    /// Counters and queue state now.
    pub fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        let (queue_depth, queue_bytes) = self
            .core
            .try_borrow()
            .map_or((0, 0), |core| (core.queue_depth(), core.queue_bytes()));
        ConnectionStats {
            frames_in: c.frames_in.get(),
            bytes_in: c.bytes_in.get(),
            frames_out: c.frames_out.get(),
            bytes_out: c.bytes_out.get(),
            write_batches: c.write_batches.get(),
            queue_full: c.queue_full.get(),
            queue_depth,
            queue_bytes,
        }
    }
}

/// Removes an outstanding request from its link's table when its waiter
/// goes away, however it goes (reply, timeout, drop).
struct Forget {
    link: Weak<Link>,
    id: u64,
    /// The waiter gave up at its timeout (rather than being dropped).
    timed_out: bool,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(link) = self.link.upgrade()
            && let Ok(mut core) = link.core.try_borrow_mut()
        {
            core.forget_request(self.id, self.timed_out);
        }
    }
}

/// Runs an established link until its core is done: the reader, the writer
/// and the core's timer side by side.
///
/// # Cancel safety
/// Dropping the future drops the connection at once (the reader and writer
/// futures with it); the core records nothing more.
pub async fn run<R: FrameReader, W: FrameWriter, D: Delivery>(
    link: &Link,
    reader: &mut R,
    writer: &mut W,
    delivery: &D,
) {
    let mut read = pin!(read_loop(link, reader, delivery).fuse());
    let mut write = pin!(write_loop(link, writer, delivery).fuse());
    loop {
        let deadline = {
            let core = link.core.borrow();
            if core.is_done() {
                return;
            }
            core.next_deadline()
        };
        let mut timer = pin!(
            async move {
                match deadline {
                    Some(d) => time::sleep_until(d).await,
                    None => pending().await,
                }
            }
            .fuse()
        );
        let mut rearm = pin!(link.wake_timer.notified().fuse());
        select_biased! {
            () = read => {}
            () = write => {}
            () = rearm => {}
            () = timer => {
                link.core.borrow_mut().tick(Instant::now());
                link.wake_all();
            }
        }
    }
}

async fn read_loop<R: FrameReader, D: Delivery>(link: &Link, reader: &mut R, delivery: &D) {
    loop {
        let side = {
            let core = link.core.borrow();
            core.wants_input().then(|| core.read_side())
        };
        match side {
            // Ended, or paused until the outbound queue has room.
            None => {
                if link.core.borrow().read_side() == ReadSide::Ended {
                    return;
                }
                link.wake_reader.notified().await;
            }
            Some(ReadSide::Frames) => {
                let keep_reading = match reader.read_frame().await {
                    Ok(frame) => receive(link, frame, delivery),
                    Err(err) => read_error(link, err),
                };
                if !keep_reading {
                    return;
                }
            }
            Some(ReadSide::Discard) => {
                let read = reader.discard().await;
                let mut core = link.core.borrow_mut();
                match read {
                    Ok(0) => core.read_ended(Instant::now()),
                    Ok(_) => continue,
                    Err(err) => core.abort(CloseReason::Io(err.kind())),
                }
                drop(core);
                link.wake_all();
                return;
            }
            Some(ReadSide::Ended) => return,
        }
    }
}

/// One received frame: the core decides, the application gets what is its.
/// Returns whether to keep reading.
fn receive<D: Delivery>(link: &Link, frame: Frame, delivery: &D) -> bool {
    bump(&link.counters.frames_in, 1);
    bump(&link.counters.bytes_in, frame.len() as u64);
    let (received, timer_moved) = {
        let mut core = link.core.borrow_mut();
        if core.tracks_arrivals() {
            core.frame_arrived_at(Instant::now());
        }
        let received = core.receive(frame);
        (received, core.take_timer_moved())
    };
    if timer_moved {
        link.wake_timer.notify();
    }
    match received {
        Received::Deliver(frame) => {
            if delivery.deliver(frame).is_err() {
                link.core.borrow_mut().abort(CloseReason::HandlerPanicked);
                link.wake_all();
                return false;
            }
        }
        Received::Consumed => link.wake_writer.notify(),
        Received::Stop => {
            link.core.borrow_mut().arm_close_bound(Instant::now());
            link.wake_all();
        }
    }
    true
}

/// A read that returned no frame. Returns whether to keep reading.
fn read_error(link: &Link, err: Error) -> bool {
    let mut core = link.core.borrow_mut();
    let keep_reading = match err {
        Error::Closed => {
            core.read_ended(Instant::now());
            false
        }
        Error::Frame(err) => {
            // A peer's violation: rate-limited, as every peer-triggered line.
            static VIOLATION: crate::RateLimitedLog = crate::RateLimitedLog::new();
            if let Some(suppressed) = VIOLATION.allow() {
                tracing::debug!(%err, suppressed, "protocol violation");
            }
            core.read_failed(err, Instant::now());
            true
        }
        Error::Io(err) => {
            core.abort(CloseReason::Io(err.kind()));
            false
        }
        other => {
            static FAILED: crate::RateLimitedLog = crate::RateLimitedLog::new();
            if let Some(suppressed) = FAILED.allow() {
                tracing::debug!(err = %other, suppressed, "read failed");
            }
            core.abort(CloseReason::Io(io::ErrorKind::Other));
            false
        }
    };
    drop(core);
    link.wake_all();
    keep_reading
}

async fn write_loop<W: FrameWriter, D: Delivery>(link: &Link, writer: &mut W, delivery: &D) {
    let max_batch = link.max_batch_frames;
    let mut batch: Vec<Frame> = Vec::with_capacity(max_batch);
    loop {
        let step = link.core.borrow_mut().next_write(&mut batch, max_batch);
        match step {
            WriteStep::Wait => link.wake_writer.notified().await,
            WriteStep::Write { goodbye } => {
                count_batch(link, &batch);
                let BufResult(res, returned) = writer.write_batch(batch).await;
                batch = returned;
                batch.clear();
                if let Err(err) = res {
                    link.core.borrow_mut().abort(CloseReason::Io(err.kind()));
                    link.wake_all();
                    return;
                }
                link.core.borrow_mut().written();
                if let Some(reason) = goodbye {
                    delivery.goodbye_written(reason);
                }
                // Room again in the queue: a paused reader may go on.
                link.wake_reader.notify();
            }
            WriteStep::CloseOurSide(reason) => {
                let res = writer.close(reason).await;
                let mut core = link.core.borrow_mut();
                match res {
                    Ok(()) => core.our_side_closed(Instant::now()),
                    Err(err) => core.abort(CloseReason::Io(err.kind())),
                }
                drop(core);
                link.wake_all();
                return;
            }
            WriteStep::Finished => return,
        }
    }
}

/// Counted when handed to the transport, so a peer that has received a
/// frame always finds it counted; a failed write ends the connection.
fn count_batch(link: &Link, batch: &[Frame]) {
    let c = &link.counters;
    bump(&c.frames_out, batch.len() as u64);
    bump(&c.bytes_out, batch.iter().map(|f| f.len() as u64).sum());
    bump(&c.write_batches, 1);
}
