//! The handshake of spec §4 between a dialer and an acceptor in memory:
//! success, each refusal with its status, wrong keys, replays, tampering
//! and frames out of place.

use std::cell::Cell;

use bus_core::{Command, Frame, FrameError, FrameMut, Goodbye, GoodbyeReason};
use bus_replica::{
    Acceptor, Authenticated, Binding, Dialer, DialerOutcome, Failed, Failure, FinishOutcome,
    HelloOutcome, KeySlot, Keys, OsRandom, Refusal,
    message::{Challenge, Finish, Hello},
};

use crate::common::{CLUSTER, Ending, Nonces, challenged, key, node, run, run_with};

fn keys() -> Keys {
    Keys::new(key(1))
}

/// The Goodbye a failure sends: `HandshakeFailed`, sealed, stamped with the
/// sender's cluster and id.
fn assert_handshake_failed(failed: &Failed, sender: u8) {
    let frame = failed.goodbye.as_ref().expect("a Goodbye to send");
    let header = frame.header();
    assert_eq!(header.command(), Command::Goodbye);
    assert_eq!(header.validate(u32::MAX), Ok(()));
    assert!(header.is_sealed());
    assert_eq!((header.cluster(), header.replica()), (CLUSTER, sender));
    let goodbye = Goodbye::decode(header.command_area());
    assert_eq!(goodbye.reason, GoodbyeReason::HandshakeFailed);
    assert_eq!(
        goodbye.detail,
        failed.failure.to_string()[..goodbye.detail.len()]
    );
}

/// A change to a frame in a table of cases.
type Edit = fn(&mut FrameMut);

/// Re-seals `frame` after `edit`, as a peer that means it would.
fn resealed(frame: &Frame, edit: impl FnOnce(&mut FrameMut)) -> Frame {
    let mut frame = frame.to_mut();
    edit(&mut frame);
    frame.seal();
    frame.freeze()
}

/// `frame` after `edit`, with its old (now wrong) checksums.
fn tampered(frame: &Frame, edit: impl FnOnce(&mut FrameMut)) -> Frame {
    let mut frame = frame.to_mut();
    edit(&mut frame);
    frame.freeze()
}

fn sealed(command: Command) -> Frame {
    let mut frame = FrameMut::with_body(command, b"early");
    frame.header_mut().set_cluster(CLUSTER);
    frame.header_mut().set_replica(0);
    frame.seal();
    frame.freeze()
}

fn acceptor_fails_on_hello(frame: &Frame) -> Failed {
    let acceptor = Acceptor::new(
        &node(1, &[0, 1], &keys()),
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    match acceptor.receive_hello(frame, |_| panic!("is_live asked about a bad Hello")) {
        HelloOutcome::Failed(failed) => {
            assert_handshake_failed(&failed, 1);
            failed
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A dialer 0 → 1 and the acceptor's state after its ok Challenge.
fn dialed() -> (Dialer, Frame, Frame, bus_replica::AwaitingFinish) {
    let (dialer, hello) = Dialer::start(
        &node(0, &[0, 1], &keys()),
        1,
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    let acceptor = Acceptor::new(
        &node(1, &[0, 1], &keys()),
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    let (challenge, next) = challenged(acceptor, &hello);
    (dialer, hello, challenge, next)
}

fn dialer_fails(dialer: Dialer, frame: &Frame) -> Failed {
    match dialer.receive(frame) {
        DialerOutcome::Failed(failed) => failed,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn acceptor_fails_on_finish(next: bus_replica::AwaitingFinish, frame: &Frame) -> Failed {
    match next.receive_finish(frame) {
        FinishOutcome::Failed(failed) => {
            assert_handshake_failed(&failed, 1);
            failed
        }
        FinishOutcome::Authenticated(peer) => panic!("authenticated {peer:?}"),
    }
}

// Success.

#[test]
fn a_full_handshake_authenticates_both_sides() {
    let ids = [0, 1, 2];
    let ending = run(&node(0, &ids, &keys()), &node(2, &ids, &keys()));
    let Ending::Authenticated(dialer, acceptor) = ending else {
        panic!("{ending:?}");
    };
    assert_eq!(
        dialer,
        Authenticated {
            peer: 2,
            verified_with: KeySlot::Signing
        }
    );
    assert_eq!(
        acceptor,
        Authenticated {
            peer: 0,
            verified_with: KeySlot::Signing
        }
    );
}

#[test]
fn every_handshake_frame_is_sealed_and_carries_cluster_and_sender() {
    let (dialer, hello, challenge, next) = dialed();
    let DialerOutcome::Authenticated { finish, .. } = dialer.receive(&challenge) else {
        panic!("dialer failed");
    };
    for (frame, command, sender) in [(&hello, 3, 0), (&challenge, 4, 1), (&finish, 5, 0)] {
        let header = frame.header();
        assert_eq!(header.command_raw(), command);
        assert_eq!(header.validate(u32::MAX), Ok(()));
        assert!(header.is_sealed(), "command {command} not sealed");
        assert_eq!(header.cluster(), CLUSTER);
        assert_eq!(header.replica(), sender);
        assert_eq!(frame.len(), 256);
    }
    assert!(matches!(
        next.receive_finish(&finish),
        FinishOutcome::Authenticated(_)
    ));
}

#[test]
fn the_injected_nonces_are_the_ones_on_the_wire() {
    let (_, hello) = Dialer::start(
        &node(0, &[0, 1], &keys()),
        1,
        Binding::PLAIN_TCP,
        &mut Nonces(vec![[0xd1; 32]]),
    )
    .unwrap();
    assert_eq!(&hello.header().command_area()[0..32], &[0xd1; 32]);
    let acceptor = Acceptor::new(
        &node(1, &[0, 1], &keys()),
        Binding::PLAIN_TCP,
        &mut Nonces(vec![[0xa1; 32]]),
    )
    .unwrap();
    let (challenge, _) = challenged(acceptor, &hello);
    assert_eq!(&challenge.header().command_area()[0..32], &[0xa1; 32]);
    assert_eq!(challenge.header().command_area()[64], 0);
}

#[test]
fn a_failing_random_source_stops_the_handshake_before_it_starts() {
    let error = Dialer::start(
        &node(0, &[0, 1], &keys()),
        1,
        Binding::PLAIN_TCP,
        &mut Nonces(vec![]),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot draw a handshake nonce from the OS random number generator: test nonces used up"
    );
    Acceptor::new(
        &node(1, &[0, 1], &keys()),
        Binding::PLAIN_TCP,
        &mut Nonces(vec![]),
    )
    .unwrap_err();
}

// Refusals, each with its status, in the acceptor's order of checks.

/// The acceptor's refusal of `hello`, checked on the wire: a sealed
/// Challenge from the acceptor carrying only the status.
fn refusal_of(hello: &Frame, live: bool) -> Refusal {
    let acceptor = Acceptor::new(
        &node(2, &[0, 1, 2, 3], &keys()),
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    let HelloOutcome::Refused { challenge, refusal } = acceptor.receive_hello(hello, |_| live)
    else {
        panic!("not refused");
    };
    let header = challenge.header();
    assert_eq!(header.command(), Command::ReplicaChallenge);
    assert!(header.is_sealed());
    assert_eq!(header.validate(u32::MAX), Ok(()));
    assert_eq!((header.cluster(), header.replica()), (CLUSTER, 2));
    let mut only_status = [0; 128];
    only_status[64] = refusal.status();
    assert_eq!(header.command_area(), &only_status);
    refusal
}

fn hello(cluster: u128, replica: u8) -> Frame {
    Hello {
        cluster,
        replica,
        nonce_d: [7; 32],
    }
    .encode()
}

#[test]
fn wrong_cluster_is_refused_with_status_2() {
    assert_eq!(
        refusal_of(&hello(CLUSTER + 1, 0), false),
        Refusal::WrongCluster
    );
    assert_eq!(Refusal::WrongCluster.status(), 2);
    // The cluster comes first: an unknown id of another cluster is still 2.
    assert_eq!(
        refusal_of(&hello(CLUSTER + 1, 9), true),
        Refusal::WrongCluster
    );
}

#[test]
fn unknown_replica_is_refused_with_status_1() {
    assert_eq!(
        refusal_of(&hello(CLUSTER, 9), false),
        Refusal::UnknownReplica
    );
    assert_eq!(Refusal::UnknownReplica.status(), 1);
    // The acceptor's own id is not one of its peers.
    assert_eq!(
        refusal_of(&hello(CLUSTER, 2), false),
        Refusal::UnknownReplica
    );
    // The id check comes before the direction: 9 is higher but unknown.
    assert_eq!(
        refusal_of(&hello(CLUSTER, 9), true),
        Refusal::UnknownReplica
    );
}

#[test]
fn a_higher_id_dialing_is_refused_with_status_4() {
    assert_eq!(
        refusal_of(&hello(CLUSTER, 3), false),
        Refusal::WrongDirection
    );
    assert_eq!(Refusal::WrongDirection.status(), 4);
    // The direction comes before the duplicate check.
    assert_eq!(
        refusal_of(&hello(CLUSTER, 3), true),
        Refusal::WrongDirection
    );
}

#[test]
fn a_second_connection_from_a_live_replica_is_refused_with_status_3() {
    assert_eq!(refusal_of(&hello(CLUSTER, 1), true), Refusal::Duplicate);
    assert_eq!(Refusal::Duplicate.status(), 3);
    assert_eq!(refusal_of(&hello(CLUSTER, 0), true), Refusal::Duplicate);
}

#[test]
fn is_live_is_asked_about_the_dialer_only_after_every_other_check() {
    let acceptor = || {
        Acceptor::new(
            &node(2, &[0, 1, 2, 3], &keys()),
            Binding::PLAIN_TCP,
            &mut OsRandom,
        )
        .unwrap()
    };
    let asked = Cell::new(None);
    let outcome = acceptor().receive_hello(&hello(CLUSTER, 1), |id| {
        asked.set(Some(id));
        false
    });
    assert!(matches!(outcome, HelloOutcome::Challenge { .. }));
    assert_eq!(asked.get(), Some(1));

    for refused in [hello(CLUSTER + 1, 1), hello(CLUSTER, 9), hello(CLUSTER, 3)] {
        let outcome =
            acceptor().receive_hello(&refused, |id| panic!("is_live({id}) asked too early"));
        assert!(matches!(outcome, HelloOutcome::Refused { .. }));
    }
}

#[test]
fn the_dialer_reports_each_refusal_as_its_typed_error() {
    let ids = [0, 1, 2];
    let other_cluster = {
        let mut config = node(0, &ids, &keys());
        config.cluster = CLUSTER + 1;
        config
    };
    let cases = [
        (other_cluster, node(1, &ids, &keys()), Refusal::WrongCluster),
        (
            node(0, &[0, 1], &keys()),
            node(1, &[1, 2], &keys()),
            Refusal::UnknownReplica,
        ),
        (
            node(2, &ids, &keys()),
            node(1, &ids, &keys()),
            Refusal::WrongDirection,
        ),
    ];
    for (dialer, acceptor, expected) in cases {
        let ending = run(&dialer, &acceptor);
        let Ending::Refused { acceptor, dialer } = ending else {
            panic!("{ending:?}");
        };
        assert_eq!((acceptor, dialer), (expected, expected));
    }
    let message = Refusal::WrongDirection.to_string();
    assert_eq!(
        message,
        "refused with status 4: the lower id of each pair dials, not this one"
    );
}

#[test]
fn a_status_this_version_does_not_know_is_still_a_refusal() {
    let (dialer, hello) = Dialer::start(
        &node(0, &[0, 1], &keys()),
        1,
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    assert_eq!(hello.header().replica(), 0);
    let refusal = Challenge {
        cluster: CLUSTER,
        replica: 1,
        status: 9,
        nonce_a: [0; 32],
        mac_a: [0; 32],
    }
    .encode();
    assert_eq!(
        dialer.receive(&refusal),
        DialerOutcome::Refused(Refusal::Unknown(9))
    );
}

// Wrong keys.

#[test]
fn a_wrong_psk_fails_with_handshake_failed_on_both_sides() {
    let ids = [0, 1];
    let ending = run(
        &node(0, &ids, &Keys::new(key(1))),
        &node(1, &ids, &Keys::new(key(2))),
    );
    let Ending::DialerFailed { dialer, acceptor } = ending else {
        panic!("{ending:?}");
    };
    // The dialer cannot verify mac_a: it sends Goodbye(HandshakeFailed)...
    assert_eq!(dialer.failure, Failure::BadMac);
    assert_handshake_failed(&dialer, 0);
    // ...which the acceptor receives in place of the Finish.
    let Failure::PeerGoodbye(goodbye) = &acceptor.failure else {
        panic!("{acceptor:?}");
    };
    assert_eq!(goodbye.reason, GoodbyeReason::HandshakeFailed);
    assert!(
        goodbye
            .detail
            .starts_with("the peer's MAC verifies with none of our keys")
    );
    // A peer that said Goodbye is not answered (spec §3).
    assert_eq!(acceptor.goodbye, None);
}

#[test]
fn a_wrong_psk_on_the_dialer_fails_at_the_acceptor_too() {
    // The acceptor signs with a key the dialer also verifies, but the
    // dialer signs with one the acceptor does not know.
    let ids = [0, 1];
    let dialer = node(0, &ids, &Keys::new(key(2)).with_verify_only(key(1)));
    let acceptor = node(1, &ids, &Keys::new(key(1)));
    let ending = run(&dialer, &acceptor);
    let Ending::AcceptorFailed { dialer, acceptor } = ending else {
        panic!("{ending:?}");
    };
    assert_eq!(dialer.verified_with, KeySlot::VerifyOnly);
    assert_eq!(acceptor.failure, Failure::BadMac);
    assert_handshake_failed(&acceptor, 1);
}

#[test]
fn a_relay_between_two_tls_sessions_fails_on_the_binding() {
    let ids = [0, 1];
    // Each side sees the exporter value of its own TLS session with the relay.
    let ending = run_with(
        &node(0, &ids, &keys()),
        &node(1, &ids, &keys()),
        Binding::tls_exporter([0x11; 32]),
        Binding::tls_exporter([0x22; 32]),
    );
    let Ending::DialerFailed { dialer, .. } = ending else {
        panic!("{ending:?}");
    };
    assert_eq!(dialer.failure, Failure::BadMac);

    // One session end to end: both see the same value.
    let same = Binding::tls_exporter([0x33; 32]);
    let ending = run_with(&node(0, &ids, &keys()), &node(1, &ids, &keys()), same, same);
    assert!(matches!(ending, Ending::Authenticated(..)), "{ending:?}");
}

// Replays.

#[test]
fn a_replayed_finish_fails() {
    let (dialer, hello, challenge, next) = dialed();
    let DialerOutcome::Authenticated { finish, .. } = dialer.receive(&challenge) else {
        panic!("dialer failed");
    };
    assert!(matches!(
        next.receive_finish(&finish),
        FinishOutcome::Authenticated(_)
    ));

    // An eavesdropper replays the recorded Hello and Finish on a new
    // connection: the acceptor's fresh nonce_a makes the old mac_d wrong.
    let acceptor = Acceptor::new(
        &node(1, &[0, 1], &keys()),
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    let (new_challenge, next) = challenged(acceptor, &hello);
    assert_ne!(
        new_challenge.header().command_area()[0..32],
        challenge.header().command_area()[0..32]
    );
    assert_eq!(
        acceptor_fails_on_finish(next, &finish).failure,
        Failure::BadMac
    );
}

#[test]
fn a_replayed_finish_fails_even_if_the_hello_carries_the_same_nonce() {
    // The same nonce_d twice (a dialer with a broken RNG, or a replay):
    // still a fresh nonce_a, still a failure.
    let run_once = |nonce_a| {
        let (dialer, hello) = Dialer::start(
            &node(0, &[0, 1], &keys()),
            1,
            Binding::PLAIN_TCP,
            &mut Nonces(vec![[5; 32]]),
        )
        .unwrap();
        let acceptor = Acceptor::new(
            &node(1, &[0, 1], &keys()),
            Binding::PLAIN_TCP,
            &mut Nonces(vec![nonce_a]),
        )
        .unwrap();
        let (challenge, next) = challenged(acceptor, &hello);
        let DialerOutcome::Authenticated { finish, .. } = dialer.receive(&challenge) else {
            panic!("dialer failed");
        };
        (finish, next)
    };
    let (recorded, _) = run_once([1; 32]);
    let (_, next) = run_once([2; 32]);
    assert_eq!(
        acceptor_fails_on_finish(next, &recorded).failure,
        Failure::BadMac
    );
}

#[test]
fn a_replayed_challenge_fails_at_a_new_dialer() {
    let (_, _, recorded_challenge, _) = dialed();
    let (dialer, _) = Dialer::start(
        &node(0, &[0, 1], &keys()),
        1,
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    let failed = dialer_fails(dialer, &recorded_challenge);
    assert_eq!(failed.failure, Failure::BadMac);
    assert_handshake_failed(&failed, 0);
}

// Tampering.

#[test]
fn a_frame_changed_without_resealing_fails_its_checksum() {
    let hello = hello(CLUSTER, 0);
    let changed = tampered(&hello, |f| f.header_mut().command_area_mut()[0] ^= 1);
    assert_eq!(
        acceptor_fails_on_hello(&changed).failure,
        Failure::Malformed(FrameError::HeaderChecksum)
    );

    let (dialer, _, challenge, next) = dialed();
    let changed = tampered(&challenge, |f| f.header_mut().command_area_mut()[40] ^= 1);
    assert_eq!(
        dialer_fails(dialer, &changed).failure,
        Failure::Malformed(FrameError::HeaderChecksum)
    );
    let finish = Finish {
        cluster: CLUSTER,
        replica: 0,
        mac_d: [0; 32],
    }
    .encode();
    let changed = tampered(&finish, |f| f.header_mut().set_replica(3));
    assert_eq!(
        acceptor_fails_on_finish(next, &changed).failure,
        Failure::Malformed(FrameError::HeaderChecksum)
    );
}

#[test]
fn a_tampered_body_fails_its_checksum() {
    let mut frame = FrameMut::with_body(Command::ReplicaHello, b"padding");
    frame.header_mut().set_cluster(CLUSTER);
    frame.seal();
    frame.body_mut()[0] ^= 1;
    assert_eq!(
        acceptor_fails_on_hello(&frame.freeze()).failure,
        Failure::Malformed(FrameError::BodyChecksum)
    );
}

#[test]
fn an_unsealed_handshake_frame_fails() {
    let unsealed = tampered(&hello(CLUSTER, 0), |f| f.header_mut().set_checksum(0));
    assert_eq!(
        acceptor_fails_on_hello(&unsealed).failure,
        Failure::Malformed(FrameError::NotSealed)
    );
}

#[test]
fn a_resealed_challenge_with_changed_fields_fails_at_the_dialer() {
    let cases: [(Edit, Failure); 4] = [
        (
            |f| f.header_mut().command_area_mut()[0] ^= 1,
            Failure::BadMac,
        ),
        (
            |f| f.header_mut().command_area_mut()[63] ^= 1,
            Failure::BadMac,
        ),
        (
            |f| f.header_mut().set_replica(2),
            Failure::WrongReplica {
                expected: 1,
                got: 2,
            },
        ),
        (
            |f| f.header_mut().set_cluster(CLUSTER ^ 1),
            Failure::WrongCluster {
                expected: CLUSTER,
                got: CLUSTER ^ 1,
            },
        ),
    ];
    for (edit, expected) in cases {
        let (dialer, _, challenge, _) = dialed();
        let failed = dialer_fails(dialer, &resealed(&challenge, edit));
        assert_eq!(failed.failure, expected);
        assert_handshake_failed(&failed, 0);
    }
}

#[test]
fn a_resealed_finish_with_changed_fields_fails_at_the_acceptor() {
    let cases: [(Edit, Failure); 4] = [
        (
            |f| f.header_mut().command_area_mut()[32] ^= 1,
            Failure::BadMac,
        ),
        (
            |f| f.header_mut().command_area_mut()[63] ^= 0x80,
            Failure::BadMac,
        ),
        (
            |f| f.header_mut().set_replica(2),
            Failure::WrongReplica {
                expected: 0,
                got: 2,
            },
        ),
        (
            |f| f.header_mut().set_cluster(0),
            Failure::WrongCluster {
                expected: CLUSTER,
                got: 0,
            },
        ),
    ];
    for (edit, expected) in cases {
        let (dialer, _, challenge, next) = dialed();
        let DialerOutcome::Authenticated { finish, .. } = dialer.receive(&challenge) else {
            panic!("dialer failed");
        };
        assert_eq!(
            acceptor_fails_on_finish(next, &resealed(&finish, edit)).failure,
            expected
        );
    }
}

#[test]
fn a_bad_protocol_version_fails() {
    let frame = resealed(&hello(CLUSTER, 0), |f| f.header_mut().set_protocol(2));
    assert_eq!(
        acceptor_fails_on_hello(&frame).failure,
        Failure::Malformed(FrameError::BadProtocol { protocol: 2 })
    );
}

// Frames out of place.

#[test]
fn an_application_frame_or_ping_before_the_hello_fails() {
    for (frame, got) in [
        (sealed(Command::Application(16)), 16),
        (sealed(Command::Ping), 1),
    ] {
        assert_eq!(
            acceptor_fails_on_hello(&frame).failure,
            Failure::UnexpectedCommand {
                expected: Command::ReplicaHello,
                got
            }
        );
    }
    // A Challenge or Finish first is out of order too.
    assert_eq!(
        acceptor_fails_on_hello(&sealed(Command::ReplicaFinish)).failure,
        Failure::UnexpectedCommand {
            expected: Command::ReplicaHello,
            got: 5
        }
    );
}

#[test]
fn anything_but_a_finish_after_the_challenge_fails() {
    for (frame, got) in [
        (sealed(Command::Application(200)), 200),
        (sealed(Command::Ping), 1),
        (hello(CLUSTER, 0), 3),
    ] {
        let (_, _, _, next) = dialed();
        assert_eq!(
            acceptor_fails_on_finish(next, &frame).failure,
            Failure::UnexpectedCommand {
                expected: Command::ReplicaFinish,
                got
            }
        );
    }
}

#[test]
fn anything_but_a_challenge_at_the_dialer_fails() {
    for (frame, got) in [
        (sealed(Command::Application(16)), 16),
        (sealed(Command::Pong), 2),
        (hello(CLUSTER, 1), 3),
    ] {
        let (dialer, _) = Dialer::start(
            &node(0, &[0, 1], &keys()),
            1,
            Binding::PLAIN_TCP,
            &mut OsRandom,
        )
        .unwrap();
        let failed = dialer_fails(dialer, &frame);
        assert_eq!(
            failed.failure,
            Failure::UnexpectedCommand {
                expected: Command::ReplicaChallenge,
                got
            }
        );
        assert_handshake_failed(&failed, 0);
    }
}

#[test]
fn a_goodbye_in_place_of_the_challenge_ends_the_handshake_silently() {
    let (dialer, _) = Dialer::start(
        &node(0, &[0, 1], &keys()),
        1,
        Binding::PLAIN_TCP,
        &mut OsRandom,
    )
    .unwrap();
    let failed = dialer_fails(dialer, &Goodbye::frame(GoodbyeReason::ShuttingDown, "bye"));
    assert_eq!(
        failed.failure,
        Failure::PeerGoodbye(Goodbye {
            reason: GoodbyeReason::ShuttingDown,
            detail: "bye".to_owned()
        })
    );
    assert_eq!(failed.goodbye, None);
    assert_eq!(
        failed.failure.to_string(),
        "the peer closed the handshake: ShuttingDown (bye)"
    );
}
