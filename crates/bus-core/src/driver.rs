//! The tasks behind a connection, a thin shell around its connection core
//! (`state.rs`): accept, handshake, and the connection task that runs a
//! reader and a writer side by side, feeding the core what happens and
//! doing what it decides.
//!
//! ```text
//! accept_loop ──spawn──▶ handshake (≤ handshake_grace) ──register──▶ connection task
//!                                                                  ├─ read_loop:  frame → core.receive → handler
//!                                                                  ├─ write_loop: core.next_write → write / close our side
//!                                                                  └─ timer:      core.next_deadline → core.tick
//! ```
//!
//! No protocol decision is taken here: what a frame means, when to close,
//! what to write and when to give up are the core's. The task ends when the
//! core is done; its drop guard evicts the slot and fires the lost callback
//! exactly once, also on panic or cancellation.

use std::{
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::pin,
    rc::Rc,
    time::Instant,
};

use compio::{BufResult, runtime::time};
use futures_util::{FutureExt, future::pending, select_biased};

use crate::{
    buf::Frame,
    bus::{Bus, Inner},
    conn::Conn,
    error::Error,
    limits::ACCEPT_ERROR_BACKOFF,
    state::{CloseReason, ReadSide, Received, WriteStep},
    stats::bump,
    transport::{Connection, FrameReader, FrameWriter, Listener},
};

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
    let inner = &bus.inner;
    let settings = inner.read_settings(replica.is_some());
    let peer_addr = connection.peer_addr();
    let transport = connection.transport();
    let grace = inner.config.handshake_grace;
    let accepted = Instant::now();
    let established = match time::timeout(grace, connection.establish(settings)).await {
        Ok(Ok(established)) => established,
        Ok(Err(err)) => {
            bump(&inner.counters.handshake_failures, 1);
            tracing::debug!(%peer_addr, %transport, %err, "handshake failed");
            return;
        }
        Err(_) => {
            bump(&inner.counters.handshake_failures, 1);
            tracing::debug!(%peer_addr, %transport, ?grace, "handshake timed out");
            return;
        }
    };
    let (reader, writer, info) = established;
    let Some(conn) = bus.register(replica, info, accepted) else {
        return; // shutting down: dropping the halves closes the socket
    };
    let task = run(bus.clone(), conn, reader, writer);
    inner.connections.spawn(task);
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
    let handler = bus.inner.handler.clone();
    let connected = catch_unwind(AssertUnwindSafe(|| {
        handler.on_connected(&bus, conn.peer, &conn.info);
    }));
    if connected.is_err() {
        bump(&bus.inner.counters.handler_panics, 1);
        conn.core
            .borrow_mut()
            .close_silently(CloseReason::HandlerPanicked, Instant::now());
    }
    supervise(&bus, &conn, &mut reader, &mut writer).await;
    conn.core.borrow_mut().task_completed();
}

/// Runs the reader, the writer and the core's timer until the core is done.
async fn supervise<R: FrameReader, W: FrameWriter>(
    bus: &Bus,
    conn: &Rc<Conn>,
    reader: &mut R,
    writer: &mut W,
) {
    let mut read = pin!(read_loop(bus, conn, reader).fuse());
    let mut write = pin!(write_loop(bus, conn, writer).fuse());
    loop {
        let deadline = {
            let core = conn.core.borrow();
            if core.is_done() {
                return;
            }
            core.next_deadline()
        };
        let mut timer = pin!(
            async move {
                match deadline {
                    Some(d) => time::sleep_until(d).await,
                    None => pending().await,
                }
            }
            .fuse()
        );
        let mut rearm = pin!(conn.wake_timer.notified().fuse());
        select_biased! {
            () = read => {}
            () = write => {}
            () = rearm => {}
            () = timer => {
                conn.core.borrow_mut().tick(Instant::now());
                conn.wake_all();
            }
        }
    }
}

async fn read_loop<R: FrameReader>(bus: &Bus, conn: &Conn, reader: &mut R) {
    let inner = &bus.inner;
    loop {
        let side = {
            let core = conn.core.borrow();
            core.wants_input().then(|| core.read_side())
        };
        match side {
            // Ended, or paused until the outbound queue has room.
            None => {
                if conn.core.borrow().read_side() == ReadSide::Ended {
                    return;
                }
                conn.wake_reader.notified().await;
            }
            Some(ReadSide::Frames) => match reader.read_frame().await {
                Ok(frame) => {
                    if !receive(inner, bus, conn, frame) {
                        return;
                    }
                }
                Err(err) => {
                    if !read_error(conn, err) {
                        return;
                    }
                }
            },
            Some(ReadSide::Discard) => match reader.discard().await {
                Ok(0) => {
                    conn.core.borrow_mut().read_ended(Instant::now());
                    conn.wake_all();
                    return;
                }
                Ok(_) => {}
                Err(err) => {
                    conn.core.borrow_mut().abort(CloseReason::Io(err.kind()));
                    conn.wake_all();
                    return;
                }
            },
            Some(ReadSide::Ended) => return,
        }
    }
}

/// One received frame: the core decides, the handler gets what is its.
/// Returns whether to keep reading.
fn receive(inner: &Inner, bus: &Bus, conn: &Conn, frame: Frame) -> bool {
    let len = frame.len() as u64;
    bump(&conn.counters.frames_in, 1);
    bump(&conn.counters.bytes_in, len);
    bump(&inner.counters.frames_in, 1);
    bump(&inner.counters.bytes_in, len);
    let received = conn.core.borrow_mut().receive(frame);
    match received {
        Received::Deliver(frame) => {
            let handler = &inner.handler;
            let delivered =
                catch_unwind(AssertUnwindSafe(|| handler.on_frame(bus, conn.peer, frame)));
            if delivered.is_err() {
                bump(&inner.counters.handler_panics, 1);
                tracing::error!(peer = ?conn.peer, "handler panicked; closing its connection");
                conn.core.borrow_mut().abort(CloseReason::HandlerPanicked);
                conn.wake_all();
                return false;
            }
        }
        Received::Consumed => conn.wake_writer.notify(),
        Received::Stop => {
            conn.core.borrow_mut().arm_close_bound(Instant::now());
            conn.wake_all();
        }
    }
    true
}

/// A read that returned no frame. Returns whether to keep reading.
fn read_error(conn: &Conn, err: Error) -> bool {
    let mut core = conn.core.borrow_mut();
    let keep_reading = match err {
        Error::Closed => {
            core.read_ended(Instant::now());
            false
        }
        Error::Frame(err) => {
            tracing::debug!(peer = ?conn.peer, %err, "protocol violation");
            core.read_failed(err, Instant::now());
            true
        }
        Error::Io(err) => {
            core.abort(CloseReason::Io(err.kind()));
            false
        }
        other => {
            tracing::debug!(peer = ?conn.peer, err = %other, "read failed");
            core.abort(CloseReason::Io(io::ErrorKind::Other));
            false
        }
    };
    drop(core);
    conn.wake_all();
    keep_reading
}

async fn write_loop<W: FrameWriter>(bus: &Bus, conn: &Conn, writer: &mut W) {
    let inner = &bus.inner;
    let max_batch = inner.config.max_batch_frames;
    let mut batch: Vec<Frame> = Vec::with_capacity(max_batch);
    loop {
        let step = conn.core.borrow_mut().next_write(&mut batch, max_batch);
        match step {
            WriteStep::Wait => conn.wake_writer.notified().await,
            WriteStep::Write { goodbye } => {
                count_batch(inner, conn, &batch);
                let BufResult(res, returned) = writer.write_batch(batch).await;
                batch = returned;
                batch.clear();
                if let Err(err) = res {
                    conn.core.borrow_mut().abort(CloseReason::Io(err.kind()));
                    conn.wake_all();
                    return;
                }
                conn.core.borrow_mut().written();
                if let Some(reason) = goodbye {
                    inner.counters.goodbye_sent(reason);
                }
                // Room again in the queue: a paused reader may go on.
                conn.wake_reader.notify();
            }
            WriteStep::CloseOurSide(reason) => {
                let res = writer.close(reason).await;
                let mut core = conn.core.borrow_mut();
                match res {
                    Ok(()) => core.our_side_closed(Instant::now()),
                    Err(err) => core.abort(CloseReason::Io(err.kind())),
                }
                drop(core);
                conn.wake_all();
                return;
            }
            WriteStep::Finished => return,
        }
    }
}

/// Counted when handed to the transport, so a peer that has received a
/// frame always finds it counted; a failed write ends the connection.
fn count_batch(inner: &Inner, conn: &Conn, batch: &[Frame]) {
    let frames = batch.len() as u64;
    let bytes: u64 = batch.iter().map(|f| f.len() as u64).sum();
    let c = &conn.counters;
    bump(&c.frames_out, frames);
    bump(&c.bytes_out, bytes);
    bump(&c.write_batches, 1);
    bump(&inner.counters.frames_out, frames);
    bump(&inner.counters.bytes_out, bytes);
    bump(&inner.counters.write_batches, 1);
}
