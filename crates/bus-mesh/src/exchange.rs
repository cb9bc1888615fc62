//! The spec §4 handshake on an established connection: `bus-replica`'s
//! state machines driven over a [`FrameReader`] and a [`FrameWriter`],
//! every read and write bounded by the handshake's deadline, and the
//! authenticated connection handed to the bus.
//!
//! ```text
//!  acceptor: read Hello ─▶ Challenge (ok) ─▶ read Finish ─▶ claim ─▶ adopt_replica
//!                      └─▶ refusal ─▶ close          └─▶ Goodbye(HandshakeFailed) ─▶ close
//!  dialer:   write Hello ─▶ read Challenge ─▶ write Finish ─▶ claim ─▶ adopt_replica
//!                                       └─▶ refused: close │ bad mac_a: Goodbye ─▶ close
//! ```
//!
//! Until the peer is authenticated the reader decodes with a 256-byte
//! limit (the handshake messages are bare headers), so an unauthenticated
//! peer can make the node buffer no frame body at all; the bus's own
//! limits apply from the first frame after. A refusal or failure writes
//! its one frame, closes our side and waits briefly for the peer's end of
//! stream, so the peer reads why rather than a reset.

use std::{io, time::Instant};

use bus_core::{
    AdoptError, Bus, ByteSource, ConnectionInfo, Error, Frame, FrameError, GoodbyeReason,
    ReadSettings, ReplicaEnd, StreamReader,
    transport::{FrameReader, FrameWriter},
};
use bus_replica::{
    Acceptor, Binding, Dialer, DialerOutcome, Failure, FinishOutcome, HandshakeConfig,
    HelloOutcome, OsRandom, message,
};
use compio::runtime::time;

use crate::{
    error::HandshakeError,
    limits::{GOODBYE_WRITE_BOUND, HANDSHAKE_MAX_MESSAGE_SIZE_BYTES, REFUSAL_DRAIN},
    state::Shared,
};

/// An established transport, before the replica handshake.
pub(crate) struct Transport<S, W> {
    pub(crate) reader: StreamReader<S>,
    pub(crate) writer: W,
    pub(crate) info: ConnectionInfo,
    /// Zeros on plain TCP, the TLS exporter value on TLS.
    pub(crate) binding: Binding,
}

/// How a connection reads while it is unauthenticated: the bus's replica
/// settings (read buffer, budget) with a 256-byte frame limit, sealed
/// frames only.
pub(crate) fn handshake_read_settings(bus: &Bus) -> ReadSettings {
    let mut settings = bus.replica_read_settings();
    settings.limits.max_message_size_bytes = HANDSHAKE_MAX_MESSAGE_SIZE_BYTES;
    settings.limits.require_sealed = true;
    settings
}

/// Why a handshake message did not arrive.
enum ReadFailure {
    /// It broke a rule of spec §1 (too large for a handshake message,
    /// unsealed, a bad checksum).
    Frame(FrameError),
    /// The deadline passed.
    Timeout,
    /// The peer closed or the socket failed.
    Gone(String),
}

async fn read_message<S: ByteSource>(
    reader: &mut StreamReader<S>,
    deadline: Instant,
) -> Result<Frame, ReadFailure> {
    match time::timeout_at(deadline, reader.read_frame()).await {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(Error::Frame(err))) => Err(ReadFailure::Frame(err)),
        Ok(Err(Error::Closed)) => Err(ReadFailure::Gone("the peer closed the connection".into())),
        Ok(Err(err)) => Err(ReadFailure::Gone(err.to_string())),
        Err(_) => Err(ReadFailure::Timeout),
    }
}

async fn write_message<W: FrameWriter>(
    writer: &mut W,
    frame: Frame,
    deadline: Instant,
    grace: std::time::Duration,
) -> Result<(), HandshakeError> {
    match time::timeout_at(deadline, writer.write_batch(vec![frame])).await {
        Ok(compio::BufResult(Ok(()), _)) => Ok(()),
        Ok(compio::BufResult(Err(err), _)) => Err(HandshakeError::Io(err.to_string())),
        Err(_) => Err(HandshakeError::Timeout(grace)),
    }
}

impl<S: ByteSource, W: FrameWriter> Transport<S, W> {
    /// Writes `last` (a refusal or a Goodbye), closes our side and waits a
    /// little for the peer's end of stream. Best effort, bounded.
    async fn close_with(mut self, last: Option<Frame>, reason: Option<GoodbyeReason>) {
        if let Some(frame) = last {
            let written = time::timeout(GOODBYE_WRITE_BOUND, self.writer.write_batch(vec![frame]));
            if !matches!(written.await, Ok(compio::BufResult(Ok(()), _))) {
                return;
            }
        }
        if !matches!(
            time::timeout(GOODBYE_WRITE_BOUND, self.writer.close(reason)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let _ = time::timeout(REFUSAL_DRAIN, async {
            while matches!(self.reader.discard().await, Ok(n) if n > 0) {}
        })
        .await;
    }

    /// Ends the handshake after a message that did not arrive: a Goodbye
    /// where the peer can still read one.
    async fn fail_read(
        self,
        failure: ReadFailure,
        config: &HandshakeConfig,
        grace: std::time::Duration,
    ) -> HandshakeError {
        let (error, detail) = match failure {
            ReadFailure::Gone(why) => return HandshakeError::Io(why),
            ReadFailure::Frame(err) => {
                let failure = Failure::Malformed(err);
                let detail = failure.to_string();
                (HandshakeError::Failed(failure), detail)
            }
            ReadFailure::Timeout => (
                HandshakeError::Timeout(grace),
                format!("no replica handshake within {grace:?}"),
            ),
        };
        let reason = GoodbyeReason::HandshakeFailed;
        let goodbye = message::goodbye(config.cluster, config.self_id, reason, &detail);
        self.close_with(Some(goodbye), Some(reason)).await;
        error
    }

    /// Hands the authenticated connection to the bus, once its claim is
    /// ours: the bus's own limits from the next frame on.
    async fn register(
        mut self,
        bus: &Bus,
        shared: &Shared,
        config: &HandshakeConfig,
        peer: u8,
        end: ReplicaEnd,
        started: Instant,
    ) -> Result<(), HandshakeError> {
        if !shared.claim(peer) {
            // Two handshakes from one replica raced past the status-3 check.
            let reason = GoodbyeReason::HandshakeFailed;
            let detail = format!("replica {peer} is connected already (status 3)");
            let goodbye = message::goodbye(config.cluster, config.self_id, reason, &detail);
            self.close_with(Some(goodbye), Some(reason)).await;
            return Err(HandshakeError::Raced(peer));
        }
        let limits = bus.replica_read_settings().limits;
        self.reader.decoder_mut().set_limits(limits);
        self.info.connected_since = std::time::SystemTime::now();
        match bus.adopt_replica_as(self.reader, self.writer, self.info, peer, end, started) {
            Ok(()) => Ok(()),
            Err(err) => {
                shared.release(peer);
                Err(match err {
                    AdoptError::Duplicate(id) => HandshakeError::Raced(id),
                    _ => HandshakeError::ShuttingDown,
                })
            }
        }
    }
}

/// The acceptor's side. Returns the authenticated peer, or the error with
/// the peer id the Hello claimed (when it got that far).
pub(crate) async fn accept<S: ByteSource, W: FrameWriter>(
    bus: &Bus,
    shared: &Shared,
    mut transport: Transport<S, W>,
    started: Instant,
    deadline: Instant,
) -> Result<u8, (Option<u8>, HandshakeError)> {
    let grace = shared.config.handshake_grace;
    let config = shared.handshake_config();
    let acceptor = Acceptor::new(&config, transport.binding, &mut OsRandom)
        .map_err(|e| (None, HandshakeError::Nonce(e.to_string())))?;
    let hello = match read_message(&mut transport.reader, deadline).await {
        Ok(frame) => frame,
        Err(failure) => return Err((None, transport.fail_read(failure, &config, grace).await)),
    };
    let claimed = hello.header().replica();
    let known = shared.peer(claimed).map(|_| claimed);
    match acceptor.receive_hello(&hello, |id| shared.is_live(id)) {
        HelloOutcome::Challenge { challenge, next } => {
            let peer = next.peer();
            if let Err(err) = write_message(&mut transport.writer, challenge, deadline, grace).await
            {
                return Err((Some(peer), err));
            }
            let finish = match read_message(&mut transport.reader, deadline).await {
                Ok(frame) => frame,
                Err(failure) => {
                    return Err((
                        Some(peer),
                        transport.fail_read(failure, &config, grace).await,
                    ));
                }
            };
            match next.receive_finish(&finish) {
                FinishOutcome::Authenticated(authenticated) => transport
                    .register(
                        bus,
                        shared,
                        &config,
                        authenticated.peer,
                        ReplicaEnd::Acceptor,
                        started,
                    )
                    .await
                    .map(|()| authenticated.peer)
                    .map_err(|e| (Some(peer), e)),
                FinishOutcome::Failed(failed) => {
                    let reason = failed
                        .goodbye
                        .as_ref()
                        .map(|_| GoodbyeReason::HandshakeFailed);
                    transport.close_with(failed.goodbye, reason).await;
                    Err((Some(peer), HandshakeError::Failed(failed.failure)))
                }
            }
        }
        HelloOutcome::Refused { challenge, refusal } => {
            transport.close_with(Some(challenge), None).await;
            Err((known, HandshakeError::Refused(refusal)))
        }
        HelloOutcome::Failed(failed) => {
            let reason = failed
                .goodbye
                .as_ref()
                .map(|_| GoodbyeReason::HandshakeFailed);
            transport.close_with(failed.goodbye, reason).await;
            Err((known, HandshakeError::Failed(failed.failure)))
        }
    }
}

/// The dialer's side, with replica `peer`.
pub(crate) async fn dial<S: ByteSource, W: FrameWriter>(
    bus: &Bus,
    shared: &Shared,
    peer: u8,
    mut transport: Transport<S, W>,
    started: Instant,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let grace = shared.config.handshake_grace;
    let config = shared.handshake_config();
    let (dialer, hello) = Dialer::start(&config, peer, transport.binding, &mut OsRandom)
        .map_err(|e| HandshakeError::Nonce(e.to_string()))?;
    write_message(&mut transport.writer, hello, deadline, grace).await?;
    let challenge = match read_message(&mut transport.reader, deadline).await {
        Ok(frame) => frame,
        Err(failure) => return Err(transport.fail_read(failure, &config, grace).await),
    };
    match dialer.receive(&challenge) {
        DialerOutcome::Authenticated { finish, peer } => {
            write_message(&mut transport.writer, finish, deadline, grace).await?;
            transport
                .register(bus, shared, &config, peer.peer, ReplicaEnd::Dialer, started)
                .await
        }
        DialerOutcome::Refused(refusal) => {
            transport.close_with(None, None).await;
            Err(HandshakeError::Refused(refusal))
        }
        DialerOutcome::Failed(failed) => {
            let reason = failed
                .goodbye
                .as_ref()
                .map(|_| GoodbyeReason::HandshakeFailed);
            transport.close_with(failed.goodbye, reason).await;
            Err(HandshakeError::Failed(failed.failure))
        }
    }
}

/// An I/O error of a transport step as a handshake error.
pub(crate) fn io_error(err: &io::Error) -> HandshakeError {
    HandshakeError::Io(err.to_string())
}
