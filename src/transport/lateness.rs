//! The receiver's side of the latency budget: which frames arrived too late to output.
//!
//! The sender announces its budget (LATENCY_BUDGET) and stamps each frame with its own
//! CLOCK_MONOTONIC. The two clocks are unrelated, so a frame's transit (arrival of its last
//! byte less its send time, in mixed clocks) is compared with the quickest seen on this
//! connection for a frame's first byte, which took the path's one-way delay, taken as half
//! the minimum RTT. (A whole frame's quickest transit would also hold the time its bytes
//! take to cross the slowest link, and hide that much lateness.)

/// What the receiver allows for handing a frame on after its last byte arrived (to the
/// streaming thread, then downstream): a frame is late that much before the budget ends.
const HANDOFF: u64 = 5_000_000;

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

    /// How much later than the budget a frame sent at `send_time` (sender's clock), whose
    /// first bytes arrived at `first_byte` and last at `arrival` (ours), is, in ns; None
    /// when on time. `one_way` is the path's one-way delay without queueing.
    pub fn late_by(
        &mut self,
        send_time: u64,
        first_byte: u64,
        arrival: u64,
        one_way: u64,
    ) -> Option<u64> {
        let budget = self.budget?;
        let first = i128::from(first_byte) - i128::from(send_time);
        let quickest = self.quickest.map_or(first, |q| q.min(first));
        self.quickest = Some(quickest);
        let transit = i128::from(arrival) - i128::from(send_time);
        let delay = transit - quickest + i128::from(one_way + HANDOFF);
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
        // One frame per case, all its bytes at once.
        let frame =
            |l: &mut Lateness, sent: u64, arrived: u64| l.late_by(sent, arrived, arrived, 20 * MS);
        // No budget: nothing is late.
        assert_eq!(frame(&mut l, 0, 10_000 * MS), None);
        l.set_budget(200 * MS);
        // The sender's clock runs 5 s behind ours; the first frame took the bare path.
        let skew = 5_000 * MS;
        assert_eq!(frame(&mut l, 100 * MS, 100 * MS + skew + 20 * MS), None);
        // 150 ms of queueing: 170 ms in all, on time even with the hand-off.
        assert_eq!(frame(&mut l, 200 * MS, 200 * MS + skew + 170 * MS), None);
        // 230 ms of queueing: 250 ms in all, and the hand-off: 55 ms late.
        assert_eq!(
            frame(&mut l, 300 * MS, 300 * MS + skew + 250 * MS),
            Some(55 * MS)
        );
        // A big frame whose first byte came quickly and its last 190 ms later: 15 ms late.
        let first = 400 * MS + skew + 20 * MS;
        assert_eq!(
            l.late_by(400 * MS, first, first + 190 * MS, 20 * MS),
            Some(15 * MS)
        );
        // A sender clock ahead of ours works the same.
        let mut l = Lateness::default();
        l.set_budget(200 * MS);
        assert_eq!(frame(&mut l, 9_000 * MS, 20 * MS), None);
        assert_eq!(frame(&mut l, 9_100 * MS, 400 * MS), Some(105 * MS));
    }
}
