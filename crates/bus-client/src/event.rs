//! Wake-ups for tasks of one thread: an [`Event`] wakes every task waiting
//! on it (state changes, unsolicited frames). Replies to requests are
//! matched by the connection's link, in bus-core.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

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
