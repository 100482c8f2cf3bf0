//! The receiver's side of the latency budget: which frames arrived too late to output.
//!
//! The sender announces its budget (LATENCY_BUDGET) and stamps each frame with its own
//! CLOCK_MONOTONIC. The two clocks are unrelated, so a frame's transit (arrival less send
//! time, in mixed clocks) is compared with the quickest transit seen on this connection,
//! which took the path's one-way delay, taken as half the minimum RTT.

/// Judges the frames of one connection.
#[derive(Debug, Default)]
pub struct Lateness {
    /// ns; None: the sender has no budget, every frame is on time.
    budget: Option<u64>,
    quickest: Option<i128>,
}

impl Lateness {
    /// The sender's budget in ns; 0 means none.
    pub fn set_budget(&mut self, ns: u64) {
        self.budget = (ns > 0).then_some(ns);
    }

    /// How much later than the budget a frame sent at `send_time` (sender's clock) and
    /// arrived at `arrival` (ours) is, in ns; None when on time. `one_way` is the path's
    /// one-way delay without queueing.
    pub fn late_by(&mut self, send_time: u64, arrival: u64, one_way: u64) -> Option<u64> {
        let budget = self.budget?;
        let transit = i128::from(arrival) - i128::from(send_time);
        let quickest = self.quickest.map_or(transit, |q| q.min(transit));
        self.quickest = Some(quickest);
        let delay = transit - quickest + i128::from(one_way);
        u64::try_from(delay - i128::from(budget))
            .ok()
            .filter(|&late| late > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn late_against_the_quickest_transit() {
        let mut l = Lateness::default();
        // No budget: nothing is late.
        assert_eq!(l.late_by(0, 10_000 * MS, 20 * MS), None);
        l.set_budget(200 * MS);
        // The sender's clock runs 5 s behind ours; the first frame took the bare path.
        let skew = 5_000 * MS;
        assert_eq!(
            l.late_by(100 * MS, 100 * MS + skew + 20 * MS, 20 * MS),
            None
        );
        // 150 ms of queueing: 170 ms in all, on time.
        assert_eq!(
            l.late_by(200 * MS, 200 * MS + skew + 170 * MS, 20 * MS),
            None
        );
        // 230 ms of queueing: 250 ms in all, 50 ms late.
        assert_eq!(
            l.late_by(300 * MS, 300 * MS + skew + 250 * MS, 20 * MS),
            Some(50 * MS)
        );
        // A sender clock ahead of ours works the same.
        let mut l = Lateness::default();
        l.set_budget(200 * MS);
        assert_eq!(l.late_by(9_000 * MS, 20 * MS, 20 * MS), None);
        assert_eq!(l.late_by(9_100 * MS, 400 * MS, 20 * MS), Some(100 * MS));
    }
}
