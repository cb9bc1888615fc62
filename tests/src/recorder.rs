//! A test application: records what the bus tells it, echoes `Echo`, panics
//! on request.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use async_channel::{Receiver, Sender};
use bus_core::{Bus, CloseReason, Command, ConnectionInfo, Frame, Handler, Peer};

use crate::{
    frames::{ECHO, ECHO_REPLY, PANIC_HANDLER},
    within,
};

/// Far more events than any scenario produces; overflowing it fails the test.
const EVENT_CAPACITY: usize = 200_000;

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

/// The recording handler.
#[derive(Debug)]
pub struct Recorder {
    events: Sender<Event>,
    lost_counts: Rc<RefCell<HashMap<Peer, usize>>>,
}

/// The test's side of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct Events {
    rx: Receiver<Event>,
    lost_counts: Rc<RefCell<HashMap<Peer, usize>>>,
}

impl Recorder {
    /// A recorder and the receiving end of its events.
    pub fn new() -> (Self, Events) {
        let (tx, rx) = async_channel::bounded(EVENT_CAPACITY);
        let lost_counts = Rc::new(RefCell::new(HashMap::new()));
        (
            Self {
                events: tx,
                lost_counts: lost_counts.clone(),
            },
            Events { rx, lost_counts },
        )
    }

    fn record(&self, event: Event) {
        // A closed channel means the test already ended; a full one is a bug.
        let sent = self.events.try_send(event);
        assert!(
            !matches!(sent, Err(async_channel::TrySendError::Full(_))),
            "test event channel overflowed"
        );
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
        if command == ECHO
            && let Peer::Client(id) = from
        {
            let mut reply = frame.into_mut();
            reply.header_mut().set_command(Command::from_u8(ECHO_REPLY));
            reply.seal();
            let _ = bus.send_to_client(id, reply.freeze());
        }
    }

    fn on_connected(&self, _bus: &Bus, peer: Peer, info: &ConnectionInfo) {
        self.record(Event::Connected(peer, info.clone()));
    }

    fn on_connection_lost(&self, _bus: &Bus, peer: Peer, reason: &CloseReason) {
        *self.lost_counts.borrow_mut().entry(peer).or_default() += 1;
        self.record(Event::Lost(peer, reason.clone()));
    }
}

impl Events {
    /// The next event, bounded by [`crate::STEP`].
    ///
    /// # Panics
    /// On timeout.
    pub async fn next(&self) -> Event {
        within("a handler event", self.rx.recv())
            .await
            .expect("recorder alive")
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
    pub fn drain_now(&self) -> Vec<Event> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }

    /// How many times the lost callback fired for `peer`.
    pub fn lost_count(&self, peer: Peer) -> usize {
        self.lost_counts.borrow().get(&peer).copied().unwrap_or(0)
    }
}
