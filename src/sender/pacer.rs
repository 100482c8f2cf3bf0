//! Paces one receiver's media at what its path delivers, once the path has shown a queue.
//!
//! A loss-based congestion controller (cubic, the default) fills the bottleneck's buffer
//! before it backs off: frames then wait there, out of reach, well past any latency budget.
//! Paced at the bottleneck's rate, the excess waits in the sink's queue instead, where
//! frames are shed by cost and groups expire by deadline (server.rs).
//!
//! The bottleneck's rate is the highest delivery rate quiche measured in the last second
//! while we had more to send than the pacer let through (BBR's bottleneck bandwidth, RFC
//! draft-cardwell-iccrg-bbr-congestion-control). The rate cycles around it to find more
//! room and give back what that queued; while the RTT shows a standing queue it drains.

use crate::protocol::MAX_DATAGRAM_SIZE;
use std::time::{Duration, Instant};

/// Slots of the windowed maximum; together they span one second.
const SLOTS: usize = 10;
const SLOT: Duration = Duration::from_millis(100);
/// Gains over the bottleneck rate, one per PHASE: probe, give back, cruise.
const GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const PHASE: Duration = Duration::from_millis(100);
/// Queueing in the network (smoothed RTT over the minimum) that counts as a standing
/// queue: it starts pacing, and while it lasts the rate drains it.
pub const STANDING_QUEUE: Duration = Duration::from_millis(30);
const DRAIN: f64 = 0.75;
/// A queue that stands this long while we drain it is not ours: the path's base RTT rose
/// (a new route, or a competing flow), and it becomes the new base.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Bytes may go out in bursts this long at the pacing rate, and at least two datagrams.
const BURST: Duration = Duration::from_millis(20);
const MIN_BURST: f64 = 2.0 * MAX_DATAGRAM_SIZE as f64;
/// The shortest wait worth waking up for.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// No path is paced below this (bytes/s, 100 kbit/s).
const FLOOR: f64 = 12_500.0;

#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    /// Per slot: the slot's number since `start` and its highest delivery rate (bytes/s).
    slots: [(u64, u64); SLOTS],
    /// The last bottleneck rate, kept when the window holds no sample.
    bottleneck: u64,
    /// Bytes per second.
    rate: f64,
    tokens: f64,
    last: Instant,
    /// When bytes last went out.
    last_sent: Instant,
    /// The smoothed RTT when the path fell idle: a value only acks of new packets change,
    /// so while it stays the same it says nothing about a queue now.
    idle_rtt: Option<Duration>,
    /// Since when we drain a standing queue.
    draining_since: Option<Instant>,
    /// The RTT taken as the path's base, when it rose above quiche's minimum (DRAIN_LIMIT).
    base_rtt: Option<Duration>,
}

impl Pacer {
    /// Starts pacing at `delivery_rate` (bytes/s) with a full bucket.
    pub fn new(now: Instant, delivery_rate: u64) -> Pacer {
        let rate = (delivery_rate as f64).max(FLOOR);
        Pacer {
            start: now,
            slots: [(0, 0); SLOTS],
            bottleneck: delivery_rate,
            rate,
            tokens: rate * BURST.as_secs_f64(),
            last: now,
            last_sent: now,
            idle_rtt: None,
            draining_since: None,
            base_rtt: None,
        }
    }

    /// Takes quiche's latest delivery rate (bytes/s) and the path's RTTs, and sets the
    /// rate. `held_back`: the pacer held bytes back since the last call, so the sample
    /// measured the path rather than how much we had to send.
    pub fn on_path(
        &mut self,
        now: Instant,
        delivery_rate: u64,
        held_back: bool,
        rtt: Duration,
        min_rtt: Duration,
    ) {
        let elapsed = now.saturating_duration_since(self.start);
        let slot = (elapsed.as_millis() / SLOT.as_millis()) as u64;
        // Draining, held-back bytes measure our own reduced rate, not the path.
        let measured = held_back && self.draining_since.is_none();
        if measured || delivery_rate > self.bottleneck {
            let s = &mut self.slots[slot as usize % SLOTS];
            if s.0 != slot {
                *s = (slot, 0);
            }
            s.1 = s.1.max(delivery_rate);
        }
        let window = slot.saturating_sub(SLOTS as u64 - 1)..=slot;
        if let Some(max) = self
            .slots
            .iter()
            .filter(|s| window.contains(&s.0) && s.1 > 0)
            .map(|s| s.1)
            .max()
        {
            self.bottleneck = max;
        }
        if now.saturating_duration_since(self.last_sent) > rtt {
            self.idle_rtt = Some(rtt);
        } else if self.idle_rtt != Some(rtt) {
            self.idle_rtt = None;
        }
        let base = match self.base_rtt {
            Some(b) if b <= rtt => b,
            _ => {
                self.base_rtt = None;
                min_rtt
            }
        };
        let queue = self.idle_rtt.is_none() && rtt.saturating_sub(base) > STANDING_QUEUE;
        self.draining_since = match (queue, self.draining_since) {
            (false, _) => None,
            (true, Some(t)) if now.saturating_duration_since(t) > DRAIN_LIMIT => {
                self.base_rtt = Some(rtt);
                None
            }
            (true, since) => Some(since.unwrap_or(now)),
        };
        let phase = (elapsed.as_millis() / PHASE.as_millis()) as usize % GAINS.len();
        let gain = if self.draining_since.is_some() {
            DRAIN
        } else {
            GAINS[phase]
        };
        self.rate = (self.bottleneck as f64 * gain).max(FLOOR);
    }

    /// The pacing rate, bit/s.
    pub fn rate_bps(&self) -> u64 {
        (self.rate * 8.0) as u64
    }

    /// Bytes that may go now.
    pub fn allowance(&mut self, now: Instant) -> usize {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + earned).min((self.rate * BURST.as_secs_f64()).max(MIN_BURST));
        self.tokens.max(0.0) as usize
    }

    pub fn spend(&mut self, now: Instant, bytes: usize) {
        self.tokens -= bytes as f64;
        if bytes > 0 {
            self.last_sent = now;
        }
    }

    /// When `bytes` more may go.
    pub fn ready_at(&self, bytes: usize) -> Instant {
        let wait = (bytes as f64 - self.tokens).max(0.0) / self.rate;
        self.last + Duration::from_secs_f64(wait).max(MIN_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bucket_paces_with_short_bursts() {
        let t0 = Instant::now();
        // 1 MB/s: a 20 ms burst is 20 kB.
        let mut p = Pacer::new(t0, 1_000_000);
        assert_eq!(p.allowance(t0), 20_000);
        p.spend(t0, 20_000);
        assert_eq!(p.allowance(t0), 0);
        assert_eq!(p.ready_at(1000), t0 + MS);
        assert_eq!(p.allowance(t0 + 5 * MS), 5_000);
        // An idle second earns no more than a burst.
        assert_eq!(p.allowance(t0 + 1000 * MS), 20_000);
        // A slow path still earns whole datagrams.
        let mut slow = Pacer::new(t0, 20_000);
        assert_eq!(slow.allowance(t0 + 1000 * MS), 2 * MAX_DATAGRAM_SIZE);
    }

    #[test]
    fn follows_the_bottleneck_and_drains_a_queue() {
        let t0 = Instant::now();
        let (rtt, min) = (10 * MS, 10 * MS);
        let mut p = Pacer::new(t0, 1_000_000);
        let at = |p: &mut Pacer, ms: u64, rate: u64, held_back: bool, rtt: Duration| {
            let now = t0 + ms as u32 * MS;
            p.spend(now, 1);
            p.on_path(now, rate, held_back, rtt, min);
        };
        // Cruising phase (the third): the bottleneck itself.
        at(&mut p, 250, 1_000_000, true, rtt);
        assert_eq!(p.rate, 1_000_000.0);
        // The first phase of a cycle probes above it.
        at(&mut p, 850, 1_000_000, true, rtt);
        assert_eq!(p.rate, 1_250_000.0);
        // A standing queue drains whatever the phase.
        at(&mut p, 860, 1_000_000, true, 50 * MS);
        assert_eq!(p.rate, 750_000.0);
        // Not after the path fell idle, while no ack has refreshed the RTT since.
        p.on_path(t0 + 1000 * MS, 1_000_000, false, 50 * MS, min);
        assert_eq!(p.rate, 1_000_000.0);
        // Samples while nothing was held back say how much we had, not what the path
        // carries: they count only when higher.
        at(&mut p, 1300, 200_000, false, rtt);
        assert_eq!(p.bottleneck, 1_000_000);
        // A slower path: a second later, only its samples are left in the window.
        at(&mut p, 2000, 400_000, true, rtt);
        at(&mut p, 3050, 400_000, true, rtt);
        assert_eq!(p.bottleneck, 400_000);
        // The base RTT rises for good: after a second of draining that does not help, the
        // new RTT is the base, and the drain did not lower the bottleneck.
        at(&mut p, 3100, 300_000, true, 60 * MS);
        assert_eq!(p.rate, 300_000.0, "draining at 0.75");
        at(&mut p, 3600, 300_000, true, 60 * MS);
        at(&mut p, 4250, 300_000, true, 60 * MS);
        assert_eq!(p.bottleneck, 400_000);
        assert_eq!(p.rate, 400_000.0, "cruising on the new base");
    }
}
