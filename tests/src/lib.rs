//! Shared helpers for the integration scenarios.
