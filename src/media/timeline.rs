//! The sender's timestamps on this element's running time: one offset per connection,
//! taken from the first timestamped frame that is on time, and never a time that goes back
//! across a reconnection. Times are in ns; `now` is this element's running time.
//!
//! A frame that arrived late (a group the sender had to send late, or held for a repair)
//! would be late downstream too, and a sink that syncs drops it: the screen stays blank.
//! So it is stamped to be shown at once (`now` less the latency downstream adds), and it
//! never sets the offset: the first on-time frame does, and the stream is back at the live
//! edge from there.

/// What one frame gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    /// Shown already, or older than what was: decode it, do not show it.
    pub decode_only: bool,
    /// The first frame output: it starts a stream (DISCONT).
    pub first: bool,
}

#[derive(Debug, Default)]
pub struct Timeline {
    /// The latency this element reports: downstream shows a frame that long after its time.
    latency: u64,
    /// Added to the sender's running times to get ours; set by the first timestamped frame
    /// of each connection once there is a clock.
    offset: Option<i128>,
    /// The latest time output (PTS or DTS): a new connection's timeline starts after it,
    /// so timestamps never go back.
    last_time: Option<i128>,
    /// The decoding time (or presentation time, without one) of the last frame output.
    last_out: Option<u64>,
    /// `last_time` when this connection began: catch-up frames older than it (the cached
    /// group a reconnection starts from) are clamped to it and marked DECODE_ONLY.
    resumed_after: Option<i128>,
    delivered: u64,
}

impl Timeline {
    /// For an element that reports `latency` (ns).
    pub fn new(latency: u64) -> Self {
        Timeline {
            latency,
            ..Timeline::default()
        }
    }

    /// A new connection: a restarted sender starts its timestamps again.
    pub fn reconnected(&mut self) {
        self.offset = None;
        self.resumed_after = self.last_time;
    }

    /// Frames output so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Maps one frame's sender `pts` and `dts`; `catch_up_age`: how old the sender says a
    /// catch-up frame is; `late`: it arrived past its budget; `now`: our running time, if
    /// there is a clock.
    pub fn map(
        &mut self,
        pts: Option<u64>,
        dts: Option<u64>,
        catch_up_age: Option<u64>,
        late: bool,
        now: Option<u64>,
    ) -> Stamped {
        let now = now.map(i128::from);
        // Shown at once: downstream adds the latency.
        let show_now = now
            .filter(|_| late)
            .map(|n| (n - i128::from(self.latency)).max(self.last_time.map_or(0, |l| l + 1)));
        if self.offset.is_none() && show_now.is_none() {
            // A catch-up frame is as old as the sender says: the live edge maps to now.
            let age = catch_up_age.unwrap_or(0);
            if let (Some(reference), Some(now)) = (dts.or(pts).map(|t| t + age), now) {
                // After a reconnection the new timeline starts past everything output.
                let start = self.last_time.map_or(now, |last| now.max(last + 1));
                self.offset = Some(start - reference as i128);
            }
        }
        let reference = dts.or(pts).map(i128::from);
        let offset = match (self.offset, show_now, reference) {
            // Later than its time would put it, or no time yet: shown now.
            (offset, Some(at), Some(r)) if offset.is_none_or(|o| r + o < at) => at - r,
            (offset, ..) => offset.unwrap_or(0),
        };
        // A catch-up frame after a reconnection may be older than what was output before
        // it: it is still needed to decode, but must not take time back.
        let floor = self
            .resumed_after
            .filter(|_| catch_up_age.is_some())
            .map(|t| t.max(0) as u64);
        if let Some(latest) = pts.max(dts) {
            let latest = latest as i128 + offset;
            self.last_time = Some(self.last_time.map_or(latest, |l| l.max(latest)));
        }
        let map = |t: Option<u64>| {
            t.map(|t| {
                let t = (t as i128 + offset).max(0) as u64;
                floor.map_or(t, |f| t.max(f))
            })
        };
        let (mut out_pts, mut out_dts) = (map(pts), map(dts));
        // A late frame shown now may lie past the next on-time frame's time: decoding time
        // never goes back (nor does a presentation time without one, or before it).
        if let Some(last) = self.last_out {
            match (out_dts.as_mut(), out_pts.as_mut()) {
                (Some(d), p) => {
                    *d = (*d).max(last);
                    if let Some(p) = p {
                        *p = (*p).max(*d);
                    }
                }
                (None, Some(p)) => *p = (*p).max(last),
                (None, None) => {}
            }
        }
        self.last_out = out_dts.or(out_pts).or(self.last_out);
        let decode_only =
            floor.is_some_and(|f| pts.is_some_and(|t| t as i128 + offset < f as i128));
        if out_pts.is_none() && out_dts.is_none() {
            // An untimestamped sender: stamp with arrival, as do-timestamp would.
            out_pts = now.map(|n| n.max(0) as u64);
        }
        let first = self.delivered == 0;
        self.delivered += 1;
        Stamped {
            pts: out_pts,
            dts: out_dts,
            decode_only,
            first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_first_frame_maps_to_now_and_the_rest_follow_it() {
        let mut t = Timeline::default();
        // The sender is 10 s into its stream; we are 2 s into ours.
        let s = t.map(
            Some(10_000 * MS),
            Some(10_000 * MS),
            None,
            false,
            Some(2_000 * MS),
        );
        assert_eq!(
            (s.pts, s.dts, s.first),
            (Some(2_000 * MS), Some(2_000 * MS), true)
        );
        // Arrival does not matter after that: the sender's spacing is kept.
        let s = t.map(Some(10_033 * MS), None, None, false, Some(2_100 * MS));
        assert_eq!((s.pts, s.dts, s.first), (Some(2_033 * MS), None, false));
        assert_eq!(t.delivered(), 2);
    }

    #[test]
    fn a_catch_up_frame_is_as_old_as_the_sender_says() {
        let mut t = Timeline::default();
        // Half a second old at the sender: the live edge is now.
        let s = t.map(
            Some(1_000 * MS),
            None,
            Some(500 * MS),
            false,
            Some(5_000 * MS),
        );
        assert_eq!(s.pts, Some(4_500 * MS));
        assert!(!s.decode_only);
    }

    #[test]
    fn after_a_reconnection_time_never_goes_back() {
        let mut t = Timeline::default();
        t.map(Some(0), None, None, false, Some(1_000 * MS));
        t.map(Some(900 * MS), None, None, false, Some(1_900 * MS));
        // A restarted sender starts from 0 again, and our clock has not moved on.
        t.reconnected();
        let s = t.map(Some(0), None, None, false, Some(1_800 * MS));
        assert_eq!(s.pts, Some(1_900 * MS + 1));
        assert!(!s.first);
    }

    #[test]
    fn old_catch_up_frames_after_a_reconnection_are_decode_only() {
        let mut t = Timeline::default();
        t.map(Some(0), None, None, false, Some(1_000 * MS));
        t.map(Some(2_000 * MS), None, None, false, Some(3_000 * MS));
        t.reconnected();
        // The cached group a reconnection starts from: its IRAP, 600 ms before the live
        // edge, is older than what was output, so it is clamped and only decoded.
        let s = t.map(
            Some(1_500 * MS),
            None,
            Some(600 * MS),
            false,
            Some(3_000 * MS),
        );
        assert_eq!((s.pts, s.decode_only), (Some(3_000 * MS), true));
        // The live edge comes just after what was output.
        let s = t.map(Some(2_100 * MS), None, Some(0), false, Some(3_000 * MS));
        assert_eq!((s.pts, s.decode_only), (Some(3_000 * MS + 1), false));
    }

    #[test]
    fn a_late_frame_is_shown_at_once_and_the_first_on_time_one_sets_the_time() {
        let mut t = Timeline::new(120 * MS);
        // The first frame comes 300 ms late, at 2 s: shown now (downstream adds 120 ms).
        let s = t.map(Some(10_000 * MS), None, None, true, Some(2_000 * MS));
        assert_eq!((s.pts, s.first), (Some(1_880 * MS), true));
        // The next late one, 33 ms later by the sender and 60 ms later here: also now.
        let s = t.map(Some(10_033 * MS), None, None, true, Some(2_060 * MS));
        assert_eq!(s.pts, Some(1_940 * MS));
        // The first on time sets the offset: the live edge, from here on.
        let s = t.map(Some(10_400 * MS), None, None, false, Some(2_100 * MS));
        assert_eq!(s.pts, Some(2_100 * MS));
        let s = t.map(Some(10_433 * MS), None, None, false, Some(2_180 * MS));
        assert_eq!(s.pts, Some(2_133 * MS));
        // A late frame whose time is still ahead keeps it; one past it is shown now.
        let s = t.map(Some(10_466 * MS), None, None, true, Some(2_200 * MS));
        assert_eq!(s.pts, Some(2_166 * MS));
        let s = t.map(Some(10_500 * MS), None, None, true, Some(2_500 * MS));
        assert_eq!(s.pts, Some(2_380 * MS));
        // The next on time would map before that one: time does not go back.
        let s = t.map(Some(10_533 * MS), None, None, false, Some(2_510 * MS));
        assert_eq!(s.pts, Some(2_380 * MS));
        let s = t.map(
            Some(10_900 * MS),
            Some(10_866 * MS),
            None,
            false,
            Some(2_520 * MS),
        );
        assert_eq!((s.dts, s.pts), (Some(2_566 * MS), Some(2_600 * MS)));
    }

    #[test]
    fn an_untimestamped_sender_is_stamped_on_arrival() {
        let mut t = Timeline::default();
        let s = t.map(None, None, None, false, Some(7 * MS));
        assert_eq!((s.pts, s.dts), (Some(7 * MS), None));
    }
}
