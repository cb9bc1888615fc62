//! Requests this side sent on one connection and waits to have answered:
//! the table of outstanding request ids (part of the connection core), and
//! the slot each waiter watches.
//!
//! Every outstanding request completes exactly once: with the frame that
//! carries its id, or with the connection's close (at once, not at its
//! timeout), or by its waiter giving up (timeout, drop), which removes it
//! so a late reply finds nothing and is dropped and counted (spec §9).
//!
//! Ids are per connection and carry the side that issued them: a server's
//! have bit 63 set, a client's have it clear (spec §9), so neither side can
//! mistake the other's request for a reply.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use crate::{buf::Frame, id::IdHash, state::CloseReason, stats::RequestStats};

/// Bit 63 of `request` marks an id a server issued (spec §9).
pub const SERVER_REQUEST_BIT: u64 = 1 << 63;

/// Which side of the connection issues this table's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issuer {
    /// Ids with bit 63 set.
    Server,
    /// Ids with bit 63 clear.
    Client,
}

/// How an outstanding request ended when it did not get its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The connection closed first.
    Disconnected(CloseReason),
}

/// Where one request's outcome lands; watched by its waiter.
#[derive(Default)]
pub(crate) struct ReplySlot {
    outcome: RefCell<Option<Result<Frame, Unanswered>>>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for ReplySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplySlot")
            .field("done", &self.outcome.try_borrow().map(|o| o.is_some()))
            .finish_non_exhaustive()
    }
}

impl ReplySlot {
    fn fill(&self, outcome: Result<Frame, Unanswered>) {
        *self.outcome.borrow_mut() = Some(outcome);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The outcome once there is one; otherwise registers `cx` to be woken.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Result<Frame, Unanswered>> {
        if let Some(outcome) = self.outcome.borrow_mut().take() {
            return Poll::Ready(outcome);
        }
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// What a received frame's `request` id means to this table.
#[derive(Debug)]
pub(crate) enum Matched {
    /// Not one of ours: the frame goes on as usual.
    NotOurs(Frame),
    /// It completed an outstanding request.
    Completed,
    /// One of ours that nobody waits for any more (a late reply): dropped.
    Late,
}

/// The outstanding requests of one connection.
#[derive(Debug)]
pub(crate) struct Requests {
    issuer: Issuer,
    limit: usize,
    /// The next sequence number (without the issuer bit); ids below it were
    /// issued.
    next: u64,
    slots: HashMap<u64, Rc<ReplySlot>, IdHash>,
    /// Completed with their reply, failed by the close, given up at their
    /// timeout; replies that came after their waiter gave up.
    replied: u64,
    disconnected: u64,
    timed_out: u64,
    late: u64,
    /// Whether the table takes new requests (not once the connection
    /// started closing).
    open: bool,
}

impl Requests {
    pub(crate) fn new(issuer: Issuer, limit: usize) -> Self {
        Self {
            issuer,
            limit,
            next: 1,
            slots: HashMap::default(),
            replied: 0,
            disconnected: 0,
            timed_out: 0,
            late: 0,
            open: true,
        }
    }

    /// Requests waiting right now.
    pub(crate) fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// Late replies dropped so far.
    pub(crate) fn late(&self) -> u64 {
        self.late
    }

    /// The most requests outstanding at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `id` is one this side issued.
    fn is_ours(&self, id: u64) -> bool {
        match self.issuer {
            Issuer::Server => id & SERVER_REQUEST_BIT != 0,
            Issuer::Client => id != 0 && id & SERVER_REQUEST_BIT == 0 && id < self.next,
        }
    }

    /// A fresh id and the slot its outcome lands in; `None` at the limit
    /// or once the connection is closing.
    pub(crate) fn issue(&mut self) -> Option<(u64, Rc<ReplySlot>)> {
        if !self.open || self.slots.len() >= self.limit {
            return None;
        }
        let sequence = self.next;
        // 2^63 requests on one connection do not happen; wrap past 0 anyway.
        self.next = (sequence + 1) & !SERVER_REQUEST_BIT;
        if self.next == 0 {
            self.next = 1;
        }
        let id = match self.issuer {
            Issuer::Server => sequence | SERVER_REQUEST_BIT,
            Issuer::Client => sequence,
        };
        let slot = Rc::new(ReplySlot::default());
        let previous = self.slots.insert(id, slot.clone());
        assert!(previous.is_none(), "request id {id:#x} issued twice");
        Some((id, slot))
    }

    /// The waiter of `id` gave up (timeout or drop); a reply that comes
    /// later is late.
    pub(crate) fn forget(&mut self, id: u64, timed_out: bool) {
        if self.slots.remove(&id).is_some() && timed_out {
            self.timed_out += 1;
        }
    }

    /// Counts by outcome, and what is outstanding now.
    pub(crate) fn stats(&self) -> RequestStats {
        RequestStats {
            outstanding: self.slots.len(),
            replied: self.replied,
            timed_out: self.timed_out,
            disconnected: self.disconnected,
            late_replies: self.late,
        }
    }

    /// Routes a received frame by its `request` id.
    pub(crate) fn match_reply(&mut self, frame: Frame) -> Matched {
        let id = frame.header().request();
        if !self.is_ours(id) {
            return Matched::NotOurs(frame);
        }
        if let Some(slot) = self.slots.remove(&id) {
            slot.fill(Ok(frame));
            self.replied += 1;
            Matched::Completed
        } else {
            self.late += 1;
            Matched::Late
        }
    }

    /// The connection is closing: every outstanding request fails now, and
    /// no new one is taken.
    pub(crate) fn fail_all(&mut self, reason: &CloseReason) {
        self.open = false;
        self.disconnected += self.slots.len() as u64;
        for (_, slot) in self.slots.drain() {
            slot.fill(Err(Unanswered::Disconnected(reason.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{buf::FrameMut, header::Command};

    fn reply(id: u64) -> Frame {
        let mut f = FrameMut::new(Command::Application(24), 0);
        f.header_mut().set_request(id);
        f.freeze()
    }

    fn outcome(slot: &ReplySlot) -> Option<Result<Frame, Unanswered>> {
        let waker = futures_util::task::noop_waker();
        match slot.poll_outcome(&mut Context::from_waker(&waker)) {
            Poll::Ready(o) => Some(o),
            Poll::Pending => None,
        }
    }

    #[test]
    fn server_ids_carry_bit_63_and_complete_once() {
        let mut table = Requests::new(Issuer::Server, 8);
        let (id, slot) = table.issue().unwrap();
        assert_eq!(id, SERVER_REQUEST_BIT | 1);
        assert!(outcome(&slot).is_none());
        assert!(matches!(table.match_reply(reply(id)), Matched::Completed));
        assert_eq!(outcome(&slot).unwrap().unwrap().header().request(), id);
        // The same id again is a late reply, never a second completion.
        assert!(matches!(table.match_reply(reply(id)), Matched::Late));
        assert_eq!(table.late(), 1);
        // A client's own request ids are not the server's business.
        assert!(matches!(table.match_reply(reply(7)), Matched::NotOurs(_)));
    }

    #[test]
    fn client_ids_keep_bit_63_clear_and_frames_it_did_not_issue_pass() {
        let mut table = Requests::new(Issuer::Client, 8);
        let (id, _slot) = table.issue().unwrap();
        assert_eq!(id, 1);
        assert!(
            matches!(table.match_reply(reply(2)), Matched::NotOurs(_)),
            "never issued"
        );
        assert!(matches!(
            table.match_reply(reply(SERVER_REQUEST_BIT | 1)),
            Matched::NotOurs(_)
        ));
        table.forget(id, true);
        assert!(matches!(table.match_reply(reply(id)), Matched::Late));
        assert_eq!(table.stats().timed_out, 1);
    }

    #[test]
    fn the_limit_is_enforced_and_closing_fails_everything_at_once() {
        let mut table = Requests::new(Issuer::Server, 2);
        let (_, a) = table.issue().unwrap();
        let (_, b) = table.issue().unwrap();
        assert!(table.issue().is_none(), "limit");
        table.fail_all(&CloseReason::PeerClosed);
        for slot in [&a, &b] {
            assert_eq!(
                outcome(slot).unwrap().unwrap_err(),
                Unanswered::Disconnected(CloseReason::PeerClosed)
            );
        }
        assert_eq!(table.outstanding(), 0);
        assert!(table.issue().is_none(), "no new request once closing");
    }
}
