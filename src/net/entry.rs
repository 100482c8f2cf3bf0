//! Who gets a connection at the sender: a client's Initial for no known connection is
//! answered with version negotiation or a Retry, dropped at the limits on connections, or
//! refused with INVALID_TOKEN, or it opens a connection.

use crate::net::capture::Capture;
use crate::net::conn::Conn;
use crate::net::retry::{AddressValidator, INVALID_TOKEN};
use crate::net::socket::random_cid;
use crate::policy::gate;
use crate::policy::ratelimit::Bucket;
use crate::sender::Fanout;
use mio::net::UdpSocket;
use std::time::Instant;

/// Who may open a connection: address validation and the limits on connections.
pub struct Entry {
    pub validator: Option<AddressValidator>,
    pub limits: Limits,
    pub capture: Capture,
    /// INVALID_TOKEN answers: each costs a TLS handshake's CPU, which Retry exists to spare.
    pub refusals: Bucket,
    /// Where version negotiation and Retry packets are built.
    pub out: Vec<u8>,
}

pub struct Limits {
    pub gate: gate::Limits,
    /// Longest command a receiver may send.
    pub command_size: u64,
}

/// What a client's Initial for no known connection gets.
pub enum Entered {
    /// A new connection.
    Opened(quiche::Connection),
    /// Its token did not validate: this connection only reads the Initial and closes with
    /// INVALID_TOKEN (see retry.rs), and is never kept.
    Refused(quiche::Connection),
}

impl Entry {
    /// Creates a connection for a client's Initial packet, which came in on `socket` as
    /// `info` says, or answers it with a Retry or version negotiation, or drops it when the
    /// limits are reached.
    pub fn accept(
        &mut self,
        hdr: &quiche::Header,
        info: quiche::RecvInfo,
        socket: &UdpSocket,
        config: &mut quiche::Config,
        receivers: &Fanout<Conn>,
        now: Instant,
    ) -> Option<Entered> {
        if hdr.ty != quiche::Type::Initial {
            return None;
        }
        let (from, local) = (info.from, info.to);
        if !quiche::version_is_supported(hdr.version) {
            let out = &mut self.out;
            let len = quiche::negotiate_version(&hdr.scid, &hdr.dcid, out).ok()?;
            let _ = socket.send_to(&self.out[..len], from);
            return None;
        }
        let seen = receivers.receivers().map(|r| gate::Seen {
            ip: r.peer().ip(),
            established: r.conn().quiche.is_established(),
            hello: r.said_hello(),
            closing: r.conn().quiche.local_error().is_some() || r.conn().quiche.is_draining(),
        });
        if let Err(why) = gate::may_open(from.ip(), seen, self.limits.gate) {
            log::debug!("dropping an Initial from {from}: {why}");
            return None;
        }
        let (scid, odcid) = match &self.validator {
            None => (random_cid().to_vec(), None),
            Some(validator) => match hdr.token.as_deref().filter(|t| !t.is_empty()) {
                None => {
                    let scid = random_cid();
                    let token = validator.mint(now, from, &hdr.dcid, &scid);
                    let new_scid = quiche::ConnectionId::from_ref(&scid);
                    let len = quiche::retry(
                        &hdr.scid,
                        &hdr.dcid,
                        &new_scid,
                        &token,
                        hdr.version,
                        &mut self.out,
                    )
                    .ok()?;
                    let _ = socket.send_to(&self.out[..len], from);
                    return None;
                }
                Some(token) => match validator.validate(now, from, &hdr.dcid, token) {
                    // The token names this ID: the connection keeps it.
                    Some(odcid) => (hdr.dcid.to_vec(), Some(odcid)),
                    None if !self.refusals.take(now) => {
                        log::debug!("dropping an Initial from {from}: invalid token");
                        return None;
                    }
                    None => {
                        log::info!("refusing an Initial from {from}: invalid token");
                        let scid = random_cid();
                        let scid = quiche::ConnectionId::from_ref(&scid);
                        return quiche::accept(&scid, None, local, from, config)
                            .ok()
                            .map(Entered::Refused);
                    }
                },
            },
        };
        let scid = quiche::ConnectionId::from_ref(&scid);
        let odcid = odcid.as_deref().map(quiche::ConnectionId::from_ref);
        match quiche::accept(&scid, odcid.as_ref(), local, from, config) {
            Ok(mut conn) => {
                self.capture.attach(&mut conn, "quicnalusink");
                Some(Entered::Opened(conn))
            }
            Err(e) => {
                log::debug!("cannot accept {from}: {e}");
                None
            }
        }
    }
}

/// Closes a connection made only to refuse a client's `initial` with INVALID_TOKEN: it
/// reads the Initial (which gives it the keys to answer in) and sends its CONNECTION_CLOSE,
/// a packet far smaller than the Initial, at once.
pub fn refuse_token(
    mut conn: quiche::Connection,
    initial: &mut [u8],
    info: quiche::RecvInfo,
    socket: &mio::net::UdpSocket,
    out: &mut [u8],
) {
    let _ = conn.recv(initial, info);
    let _ = conn.close(false, INVALID_TOKEN, b"invalid address validation token");
    while let Ok((n, send)) = conn.send(out) {
        let _ = socket.send_to(&out[..n], send.to);
    }
}
