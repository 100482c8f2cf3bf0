//! A receiver that changes its local address keeps its connection: the element asks for a
//! new one (`bind-address`), [`Client::rebind`] binds a socket there at once, and the
//! networking thread moves the established connection onto it with QUIC connection
//! migration (quiche's `migrate_source`) instead of connecting again. A connection not
//! yet established, or the next one after a lost one, simply starts from the new socket.
//! With `paths` the move is the first route's (the one `bind-address` binds); the other
//! routes keep their own local addresses.

use super::connection::Connection;
use super::Client;
use crate::error::Error;
use crate::net::paths;
use crate::net::socket::BindError;
use crate::protocol::error_code;
use mio::net::UdpSocket;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

impl Client {
    /// Moves the receiver to the local address `ip` (None: any): binds a socket there now,
    /// and the networking thread migrates the connection onto it. Returns the new local
    /// address; fails, changing nothing, if the address cannot be bound.
    pub fn rebind(&self, ip: Option<IpAddr>) -> Result<SocketAddr, Error> {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let any: IpAddr = if local.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let addr = SocketAddr::new(ip.unwrap_or(any), 0);
        let socket = UdpSocket::bind(addr).map_err(|source| BindError::Bind { addr, source })?;
        let bound = socket.local_addr().map_err(BindError::LocalAddr)?;
        *local = bound;
        // A socket asked for earlier and not yet taken is dropped: the latest wins.
        self.net.update(|s| s.inner.rebind = Some(socket));
        self.net.wake();
        Ok(bound)
    }
}

impl Connection {
    /// Each turn of an established connection: spare connection IDs for the sender (a
    /// move takes one), and the move to a socket the element asked for.
    pub(super) fn follow_address(&mut self) {
        paths::offer_spares(&mut self.conn);
        let Some(socket) = self.take_rebind() else {
            return;
        };
        let from = self.endpoint.local;
        let to = match self.endpoint.adopt(socket) {
            Ok(to) => to,
            Err(e) => {
                log::warn!("cannot move to the new address: {e}");
                return;
            }
        };
        match self.conn.migrate_source(to) {
            Ok(_) => {
                log::info!("moved from {from} to {to}: migrating the connection");
                // The sender moves to us when a packet comes from the new address. What
                // it sends meanwhile goes to the closed socket, so no acknowledgment
                // would leave here before the next keepalive (100 ms): a PING now.
                let _ = self.conn.send_ack_eliciting();
                self.core.counters.migrations += 1;
                self.settings.stats.force();
            }
            // No spare connection ID left (every move takes one): connecting again, from
            // the new address, is what is left.
            Err(e) => {
                log::warn!("cannot migrate from {from} to {to} ({e}): connecting again");
                let _ = self
                    .conn
                    .close(true, error_code::NO_ERROR, b"moving to a new address");
            }
        }
    }

    /// Between connections: the next one starts from the socket the element asked for.
    pub(super) fn rebind_idle(&mut self) {
        let Some(socket) = self.take_rebind() else {
            return;
        };
        match self.endpoint.adopt(socket) {
            Ok(to) => log::info!("connecting from {to} from now on"),
            Err(e) => log::warn!("cannot move to the new address: {e}"),
        }
    }

    /// The socket the element asked for, if this is the connection that moves: the only
    /// one, or the first route.
    fn take_rebind(&self) -> Option<mio::net::UdpSocket> {
        if self.index() != 0 {
            return None;
        }
        self.link.update(|s| s.inner.rebind.take())
    }
}
