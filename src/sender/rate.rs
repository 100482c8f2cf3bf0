//! What one receiver's path carries: the estimate quicnalusink steers its encoder by.
//!
//! Every [`UPDATE`] the networking thread samples each receiver: the bytes quiche got
//! through (sent less lost), its smoothed RTT against the minimum, the bytes still waiting
//! in our queue, and the groups it had to expire. Overuse (a queue building here or in the
//! network, or frames dropped) sets the estimate just under what got through and remembers
//! that rate as a ceiling. Otherwise the estimate grows a few percent per update, never
//! beyond half again what has been seen to go through; near the ceiling it creeps, and it
//! passes the ceiling only after a calm spell, so an encoder following it settles under the
//! path's rate instead of bouncing off it.
//!
//! What went out is only what the stream gave while it runs under the path: an IRAP
//! queueing for 150 ms reads as overuse, and backing off from a stream already steered
//! down walks the encoder to half the path (issue 31: 1.3-1.6 Mbit/s on a 3 Mbit/s link).
//! So the path's own rate is tracked too, as BBR does: the highest delivery rate quiche
//! measured over the last [`PATH_WINDOW`] while we had more to send than it took. Overuse
//! backs off from the larger of what went out and that rate since the last update, and
//! growth stops at the path's rate.

use std::time::{Duration, Instant};

/// How often each receiver's estimate is updated.
pub const UPDATE: Duration = Duration::from_millis(500);
/// After overuse: this share of what went out.
const BACK_OFF: f64 = 0.85;
/// Growth per update without overuse.
const GROWTH: f64 = 1.08;
/// The estimate never exceeds what went out by more than this factor.
const HEADROOM: f64 = 1.5;
/// Queueing in the network (smoothed RTT over the minimum) that counts as overuse.
const RTT_RISE: Duration = Duration::from_millis(30);
/// Time our own queue for a receiver would take to drain that counts as overuse.
const QUEUE_DELAY: Duration = Duration::from_millis(50);
/// No path is estimated below this (bit/s): below it the sample carries no information.
const FLOOR: f64 = 100_000.0;
/// Within this share of the ceiling the estimate only creeps.
const NEAR_CEILING: f64 = 0.95;
/// Growth per update near the ceiling.
const CREEP: f64 = 1.01;
/// Updates without overuse near the ceiling before it is raised.
const CALM_UPDATES: u32 = 4;
/// How much the ceiling is raised after a calm spell.
const CEILING_STEP: f64 = 1.1;
/// How long a busy delivery-rate sample speaks for the path: long enough to span a
/// group's keyframe burst or two, short enough to follow a path that slows down.
const PATH_WINDOW: Duration = Duration::from_secs(1);

/// One receiver's counters at an update.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Bytes quiche has sent on the connection so far.
    pub sent_bytes: u64,
    /// Of which lost.
    pub lost_bytes: u64,
    pub rtt: Duration,
    pub min_rtt: Duration,
    /// Bytes waiting in our queue for this receiver.
    pub queued_bytes: usize,
    /// Groups expired for this receiver so far.
    pub expired: u64,
}

#[derive(Debug, Default)]
pub struct Estimator {
    estimate: Option<f64>,
    last: Option<(Instant, Sample)>,
    /// What got through when overuse was last seen.
    ceiling: Option<f64>,
    /// Updates without overuse since the estimate reached the ceiling.
    calm: u32,
    /// Busy delivery-rate samples (when, bit/s) within PATH_WINDOW, each larger than any
    /// after it (a monotonic queue: the front is the window's maximum).
    path: std::collections::VecDeque<(Instant, f64)>,
}

impl Estimator {
    /// quiche measured `delivery_rate` (bytes/s) while we had more to send than it took:
    /// a sample of the path's rate.
    pub fn busy(&mut self, now: Instant, delivery_rate: u64) {
        let bps = delivery_rate as f64 * 8.0;
        while self.path.back().is_some_and(|&(_, r)| r <= bps) {
            self.path.pop_back();
        }
        self.path.push_back((now, bps));
    }

    /// The last estimate, bit/s.
    pub fn current(&self) -> Option<f64> {
        self.estimate
    }

    /// The path has shown its limit (overuse was seen): until then the estimate is only
    /// what the stream gave, and says nothing about how much more the path would carry.
    pub fn limited(&self) -> bool {
        self.ceiling.is_some()
    }

    /// The path's rate (bit/s): the highest busy sample within PATH_WINDOW.
    pub fn path_rate(&mut self, now: Instant) -> Option<f64> {
        while self
            .path
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > PATH_WINDOW)
        {
            self.path.pop_front();
        }
        self.path.front().map(|&(_, r)| r)
    }

    /// Takes this update's sample; returns the estimate in bit/s once there is one.
    pub fn update(&mut self, now: Instant, sample: Sample) -> Option<f64> {
        let (then, before) = self.last.replace((now, sample))?;
        let elapsed = now.duration_since(then).as_secs_f64();
        if elapsed <= 0.0 {
            return self.estimate;
        }
        let through = |s: &Sample| s.sent_bytes.saturating_sub(s.lost_bytes);
        let sent = through(&sample).saturating_sub(through(&before)) as f64 * 8.0 / elapsed;
        let queue_delay = if sent > 0.0 {
            Duration::from_secs_f64((sample.queued_bytes as f64 * 8.0 / sent).min(60.0))
        } else if sample.queued_bytes > 0 {
            Duration::MAX
        } else {
            Duration::ZERO
        };
        let overuse = sample.expired > before.expired
            || queue_delay > QUEUE_DELAY
            || sample.rtt.saturating_sub(sample.min_rtt) > RTT_RISE;
        let path = self.path_rate(now);
        // Since the last update only: a path that just slowed down (a cap from 6 to 2
        // Mbit/s) must not be backed off from at its old rate. (The queue keeps samples
        // newest last, each smaller than those before it: the first since `then` is their
        // maximum.)
        let recent = (self.path.iter())
            .find(|&&(t, _)| t >= then)
            .map(|&(_, r)| r);
        let next = match (self.estimate, self.ceiling) {
            _ if overuse => {
                let carried = sent.max(recent.unwrap_or(0.0));
                self.ceiling = Some(carried.max(FLOOR));
                self.calm = 0;
                carried * BACK_OFF
            }
            (None, _) => sent,
            (Some(e), Some(c)) if e >= c * NEAR_CEILING => {
                self.calm += 1;
                if self.calm >= CALM_UPDATES {
                    self.ceiling = Some(c * CEILING_STEP);
                    self.calm = 0;
                }
                (e * CREEP).min(self.ceiling.unwrap_or(c))
            }
            (Some(e), ceiling) => {
                let grown = (e * GROWTH).min((sent * HEADROOM).max(e));
                ceiling.map_or(grown, |c| grown.min(c))
            }
        };
        let next = path.map_or(next, |p| next.min(p.max(sent)));
        self.estimate = Some(next.max(FLOOR));
        self.estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_bytes: u64, rtt_ms: u64, queued_bytes: usize, expired: u64) -> Sample {
        Sample {
            sent_bytes,
            lost_bytes: 0,
            rtt: Duration::from_millis(rtt_ms),
            min_rtt: Duration::from_millis(10),
            queued_bytes,
            expired,
        }
    }

    /// Feeds one sample per UPDATE, each sending `rate` bit/s more.
    fn run(e: &mut Estimator, t: &mut Instant, bytes: &mut u64, rate: f64, s: Sample) -> f64 {
        *t += UPDATE;
        *bytes += (rate * UPDATE.as_secs_f64() / 8.0) as u64;
        e.update(
            *t,
            Sample {
                sent_bytes: *bytes,
                ..s
            },
        )
        .expect("an estimate after the first sample")
    }

    #[test]
    fn overuse_backs_off_under_what_went_out() {
        let (mut e, mut t, mut bytes) = (Estimator::default(), Instant::now(), 0);
        assert_eq!(e.update(t, sample(0, 10, 0, 0)), None);
        let first = run(&mut e, &mut t, &mut bytes, 3e6, sample(0, 12, 0, 0));
        assert!((first - 3e6).abs() < 1e4, "{first}");
        // Network queueing: RTT 50 ms over a 10 ms minimum.
        let backed = run(&mut e, &mut t, &mut bytes, 3e6, sample(0, 50, 0, 0));
        assert!((backed - 3e6 * BACK_OFF).abs() < 1e4, "{backed}");
        // Our own queue: 1 s worth at 3 Mbit/s.
        let queued = run(&mut e, &mut t, &mut bytes, 3e6, sample(0, 12, 375_000, 0));
        assert!((queued - 3e6 * BACK_OFF).abs() < 1e4, "{queued}");
        // A group expired.
        let expired = run(&mut e, &mut t, &mut bytes, 3e6, sample(0, 12, 0, 1));
        assert!((expired - 3e6 * BACK_OFF).abs() < 1e4, "{expired}");
    }

    #[test]
    fn grows_gently_and_only_near_what_goes_through() {
        let (mut e, mut t, mut bytes) = (Estimator::default(), Instant::now(), 0);
        e.update(t, sample(0, 10, 0, 0));
        let mut last = run(&mut e, &mut t, &mut bytes, 2e6, sample(0, 10, 0, 0));
        for _ in 0..8 {
            let next = run(&mut e, &mut t, &mut bytes, 2e6, sample(0, 10, 0, 0));
            assert!(next <= last * GROWTH + 1.0, "{next} after {last}");
            assert!(next <= 2e6 * HEADROOM + 1.0, "{next} beyond the headroom");
            last = next;
        }
        assert!((last - 2e6 * HEADROOM).abs() < 1e4, "{last}");
    }

    #[test]
    fn after_overuse_it_stays_under_the_ceiling_until_a_calm_spell() {
        let (mut e, mut t, mut bytes) = (Estimator::default(), Instant::now(), 0);
        e.update(t, sample(0, 10, 0, 0));
        run(&mut e, &mut t, &mut bytes, 3e6, sample(0, 10, 0, 0));
        // Overuse while 3 Mbit/s got through: 3 Mbit/s is the ceiling.
        run(&mut e, &mut t, &mut bytes, 3e6, sample(0, 60, 0, 0));
        let mut rates = Vec::new();
        for _ in 0..CALM_UPDATES + 5 {
            let rate = *rates.last().unwrap_or(&(3e6 * BACK_OFF));
            rates.push(run(&mut e, &mut t, &mut bytes, rate, sample(0, 10, 0, 0)));
        }
        let first_calm = rates
            .iter()
            .position(|&r| r >= 3e6 * NEAR_CEILING)
            .expect("reaches the ceiling");
        assert!(
            rates[..first_calm + CALM_UPDATES as usize - 1]
                .iter()
                .all(|&r| r <= 3e6 + 1.0),
            "{rates:?}"
        );
        assert!(
            rates.last().unwrap() > &3e6,
            "the ceiling rises after a calm spell"
        );
    }

    #[test]
    fn lost_bytes_did_not_get_through() {
        let (mut e, mut t) = (Estimator::default(), Instant::now());
        e.update(t, sample(0, 10, 0, 0));
        t += UPDATE;
        // 250 kB sent in 500 ms, 125 kB of it lost: 2 Mbit/s got through.
        let got = e.update(
            t,
            Sample {
                lost_bytes: 125_000,
                ..sample(250_000, 10, 0, 0)
            },
        );
        assert_eq!(got, Some(2e6));
    }

    #[test]
    fn a_stalled_queue_is_overuse() {
        let (mut e, mut t) = (Estimator::default(), Instant::now());
        e.update(t, sample(1000, 10, 0, 0));
        t += UPDATE;
        // Nothing went out while bytes wait: the floor, not a division by zero.
        assert_eq!(e.update(t, sample(1000, 10, 5000, 0)), Some(FLOOR));
    }
}
