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

/// The two clocks drift apart (tens of ppm): the quickest transit is let rise this much
/// faster (100 ppm), so that over hours a drift never makes every frame look late.
const DRIFT: i128 = 10_000;

/// Judges the frames of one connection.
#[derive(Debug, Default)]
pub struct Lateness {
    /// ns; None: the sender has no budget, every frame is on time.
    budget: Option<u64>,
    /// The quickest first-byte transit, and when (our clock) it was seen.
    quickest: Option<(i128, u64)>,
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
        let aged = self
            .quickest
            .map(|(q, at)| q + i128::from(first_byte.saturating_sub(at)) / DRIFT);
        let quickest = match aged {
            Some(q) if q <= first => q,
            _ => {
                self.quickest = Some((first, first_byte));
                first
            }
        };
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

    /// Lateness in whole ms: the quickest transit ages by 100 ppm, some µs here.
    fn ms(late: Option<u64>) -> Option<u64> {
        late.map(|ns| (ns + MS / 2) / MS)
    }

    #[test]
    fn late_against_the_quickest_transit() {
        let mut l = Lateness::default();
        // One frame per case, all its bytes at once; lateness in ms.
        let frame = |l: &mut Lateness, sent: u64, arrived: u64| {
            ms(l.late_by(sent, arrived, arrived, 20 * MS))
        };
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
            Some(55)
        );
        // A big frame whose first byte came quickly and its last 190 ms later: 15 ms late.
        let first = 400 * MS + skew + 20 * MS;
        let late = l.late_by(400 * MS, first, first + 190 * MS, 20 * MS);
        assert_eq!(ms(late), Some(15));
        // A sender clock ahead of ours works the same.
        let mut l = Lateness::default();
        l.set_budget(200 * MS);
        assert_eq!(frame(&mut l, 9_000 * MS, 20 * MS), None);
        assert_eq!(frame(&mut l, 9_100 * MS, 400 * MS), Some(105));
        // Our clock runs 50 ppm fast: an hour on, a frame that took the bare path is on
        // time still, and one with 230 ms of queueing is late.
        let mut l = Lateness::default();
        l.set_budget(200 * MS);
        assert_eq!(frame(&mut l, 0, 20 * MS), None);
        let hour = 3_600_000 * MS;
        let drift = hour / 20_000;
        assert_eq!(frame(&mut l, hour, hour + drift + 20 * MS), None);
        let late = frame(&mut l, hour + MS, hour + MS + drift + 250 * MS);
        assert!(late.is_some_and(|by| by > 20 && by <= 55), "{late:?}");
    }
}
