//! The connection core: one connection's protocol state and every decision
//! the bus takes about it, as plain functions of (state, input, now).
//!
//! No compio, no socket, no clock: the driver (`driver.rs`) feeds it frames,
//! read and write outcomes and timer ticks, and carries out what it says
//! (deliver a frame to the application, write a batch, close our side, wait
//! for a deadline). So every rule can be unit-tested without a runtime.
//!
//! ```text
//!            close(reason) / violation / idle / end of stream
//!   Open ─────────────────────────────────────────────▶ Closing{goodbye, flush}
//!     │                                                    │ queue written, Goodbye written,
//!     │ I/O error, handler panic                           │ our side closed
//!     ▼                                                    ▼
//!   Done ◀──── peer's end of stream, or a deadline ──── Draining
//! ```
//!
//! Deadlines: `Closing` ends by `close_grace` after it starts; `Draining`
//! waits `close_peer_timeout` for the peer's end of stream; while `Open`, a
//! connection that sent no frame within `first_frame_grace` (spec §7), or
//! none for `idle_timeout`, is closed with `Goodbye(IdleTimeout)`.

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use crate::{
    buf::{Frame, FrameMut},
    config::SlowConsumerPolicy,
    error::SendError,
    goodbye::{Goodbye, GoodbyeReason},
    header::{Command, FrameError},
    queue::{OutQueue, QueueBounds},
    requests::{Issuer, Matched, ReplySlot, Requests},
};

/// Why a connection ended, as reported to
/// [`Handler::on_connection_lost`](crate::Handler::on_connection_lost).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the stream without a `Goodbye`.
    PeerClosed,
    /// The peer said `Goodbye`.
    PeerGoodbye(Goodbye),
    /// The peer broke a protocol rule; we sent this Goodbye reason.
    ProtocolViolation(GoodbyeReason),
    /// We closed on purpose with this Goodbye reason (shutdown, eviction,
    /// idle timeout, slow consumer).
    Closed(GoodbyeReason),
    /// The socket failed.
    Io(std::io::ErrorKind),
    /// The application handler panicked on a frame of this connection.
    HandlerPanicked,
    /// The connection's task panicked outside the handler (writer or
    /// transport).
    Panicked,
    /// The connection did not close within the shutdown deadline and was
    /// cancelled.
    Cancelled,
}

/// The bounds and policies one connection core runs with.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) queue: QueueBounds,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    pub(crate) close_grace: Duration,
    pub(crate) close_peer_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    /// Send a `Ping` after this long without receiving anything, so a
    /// silent peer (or a link that lost its packets) shows within
    /// `idle_timeout`.
    pub(crate) keepalive: Option<Duration>,
    /// Bound from the start to the first frame (spec §7); `None` on a side
    /// that speaks first itself (a client).
    pub(crate) first_frame_grace: Option<Duration>,
    /// The client id stamped into delivered frames (spec §5), if any.
    pub(crate) stamp_client: Option<u128>,
    /// Which side's request ids this connection issues (spec §9).
    pub(crate) issuer: Issuer,
    /// Most of this side's requests outstanding at once.
    pub(crate) max_outstanding_requests: usize,
}

/// The Goodbye a closing connection still has to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingGoodbye {
    reason: GoodbyeReason,
    detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Open,
    /// Writing what is queued (unless `flush` is off), then the Goodbye,
    /// then closing our side; bounded by the deadline.
    Closing {
        goodbye: Option<PendingGoodbye>,
        flush: bool,
    },
    /// Our side is closed; waiting for the peer's end of stream.
    Draining,
    /// Nothing more to do: the connection is dropped.
    Done,
}

/// What the reader does with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadSide {
    /// Frames are decoded and acted on.
    Frames,
    /// Input is read and thrown away until the peer's end of stream, so
    /// our close reaches it as an orderly one rather than a reset caused
    /// by unread data.
    Discard,
    /// The peer's end of stream was seen.
    Ended,
}

/// What the driver does with a received frame.
#[derive(Debug)]
pub(crate) enum Received {
    /// Give it to the application.
    Deliver(Frame),
    /// The bus took care of it (Ping answered, Pong consumed).
    Consumed,
    /// The connection is closing because of it; stop decoding frames and
    /// discard the rest of the input.
    Stop,
}

/// What the writer does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteStep {
    /// Write the frames now in the batch. `goodbye` is the reason of the
    /// Goodbye at its end, if it carries one.
    Write { goodbye: Option<GoodbyeReason> },
    /// Nothing to write: wait until woken.
    Wait,
    /// Close our sending side (the transport's orderly close), passing the
    /// Goodbye reason that was sent, if any.
    CloseOurSide(Option<GoodbyeReason>),
    /// The writer has nothing more to do.
    Finished,
}

/// One connection's protocol state (see the module docs).
#[derive(Debug)]
pub(crate) struct ConnCore {
    config: CoreConfig,
    phase: Phase,
    read: ReadSide,
    /// The first cause of the end; later causes do not replace it.
    cause: Option<CloseReason>,
    /// The bound of the current `Closing` or `Draining` phase.
    deadline: Option<Instant>,
    /// Set until the first frame arrives.
    first_frame_deadline: Option<Instant>,
    /// `next_deadline` changed without the driver knowing (the first frame
    /// disarmed its bound); see `take_timer_moved`.
    timer_moved: bool,
    /// When the last frame arrived (or the connection started), kept only
    /// with an idle timeout: the driver reports arrivals with
    /// [`ConnCore::frame_arrived_at`] then, so the close comes exactly one
    /// timeout after the last frame.
    last_frame_at: Option<Instant>,
    /// When the keep-alive check runs next, and whether a frame arrived
    /// since the last one.
    keepalive_deadline: Option<Instant>,
    received_since_keepalive: bool,
    /// The Goodbye reason the writer chose for its closing write.
    goodbye_sent: Option<GoodbyeReason>,
    queue: OutQueue,
    /// This side's requests waiting for their reply.
    requests: Requests,
    /// Frames dropped unsent from the queue (counted once, reported by
    /// `take_dropped`).
    dropped: usize,
    /// How the connection's task ended, once it has.
    task: TaskState,
}

/// The connection task's lifecycle, for the one loss report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Running,
    /// Shutdown is about to cancel the task.
    Cancelling,
    /// The task ran to its end.
    Completed,
    /// The loss was reported; nothing more happens.
    Reported,
}

impl ConnCore {
    pub(crate) fn new(config: CoreConfig, now: Instant) -> Self {
        Self {
            first_frame_deadline: config.first_frame_grace.map(|g| now + g),
            timer_moved: false,
            last_frame_at: config.idle_timeout.map(|_| now),
            keepalive_deadline: config.keepalive.map(|t| now + t),
            received_since_keepalive: false,
            queue: OutQueue::new(config.queue),
            requests: Requests::new(config.issuer, config.max_outstanding_requests),
            config,
            phase: Phase::Open,
            read: ReadSide::Frames,
            cause: None,
            deadline: None,
            goodbye_sent: None,
            dropped: 0,
            task: TaskState::Running,
        }
    }

    /// The connection's task ran to its end (not cancelled, not panicked).
    pub(crate) fn task_completed(&mut self) {
        if self.task == TaskState::Running || self.task == TaskState::Cancelling {
            self.task = TaskState::Completed;
        }
    }

    /// Shutdown is cancelling the task because it outlived the grace.
    pub(crate) fn task_cancelling(&mut self) {
        if self.task == TaskState::Running {
            self.task = TaskState::Cancelling;
        }
    }

    /// The cause to report to the application when the task is gone, exactly
    /// once: a task that did not complete was cancelled or panicked.
    ///
    /// # Panics
    /// If called twice (the loss notification fires exactly once).
    pub(crate) fn loss_report(&mut self) -> CloseReason {
        let reason = match self.task {
            TaskState::Running => CloseReason::Panicked,
            TaskState::Cancelling => CloseReason::Cancelled,
            TaskState::Completed => self.cause.clone().unwrap_or(CloseReason::PeerClosed),
            TaskState::Reported => panic!("a connection's loss was reported twice"),
        };
        self.task = TaskState::Reported;
        self.dropped += self.queue.clear();
        self.requests.fail_all(&reason);
        self.phase = Phase::Done;
        reason
    }

    /// A fresh request id of this side and the slot its reply lands in;
    /// `None` when the connection is not open or at the limit.
    pub(crate) fn issue_request(&mut self) -> Option<(u64, Rc<ReplySlot>)> {
        if self.phase != Phase::Open {
            return None;
        }
        self.requests.issue()
    }

    /// The waiter of request `id` gave up (at its timeout, or dropped).
    pub(crate) fn forget_request(&mut self, id: u64, timed_out: bool) {
        self.requests.forget(id, timed_out);
    }

    /// This side's requests, by outcome.
    pub(crate) fn request_stats(&self) -> crate::stats::RequestStats {
        self.requests.stats()
    }

    /// Most requests outstanding at once.
    pub(crate) fn requests_limit(&self) -> usize {
        self.requests.limit()
    }

    /// Requests waiting for a reply now.
    pub(crate) fn requests_outstanding(&self) -> usize {
        self.requests.outstanding()
    }

    /// Replies that arrived after their request gave up.
    pub(crate) fn late_replies(&self) -> u64 {
        self.requests.late()
    }

    /// Why the connection ended or is ending, once known.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.cause.clone()
    }

    /// Whether [`ConnCore::next_deadline`] moved since the driver last
    /// armed its timer from it (so the driver re-arms only then, not per
    /// frame).
    pub(crate) fn take_timer_moved(&mut self) -> bool {
        std::mem::take(&mut self.timer_moved)
    }

    /// Whether the driver must report frame arrivals with
    /// [`ConnCore::frame_arrived_at`] (only with an idle timeout: without
    /// one no clock is read per frame).
    pub(crate) fn tracks_arrivals(&self) -> bool {
        self.last_frame_at.is_some()
    }

    /// A frame arrived at `now` (see [`ConnCore::tracks_arrivals`]).
    pub(crate) fn frame_arrived_at(&mut self, now: Instant) {
        if self.last_frame_at.is_some() {
            self.last_frame_at = Some(now);
        }
    }

    /// When the idle timeout closes the connection, if nothing arrives
    /// before.
    fn idle_deadline(&self) -> Option<Instant> {
        Some(self.last_frame_at? + self.config.idle_timeout?)
    }

    /// Whether sends are accepted (the connection is open).
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether the connection has nothing more to do.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// What the reader does with input now.
    pub(crate) fn read_side(&self) -> ReadSide {
        self.read
    }

    /// Whether the reader should take more input now. A connection whose
    /// own outbound queue is full is not read until it drains (its input
    /// would produce more replies and Pongs); input that is only discarded
    /// is always read.
    pub(crate) fn wants_input(&self) -> bool {
        match self.read {
            ReadSide::Frames => self.phase != Phase::Open || !self.queue.pauses_input(),
            ReadSide::Discard => true,
            ReadSide::Ended => false,
        }
    }

    /// Frames waiting in the outbound queue.
    pub(crate) fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Bytes held by the outbound queue (waiting and being written).
    pub(crate) fn queue_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Frames dropped unsent since the last call.
    pub(crate) fn take_dropped(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }

    /// Queues a frame from the application. Never waits.
    ///
    /// On `QueueFull` with the `Disconnect` policy the connection starts
    /// closing with `Goodbye(SlowConsumer)`.
    /// (The close bound of that close is armed by the caller with
    /// [`ConnCore::arm_close_bound`]: a send reads no clock.)
    pub(crate) fn enqueue(&mut self, frame: Frame) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotConnected);
        }
        let result = self.queue.push(frame);
        if result == Err(SendError::QueueFull)
            && self.config.slow_consumer == SlowConsumerPolicy::Disconnect
        {
            let reason = GoodbyeReason::SlowConsumer;
            self.start_closing(
                Some(PendingGoodbye {
                    reason,
                    detail: "outbound queue overflowed".into(),
                }),
                true,
                CloseReason::Closed(reason),
                None,
            );
        }
        result
    }

    /// A frame arrived (it passed every rule of spec §1).
    pub(crate) fn receive(&mut self, frame: Frame) -> Received {
        if self.read != ReadSide::Frames {
            return Received::Consumed;
        }
        if self.first_frame_deadline.take().is_some() {
            self.timer_moved = true;
        }
        self.received_since_keepalive = true;
        match frame.header().command() {
            command @ (Command::Application(_) | Command::Pong) => {
                let frame = match self.config.stamp_client {
                    Some(id) if command != Command::Pong => stamp_client(frame, id),
                    _ => frame,
                };
                // A reply to one of this side's requests completes it and
                // never reaches the application (spec §9).
                match self.requests.match_reply(frame) {
                    Matched::NotOurs(frame) if command != Command::Pong => Received::Deliver(frame),
                    Matched::NotOurs(_) | Matched::Completed | Matched::Late => Received::Consumed,
                }
            }
            Command::Ping => {
                // Only read while the queue has room (`wants_input`), so the
                // Pong fits unless the application filled it meanwhile; then
                // it is dropped and the peer's own timeout tells it.
                if self.phase == Phase::Open {
                    let _ = self.queue.push(pong_for(&frame));
                }
                Received::Consumed
            }
            Command::Goodbye => {
                let goodbye = Goodbye::decode(frame.header().command_area());
                // The peer stops reading: what is queued is not written.
                self.start_closing(None, false, CloseReason::PeerGoodbye(goodbye), None);
                self.read = ReadSide::Discard;
                Received::Stop
            }
            Command::ReplicaHello | Command::ReplicaChallenge | Command::ReplicaFinish => {
                let reason = GoodbyeReason::ProtocolViolation;
                self.start_closing(
                    Some(PendingGoodbye {
                        reason,
                        detail: "replica handshake command outside a replica handshake".into(),
                    }),
                    true,
                    CloseReason::ProtocolViolation(reason),
                    None,
                );
                self.read = ReadSide::Discard;
                Received::Stop
            }
            Command::Invalid | Command::Reserved(_) => {
                unreachable!("the decoder refuses invalid and reserved commands")
            }
        }
    }

    /// The reader refused a frame: Goodbye with the matching reason after
    /// what is queued, and discard the rest of the input.
    pub(crate) fn read_failed(&mut self, err: FrameError, now: Instant) {
        let reason = err.goodbye_reason();
        self.start_closing(
            Some(PendingGoodbye {
                reason,
                detail: err.to_string(),
            }),
            true,
            CloseReason::ProtocolViolation(reason),
            Some(now),
        );
        self.read = ReadSide::Discard;
    }

    /// The peer's end of stream.
    pub(crate) fn read_ended(&mut self, now: Instant) {
        self.read = ReadSide::Ended;
        match self.phase {
            // A half-closed peer may still read: write what is queued, no
            // Goodbye, within close_grace.
            Phase::Open => self.start_closing(None, true, CloseReason::PeerClosed, Some(now)),
            Phase::Draining => self.phase = Phase::Done,
            Phase::Closing { .. } | Phase::Done => {}
        }
    }

    /// The socket failed, or the application panicked on this connection:
    /// nothing more can be done in order, so the connection ends now.
    pub(crate) fn abort(&mut self, cause: CloseReason) {
        self.set_cause(cause);
        self.dropped += self.queue.clear();
        if let Some(cause) = &self.cause {
            self.requests.fail_all(cause);
        }
        self.phase = Phase::Done;
    }

    /// Closes on purpose: what is queued, then `Goodbye(reason, detail)`,
    /// then our side, within `close_grace`. Returns whether this call
    /// started the close (the first cause wins).
    pub(crate) fn close(
        &mut self,
        reason: GoodbyeReason,
        detail: &str,
        cause: CloseReason,
        now: Instant,
    ) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        self.start_closing(
            Some(PendingGoodbye {
                reason,
                detail: detail.to_owned(),
            }),
            true,
            cause,
            Some(now),
        );
        true
    }

    /// Like [`ConnCore::close`] but without a Goodbye and without writing
    /// what is queued (the application panicked before the connection was
    /// announced).
    pub(crate) fn close_silently(&mut self, cause: CloseReason, now: Instant) {
        self.start_closing(None, false, cause, Some(now));
    }

    /// The one way into `Closing`; only from `Open`.
    fn start_closing(
        &mut self,
        goodbye: Option<PendingGoodbye>,
        flush: bool,
        cause: CloseReason,
        now: Option<Instant>,
    ) {
        if self.phase != Phase::Open {
            return;
        }
        self.set_cause(cause);
        // Nobody answers a closing connection's requests: fail them now,
        // not at their timeouts.
        if let Some(cause) = &self.cause {
            self.requests.fail_all(cause);
        }
        self.phase = Phase::Closing { goodbye, flush };
        // `receive` has no clock: the driver arms the bound on its next
        // tick (`arm_close_bound`), which it does at once.
        self.deadline = now.map(|now| now + self.config.close_grace);
    }

    /// Arms the close bound if closing started without a clock reading
    /// (from `receive` or `enqueue`). The driver calls it after every
    /// receive that returned `Stop`, the sender after a refused send.
    pub(crate) fn arm_close_bound(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closing { .. }) && self.deadline.is_none() {
            self.deadline = Some(now + self.config.close_grace);
        }
    }

    fn set_cause(&mut self, cause: CloseReason) {
        if self.cause.is_none() {
            self.cause = Some(cause);
        }
    }

    /// The writer asks what to do; frames to write go into `batch`.
    pub(crate) fn next_write(&mut self, batch: &mut Vec<Frame>, max: usize) -> WriteStep {
        debug_assert!(batch.is_empty());
        match &mut self.phase {
            Phase::Open => {
                self.queue.drain_into(batch, max);
                if batch.is_empty() {
                    WriteStep::Wait
                } else {
                    WriteStep::Write { goodbye: None }
                }
            }
            Phase::Closing { goodbye, flush } => {
                if !*flush {
                    self.dropped += self.queue.clear();
                }
                self.queue.drain_into(batch, max);
                if !batch.is_empty() {
                    return WriteStep::Write { goodbye: None };
                }
                if let Some(PendingGoodbye { reason, detail }) = goodbye.take() {
                    batch.push(Goodbye::frame(reason, &detail));
                    self.goodbye_sent = Some(reason);
                    return WriteStep::Write {
                        goodbye: Some(reason),
                    };
                }
                WriteStep::CloseOurSide(self.goodbye_sent)
            }
            Phase::Draining | Phase::Done => WriteStep::Finished,
        }
    }

    /// The batch from the last `next_write` has been written.
    pub(crate) fn written(&mut self) {
        self.queue.written();
    }

    /// Our sending side is closed.
    pub(crate) fn our_side_closed(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Closing { .. }) {
            return;
        }
        if self.read == ReadSide::Ended {
            self.phase = Phase::Done;
        } else {
            self.phase = Phase::Draining;
            self.deadline = Some(now + self.config.close_peer_timeout);
        }
    }

    /// The next instant [`ConnCore::tick`] has something to do, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => [
                self.first_frame_deadline,
                self.idle_deadline(),
                self.keepalive_deadline,
            ]
            .into_iter()
            .flatten()
            .min(),
            Phase::Closing { .. } | Phase::Draining => self.deadline,
            Phase::Done => None,
        }
    }

    /// Time has passed: apply every deadline that is due at `now`.
    pub(crate) fn tick(&mut self, now: Instant) {
        match self.phase {
            Phase::Open => {
                if self.first_frame_deadline.is_some_and(|d| now >= d) {
                    self.first_frame_deadline = None;
                    let reason = GoodbyeReason::IdleTimeout;
                    self.close(
                        reason,
                        "no frame received within handshake_grace",
                        CloseReason::Closed(reason),
                        now,
                    );
                    return;
                }
                if let (Some(due), Some(interval)) =
                    (self.keepalive_deadline, self.config.keepalive)
                    && now >= due
                {
                    if !std::mem::take(&mut self.received_since_keepalive) {
                        // Nothing heard for a whole interval: ask. A full
                        // queue skips it (the queue proves we are busy).
                        let _ = self.queue.push(keepalive_ping());
                    }
                    self.keepalive_deadline = Some(now + interval);
                }
                if self.idle_deadline().is_some_and(|due| now >= due) {
                    let reason = GoodbyeReason::IdleTimeout;
                    self.close(
                        reason,
                        "no frame received within idle_timeout",
                        CloseReason::Closed(reason),
                        now,
                    );
                }
            }
            Phase::Closing { .. } | Phase::Draining => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.dropped += self.queue.clear();
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }
}

/// Sets the header's `client` field to the connection's id (spec §5). The
/// received frame has exactly one handle, so this does not copy. A sealed
/// frame gets its header checksum recomputed (240 bytes; the body checksum
/// is unchanged), so what the handler sees still verifies and can be sent
/// on as it is.
fn stamp_client(frame: Frame, id: u128) -> Frame {
    if frame.header().client() == id {
        return frame;
    }
    let mut frame = frame.into_mut();
    frame.header_mut().set_client(id);
    if frame.header().is_sealed() {
        frame.reseal_header();
    }
    frame.freeze()
}

/// The `Ping` a keep-alive sends.
fn keepalive_ping() -> Frame {
    let mut ping = FrameMut::new(Command::Ping, 0);
    ping.seal();
    ping.freeze()
}

/// `Pong` with the `Ping`'s `request` and `command_area` (spec §2).
pub(crate) fn pong_for(ping: &Frame) -> Frame {
    let mut reply = FrameMut::new(Command::Pong, 0);
    let header = reply.header_mut();
    header.set_request(ping.header().request());
    *header.command_area_mut() = *ping.header().command_area();
    reply.seal();
    reply.freeze()
}

#[cfg(test)]
mod tests;
