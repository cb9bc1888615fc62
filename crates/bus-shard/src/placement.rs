//! Which shard gets the next accepted connection. Runs on shard 0 only, once
//! per accepted connection.

use std::cell::Cell;

use crate::{config::Placement, link::Link};

/// The placement policy and its cursor.
#[derive(Debug)]
pub(crate) struct Placer {
    policy: Placement,
    /// First shard that takes clients (0, or 1 when shard 0 does not).
    first: usize,
    /// Where the next round-robin turn (or least-connections tie-break)
    /// starts, relative to `first`.
    cursor: Cell<usize>,
}

impl Placer {
    pub(crate) fn new(policy: Placement, count: u16, shard0_serves: bool) -> Self {
        debug_assert!(count >= 1);
        debug_assert!(shard0_serves || count > 1, "one shard always serves");
        Self {
            policy,
            first: usize::from(!shard0_serves),
            cursor: Cell::new(0),
        }
    }

    /// The shard for the next connection.
    pub(crate) fn pick(&self, links: &[Link]) -> usize {
        let eligible = links.len() - self.first;
        let start = self.cursor.get() % eligible;
        let offset = match self.policy {
            Placement::RoundRobin => start,
            Placement::LeastConnections => (0..eligible)
                .map(|i| (start + i) % eligible)
                .min_by_key(|&i| links[self.first + i].shared.load())
                .unwrap_or(start),
        };
        self.cursor.set((offset + 1) % eligible);
        self.first + offset
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::link::channel;

    fn links(n: usize) -> Vec<Link> {
        (0..n).map(|_| channel(4).0).collect()
    }

    #[test]
    fn round_robin_visits_every_shard_in_turn() {
        let links = links(4);
        let placer = Placer::new(Placement::RoundRobin, 4, true);
        let picks: Vec<_> = (0..8).map(|_| placer.pick(&links)).collect();
        assert_eq!(picks, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn shard0_is_skipped_when_it_takes_no_clients() {
        let links = links(3);
        let placer = Placer::new(Placement::RoundRobin, 3, false);
        let picks: Vec<_> = (0..4).map(|_| placer.pick(&links)).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        let placer = Placer::new(Placement::LeastConnections, 3, false);
        assert!((0..4).all(|_| placer.pick(&links) != 0));
    }

    #[test]
    fn least_connections_picks_the_emptiest_then_rotates_ties() {
        let links = links(3);
        links[0].shared.live.store(5, Relaxed);
        links[1].shared.live.store(1, Relaxed);
        links[2].shared.pending.store(3, Relaxed);
        let placer = Placer::new(Placement::LeastConnections, 3, true);
        assert_eq!(placer.pick(&links), 1);
        links[1].shared.live.store(3, Relaxed);
        // Shards 1 and 2 tie at 3; the tie goes to the next in turn.
        assert_eq!(placer.pick(&links), 2);
        assert_eq!(placer.pick(&links), 1);
    }
}
