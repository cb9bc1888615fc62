//! Leak checks from outside the library: what this process holds open, read
//! from `/proc`, and handles whose death shows that the bus let go of a
//! handler or a connection.
//!
//! Parallel tests in one process (`cargo test` runs them as threads) open
//! and close descriptors of their own, so a scenario never compares counts:
//! it names the sockets *its* bus holds (those bound to its listener's port,
//! matched by inode between `/proc/net/*` and `/proc/self/fd`) and checks
//! that exactly those are gone. Whole-process counts are compared only in
//! the dedicated `leaks` test binary, which runs nothing else.

use std::{
    cell::RefCell,
    collections::HashSet,
    rc::{Rc, Weak},
};

/// How many descriptors this process has open (the directory handle used to
/// read `/proc/self/fd` included, the same on every call).
///
/// # Panics
/// If `/proc/self/fd` cannot be read.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The inodes of every socket this process has open.
///
/// # Panics
/// If `/proc/self/fd` cannot be read.
pub fn open_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The inodes of the sockets bound to local port `port` (TCP and UDP, IPv4
/// and IPv6) that *this process* holds open: a listener and the connections
/// it accepted, or a UDP endpoint. Sockets of other processes and those
/// without a descriptor (`TIME_WAIT`, not yet accepted) are left out.
///
/// # Panics
/// If `/proc` cannot be read.
pub fn sockets_on_local_port(port: u16) -> HashSet<u64> {
    let ours = open_socket_inodes();
    let mut found = HashSet::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else {
            continue; // no IPv6 in this kernel
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            let inode: u64 = inode.parse().unwrap_or(0);
            if local_port == Some(port) && inode != 0 && ours.contains(&inode) {
                found.insert(inode);
            }
        }
    }
    found
}

/// Tokens whose death proves an object was dropped: hand out one per
/// object with [`Liveness::token`], keep the `Weak`s here, and count the
/// living ones.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    weaks: Rc<RefCell<Vec<Weak<()>>>>,
}

impl Liveness {
    /// A new token; the object that must be dropped keeps it.
    pub fn token(&self) -> Rc<()> {
        let token = Rc::new(());
        self.weaks.borrow_mut().push(Rc::downgrade(&token));
        token
    }

    /// Tokens handed out so far.
    pub fn issued(&self) -> usize {
        self.weaks.borrow().len()
    }

    /// Tokens still held by someone.
    pub fn alive(&self) -> usize {
        self.weaks
            .borrow()
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}
