//! Steering an upstream encoder's bitrate to what the receivers' paths carry
//! (quicnalusink's `adapt-bitrate`), as webrtcsink does for WebRTC. The sender's core gives
//! an estimate every rate::UPDATE (the slowest receiver's, rate.rs); this turns it into the
//! encoder's next bitrate, and says when a keyframe should follow a change: an encoder
//! steered down keeps sending pictures the size of the old rate until its next IRAP, and
//! that IRAP is the largest of them all unless it comes at the new rate.
//!
//! The encoder's share of the estimate also leaves room for its keyframes: one four times
//! a P picture takes 100 ms to cross a link it fills to 80%, most of a 120 ms budget. Each
//! group the sender had to send late (its keyframe could not be on time, rescue.rs) takes
//! the share down a step, and a calm spell gives it back a little at a time, so that it
//! settles where keyframes just fit. (In the pair, 4 Mbit/s over a link at 90, 75 and
//! 50% of it, latency 120: a fixed share of 92% had 61-66% of frames on time, 80% had
//! 86%, 70% had 89%.)

use super::Estimate;

/// The encoder's largest share of the estimate: the rest is for QUIC and framing overhead
/// and repairs, which the estimate (bytes on the wire) includes.
const ENCODER_SHARE: f64 = 0.92;
/// Its smallest share, however late keyframes are: below it the picture suffers more than
/// a late keyframe costs.
const MIN_SHARE: f64 = 0.7;
/// The share after a late group, of what it was.
const LATE_STEP: f64 = 0.92;
/// Estimates without a late group before the share grows back, and by how much.
const CALM: u32 = 8;
const GROW_BACK: f64 = 0.02;
/// Largest step up per estimate (every 500 ms): +15%. Steps down are taken at once.
const MAX_STEP_UP: f64 = 1.15;
/// Changes smaller than this are not worth an encoder reconfiguration.
const MIN_CHANGE: f64 = 0.03;
/// A step down to this share of the bitrate or less asks for a keyframe at the new rate.
const KEYFRAME_STEP: f64 = 0.75;

/// Bounds and state of the steering; rates in kbit/s, the unit of x265enc's (and most
/// encoders') `bitrate` property.
#[derive(Debug, Clone)]
pub struct Steering {
    min_kbps: u32,
    /// None: the encoder's own bitrate when steering starts.
    max_kbps: Option<u32>,
    current_kbps: Option<u32>,
    /// The encoder's share of the estimate now.
    share: f64,
    /// Groups sent late so far, as the last estimate said; estimates since one was.
    late_groups: u64,
    calm: u32,
}

/// What to do to the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steer {
    pub kbps: u32,
    /// Ask it for a keyframe too (GstForceKeyUnit).
    pub keyframe: bool,
}

impl Steering {
    /// `max_kbps` 0: the encoder's own bitrate when steering starts.
    pub fn new(min_kbps: u32, max_kbps: u32) -> Self {
        Steering {
            min_kbps,
            max_kbps: (max_kbps > 0).then_some(max_kbps),
            current_kbps: None,
            share: ENCODER_SHARE,
            late_groups: 0,
            calm: 0,
        }
    }

    /// The bitrate last set (or found), kbit/s.
    pub fn current(&self) -> Option<u32> {
        self.current_kbps
    }

    /// Takes an estimate (sender/mod.rs): its rate (bit/s), whether the path has shown its
    /// limit (until it has, the estimate is what the stream gave, and the encoder is not
    /// held to it), and the groups sent late so far; `encoder_kbps` reads the encoder's
    /// bitrate, the first time only. Returns the change to make, if one is worth making.
    pub fn next(
        &mut self,
        estimate: &Estimate,
        encoder_kbps: impl FnOnce() -> u32,
    ) -> Option<Steer> {
        let current = *self.current_kbps.get_or_insert_with(encoder_kbps);
        let max = *self.max_kbps.get_or_insert(current);
        if estimate.late_groups > self.late_groups {
            self.share = (self.share * LATE_STEP).max(MIN_SHARE);
            self.calm = 0;
        } else {
            self.calm += 1;
            if self.calm >= CALM {
                self.share = (self.share + GROW_BACK).min(ENCODER_SHARE);
            }
        }
        self.late_groups = estimate.late_groups;
        let wanted = if estimate.limited {
            estimate.bitrate as f64 * self.share / 1000.0
        } else {
            f64::from(max)
        };
        let next = if wanted < f64::from(current) {
            wanted
        } else {
            wanted.min(f64::from(current) * MAX_STEP_UP)
        };
        let next = (next.round() as u32).clamp(self.min_kbps, max.max(self.min_kbps));
        let change = (f64::from(next) - f64::from(current)).abs() / f64::from(current.max(1));
        if change < MIN_CHANGE {
            return None;
        }
        self.current_kbps = Some(next);
        Some(Steer {
            kbps: next,
            keyframe: f64::from(next) <= f64::from(current) * KEYFRAME_STEP,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An estimate of `bps` from a path that showed its limit, with `late` groups so far.
    fn at(bps: u64, late: u64) -> Estimate {
        Estimate {
            bitrate: bps,
            receivers: 1,
            stream_bitrate: None,
            overrun: false,
            limited: true,
            late_groups: late,
        }
    }

    #[test]
    fn follows_the_estimate_down_at_once_and_up_in_steps() {
        let mut s = Steering::new(200, 0);
        // The encoder runs at 4000: that is the ceiling too.
        let down = s.next(&at(3_000_000, 0), || 4000).unwrap();
        assert_eq!(down.kbps, 2760);
        assert!(down.keyframe, "a step to 69% asks for a smaller keyframe");
        // A small step down: no keyframe.
        let small = s.next(&at(2_700_000, 0), || unreachable!()).unwrap();
        assert_eq!((small.kbps, small.keyframe), (2484, false));
        // Nothing worth a change.
        assert_eq!(s.next(&at(2_720_000, 0), || unreachable!()), None);
        // Up: at most 15% per estimate, never past the encoder's own bitrate.
        let up = s.next(&at(10_000_000, 0), || unreachable!()).unwrap();
        assert_eq!(up.kbps, 2857);
        for _ in 0..10 {
            s.next(&at(10_000_000, 0), || unreachable!());
        }
        assert_eq!(s.current(), Some(4000));
    }

    #[test]
    fn an_estimate_from_a_path_that_never_showed_its_limit_holds_nothing_down() {
        let mut s = Steering::new(200, 0);
        let open = |bps| Estimate {
            limited: false,
            ..at(bps, 0)
        };
        // The encoder ramping up gave 2 Mbit/s of its 4: not a reason to steer it.
        assert_eq!(s.next(&open(2_000_000), || 4000), None);
        // Once the path shows its limit, it is.
        let down = s.next(&at(2_000_000, 0), || unreachable!());
        assert_eq!(down.map(|s| s.kbps), Some(1840));
        // And back up, in steps, once it no longer holds.
        let up = s.next(&open(2_000_000), || unreachable!());
        assert_eq!(up.map(|s| s.kbps), Some(2116));
    }

    #[test]
    fn late_keyframes_leave_more_room_until_a_calm_spell() {
        let mut s = Steering::new(200, 0);
        assert_eq!(
            s.next(&at(3_000_000, 0), || 4000).map(|s| s.kbps),
            Some(2760)
        );
        // A group went late: 92% of 92%.
        assert_eq!(
            s.next(&at(3_000_000, 1), || unreachable!()).map(|s| s.kbps),
            Some(2539)
        );
        // Four more: never under 70% (2100), and the last step to it is under MIN_CHANGE.
        for late in 2..=5 {
            s.next(&at(3_000_000, late), || unreachable!());
        }
        assert_eq!(s.current(), Some(2149));
        // Calm for 8 estimates, then 2 points back per estimate: at 74% it is worth a change.
        for _ in 0..8 {
            assert_eq!(s.next(&at(3_000_000, 5), || unreachable!()), None);
        }
        assert_eq!(
            s.next(&at(3_000_000, 5), || unreachable!()).map(|s| s.kbps),
            Some(2220)
        );
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut s = Steering::new(500, 3000);
        assert_eq!(s.next(&at(100_000, 0), || 2000).map(|s| s.kbps), Some(500));
        for _ in 0..20 {
            s.next(&at(50_000_000, 0), || unreachable!());
        }
        assert_eq!(s.current(), Some(3000));
    }
}
