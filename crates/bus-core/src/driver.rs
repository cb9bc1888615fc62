//! The bus's tasks: accept, handshake, and each connection's task, which
//! runs the connection's [`link`](crate::link) with the application handler
//! as the receiver of its frames.
//!
//! ```text
//! accept_loop ──spawn──▶ handshake (≤ handshake_grace) ──register──▶ connection task
//!                                                                  └─ link::run (reader, writer, timer)
//! ```
//!
//! No protocol decision is taken here (they are the connection core's). The
//! task's drop guard evicts the slot and fires the lost callback exactly
//! once, also on panic or cancellation.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    rc::Rc,
    time::Instant,
};

use compio::runtime::time;

use crate::{
    buf::Frame,
    bus::Bus,
    conn::Conn,
    goodbye::GoodbyeReason,
    id::Peer,
    limits::ACCEPT_ERROR_BACKOFF,
    link::{self, Delivery, Panicked},
    state::CloseReason,
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

/// The connection task: announce, run the link, and whatever ends it,
/// evict the slot and report the loss once.
pub(crate) async fn run<R: FrameReader, W: FrameWriter>(
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
    let inner = &bus.inner;
    let handler = inner.handler.clone();
    let connected = catch_unwind(AssertUnwindSafe(|| {
        handler.on_connected(&bus, conn.peer, &conn.info);
    }));
    if connected.is_err() {
        bump(&inner.counters.handler_panics, 1);
        conn.link
            .core
            .borrow_mut()
            .close_silently(CloseReason::HandlerPanicked, Instant::now());
    }
    let delivery = ToHandler {
        bus: &bus,
        peer: conn.peer,
    };
    link::run(&conn.link, &mut reader, &mut writer, &delivery).await;
    conn.link.core.borrow_mut().task_completed();
}

/// Hands a connection's application frames to the bus's handler, catching
/// its panics.
struct ToHandler<'a> {
    bus: &'a Bus,
    peer: Peer,
}

impl Delivery for ToHandler<'_> {
    fn deliver(&self, frame: Frame) -> Result<(), Panicked> {
        let inner = &self.bus.inner;
        let handler = &inner.handler;
        let delivered = catch_unwind(AssertUnwindSafe(|| {
            handler.on_frame(self.bus, self.peer, frame);
        }));
        delivered.map_err(|_| {
            bump(&inner.counters.handler_panics, 1);
            tracing::error!(peer = ?self.peer, "handler panicked; closing its connection");
            Panicked
        })
    }

    fn goodbye_written(&self, reason: GoodbyeReason) {
        self.bus.inner.counters.goodbye_sent(reason);
    }
}
