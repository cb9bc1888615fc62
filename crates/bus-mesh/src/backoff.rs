//! The redial delay: exponential backoff with full jitter, bounded by
//! `replicas.reconnect_max`, with a floor so that a peer refusing at once
//! is not dialed in a tight loop.
//!
//! Attempt `n` (counted from 0 since the last authenticated connection)
//! waits a uniformly random time in `0 ..= min(reconnect_max, REDIAL_BASE ·
//! 2ⁿ)`, raised to `REDIAL_FLOOR` when shorter. Full jitter spreads the
//! redials of many nodes after a shared failure; the floor bounds the dial
//! rate against any one peer to `1 s / REDIAL_FLOOR`.

use std::time::Duration;

use crate::limits::{REDIAL_BASE, REDIAL_FLOOR};

/// Where the jitter comes from.
pub(crate) trait Jitter {
    /// A uniformly random value in `0 ..= max`.
    fn upto(&mut self, max: u64) -> u64;
}

/// Jitter from the OS random number generator. A failing generator (never
/// seen on Linux) yields the ceiling itself: still bounded, still backing
/// off.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OsJitter;

impl Jitter for OsJitter {
    fn upto(&mut self, max: u64) -> u64 {
        let mut bytes = [0; 8];
        if getrandom::fill(&mut bytes).is_err() {
            return max;
        }
        let draw = u64::from_le_bytes(bytes);
        // Modulo bias is at most max / 2^64: irrelevant for a delay.
        match max.checked_add(1) {
            Some(span) => draw % span,
            None => draw,
        }
    }
}

/// One peer's redial state.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff bounded by `max` (`replicas.reconnect_max`).
    pub(crate) fn new(max: Duration) -> Self {
        Self { max, attempt: 0 }
    }

    /// An authenticated connection: the next loss redials quickly again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        REDIAL_BASE.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next dial; each call doubles the next ceiling.
    pub(crate) fn next_delay(&mut self, jitter: &mut impl Jitter) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let drawn = Duration::from_nanos(jitter.upto(nanos));
        drawn.max(REDIAL_FLOOR.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the smallest or the largest value.
    struct Fixed(bool);

    impl Jitter for Fixed {
        fn upto(&mut self, max: u64) -> u64 {
            if self.0 { max } else { 0 }
        }
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        let delays: Vec<_> = (0..8)
            .map(|_| backoff.next_delay(&mut Fixed(true)))
            .collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), REDIAL_BASE);
    }

    #[test]
    fn the_floor_bounds_the_dial_rate() {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        for _ in 0..40 {
            assert_eq!(backoff.next_delay(&mut Fixed(false)), REDIAL_FLOOR);
        }
        // A maximum below the floor wins: the configured bound is kept.
        let mut tight = Backoff::new(Duration::from_millis(30));
        assert_eq!(
            tight.next_delay(&mut Fixed(false)),
            Duration::from_millis(30)
        );
        assert_eq!(
            tight.next_delay(&mut Fixed(true)),
            Duration::from_millis(30)
        );
    }

    #[test]
    fn os_jitter_stays_within_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(700));
        for _ in 0..200 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay(&mut OsJitter);
            assert!(
                delay <= ceiling.max(REDIAL_FLOOR),
                "{delay:?} > {ceiling:?}"
            );
            assert!(delay >= REDIAL_FLOOR, "{delay:?}");
        }
        assert_eq!(OsJitter.upto(0), 0);
    }
}
