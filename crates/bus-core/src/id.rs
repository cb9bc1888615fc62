//! Client ids (spec §5) and who a frame came from.

use std::cell::Cell;

/// A client connection's id: the owning shard's index in the top 16 bits,
/// a per-shard sequence below. Never 0, never reused within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u128);

impl ClientId {
    const SHARD_SHIFT: u32 = 112;

    /// Wraps a raw id (for example one read from a frame's `client` field).
    pub const fn from_raw(raw: u128) -> Self {
        Self(raw)
    }

    /// The raw 128-bit value.
    pub const fn as_raw(self) -> u128 {
        self.0
    }

    /// The shard that owns the connection.
    pub const fn shard(self) -> u16 {
        #[allow(clippy::cast_possible_truncation, reason = "the top 16 bits of a u128")]
        let shard = (self.0 >> Self::SHARD_SHIFT) as u16;
        shard
    }

    /// The per-shard sequence number.
    pub const fn sequence(self) -> u128 {
        self.0 & ((1 << Self::SHARD_SHIFT) - 1)
    }

    const fn compose(shard: u16, sequence: u64) -> Self {
        Self(((shard as u128) << Self::SHARD_SHIFT) | sequence as u128)
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.shard(), self.sequence())
    }
}

/// Mints client ids for one shard. The sequence starts at 1 and only grows,
/// so an id is never 0 and never handed out twice.
#[derive(Debug)]
pub(crate) struct IdMinter {
    shard: u16,
    next: Cell<u64>,
}

impl IdMinter {
    pub(crate) fn new(shard: u16) -> Self {
        Self {
            shard,
            next: Cell::new(1),
        }
    }

    pub(crate) fn mint(&self) -> ClientId {
        let seq = self.next.get();
        // 2^64 connections per shard would take millennia at any real rate.
        self.next
            .set(seq.checked_add(1).expect("client id sequence exhausted"));
        ClientId::compose(self.shard, seq)
    }
}

/// Hashes client ids for the registry. Ids are minted here (a shard index
/// over a sequence), never chosen by a peer, so a multiply-fold of the two
/// halves spreads them well and cannot be attacked; `SipHash` was a visible
/// share of every send.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `ClientId` (none today).
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(K);
    }

    fn write_u128(&mut self, value: u128) {
        #[allow(clippy::cast_possible_truncation, reason = "folding the two halves")]
        {
            self.write_u64(value as u64);
            self.write_u64((value >> 64) as u64);
        }
    }
}

/// The registry's hasher builder.
pub(crate) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A client connection.
    Client(ClientId),
    /// A replica of this cluster (replica plane).
    Replica(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_shard_and_are_never_zero_or_reused() {
        let m = IdMinter::new(0);
        let a = m.mint();
        let b = m.mint();
        assert_ne!(a.as_raw(), 0);
        assert_ne!(a, b);
        let m = IdMinter::new(0xBEEF);
        let c = m.mint();
        assert_eq!(c.shard(), 0xBEEF);
        assert_eq!(c.sequence(), 1);
        assert_eq!(c.as_raw() >> 112, 0xBEEF);
    }
}
