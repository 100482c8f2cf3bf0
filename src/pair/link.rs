//! A seeded model of one direction of a network path, on the simulated clock: one-way
//! delay, jitter (with or without reordering), random loss, Gilbert-Elliott burst loss,
//! outages, and a rate cap with a bounded bottleneck queue. The relay's own model of
//! each packet's fate (udp-impair's `Lane`), made in the order packets are offered, so a seed and a
//! packet sequence always get the same treatment.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};
use udp_impair::{Dropped, Lane};

pub use udp_impair::{GilbertElliott, Impairment, Rng};

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
    /// The relay's model of each packet's fate, on the simulated clock.
    lane: Lane,
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
            // As the pair's own generator was seeded before it used the relay's model.
            lane: Lane::new(seed ^ 0x5851_f42d_4c95_7f2d, 0),
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

    /// Decides a packet's fate: its arrival time, or None when it is dropped. The model
    /// draws for every packet, so an outage does not shift the draws of those after it.
    fn admit(&mut self, len: usize, now: Instant) -> Option<Instant> {
        let fate = self.lane.admit(&self.imp, len, now);
        if self.outages.iter().any(|&(s, e)| now >= s && now < e) {
            self.counts.outage_dropped += 1;
            return None;
        }
        match fate {
            Ok(at) => Some(at),
            Err(Dropped::Loss) => {
                self.counts.lost += 1;
                None
            }
            Err(Dropped::Queue) => {
                self.counts.queue_dropped += 1;
                None
            }
        }
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
