//! The descriptor limit: `bus serve` raises its soft `RLIMIT_NOFILE` to
//! the hard limit at start (every connection costs a descriptor, a few
//! more are the node's own) and reports both beside `max_connections`.

use std::io;

/// The process's descriptor limits, as found and as left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now (the hard limit when raising worked).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

impl Descriptors {
    /// The start-up line: both limits, and a warning when
    /// `max_connections` does not fit under the soft limit.
    pub fn summary(&self, max_connections: usize) -> String {
        let raised = if self.soft > self.was {
            format!(" (raised from {})", self.was)
        } else {
            String::new()
        };
        let fits = u64::try_from(max_connections)
            .is_ok_and(|n| n.saturating_add(DESCRIPTOR_RESERVE) <= self.soft);
        let warning = if fits {
            ""
        } else {
            "; WARNING: max_connections does not fit, accept will fail with EMFILE before the cap"
        };
        format!(
            "descriptors: soft limit {}{raised}, hard limit {}; max_connections {max_connections}{warning}",
            limit(self.soft),
            limit(self.hard),
        )
    }
}

/// Descriptors the node needs besides its connections (listeners, the
/// runtime's rings and notifiers, the admin endpoint, log files).
pub const DESCRIPTOR_RESERVE: u64 = 64;

fn limit(value: u64) -> String {
    if value == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_nofile() -> io::Result<Descriptors> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a valid, writable `rlimit` for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = current.rlim_cur;
    let hard = current.rlim_max;
    if was < hard {
        let wanted = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: `wanted` is a valid `rlimit`, only read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const wanted) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Descriptors {
        was,
        soft: hard.max(was),
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_says_raised_and_warns_when_the_cap_does_not_fit() {
        let d = Descriptors {
            was: 1024,
            soft: 4096,
            hard: 4096,
        };
        let line = d.summary(1000);
        assert!(
            line.contains("soft limit 4096 (raised from 1024)"),
            "{line}"
        );
        assert!(!line.contains("WARNING"), "{line}");
        assert!(d.summary(10_000).contains("WARNING"));
    }
}
