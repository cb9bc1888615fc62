//! The inbound budget: a node-wide bound on bytes held in partly received
//! frames that do not fit a connection's read buffer.
//!
//! A reader that meets the header of such a frame reserves the frame's whole
//! size before it allocates anything, and gives it back when the frame is
//! complete (or the connection ends). While the budget is exhausted the
//! reader waits, so the connection is not read further and the transport's
//! flow control pushes back on the peer; nothing is dropped and nobody is
//! closed for it. Reserving the whole frame up front means a reader holding
//! a reservation can always finish, so readers cannot deadlock each other
//! with half-filled reservations.
//!
//! Frames that fit the read buffer are not counted here: they are bounded
//! by the read buffers themselves (one per connection).
//!
//! One budget is shared by every shard of a node (an atomic counter); a
//! release wakes the waiters of every shard.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use event_listener::Event;

#[derive(Debug)]
struct Inner {
    total: u64,
    available: AtomicU64,
    released: Event,
}

/// A node-wide byte budget for partly received frames. Cheap to clone; all
/// clones share one budget.
#[derive(Debug, Clone)]
pub struct InboundBudget {
    inner: Arc<Inner>,
}

impl InboundBudget {
    /// A budget of `total_bytes`.
    pub fn new(total_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                total: total_bytes,
                available: AtomicU64::new(total_bytes),
                released: Event::new(),
            }),
        }
    }

    /// The whole budget.
    pub fn total(&self) -> u64 {
        self.inner.total
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> u64 {
        self.inner.available.load(Ordering::Acquire)
    }

    /// Whether a frame of `bytes` could ever be reserved.
    pub fn can_ever_fit(&self, bytes: u64) -> bool {
        bytes <= self.inner.total
    }

    /// Reserves `bytes` if they are available now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let available = &self.inner.available;
        let mut current = available.load(Ordering::Acquire);
        loop {
            let left = current.checked_sub(bytes)?;
            match available.compare_exchange_weak(
                current,
                left,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Reserves `bytes`, waiting until they are available.
    ///
    /// Never completes for more than [`InboundBudget::total`]; check
    /// [`InboundBudget::can_ever_fit`] first.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is reserved until it completes.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        loop {
            if let Some(reservation) = self.try_reserve(bytes) {
                return reservation;
            }
            let listener = self.inner.released.listen();
            // A release between the failed attempt and `listen` would be
            // missed: try once more with the listener registered.
            if let Some(reservation) = self.try_reserve(bytes) {
                return reservation;
            }
            listener.await;
        }
    }
}

/// Bytes held from an [`InboundBudget`]; dropping it gives them back and
/// wakes whoever waits.
#[derive(Debug)]
pub struct Reservation {
    budget: InboundBudget,
    bytes: u64,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let inner = &self.budget.inner;
        inner.available.fetch_add(self.bytes, Ordering::AcqRel);
        // Wake every waiter: each needs a different amount.
        inner.released.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let budget = InboundBudget::new(100);
        let a = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(50).is_none());
        let b = budget.try_reserve(40).expect("fits exactly");
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
        drop(b);
        assert_eq!(budget.available(), 100);
        assert!(!budget.can_ever_fit(101));
    }

    #[test]
    fn a_waiter_on_another_thread_gets_released_bytes() {
        let budget = InboundBudget::new(10);
        let held = budget.try_reserve(10).expect("fits");
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                futures_util::FutureExt::now_or_never(budget.reserve(5)).is_some()
            })
        };
        // Everything is held here, so the other thread finds nothing free.
        let got_early = waiter.join().expect("thread");
        assert!(!got_early);
        drop(held);
        let r = futures_util::FutureExt::now_or_never(budget.reserve(5)).expect("free now");
        assert_eq!(r.bytes(), 5);
    }
}
