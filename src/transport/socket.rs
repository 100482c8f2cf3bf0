//! The UDP socket and poller each networking thread owns, and the send loop.

use mio::net::UdpSocket;
use mio::{Interest, Poll, Token, Waker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SOCKET: Token = Token(0);
pub const WAKER: Token = Token(1);
/// Datagrams read per loop turn, so a flood cannot keep a loop from its other work or from
/// seeing shutdown. The rest are read on the next turn.
pub const MAX_RECV_BATCH: usize = 1024;

/// What a networking thread starts with: a bound socket registered for reading and a waker
/// the streaming thread uses to interrupt the poll.
pub struct Endpoint {
    pub poll: Poll,
    pub socket: UdpSocket,
    pub waker: Arc<Waker>,
    pub local: SocketAddr,
}

impl Endpoint {
    pub fn bind(addr: SocketAddr) -> Result<Endpoint, String> {
        let mut socket =
            UdpSocket::bind(addr).map_err(|e| format!("cannot bind UDP socket to {addr}: {e}"))?;
        let local = socket
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let poll = Poll::new().map_err(|e| format!("cannot create poller: {e}"))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(|e| format!("cannot register socket: {e}"))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map(Arc::new)
            .map_err(|e| format!("cannot create waker: {e}"))?;
        Ok(Endpoint {
            poll,
            socket,
            waker,
            local,
        })
    }
}

impl Endpoint {
    /// Sleeps until the socket is readable, the waker fires, or the earliest of `deadlines`
    /// passes. With `unread` (the last read stopped at its batch limit) it does not sleep:
    /// mio is edge-triggered, so datagrams left unread raise no new event.
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
}

/// Packets released this close to their pacing time go out now: poll() sleeps in whole
/// milliseconds, so finer spacing cannot be honoured and would only add latency.
const PACING_SLACK: Duration = Duration::from_millis(1);

/// Honours quiche's pacing release times (`SendInfo::at`) without kernel help (no fq or
/// SO_TXTIME here): a packet built for later is held until then, and the loop sleeps until
/// [`Pacer::release_at`].
pub struct Pacer {
    held: Vec<u8>,
    to: Option<(SocketAddr, Instant)>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            held: Vec::with_capacity(super::config::MAX_DATAGRAM_SIZE),
            to: None,
        }
    }
}

impl Pacer {
    /// When the held packet is due, if one is held.
    pub fn release_at(&self) -> Option<Instant> {
        self.to.map(|(_, at)| at)
    }

    /// Hands every packet `conn` wants to send by now to the socket; keeps the first one
    /// that is due later.
    pub fn send_all(&mut self, conn: &mut quiche::Connection, socket: &UdpSocket, out: &mut [u8]) {
        let now = Instant::now();
        if let Some((to, at)) = self.to {
            if at > now + PACING_SLACK {
                return;
            }
            send(socket, &self.held, to);
            self.to = None;
        }
        loop {
            let (len, info) = match conn.send(out) {
                Ok(v) => v,
                Err(quiche::Error::Done) => return,
                Err(e) => {
                    let _ = conn.close(false, 0x1, format!("send failed: {e}").as_bytes());
                    return;
                }
            };
            if info.at > now + PACING_SLACK {
                self.held.clear();
                self.held.extend_from_slice(&out[..len]);
                self.to = Some((info.to, info.at));
                return;
            }
            send(socket, &out[..len], info.to);
        }
    }
}

fn send(socket: &UdpSocket, packet: &[u8], to: SocketAddr) {
    // A full kernel buffer (WouldBlock) or a transient error drops the datagram; QUIC loss
    // recovery resends its contents.
    let _ = socket.send_to(packet, to);
}

/// Fresh random bytes for a connection ID.
pub fn random_cid() -> [u8; quiche::MAX_CONN_ID_LEN] {
    let mut id = [0; quiche::MAX_CONN_ID_LEN];
    // getrandom only fails without an entropy source; a fixed ID still works for one peer.
    let _ = getrandom::fill(&mut id);
    id
}
