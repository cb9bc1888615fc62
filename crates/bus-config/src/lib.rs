//! TOML configuration of `bus`.
#![deny(missing_docs)]
