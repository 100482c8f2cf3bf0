//! The latency budget: which one each receiver gets, and the deadlines it puts on a frame.
//!
//! As in SRT's latency negotiation, a receiver says in HELLO how much latency it has (its
//! `latency`), and unless the sender fixes one (`latency-budget`) that is its budget. So a
//! pair with every property at its default is live: frames that cannot arrive in time are
//! shed or have their group reset instead of piling up behind a slow path.

use crate::media::h265::DropCost;
use std::time::{Duration, Instant};

/// The budget of a receiver that asks for none (a peer from before HELLO carried it): the
/// default of quicnalusrc's `latency`.
pub const FALLBACK: Duration = Duration::from_millis(200);

/// Shares of the budget within which a frame must still be able to arrive, by its cost:
/// the cheap ones go while there is still time for the frames that others depend on.
const SHED_ALONE: f64 = 0.5;
const SHED_LAYERS: f64 = 0.75;

/// Where each receiver's budget comes from: quicnalusink's `latency-budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The latency the receiver asks for in HELLO, or [`FALLBACK`] (`latency-budget=-1`,
    /// the default).
    Receiver,
    /// The same for every receiver, whatever it asks (`latency-budget` > 0).
    Fixed(Duration),
    /// Frames are never dropped, however late (`latency-budget=0`).
    Never,
}

impl Policy {
    /// From the property's value in ms: -1 (or any negative), 0, or a budget.
    pub fn from_ms(ms: i32) -> Policy {
        match u64::try_from(ms) {
            Err(_) => Policy::Receiver,
            Ok(0) => Policy::Never,
            Ok(ms) => Policy::Fixed(Duration::from_millis(ms)),
        }
    }

    /// The budget of a receiver that asked for `asked` (None or zero: it said nothing).
    pub fn for_receiver(self, asked: Option<Duration>) -> Option<Duration> {
        match self {
            Policy::Receiver => Some(asked.filter(|a| !a.is_zero()).unwrap_or(FALLBACK)),
            Policy::Fixed(budget) => Some(budget),
            Policy::Never => None,
        }
    }
}

/// When a frame queued at `queued` stops being worth sending under `budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// It must arrive by then: a frame others depend on, still unsent a round trip
    /// before, has its group reset.
    pub expires: Instant,
    /// A frame that can go alone (or with its sub-layers) is shed if still unsent by then;
    /// for one whose loss costs the group, `queued` (its group expires instead).
    pub shed_by: Instant,
}

impl Deadlines {
    pub fn new(queued: Instant, budget: Duration, cost: DropCost) -> Deadlines {
        let shed_by = match cost {
            DropCost::Alone => queued + budget.mul_f64(SHED_ALONE),
            DropCost::Layers { .. } => queued + budget.mul_f64(SHED_LAYERS),
            DropCost::Group => queued,
        };
        Deadlines {
            expires: queued + budget,
            shed_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_receiver_sets_its_budget_unless_the_sender_fixes_one() {
        let receiver = Policy::from_ms(-1);
        assert_eq!(receiver, Policy::Receiver);
        assert_eq!(receiver.for_receiver(Some(120 * MS)), Some(120 * MS));
        assert_eq!(receiver.for_receiver(Some(2000 * MS)), Some(2000 * MS));
        // A receiver that says nothing is still live.
        assert_eq!(receiver.for_receiver(None), Some(FALLBACK));
        assert_eq!(receiver.for_receiver(Some(Duration::ZERO)), Some(FALLBACK));
        let fixed = Policy::from_ms(300);
        assert_eq!(fixed.for_receiver(Some(120 * MS)), Some(300 * MS));
        assert_eq!(fixed.for_receiver(None), Some(300 * MS));
        let never = Policy::from_ms(0);
        assert_eq!(never.for_receiver(Some(120 * MS)), None);
    }

    #[test]
    fn cheap_frames_are_shed_sooner() {
        let t0 = Instant::now();
        let budget = 200 * MS;
        let alone = Deadlines::new(t0, budget, DropCost::Alone);
        assert_eq!((alone.expires, alone.shed_by), (t0 + budget, t0 + 100 * MS));
        let layers = Deadlines::new(t0, budget, DropCost::Layers { from: 1 });
        assert_eq!(layers.shed_by, t0 + 150 * MS);
        let group = Deadlines::new(t0, budget, DropCost::Group);
        assert_eq!((group.expires, group.shed_by), (t0 + budget, t0));
    }
}
