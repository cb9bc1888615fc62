//! Helpers shared by the suites: nodes, nonce sources, the three steps of a
//! handshake, temporary directories.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use bus_core::Frame;
use bus_replica::{
    Acceptor, Authenticated, AwaitingFinish, Binding, Dialer, DialerOutcome, Failed, FinishOutcome,
    HandshakeConfig, HelloOutcome, Key, Keys, NonceError, NonceSource, OsRandom, PeerSet, Refusal,
};

pub(crate) const CLUSTER: u128 = 0x00c0_ffee_0000_0000_0000_0000_0000_002a;

/// A key from a 32-byte PSK made of `byte`.
pub(crate) fn key(byte: u8) -> Key {
    Key::derive(&[byte; 32])
}

/// Node `self_id` of a cluster made of `ids`, signing and verifying with
/// `keys`.
pub(crate) fn node(self_id: u8, ids: &[u8], keys: &Keys) -> HandshakeConfig {
    let peers: PeerSet = ids.iter().copied().filter(|id| *id != self_id).collect();
    HandshakeConfig::new(CLUSTER, self_id, peers, keys.clone())
}

/// Hands out the given nonces in order, then fails.
pub(crate) struct Nonces(pub(crate) Vec<[u8; 32]>);

impl NonceSource for Nonces {
    fn nonce(&mut self) -> Result<[u8; 32], NonceError> {
        if self.0.is_empty() {
            Err(NonceError::new("test nonces used up"))
        } else {
            Ok(self.0.remove(0))
        }
    }
}

/// What a whole in-memory handshake ended with on each side.
#[derive(Debug)]
pub(crate) enum Ending {
    /// Both sides authenticated: (the dialer's view, the acceptor's view).
    Authenticated(Authenticated, Authenticated),
    /// The acceptor refused; the refusal the dialer read from the Challenge.
    Refused { acceptor: Refusal, dialer: Refusal },
    /// The dialer failed on the Challenge (and sent `goodbye`); what the
    /// acceptor made of that Goodbye in place of a Finish.
    DialerFailed { dialer: Failed, acceptor: Failed },
    /// The dialer authenticated, the acceptor failed on the Finish.
    AcceptorFailed {
        dialer: Authenticated,
        acceptor: Failed,
    },
}

/// Runs a whole handshake from `dialer` to `acceptor` in memory, with OS
/// nonces and no live connections.
pub(crate) fn run(dialer: &HandshakeConfig, acceptor: &HandshakeConfig) -> Ending {
    run_with(dialer, acceptor, Binding::PLAIN_TCP, Binding::PLAIN_TCP)
}

/// As [`run`], with each side's own view of the channel binding.
pub(crate) fn run_with(
    dialer: &HandshakeConfig,
    acceptor: &HandshakeConfig,
    dialer_binding: Binding,
    acceptor_binding: Binding,
) -> Ending {
    let (d, hello) =
        Dialer::start(dialer, acceptor.self_id, dialer_binding, &mut OsRandom).unwrap();
    let a = Acceptor::new(acceptor, acceptor_binding, &mut OsRandom).unwrap();
    let (challenge, next) = match a.receive_hello(&hello, |_| false) {
        HelloOutcome::Challenge { challenge, next } => (challenge, next),
        HelloOutcome::Refused { challenge, refusal } => {
            let DialerOutcome::Refused(dialer) = d.receive(&challenge) else {
                panic!("the dialer did not read the refusal {refusal:?}");
            };
            return Ending::Refused {
                acceptor: refusal,
                dialer,
            };
        }
        HelloOutcome::Failed(failed) => panic!("the acceptor failed on a Hello: {failed:?}"),
    };
    match d.receive(&challenge) {
        DialerOutcome::Authenticated { finish, peer } => match next.receive_finish(&finish) {
            FinishOutcome::Authenticated(acceptor) => Ending::Authenticated(peer, acceptor),
            FinishOutcome::Failed(acceptor) => Ending::AcceptorFailed {
                dialer: peer,
                acceptor,
            },
        },
        DialerOutcome::Failed(dialer) => {
            let goodbye = dialer
                .goodbye
                .clone()
                .expect("a failed dialer says Goodbye");
            let FinishOutcome::Failed(acceptor) = next.receive_finish(&goodbye) else {
                panic!("the acceptor took a Goodbye as a Finish");
            };
            Ending::DialerFailed { dialer, acceptor }
        }
        DialerOutcome::Refused(refusal) => panic!("an ok Challenge read as {refusal:?}"),
    }
}

/// The acceptor's side after an ok Challenge to `hello`.
pub(crate) fn challenged(acceptor: Acceptor, hello: &Frame) -> (Frame, AwaitingFinish) {
    match acceptor.receive_hello(hello, |_| false) {
        HelloOutcome::Challenge { challenge, next } => (challenge, next),
        other => panic!("expected an ok Challenge, got {other:?}"),
    }
}

/// A fresh directory under the system's temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("bus-replica-{}-{what}-{n}", std::process::id()));
        // A leftover of an earlier run with the same pid is stale.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `name` with permission bits `mode`.
    pub(crate) fn file(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;

        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
