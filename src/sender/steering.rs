//! Steering an upstream encoder's bitrate to what the receivers' paths carry
//! (quicnalusink's `adapt-bitrate`), as webrtcsink does for WebRTC. The sender's core gives
//! an estimate every rate::UPDATE (the slowest receiver's, rate.rs); this turns it into the
//! encoder's next bitrate, and says when a keyframe should follow a change: an encoder
//! steered down keeps sending pictures the size of the old rate until its next IRAP, and
//! that IRAP is the largest of them all unless it comes at the new rate.

/// The encoder's share of the estimate: the rest is for QUIC and framing overhead and
/// repairs, which the estimate (bytes on the wire) includes.
const ENCODER_SHARE: f64 = 0.92;
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
        }
    }

    /// The bitrate last set (or found), kbit/s.
    pub fn current(&self) -> Option<u32> {
        self.current_kbps
    }

    /// Takes an estimate (bit/s), and whether the path has shown its limit (until it
    /// has, the estimate is what the stream gave, and the encoder is not held to it);
    /// `encoder_kbps` reads the encoder's bitrate, the first time only. Returns the change
    /// to make, if one is worth making.
    pub fn next(
        &mut self,
        estimate_bps: u64,
        limited: bool,
        encoder_kbps: impl FnOnce() -> u32,
    ) -> Option<Steer> {
        let current = *self.current_kbps.get_or_insert_with(encoder_kbps);
        let max = *self.max_kbps.get_or_insert(current);
        let wanted = if limited {
            estimate_bps as f64 * ENCODER_SHARE / 1000.0
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

    #[test]
    fn follows_the_estimate_down_at_once_and_up_in_steps() {
        let mut s = Steering::new(200, 0);
        // The encoder runs at 4000: that is the ceiling too.
        let down = s.next(3_000_000, true, || 4000).unwrap();
        assert_eq!(down.kbps, 2760);
        assert!(down.keyframe, "a step to 69% asks for a smaller keyframe");
        // A small step down: no keyframe.
        let small = s.next(2_700_000, true, || unreachable!()).unwrap();
        assert_eq!((small.kbps, small.keyframe), (2484, false));
        // Nothing worth a change.
        assert_eq!(s.next(2_720_000, true, || unreachable!()), None);
        // Up: at most 15% per estimate, never past the encoder's own bitrate.
        let up = s.next(10_000_000, true, || unreachable!()).unwrap();
        assert_eq!(up.kbps, 2857);
        for _ in 0..10 {
            s.next(10_000_000, true, || unreachable!());
        }
        assert_eq!(s.current(), Some(4000));
    }

    #[test]
    fn an_estimate_from_a_path_that_never_showed_its_limit_holds_nothing_down() {
        let mut s = Steering::new(200, 0);
        // The encoder ramping up gave 2 Mbit/s of its 4: not a reason to steer it.
        assert_eq!(s.next(2_000_000, false, || 4000), None);
        // Once the path shows its limit, it is.
        assert_eq!(
            s.next(2_000_000, true, || unreachable!()).map(|s| s.kbps),
            Some(1840)
        );
        // And back up, in steps, once it no longer holds.
        assert_eq!(
            s.next(2_000_000, false, || unreachable!()).map(|s| s.kbps),
            Some(2116)
        );
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut s = Steering::new(500, 3000);
        assert_eq!(s.next(100_000, true, || 2000).map(|s| s.kbps), Some(500));
        for _ in 0..20 {
            s.next(50_000_000, true, || unreachable!());
        }
        assert_eq!(s.current(), Some(3000));
    }
}
