//! The relay's thread: reads both sides, applies each direction's impairment, and sends
//! every packet at its release time.

use crate::lane::{Dropped, Lane};
use crate::{Impairment, RelayStats};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the handle and the thread share.
pub(crate) struct Control {
    pub(crate) to_server: Impairment,
    pub(crate) to_client: Impairment,
    /// Absolute (start, end) of every outage.
    pub(crate) outages: Vec<(Instant, Instant)>,
    /// Absolute (client address, start, end) of outages of one client's traffic only.
    pub(crate) client_outages: Vec<(IpAddr, Instant, Instant)>,
    pub(crate) stats: RelayStats,
    pub(crate) stop: bool,
    /// Callers of `Relay::rebind` waiting for the upstream sockets to move.
    pub(crate) rebinds: Vec<Sender<io::Result<()>>>,
}

pub(crate) const LISTEN: Token = Token(0);
pub(crate) const WAKE: Token = Token(1);
/// Tokens from here on are the per-client upstream sockets.
const FIRST_UPSTREAM: usize = 2;

/// A packet waiting for its release time.
struct Scheduled {
    at: Instant,
    seq: u64,
    to_server: bool,
    client: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The thread's sockets, the directions' lanes and the packets waiting for release.
pub(crate) struct Worker {
    poll: Poll,
    listen: UdpSocket,
    server: SocketAddr,
    control: Arc<Mutex<Control>>,
    /// Each client gets its own upstream socket, so replies map back to it (like a NAT).
    clients: HashMap<SocketAddr, usize>,
    /// Per client: its upstream socket, the client, and where its packets go: the server,
    /// or whoever sent to that socket last (a NAT that filters nothing, so an answer from
    /// another of the server's ports, a listener's call-back, gets through).
    upstreams: Vec<(UdpSocket, SocketAddr, SocketAddr)>,
    lanes: [Lane; 2],
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Worker {
    /// The thread's state, around `listen` (registered with `poll` as [`LISTEN`]).
    pub(crate) fn new(
        poll: Poll,
        listen: UdpSocket,
        server: SocketAddr,
        seed: u64,
        control: Arc<Mutex<Control>>,
    ) -> Worker {
        Worker {
            poll,
            listen,
            server,
            control,
            clients: HashMap::new(),
            upstreams: Vec::new(),
            lanes: [Lane::new(seed, 0), Lane::new(seed, 1)],
            queue: BinaryHeap::new(),
            next_seq: 0,
            buf: vec![0; 65536],
        }
    }

    pub(crate) fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = self
                .queue
                .peek()
                .map(|Reverse(s)| s.at.saturating_duration_since(Instant::now()));
            if self.poll.poll(&mut events, timeout).is_err() {
                return;
            }
            let rebinds = {
                let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
                if c.stop {
                    return;
                }
                std::mem::take(&mut c.rebinds)
            };
            if !rebinds.is_empty() {
                let moved = self.rebind_upstreams();
                for asked in rebinds {
                    let answer = moved
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                    let _ = asked.send(answer);
                }
            }
            // The sockets are edge-triggered: read every one until it would block.
            self.read_clients();
            for i in 0..self.upstreams.len() {
                self.read_upstream(i);
            }
            self.release_due();
        }
    }

    fn read_clients(&mut self) {
        while let Ok((n, from)) = self.listen.recv_from(&mut self.buf) {
            if self.clients.contains_key(&from) || self.add_client(from).is_some() {
                self.admit(true, from, n);
            }
        }
    }

    /// A socket toward the server on a free port, as a NAT's new mapping.
    fn upstream_socket(&self) -> io::Result<UdpSocket> {
        let any: SocketAddr = if self.server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        UdpSocket::bind(any)
    }

    fn add_client(&mut self, client: SocketAddr) -> Option<usize> {
        let mut socket = self.upstream_socket().ok()?;
        let index = self.upstreams.len();
        self.poll
            .registry()
            .register(
                &mut socket,
                Token(FIRST_UPSTREAM + index),
                Interest::READABLE,
            )
            .ok()?;
        self.upstreams.push((socket, client, self.server));
        self.clients.insert(client, index);
        Some(index)
    }

    /// Gives every client a new upstream socket (a new port toward the server), as a NAT
    /// rebinding does; the old ones close, so what the server still sends there is lost.
    fn rebind_upstreams(&mut self) -> io::Result<()> {
        for index in 0..self.upstreams.len() {
            let mut fresh = self.upstream_socket()?;
            let registry = self.poll.registry();
            registry.deregister(&mut self.upstreams[index].0)?;
            registry.register(
                &mut fresh,
                Token(FIRST_UPSTREAM + index),
                Interest::READABLE,
            )?;
            self.upstreams[index].0 = fresh;
        }
        Ok(())
    }

    fn read_upstream(&mut self, index: usize) {
        loop {
            let (socket, client, _) = &self.upstreams[index];
            let client = *client;
            match socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    self.upstreams[index].2 = from;
                    self.admit(false, client, n)
                }
                Err(_) => return,
            }
        }
    }

    /// Applies the direction's impairment to the `n` bytes in `buf`.
    fn admit(&mut self, to_server: bool, client: SocketAddr, n: usize) {
        let now = Instant::now();
        let mut guard = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut *guard;
        let (imp, stats) = if to_server {
            (&c.to_server, &mut c.stats.to_server)
        } else {
            (&c.to_client, &mut c.stats.to_client)
        };
        stats.received += 1;
        // Outages are checked first and draw nothing, so they do not shift the loss pattern.
        let cut =
            |&(ip, s, e): &(IpAddr, Instant, Instant)| ip == client.ip() && s <= now && now < e;
        if c.outages.iter().any(|(s, e)| *s <= now && now < *e) || c.client_outages.iter().any(cut)
        {
            stats.outage_dropped += 1;
            return;
        }
        match self.lanes[usize::from(!to_server)].admit(imp, n, now) {
            Ok(at) => {
                stats.forwarded += 1;
                stats.forwarded_bytes += n as u64;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.queue.push(Reverse(Scheduled {
                    at,
                    seq,
                    to_server,
                    client,
                    data: self.buf[..n].to_vec(),
                }));
            }
            Err(Dropped::Loss) => stats.lost += 1,
            Err(Dropped::Queue) => stats.queue_dropped += 1,
        }
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= now) {
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            if s.to_server {
                if let Some(&i) = self.clients.get(&s.client) {
                    let (socket, _, peer) = &self.upstreams[i];
                    let _ = socket.send_to(&s.data, *peer);
                }
            } else {
                let _ = self.listen.send_to(&s.data, s.client);
            }
        }
    }
}
