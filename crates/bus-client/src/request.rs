//! Requests from the node (spec §9): a frame whose `request` id has bit 63
//! set asks this client for an answer. The client hands each one to the
//! application as a [`ServerRequest`]; its [`Responder`] answers with the
//! right id, and answering consumes it, so a request is answered at most
//! once by construction.

use std::rc::{Rc, Weak};

use bus_core::{Frame, FrameMut, Link, SendError};

use crate::ClientError;

/// A request the node sent this client, and the means to answer it.
#[derive(Debug)]
pub struct ServerRequest {
    frame: Frame,
    responder: Responder,
}

impl ServerRequest {
    pub(crate) fn new(frame: Frame, link: &Rc<Link>, seal: bool, queue_capacity: usize) -> Self {
        let responder = Responder {
            id: frame.header().request(),
            link: Rc::downgrade(link),
            seal,
            queue_capacity,
        };
        Self { frame, responder }
    }

    /// The request as the node sent it.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// Answers the request with `answer` (see [`Responder::answer`]).
    pub fn answer(self, answer: FrameMut) -> Result<(), ClientError> {
        self.responder.answer(answer)
    }

    /// The request and its responder, to answer later or from elsewhere.
    pub fn into_parts(self) -> (Frame, Responder) {
        (self.frame, self.responder)
    }
}

/// Answers one request from the node. Consumed by [`Responder::answer`];
/// dropping it leaves the request unanswered (the node's waiter times out).
#[derive(Debug)]
#[must_use = "an unanswered request times out on the node"]
pub struct Responder {
    id: u64,
    /// The connection the request came on: an answer goes back on it or
    /// not at all (after a reconnect the node has forgotten the request).
    link: Weak<Link>,
    seal: bool,
    /// The send queue's capacity, for the error when it is full.
    queue_capacity: usize,
}

impl Responder {
    /// The request's id (bit 63 set).
    pub fn request_id(&self) -> u64 {
        self.id
    }

    /// Sends `answer` (any application command) with the request's id, on
    /// the connection the request came on, sealed unless
    /// [`ClientOptions::seal`](crate::ClientOptions::seal) is off. Never
    /// waits. Fails with [`ClientError::NotConnected`] when that connection
    /// is gone and [`ClientError::QueueFull`] when its send queue is full.
    pub fn answer(self, mut answer: FrameMut) -> Result<(), ClientError> {
        if !matches!(answer.header().command(), bus_core::Command::Application(_)) {
            return Err(ClientError::InvalidFrame(
                "an answer carries an application command (16..=255)",
            ));
        }
        let link = self.link.upgrade().ok_or_else(|| {
            ClientError::NotConnected("the connection the request came on is gone".into())
        })?;
        answer.header_mut().set_request(self.id);
        if self.seal {
            answer.seal();
        }
        link.send(answer.freeze()).map_err(|err| match err {
            SendError::QueueFull => ClientError::QueueFull {
                capacity: self.queue_capacity,
            },
            _ => ClientError::NotConnected("the connection the request came on is closing".into()),
        })
    }
}
