//! One live connection as the bus holds it: who it is, what is known about
//! it, and its [`Link`] (connection core, queue, counters).

use std::rc::Rc;

use crate::{id::Peer, link::Link, transport::ConnectionInfo};

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: Peer,
    pub(crate) info: ConnectionInfo,
    pub(crate) link: Rc<Link>,
}
