//! What reaches a listener from anyone: datagrams read as knocks, and the `Doorman` driven
//! by a script of knocks, call-backs and clock steps. Input `[mode] [rest ...]`: an even
//! mode byte reads `[token length] [token] [datagram]`, an odd one runs `rest` as a script
//! (see `Script`).
//!
//! Invariants, `read`: shorter than KNOCK_LEN or not starting with the magic is NotAKnock;
//! with no (or an empty) token, every other datagram is Valid; with a token, such a datagram
//! is Valid or Unsigned, never NotAKnock, and a knock `knock` signs with that token reads
//! Valid, with the sender ID it was given, whatever follows its first 104 bytes (magic,
//! nonce, MAC, sender ID and its MAC), and an unsigned one reads Unsigned.
//! `Doorman`: `next` returns only an address whose knock was let in and has not been
//! answered, failed or connected since, and no older than FRESH; a knock it let in is
//! answerable at once (`next` at the same instant returns someone); an address is ignored
//! for at least FIRST_HOLD_OFF after a failed call-back; however many addresses knock, at
//! most ADDRESSES knocks are pending at once.

#![no_main]

use gstquicnalu::policy::knock::{self, Doorman, Knock, KNOCK_LEN};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The knock's first 16 bytes (private in knock.rs; checked against `knock` below).
const MAGIC: &[u8; 16] = b"\x00quicnalu-knock1";
/// knock.rs's FRESH (MAX_PAUSE + 1 s), FIRST_HOLD_OFF and ADDRESSES.
const FRESH: Duration = Duration::from_millis(3000);
const FIRST_HOLD_OFF: Duration = Duration::from_secs(1);
const ADDRESSES: usize = 256;

fn read_datagram(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (token, datagram) = rest.split_at(n);
    // A short input stands for a knock-sized datagram: the fuzzer need not grow 1200 bytes.
    let mut padded;
    let datagram = if datagram.len() < KNOCK_LEN && token.first() == Some(&0xff) {
        padded = datagram.to_vec();
        padded.resize(KNOCK_LEN, 0);
        &padded[..]
    } else {
        datagram
    };

    let is_knock = datagram.len() >= KNOCK_LEN && datagram.starts_with(MAGIC);
    let unsigned = knock::read(datagram, None);
    assert_eq!(
        unsigned,
        knock::read(datagram, Some(b"")),
        "empty token is none"
    );
    assert_eq!(matches!(unsigned, Knock::Valid { .. }), is_knock);
    assert_ne!(unsigned, Knock::Unsigned, "no token: nothing is unsigned");
    assert_eq!(knock::is_knock(datagram), is_knock);
    let signed = knock::read(datagram, Some(token));
    if !is_knock {
        assert_eq!(signed, Knock::NotAKnock);
    } else if token.is_empty() {
        assert_eq!(signed, unsigned);
    } else {
        assert_ne!(signed, Knock::NotAKnock);
    }

    // Knocks made by `knock`: the magic, the length, the sender ID, and the signatures over
    // the first 104 bytes only, so the datagram's own bytes past them change nothing.
    let sender = token.iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
    let valid = Knock::Valid {
        sender: Some(sender).filter(|&s| s != 0),
    };
    let plain = knock::knock(None, sender);
    assert_eq!(plain.len(), KNOCK_LEN);
    assert!(plain.starts_with(MAGIC));
    assert_eq!(knock::read(&plain, None), valid);
    if !token.is_empty() {
        let mut made = knock::knock(Some(token), sender);
        assert_eq!(knock::read(&made, Some(token)), valid);
        assert_eq!(knock::read(&made, None), valid);
        // The fuzzer's bytes past the signed part, and past KNOCK_LEN.
        let tail = datagram.get(104..).unwrap_or_default();
        let keep = tail.len().min(KNOCK_LEN - 104);
        made[104..104 + keep].copy_from_slice(&tail[..keep]);
        made.extend_from_slice(&tail[keep..]);
        assert_eq!(
            knock::read(&made, Some(token)),
            valid,
            "tail is unsigned"
        );
        assert_eq!(knock::read(&plain, Some(token)), Knock::Unsigned);
    }
}

/// A script: a step is one op byte and its arguments; a cut-off step ends it.
///  - 0: the clock steps on `[u16 LE]` ms, times the op's high bits (`op >> 3`, +1);
///  - 1: a knock from an address (see `Script::addr`);
///  - 2: `next`; 3: `failed` for an address; 4: `connected` for an address;
///  - 5: a burst `[count] [IPv4 base]`: 4 * count + 1 addresses knock, one after another.
struct Script<'a> {
    bytes: &'a [u8],
    /// Addresses seen so far, for ops to name again by index.
    seen: Vec<SocketAddr>,
}

impl Script<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    /// `[b]`: below 0x80 an address seen before (b modulo their number); else a new one,
    /// `[IPv4, 4 bytes] [port, 2]` when b is even, `[IPv6, 16] [port, 2]` when odd.
    fn addr(&mut self) -> Option<SocketAddr> {
        let [b] = self.take::<1>()?;
        if b < 0x80 && !self.seen.is_empty() {
            return Some(self.seen[usize::from(b) % self.seen.len()]);
        }
        let ip: IpAddr = if b & 1 == 0 {
            Ipv4Addr::from(self.take::<4>()?).into()
        } else {
            Ipv6Addr::from(self.take::<16>()?).into()
        };
        let port = u16::from_le_bytes(self.take::<2>()?);
        let addr = SocketAddr::new(ip, port);
        if self.seen.len() < 64 {
            self.seen.push(addr);
        }
        Some(addr)
    }
}

/// What the Doorman should know of one address, as far as its API shows.
#[derive(Default)]
struct Model {
    /// The latest knock let in and not answered, failed or connected since.
    pending: Option<Instant>,
    /// The latest failed call-back, until a connection forgives it.
    failed: Option<Instant>,
}

fn run_script(bytes: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut door = Doorman::default();
    let mut model: HashMap<SocketAddr, Model> = HashMap::new();
    let mut script = Script {
        bytes,
        seen: Vec::new(),
    };
    // Whether a knock was let in at `now` and nothing was answered since.
    let mut let_in_now = false;
    // Every address any op named. While there are at most ADDRESSES, the Doorman has
    // forgotten none, and forgetting is the one way it may let a held-off address in early
    // or drop a knock it let in.
    let mut named: HashSet<SocketAddr> = HashSet::new();
    let knocked = |door: &mut Doorman,
                   model: &mut HashMap<SocketAddr, Model>,
                   named: &mut HashSet<SocketAddr>,
                   now: Instant,
                   from: SocketAddr|
     -> bool {
        named.insert(from);
        let ok = door.knocked(now, from, None);
        let m = model.entry(from).or_default();
        if ok {
            m.pending = Some(now);
        }
        if let Some(at) = m.failed.filter(|_| named.len() <= ADDRESSES) {
            assert!(
                !ok || now >= at + FIRST_HOLD_OFF,
                "{from} let in {:?} after its call-back failed",
                now - at
            );
        }
        ok
    };
    let answered = |door: &mut Doorman, model: &mut HashMap<SocketAddr, Model>, now: Instant| {
        let next = door.next(now).map(|c| c.to);
        if let Some(to) = next {
            let m = model
                .get_mut(&to)
                .expect("called back an address that never knocked");
            let at = m
                .pending
                .take()
                .unwrap_or_else(|| panic!("called back {to}, whose knock was answered"));
            assert!(now < at + FRESH, "called back {to} on a stale knock");
        }
        next
    };
    while let Some([op]) = script.take::<1>() {
        match op & 7 {
            0 => {
                let Some(ms) = script.take::<2>() else { break };
                let step = u64::from(u16::from_le_bytes(ms)) * u64::from(op >> 3).max(1);
                now += Duration::from_millis(step);
                let_in_now = false;
            }
            1 => {
                let Some(from) = script.addr() else { break };
                let_in_now |= knocked(&mut door, &mut model, &mut named, now, from);
            }
            2 => {
                let next = answered(&mut door, &mut model, now);
                assert!(
                    !let_in_now || next.is_some() || named.len() > ADDRESSES,
                    "a knock let in now is not answered now"
                );
                let_in_now = false;
            }
            3 => {
                let Some(to) = script.addr() else { break };
                named.insert(to);
                door.failed(now, to);
                let m = model.entry(to).or_default();
                m.pending = None;
                m.failed = Some(now);
                let_in_now = false;
            }
            4 => {
                let Some(to) = script.addr() else { break };
                door.connected(to);
                model.remove(&to);
                let_in_now = false;
            }
            5 => {
                let Some([count]) = script.take::<1>() else {
                    break;
                };
                let Some(base) = script.take::<4>() else {
                    break;
                };
                let base = u32::from_be_bytes(base);
                for i in 0..=4 * u32::from(count) {
                    let from = SocketAddr::new(Ipv4Addr::from(base.wrapping_add(i)).into(), 443);
                    let_in_now |= knocked(&mut door, &mut model, &mut named, now, from);
                }
            }
            _ => {}
        }
    }
    // Everyone still pending at the end, at most ADDRESSES of them, each once.
    let mut answers = 0;
    while answered(&mut door, &mut model, now).is_some() {
        answers += 1;
        assert!(answers <= ADDRESSES, "more than {ADDRESSES} knocks pending");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        read_datagram(rest);
    } else {
        run_script(rest);
    }
});
