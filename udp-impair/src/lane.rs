//! One direction of the link: the fate of each packet (lost, dropped by the cap's queue, or
//! released at a time), drawn from the direction's own generator in arrival order.

use crate::rng::Rng;
use crate::Impairment;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One direction's state: its generator, loss chain, cap queue and release order. Sans-IO:
/// the relay's thread drives it with the clock, the plugin's simulated pair with its own.
pub struct Lane {
    rng: Rng,
    bad: bool,
    /// When the capped link finishes sending what it has accepted.
    busy_until: Option<Instant>,
    /// (leaves the cap, bytes) for packets still in the cap's queue.
    in_queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    last_release: Option<Instant>,
}

impl Lane {
    /// Lane `lane` (0 or 1) of a relay seeded with `seed`: each draws its own numbers.
    pub fn new(seed: u64, lane: u64) -> Lane {
        Lane {
            rng: Rng::new(seed ^ lane.wrapping_mul(0xa076_1d64_78bd_642f)),
            bad: false,
            busy_until: None,
            in_queue: VecDeque::new(),
            queued_bytes: 0,
            last_release: None,
        }
    }

    /// Decides a packet's fate: Ok(release time) or Err(why it was dropped).
    pub fn admit(
        &mut self,
        imp: &Impairment,
        len: usize,
        now: Instant,
    ) -> Result<Instant, Dropped> {
        // Draw for loss every time, so one setting's choices do not shift another's.
        let random_loss = self.rng.chance(imp.loss);
        let burst_loss = match imp.burst {
            Some(ge) => {
                let flip = self.rng.unit();
                self.bad = if self.bad { flip >= ge.r } else { flip < ge.p };
                self.rng
                    .chance(if self.bad { ge.loss_bad } else { ge.loss_good })
            }
            None => false,
        };
        let jitter = imp.jitter.mul_f64(self.rng.unit());
        if random_loss || burst_loss {
            return Err(Dropped::Loss);
        }
        let mut leaves = now;
        if let Some(rate) = imp.rate_bps.filter(|r| *r > 0) {
            while self.in_queue.front().is_some_and(|(t, _)| *t <= now) {
                let (_, n) = self.in_queue.pop_front().unwrap_or((now, 0));
                self.queued_bytes -= n;
            }
            if self.queued_bytes + len > imp.queue_bytes.max(len) {
                return Err(Dropped::Queue);
            }
            let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
            leaves = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = Some(leaves);
            self.in_queue.push_back((leaves, len));
            self.queued_bytes += len;
        }
        let mut release = leaves + imp.delay + jitter;
        if !imp.reorder {
            if let Some(last) = self.last_release {
                release = release.max(last);
            }
        }
        self.last_release = Some(release);
        Ok(release)
    }
}

/// Why a packet did not get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Loss,
    Queue,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GilbertElliott;

    fn lane_run(imp: &Impairment, seed: u64, packets: usize) -> Vec<Result<Duration, bool>> {
        let mut lane = Lane::new(seed, 0);
        let t0 = Instant::now();
        (0..packets)
            .map(|i| {
                let now = t0 + Duration::from_micros(100 * i as u64);
                lane.admit(imp, 1000, now)
                    .map(|at| at - t0)
                    .map_err(|d| matches!(d, Dropped::Loss))
            })
            .collect()
    }

    #[test]
    fn same_seed_same_fate() {
        let imp = Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            reorder: true,
            loss: 0.05,
            ..Impairment::default()
        };
        assert_eq!(lane_run(&imp, 7, 2000), lane_run(&imp, 7, 2000));
        assert_ne!(lane_run(&imp, 7, 2000), lane_run(&imp, 8, 2000));
    }

    #[test]
    fn loss_rate_and_bursts() {
        let random = Impairment {
            loss: 0.01,
            ..Impairment::default()
        };
        let lost = lane_run(&random, 3, 100_000)
            .iter()
            .filter(|r| r.is_err())
            .count();
        assert!((800..1200).contains(&lost), "1% of 100000: {lost}");

        // Mean burst 1/r = 5 packets, about 1% of the time in Bad.
        let bursty = Impairment {
            burst: Some(GilbertElliott {
                p: 0.002,
                r: 0.2,
                loss_good: 0.0,
                loss_bad: 1.0,
            }),
            ..Impairment::default()
        };
        let fates = lane_run(&bursty, 3, 100_000);
        let lost: Vec<usize> = (0..fates.len()).filter(|&i| fates[i].is_err()).collect();
        let runs = 1 + lost.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let mean_run = lost.len() as f64 / runs as f64;
        assert!((3.5..7.0).contains(&mean_run), "mean burst {mean_run}");
    }

    #[test]
    fn jitter_without_reorder_keeps_order() {
        let imp = Impairment {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            ..Impairment::default()
        };
        let times: Vec<Duration> = lane_run(&imp, 1, 1000).into_iter().flatten().collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let reordering = Impairment {
            reorder: true,
            ..imp
        };
        let times: Vec<Duration> = lane_run(&reordering, 1, 1000)
            .into_iter()
            .flatten()
            .collect();
        assert!(times.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn cap_paces_and_its_queue_drops() {
        // 1000-byte packets every 100 us is 80 Mbit/s into an 8 Mbit/s cap: one packet per
        // ms leaves, and the 10 kB queue overflows.
        let imp = Impairment {
            rate_bps: Some(8_000_000),
            queue_bytes: 10_000,
            ..Impairment::default()
        };
        let fates = lane_run(&imp, 1, 1000);
        let sent: Vec<Duration> = fates
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let queue_drops = fates.iter().filter(|r| matches!(r, Err(false))).count();
        assert!(queue_drops > 800, "{queue_drops}");
        assert!(sent
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_micros(999)));
    }
}
