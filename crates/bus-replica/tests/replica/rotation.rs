//! Key rotation (spec §4): a node signs with its signing key and accepts a
//! peer's MAC made with its signing or its verify-only key.

use bus_replica::{Failure, KeySlot, Keys};

use crate::common::{Ending, key, node, run};

const IDS: [u8; 4] = [0, 1, 2, 3];

fn old() -> bus_replica::Key {
    key(0x01)
}

fn new() -> bus_replica::Key {
    key(0x02)
}

/// Both directions between node `a` and node `b` (the lower id dials).
fn both_ways(a: (u8, &Keys), b: (u8, &Keys)) -> [Ending; 2] {
    let (a_id, a_keys) = a;
    let (b_id, b_keys) = b;
    // Each pair has one dialing direction; swap the ids to get the other.
    [
        run(&node(a_id, &IDS, a_keys), &node(b_id, &IDS, b_keys)),
        run(&node(a_id, &IDS, b_keys), &node(b_id, &IDS, a_keys)),
    ]
}

#[test]
fn nodes_mid_rotation_authenticate_each_other() {
    // A signs with the new key, B still with the old; each verifies both.
    let a = Keys::new(new()).with_verify_only(old());
    let b = Keys::new(old()).with_verify_only(new());
    for ending in both_ways((0, &a), (1, &b)) {
        let Ending::Authenticated(dialer, acceptor) = ending else {
            panic!("{ending:?}");
        };
        // Each side matched the other's MAC with its verify-only key.
        assert_eq!(dialer.verified_with, KeySlot::VerifyOnly);
        assert_eq!(acceptor.verified_with, KeySlot::VerifyOnly);
    }
}

#[test]
fn every_step_of_the_rotation_keeps_the_mesh() {
    let steps = [
        // Before: the old key alone.
        Keys::new(old()),
        // Step 1: old signs, new verifies.
        Keys::new(old()).with_verify_only(new()),
        // Step 2: new signs, old verifies.
        Keys::new(new()).with_verify_only(old()),
        // Step 3: the new key alone.
        Keys::new(new()),
    ];
    // Nodes roll one at a time, so at any moment two nodes are at most one
    // step apart.
    for pair in steps.windows(2) {
        for ending in both_ways((0, &pair[0]), (1, &pair[1])) {
            assert!(matches!(ending, Ending::Authenticated(..)), "{ending:?}");
        }
    }
}

#[test]
fn a_node_with_only_a_third_key_is_refused() {
    let third = Keys::new(key(0x03));
    let a = Keys::new(new()).with_verify_only(old());
    let b = Keys::new(old()).with_verify_only(new());
    for other in [&a, &b] {
        for ending in both_ways((0, &third), (1, other)) {
            // Whoever dials, the dialer cannot verify the acceptor's MAC;
            // its Goodbye(HandshakeFailed) is what the acceptor gets.
            let Ending::DialerFailed { dialer, acceptor } = ending else {
                panic!("{ending:?}");
            };
            assert_eq!(dialer.failure, Failure::BadMac);
            assert!(matches!(acceptor.failure, Failure::PeerGoodbye(_)));
        }
    }
}

#[test]
fn a_node_that_skipped_step_1_cannot_verify_the_new_key() {
    // Why step 1 exists: a node that still knows only the old key refuses a
    // peer already signing with the new one.
    let rolled = Keys::new(new()).with_verify_only(old());
    let stale = Keys::new(old());
    let [rolled_dials, stale_dials] = both_ways((0, &rolled), (1, &stale));
    let Ending::AcceptorFailed { acceptor, .. } = rolled_dials else {
        panic!("{rolled_dials:?}");
    };
    assert_eq!(acceptor.failure, Failure::BadMac);
    let Ending::DialerFailed { dialer, .. } = stale_dials else {
        panic!("{stale_dials:?}");
    };
    assert_eq!(dialer.failure, Failure::BadMac);
}
