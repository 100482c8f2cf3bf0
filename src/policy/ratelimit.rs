//! What one admitted receiver may make the sender do, per second. Each application command
//! becomes a signal and a bus message in the sending application, and each keyframe request
//! can cost every receiver a keyframe; a receiver sending them as fast as it can must not
//! flood the one or re-key the stream for everyone. What is over the limit is dropped and
//! counted in the receiver's stats.

use std::time::{Duration, Instant};

/// Application commands from one receiver: a burst of 100, then 50 a second. Commands are
/// for control (tally lights, PTZ, bitrate requests), never per-frame data.
pub const COMMANDS: Rate = Rate {
    burst: 100,
    every: Duration::from_millis(20),
};

/// Keyframe requests from one receiver: a burst of 4, then one a second. A receiver asks
/// once each time it skips a group, joins or comes back after an outage: well inside this
/// on any network the stream survives. The sink merges requests from all receivers as
/// well (`keyframe-request-interval`), so that many receivers cost no more than one.
pub const KEYFRAME_REQUESTS: Rate = Rate {
    burst: 4,
    every: Duration::from_secs(1),
};

/// INVALID_TOKEN answers from one sink (retry.rs), across all addresses: each costs the
/// sink a TLS handshake's work, so beyond this an Initial with a bad token is dropped.
pub const TOKEN_REFUSALS: Rate = Rate {
    burst: 50,
    every: Duration::from_millis(20),
};

/// A token bucket's shape: up to `burst` at once, then one per `every`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

/// A token bucket, full when made.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled: Instant,
    /// Requests refused so far.
    pub dropped: u64,
}

impl Bucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate.burst,
            refilled: now,
            dropped: 0,
        }
    }

    /// Whether one more may go now; a refusal is counted.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_nanos() / self.rate.every.as_nanos().max(1);
        if u128::from(self.tokens) + earned >= u128::from(self.rate.burst) {
            self.tokens = self.rate.burst;
            self.refilled = now;
        } else if earned > 0 {
            // Below the burst, so it fits in a u32.
            let earned = earned as u32;
            self.tokens += earned;
            // Keep the part of a period not yet earned.
            self.refilled += self.rate.every * earned;
        }
        if self.tokens == 0 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(KEYFRAME_REQUESTS, t0);
        let burst: Vec<bool> = (0..6).map(|_| b.take(t0)).collect();
        assert_eq!(burst, [true, true, true, true, false, false]);
        assert!(!b.take(t0 + ms(999)));
        assert!(b.take(t0 + ms(1000)));
        assert!(!b.take(t0 + ms(1500)));
        assert!(b.take(t0 + ms(2000)));
        assert_eq!(b.dropped, 4);
    }

    #[test]
    fn a_flood_gets_the_rate_and_no_more() {
        // A request every millisecond for 10 s.
        let t0 = Instant::now();
        let mut keyframes = Bucket::new(KEYFRAME_REQUESTS, t0);
        let mut commands = Bucket::new(COMMANDS, t0);
        let (mut k, mut c) = (0, 0);
        for i in 0..10_000 {
            let now = t0 + ms(i);
            k += u32::from(keyframes.take(now));
            c += u32::from(commands.take(now));
        }
        assert_eq!(k, 4 + 9);
        assert_eq!(c, 100 + 499);
        assert_eq!(keyframes.dropped, 10_000 - 13);
    }

    #[test]
    fn an_idle_receiver_gets_its_burst_back_and_no_more() {
        let t0 = Instant::now();
        let mut b = Bucket::new(KEYFRAME_REQUESTS, t0);
        for _ in 0..4 {
            assert!(b.take(t0));
        }
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..10).filter(|_| b.take(later)).count();
        assert_eq!(taken, 4);
    }
}
