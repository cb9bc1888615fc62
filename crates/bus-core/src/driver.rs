//! The tasks behind a connection: accept, handshake, and the connection task
//! that runs its reader and writer side by side and closes it within bounds.
//!
//! ```text
//! accept_loop ──spawn──▶ handshake (≤ handshake_grace) ──register──▶ connection task
//!                                                                  ├─ read_loop:  frame → rules → Ping/Goodbye/handler
//!                                                                  └─ write_loop: queue → batch (≤ max_batch) → write
//! ```
//!
//! Close sequence, one path for every cause: `Conn::begin_close` → the
//! writer writes what is queued, then the `Goodbye`, then closes its side
//! (≤ `close_grace` from the start of closing) → the reader waits for the
//! peer's end of stream (≤ `close_peer_timeout` after the writer is done) →
//! the task ends and its drop guard evicts the slot and fires the lost
//! callback exactly once, also on panic or cancellation.

use std::{
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::pin,
    rc::Rc,
    time::{Duration, Instant},
};

use compio::{BufResult, runtime::time};
use futures_util::{FutureExt, future::pending, select_biased};

use crate::{
    buf::Frame,
    bus::Bus,
    codec::DecodeLimits,
    conn::{CloseReason, Closing, Conn},
    error::Error,
    goodbye::{Goodbye, GoodbyeReason},
    header::Command,
    id::Peer,
    stats::bump,
    transport::{Connection, FrameReader, FrameWriter, Listener},
};

/// Pause after a failed `accept` (for example out of file descriptors), so a
/// persistent error does not spin the shard.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn accept_loop<L: Listener>(bus: Bus, mut listener: L) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                if bus.install(connection).is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

pub(crate) async fn handshake<C: Connection>(bus: Bus, connection: C, replica: Option<u8>) {
    let config = &bus.inner.config;
    let limits = DecodeLimits {
        max_message_size_bytes: config.max_message_size_bytes,
        require_sealed: if replica.is_some() {
            config.require_sealed_replicas
        } else {
            config.require_sealed_clients
        },
    };
    let peer_addr = connection.peer_addr();
    let transport = connection.transport();
    let grace = config.handshake_grace;
    let established = match time::timeout(
        grace,
        connection.establish(limits, config.read_buffer_bytes),
    )
    .await
    {
        Ok(Ok(established)) => established,
        Ok(Err(err)) => {
            bump(&bus.inner.counters.handshake_failures, 1);
            tracing::debug!(%peer_addr, %transport, %err, "handshake failed");
            return;
        }
        Err(_) => {
            bump(&bus.inner.counters.handshake_failures, 1);
            tracing::debug!(%peer_addr, %transport, ?grace, "handshake timed out");
            return;
        }
    };
    let (reader, writer, info) = established;
    let Some(conn) = bus.register(replica, info) else {
        return; // shutting down: dropping the halves closes the socket
    };
    let task = run(bus.clone(), conn, reader, writer);
    bus.inner.connections.spawn(task);
}

/// The connection task.
async fn run<R: FrameReader, W: FrameWriter>(
    bus: Bus,
    conn: Rc<Conn>,
    mut reader: R,
    mut writer: W,
) {
    // Runs however the task ends: normally, by panic (compio drops a
    // panicked task's future at once) or by cancellation.
    let _guard = scopeguard::guard((bus.clone(), conn.clone()), |(bus, conn)| {
        bus.connection_ended(&conn);
    });
    {
        let handler = bus.inner.handler.clone();
        let connected = catch_unwind(AssertUnwindSafe(|| {
            handler.on_connected(&bus, conn.peer, &conn.info);
        }));
        if connected.is_err() {
            bump(&bus.inner.counters.handler_panics, 1);
            conn.begin_close(
                Closing {
                    goodbye: None,
                    flush: false,
                },
                CloseReason::HandlerPanicked,
            );
        }
    }
    supervise(&bus, &conn, &mut reader, &mut writer).await;
    conn.completed.set(true);
}

/// How the read side ended.
#[derive(Debug)]
enum ReadEnd {
    /// End of stream (after any close the reader started itself).
    Eof,
    /// The socket failed, or the handler panicked: nothing more can be done
    /// in order, so the connection is dropped at once.
    Abort,
}

async fn supervise<R: FrameReader, W: FrameWriter>(
    bus: &Bus,
    conn: &Rc<Conn>,
    reader: &mut R,
    writer: &mut W,
) {
    let config = &bus.inner.config;
    let mut read = pin!(read_loop(bus, conn, reader).fuse());
    let mut write = pin!(write_loop(bus, conn, writer).fuse());
    let mut read_done = false;
    let mut write_done = false;
    // Past this instant whatever is unfinished is abandoned.
    let mut deadline: Option<Instant> = None;
    if !conn.is_open() {
        deadline = Some(Instant::now() + config.close_grace);
    }
    while !(read_done && write_done) {
        let mut closing = pin!(conn.closing_started.notified().fuse());
        let current_deadline = deadline;
        let mut timer = pin!(
            async move {
                match current_deadline {
                    Some(d) => time::sleep_until(d).await,
                    None => pending().await,
                }
            }
            .fuse()
        );
        let mut idle = pin!(idle_expired(conn, config.idle_timeout).fuse());
        select_biased! {
            end = read => {
                read_done = true;
                if matches!(end, ReadEnd::Abort) {
                    break;
                }
                // End of stream: write what is queued (a half-closed peer may
                // still read), no Goodbye, within close_grace.
                conn.begin_close(Closing { goodbye: None, flush: true }, CloseReason::PeerClosed);
                let bound = Instant::now() + config.close_grace;
                deadline = Some(deadline.map_or(bound, |d| d.min(bound)));
            }
            res = write => {
                write_done = true;
                if let Err(err) = res {
                    conn.set_cause(CloseReason::Io(err.kind()));
                    break;
                }
                // Our side is closed; the peer gets close_peer_timeout to close theirs.
                deadline = Some(Instant::now() + config.close_peer_timeout);
            }
            () = closing => {
                let bound = Instant::now() + config.close_grace;
                deadline = Some(deadline.map_or(bound, |d| d.min(bound)));
            }
            () = timer => {
                tracing::debug!(peer = ?conn.peer, read_done, write_done, "close bound reached; dropping connection");
                break;
            }
            () = idle => {
                let closing = Closing {
                    goodbye: Some((GoodbyeReason::IdleTimeout, "no frame received within idle_timeout".into())),
                    flush: true,
                };
                conn.begin_close(closing, CloseReason::Closed(GoodbyeReason::IdleTimeout));
            }
        }
    }
}

/// Resolves when no frame has arrived for `idle`; never without a timeout.
async fn idle_expired(conn: &Conn, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return pending().await;
    };
    if !conn.is_open() {
        return pending().await;
    }
    loop {
        let due = conn.last_rx.get() + idle;
        if Instant::now() >= due {
            return;
        }
        time::sleep_until(due).await;
    }
}

async fn read_loop<R: FrameReader>(bus: &Bus, conn: &Conn, reader: &mut R) -> ReadEnd {
    let inner = &bus.inner;
    let track_idle = inner.config.idle_timeout.is_some();
    loop {
        let frame = match reader.read_frame().await {
            Ok(frame) => frame,
            Err(Error::Closed) => return ReadEnd::Eof,
            Err(Error::Frame(err)) => {
                let reason = err.goodbye_reason();
                tracing::debug!(peer = ?conn.peer, %err, "protocol violation");
                conn.begin_close(
                    Closing {
                        goodbye: Some((reason, err.to_string())),
                        flush: true,
                    },
                    CloseReason::ProtocolViolation(reason),
                );
                return drain(reader).await;
            }
            Err(Error::Io(err)) => {
                conn.set_cause(CloseReason::Io(err.kind()));
                return ReadEnd::Abort;
            }
            Err(other) => {
                tracing::debug!(peer = ?conn.peer, err = %other, "read failed");
                conn.set_cause(CloseReason::Io(io::ErrorKind::Other));
                return ReadEnd::Abort;
            }
        };
        let len = frame.len() as u64;
        bump(&conn.counters.frames_in, 1);
        bump(&conn.counters.bytes_in, len);
        bump(&inner.counters.frames_in, 1);
        bump(&inner.counters.bytes_in, len);
        if track_idle {
            conn.last_rx.set(Instant::now());
        }
        match frame.header().command() {
            Command::Application(_) => {
                let frame = match conn.peer {
                    Peer::Client(id) => stamp_client(frame, id.as_raw()),
                    Peer::Replica(_) => frame,
                };
                let handler = &inner.handler;
                let delivered =
                    catch_unwind(AssertUnwindSafe(|| handler.on_frame(bus, conn.peer, frame)));
                if delivered.is_err() {
                    bump(&inner.counters.handler_panics, 1);
                    tracing::error!(peer = ?conn.peer, "handler panicked; closing its connection");
                    conn.set_cause(CloseReason::HandlerPanicked);
                    return ReadEnd::Abort;
                }
            }
            Command::Ping => {
                // A full queue drops the Pong: the peer's own timeout tells it.
                let _ = conn.enqueue(pong_for(&frame));
            }
            Command::Pong => {}
            Command::Goodbye => {
                let goodbye = Goodbye::decode(frame.header().command_area());
                tracing::debug!(peer = ?conn.peer, reason = %goodbye.reason, "peer said goodbye");
                conn.begin_close(
                    Closing {
                        goodbye: None,
                        flush: false,
                    },
                    CloseReason::PeerGoodbye(goodbye),
                );
                return drain(reader).await;
            }
            Command::ReplicaHello | Command::ReplicaChallenge | Command::ReplicaFinish => {
                let reason = GoodbyeReason::ProtocolViolation;
                let detail = "replica handshake command outside a replica handshake";
                conn.begin_close(
                    Closing {
                        goodbye: Some((reason, detail.into())),
                        flush: true,
                    },
                    CloseReason::ProtocolViolation(reason),
                );
                return drain(reader).await;
            }
            Command::Invalid | Command::Reserved(_) => {
                unreachable!("the reader validated the command")
            }
        }
    }
}

/// After the reader stopped taking frames: discard input until the peer
/// closes, so our close is an orderly one. Bounded by the supervisor.
async fn drain<R: FrameReader>(reader: &mut R) -> ReadEnd {
    loop {
        match reader.discard().await {
            Ok(0) => return ReadEnd::Eof,
            Ok(_) => {}
            Err(_) => return ReadEnd::Abort,
        }
    }
}

/// Sets the header's `client` field to the connection's id (spec §5). The
/// received frame has exactly one handle, so this does not copy. A sealed
/// frame gets its header checksum recomputed (240 bytes; the body checksum
/// is unchanged), so what the handler sees still verifies and can be sent
/// on as it is.
fn stamp_client(frame: Frame, id: u128) -> Frame {
    if frame.header().client() == id {
        return frame;
    }
    let mut frame = frame.into_mut();
    let header = frame.header_mut();
    header.set_client(id);
    if header.is_sealed() {
        let checksum = header.compute_checksum();
        header.set_checksum(checksum);
    }
    frame.freeze()
}

/// `Pong` with the `Ping`'s `request` and `command_area` (spec §2).
fn pong_for(ping: &Frame) -> Frame {
    let mut reply = crate::buf::FrameMut::new(Command::Pong, 0);
    let header = reply.header_mut();
    header.set_request(ping.header().request());
    *header.command_area_mut() = *ping.header().command_area();
    reply.seal();
    reply.freeze()
}

async fn write_loop<W: FrameWriter>(bus: &Bus, conn: &Conn, writer: &mut W) -> io::Result<()> {
    let inner = &bus.inner;
    let max_batch = inner.config.max_batch_frames;
    let mut batch: Vec<Frame> = Vec::with_capacity(max_batch);
    loop {
        // Wait for frames, or for the close.
        let closing = loop {
            let closing = conn.closing();
            if let Some(c) = &closing
                && !c.flush
            {
                bump(&inner.counters.frames_dropped, conn.clear_queue() as u64);
            }
            conn.drain_into(&mut batch, max_batch);
            if !batch.is_empty() || closing.is_some() {
                break closing;
            }
            conn.wake_writer.notified().await;
        };
        if batch.is_empty() {
            // Closing and the queue is empty: Goodbye, then close our side.
            let closing = closing.expect("loop exits with frames or closing");
            let reason = closing.goodbye.as_ref().map(|(reason, _)| *reason);
            if let Some((reason, detail)) = closing.goodbye {
                batch.push(Goodbye::frame(reason, &detail));
                write(inner, conn, writer, batch).await?;
                inner.counters.goodbye_sent(reason);
            }
            return writer.close(reason).await;
        }
        batch = write(inner, conn, writer, batch).await?;
    }
}

async fn write<W: FrameWriter>(
    inner: &crate::bus::Inner,
    conn: &Conn,
    writer: &mut W,
    batch: Vec<Frame>,
) -> io::Result<Vec<Frame>> {
    let frames = batch.len() as u64;
    let bytes: u64 = batch.iter().map(|f| f.len() as u64).sum();
    // Counted when handed to the transport, so a peer that has received a
    // frame always finds it counted; a failed write ends the connection.
    let c = &conn.counters;
    bump(&c.frames_out, frames);
    bump(&c.bytes_out, bytes);
    bump(&c.write_batches, 1);
    bump(&inner.counters.frames_out, frames);
    bump(&inner.counters.bytes_out, bytes);
    bump(&inner.counters.write_batches, 1);
    let BufResult(res, mut batch) = writer.write_batch(batch).await;
    res?;
    batch.clear();
    Ok(batch)
}
