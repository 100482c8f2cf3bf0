//! A seeded model of one direction of a network path, on the simulated clock: one-way
//! delay, jitter (with or without reordering), random loss, Gilbert-Elliott burst loss,
//! outages, and a rate cap with a bounded bottleneck queue. The same choices as the
//! project's UDP relay (`relay.rs`), made in the order packets are offered, so a seed and a
//! packet sequence always get the same treatment.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// Small, fast and seedable (SplitMix64): repeatability, not cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Bursty loss: a two-state Markov chain stepped once per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Chance per packet of going from Good to Bad.
    pub p: f64,
    /// Chance per packet of going from Bad back to Good; 1/r is the mean burst length.
    pub r: f64,
    pub loss_good: f64,
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Bursts of `mean` packets lost whole, `share` of all packets in them.
    pub fn bursts(share: f64, mean: f64) -> Self {
        let r = 1.0 / mean;
        GilbertElliott {
            p: share * r / (1.0 - share),
            r,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }
}

/// What happens to packets going one way. The default passes everything at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    /// A uniformly random extra delay in `[0, jitter)`.
    pub jitter: Duration,
    /// Whether jitter may reorder packets; without it a packet never overtakes another.
    pub reorder: bool,
    /// Independent random loss, 0..=1.
    pub loss: f64,
    pub burst: Option<GilbertElliott>,
    /// Bandwidth cap in bit/s (datagram bytes); None: no cap.
    pub rate_bps: Option<u64>,
    /// Bytes the cap may queue before it drops arrivals (a router's buffer).
    pub queue_bytes: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            burst: None,
            rate_bps: None,
            queue_bytes: 64 * 1024,
        }
    }
}

/// Packet counts for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub offered: u64,
    pub delivered: u64,
    pub lost: u64,
    pub outage_dropped: u64,
    pub queue_dropped: u64,
}

/// One direction: packets `T` offered at a time, delivered at a later one.
pub struct Link<T> {
    pub imp: Impairment,
    /// (start, end) of each cut, both ends included in nothing: packets offered in
    /// [start, end) are dropped.
    pub outages: Vec<(Instant, Instant)>,
    rng: Rng,
    bad: bool,
    busy_until: Option<Instant>,
    /// (leaves the cap, bytes) for packets in the cap's queue.
    in_queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    last_release: Option<Instant>,
    flight: Flight<T>,
    offered: u64,
    pub counts: Counts,
}

/// In flight: (arrival, offer order) and the packet, soonest first.
type Flight<T> = BinaryHeap<(Reverse<(Instant, u64)>, Slot<T>)>;

/// Orders nothing: the heap orders by the key beside it (arrival, then offer order).
struct Slot<T>(T);

impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> Link<T> {
    pub fn new(imp: Impairment, seed: u64) -> Self {
        Link {
            imp,
            outages: Vec::new(),
            rng: Rng::new(seed),
            bad: false,
            busy_until: None,
            in_queue: VecDeque::new(),
            queued_bytes: 0,
            last_release: None,
            flight: BinaryHeap::new(),
            offered: 0,
            counts: Counts::default(),
        }
    }

    /// Offers a packet of `len` bytes at `now`: it arrives later, or is dropped.
    pub fn send(&mut self, now: Instant, len: usize, packet: T) {
        self.counts.offered += 1;
        if let Some(at) = self.admit(len, now) {
            self.offered += 1;
            self.flight
                .push((Reverse((at, self.offered)), Slot(packet)));
        }
    }

    /// When the next packet arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.flight.peek().map(|(Reverse((at, _)), _)| *at)
    }

    /// The next packet that has arrived by `now`.
    pub fn receive(&mut self, now: Instant) -> Option<T> {
        if self.next_arrival()? > now {
            return None;
        }
        self.counts.delivered += 1;
        self.flight.pop().map(|(_, Slot(p))| p)
    }

    /// Decides a packet's fate: its arrival time, or None when it is dropped.
    fn admit(&mut self, len: usize, now: Instant) -> Option<Instant> {
        let imp = &self.imp;
        // Draw for everything every time, so one setting's choices do not shift another's.
        let random_loss = self.rng.chance(imp.loss);
        let burst_loss = match imp.burst {
            Some(ge) => {
                let flip = self.rng.unit();
                self.bad = if self.bad { flip >= ge.r } else { flip < ge.p };
                let p = if self.bad { ge.loss_bad } else { ge.loss_good };
                self.rng.chance(p)
            }
            None => false,
        };
        let jitter = imp.jitter.mul_f64(self.rng.unit());
        if self.outages.iter().any(|&(s, e)| now >= s && now < e) {
            self.counts.outage_dropped += 1;
            return None;
        }
        if random_loss || burst_loss {
            self.counts.lost += 1;
            return None;
        }
        let mut leaves = now;
        if let Some(rate) = imp.rate_bps.filter(|r| *r > 0) {
            while self.in_queue.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, n)) = self.in_queue.pop_front() {
                    self.queued_bytes -= n;
                }
            }
            if self.queued_bytes + len > imp.queue_bytes.max(len) {
                self.counts.queue_dropped += 1;
                return None;
            }
            let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
            leaves = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = Some(leaves);
            self.in_queue.push_back((leaves, len));
            self.queued_bytes += len;
        }
        let mut arrives = leaves + imp.delay + jitter;
        if !imp.reorder {
            if let Some(last) = self.last_release {
                arrives = arrives.max(last);
            }
        }
        self.last_release = Some(arrives);
        Some(arrives)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Offers `n` packets of `len` bytes, one every `gap`; returns the arrivals, in order.
    fn run(
        link: &mut Link<u64>,
        t0: Instant,
        n: u64,
        len: usize,
        gap: Duration,
    ) -> Vec<(u64, Duration)> {
        for i in 0..n {
            link.send(t0 + gap * i as u32, len, i);
        }
        let mut out = Vec::new();
        while let Some(at) = link.next_arrival() {
            let p = link.receive(at).unwrap();
            out.push((p, at - t0));
        }
        out
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let t0 = Instant::now();
        let imp = Impairment {
            delay: 20 * MS,
            jitter: 10 * MS,
            reorder: true,
            loss: 0.1,
            ..Impairment::default()
        };
        let a = run(&mut Link::new(imp.clone(), 7), t0, 1000, 1200, MS);
        let b = run(&mut Link::new(imp.clone(), 7), t0, 1000, 1200, MS);
        let c = run(&mut Link::new(imp, 8), t0, 1000, 1200, MS);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // About 10% lost, and jitter reorders some.
        assert!((850..=950).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).any(|w| w[1].0 < w[0].0), "no reordering");
        assert!(a.iter().all(|(_, at)| *at >= 20 * MS));
    }

    #[test]
    fn without_reordering_jitter_never_lets_a_packet_overtake() {
        let t0 = Instant::now();
        let imp = Impairment {
            delay: 20 * MS,
            jitter: 10 * MS,
            ..Impairment::default()
        };
        let out = run(&mut Link::new(imp, 1), t0, 500, 1200, MS);
        assert_eq!(out.len(), 500);
        assert!(out.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1));
    }

    #[test]
    fn bursts_have_their_mean_length_and_share() {
        let t0 = Instant::now();
        let imp = Impairment {
            burst: Some(GilbertElliott::bursts(0.02, 3.0)),
            ..Impairment::default()
        };
        let mut link = Link::new(imp, 3);
        let n = 200_000;
        let out = run(&mut link, t0, n, 100, Duration::from_micros(10));
        let lost = n - out.len() as u64;
        let share = lost as f64 / n as f64;
        assert!((0.015..0.025).contains(&share), "{share}");
        // Runs of consecutive losses.
        let mut runs = 0;
        let mut prev = None;
        for (p, _) in &out {
            if prev.is_some_and(|q: u64| p - q > 1) {
                runs += 1;
            }
            prev = Some(*p);
        }
        let mean = lost as f64 / runs as f64;
        assert!((2.5..3.5).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn a_cap_spaces_packets_and_its_queue_drops_the_excess() {
        let t0 = Instant::now();
        // 1.2 Mbit/s: a 1500-byte packet takes 10 ms; the queue holds 10 of them.
        let imp = Impairment {
            delay: 5 * MS,
            rate_bps: Some(1_200_000),
            queue_bytes: 15_000,
            ..Impairment::default()
        };
        let mut link = Link::new(imp, 1);
        let out = run(&mut link, t0, 30, 1500, Duration::ZERO);
        assert_eq!(out.len(), 10);
        assert_eq!(link.counts.queue_dropped, 20);
        let times: Vec<Duration> = out.iter().map(|o| o.1).collect();
        assert_eq!(times[0], 15 * MS);
        assert_eq!(times[9], 105 * MS);
        // The queue drains at the rate: 50 ms later, five more fit.
        link.send(t0 + 50 * MS, 1500, 100);
        assert_eq!(link.counts.queue_dropped, 20);
    }

    #[test]
    fn an_outage_drops_everything_offered_during_it() {
        let t0 = Instant::now();
        let mut link = Link::new(
            Impairment {
                delay: 10 * MS,
                ..Impairment::default()
            },
            1,
        );
        link.outages.push((t0 + 100 * MS, t0 + 300 * MS));
        let out = run(&mut link, t0, 40, 100, 10 * MS);
        let got: Vec<u64> = out.iter().map(|o| o.0).collect();
        assert_eq!(got.len(), 20);
        assert!(got.iter().all(|&p| !(10..30).contains(&p)));
        assert_eq!(link.counts.outage_dropped, 20);
    }
}
