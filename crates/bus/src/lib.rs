//! bus facade.
#![deny(missing_docs)]
pub use bus_core as core;
