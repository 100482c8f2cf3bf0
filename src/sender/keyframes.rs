//! Keyframe requests from receivers, merged and rate-limited across all of them: upstream
//! is asked at most once per interval, and an IRAP that goes out satisfies every request
//! made before it. Whether upstream answers them (a live encoder does; a file, or a stream
//! already encoded, does not) the element learns from each request it pushes: rescue.rs
//! lets a group run late rather than wait for a keyframe that will not come early. (Timing
//! what follows a request does not tell: a group expires late in it, when the next natural
//! IRAP is near.)

use std::time::{Duration, Instant};

pub struct Keyframes {
    interval: Duration,
    wanted: bool,
    last: Option<Instant>,
    /// Requests that went upstream.
    pub requested: u64,
    /// Whether upstream took the last request; None before the first.
    answered: Option<bool>,
}

impl Keyframes {
    pub fn new(interval: Duration) -> Self {
        Keyframes {
            interval,
            wanted: false,
            last: None,
            requested: 0,
            answered: None,
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

    /// Upstream took the last request (an encoder handled GstForceKeyUnit), or nothing
    /// did (a file, a stream encoded once).
    pub fn set_answered(&mut self, answered: bool) {
        self.answered = Some(answered);
    }

    /// Whether upstream makes a keyframe when asked: yes until a request goes untaken.
    pub fn answered(&self) -> bool {
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
        true
    }
}
