//! The receiver's side of the latency budget: which frames arrived too late to output.
//!
//! The sender announces its budget (LATENCY_BUDGET) and stamps each frame with its own
//! CLOCK_MONOTONIC. The two clocks are unrelated, so a frame's transit (arrival of its last
//! byte less its send time, in mixed clocks) is compared with the quickest seen on this
//! connection for a frame's first byte, which took the path's one-way delay, taken as half
//! the minimum RTT. (A whole frame's quickest transit would also hold the time its bytes
//! take to cross the slowest link, and hide that much lateness.)
//!
//! A late frame is not always worth dropping. One that waited for a repaired packet is
//! late by a round trip or two, and the frames queued behind it, sent later, are often on
//! time again: dropping it (and every frame that references it, to the next keyframe)
//! would lose them too. So a late reference frame is held, and output (flagged late) just
//! before the first later frame of its group that arrives on time; frames late for
//! queueing, each later than the one before, are never output. Once frames have been late
//! for longer than a quarter of the budget, or one is late by more than the budget, the
//! path is behind, not repairing, and the group goes.
//!
//! A group the sender announced as late (LATE_GROUP: its keyframe could not cross within
//! the budget, and a late picture beats none) is output as it arrives, flagged late, while
//! its frames are no later than the allowance it gave.

/// What the receiver allows for handing a frame on after its last byte arrived (to the
/// streaming thread, then downstream): a frame is late that much before the budget ends.
const HANDOFF: u64 = 5_000_000;

/// The two clocks drift apart (tens of ppm): the quickest transit is let rise this much
/// faster (100 ppm), so that over hours a drift never makes every frame look late.
const DRIFT: i128 = 10_000;

/// What becomes of a frame that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    OnTime,
    /// Late, but later frames reference it and may be on time: hold it, to output it
    /// (flagged late) before the first of them that is.
    Late,
    /// Late, and nothing references it: drop it alone.
    Drop,
    /// Late, but within its group's LATE_GROUP allowance: output it now, flagged late.
    LateGroup,
    /// Late for too long, or by too much: drop it with the rest of its group.
    Abandon,
}

/// When one frame's bytes came, on two clocks: `send_time` on the sender's, `first_byte`
/// and `arrival` (its last byte) on ours; `one_way`: the path's one-way delay without
/// queueing. All ns.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub send_time: u64,
    pub first_byte: u64,
    pub arrival: u64,
    pub one_way: u64,
}

/// Frames late in a row for longer than budget / this are behind, not repairing. A repair
/// brings the frames held up behind it in one burst, then timely ones; frames late for
/// queueing come one frame interval apart. (A quarter of 200 ms: two frames at 30 fps.)
const LATE_STREAK_SHARE: u64 = 4;

/// Judges the frames of one connection.
#[derive(Debug, Default)]
pub struct Lateness {
    /// ns; None: the sender has no budget, every frame is on time.
    budget: Option<u64>,
    /// The quickest first-byte transit, and when (our clock) it was seen.
    quickest: Option<(i128, u64)>,
    /// When the first of the frames late in a row arrived (our clock, ns).
    late_since: Option<u64>,
}

impl Lateness {
    /// The sender's budget in ns; 0 means none.
    pub fn set_budget(&mut self, ns: u64) {
        self.budget = (ns > 0).then_some(ns);
    }

    /// What to do with a frame that arrived at `times`; `allowance`: how far past the
    /// budget its group may be (ns, LATE_GROUP; 0 for most); `alone`: no other frame
    /// references it. See [`Lateness::late_by`].
    pub fn judge(
        &mut self,
        times: Arrival,
        allowance: u64,
        alone: impl FnOnce() -> bool,
    ) -> Verdict {
        let Some(by) = self.late_by(times) else {
            self.late_since = None;
            return Verdict::OnTime;
        };
        if by <= allowance {
            self.late_since = None;
            return Verdict::LateGroup;
        }
        let budget = self.budget.unwrap_or(0);
        let since = *self.late_since.get_or_insert(times.arrival);
        if alone() {
            Verdict::Drop
        } else if by > budget || times.arrival.saturating_sub(since) > budget / LATE_STREAK_SHARE {
            self.late_since = None;
            Verdict::Abandon
        } else {
            Verdict::Late
        }
    }

    /// How much later than the budget a frame that arrived at `times` is, in ns; None when
    /// on time.
    pub fn late_by(&mut self, times: Arrival) -> Option<u64> {
        let Arrival {
            send_time,
            first_byte,
            arrival,
            one_way,
        } = times;
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

/// A group's late reference frames (Verdict::Late), held until a later frame of the group
/// is on time and needs them, with their bytes.
#[derive(Debug)]
pub struct Held<T> {
    frames: Vec<T>,
    bytes: usize,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            frames: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Held<T> {
    pub fn hold(&mut self, frame: T, bytes: usize) {
        self.frames.push(frame);
        self.bytes += bytes;
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// A later frame is on time: the held ones go out before it, oldest first.
    pub fn release(&mut self) -> impl Iterator<Item = T> + '_ {
        self.bytes = 0;
        self.frames.drain(..)
    }

    /// No later frame came on time (the group ended or was abandoned): they are dropped.
    /// Returns how many, and their bytes.
    pub fn discard(&mut self) -> (usize, usize) {
        let dropped = (self.frames.len(), self.bytes);
        self.frames.clear();
        self.bytes = 0;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn held_frames_are_released_in_order_or_discarded() {
        let mut held = Held::default();
        held.hold("a", 3);
        held.hold("b", 4);
        assert_eq!(held.len(), 2);
        assert_eq!(held.release().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(held.discard(), (0, 0));
        held.hold("c", 5);
        assert_eq!(held.discard(), (1, 5));
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn late_reference_frames_pass_while_they_look_like_a_repair() {
        let mut l = Lateness::default();
        l.set_budget(200 * MS);
        // Frames every 33 ms over a 20 ms path; `delay`: queueing on top of it (ms).
        let mut judge = |n: u64, delay: u64, alone: bool| {
            let sent = n * 33 * MS;
            let arrived = sent + 20 * MS + delay * MS;
            l.judge(at(sent, arrived, 20 * MS), 0, || alone)
        };
        assert_eq!(judge(0, 0, false), Verdict::OnTime);
        // A lost packet repaired twice holds frame 1 back 250 ms, and frame 2 (sent 33 ms
        // later) behind it: both late, both output; frame 3 is on time again.
        assert_eq!(judge(1, 250, false), Verdict::Late);
        assert_eq!(judge(2, 217, false), Verdict::Late);
        // A late frame nothing references goes alone.
        assert_eq!(judge(3, 190, true), Verdict::Drop);
        assert_eq!(judge(4, 100, false), Verdict::OnTime);
        // Late by more than the budget: far behind, the group goes.
        assert_eq!(judge(5, 420, false), Verdict::Abandon);
        // A standing backlog: late frames for longer than a quarter of the budget.
        let verdicts: Vec<Verdict> = (6..16).map(|n| judge(n, 300, false)).collect();
        assert_eq!(verdicts[..2], [Verdict::Late; 2]);
        assert_eq!(verdicts[2], Verdict::Abandon);
        // No budget: all on time.
        let mut l = Lateness::default();
        assert_eq!(l.judge(at(0, 10_000 * MS, 0), 0, || false), Verdict::OnTime);
    }

    /// A frame sent at `sent` whose bytes all came at `arrived`.
    fn at(sent: u64, arrived: u64, one_way: u64) -> Arrival {
        Arrival {
            send_time: sent,
            first_byte: arrived,
            arrival: arrived,
            one_way,
        }
    }

    #[test]
    fn a_late_group_is_output_within_its_allowance() {
        let mut l = Lateness::default();
        l.set_budget(120 * MS);
        let one_way = 20 * MS;
        assert_eq!(
            l.judge(at(0, 20 * MS, one_way), 0, || false),
            Verdict::OnTime
        );
        // A keyframe 300 ms late, of a group the sender said runs up to 1 s late, and the
        // frames behind it, each later than the one before: all output.
        let allowance = 1_000 * MS;
        for n in 0..20 {
            let sent = 33 * MS * (n + 1);
            let arrived = sent + one_way + 420 * MS + n * 20 * MS;
            let v = l.judge(at(sent, arrived, one_way), allowance, || false);
            assert_eq!(v, Verdict::LateGroup, "frame {n}");
        }
        // Past the allowance the group goes, as any group late by more than the budget.
        let v = l.judge(at(2_000 * MS, 3_300 * MS, one_way), allowance, || false);
        assert_eq!(v, Verdict::Abandon);
    }

    /// Lateness in whole ms: the quickest transit ages by 100 ppm, some µs here.
    fn ms(late: Option<u64>) -> Option<u64> {
        late.map(|ns| (ns + MS / 2) / MS)
    }

    #[test]
    fn late_against_the_quickest_transit() {
        let mut l = Lateness::default();
        // One frame per case, all its bytes at once; lateness in ms.
        let frame =
            |l: &mut Lateness, sent: u64, arrived: u64| ms(l.late_by(at(sent, arrived, 20 * MS)));
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
        let late = l.late_by(Arrival {
            first_byte: first,
            ..at(400 * MS, first + 190 * MS, 20 * MS)
        });
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
