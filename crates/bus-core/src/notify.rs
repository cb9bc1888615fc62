//! A single-waiter wake-up for tasks of one shard.
//!
//! The bus needs exactly one primitive: "wake the task that owns this
//! connection" (writer has frames, closing started) and "wake shutdown when
//! the last task ends". Both have one waiter, live on one thread and must not
//! allocate per notification, so this is a `Cell` holding a waker and a flag.

use std::{
    cell::Cell,
    future::poll_fn,
    task::{Poll, Waker},
};

/// Wakes one waiting task. A notification sent while nobody waits is kept
/// (as a single flag) and consumed by the next wait.
#[derive(Default)]
pub(crate) struct Notify {
    waker: Cell<Option<Waker>>,
    pending: Cell<bool>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("pending", &self.pending.get())
            .finish_non_exhaustive()
    }
}

impl Notify {
    /// Wakes the waiter, or lets the next wait return at once.
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Waits for a notification sent since the last one was consumed.
    ///
    /// Cancel safe: a notification is only consumed by a wait that returns.
    pub(crate) async fn notified(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                return Poll::Ready(());
            }
            match self.waker.take() {
                Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
                _ => self.waker.set(Some(cx.waker().clone())),
            }
            Poll::Pending
        })
        .await;
    }
}
