//! What each access unit the source outputs says of itself, from the sender's flags, how it
//! arrived, and where the timeline put it: a keyframe or a delta unit, parameter sets, a
//! discontinuity (the first one output, the first after frames were skipped, or one the
//! sender's input broke before), a gap, lateness, and decode-only. The element turns these
//! into buffer flags and `QuicNaluMeta` flags.

use crate::media::timeline::Stamped;
use crate::protocol::FrameFlags;
use crate::receiver::inbox::ReceivedFrame;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    /// Holds an IRAP picture: decoding may start here. Otherwise a delta unit.
    pub keyframe: bool,
    /// Carries parameter sets (VPS/SPS/PPS).
    pub header: bool,
    /// The stream does not follow on from what was output before it.
    pub discont: bool,
    /// Frames before it were skipped (an expired or abandoned group).
    pub gap: bool,
    /// It arrived after the budget, and is output because later frames reference it.
    pub late: bool,
    /// Shown already, or older than what was: decode it, do not show it.
    pub decode_only: bool,
}

impl Marks {
    /// The marks of `frame`, which the timeline `stamped`.
    pub fn of(frame: &ReceivedFrame, stamped: &Stamped) -> Marks {
        let flags = frame.header.flags;
        Marks {
            keyframe: flags.contains(FrameFlags::KEYFRAME),
            header: flags.contains(FrameFlags::HEADER),
            discont: stamped.first || frame.gap || flags.contains(FrameFlags::DISCONT),
            gap: frame.gap,
            late: frame.late,
            decode_only: stamped.decode_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameHeader;

    fn frame(flags: &[FrameFlags], gap: bool, late: bool) -> ReceivedFrame {
        let mut header = FrameHeader::default();
        for &flag in flags {
            header.flags.set(flag, true);
        }
        ReceivedFrame {
            header,
            data: Vec::new(),
            arrival: 0,
            gap,
            late,
            catch_up_age: None,
        }
    }

    fn stamped(first: bool, decode_only: bool) -> Stamped {
        Stamped {
            pts: Some(0),
            dts: None,
            decode_only,
            first,
        }
    }

    #[test]
    fn a_plain_delta_unit_is_marked_as_nothing_else() {
        let marks = Marks::of(&frame(&[], false, false), &stamped(false, false));
        assert_eq!(marks, Marks::default());
    }

    #[test]
    fn the_senders_flags_carry_over() {
        let irap = frame(&[FrameFlags::KEYFRAME, FrameFlags::HEADER], false, false);
        let marks = Marks::of(&irap, &stamped(false, false));
        assert!(marks.keyframe && marks.header && !marks.discont);
    }

    #[test]
    fn three_things_make_a_discontinuity() {
        let after = |f: &ReceivedFrame, s: Stamped| Marks::of(f, &s);
        // The first access unit output.
        let first = after(&frame(&[], false, false), stamped(true, false));
        assert!(first.discont && !first.gap);
        // The first after skipped frames: also a gap.
        let skipped = after(&frame(&[], true, false), stamped(false, false));
        assert!(skipped.discont && skipped.gap);
        // The sender's input broke before it.
        let broken = after(
            &frame(&[FrameFlags::DISCONT], false, false),
            stamped(false, false),
        );
        assert!(broken.discont && !broken.gap);
    }

    #[test]
    fn lateness_and_decode_only_are_told_as_they_are() {
        let late = Marks::of(&frame(&[], false, true), &stamped(false, false));
        assert!(late.late && !late.discont);
        let catch_up = Marks::of(&frame(&[], false, false), &stamped(false, true));
        assert!(catch_up.decode_only && !catch_up.late);
    }
}
