//! What the two halves of a WebSocket connection share: the sending side
//! of the byte layer, taken out and put back, and the one control slot.
//!
//! The [`Sink`] lives in a `Cell` slot. Whoever writes takes it out
//! ([`Shared::hold`] for the writer, which waits for it; [`Shared::try_hold`]
//! for the reader, which only takes it when the writer is idle) and owns it
//! across its awaits; [`Held`] puts it back when dropped and wakes the
//! other half. No `RefCell` borrow ever spans an await.
//!
//! Pongs and close frames go through one slot of at most 139 bytes. The
//! reader that meets a ping waits until the slot is free, so a peer that
//! floods pings and never reads stops being read: nothing queues up.
//! Whoever holds the sink writes the slot: the writer between two messages
//! and before it gives the sink back, or the reader itself while the writer
//! is idle.

use std::{
    cell::Cell,
    future::poll_fn,
    io,
    task::{Poll, Waker},
};

use bus_core::limits::WS_MAX_CONTROL_PAYLOAD_BYTES;

use crate::{
    codec::{self, CloseBody, MAX_HEADER_BYTES, MaskKeys},
    io::Sink,
};

/// Longest control frame: a header and 125 bytes.
const CONTROL_BYTES: usize = MAX_HEADER_BYTES + WS_MAX_CONTROL_PAYLOAD_BYTES;

/// The one pending control frame (pong or close), encoded; empty when
/// `len` is 0.
#[derive(Debug, Clone, Copy)]
struct Control {
    bytes: [u8; CONTROL_BYTES],
    len: usize,
}

impl Control {
    const EMPTY: Self = Self {
        bytes: [0; CONTROL_BYTES],
        len: 0,
    };
}

/// What both halves hold (behind one `Rc`).
pub(crate) struct Shared {
    /// The sending side, while nobody writes.
    sink: Cell<Option<Sink>>,
    /// A write future was dropped while it owned the sink: it is gone.
    sink_lost: Cell<bool>,
    /// The writer waiting for the reader to give the sink back.
    writer_waiting: Cell<Option<Waker>>,
    /// The reader waiting for the control slot to empty.
    reader_waiting: Cell<Option<Waker>>,
    control: Cell<Control>,
    /// The close code of a violation the reader found; the writer's close
    /// sends it instead of the one derived from the Goodbye reason.
    pub(crate) violation: Cell<Option<u16>>,
    /// The close frame the peer sent, if it did.
    pub(crate) peer_close: Cell<Option<CloseBody>>,
    /// Our close frame is queued or out.
    pub(crate) close_sent: Cell<bool>,
    /// The mask keys, on the client side.
    keys: Cell<Option<MaskKeys>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("sink_lost", &self.sink_lost.get())
            .field("control_pending", &self.control_pending())
            .field("violation", &self.violation.get())
            .field("peer_close", &self.peer_close.get())
            .field("close_sent", &self.close_sent.get())
            .finish_non_exhaustive()
    }
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the WebSocket's sending side was lost with a cancelled write",
    )
}

fn wake(slot: &Cell<Option<Waker>>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

impl Shared {
    /// `client`: frames are masked with fresh keys.
    pub(crate) fn new(sink: Sink, client: bool) -> Self {
        Self {
            sink: Cell::new(Some(sink)),
            sink_lost: Cell::new(false),
            writer_waiting: Cell::new(None),
            reader_waiting: Cell::new(None),
            control: Cell::new(Control::EMPTY),
            violation: Cell::new(None),
            peer_close: Cell::new(None),
            close_sent: Cell::new(false),
            keys: Cell::new(client.then(MaskKeys::new)),
        }
    }

    /// A fresh mask key on the client side, `None` on the server side.
    pub(crate) fn next_key(&self) -> Option<[u8; 4]> {
        let mut keys = self.keys.get()?;
        let key = keys.next_key();
        self.keys.set(Some(keys));
        Some(key)
    }

    /// Whether the control slot holds a frame.
    pub(crate) fn control_pending(&self) -> bool {
        self.control.get().len > 0
    }

    /// Encodes a control frame into the slot, which must be empty.
    pub(crate) fn queue_control(&self, opcode: u8, payload: &[u8]) {
        debug_assert!(!self.control_pending(), "one control frame at a time");
        let key = self.next_key();
        let mut slot = Control::EMPTY;
        let mut head = [0; MAX_HEADER_BYTES];
        let n = codec::encode_header(&mut head, opcode, payload.len(), key);
        slot.bytes[..n].copy_from_slice(&head[..n]);
        let end = n + payload.len();
        codec::copy_masked(&mut slot.bytes[n..end], payload, key, 0);
        slot.len = end;
        self.control.set(slot);
    }

    /// The sink, waiting while the reader writes a pong with it.
    pub(crate) async fn hold(&self) -> io::Result<Held<'_>> {
        poll_fn(|cx| {
            if let Some(held) = self.try_hold()? {
                return Poll::Ready(Ok(held));
            }
            self.writer_waiting.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// The sink if nobody holds it.
    pub(crate) fn try_hold(&self) -> io::Result<Option<Held<'_>>> {
        if self.sink_lost.get() {
            return Err(lost());
        }
        Ok(self.sink.take().map(|sink| Held {
            shared: self,
            sink: Some(sink),
            busy: false,
        }))
    }

    /// Queues `payload` as a pong once the slot is free, and writes it at
    /// once when the writer is idle. Waits (and so stops the reader) while
    /// the previous control frame is not out.
    pub(crate) async fn pong(&self, payload: &[u8]) -> io::Result<()> {
        loop {
            if let Some(mut held) = self.try_hold()? {
                // The writer is idle: write what is pending ourselves.
                held.finish().await?;
                if !self.close_sent.get() {
                    self.queue_control(codec::OP_PONG, payload);
                    held.finish().await?;
                }
                return Ok(());
            }
            if !self.control_pending() {
                if !self.close_sent.get() {
                    // The writer holds the sink and writes the slot before
                    // it gives the sink back.
                    self.queue_control(codec::OP_PONG, payload);
                }
                return Ok(());
            }
            // The writer holds the sink and has a control frame to write.
            poll_fn(|cx| {
                if self.control_pending() && self.sink_is_held() {
                    self.reader_waiting.set(Some(cx.waker().clone()));
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
        }
    }

    fn sink_is_held(&self) -> bool {
        let sink = self.sink.take();
        let held = sink.is_none();
        self.sink.set(sink);
        held && !self.sink_lost.get()
    }
}

/// The sink, taken out of [`Shared`]; put back when dropped. A write
/// future dropped while it used the sink loses it: the connection's sending
/// side fails from then on.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    shared: &'a Shared,
    sink: Option<Sink>,
    /// An operation on the sink is in flight.
    busy: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.busy {
            self.shared.sink_lost.set(true);
        } else if let Some(sink) = self.sink.take() {
            self.shared.sink.set(Some(sink));
        }
        wake(&self.shared.writer_waiting);
        wake(&self.shared.reader_waiting);
    }
}

/// Runs one operation on the held sink, marking it in flight meanwhile.
macro_rules! on_sink {
    ($held:ident, $sink:ident => $op:expr) => {{
        $held.busy = true;
        let $sink = $held.sink.as_mut().expect("held until dropped");
        let res = $op.await;
        $held.busy = false;
        res
    }};
}

impl Held<'_> {
    /// See [`Sink::write`].
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        on_sink!(self, sink => sink.write(data))
    }

    /// See [`Sink::write_frame`].
    pub(crate) async fn write_frame(
        &mut self,
        head: &[u8],
        frame: &bus_core::Frame,
    ) -> io::Result<()> {
        on_sink!(self, sink => sink.write_frame(head, frame))
    }

    /// Moves a pending control frame into the sink (it goes out with the
    /// next flush) and frees the slot.
    pub(crate) async fn drain_control(&mut self) -> io::Result<()> {
        let control = self.shared.control.get();
        if control.len == 0 {
            return Ok(());
        }
        self.write(&control.bytes[..control.len]).await?;
        self.shared.control.set(Control::EMPTY);
        wake(&self.shared.reader_waiting);
        Ok(())
    }

    /// Writes the control slot and everything queued, until no control
    /// frame is pending: the last check and the sink's return happen with
    /// no await in between, so nothing is left in the slot unwritten.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        loop {
            self.drain_control().await?;
            on_sink!(self, sink => sink.flush())?;
            if !self.shared.control_pending() {
                return Ok(());
            }
        }
    }

    /// Writes everything, then closes the sending side (see
    /// [`Sink::shutdown`]).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        self.drain_control().await?;
        on_sink!(self, sink => sink.shutdown())
    }
}
