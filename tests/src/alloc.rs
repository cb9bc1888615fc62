//! A counting global allocator, for tests that bound the memory a step may
//! take without reading the process's RSS (which parallel tests disturb and
//! which reservations nobody touches never reach).
//!
//! Counters are per thread: a compio test runs the bus and its clients on
//! the test's own thread, so what other tests allocate on theirs does not
//! count. A test binary opts in with
//! `#[global_allocator] static ALLOC: bus_tests::alloc::Counting = bus_tests::alloc::Counting;`;
//! [`Window::start`] fails the test when the binary did not.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

thread_local! {
    /// Bytes allocated minus bytes freed on this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The highest `LIVE` since the current window started.
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// The largest single allocation since the current window started.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Allocations of at least [`LARGE_ALLOCATION_BYTES`] since the current
    /// window started.
    static LARGE: Cell<u64> = const { Cell::new(0) };
}

/// What [`Window::large_allocations`] counts: allocations above the largest
/// pooled size class of bus-core (64 KiB).
pub const LARGE_ALLOCATION_BYTES: usize = (64 << 10) + 1;

/// The system allocator, counting what each thread allocates.
#[derive(Debug)]
pub struct Counting;

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

fn allocated(size: usize) {
    // `try_with`: a thread's last allocations may come after its locals
    // are gone; those are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(signed(size));
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    if size >= LARGE_ALLOCATION_BYTES {
        let _ = LARGE.try_with(|large| large.set(large.get() + 1));
    }
}

fn freed(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(signed(size))));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates plain thread-local counters besides, which
// neither allocate nor unwind.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        freed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            freed(layout.size());
            allocated(new_size);
        }
        new
    }
}

/// A measurement window on this thread: the peak growth of live heap bytes,
/// the largest single allocation and the count of large ones since
/// [`Window::start`].
#[derive(Debug)]
pub struct Window {
    base: isize,
}

impl Window {
    /// Starts measuring on this thread.
    ///
    /// # Panics
    /// If [`Counting`] is not this binary's global allocator.
    pub fn start() -> Self {
        LARGEST.with(|largest| largest.set(0));
        let probe: Vec<u8> = Vec::with_capacity(4096);
        let counted = LARGEST.with(Cell::get);
        drop(std::hint::black_box(probe));
        assert!(
            counted >= 4096,
            "install bus_tests::alloc::Counting as this test binary's #[global_allocator]"
        );
        LARGEST.with(|largest| largest.set(0));
        LARGE.with(|large| large.set(0));
        let base = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(base));
        Self { base }
    }

    /// The most the live heap of this thread grew above its level at the
    /// start, in bytes.
    pub fn peak_growth(&self) -> usize {
        let peak = PEAK.with(Cell::get);
        usize::try_from(peak.saturating_sub(self.base)).unwrap_or(0)
    }

    /// The largest single allocation on this thread since the start.
    pub fn largest_allocation(&self) -> usize {
        LARGEST.with(Cell::get)
    }

    /// How many allocations of at least [`LARGE_ALLOCATION_BYTES`] this
    /// thread made since the start (a `realloc` to such a size counts).
    pub fn large_allocations(&self) -> u64 {
        LARGE.with(Cell::get)
    }
}
