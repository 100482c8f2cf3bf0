//! What a connection needs to outlive an address change (QUIC connection migration,
//! RFC 9000, 9): spare connection IDs offered to the peer, so a path it moves to gets an
//! ID no observer can link to the old one (quiche issues none by itself), and which of a
//! connection's paths is the one in use, and what the paths a peer left still hold.

use crate::net::socket::{random_cid, Addrs, Wire};
use std::net::SocketAddr;

/// Offers the peer new connection IDs up to the limit both sides allow
/// (`active_connection_id_limit`, config.rs) once the handshake is done; returns the IDs
/// offered, which packets from the peer may now carry.
pub fn offer_spares(conn: &mut quiche::Connection) -> Vec<Vec<u8>> {
    let mut offered = Vec::new();
    if !conn.is_established() {
        return offered;
    }
    while conn.scids_left() > 0 {
        let id = random_cid();
        // The token a stateless reset would carry; we never send one, so it only has to
        // be unguessable.
        let mut token = [0; 16];
        let _ = getrandom::fill(&mut token);
        let cid = quiche::ConnectionId::from_ref(&id);
        match conn.new_scid(&cid, u128::from_be_bytes(token), false) {
            Ok(_) => offered.push(id.to_vec()),
            Err(e) => {
                log::debug!("cannot offer a connection ID: {e}");
                break;
            }
        }
    }
    offered
}

/// The path the connection sends on. After an address change quiche keeps the old path
/// for a while, and it may come first.
pub fn active(conn: &quiche::Connection) -> Option<quiche::PathStats> {
    conn.path_stats().find(|p| p.active)
}

/// The path whose figures (round trip, delivery rate) describe the connection: the one in
/// use, or, until it has measured a round trip (just after an address change), the one it
/// left. A new path starts from quiche's initial RTT (333 ms), which would make every
/// frame look late; RFC 9000 (9.4) lets a sender keep the old estimate when only the port
/// changed, and a measurement replaces it within a round trip.
pub fn measured(conn: &quiche::Connection) -> Option<quiche::PathStats> {
    let (mut in_use, mut left) = (None, None);
    for p in conn.path_stats() {
        match (p.active, p.min_rtt.is_some()) {
            (true, true) => return Some(p),
            (true, false) => in_use = Some(p),
            (false, true) => left = left.or(Some(p)),
            (false, false) => {}
        }
    }
    left.or(in_use)
}

/// After the peer moved to `to` (quiche validated the path and made it the one in use):
/// packets quiche sent on each path it left and the peer never got (sent to an address
/// that is gone: the NAT's old mapping, the socket the receiver closed) are not declared
/// lost by quiche 0.30 until that path has a later packet acknowledged. Its loss
/// detection is per path, and its probe timeouts resend the same oldest two packets over
/// and over: the data after them would wait forever, and the group they carry be
/// abandoned. So one PING is built on each path left and sent to `to`, where the peer
/// acknowledges it a round trip later; that acknowledgment declares the stranded packets
/// lost, and quiche resends their data on the path in use. The PING carries the old
/// path's connection ID: an observer could link the two addresses by it, once.
pub fn release_stranded(
    conn: &mut quiche::Connection,
    to: SocketAddr,
    socket: &impl Wire,
    buf: &mut [u8],
) {
    let left: Vec<(SocketAddr, SocketAddr)> = conn
        .path_stats()
        .filter(|p| !p.active)
        .map(|p| (p.local_addr, p.peer_addr))
        .collect();
    for (local, peer) in left {
        if conn.send_ack_eliciting_on_path(local, peer).is_err() {
            continue;
        }
        match conn.send_on_path(buf, Some(local), Some(peer)) {
            Ok((n, _)) => {
                log::debug!("a PING of the path from {peer}, sent to {to}");
                let _ = socket.send(&buf[..n], n, Addrs { from: local, to });
            }
            Err(e) => log::debug!("no PING on the path from {peer}: {e}"),
        }
    }
}
