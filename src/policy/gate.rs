//! What a stranger may get and hold before it says HELLO. A peer that completes the
//! handshake and never sends HELLO costs a connection slot, and QUIC PINGs keep it past any
//! idle timeout: without these limits, 1024 of them from one host lock every receiver out.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a connection may take, from its first packet, to send HELLO. A receiver sends
/// it with its first 1-RTT packet; this leaves room for a slow handshake on a lossy link
/// (quicnalusrc's own `timeout` defaults to 10 s too).
pub const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// Connections from one source (an IPv4 address or an IPv6 /64) that have not said HELLO yet (in the handshake, or
/// after it): beyond this the address's new connections are dropped until one of them
/// says HELLO, closes, or runs out of HELLO_WITHIN. A receiver is past this stage within a
/// round trip of its handshake, so even many receivers behind one address starting at once
/// rarely meet it, and one that does is let in when its Initial is resent.
pub const PENDING_PER_SOURCE: usize = 16;

/// The smallest datagram a client's first Initial may come in (RFC 9000, 14.1).
const MIN_INITIAL_DATAGRAM: usize = 1200;

/// Whether a datagram of `len` bytes for no connection may be answered at all. A smaller
/// one than a client's first gets nothing, so that a Retry or version negotiation (about
/// 100 bytes) is never more than a small part of what the address sent (8.1 allows 3x).
pub fn may_answer(len: usize) -> bool {
    len >= MIN_INITIAL_DATAGRAM
}

/// The source a stranger's traffic counts against: an IPv4 address, or an IPv6 /64, as
/// one host is usually given a whole /64 and can send from any address in it.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// A connection as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub ip: IpAddr,
    pub established: bool,
    /// It said HELLO (it may still be waiting to be admitted).
    pub hello: bool,
    /// It is closing or closed: it holds nothing any more.
    pub closing: bool,
}

/// The sink's limits on connections; 0 means none.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once (`max-connections`).
    pub connections: usize,
    /// Connections still in the handshake (`max-handshakes`).
    pub handshakes: usize,
}

/// Which limit keeps a client's Initial from opening a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// `max-connections`.
    Connections,
    /// `max-handshakes`.
    Handshakes,
    /// PENDING_PER_SOURCE.
    PendingHere,
}

impl fmt::Display for Crowded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Crowded::Connections => "max-connections reached",
            Crowded::Handshakes => "max-handshakes reached",
            Crowded::PendingHere => "too many connections from this source without HELLO",
        })
    }
}

impl std::error::Error for Crowded {}

/// Whether a client's Initial from `from` may open a connection, given the connections
/// there are; Err says why not.
pub fn may_open(
    from: IpAddr,
    conns: impl Iterator<Item = Seen>,
    limits: Limits,
) -> Result<(), Crowded> {
    let from = source(from);
    let (mut total, mut handshaking, mut pending_here) = (0, 0, 0);
    for c in conns {
        total += 1;
        if c.closing {
            continue;
        }
        handshaking += usize::from(!c.established);
        pending_here += usize::from(source(c.ip) == from && !c.hello);
    }
    if limits.connections > 0 && total >= limits.connections {
        return Err(Crowded::Connections);
    }
    if limits.handshakes > 0 && handshaking >= limits.handshakes {
        return Err(Crowded::Handshakes);
    }
    if pending_here >= PENDING_PER_SOURCE {
        return Err(Crowded::PendingHere);
    }
    Ok(())
}

/// Whether a connection opened at `opened` that has not said HELLO should be closed now.
pub fn hello_overdue(now: Instant, opened: Instant, hello: bool) -> bool {
    !hello && now >= opened + HELLO_WITHIN
}

/// When [`hello_overdue`] turns true, if it can.
pub fn hello_due(opened: Instant, hello: bool) -> Option<Instant> {
    (!hello).then_some(opened + HELLO_WITHIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMITS: Limits = Limits {
        connections: 0,
        handshakes: 0,
    };

    fn seen(ip: &str, established: bool, hello: bool) -> Seen {
        Seen {
            ip: ip.parse().unwrap(),
            established,
            hello,
            closing: false,
        }
    }

    #[test]
    fn one_address_holds_a_bounded_number_of_silent_connections() {
        let attacker = "192.0.2.1".parse().unwrap();
        let receiver = "192.0.2.2".parse().unwrap();
        let mut conns = vec![seen("192.0.2.1", true, false); PENDING_PER_SOURCE - 1];
        assert!(may_open(attacker, conns.iter().copied(), NO_LIMITS).is_ok());
        conns.push(seen("192.0.2.1", false, false));
        assert_eq!(
            may_open(attacker, conns.iter().copied(), NO_LIMITS),
            Err(Crowded::PendingHere)
        );
        // Others still get in; so does the attacker once one of its own says HELLO or closes.
        assert!(may_open(receiver, conns.iter().copied(), NO_LIMITS).is_ok());
        conns[0].hello = true;
        assert!(may_open(attacker, conns.iter().copied(), NO_LIMITS).is_ok());
        conns[0].hello = false;
        conns[1].closing = true;
        assert!(may_open(attacker, conns.iter().copied(), NO_LIMITS).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_once_for_its_whole_64() {
        // One host may send from any address of its /64: 64 of them are still one source.
        let conns: Vec<Seen> = (0..PENDING_PER_SOURCE)
            .map(|i| seen(&format!("2001:db8:0:1::{i:x}"), false, false))
            .collect();
        let same_64 = "2001:db8:0:1:ffff::1".parse().unwrap();
        let next_64 = "2001:db8:0:2::1".parse().unwrap();
        assert!(may_open(same_64, conns.iter().copied(), NO_LIMITS).is_err());
        assert!(may_open(next_64, conns.iter().copied(), NO_LIMITS).is_ok());
        let mapped = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn receivers_that_said_hello_do_not_count_against_their_address() {
        let ip = "127.0.0.1".parse().unwrap();
        let conns = vec![seen("127.0.0.1", true, true); 10 * PENDING_PER_SOURCE];
        assert!(may_open(ip, conns.iter().copied(), NO_LIMITS).is_ok());
    }

    #[test]
    fn the_sinks_own_limits_hold_too() {
        let ip = "127.0.0.1".parse().unwrap();
        let conns = [seen("10.0.0.1", true, true), seen("10.0.0.2", false, false)];
        let limits = |connections, handshakes| Limits {
            connections,
            handshakes,
        };
        assert!(may_open(ip, conns.iter().copied(), limits(3, 2)).is_ok());
        assert_eq!(
            may_open(ip, conns.iter().copied(), limits(2, 0)),
            Err(Crowded::Connections)
        );
        assert_eq!(
            may_open(ip, conns.iter().copied(), limits(0, 1)),
            Err(Crowded::Handshakes)
        );
    }

    #[test]
    fn only_a_whole_first_datagram_is_answered() {
        assert!(!may_answer(30));
        assert!(!may_answer(1199));
        assert!(may_answer(1200));
    }

    #[test]
    fn hello_is_due_within_its_deadline() {
        let opened = Instant::now();
        assert!(!hello_overdue(opened + HELLO_WITHIN / 2, opened, false));
        assert!(hello_overdue(opened + HELLO_WITHIN, opened, false));
        assert!(!hello_overdue(opened + 2 * HELLO_WITHIN, opened, true));
        assert_eq!(hello_due(opened, false), Some(opened + HELLO_WITHIN));
        assert_eq!(hello_due(opened, true), None);
    }
}
