//! The sender's sockets: the main one (the Endpoint, with the poll and the waker) and, with
//! `paths` (mode=caller), one more per local address to knock from, each its own token in
//! the same poll. quiche routes packets to connections by connection ID, so one table of
//! connections serves them all: a datagram goes to quiche with the address of the socket
//! it came in on (`RecvInfo::to`), and a packet leaves from the socket quiche names
//! (`SendInfo::from`), the one its connection is on.

use crate::net::socket::{Addrs, BindError, Endpoint, Wire, SOCKET, WAKER};
use crate::net::udp;
use crate::policy::knock::Knocker;
use mio::net::UdpSocket;
use mio::{Interest, Token};
use std::net::SocketAddr;
use std::time::Instant;

/// The main socket and the extra ones; socket `i` is the main one for 0, else `extra[i-1]`.
pub(super) struct Sockets {
    pub endpoint: Endpoint,
    extra: Vec<Extra>,
}

struct Extra {
    socket: UdpSocket,
    local: SocketAddr,
}

/// Socket `i`'s token in the poll: the endpoint's first, then past the waker's.
fn token(i: usize) -> Token {
    if i == 0 {
        SOCKET
    } else {
        Token(WAKER.0 + i)
    }
}

impl Sockets {
    /// The endpoint, and a socket bound to each of `locals`, registered in its poll.
    pub fn bind(endpoint: Endpoint, locals: &[SocketAddr]) -> Result<Sockets, BindError> {
        let mut extra = Vec::new();
        for (i, &addr) in locals.iter().enumerate() {
            let mut socket =
                UdpSocket::bind(addr).map_err(|source| BindError::Bind { addr, source })?;
            let local = socket.local_addr().map_err(BindError::LocalAddr)?;
            endpoint
                .poll
                .registry()
                .register(&mut socket, token(i + 1), Interest::READABLE)
                .map_err(BindError::Register)?;
            udp::configure(&socket);
            extra.push(Extra { socket, local });
        }
        Ok(Sockets { endpoint, extra })
    }

    /// How many sockets there are (1 without `paths`).
    pub fn count(&self) -> usize {
        1 + self.extra.len()
    }

    /// Socket `i` and its local address.
    pub fn get(&self, i: usize) -> (&UdpSocket, SocketAddr) {
        match i.checked_sub(1).and_then(|e| self.extra.get(e)) {
            Some(e) => (&e.socket, e.local),
            None => (&self.endpoint.socket, self.endpoint.local),
        }
    }

    /// The sockets that raised a readable event.
    pub fn readable(&self, events: &mio::Events) -> Vec<usize> {
        (0..self.count())
            .filter(|&i| {
                events
                    .iter()
                    .any(|e| e.token() == token(i) && e.is_readable())
            })
            .collect()
    }

    /// Whether the poll should also wake when the sockets turn writable (see
    /// [`Endpoint::watch_writable`]).
    pub fn watch_writable(&mut self, on: bool) {
        let was = self.endpoint.writable();
        self.endpoint.watch_writable(on);
        if was == self.endpoint.writable() {
            return;
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        for (i, e) in self.extra.iter_mut().enumerate() {
            let registry = self.endpoint.poll.registry();
            let _ = registry.reregister(&mut e.socket, token(i + 1), interest);
        }
    }

    /// The socket bound to `local`; the main one if none is.
    fn by_local(&self, local: SocketAddr) -> &UdpSocket {
        self.extra
            .iter()
            .find(|e| e.local == local)
            .map_or(&self.endpoint.socket, |e| &e.socket)
    }
}

/// Each packet leaves from the socket its connection is on.
impl Wire for Sockets {
    fn send(&self, data: &[u8], segment: usize, at: Addrs) -> std::io::Result<()> {
        Wire::send(self.by_local(at.from), data, segment, at)
    }
}

/// With `mode=caller`: whom to knock at, and when, from each socket.
pub(super) struct Knocking {
    pub to: SocketAddr,
    /// Per socket (as numbered in [`Sockets`]): each knocks while no receiver is connected
    /// or connecting on it, so a listener hears every address the sender may be reached on.
    pub knockers: Vec<Knocker>,
}

impl Knocking {
    /// Knocks due now, from each socket whose `connected(local)` says no receiver is on it.
    pub fn knock(
        &mut self,
        sockets: &Sockets,
        now: Instant,
        connected: impl Fn(SocketAddr) -> bool,
    ) {
        for (i, knocker) in self.knockers.iter_mut().enumerate() {
            let (socket, local) = sockets.get(i);
            if knocker.poll(now, connected(local)) {
                log::debug!("knocking at {} from {local}", self.to);
                if let Err(e) = socket.send_to(&knocker.knock(), self.to) {
                    log::debug!("knock at {} from {local}: {e}", self.to);
                }
            }
        }
    }

    /// When the next knock is due, from any socket.
    pub fn due(&self) -> Option<Instant> {
        self.knockers.iter().filter_map(Knocker::due).min()
    }
}
