//! Bonded routes (HELLO_BONDED): how each access unit is split over one receiver's routes.
//! Each route gets a share in proportion to its rate, after what it already has queued,
//! so that every part arrives about together (water filling): a route that slows down
//! builds a queue, and so gets less of the next access unit.

use crate::protocol::FrameHeader;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long, and how many bytes of, access units are kept for REPAIR_REQUEST: past the
/// longest budget a repair could still meet.
const KEEP_FOR: Duration = Duration::from_secs(1);
const KEEP_BYTES: usize = 8 << 20;

/// One bonded receiver's latest access units, as they were cut into parts.
#[derive(Default)]
pub struct Recent {
    frames: VecDeque<(FrameHeader, Arc<[u8]>, Instant)>,
    bytes: usize,
}

impl Recent {
    /// Keeps `whole`, frame `header`'s bytes, queued at `at`; forgets what is too old.
    pub fn keep(&mut self, header: FrameHeader, whole: Arc<[u8]>, at: Instant) {
        self.bytes += whole.len();
        self.frames.push_back((header, whole, at));
        while let Some((_, old, t)) = self.frames.front() {
            if self.bytes <= KEEP_BYTES && at.saturating_duration_since(*t) <= KEEP_FOR {
                break;
            }
            self.bytes -= old.len();
            self.frames.pop_front();
        }
    }

    /// Frame `seq`, if it is still kept.
    pub fn find(&self, seq: u64) -> Option<(FrameHeader, Arc<[u8]>)> {
        self.frames
            .iter()
            .find(|(h, ..)| h.seq == seq)
            .map(|(h, w, _)| (*h, w.clone()))
    }
}

/// Parts smaller than this go to the other routes: a tiny part on a slow route only adds
/// that route's delay to the whole access unit.
pub const MIN_PART: usize = 1200;

/// What one route has ahead of it.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Bytes queued for it and not yet taken by its connection.
    pub queued: usize,
    /// What it carries, bytes per second (0: nothing known).
    pub rate: f64,
}

/// The bytes of a `size`-byte access unit for each route, in order, summing to `size`:
/// every route with a share is done with its queue and its share at the same moment.
/// Routes with no rate get nothing while another has one.
pub fn split(size: usize, loads: &[Load]) -> Vec<usize> {
    let mut shares = vec![0; loads.len()];
    if loads.is_empty() {
        return shares;
    }
    let known = loads.iter().any(|l| l.rate > 0.0);
    let rate = |l: &Load| if known { l.rate } else { 1.0 };
    let mut active: Vec<usize> = (0..loads.len())
        .filter(|&i| rate(&loads[i]) > 0.0)
        .collect();
    loop {
        // When each route's queue is drained, earliest first.
        let drained = |i: usize| loads[i].queued as f64 / rate(&loads[i]);
        active.sort_by(|&a, &b| drained(a).total_cmp(&drained(b)));
        // The moment every route among the first k is done, for the smallest k for which
        // it comes before the next route's queue drains.
        let (mut sum_rate, mut sum_queued) = (0.0, 0.0);
        let mut until = 0.0;
        let mut taking = active.len();
        for (k, &i) in active.iter().enumerate() {
            sum_rate += rate(&loads[i]);
            sum_queued += drained(i) * rate(&loads[i]);
            until = (size as f64 + sum_queued) / sum_rate;
            if active.get(k + 1).is_none_or(|&next| until <= drained(next)) {
                taking = k + 1;
                break;
            }
        }
        shares.iter_mut().for_each(|s| *s = 0);
        let mut given = 0;
        for &i in &active[..taking] {
            let share = ((until - drained(i)) * rate(&loads[i])).max(0.0) as usize;
            shares[i] = share.min(size - given);
            given += shares[i];
        }
        // Rounding: the rest to the route that drains first.
        shares[active[0]] += size - given;
        let tiny = active[..taking]
            .iter()
            .copied()
            .filter(|&i| shares[i] < MIN_PART)
            .min_by_key(|&i| (shares[i], std::cmp::Reverse(i)));
        match tiny {
            Some(i) if taking > 1 => active.retain(|&a| a != i),
            _ => return shares,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(queued: usize, rate: f64) -> Load {
        Load { queued, rate }
    }

    #[test]
    fn equal_idle_routes_take_halves() {
        assert_eq!(split(10_000, &[load(0, 1e5), load(0, 1e5)]), [5_000, 5_000]);
    }

    #[test]
    fn shares_follow_the_rate_and_what_is_queued() {
        // Twice the rate: twice the bytes.
        let s = split(30_000, &[load(0, 2e5), load(0, 1e5)]);
        assert_eq!(s, [20_000, 10_000]);
        // A route with 10 kB queued at 100 kB/s is busy for 100 ms: the other takes it all
        // while that is more than the access unit needs there.
        let s = split(5_000, &[load(10_000, 1e5), load(0, 1e5)]);
        assert_eq!(s, [0, 5_000]);
        // Past it, both finish together: 10 + a = b at the same rate, a + b = 30 kB.
        let s = split(30_000, &[load(10_000, 1e5), load(0, 1e5)]);
        assert_eq!(s, [10_000, 20_000]);
    }

    #[test]
    fn tiny_parts_are_not_made_and_unknown_routes_share_alike() {
        assert_eq!(split(2_000, &[load(0, 1e5), load(0, 1e5)]), [2_000, 0]);
        assert_eq!(
            split(9_000, &[load(0, 0.0), load(0, 0.0), load(0, 0.0)]),
            [3_000; 3]
        );
        // A route with no rate gets nothing while another has one.
        assert_eq!(split(9_000, &[load(0, 0.0), load(0, 1e5)]), [0, 9_000]);
        assert_eq!(split(0, &[load(0, 1e5)]), [0]);
    }
}
