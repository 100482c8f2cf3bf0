//! The stream against the path: the stream's rate as the sink takes it, and when it has
//! run faster than the slowest receiver's path for long enough to say so (quicnalusink
//! posts one WARNING naming both). Steering (steering.rs) brings a live encoder under the
//! path within a second or two; a recorded clip or a fixed encoder stays over it, and
//! then a user should know why the picture is late.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The stream's rate is taken over this long: an IRAP every 2 s is the usual live group,
/// and a shorter window sees each IRAP as a burst.
const WINDOW: Duration = Duration::from_secs(2);
/// Faster than the path by this factor counts as running faster.
const OVER: f64 = 1.05;
/// How long it must run faster before the warning.
const RUN: Duration = Duration::from_secs(3);
/// How long it must stay within the path before another episode may warn again.
const CALM: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Overrun {
    /// Bytes taken so far.
    bytes: u64,
    /// (when, `bytes` then), oldest first, spanning WINDOW.
    marks: VecDeque<(Instant, u64)>,
    /// Since when the stream has run faster than the path.
    over_since: Option<Instant>,
    /// Since when it has not (while an episode was warned of).
    calm_since: Option<Instant>,
    warned: bool,
    /// The stream's rate at the last update, bit/s.
    rate: Option<f64>,
}

impl Overrun {
    /// The sink took a frame of `bytes`.
    pub fn took(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// The stream's rate at the last update, bit/s.
    pub fn stream_rate(&self) -> Option<f64> {
        self.rate
    }

    /// At each estimate: the stream's rate (bit/s, None until a window has passed), and
    /// whether to warn now that it runs faster than `path_bps`.
    pub fn update(&mut self, now: Instant, path_bps: Option<f64>) -> (Option<f64>, bool) {
        self.marks.push_back((now, self.bytes));
        while self
            .marks
            .get(1)
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= WINDOW)
        {
            self.marks.pop_front();
        }
        let (t0, b0) = self.marks[0];
        let span = now.saturating_duration_since(t0);
        let stream = (span >= WINDOW).then(|| (self.bytes - b0) as f64 * 8.0 / span.as_secs_f64());
        self.rate = stream;
        let over = matches!((stream, path_bps), (Some(s), Some(p)) if s > p * OVER);
        if over {
            self.calm_since = None;
            let since = *self.over_since.get_or_insert(now);
            if !self.warned && now.saturating_duration_since(since) >= RUN {
                self.warned = true;
                return (stream, true);
            }
        } else {
            self.over_since = None;
            let calm = *self.calm_since.get_or_insert(now);
            if now.saturating_duration_since(calm) >= CALM {
                self.warned = false;
            }
        }
        (stream, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    /// Runs `seconds` of a stream at `stream_bps` against a path of `path_bps`; returns
    /// when (s after the start) it warned.
    fn run(o: &mut Overrun, t: &mut Instant, seconds: u32, stream_bps: f64, path: f64) -> Vec<f64> {
        let start = *t;
        let mut warned = Vec::new();
        for _ in 0..seconds * 2 {
            *t += TICK;
            o.took((stream_bps * TICK.as_secs_f64() / 8.0) as usize);
            if o.update(*t, Some(path)).1 {
                warned.push(t.duration_since(start).as_secs_f64());
            }
        }
        warned
    }

    #[test]
    fn warns_once_when_the_stream_stays_over_the_path() {
        let (mut o, mut t) = (Overrun::default(), Instant::now());
        assert_eq!(o.update(t, Some(3e6)), (None, false));
        // Within the path: nothing.
        assert!(run(&mut o, &mut t, 10, 2.9e6, 3e6).is_empty());
        // 4 Mbit/s over 3: once the window's mean is over (after 0.5 s here), and 3 s on;
        // then never again.
        assert_eq!(run(&mut o, &mut t, 20, 4e6, 3e6), [3.5]);
        let (stream, _) = o.update(t, Some(3e6));
        assert!((stream.unwrap() - 4e6).abs() < 1e4, "{stream:?}");
    }

    #[test]
    fn a_burst_shorter_than_the_run_or_a_new_episode_after_calm() {
        let (mut o, mut t) = (Overrun::default(), Instant::now());
        run(&mut o, &mut t, 4, 2e6, 3e6);
        // 2 s over: the steering caught it.
        assert!(run(&mut o, &mut t, 2, 6e6, 3e6).is_empty());
        assert!(run(&mut o, &mut t, 6, 2e6, 3e6).is_empty());
        // Over for good: one warning; calm for 10 s; over again: a second one.
        assert_eq!(run(&mut o, &mut t, 10, 5e6, 3e6).len(), 1);
        assert!(run(&mut o, &mut t, 12, 2e6, 3e6).is_empty());
        assert_eq!(run(&mut o, &mut t, 10, 5e6, 3e6).len(), 1);
    }
}
