//! The compio runtime a shard runs on.
//!
//! A shard's ring has exactly one thread submitting to it and reaping from
//! it, so it is set up for that (kernel ≥ 6.1; compio falls back when the
//! kernel refuses a flag):
//!
//! - **single issuer** and **deferred task running**: the kernel keeps the
//!   completion work of the ring's operations until the thread asks for
//!   completions, instead of interrupting it with an inter-processor
//!   interrupt each time a packet for one of its sockets arrives on another
//!   core. Under load that was a fifth of a shard's CPU;
//! - **cooperative task running** with the task-run flag, for kernels where
//!   the deferred mode is not available: no interrupt either, the work runs
//!   at the next kernel entry.

use std::io;

use compio::runtime::{Runtime, RuntimeBuilder};
use compio_driver::ProactorBuilder;

/// The ring settings of a shard (see the module docs).
pub fn proactor() -> ProactorBuilder {
    let mut builder = ProactorBuilder::new();
    builder
        .single_issuer(true)
        .defer_taskrun(true)
        .coop_taskrun(true)
        .taskrun_flag(true);
    builder
}

/// A runtime builder with a shard's ring settings.
pub fn builder() -> RuntimeBuilder {
    let mut builder = RuntimeBuilder::new();
    builder.with_proactor(proactor());
    builder
}

/// A runtime with a shard's ring settings, for a thread that runs one bus.
pub fn new() -> io::Result<Runtime> {
    builder().build()
}
