//! A test application: records what the bus tells it, echoes `Echo`, panics
//! on request.
//!
//! The recorder never panics by accident: a panic inside a handler is caught
//! by the bus and reported as `HandlerPanicked`, which would turn a broken
//! test into a wrong close reason. What goes wrong in the recorder itself (a
//! full event channel, an echo reply refused with `QueueFull`) is kept as a
//! *fault* instead, and the test's side ([`Events`]) fails the test with it
//! on its next call, or when it is dropped.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::{Rc, Weak},
};

use async_channel::{Receiver, Sender, TrySendError};
use bus_core::{
    Bus, CloseReason, Command, ConnectionInfo, Frame, GoodbyeReason, Handler, Peer, SendError,
};

use crate::{
    frames::{ECHO, ECHO_REPLY, PANIC_HANDLER},
    within,
};

/// Far more events than any scenario produces; overflowing it fails the test.
pub const EVENT_CAPACITY: usize = 200_000;

/// The `Goodbye` detail of a connection the recorder closed because an echo
/// reply was refused with `QueueFull`, so its client stops waiting at once.
pub const REPLY_REFUSED_DETAIL: &str = "test recorder: echo reply refused with QueueFull";

/// What the handler saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// A connection was registered.
    Connected(Peer, ConnectionInfo),
    /// A frame reached the handler.
    Frame(Peer, Frame),
    /// A connection ended.
    Lost(Peer, CloseReason),
}

/// State the recorder and the test share.
#[derive(Debug, Default)]
struct Shared {
    lost_counts: RefCell<HashMap<Peer, usize>>,
    /// What went wrong in the recorder; any entry fails the test.
    faults: RefCell<Vec<String>>,
    /// Echo replies refused for a reason a closing connection explains
    /// (`NotConnected`, `ShuttingDown`).
    refused_replies: RefCell<Vec<(Peer, SendError)>>,
}

/// The recording handler.
#[derive(Debug)]
pub struct Recorder {
    events: Sender<Event>,
    shared: Rc<Shared>,
    /// Dies with the handler: the test's [`Events::handler_dropped`].
    _alive: Rc<()>,
}

/// The test's side of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct Events {
    rx: Receiver<Event>,
    shared: Rc<Shared>,
    handler: Weak<()>,
    _check: Rc<FaultCheck>,
}

/// Fails the test when the last [`Events`] handle goes away with faults
/// nobody looked at.
#[derive(Debug)]
struct FaultCheck(Rc<Shared>);

impl Drop for FaultCheck {
    fn drop(&mut self) {
        let faults = self.0.faults.borrow();
        assert!(
            std::thread::panicking() || faults.is_empty(),
            "the test recorder failed: {faults:?}"
        );
    }
}

impl Recorder {
    /// A recorder and the receiving end of its events.
    pub fn new() -> (Self, Events) {
        Self::with_capacity(EVENT_CAPACITY)
    }

    /// A recorder whose event channel holds `capacity` events.
    pub fn with_capacity(capacity: usize) -> (Self, Events) {
        let (tx, rx) = async_channel::bounded(capacity);
        let shared = Rc::new(Shared::default());
        let alive = Rc::new(());
        let events = Events {
            rx,
            handler: Rc::downgrade(&alive),
            _check: Rc::new(FaultCheck(shared.clone())),
            shared: shared.clone(),
        };
        (
            Self {
                events: tx,
                shared,
                _alive: alive,
            },
            events,
        )
    }

    fn fault(&self, fault: String) {
        self.shared.faults.borrow_mut().push(fault);
    }

    fn record(&self, event: Event) {
        // A closed channel means the test already ended; a full one is a
        // fault of the test, reported to it rather than panicking here.
        if let Err(TrySendError::Full(event)) = self.events.try_send(event) {
            self.fault(format!(
                "the event channel overflowed ({} events); lost {event:?}",
                self.events.capacity().unwrap_or(0)
            ));
        }
    }

    fn reply(&self, bus: &Bus, from: Peer, frame: Frame) {
        let Peer::Client(id) = from else { return };
        let request = frame.header().request();
        let mut reply = frame.into_mut();
        reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
        reply.seal();
        match bus.send_to_client(id, reply.freeze()) {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                self.fault(format!(
                    "echo reply to {id:?} (request {request}) refused with QueueFull"
                ));
                // The client would wait for the reply until its timeout:
                // tell it now. Already closing (policy Disconnect) is fine.
                let _ = bus.close_client(id, GoodbyeReason::Evicted, REPLY_REFUSED_DETAIL);
            }
            Err(err) => self.shared.refused_replies.borrow_mut().push((from, err)),
        }
    }
}

impl Handler for Recorder {
    fn on_frame(&self, bus: &Bus, from: Peer, frame: Frame) {
        let command = frame.header().command_raw();
        self.record(Event::Frame(from, frame.clone()));
        assert!(
            command != PANIC_HANDLER,
            "test handler panics on command {PANIC_HANDLER}"
        );
        if command == ECHO {
            self.reply(bus, from, frame);
        }
    }

    fn on_connected(&self, _bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        self.record(Event::Connected(peer, info.clone()));
    }

    fn on_connection_lost(&self, _bus: &Bus, peer: Peer, reason: &CloseReason) {
        *self
            .shared
            .lost_counts
            .borrow_mut()
            .entry(peer)
            .or_default() += 1;
        self.record(Event::Lost(peer, reason.clone()));
    }
}

impl Events {
    /// Fails the test if the recorder had a fault.
    ///
    /// # Panics
    /// With the faults, if there are any.
    pub fn assert_no_faults(&self) {
        let faults = self.shared.faults.borrow();
        assert!(faults.is_empty(), "the test recorder failed: {faults:?}");
    }

    /// The faults recorded so far, left in place.
    pub fn faults(&self) -> Vec<String> {
        self.shared.faults.borrow().clone()
    }

    /// Takes the faults recorded so far (for tests of the recorder itself).
    pub fn take_faults(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.faults.borrow_mut())
    }

    /// Echo replies refused with `NotConnected` or `ShuttingDown` (a close
    /// was under way), in order.
    pub fn refused_replies(&self) -> Vec<(Peer, SendError)> {
        self.shared.refused_replies.borrow().clone()
    }

    /// Whether the handler has been dropped (every `Bus` clone is gone).
    pub fn handler_dropped(&self) -> bool {
        self.handler.strong_count() == 0
    }

    /// The next event, bounded by [`crate::STEP`].
    ///
    /// # Panics
    /// On timeout, or if the recorder had a fault.
    pub async fn next(&self) -> Event {
        self.assert_no_faults();
        let event = within("a handler event", self.rx.recv())
            .await
            .expect("recorder alive");
        self.assert_no_faults();
        event
    }

    /// Waits for the next `Connected` event and returns the peer.
    ///
    /// # Panics
    /// If another event comes first.
    pub async fn connected(&self) -> Peer {
        match self.next().await {
            Event::Connected(peer, _) => peer,
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    /// Waits for the next `Connected` event and returns the peer and what
    /// the handler was told about the connection.
    ///
    /// # Panics
    /// If another event comes first.
    pub async fn connected_info(&self) -> (Peer, ConnectionInfo) {
        match self.next().await {
            Event::Connected(peer, info) => (peer, info),
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    /// Waits for the next frame event.
    ///
    /// # Panics
    /// If another event comes first.
    pub async fn frame(&self) -> (Peer, Frame) {
        match self.next().await {
            Event::Frame(peer, frame) => (peer, frame),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Waits for `peer`'s `Lost` event, skipping frame events of that peer,
    /// and returns the reason.
    ///
    /// # Panics
    /// On an unrelated event or timeout.
    pub async fn lost(&self, peer: Peer) -> CloseReason {
        loop {
            match self.next().await {
                Event::Lost(p, reason) if p == peer => return reason,
                Event::Frame(p, _) if p == peer => {}
                other => panic!("expected Lost({peer:?}), got {other:?}"),
            }
        }
    }

    /// Events already recorded, without waiting.
    ///
    /// # Panics
    /// If the recorder had a fault.
    pub fn drain_now(&self) -> Vec<Event> {
        self.assert_no_faults();
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }

    /// How many times the lost callback fired for `peer`.
    pub fn lost_count(&self, peer: Peer) -> usize {
        self.shared
            .lost_counts
            .borrow()
            .get(&peer)
            .copied()
            .unwrap_or(0)
    }
}
