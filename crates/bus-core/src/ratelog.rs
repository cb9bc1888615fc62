//! Bounded logging: [`RateLimitedLog`] lets one call site write at most
//! [`LOG_RATE_BURST_LINES`] lines per [`LOG_RATE_INTERVAL`], counts what it
//! holds back, and hands that count to the next line it lets through.
//!
//! Every warning an outside peer can trigger (a reset before take-over, a
//! refused socket, descriptor exhaustion, a failed handshake, a violation)
//! goes through one, so a flood of them costs a bounded number of lines:
//! at most `LOG_RATE_BURST_LINES` per call site per window, each window's
//! first line carrying `suppressed = N` for the window before.
//!
//! ```
//! use bus_core::RateLimitedLog;
//!
//! static REFUSED: RateLimitedLog = RateLimitedLog::new();
//! for _ in 0..1000 {
//!     if let Some(suppressed) = REFUSED.allow() {
//!         eprintln!("refused a connection (suppressed {suppressed})");
//!     }
//! }
//! assert_eq!(REFUSED.suppressed_total(), 1000 - 10);
//! ```

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::limits::{LOG_RATE_BURST_LINES, LOG_RATE_INTERVAL};

/// One call site's log budget. `const`-constructible, so a `static` per call
/// site; shared by every thread (a short lock, taken only where a line
/// would be written, never per frame).
#[derive(Debug)]
pub struct RateLimitedLog {
    burst: u32,
    interval: Duration,
    window: Mutex<Window>,
    suppressed_total: AtomicU64,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    lines: u32,
    /// Held back since the last line written.
    suppressed: u64,
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimitedLog {
    /// [`LOG_RATE_BURST_LINES`] lines per [`LOG_RATE_INTERVAL`].
    pub const fn new() -> Self {
        Self::with_rate(LOG_RATE_BURST_LINES, LOG_RATE_INTERVAL)
    }

    /// `burst` lines (at least one) per `interval`.
    pub const fn with_rate(burst: u32, interval: Duration) -> Self {
        Self {
            burst: if burst == 0 { 1 } else { burst },
            interval,
            window: Mutex::new(Window {
                start: None,
                lines: 0,
                suppressed: 0,
            }),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now: `Some(n)` with the lines held back
    /// since the last one written (log it with the line), `None` when this
    /// one is held back (and counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expired = window
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            window.start = Some(now);
            window.lines = 0;
        }
        if window.lines < self.burst {
            window.lines += 1;
            return Some(std::mem::take(&mut window.suppressed));
        }
        window.suppressed += 1;
        drop(window);
        self.suppressed_total.fetch_add(1, Relaxed);
        None
    }

    /// Lines held back since start.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppressed_then_reported_with_the_next_window() {
        let log = RateLimitedLog::with_rate(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let written = (0..100).filter(|_| log.allow_at(t0).is_some()).count();
        assert_eq!(written, 3);
        assert_eq!(log.suppressed_total(), 97);
        // Within the window: still held back.
        assert_eq!(log.allow_at(t0 + Duration::from_secs(9)), None);
        // The next window's first line reports what was held back.
        assert_eq!(log.allow_at(t0 + Duration::from_secs(10)), Some(98));
        assert_eq!(log.allow_at(t0 + Duration::from_secs(10)), Some(0));
    }

    #[test]
    fn zero_burst_still_writes_one_line() {
        let log = RateLimitedLog::with_rate(0, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(log.allow_at(t0), Some(0));
        assert_eq!(log.allow_at(t0), None);
    }
}
