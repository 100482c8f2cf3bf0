//! The UDP socket and poller each networking thread owns, and the send loop.

use crate::error::Error;
use crate::net::config::MAX_DATAGRAM_SIZE;
use crate::net::udp::{self, Datagrams, Offload};
use crate::sender::repair::RepeatRepairs;
use mio::net::UdpSocket;
use mio::{Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SOCKET: Token = Token(0);
pub const WAKER: Token = Token(1);
/// Datagrams read per loop turn, so a flood cannot keep a loop from its other work or from
/// seeing shutdown. The rest are read on the next turn.
const MAX_RECV_BATCH: usize = 1024;

/// Why a networking thread's socket and poller cannot be set up.
#[derive(Debug)]
pub enum BindError {
    /// The address is taken, or not ours.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    LocalAddr(std::io::Error),
    Poller(std::io::Error),
    Register(std::io::Error),
    Waker(std::io::Error),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Bind { addr, source } => {
                write!(f, "cannot bind UDP socket to {addr}: {source}")
            }
            BindError::LocalAddr(e) => write!(f, "cannot read the bound address: {e}"),
            BindError::Poller(e) => write!(f, "cannot create poller: {e}"),
            BindError::Register(e) => write!(f, "cannot register socket: {e}"),
            BindError::Waker(e) => write!(f, "cannot create waker: {e}"),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::Bind { source: e, .. }
            | BindError::LocalAddr(e)
            | BindError::Poller(e)
            | BindError::Register(e)
            | BindError::Waker(e) => Some(e),
        }
    }
}

/// The user's error: the socket could not be bound or set up.
impl From<BindError> for Error {
    fn from(e: BindError) -> Error {
        Error::Bind(e.to_string())
    }
}

/// What a networking thread starts with: a bound socket registered for reading and a waker
/// the streaming thread uses to interrupt the poll.
pub struct Endpoint {
    pub poll: Poll,
    pub socket: UdpSocket,
    pub waker: Arc<Waker>,
    pub local: SocketAddr,
    pub offload: Offload,
    /// The poll also wakes when the socket turns writable (see [`Endpoint::watch_writable`]).
    writable: bool,
}

impl Endpoint {
    pub fn bind(addr: SocketAddr) -> Result<Endpoint, BindError> {
        let mut socket =
            UdpSocket::bind(addr).map_err(|source| BindError::Bind { addr, source })?;
        let local = socket.local_addr().map_err(BindError::LocalAddr)?;
        let poll = Poll::new().map_err(BindError::Poller)?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(BindError::Register)?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map(Arc::new)
            .map_err(BindError::Waker)?;
        let offload = udp::configure(&socket);
        Ok(Endpoint {
            poll,
            socket,
            waker,
            local,
            offload,
            writable: false,
        })
    }

    /// Moves to `socket`, bound to a new local address, keeping the poller and the waker;
    /// the old socket closes. Returns the new local address.
    pub fn adopt(&mut self, mut socket: UdpSocket) -> Result<SocketAddr, BindError> {
        let local = socket.local_addr().map_err(BindError::LocalAddr)?;
        let interest = if self.writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let registry = self.poll.registry();
        registry
            .register(&mut socket, SOCKET, interest)
            .map_err(BindError::Register)?;
        // Closing the old socket would drop it from the poller too; said for clarity.
        let _ = registry.deregister(&mut self.socket);
        self.offload = udp::configure(&socket);
        self.socket = socket;
        self.local = local;
        Ok(local)
    }

    /// Whether the poll also wakes when the socket turns writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether the poll should wake when the socket turns writable: only while an Outbox
    /// holds packets the socket refused, since an idle socket's buffer space changes with
    /// every send and would wake the loop for nothing.
    pub fn watch_writable(&mut self, on: bool) {
        if on == self.writable {
            return;
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        // Re-registering reports a socket already writable at once (epoll rechecks).
        if self
            .poll
            .registry()
            .reregister(&mut self.socket, SOCKET, interest)
            .is_ok()
        {
            self.writable = on;
        }
    }
}

impl Endpoint {
    /// Sleeps until the socket is readable, the waker fires, or the earliest of `deadlines`
    /// passes. With `unread` (the last turn stopped reading datagrams or commands at its
    /// limit) it does not sleep: mio is edge-triggered, so what is left unread raises no
    /// new event.
    pub fn wait(
        &mut self,
        events: &mut mio::Events,
        deadlines: impl IntoIterator<Item = Option<Instant>>,
        unread: bool,
    ) -> std::io::Result<()> {
        let now = Instant::now();
        let timeout = if unread {
            Some(Duration::ZERO)
        } else {
            deadlines
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(now))
        };
        match self.poll.poll(events, timeout) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }

    /// Reads the next datagram, or GRO run of datagrams, into `buf`; None once the socket
    /// is drained.
    pub fn recv(&self, buf: &mut [u8]) -> Option<Datagrams> {
        recv(&self.socket, buf)
    }
}

/// Reads the next datagram, or GRO run of datagrams, from `socket` into `buf`; None once
/// it is drained.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> Option<Datagrams> {
    // Queued ICMP errors (a peer's port closed) are reported one per read, ahead of the
    // data; QUIC's own timers deal with a vanished peer, so they are skipped.
    for _ in 0..16 {
        match udp::recv(socket, buf) {
            Ok(d) => return Some(d),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(_) => {}
        }
    }
    None
}

/// One turn's reading of the socket, bounded at MAX_RECV_BATCH datagrams, so a flood
/// cannot keep the loop from serving its connections, or from seeing shutdown.
pub struct RecvBatch {
    left: usize,
    drained: bool,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            left: MAX_RECV_BATCH,
            drained: false,
        }
    }
}

impl RecvBatch {
    /// The next datagrams into `buf` (see [`Endpoint::recv`]); None once the socket is
    /// drained or the batch spent.
    pub fn next(&mut self, endpoint: &Endpoint, buf: &mut [u8]) -> Option<Datagrams> {
        self.next_on(&endpoint.socket, buf)
    }

    /// The next datagrams from `socket` (one of several a loop owns) into `buf`.
    pub fn next_on(&mut self, socket: &UdpSocket, buf: &mut [u8]) -> Option<Datagrams> {
        if self.left == 0 {
            return None;
        }
        let d = recv(socket, buf);
        match &d {
            Some(d) => self.left = self.left.saturating_sub(d.count()),
            None => self.drained = true,
        }
        d
    }

    /// Whether the socket was read dry: if not, come back at once (mio is edge-triggered).
    pub fn drained(&self) -> bool {
        self.drained
    }
}

/// Where a packet goes, and the local address it leaves from (quiche's `SendInfo`): a
/// sender with several sockets sends from the one its connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// Where the Outbox writes: the UDP socket, the sender's sockets, or a test's double.
pub trait Wire {
    /// Sends `data`, datagrams of `segment` bytes (the last may be shorter), to `at.to`
    /// from `at.from`.
    fn send(&self, data: &[u8], segment: usize, at: Addrs) -> std::io::Result<()>;
}

/// One socket: `from` is its own address.
impl Wire for UdpSocket {
    fn send(&self, data: &[u8], segment: usize, at: Addrs) -> std::io::Result<()> {
        udp::send(self, data, segment, at.to)
    }
}

/// Packets released this close to their pacing time go out now: poll() sleeps in whole
/// milliseconds, so finer spacing cannot be honoured and would only add latency.
const PACING_SLACK: Duration = Duration::from_millis(1);

/// Packets quiche has built, on their way to the socket. Consecutive packets to one peer
/// leave as one GSO batch, built in place so no packet is copied. A packet quiche wants
/// sent later (`SendInfo::at`, its pacing) is held until then, since neither fq nor
/// SO_TXTIME is available here, and the loop sleeps until [`Outbox::release_at`].
pub struct Outbox {
    /// The batch: `len` bytes of `count` packets of `segment` bytes, the last maybe shorter.
    batch: Vec<u8>,
    len: usize,
    count: usize,
    segment: usize,
    to: Option<Addrs>,
    held: Vec<u8>,
    held_for: Option<(Addrs, Instant)>,
    gso: bool,
    /// Which packets go out twice (repair.rs); the held packet's copy is decided already.
    pub repeat: RepeatRepairs,
    held_twice: bool,
    /// The packet being repeated, while the batch makes room for it.
    copy: Vec<u8>,
    /// Batches the socket refused for a full buffer (WouldBlock), to send before anything
    /// else once it is writable: `(datagrams, segment size, to)`. No more packets are taken
    /// from quiche meanwhile, so this holds a batch or two at most.
    unsent: VecDeque<(Vec<u8>, usize, Addrs)>,
}

impl Outbox {
    pub fn new(offload: Offload) -> Self {
        let segments = if offload.gso { udp::MAX_SEGMENTS } else { 1 };
        Outbox {
            batch: vec![0; segments * MAX_DATAGRAM_SIZE],
            len: 0,
            count: 0,
            segment: 0,
            to: None,
            held: Vec::with_capacity(MAX_DATAGRAM_SIZE),
            held_for: None,
            gso: offload.gso,
            repeat: RepeatRepairs::default(),
            held_twice: false,
            copy: Vec::with_capacity(MAX_DATAGRAM_SIZE),
            unsent: VecDeque::new(),
        }
    }

    /// The socket's buffer was full: packets wait for it to be writable.
    pub fn blocked(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// When the held packet is due, if one is held; none while the socket refuses (the
    /// loop waits for it to be writable instead).
    pub fn release_at(&self) -> Option<Instant> {
        self.held_for.filter(|_| !self.blocked()).map(|(_, at)| at)
    }

    /// Hands every packet `conn` wants sent by now to the socket; holds the first one that
    /// is due later.
    pub fn send_all(&mut self, conn: &mut quiche::Connection, socket: &impl Wire) {
        self.send(conn, socket, false);
    }

    /// Sends everything, paced or not: a closing connection's last packets must not wait.
    pub fn send_all_now(&mut self, conn: &mut quiche::Connection, socket: &impl Wire) {
        self.send(conn, socket, true);
    }

    fn send(&mut self, conn: &mut quiche::Connection, socket: &impl Wire, unpaced: bool) {
        // What the socket refused goes first; while it still refuses, quiche keeps the rest
        // (its loss recovery and pacing see nothing sent).
        self.send_unsent(socket);
        if self.blocked() {
            return;
        }
        let now = Instant::now();
        if let Some((to, at)) = self.held_for {
            if at > now + PACING_SLACK && !unpaced {
                return;
            }
            self.held_for = None;
            let n = self.held.len();
            self.batch[..n].copy_from_slice(&self.held);
            self.add(0, n, to, socket, self.held_twice);
        }
        // quiche marks lost stream data for retransmission while it builds the packet that
        // carries the first of it: the count read around each packet says which that is.
        let mut retransmitted = self
            .repeat
            .active()
            .then(|| conn.stats().stream_retrans_bytes);
        loop {
            if self.full() {
                self.flush(socket);
            }
            if self.blocked() {
                break;
            }
            let start = self.len;
            let (n, info) = match conn.send(&mut self.batch[start..start + MAX_DATAGRAM_SIZE]) {
                Ok(v) => v,
                Err(quiche::Error::Done) => break,
                Err(e) => {
                    let _ = conn.close(false, 0x1, format!("send failed: {e}").as_bytes());
                    break;
                }
            };
            let twice = retransmitted.as_mut().is_some_and(|before| {
                let after = conn.stats().stream_retrans_bytes;
                let marked = after.saturating_sub(std::mem::replace(before, after));
                self.repeat.after_packet(marked, n)
            });
            if info.at > now + PACING_SLACK && !unpaced {
                self.held.clear();
                self.held.extend_from_slice(&self.batch[start..start + n]);
                let at = Addrs {
                    from: info.from,
                    to: info.to,
                };
                self.held_for = Some((at, info.at));
                self.held_twice = twice;
                break;
            }
            let at = Addrs {
                from: info.from,
                to: info.to,
            };
            self.add(start, n, at, socket, twice);
        }
        self.flush(socket);
    }

    /// No room for another packet: the batch holds as many as a send takes, or ends with a
    /// short one.
    fn full(&self) -> bool {
        let capacity = if self.gso {
            self.batch.len() / MAX_DATAGRAM_SIZE
        } else {
            1
        };
        self.count == capacity || (self.count > 0 && self.len < self.count * self.segment)
    }

    /// Takes the packet quiche just wrote at `batch[start..start + n]` into the batch, and
    /// a copy of it after if `twice`.
    fn add(&mut self, start: usize, n: usize, to: Addrs, socket: &impl Wire, twice: bool) {
        self.take(start, n, to, socket);
        if !twice {
            return;
        }
        self.copy.clear();
        self.copy
            .extend_from_slice(&self.batch[self.len - n..self.len]);
        if self.full() {
            self.flush(socket);
        }
        let at = self.len;
        self.batch[at..at + n].copy_from_slice(&self.copy);
        self.take(at, n, to, socket);
    }

    /// One packet into the batch, which is sent first if the packet cannot join it.
    fn take(&mut self, start: usize, n: usize, to: Addrs, socket: &impl Wire) {
        let mut start = start;
        // A GSO batch is one peer, from one address, and one segment size; only its last
        // packet may be shorter.
        if self.count > 0 && (Some(to) != self.to || n > self.segment) {
            self.flush(socket);
            self.batch.copy_within(start..start + n, 0);
            start = 0;
        }
        if self.count == 0 {
            self.segment = n;
            self.to = Some(to);
        }
        self.len = start + n;
        self.count += 1;
    }

    fn flush(&mut self, socket: &impl Wire) {
        let Some(to) = self.to.filter(|_| self.count > 0) else {
            return;
        };
        let data = &self.batch[..self.len];
        let result = if self.blocked() {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            socket.send(data, self.segment, to)
        };
        match result {
            Ok(()) => {}
            // A full buffer: kept, in order, until the socket is writable.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.unsent.push_back((data.to_vec(), self.segment, to));
            }
            // Any other failure of a multi-datagram send (EIO: the device cannot segment;
            // EINVAL/EMSGSIZE: a small path MTU) turns GSO off: one by one from now on.
            // A single datagram's error (ICMP unreachable) drops it: loss recovery resends.
            Err(_) if self.count > 1 => {
                self.gso = false;
                for packet in data.chunks(self.segment) {
                    let _ = socket.send(packet, packet.len(), to);
                }
            }
            Err(_) => {}
        }
        self.len = 0;
        self.count = 0;
    }

    /// Sends the batches the socket refused, in order, until it refuses again.
    fn send_unsent(&mut self, socket: &impl Wire) {
        while let Some((data, segment, to)) = self.unsent.front() {
            match socket.send(data, *segment, *to) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // Sent, or failed for good (as in flush): either way it goes.
                _ => {
                    self.unsent.pop_front();
                }
            }
        }
    }
}

/// Fresh random bytes for a connection ID.
pub fn random_cid() -> [u8; quiche::MAX_CONN_ID_LEN] {
    let mut id = [0; quiche::MAX_CONN_ID_LEN];
    // getrandom only fails without an entropy source; a fixed ID still works for one peer.
    let _ = getrandom::fill(&mut id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A socket that refuses while `full`, and records what it takes.
    #[derive(Default)]
    struct Double {
        full: Cell<bool>,
        sent: RefCell<Vec<(Vec<u8>, usize)>>,
    }

    impl Wire for Double {
        fn send(&self, data: &[u8], segment: usize, _: Addrs) -> std::io::Result<()> {
            if self.full.get() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.sent.borrow_mut().push((data.to_vec(), segment));
            Ok(())
        }
    }

    /// Puts a packet of `n` bytes of `fill` into the batch, as `send` does.
    fn packet(out: &mut Outbox, n: usize, fill: u8, wire: &Double) {
        let to = Addrs {
            from: "127.0.0.1:8".parse().unwrap(),
            to: "127.0.0.1:9".parse().unwrap(),
        };
        let start = out.len;
        out.batch[start..start + n].fill(fill);
        out.take(start, n, to, wire);
    }

    #[test]
    fn a_full_socket_keeps_the_batch_until_it_takes_it() {
        let offload = Offload {
            gso: true,
            gro: false,
            rcvbuf: 0,
            sndbuf: 0,
        };
        let mut out = Outbox::new(offload);
        let wire = Double::default();
        wire.full.set(true);
        for fill in 1..=3 {
            packet(&mut out, 100, fill, &wire);
        }
        out.flush(&wire);
        // Before, the three were dropped here; now they wait, and what follows waits
        // behind them.
        assert!(out.blocked());
        packet(&mut out, 50, 9, &wire);
        out.flush(&wire);
        out.send_unsent(&wire);
        assert!(out.blocked() && wire.sent.borrow().is_empty());

        wire.full.set(false);
        out.send_unsent(&wire);
        assert!(!out.blocked());
        let first: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&b| [b; 100]).collect();
        assert_eq!(*wire.sent.borrow(), [(first, 100), (vec![9; 50], 50)]);
    }
}
