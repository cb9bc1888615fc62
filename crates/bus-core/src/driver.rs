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
    admission::{Admitted, Gate, accept_failed},
    buf::Frame,
    bus::Bus,
    conn::Conn,
    goodbye::GoodbyeReason,
    id::Peer,
    link::{self, Delivery, Panicked},
    ratelog::RateLimitedLog,
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
            Err(err) => accept_failed(&err).await,
        }
    }
}

/// As [`accept_loop`], each connection admitted through `gate` first.
pub(crate) async fn accept_loop_admitted<L: Listener>(bus: Bus, mut listener: L, gate: Gate) {
    static REFUSED: RateLimitedLog = RateLimitedLog::new();
    loop {
        let connection = match listener.accept().await {
            Ok(connection) => connection,
            Err(err) => {
                accept_failed(&err).await;
                continue;
            }
        };
        let transport = connection.transport();
        gate.set_kind(transport);
        match gate.admit() {
            Ok(admitted) => {
                if bus.install_admitted(connection, admitted).is_err() {
                    return;
                }
            }
            Err(refusal) => {
                let peer_addr = connection.peer_addr();
                // Dropping the connection refuses it (QUIC: closed).
                drop(connection);
                if let Some(suppressed) = REFUSED.allow() {
                    tracing::warn!(%transport, %peer_addr, cap = refusal.as_str(), suppressed, "connection refused: at capacity");
                }
            }
        }
    }
}

pub(crate) async fn handshake<C: Connection>(
    bus: Bus,
    connection: C,
    replica: Option<u8>,
    mut admitted: Option<Admitted>,
) {
    static FAILED: RateLimitedLog = RateLimitedLog::new();
    let inner = &bus.inner;
    let settings = inner.read_settings(replica.is_some());
    let peer_addr = connection.peer_addr();
    let transport = connection.transport();
    let grace = inner.config.handshake_grace;
    let accepted = Instant::now();
    let established = time::timeout(grace, connection.establish(settings)).await;
    if let Some(admitted) = &mut admitted {
        admitted.handshake_done();
    }
    let established = match established {
        Ok(Ok(established)) => established,
        Ok(Err(err)) => {
            bump(&inner.counters.handshake_failures, 1);
            if let Some(suppressed) = FAILED.allow() {
                tracing::debug!(%peer_addr, %transport, %err, suppressed, "handshake failed");
            }
            return;
        }
        Err(_) => {
            bump(&inner.counters.handshake_failures, 1);
            if let Some(suppressed) = FAILED.allow() {
                tracing::debug!(%peer_addr, %transport, ?grace, suppressed, "handshake timed out");
            }
            return;
        }
    };
    let (reader, writer, info) = established;
    let Some(conn) = bus.register(replica, info, accepted) else {
        return; // shutting down: dropping the halves closes the socket
    };
    let task = run(bus.clone(), conn, reader, writer, admitted);
    inner.connections.spawn(task);
}

/// The connection task: announce, run the link, and whatever ends it,
/// evict the slot and report the loss once.
pub(crate) async fn run<R: FrameReader, W: FrameWriter>(
    bus: Bus,
    conn: Rc<Conn>,
    mut reader: R,
    mut writer: W,
    admitted: Option<Admitted>,
) {
    // The connection's admission slot, given back when the task ends.
    let _admitted = admitted;
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
