//! Reversed dialling, for a sender behind NAT (`mode=caller` on quicnalusink, `mode=listener`
//! on quicnalusrc). QUIC roles never change: the sender is always the QUIC server. A calling
//! sender sends KNOCK datagrams to the listening receiver, which answers by connecting to
//! the address the knock came from, as a QUIC client, through the mapping the knock opened
//! in the sender's NAT (docs/PROTOCOL.md, "Reversed dialling").
//!
//! Anyone can send a listener a knock, so a knock only ever costs the listener a bounded,
//! rate-limited call-back ([`Doorman`]), never its stream: the call-back must still pass
//! the certificate check, and a failed one is counted, not fatal. With a token, a knock
//! carries an HMAC of a fresh nonce under the token, and a listener with that token answers
//! no other knock: the token is the one secret both ends already share, so a stray sender
//! (or a spoofer) without it gets no call-back at all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A knock is as long as a client's first QUIC datagram must be, so the handshake a
/// knock sets off sends no more to its source than the knock was: a spoofed knock buys no
/// amplification.
pub const KNOCK_LEN: usize = 1200;
/// The first byte has QUIC's fixed bit (0x40) clear: no QUIC v1 packet starts so.
const MAGIC: &[u8; 16] = b"\x00quicnalu-knock1";
const NONCE: std::ops::Range<usize> = 16..32;
const MAC: std::ops::Range<usize> = 32..64;
/// The calling sender's ID (big-endian; zero: a knock from before sender IDs, a sender
/// with one socket), the same in the knocks from each of its sockets.
const SENDER: std::ops::Range<usize> = 64..72;
/// HMAC-SHA256(token, the nonce's 32 bytes and the sender ID): MAC stays what it was, so a
/// listener that knows no sender IDs still answers.
const SENDER_MAC: std::ops::Range<usize> = 72..104;

/// The datagram a calling sender sends: with a token, signed with it; `sender`: its ID
/// (see [`super::random_id`]), or 0 for a sender with one socket.
pub fn knock(token: Option<&[u8]>, sender: u64) -> Vec<u8> {
    let mut d = vec![0; KNOCK_LEN];
    d[..MAGIC.len()].copy_from_slice(MAGIC);
    d[SENDER].copy_from_slice(&sender.to_be_bytes());
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        // Without randomness the knock goes unsigned, and a listener with the token ignores
        // it: the caller knocks again.
        if getrandom::fill(&mut d[NONCE]).is_ok() {
            let mac = signature(token, &d[..NONCE.end]);
            d[MAC].copy_from_slice(&mac);
            // A sender with one socket names none: its knock is as before sender IDs.
            if sender != 0 {
                let mac = sender_signature(token, &d);
                d[SENDER_MAC].copy_from_slice(&mac);
            }
        }
    }
    d
}

fn signature(token: &[u8], signed: &[u8]) -> [u8; 32] {
    boring::hash::hmac_sha256(token, signed).unwrap_or([0; 32])
}

/// The MAC over the knock's first 32 bytes and its sender ID.
fn sender_signature(token: &[u8], knock: &[u8]) -> [u8; 32] {
    let mut signed = [0; NONCE.end + SENDER.end - SENDER.start];
    signed[..NONCE.end].copy_from_slice(&knock[..NONCE.end]);
    signed[NONCE.end..].copy_from_slice(&knock[SENDER]);
    signature(token, &signed)
}

/// What a datagram that reached a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knock {
    NotAKnock,
    /// A knock this listener answers, from the sender with this ID (None: from a sender
    /// that names none, one socket).
    Valid {
        sender: Option<u64>,
    },
    /// A knock not signed with this listener's token.
    Unsigned,
}

/// Reads `datagram` as a listener with `token` (None or empty: any knock will do).
pub fn read(datagram: &[u8], token: Option<&[u8]>) -> Knock {
    if datagram.len() < KNOCK_LEN || !datagram.starts_with(MAGIC) {
        return Knock::NotAKnock;
    }
    let mut id = [0; 8];
    id.copy_from_slice(&datagram[SENDER]);
    let sender = Some(u64::from_be_bytes(id)).filter(|&s| s != 0);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Knock::Valid { sender };
    };
    let expected = signature(token, &datagram[..NONCE.end]);
    if !boring::memcmp::eq(&expected, &datagram[MAC]) {
        return Knock::Unsigned;
    }
    // A knock that names a sender must say so under the token too.
    let named = sender.is_none_or(|_| {
        let expected = sender_signature(token, datagram);
        boring::memcmp::eq(&expected, &datagram[SENDER_MAC])
    });
    if named {
        Knock::Valid { sender }
    } else {
        Knock::Unsigned
    }
}

/// Whether `datagram` is a knock at all, signed or not.
pub fn is_knock(datagram: &[u8]) -> bool {
    matches!(read(datagram, None), Knock::Valid { .. })
}

/// First pause between knocks; each later one is twice as long, up to MAX_PAUSE.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// When a calling sender knocks: at once when it has no receiver, then after pauses
/// doubling from FIRST_PAUSE to MAX_PAUSE, until one connects; again at once when the
/// last one goes. A listener that comes up, or a link that comes back, is found within
/// MAX_PAUSE.
#[derive(Debug, Default)]
pub struct Knocker {
    /// The next knock, while knocking.
    next: Option<Instant>,
    pause: Duration,
    /// Signs each knock (the sink's `token`).
    token: Option<Vec<u8>>,
    /// The sender's ID, the same for each of its sockets' knockers.
    sender: u64,
}

impl Knocker {
    pub fn new(token: Option<Vec<u8>>, sender: u64) -> Self {
        Knocker {
            token,
            sender,
            ..Knocker::default()
        }
    }

    /// A fresh knock to send.
    pub fn knock(&self) -> Vec<u8> {
        knock(self.token.as_deref(), self.sender)
    }

    /// Whether to knock now; `connected`: a receiver is connected or connecting.
    pub fn poll(&mut self, now: Instant, connected: bool) -> bool {
        if connected {
            self.next = None;
            return false;
        }
        match self.next {
            Some(at) if now < at => false,
            Some(_) => {
                self.pause = (self.pause * 2).min(MAX_PAUSE);
                self.next = Some(now + self.pause);
                true
            }
            None => {
                self.pause = FIRST_PAUSE;
                self.next = Some(now + self.pause);
                true
            }
        }
    }

    /// When to poll next, while knocking.
    pub fn due(&self) -> Option<Instant> {
        self.next
    }
}

/// How long a call-back waits to hear anything from the address that knocked before it is
/// abandoned: a caller answers within a round trip, and knocks again within MAX_PAUSE if
/// this attempt was lost. A stray knock so holds the listener for this long at most.
pub const HEAR_BACK: Duration = Duration::from_secs(2);
/// What a call-back may send to an address it has not heard from, per byte of knock from
/// it: RFC 9000's limit for a server's unvalidated client (8.1), applied to the knock.
pub const AMPLIFICATION: usize = 3;
/// A knock older than this is stale: a caller still there has knocked again since.
const FRESH: Duration = Duration::from_millis(MAX_PAUSE.as_millis() as u64 + 1000);
/// After a failed call-back, its address's knocks are ignored for this long, doubling with
/// each further failure up to MAX_HOLD_OFF: a stray knocking many times a second gets a
/// call-back every MAX_HOLD_OFF, while the real caller's knocks are answered meanwhile.
const FIRST_HOLD_OFF: Duration = Duration::from_secs(1);
const MAX_HOLD_OFF: Duration = Duration::from_secs(16);
/// A source (an IPv4 address, or an IPv6 /64: gate::source) with this many addresses held
/// off at once is held off whole: a stray that changes port with each knock is still one.
const HELD_PER_SOURCE: usize = 4;
/// Addresses remembered at once; the one heard from least recently is forgotten first.
const ADDRESSES: usize = 256;

/// A call-back to make: to the knock's address, for the sender it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub to: SocketAddr,
    pub sender: Option<u64>,
}

/// Which knocks a listener answers, and in which order. Knocks are rate-limited per
/// address and per source; among fresh knocks, the address that failed least goes first
/// (a real caller has not failed), the latest knock breaking ties.
#[derive(Debug, Default)]
pub struct Doorman {
    callers: HashMap<SocketAddr, Caller>,
}

#[derive(Debug)]
struct Caller {
    /// The latest knock not yet answered.
    knock: Option<Instant>,
    /// The sender ID its latest knock named.
    sender: Option<u64>,
    held_until: Option<Instant>,
    hold_off: Duration,
    heard: Instant,
}

impl Caller {
    fn held(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|t| now < t)
    }
}

impl Doorman {
    /// A knock from `from` at `now`, naming `sender`; false if ignored, as its address or
    /// source is held off.
    pub fn knocked(&mut self, now: Instant, from: SocketAddr, sender: Option<u64>) -> bool {
        let caller = self.caller(now, from);
        caller.heard = now;
        caller.sender = sender;
        if self.held(now, from) {
            return false;
        }
        self.caller(now, from).knock = Some(now);
        true
    }

    /// Whom to call back now, if anyone (see [`Doorman`]).
    pub fn next(&mut self, now: Instant) -> Option<Call> {
        let fresh = |c: &Caller| c.knock.is_some_and(|at| now < at + FRESH);
        let mut held = HashMap::<IpAddr, usize>::new();
        for (a, c) in &self.callers {
            if c.held(now) {
                *held.entry(crate::policy::gate::source(a.ip())).or_default() += 1;
            }
        }
        let source_held = |a: &SocketAddr| {
            held.get(&crate::policy::gate::source(a.ip()))
                .copied()
                .unwrap_or(0)
                >= HELD_PER_SOURCE
        };
        let next = self
            .callers
            .iter()
            .filter(|(a, c)| fresh(c) && !c.held(now) && !source_held(a))
            .min_by_key(|(_, c)| (c.hold_off, std::cmp::Reverse(c.knock)))
            .map(|(a, _)| *a)?;
        let caller = self.callers.get_mut(&next)?;
        caller.knock = None;
        Some(Call {
            to: next,
            sender: caller.sender,
        })
    }

    /// The call-back to `to` failed: it is held off.
    pub fn failed(&mut self, now: Instant, to: SocketAddr) {
        let caller = self.caller(now, to);
        caller.hold_off = if caller.hold_off.is_zero() {
            FIRST_HOLD_OFF
        } else {
            (caller.hold_off * 2).min(MAX_HOLD_OFF)
        };
        caller.held_until = Some(now + caller.hold_off);
        caller.knock = None;
    }

    /// The call-back to `to` connected: it starts afresh.
    pub fn connected(&mut self, to: SocketAddr) {
        self.callers.remove(&to);
    }

    fn held(&self, now: Instant, addr: SocketAddr) -> bool {
        let source = crate::policy::gate::source(addr.ip());
        let held_here = self
            .callers
            .iter()
            .filter(|(a, c)| crate::policy::gate::source(a.ip()) == source && c.held(now))
            .count();
        held_here >= HELD_PER_SOURCE || self.callers.get(&addr).is_some_and(|c| c.held(now))
    }

    fn caller(&mut self, now: Instant, from: SocketAddr) -> &mut Caller {
        if !self.callers.contains_key(&from) && self.callers.len() >= ADDRESSES {
            let oldest = self.callers.iter().min_by_key(|(_, c)| c.heard);
            if let Some(oldest) = oldest.map(|(a, _)| *a) {
                self.callers.remove(&oldest);
            }
        }
        self.callers.entry(from).or_insert(Caller {
            knock: None,
            held_until: None,
            hold_off: Duration::ZERO,
            heard: now,
            sender: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knocks_are_recognised_and_nothing_else() {
        let k = knock(None, 0);
        assert!(is_knock(&k));
        assert!(!is_knock(&k[..KNOCK_LEN - 1]));
        let mut quic = k.clone();
        quic[0] = 0xc0;
        assert!(!is_knock(&quic));
    }

    #[test]
    fn a_listener_with_a_token_answers_only_knocks_signed_with_it() {
        let token = Some(&b"s3cret"[..]);
        let valid = Knock::Valid { sender: None };
        let signed = knock(token, 0);
        assert_eq!(read(&signed, token), valid);
        assert_ne!(signed, knock(token, 0), "each knock has its own nonce");
        assert_eq!(read(&signed, Some(b"other")), Knock::Unsigned);
        assert_eq!(read(&knock(None, 0), token), Knock::Unsigned);
        let mut forged = signed.clone();
        forged[NONCE.start] ^= 1;
        assert_eq!(read(&forged, token), Knock::Unsigned);
        assert_eq!(read(&signed, None), valid, "no token: any knock");
        assert_eq!(read(&signed, Some(b"")), valid);
        assert_eq!(read(&[0xc0; 1200], token), Knock::NotAKnock);
    }

    #[test]
    fn a_sender_id_is_read_and_signed_and_old_knocks_name_none() {
        let token = Some(&b"s3cret"[..]);
        let named = knock(token, 0x0102_0304_0506_0708);
        let valid = Knock::Valid {
            sender: Some(0x0102_0304_0506_0708),
        };
        assert_eq!(read(&named, token), valid);
        assert_eq!(
            read(&knock(None, 7), None),
            Knock::Valid { sender: Some(7) }
        );
        // A listener that knows no sender IDs checks the first MAC alone: it still holds.
        let first = signature(b"s3cret", &named[..NONCE.end]);
        assert_eq!(first, named[MAC]);
        // The ID is signed: changed, the knock is not the token holder's.
        let mut forged = named.clone();
        forged[SENDER.end - 1] ^= 1;
        assert_eq!(read(&forged, token), Knock::Unsigned);
        // Zeroed with its MAC, it is a one-socket sender's knock, as before sender IDs.
        let mut stripped = named.clone();
        stripped[SENDER.start..SENDER_MAC.end].fill(0);
        assert_eq!(read(&stripped, token), Knock::Valid { sender: None });
        assert!(
            super::super::random_id() != 0
                && super::super::random_id() != super::super::random_id()
        );
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_stray_that_keeps_knocking_is_held_off_and_the_caller_is_answered() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let (stray, caller) = (at("192.0.2.7:4000"), at("198.51.100.1:5000"));
        let mut door = Doorman::default();
        // The stray knocks 5 times a second; each call-back to it fails after HEAR_BACK.
        // The caller knocks as a Knocker does.
        let mut knocker = Knocker::default();
        let mut calling: Option<(SocketAddr, Instant)> = None;
        let mut stray_calls = 0;
        for t in (0..30_000).step_by(10) {
            let now = ms(t);
            if t % 200 == 0 {
                door.knocked(now, stray, None);
            }
            if t >= 5_000 && knocker.poll(now, false) {
                door.knocked(now, caller, None);
            }
            if let Some((to, since)) = calling {
                if to == caller {
                    assert!(
                        t < 9_000,
                        "the caller is answered within 4 s of its first knock"
                    );
                    return;
                }
                if now < since + HEAR_BACK {
                    continue;
                }
                door.failed(now, to);
            }
            calling = door.next(now).map(|c| (c.to, now));
            stray_calls += usize::from(calling.is_some_and(|(to, _)| to == stray));
            assert!(stray_calls <= 4, "the stray is held off more and more");
        }
        panic!("the caller was never called back");
    }

    #[test]
    fn stale_knocks_are_not_answered_and_a_connection_forgives() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let a = at("192.0.2.7:4000");
        let mut door = Doorman::default();
        assert!(door.knocked(ms(0), a, None));
        assert_eq!(door.next(ms(FRESH.as_millis() as u64)), None, "stale");
        assert!(door.knocked(ms(4000), a, None));
        assert_eq!(door.next(ms(4000)).map(|c| c.to), Some(a));
        assert_eq!(door.next(ms(4000)), None, "answered once");
        door.failed(ms(4500), a);
        assert!(!door.knocked(ms(5000), a, None), "held off for 1 s");
        assert!(door.knocked(ms(5500), a, None));
        door.failed(ms(5500), a);
        assert!(!door.knocked(ms(7000), a, None), "then for 2 s");
        door.connected(a);
        assert!(door.knocked(ms(7000), a, None), "a connection forgives");
    }

    #[test]
    fn a_stray_changing_ports_is_held_off_as_one_source_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut door = Doorman::default();
        let caller = at("[2001:db8:1:2::1]:4000");
        assert!(
            door.knocked(t0, caller, None),
            "another port of the stray's host"
        );
        for port in 0..HELD_PER_SOURCE as u16 {
            let stray = SocketAddr::new(format!("2001:db8:1:2::{port}").parse().unwrap(), 9);
            assert!(door.knocked(t0, stray, None));
            door.failed(t0, stray);
        }
        assert!(
            !door.knocked(t0, at("[2001:db8:1:2:ffff::1]:5000"), None),
            "the /64 is held off whole"
        );
        assert!(
            door.knocked(t0, at("[2001:db8:1:3::1]:4000"), None),
            "not its neighbour"
        );
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            door.knocked(
                t0 + Duration::from_millis(i.into()),
                SocketAddr::new(ip.into(), 1),
                None,
            );
        }
        assert_eq!(door.callers.len(), ADDRESSES);
    }
}
