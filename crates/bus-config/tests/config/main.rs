//! Loading, merging and validating whole configs through the public API.

mod defaults;
mod load;
mod replica;
mod tls;
mod units;
mod validate;
mod ws;
