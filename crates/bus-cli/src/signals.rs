//! The signals `bus serve` reacts to: SIGINT and SIGTERM shut the node down
//! gracefully, SIGHUP reloads (TLS certificates, once TLS is built in).
//!
//! compio installs its handler for a signal only while a listener future
//! for it exists and has been polled, and restores the default action (which
//! for all three is to terminate) when the last one is dropped; a listener
//! that fires drops its registration as it completes. So
//! [`Signals::install`] registers two listeners per signal before the node
//! says it is ready: one that is waited on and replaced each time it fires,
//! and a keeper that is never waited on and lives as long as `Signals`, so
//! the handler stays installed between a signal and the re-arm and a second
//! signal never meets the default action.

use std::{future::Future, io, pin::Pin};

use futures_util::{FutureExt, poll, select_biased};

/// A signal the node acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C): graceful shutdown.
    Interrupt,
    /// SIGTERM: graceful shutdown.
    Terminate,
    /// SIGHUP: reload.
    Hangup,
}

impl Signal {
    /// The conventional name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }

    const fn number(self) -> i32 {
        match self {
            Self::Interrupt => libc::SIGINT,
            Self::Terminate => libc::SIGTERM,
            Self::Hangup => libc::SIGHUP,
        }
    }
}

type Listener = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// Installed listeners for SIGINT, SIGTERM and SIGHUP.
pub struct Signals {
    listeners: [Listener; 3],
    /// Keep the handlers installed; never polled after installation.
    _keepers: [Listener; 3],
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}

const ORDER: [Signal; 3] = [Signal::Interrupt, Signal::Terminate, Signal::Hangup];

impl Signals {
    /// Installs the handlers; from its return on, the three signals are
    /// caught.
    pub async fn install() -> io::Result<Self> {
        let keepers = [
            armed(Signal::Interrupt).await?,
            armed(Signal::Terminate).await?,
            armed(Signal::Hangup).await?,
        ];
        let listeners = [
            armed(Signal::Interrupt).await?,
            armed(Signal::Terminate).await?,
            armed(Signal::Hangup).await?,
        ];
        Ok(Self {
            listeners,
            _keepers: keepers,
        })
    }

    /// Waits for the next signal.
    ///
    /// # Cancel safety
    /// Cancel safe: the listeners stay installed; a signal that arrived is
    /// reported by the next call.
    pub async fn next(&mut self) -> io::Result<Signal> {
        let [int, term, hup] = &mut self.listeners;
        let (index, result) = select_biased! {
            r = int.fuse() => (0, r),
            r = term.fuse() => (1, r),
            r = hup.fuse() => (2, r),
        };
        result?;
        let signal = ORDER[index];
        self.listeners[index] = armed(signal).await?;
        Ok(signal)
    }
}

/// A listener for `signal` that has been polled once, so its handler is in
/// place.
async fn armed(signal: Signal) -> io::Result<Listener> {
    let mut listener: Listener = Box::pin(compio::signal::unix::signal(signal.number()));
    match poll!(listener.as_mut()) {
        std::task::Poll::Pending => Ok(listener),
        std::task::Poll::Ready(Err(err)) => Err(err),
        // It fired at once: report it on the next wait (and re-arm then).
        std::task::Poll::Ready(Ok(())) => Ok(Box::pin(std::future::ready(Ok(())))),
    }
}
