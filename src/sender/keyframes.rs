//! Keyframe requests from receivers, merged and rate-limited across all of them: upstream
//! is asked at most once per interval, and an IRAP that goes out satisfies every request
//! made before it. Whether upstream answers them (a live encoder does; a file, or a stream
//! already encoded, does not) is read off what follows each request: rescue.rs lets a group
//! run late rather than wait for a keyframe that will not come early.

use std::time::{Duration, Instant};

/// An IRAP within this long of a request answers it (x265enc: a frame or two, then the
/// pipeline to the sink). A natural IRAP may fall in it by chance; the next request then
/// tells.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);

pub struct Keyframes {
    interval: Duration,
    wanted: bool,
    last: Option<Instant>,
    /// Requests that went upstream.
    pub requested: u64,
    /// When the last request went, while no IRAP has answered it yet.
    unanswered: Option<Instant>,
    /// Whether the last request was answered; None before the first.
    answered: Option<bool>,
}

impl Keyframes {
    pub fn new(interval: Duration) -> Self {
        Keyframes {
            interval,
            wanted: false,
            last: None,
            requested: 0,
            unanswered: None,
            answered: None,
        }
    }

    /// A receiver needs an IRAP.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// An IRAP went out at `now`: it reaches everyone who asked before it.
    pub fn satisfied(&mut self, now: Instant) {
        self.wanted = false;
        if let Some(asked) = self.unanswered.take() {
            self.answered = Some(now.saturating_duration_since(asked) <= ANSWER_WITHIN);
        }
    }

    /// Whether upstream makes a keyframe when asked, as far as has been seen (yes until a
    /// request goes unanswered).
    pub fn answered(&mut self, now: Instant) -> bool {
        if self
            .unanswered
            .is_some_and(|asked| now.saturating_duration_since(asked) > ANSWER_WITHIN)
        {
            self.unanswered = None;
            self.answered = Some(false);
        }
        self.answered.unwrap_or(true)
    }

    /// When a merged request may go upstream.
    pub fn due(&self, now: Instant) -> Option<Instant> {
        self.wanted
            .then(|| self.last.map_or(now, |t| t + self.interval))
    }

    /// Whether to ask upstream now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.due(now).is_none_or(|t| t > now) {
            return false;
        }
        self.wanted = false;
        self.last = Some(now);
        self.requested += 1;
        self.unanswered.get_or_insert(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_request_is_answered_by_a_prompt_keyframe_or_not_at_all() {
        let t0 = Instant::now();
        let mut k = Keyframes::new(250 * MS);
        assert!(k.answered(t0), "assumed until seen otherwise");
        k.want();
        assert!(k.poll(t0));
        // A live encoder: an IRAP 100 ms later.
        k.satisfied(t0 + 100 * MS);
        assert!(k.answered(t0 + 100 * MS));
        // A file: nothing within 500 ms of the next request.
        k.want();
        assert!(k.poll(t0 + 1000 * MS));
        assert!(k.answered(t0 + 1500 * MS));
        assert!(!k.answered(t0 + 1501 * MS));
        // Its next natural IRAP, 2 s on, answers nothing.
        k.satisfied(t0 + 3000 * MS);
        assert!(!k.answered(t0 + 3000 * MS));
    }
}
