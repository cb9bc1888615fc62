//! Admission of QUIC connection attempts: the caps on open connections and
//! handshakes in flight, the Retry threshold for unvalidated addresses, the
//! counters (per listener and per process) and the rate-limited warnings.
//!
//! Decisions only: nothing here touches the endpoint. The listener applies
//! a [`Verdict`] to the attempt it came from.

use std::{
    cell::Cell,
    rc::Rc,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bus_core::limits::QUIC_WARN_INTERVAL;

/// Retries sent by every QUIC listener of the process.
static RETRIES: AtomicU64 = AtomicU64::new(0);
/// Attempts refused by the caps of every QUIC listener of the process.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Totals over every QUIC listener of the process, for a metrics endpoint
/// that does not hold the listeners (they live on their shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicTotals {
    /// Attempts from unvalidated addresses answered with a Retry.
    pub retries: u64,
    /// Attempts refused (`CONNECTION_REFUSED`) by `max_connections` or
    /// `max_handshakes`.
    pub refused: u64,
}

/// A snapshot of [`QuicTotals`].
pub fn totals() -> QuicTotals {
    QuicTotals {
        retries: RETRIES.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
    }
}

/// What to do with a connection attempt.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Accept it: it holds these slots.
    Admit(AdmissionGuard, HandshakeGuard),
    /// Ask its source to prove it owns its address (stateless Retry).
    Retry,
    /// Refuse it (stateless `CONNECTION_REFUSED`).
    Refuse,
}

/// Counts of open connections and handshakes in flight, against their caps.
#[derive(Debug)]
pub(crate) struct Admission {
    open: Cell<u32>,
    handshaking: Cell<u32>,
    refused: Cell<u64>,
    retried: Cell<u64>,
    max_connections: u32,
    max_handshakes: u32,
    retry_threshold: u32,
    refuse_warning: Throttle,
    retry_warning: Throttle,
}

impl Admission {
    /// Caps checked by [`judge`](Self::judge); `retry_threshold` at most
    /// `max_handshakes` (validated by the listener config).
    pub(crate) fn new(max_connections: u32, max_handshakes: u32, retry_threshold: u32) -> Self {
        debug_assert!(retry_threshold <= max_handshakes);
        Self {
            open: Cell::new(0),
            handshaking: Cell::new(0),
            refused: Cell::new(0),
            retried: Cell::new(0),
            max_connections,
            max_handshakes,
            retry_threshold,
            refuse_warning: Throttle::default(),
            retry_warning: Throttle::default(),
        }
    }

    /// Decides on an attempt whose source address is `validated` (it came
    /// back with our Retry token) or not. Beyond a cap: refused. Otherwise
    /// an unvalidated source is sent a Retry once `retry_threshold`
    /// handshakes are in flight, so unvalidated handshakes never hold more
    /// than that many slots. Counts and (rate-limited) logs what it turns
    /// away.
    pub(crate) fn judge(self: &Rc<Self>, validated: bool) -> Verdict {
        let handshaking = self.handshaking.get();
        if self.open.get() >= self.max_connections || handshaking >= self.max_handshakes {
            self.refused.set(self.refused.get() + 1);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.refuse_warning.allow(Instant::now()) {
                tracing::warn!(
                    open = self.open.get(),
                    handshaking,
                    max_connections = self.max_connections,
                    max_handshakes = self.max_handshakes,
                    suppressed,
                    "QUIC admission cap reached; refusing connection attempts"
                );
            }
            return Verdict::Refuse;
        }
        if !validated && handshaking >= self.retry_threshold {
            self.retried.set(self.retried.get() + 1);
            RETRIES.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.retry_warning.allow(Instant::now()) {
                tracing::warn!(
                    handshaking,
                    retry_threshold = self.retry_threshold,
                    suppressed,
                    "QUIC handshakes in flight at the Retry threshold; \
                     asking new clients to validate their address"
                );
            }
            return Verdict::Retry;
        }
        self.open.set(self.open.get() + 1);
        self.handshaking.set(handshaking + 1);
        Verdict::Admit(AdmissionGuard(self.clone()), HandshakeGuard(self.clone()))
    }

    /// Records that a Retry could not be sent after all and the attempt was
    /// refused instead.
    pub(crate) fn retry_failed(&self) {
        self.retried.set(self.retried.get() - 1);
        RETRIES.fetch_sub(1, Ordering::Relaxed);
        self.refused.set(self.refused.get() + 1);
        REFUSED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection slot, given back on drop.
#[derive(Debug)]
pub(crate) struct AdmissionGuard(Rc<Admission>);

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// A handshake slot, given back on drop.
#[derive(Debug)]
pub(crate) struct HandshakeGuard(Rc<Admission>);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.handshaking.set(self.0.handshaking.get() - 1);
    }
}

/// Admission counters of a [`QuicListener`](crate::QuicListener).
#[derive(Debug, Clone)]
pub struct AdmissionStats(pub(crate) Rc<Admission>);

impl AdmissionStats {
    /// Connections holding a slot (handshaking or established).
    pub fn open(&self) -> u32 {
        self.0.open.get()
    }

    /// Handshakes in flight.
    pub fn handshaking(&self) -> u32 {
        self.0.handshaking.get()
    }

    /// Connection attempts refused by the caps so far.
    pub fn refused(&self) -> u64 {
        self.0.refused.get()
    }

    /// Connection attempts answered with a Retry so far.
    pub fn retried(&self) -> u64 {
        self.0.retried.get()
    }
}

/// At most one warning per [`QUIC_WARN_INTERVAL`]; the ones in between are
/// counted and reported with the next.
#[derive(Debug, Default)]
struct Throttle {
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl Throttle {
    /// Whether to log at `now`, and if so how many were suppressed since
    /// the last one logged.
    fn allow(&self, now: Instant) -> Option<u64> {
        self.allow_every(now, QUIC_WARN_INTERVAL)
    }

    fn allow_every(&self, now: Instant, interval: Duration) -> Option<u64> {
        match self.last.get() {
            Some(last) if now.saturating_duration_since(last) < interval => {
                self.suppressed.set(self.suppressed.get() + 1);
                None
            }
            _ => {
                self.last.set(Some(now));
                Some(self.suppressed.replace(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_once_per_interval_and_reports_what_it_suppressed() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let interval = Duration::from_secs(10);
        assert_eq!(throttle.allow_every(start, interval), Some(0));
        for i in 1..=5 {
            let at = start + Duration::from_secs(i);
            assert_eq!(throttle.allow_every(at, interval), None);
        }
        assert_eq!(throttle.allow_every(start + interval, interval), Some(5));
        assert_eq!(throttle.allow_every(start + interval, interval), None);
        assert_eq!(
            throttle.allow_every(start + 2 * interval, interval),
            Some(1)
        );
    }

    #[test]
    fn unvalidated_attempts_get_a_retry_from_the_threshold_validated_ones_up_to_the_cap() {
        let admission = Rc::new(Admission::new(10, 3, 1));
        let Verdict::Admit(_slot, _handshake) = admission.judge(false) else {
            panic!("below the threshold an unvalidated attempt is admitted");
        };
        assert!(matches!(admission.judge(false), Verdict::Retry));
        let mut held = Vec::new();
        for _ in 0..2 {
            match admission.judge(true) {
                Verdict::Admit(slot, handshake) => held.push((slot, handshake)),
                other => panic!("validated below max_handshakes: {other:?}"),
            }
        }
        assert!(matches!(admission.judge(true), Verdict::Refuse));
        assert!(matches!(admission.judge(false), Verdict::Refuse));
        let stats = AdmissionStats(admission.clone());
        assert_eq!((stats.retried(), stats.refused()), (1, 2));
        assert_eq!((stats.open(), stats.handshaking()), (3, 3));
        drop(held);
        assert_eq!((stats.open(), stats.handshaking()), (1, 1));
    }
}
