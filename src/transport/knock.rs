//! Reversed dialling, for a sender behind NAT (`mode=caller` on quicnalusink, `mode=listener`
//! on quicnalusrc). QUIC roles never change: the sender is always the QUIC server. A calling
//! sender sends KNOCK datagrams to the listening receiver, which answers by connecting to
//! the address the knock came from, as a QUIC client, through the mapping the knock opened
//! in the sender's NAT (docs/PROTOCOL.md, "Reversed dialling").

use std::time::{Duration, Instant};

/// A knock is as long as a client's first QUIC datagram must be, so the handshake a
/// knock sets off sends no more to its source than the knock was: a spoofed knock buys no
/// amplification.
pub const KNOCK_LEN: usize = 1200;
/// The first byte has QUIC's fixed bit (0x40) clear: no QUIC v1 packet starts so.
const MAGIC: &[u8; 16] = b"\x00quicnalu-knock1";

/// The datagram a calling sender sends.
pub fn knock() -> Vec<u8> {
    let mut d = vec![0; KNOCK_LEN];
    d[..MAGIC.len()].copy_from_slice(MAGIC);
    d
}

/// Whether `datagram` is a knock.
pub fn is_knock(datagram: &[u8]) -> bool {
    datagram.len() >= KNOCK_LEN && datagram.starts_with(MAGIC)
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
}

impl Knocker {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knocks_are_recognised_and_nothing_else() {
        let k = knock();
        assert!(is_knock(&k));
        assert!(!is_knock(&k[..KNOCK_LEN - 1]));
        let mut quic = k.clone();
        quic[0] = 0xc0;
        assert!(!is_knock(&quic));
    }

    #[test]
    fn knocking_backs_off_until_connected_and_starts_again_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = Knocker::default();
        let knocked: Vec<u64> = (0..=8000)
            .step_by(10)
            .filter(|&t| k.poll(ms(t), false))
            .collect();
        assert_eq!(
            knocked,
            [0, 100, 300, 700, 1500, 3100, 5100, 7100],
            "doubling pauses, capped at 2 s"
        );
        assert!(!k.poll(ms(8000), true), "no knocking while connected");
        assert_eq!(k.due(), None);
        assert!(k.poll(ms(9000), false), "at once when the receiver goes");
        assert_eq!(k.due(), Some(ms(9100)));
    }
}
