//! Tracking of a bus's background tasks.
//!
//! Every task the bus spawns (accept loops, one per connection) is
//! registered here. A task removes its handle as soon as it ends, however it
//! ends (return, panic, cancellation), so the set holds only live tasks and
//! `len` is the true count. Shutdown waits for the set to drain and, past its
//! deadline, cancels what is left by dropping the handles (dropping a compio
//! `JoinHandle` cancels its task).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    future::Future,
    rc::{Rc, Weak},
    time::Instant,
};

use compio::runtime::{self, JoinHandle};

use crate::notify::Notify;

#[derive(Debug, Default)]
struct Inner {
    handles: RefCell<HashMap<u64, JoinHandle<()>>>,
    /// Ids of tasks that ended before their handle was stored, or whose
    /// handle is to be dropped; see `reap`.
    ended: RefCell<Vec<u64>>,
    live: Cell<usize>,
    next_id: Cell<u64>,
    idle: Notify,
}

/// The set of a bus's live tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskSet {
    inner: Rc<Inner>,
}

/// Decrements the live count when the task's future is dropped: on return,
/// on panic (compio drops a panicked future at once) and on cancellation.
struct Ended {
    set: Weak<Inner>,
    id: u64,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(set) = self.set.upgrade() {
            set.live.set(set.live.get() - 1);
            // `try_borrow_mut`: this runs inside drops, possibly while
            // shutdown is dropping handles; never panic here.
            if let Ok(mut ended) = set.ended.try_borrow_mut() {
                ended.push(self.id);
            }
            if set.live.get() == 0 {
                set.idle.notify();
            }
        }
    }
}

impl TaskSet {
    /// Spawns `fut` as a tracked task.
    pub(crate) fn spawn<F: Future<Output = ()> + 'static>(&self, fut: F) {
        self.reap();
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.inner.live.set(self.inner.live.get() + 1);
        let guard = Ended {
            set: Rc::downgrade(&self.inner),
            id,
        };
        let handle = runtime::spawn(async move {
            let _guard = guard;
            fut.await;
        });
        self.inner.handles.borrow_mut().insert(id, handle);
    }

    /// Number of live tasks.
    pub(crate) fn len(&self) -> usize {
        self.inner.live.get()
    }

    /// Drops the handles of tasks that have ended.
    pub(crate) fn reap(&self) {
        let ended = std::mem::take(&mut *self.inner.ended.borrow_mut());
        if ended.is_empty() {
            return;
        }
        let mut handles = self.inner.handles.borrow_mut();
        for id in ended {
            handles.remove(&id);
        }
    }

    /// Waits until no task is live or `deadline` passes; returns whether the
    /// set drained.
    pub(crate) async fn wait_idle(&self, deadline: Instant) -> bool {
        while self.len() > 0 {
            if runtime::time::timeout_at(deadline, self.inner.idle.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        self.reap();
        self.len() == 0
    }

    /// Cancels every live task; returns how many handles were dropped.
    /// compio may finish the cancellation on its next turn, so follow this
    /// with a bounded [`TaskSet::wait_idle`].
    pub(crate) fn cancel_all(&self) -> usize {
        self.reap();
        // Take the handles out first: dropping them runs task destructors,
        // which touch this set.
        let handles = std::mem::take(&mut *self.inner.handles.borrow_mut());
        let cancelled = handles.len();
        drop(handles);
        cancelled
    }
}
