//! The relay's handle: starts the thread, changes its impairments and outages while it
//! runs, reads its counts, and stops it when dropped.

use crate::worker::{Control, Worker, LISTEN, WAKE};
use crate::{Direction, Impairment, RelayConfig, RelayStats};
use mio::net::UdpSocket;
use mio::{Interest, Poll, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Relay::rebind`] waits for the relay's thread, which answers within a loop
/// turn.
const REBIND_WAIT: Duration = Duration::from_secs(10);

/// A running relay; dropping it stops the thread.
pub struct Relay {
    local: SocketAddr,
    control: Arc<Mutex<Control>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Binds `config.listen` and starts the relay's thread (named udp-impair).
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        let poll = Poll::new()?;
        let mut listen = UdpSocket::bind(config.listen)?;
        poll.registry()
            .register(&mut listen, LISTEN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let local = listen.local_addr()?;
        let now = Instant::now();
        let control = Arc::new(Mutex::new(Control {
            to_server: config.to_server,
            to_client: config.to_client,
            outages: config
                .outages
                .iter()
                .map(|&(start, len)| (now + start, now + start + len))
                .collect(),
            client_outages: Vec::new(),
            stats: RelayStats::default(),
            stop: false,
            rebinds: Vec::new(),
        }));
        let mut worker = Worker::new(poll, listen, config.server, config.seed, control.clone());
        let thread = std::thread::Builder::new()
            .name("udp-impair".into())
            .spawn(move || worker.run())?;
        Ok(Relay {
            local,
            control,
            waker,
            thread: Some(thread),
        })
    }

    /// Where receivers should connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Changes one direction's impairment from now on (packets already scheduled keep theirs).
    pub fn set(&self, direction: Direction, impairment: Impairment) {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        match direction {
            Direction::ToServer => c.to_server = impairment,
            Direction::ToClient => c.to_client = impairment,
        }
    }

    /// Cuts the link both ways for `length`, starting now.
    pub fn outage(&self, length: Duration) {
        let now = Instant::now();
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        c.outages.push((now, now + length));
    }

    /// Moves every receiver's socket toward the sender to a new local port, as a NAT that
    /// gives a receiver a new mapping: the sender sees the same receiver's packets come from
    /// a new address, and what it still sends to the old one is lost. Returns once the
    /// relay has moved (packets it forwards from then on leave from the new ports).
    pub fn rebind(&self) -> io::Result<()> {
        let (asked, answer) = mpsc::channel();
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rebinds
            .push(asked);
        self.waker.wake()?;
        answer
            .recv_timeout(REBIND_WAIT)
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Cuts the traffic of the clients at `ip` both ways for `length`, starting now: one
    /// route of several through the relay.
    pub fn outage_of(&self, ip: std::net::IpAddr, length: Duration) {
        let now = Instant::now();
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        c.client_outages.push((ip, now, now + length));
    }

    /// Every packet counted so far, per direction.
    pub fn stats(&self) -> RelayStats {
        self.control.lock().unwrap_or_else(|e| e.into_inner()).stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.control.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server socket, a relay in front of it with `imp`, and a client socket.
    fn sockets_and_relay(imp: Impairment) -> (std::net::UdpSocket, Relay, std::net::UdpSocket) {
        let bind = || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            socket
        };
        let server = bind();
        let relay =
            Relay::start(RelayConfig::symmetric(server.local_addr().unwrap(), imp)).unwrap();
        (server, relay, bind())
    }

    #[test]
    fn relays_both_ways_and_cuts_outages() {
        let (server, relay, client) = sockets_and_relay(Impairment {
            delay: Duration::from_millis(5),
            ..Impairment::default()
        });
        let mut buf = [0u8; 64];
        let sent = Instant::now();
        client.send_to(b"ping", relay.local_addr()).unwrap();
        let (n, via) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", via).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.local_addr()));
        assert!(
            sent.elapsed() >= Duration::from_millis(10),
            "two one-way delays"
        );

        relay.outage(Duration::from_secs(3600));
        client.send_to(b"lost", relay.local_addr()).unwrap();
        // The relay reads the datagram before it counts it; wait for the count, not a time.
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.stats().to_server.outage_dropped == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let s = relay.stats();
        assert_eq!(s.to_server.outage_dropped, 1);
        assert_eq!((s.to_server.forwarded, s.to_client.forwarded), (1, 1));
        assert_eq!(s.to_server.forwarded_bytes, 4);
    }

    #[test]
    fn rebind_moves_the_upstream_port_and_replies_still_reach_the_client() {
        let (server, relay, client) = sockets_and_relay(Impairment::default());
        let mut buf = [0u8; 64];
        let mut round_trip = |word: &[u8]| {
            client.send_to(word, relay.local_addr()).unwrap();
            let (n, via) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], word);
            server.send_to(b"back", via).unwrap();
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"back"[..], relay.local_addr()));
            via
        };
        let before = round_trip(b"first");
        relay.rebind().unwrap();
        let after = round_trip(b"second");
        assert_ne!(
            before.port(),
            after.port(),
            "a new mapping toward the server"
        );

        // The old mapping is gone: the server's packets to it never reach the client.
        server.send_to(b"stale", before).unwrap();
        let again = round_trip(b"third");
        assert_eq!(again, after);
    }
}
