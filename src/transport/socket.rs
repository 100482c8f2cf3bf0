//! The UDP socket and poller each networking thread owns, and the send loop.

use mio::net::UdpSocket;
use mio::{Interest, Poll, Token, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

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

/// Hands every packet `conn` wants to send now to the socket.
pub fn send_all(conn: &mut quiche::Connection, socket: &UdpSocket, out: &mut [u8]) {
    loop {
        let (len, info) = match conn.send(out) {
            Ok(v) => v,
            Err(quiche::Error::Done) => return,
            Err(e) => {
                let _ = conn.close(false, 0x1, format!("send failed: {e}").as_bytes());
                return;
            }
        };
        match socket.send_to(&out[..len], info.to) {
            Ok(_) => {}
            // The kernel buffer is full: QUIC loss recovery resends what this drops.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return,
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
