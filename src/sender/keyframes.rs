//! Keyframe requests from receivers, merged and rate-limited across all of them: upstream
//! is asked at most once per interval, and an IRAP that goes out satisfies every request
//! made before it.

use std::time::{Duration, Instant};

pub struct Keyframes {
    interval: Duration,
    wanted: bool,
    last: Option<Instant>,
    /// Requests that went upstream.
    pub requested: u64,
}

impl Keyframes {
    pub fn new(interval: Duration) -> Self {
        Keyframes {
            interval,
            wanted: false,
            last: None,
            requested: 0,
        }
    }

    /// A receiver needs an IRAP.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// An IRAP went out: it reaches everyone who asked before it.
    pub fn satisfied(&mut self) {
        self.wanted = false;
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
        true
    }
}
