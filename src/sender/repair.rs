//! Finding a lost packet at the end of a burst as fast as one in its middle.
//!
//! QUIC learns a packet is lost when packets sent after it are acknowledged (RFC 9002, 6.1):
//! three of them, or any one once the lost packet is 9/8 of a round trip old. A live sender
//! writes a frame in a burst and then falls silent until the next frame: the burst's last
//! packets have nothing behind them, so a loss among them waits for the next frame's
//! acknowledgements (a frame interval plus a round trip) or the probe timeout (a round trip,
//! four RTT variances and the peer's ACK delay). A few small ack-eliciting packets right
//! after the burst give them something behind: their acknowledgements reveal the loss a
//! round trip after it, as in the middle of a frame. They cost a few dozen bytes a frame.
//!
//! A repair can be lost too, and each loss of it costs another round trip: at 10% random
//! loss about one frame in a hundred needs a third attempt at one of its packets. Sending
//! each repair twice makes that as rare as losing both copies (the copy is the same
//! datagram, so the receiver's QUIC drops whichever arrives second as a duplicate), for as
//! many extra bytes as the path loses.

use std::time::{Duration, Instant};

use crate::sender::pacer::STANDING_QUEUE;
use crate::sender::Path;

/// Probes after a burst: their acknowledgements count towards the packet threshold, and
/// one lost with the burst's tail leaves the other.
pub const PROBES: u8 = 2;

/// Bursts closer together than this share their probes: a frame written in pieces as the
/// congestion window opens is one burst.
const MIN_GAP: Duration = Duration::from_millis(2);

/// When to follow media with probe packets, for one connection.
#[derive(Debug, Default)]
pub struct TailProbe {
    /// A burst ended since the last probes.
    unprobed: bool,
    /// Probes still to send for the last burst.
    pending: u8,
    last: Option<Instant>,
    /// quiche's count of packets sent with retransmitted data, as last seen.
    retransmitted: usize,
}

impl TailProbe {
    /// After a turn of writing: `media`, media bytes went to quiche; `retransmitted`,
    /// quiche's count of packets sent with retransmitted data (repairs are bursts too);
    /// `queued`, media still waits for this receiver. A burst ends when nothing is left to
    /// write: while media waits (for the pacer or the congestion window) the packets that
    /// follow reveal any loss, and probes would only spend a metered path's capacity, two
    /// for every paced release.
    pub fn after_turn(&mut self, media: bool, retransmitted: usize, queued: bool) {
        let repaired = retransmitted > self.retransmitted;
        self.retransmitted = retransmitted;
        if (media || repaired) && !queued {
            self.unprobed = true;
        }
    }

    /// Whether to send a probe packet now. `idle`: quiche has sent all it can for now (it
    /// holds no paced packet back). Call until false.
    pub fn poll(&mut self, now: Instant, idle: bool) -> bool {
        if !idle {
            return false;
        }
        if self.unprobed && self.last.is_none_or(|t| now >= t + MIN_GAP) {
            self.unprobed = false;
            self.pending = PROBES;
            self.last = Some(now);
        }
        if self.pending == 0 {
            return false;
        }
        self.pending -= 1;
        true
    }
}

/// Which packets to send twice, for one connection: repairs, while the path loses packets
/// but shows no standing queue. Losses from a full bottleneck are the network asking for
/// fewer bytes, and copies would only add to them.
#[derive(Debug, Default)]
pub struct RepeatRepairs {
    on: bool,
    /// Bytes marked for retransmission not yet covered by a copy.
    owed: u64,
}

/// Whether to send repairs twice on `path`: it shows no standing queue, and the peer's
/// address is validated (before that, copies would pass the 3x limit on what it may be
/// sent).
pub fn repeats(path: &Path) -> bool {
    path.validated && path.rtt.saturating_sub(path.min_rtt) <= STANDING_QUEUE
}

impl RepeatRepairs {
    /// Before a turn of sending: whether this turn repeats repairs ([`repeats`]).
    pub fn set(&mut self, on: bool) {
        self.on = on;
        if !on {
            self.owed = 0;
        }
    }

    /// Whether quiche's count of retransmitted bytes is worth reading around each packet.
    pub fn active(&self) -> bool {
        self.on
    }

    /// quiche built a packet of `len` bytes and marked `marked` stream bytes for
    /// retransmission while building it (it does so in the packet that carries the first
    /// of them): whether to send this packet twice. Those that follow it are copied until
    /// they add up to the marked bytes.
    pub fn after_packet(&mut self, marked: u64, len: usize) -> bool {
        if !self.on {
            return false;
        }
        self.owed += marked;
        if self.owed == 0 {
            return false;
        }
        self.owed = self.owed.saturating_sub(len as u64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn probes(p: &mut TailProbe, now: Instant, idle: bool) -> u8 {
        let mut n = 0;
        while p.poll(now, idle) {
            n += 1;
        }
        n
    }

    #[test]
    fn each_burst_is_followed_by_its_probes_once_sent() {
        let t0 = Instant::now();
        let mut p = TailProbe::default();
        // Nothing written: nothing to probe.
        assert_eq!(probes(&mut p, t0, true), 0);
        // Media that leaves more queued (paced, or a full window) is no burst's end.
        p.after_turn(true, 0, true);
        assert_eq!(probes(&mut p, t0, true), 0);
        p.after_turn(true, 0, false);
        // quiche still holds paced packets of the burst: not yet.
        assert_eq!(probes(&mut p, t0, false), 0);
        assert_eq!(probes(&mut p, t0 + 3 * MS, true), PROBES);
        assert_eq!(probes(&mut p, t0 + 4 * MS, true), 0);
        // More of the same frame a millisecond later: one burst, its probes already went.
        p.after_turn(true, 0, false);
        assert_eq!(probes(&mut p, t0 + 4 * MS, true), 0);
        // ... and are sent once the gap has passed, if nothing else came.
        assert_eq!(probes(&mut p, t0 + 6 * MS, true), PROBES);
        // The next frame, 33 ms on.
        p.after_turn(true, 0, false);
        assert_eq!(probes(&mut p, t0 + 39 * MS, true), PROBES);
        // A burst of retransmissions, nothing new written.
        p.after_turn(false, 3, false);
        assert_eq!(probes(&mut p, t0 + 50 * MS, true), PROBES);
        // The count unchanged: no burst.
        p.after_turn(false, 3, false);
        assert_eq!(probes(&mut p, t0 + 60 * MS, true), 0);
    }

    #[test]
    fn repairs_are_repeated_only_on_a_path_that_does_not_queue() {
        let ms = |n| Duration::from_millis(n);
        let on_path = |r: &mut RepeatRepairs, rtt, min_rtt, validated| {
            let path = Path {
                rtt,
                min_rtt,
                delivery_rate: 0,
                sent_bytes: 0,
                lost_bytes: 0,
                validated,
            };
            r.set(repeats(&path));
        };
        let mut r = RepeatRepairs::default();
        // Not before the address is validated.
        on_path(&mut r, ms(40), ms(40), false);
        assert!(!r.after_packet(1200, 1250));
        // 2400 bytes marked lost on a path at its base RTT (a few ms of jitter is no queue):
        // the packet that carries the first of them and the next are copied, then no more.
        on_path(&mut r, ms(48), ms(40), true);
        assert!(!r.after_packet(0, 1250));
        assert!(r.after_packet(2400, 1250));
        assert!(r.after_packet(0, 1250));
        assert!(!r.after_packet(0, 1250));
        // Losses while the path queues: the bottleneck is full, no copies ...
        on_path(&mut r, ms(40) + STANDING_QUEUE + ms(1), ms(40), true);
        assert!(!r.active());
        assert!(!r.after_packet(5000, 1250));
        // ... and none owed for them once the queue drains.
        on_path(&mut r, ms(41), ms(40), true);
        assert!(!r.after_packet(0, 1250));
    }
}
