//! Frame storage: one allocation per buffer (a small slot header followed by
//! 16-aligned bytes), recycled through per-thread free lists.
//!
//! A shard that keeps receiving and sending frames of similar sizes stops
//! calling the allocator once warm: a buffer released on a thread goes to
//! that thread's free list and the next buffer of its size comes from
//! there.
//!
//! - Up to 64 KiB, buffers come in power-of-two size classes, each list
//!   bounded by [`FRAME_POOL_BYTES_PER_CLASS`].
//! - Larger buffers are sized to the page and kept in one small cache per
//!   thread, bounded by [`FRAME_POOL_LARGE_BYTES`] and
//!   [`FRAME_POOL_LARGE_SLOTS`]; a request reuses a kept buffer at most an
//!   eighth larger than it asks for, so memory held stays close to what the
//!   inbound budget accounts. Without the cache each large frame landed on
//!   fresh pages, and the page faults of filling them cost more than the
//!   copies of a TLS echo.
//!
//! Nothing here knows about frames; `buf` builds `ByteBuf`, `FrameMut` and
//! `Frame` on top.
//!
//! A buffer released on another thread than the one it was taken on (a frame
//! forwarded to another shard) simply joins the releasing thread's list: no
//! lock, no cross-thread traffic.

use std::{
    alloc::{self, Layout},
    cell::RefCell,
    ptr::NonNull,
    sync::atomic::AtomicUsize,
};

use crate::limits::{
    FRAME_ALIGN, FRAME_POOL_BYTES_PER_CLASS, FRAME_POOL_CLASSES, FRAME_POOL_LARGE_BYTES,
    FRAME_POOL_LARGE_GRANULE_BYTES, FRAME_POOL_LARGE_SLOTS, FRAME_POOL_SMALLEST_BYTES,
};

/// Marks a slot larger than every class (sized to the page, kept in the
/// large cache).
const LARGE: u8 = u8::MAX;

/// The header in front of every buffer's bytes.
///
/// Invariants: the bytes start at `DATA_OFFSET` from the slot and hold `cap`
/// bytes; `len <= init <= cap`; bytes `0..init` have been written at least
/// once (so they are initialised memory); `refs` counts the handles while the
/// slot is shared (a unique owner keeps it at 1).
#[repr(C, align(16))]
pub(crate) struct Slot {
    pub(crate) refs: AtomicUsize,
    pub(crate) len: usize,
    pub(crate) init: usize,
    pub(crate) cap: usize,
    class: u8,
}

/// Offset of the first data byte from the start of a slot.
const DATA_OFFSET: usize = std::mem::size_of::<Slot>();

const _: () = assert!(DATA_OFFSET.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(std::mem::align_of::<Slot>() == FRAME_ALIGN);

/// Capacity of size class `class`.
const fn class_bytes(class: usize) -> usize {
    FRAME_POOL_SMALLEST_BYTES << class
}

/// The largest pooled capacity.
pub(crate) const LARGEST_CLASS_BYTES: usize = class_bytes(FRAME_POOL_CLASSES - 1);

/// The smallest class whose capacity holds `bytes`, if any.
fn class_for(bytes: usize) -> Option<usize> {
    if bytes > LARGEST_CLASS_BYTES {
        return None;
    }
    let units = bytes.max(1).div_ceil(FRAME_POOL_SMALLEST_BYTES);
    Some(units.next_power_of_two().trailing_zeros() as usize)
}

/// How many free slots class `class` keeps at most.
const fn class_limit(class: usize) -> usize {
    FRAME_POOL_BYTES_PER_CLASS / class_bytes(class)
}

fn layout(cap: usize) -> Layout {
    // Never fails: `cap` is at most a frame's u32 size plus alignment.
    Layout::from_size_align(DATA_OFFSET + cap, FRAME_ALIGN).expect("frame buffer layout")
}

/// The capacity of a live or listed slot.
fn cap_of(slot: NonNull<Slot>) -> usize {
    // SAFETY: callers pass live or listed slots, which are valid.
    unsafe { (*slot.as_ptr()).cap }
}

/// Free slots larger than every class, within [`FRAME_POOL_LARGE_BYTES`]
/// and [`FRAME_POOL_LARGE_SLOTS`].
struct LargeCache {
    free: Vec<NonNull<Slot>>,
    /// The capacities of `free`, summed.
    bytes: usize,
}

impl LargeCache {
    /// The smallest kept slot of at least `cap` bytes and at most an eighth
    /// more.
    fn take(&mut self, cap: usize) -> Option<NonNull<Slot>> {
        let most = cap + cap / 8;
        let (at, _) = self
            .free
            .iter()
            .map(|&slot| cap_of(slot))
            .enumerate()
            .filter(|&(_, kept)| (cap..=most).contains(&kept))
            .min_by_key(|&(_, kept)| kept)?;
        let slot = self.free.swap_remove(at);
        self.bytes -= cap_of(slot);
        Some(slot)
    }

    /// Keeps `slot` if the bounds allow.
    fn keep(&mut self, slot: NonNull<Slot>) -> bool {
        let cap = cap_of(slot);
        if self.free.len() >= FRAME_POOL_LARGE_SLOTS || self.bytes + cap > FRAME_POOL_LARGE_BYTES {
            return false;
        }
        if self.free.capacity() == 0 {
            // Once per thread: the list never grows again.
            self.free.reserve_exact(FRAME_POOL_LARGE_SLOTS);
        }
        self.free.push(slot);
        self.bytes += cap;
        true
    }
}

struct Pool {
    free: [Vec<NonNull<Slot>>; FRAME_POOL_CLASSES],
    large: LargeCache,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (class, list) in self.free.iter_mut().enumerate() {
            for slot in list.drain(..) {
                // SAFETY: every listed slot was allocated with this class's
                // layout and is owned by nobody else.
                unsafe { alloc::dealloc(slot.as_ptr().cast(), layout(class_bytes(class))) };
            }
        }
        for slot in self.large.free.drain(..) {
            // SAFETY: allocated with its own capacity's layout, owned by
            // nobody else.
            unsafe { alloc::dealloc(slot.as_ptr().cast(), layout(cap_of(slot))) };
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            free: [const { Vec::new() }; FRAME_POOL_CLASSES],
            large: LargeCache { free: Vec::new(), bytes: 0 },
        })
    };
}

/// Runs `f` on this thread's pool, unless the pool is gone (thread exit)
/// or already borrowed.
fn with_pool<R>(f: impl FnOnce(&mut Pool) -> Option<R>) -> Option<R> {
    POOL.try_with(|pool| pool.try_borrow_mut().ok().and_then(|mut p| f(&mut p)))
        .ok()
        .flatten()
}

/// A slot with room for at least `cap` bytes: from this thread's free
/// lists when one fits, else from the allocator. `refs = 1`, `len = 0`.
pub(crate) fn acquire(cap: usize) -> NonNull<Slot> {
    let class = class_for(cap);
    let (cap, tag) = match class {
        Some(class) => (class_bytes(class), u8::try_from(class).unwrap_or(LARGE)),
        None => (cap.next_multiple_of(FRAME_POOL_LARGE_GRANULE_BYTES), LARGE),
    };
    let kept = with_pool(|pool| match class {
        Some(class) => pool.free[class].pop(),
        None => pool.large.take(cap),
    });
    if let Some(slot) = kept {
        // SAFETY: a listed slot is valid and owned by nobody; reset the
        // fields a new owner relies on (`init` stays: those bytes are
        // still initialised).
        unsafe {
            let s = slot.as_ptr();
            (*s).refs = AtomicUsize::new(1);
            (*s).len = 0;
        }
        return slot;
    }
    let layout = layout(cap);
    // SAFETY: the layout has a non-zero size (it includes the slot header).
    let raw = unsafe { alloc::alloc(layout) };
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "the layout's alignment is the slot's (FRAME_ALIGN)"
    )]
    let Some(slot) = NonNull::new(raw.cast::<Slot>()) else {
        alloc::handle_alloc_error(layout)
    };
    // SAFETY: freshly allocated, aligned for `Slot`, large enough.
    unsafe {
        slot.as_ptr().write(Slot {
            refs: AtomicUsize::new(1),
            len: 0,
            init: 0,
            cap,
            class: tag,
        });
    }
    slot
}

/// Returns a slot whose last handle is gone: to this thread's free list
/// (or large cache) when it has room, else to the allocator.
///
/// # Safety
/// `slot` came from [`acquire`] and no handle refers to it any more.
pub(crate) unsafe fn release(slot: NonNull<Slot>) {
    // SAFETY: valid per the caller's contract.
    let class = unsafe { (*slot.as_ptr()).class };
    let kept = with_pool(|pool| {
        let kept = if class == LARGE {
            pool.large.keep(slot)
        } else {
            let class = usize::from(class);
            let list = &mut pool.free[class];
            let room = list.len() < class_limit(class);
            if room {
                if list.capacity() == 0 {
                    // Once per class and thread: the list never grows again.
                    list.reserve_exact(class_limit(class));
                }
                list.push(slot);
            }
            room
        };
        Some(kept)
    });
    if kept != Some(true) {
        // SAFETY: allocated by `acquire` with exactly this layout.
        unsafe { alloc::dealloc(slot.as_ptr().cast(), layout(cap_of(slot))) };
    }
}

/// Pointer to a slot's first data byte.
///
/// # Safety
/// `slot` is a live slot from [`acquire`].
pub(crate) unsafe fn data(slot: NonNull<Slot>) -> *mut u8 {
    // SAFETY: the data follows the header inside the same allocation.
    unsafe { slot.as_ptr().cast::<u8>().add(DATA_OFFSET) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_up_to_the_largest() {
        assert_eq!(class_for(0), Some(0));
        assert_eq!(class_for(1), Some(0));
        assert_eq!(class_for(FRAME_POOL_SMALLEST_BYTES), Some(0));
        assert_eq!(class_for(FRAME_POOL_SMALLEST_BYTES + 1), Some(1));
        assert_eq!(class_for(LARGEST_CLASS_BYTES), Some(FRAME_POOL_CLASSES - 1));
        assert_eq!(class_for(LARGEST_CLASS_BYTES + 1), None);
        for bytes in [1, 255, 256, 257, 511, 512, 513, 4095, 4096, 65_535, 65_536] {
            let class = class_for(bytes).unwrap();
            assert!(class_bytes(class) >= bytes);
            assert!(class == 0 || class_bytes(class - 1) < bytes);
        }
    }

    #[test]
    fn a_released_slot_is_reused_by_the_next_acquire_of_its_class() {
        let a = acquire(300);
        // SAFETY: a live slot.
        let cap = unsafe { (*a.as_ptr()).cap };
        assert_eq!(cap, 512);
        // SAFETY: no handle refers to `a`.
        unsafe { release(a) };
        let b = acquire(400);
        assert_eq!(a, b, "the freed slot comes back for the same class");
        // SAFETY: as above.
        unsafe { release(b) };
    }

    #[test]
    fn large_buffers_are_page_sized_and_reused_within_an_eighth() {
        let odd = acquire(LARGEST_CLASS_BYTES + 100);
        assert_eq!(
            cap_of(odd),
            (LARGEST_CLASS_BYTES + 100).next_multiple_of(FRAME_POOL_LARGE_GRANULE_BYTES)
        );
        // SAFETY: a live slot, then no handle refers to it.
        unsafe {
            assert_eq!(data(odd) as usize % FRAME_ALIGN, 0);
            release(odd);
        }
        let want = 4 * LARGEST_CLASS_BYTES;
        let big = acquire(want);
        // SAFETY: no handle refers to it.
        unsafe { release(big) };
        let half = acquire(want / 2);
        assert_ne!(half, big, "a buffer twice as large as asked is not reused");
        let again = acquire(want - 1000);
        assert_eq!(again, big, "a buffer at most an eighth larger is reused");
        // SAFETY: no handle refers to them.
        unsafe {
            release(half);
            release(again);
        }
    }

    #[test]
    fn the_large_cache_keeps_at_most_its_byte_bound() {
        let each = FRAME_POOL_LARGE_BYTES / 3;
        let slots: Vec<_> = (0..4).map(|_| acquire(each)).collect();
        for &slot in &slots {
            // SAFETY: no handle refers to it.
            unsafe { release(slot) };
        }
        let kept = with_pool(|pool| Some((pool.large.free.len(), pool.large.bytes))).unwrap();
        assert!(kept.1 <= FRAME_POOL_LARGE_BYTES, "{kept:?}");
        assert!(
            kept.0 < slots.len(),
            "the fourth buffer went back to the allocator"
        );
        // Empty the cache for other tests on this thread.
        for _ in 0..kept.0 {
            let slot = acquire(each);
            // SAFETY: freshly taken, no handle; dealloc directly.
            unsafe { alloc::dealloc(slot.as_ptr().cast(), layout(cap_of(slot))) };
        }
    }
}
