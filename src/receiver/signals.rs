//! What the receiver tells the sender unprompted, and when: a keyframe request the element
//! asked for, a probe while the sender is silent, and a keepalive while the connection
//! idles. The driver asks once per turn, with that turn's `now`.

use std::time::{Duration, Instant};

/// After this long without a packet from the sender (an outage, or a paused stream) the
/// receiver sends a PING each time, so the sender learns at once when the link is back.
pub const PROBE: Duration = Duration::from_millis(100);
/// How often an idle receiver tells the sender it is still there.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// What to send this turn.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub keyframe_request: bool,
    /// An ack-eliciting packet: a probe, or a keepalive.
    pub ping: bool,
}

pub struct Signals {
    last_rx: Instant,
    last_probe: Instant,
    last_keepalive: Instant,
}

impl Signals {
    pub fn new(now: Instant) -> Self {
        Signals {
            last_rx: now,
            last_probe: now,
            last_keepalive: now,
        }
    }

    /// A packet from the sender arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// This turn's signals. `keyframe_wanted`: the element asked for a keyframe; `room`:
    /// the control stream takes more (while it is full, the request stays wanted, and one
    /// already waiting there serves as well).
    pub fn turn(&mut self, now: Instant, keyframe_wanted: bool, room: bool) -> Due {
        let mut due = Due {
            keyframe_request: keyframe_wanted && room,
            ping: false,
        };
        if now >= self.last_rx.max(self.last_probe) + PROBE {
            self.last_probe = now;
            due.ping = true;
        }
        if now >= self.last_keepalive + KEEPALIVE {
            self.last_keepalive = now;
            due.ping = true;
        }
        due
    }

    /// When the next probe is due.
    pub fn probe_at(&self) -> Instant {
        self.last_rx.max(self.last_probe) + PROBE
    }

    /// When the next keepalive is due.
    pub fn keepalive_at(&self) -> Instant {
        self.last_keepalive + KEEPALIVE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_silent_sender_is_probed_every_100_ms_and_a_talking_one_never() {
        let t0 = Instant::now();
        let mut s = Signals::new(t0);
        let mut pings = 0;
        for ms in 1..=1000 {
            let now = t0 + ms * MS;
            s.heard(now);
            pings += u32::from(s.turn(now, false, true).ping);
        }
        assert_eq!(pings, 0, "heard from every millisecond");
        let quiet = t0 + 1000 * MS;
        for ms in 1..=1000 {
            pings += u32::from(s.turn(quiet + ms * MS, false, true).ping);
        }
        assert_eq!(pings, 10, "a probe every 100 ms of silence");
        assert_eq!(s.probe_at(), quiet + 1100 * MS);
    }

    #[test]
    fn an_idle_connection_is_kept_alive_every_5_s() {
        let t0 = Instant::now();
        let mut s = Signals::new(t0);
        assert_eq!(s.keepalive_at(), t0 + KEEPALIVE);
        let mut due = Vec::new();
        for ms in (0..=10_000).step_by(50) {
            let now = t0 + ms * MS;
            // The sender talks all along: no probes, only the keepalives.
            s.heard(now);
            if s.turn(now, false, true).ping {
                due.push(ms);
            }
        }
        assert_eq!(due, vec![5000, 10_000]);
    }

    #[test]
    fn a_keyframe_request_waits_for_room_on_the_control_stream() {
        let t0 = Instant::now();
        let mut s = Signals::new(t0);
        assert!(!s.turn(t0, true, false).keyframe_request);
        assert!(s.turn(t0, true, true).keyframe_request);
        assert!(!s.turn(t0, false, true).keyframe_request);
    }
}
