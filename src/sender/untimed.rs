//! Times for input that has none (neither PTS nor DTS, as an elementary stream read from a
//! file): the access unit numbered `n` (see [`super::intake`]) is due `n` frame durations
//! after the start, at the `framerate` property's rate, else the caps', as the original
//! demo's `-f FPS` timer paced it; that running time is also its PTS. With neither rate it
//! has no time and goes as it comes. This decides the time; the element, when it syncs,
//! waits on its clock for it.

const NS_PER_SECOND: u128 = 1_000_000_000;

/// Frames per second as a fraction, as GStreamer gives it; a zero (or negative) part means
/// no rate, as the property's default 0/1 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framerate {
    pub numer: i32,
    pub denom: i32,
}

impl Framerate {
    fn usable(self) -> Option<Self> {
        (self.numer > 0 && self.denom > 0).then_some(self)
    }
}

/// Where untimestamped input's pace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Untimed {
    /// The `framerate` property.
    pub property: Framerate,
    /// The caps' framerate, if they had one: the fallback.
    pub caps: Option<Framerate>,
}

impl Untimed {
    /// The rate it is paced at: the property's, else the caps', else none.
    pub fn rate(&self) -> Option<Framerate> {
        self.property
            .usable()
            .or(self.caps.and_then(Framerate::usable))
    }

    /// The running time (ns) access unit `n` is due at, None when unpaced. (A time past
    /// u64 nanoseconds, some 584 years, comes out as 0.)
    pub fn due(&self, n: u64) -> Option<u64> {
        let rate = self.rate()?;
        let frames = u128::from(n) * rate.denom as u128;
        let time = NS_PER_SECOND * frames / rate.numer as u128;
        Some(u64::try_from(time).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Framerate = Framerate { numer: 0, denom: 1 };

    fn rate(numer: i32, denom: i32) -> Framerate {
        Framerate { numer, denom }
    }

    #[test]
    fn frame_n_is_due_n_frame_durations_after_the_start() {
        let pace = Untimed {
            property: rate(25, 1),
            caps: None,
        };
        // Stepping through the frames as the clock would reach them.
        let due: Vec<_> = (0..4).map(|n| pace.due(n)).collect();
        assert_eq!(
            due,
            [
                Some(0),
                Some(40_000_000),
                Some(80_000_000),
                Some(120_000_000)
            ]
        );
        assert_eq!(pace.due(25), Some(1_000_000_000));
    }

    #[test]
    fn a_fractional_rate_rounds_down_and_does_not_drift() {
        let ntsc = Untimed {
            property: rate(30_000, 1_001),
            caps: None,
        };
        // 1001/30000 s = 33 366 666.67 ns.
        assert_eq!(ntsc.due(1), Some(33_366_666));
        assert_eq!(ntsc.due(2), Some(66_733_333));
        // Each time is computed from the start, not by adding rounded steps.
        assert_eq!(ntsc.due(30_000), Some(1_001_000_000_000));
    }

    #[test]
    fn the_property_wins_and_the_caps_stand_in_for_it() {
        let both = Untimed {
            property: rate(50, 1),
            caps: Some(rate(25, 1)),
        };
        assert_eq!(both.rate(), Some(rate(50, 1)));
        assert_eq!(both.due(1), Some(20_000_000));
        // 0/1, the property's default: the caps' rate.
        let caps_only = Untimed {
            property: NONE,
            caps: Some(rate(25, 1)),
        };
        assert_eq!(caps_only.due(1), Some(40_000_000));
    }

    #[test]
    fn without_a_rate_nothing_is_paced() {
        let none = Untimed {
            property: NONE,
            caps: None,
        };
        assert_eq!(none.due(0), None);
        assert_eq!(none.due(10), None);
        // Caps with a variable (0/1) or broken framerate give none either.
        for caps in [rate(0, 1), rate(25, 0), rate(-25, 1)] {
            let pace = Untimed {
                property: NONE,
                caps: Some(caps),
            };
            assert_eq!(pace.due(1), None, "{caps:?}");
        }
    }
}
