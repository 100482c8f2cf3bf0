//! Taking the `stats` snapshots (crate::stats) on the networking thread: quiche's counters
//! of a connection, and a snapshot every [`REFRESH`] (and at every `stats-interval`), so
//! reading the property never waits on the network.

use crate::stats::ConnectionStats;
use std::time::{Duration, Instant};

/// How old a `stats` snapshot may be.
pub const REFRESH: Duration = Duration::from_millis(100);

impl ConnectionStats {
    pub fn of(conn: &quiche::Connection) -> Self {
        let s = conn.stats();
        let mut out = ConnectionStats {
            packets_sent: s.sent as u64,
            packets_received: s.recv as u64,
            packets_lost: s.lost as u64,
            packets_retransmitted: s.retrans as u64,
            bytes_sent: s.sent_bytes,
            bytes_received: s.recv_bytes,
            bytes_lost: s.lost_bytes,
            bytes_retransmitted: s.stream_retrans_bytes,
            ..Default::default()
        };
        if let Some(p) = crate::net::paths::active(conn) {
            out.rtt = p.rtt;
            out.min_rtt = p.min_rtt.unwrap_or(p.rtt);
            out.rtt_variance = p.rttvar;
            out.cwnd = p.cwnd as u64;
            out.delivery_rate = p.delivery_rate;
        }
        out
    }
}

/// Takes the snapshots on the networking thread: every REFRESH for the property, and hands
/// one to `on_stats` every `interval`.
pub struct Reporter<T> {
    interval: Option<Duration>,
    on_stats: Box<dyn Fn(T) + Send>,
    next_refresh: Instant,
    next_post: Option<Instant>,
    /// The next poll takes a snapshot whatever the time.
    forced: bool,
}

impl<T: Clone> Reporter<T> {
    pub fn new(interval: Option<Duration>, on_stats: Box<dyn Fn(T) + Send>) -> Self {
        let now = Instant::now();
        Reporter {
            interval,
            on_stats,
            next_refresh: now,
            next_post: interval.map(|i| now + i),
            forced: false,
        }
    }

    /// When the loop must wake for the next snapshot.
    pub fn due(&self) -> Instant {
        self.next_post
            .map_or(self.next_refresh, |t| t.min(self.next_refresh))
    }

    /// Passes what it posts through `wrap` (the networking thread's callback gate).
    pub fn wrap_poster(
        &mut self,
        wrap: impl FnOnce(Box<dyn Fn(T) + Send>) -> Box<dyn Fn(T) + Send>,
    ) {
        let post = std::mem::replace(&mut self.on_stats, Box::new(|_| {}));
        self.on_stats = wrap(post);
    }

    /// Makes the next poll take a snapshot (for a change the property must show at once).
    pub fn force(&mut self) {
        self.forced = true;
    }

    /// A new snapshot, made by `make`, when one is due at `now`.
    pub fn poll(&mut self, now: Instant, make: impl FnOnce() -> T) -> Option<T> {
        let forced = std::mem::take(&mut self.forced);
        if now < self.due() && !forced {
            return None;
        }
        let snapshot = make();
        self.next_refresh = now + REFRESH;
        if let (Some(at), Some(interval)) = (self.next_post, self.interval) {
            if now >= at {
                (self.on_stats)(snapshot.clone());
                self.next_post = Some(at.max(now - interval) + interval);
            }
        }
        Some(snapshot)
    }
}
