//! Wake-ups for tasks of one thread: an [`Event`] wakes every task waiting
//! on it, a [`Slot`] carries one reply to one request.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bus_core::Frame;

use crate::ClientError;

/// Wakes every waiter on each [`notify_all`](Event::notify_all). A waiter
/// compares generations, so a notification between creating the wait and
/// polling it is not lost.
#[derive(Debug, Default)]
pub(crate) struct Event {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves at the first notification after this call. Cancel safe.
    pub(crate) fn changed(&self) -> Changed<'_> {
        Changed {
            event: self,
            start: self.generation.get(),
        }
    }
}

/// The future of [`Event::changed`].
#[derive(Debug)]
pub(crate) struct Changed<'a> {
    event: &'a Event,
    start: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.start {
            return Poll::Ready(());
        }
        let mut wakers = self.event.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Where the reply to one outstanding request lands.
#[derive(Default)]
pub(crate) struct Slot {
    result: RefCell<Option<Result<Frame, ClientError>>>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("filled", &self.result.borrow().is_some())
            .finish_non_exhaustive()
    }
}

impl Slot {
    pub(crate) fn fill(&self, result: Result<Frame, ClientError>) {
        *self.result.borrow_mut() = Some(result);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once [`fill`](Slot::fill) was called. Cancel safe.
    pub(crate) fn wait(&self) -> SlotWait<'_> {
        SlotWait { slot: self }
    }
}

/// The future of [`Slot::wait`].
#[derive(Debug)]
pub(crate) struct SlotWait<'a> {
    slot: &'a Slot,
}

impl Future for SlotWait<'_> {
    type Output = Result<Frame, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.slot.result.borrow_mut().take() {
            return Poll::Ready(result);
        }
        match self.slot.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.slot.waker.set(Some(w)),
            _ => self.slot.waker.set(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}
