//! Shared helpers for the integration scenarios: a recording handler, raw
//! clients per transport, frame builders, and the scenarios themselves,
//! written once and instantiated per transport with [`transport_suite!`].
//!
//! Every await that could hang is bounded by [`STEP`]; nothing here sleeps
//! to synchronise.

#![allow(
    clippy::missing_panics_doc,
    reason = "test scenarios and helpers assert by panicking"
)]

pub mod admission;
pub mod alloc;
pub mod client;
pub mod frames;
pub mod leaks;
pub mod mesh;
pub mod pki;
pub mod recorder;
pub mod requests;
pub mod scenarios;
pub mod shard;
pub mod transport;
pub mod websocket;

use std::{future::Future, time::Duration};

/// Bound on any single step of a test (a connect, a frame, an event).
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test with `what` if it takes longer than
/// [`STEP`].
///
/// # Panics
/// When the step times out.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    compio::runtime::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?} waiting for {what}"))
}

/// Waits until `condition` holds, checking every millisecond, failing the
/// test with `what` after [`STEP`]. For state that has no event to await
/// (counters that move after a peer has already seen the outcome).
///
/// # Panics
/// When the condition does not hold in time.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            compio::runtime::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// Lets every other ready task of this runtime run once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Instantiates the named scenarios of module `$module` of this crate as
/// `#[compio::test]`s for one transport. The suites below list their
/// scenarios through it.
#[doc(hidden)]
#[macro_export]
macro_rules! instantiate_scenarios {
    ($module:ident, $transport:ty; $($name:ident),* $(,)?) => {
        $(
            #[compio::test]
            async fn $name() {
                $crate::$module::$name::<$transport>().await;
            }
        )*
    };
}

/// Instantiates every transport-independent scenario of
/// [`scenarios`] as a `#[compio::test]` for one transport.
#[macro_export]
macro_rules! transport_suite {
    ($transport:ty) => {
        $crate::instantiate_scenarios!(scenarios, $transport;
            round_trip_256_bytes,
            round_trip_64_kib,
            round_trip_1_mib,
            pipelined_10000_frames_arrive_once_in_order_and_batched,
            oversize_frame_gets_frame_too_large_then_close,
            undersize_frame_gets_malformed_then_close,
            wrong_protocol_gets_malformed_then_close,
            command_zero_gets_malformed_then_close,
            reserved_commands_get_malformed_then_close,
            bad_header_seal_gets_checksum_mismatch_then_close,
            bad_body_seal_gets_checksum_mismatch_then_close,
            replica_command_from_client_gets_protocol_violation,
            unsealed_frames_are_accepted,
            nothing_after_a_bad_frame_reaches_the_handler,
            ping_is_answered_with_pong_and_never_reaches_the_handler,
            peer_goodbye_closes_the_connection,
            peer_vanishing_mid_frame_delivers_nothing,
            slow_peer_gets_queue_full_without_blocking_other_peers,
            slow_consumer_policy_disconnect_sends_goodbye,
            handler_panic_closes_only_its_connection,
            writer_panic_closes_only_its_connection,
            shutdown_flushes_queued_frames_before_goodbye,
            shutdown_is_bounded_by_a_peer_that_never_reads,
            connection_metadata_is_visible,
            broadcast_reaches_every_client_with_one_allocation,
            close_client_sends_goodbye_evicted,
            idle_timeout_closes_silent_connection,
            traffic_resets_the_idle_timer,
            shutdown_releases_every_socket_connection_and_the_handler,
            install_replica_serves_a_replica_and_send_to_replica_reaches_it,
            unsealed_frame_from_a_replica_gets_checksum_mismatch,
            a_second_connection_for_a_replica_replaces_the_first,
            broadcast_local_stays_on_this_shard_and_broadcast_forwards,
        );
        $crate::instantiate_scenarios!(requests, $transport;
            a_request_to_a_client_resolves_with_its_reply,
            a_close_wakes_its_outstanding_request_at_once,
            closing_one_connection_leaves_the_others_requests,
            a_request_completes_once_and_a_late_reply_is_dropped,
            requests_beyond_the_cap_fail_at_once,
            the_shutdown_flush_runs_before_connections_close,
            a_failing_or_hanging_shutdown_flush_is_reported,
        );
    };
}
