//! The `stats` both elements give: what quiche measures of each connection, and what the
//! elements count of frames and groups. The networking thread takes a snapshot every
//! [`REFRESH`] (and at every `stats-interval`), so reading the property never waits on
//! the network. Field names and units are documented in README.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How old a `stats` snapshot may be.
pub const REFRESH: Duration = Duration::from_millis(100);

/// One QUIC connection, as quiche sees it.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    pub rtt: Duration,
    pub min_rtt: Duration,
    pub rtt_variance: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes per second quiche last measured being delivered.
    pub delivery_rate: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_retransmitted: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_lost: u64,
    /// Stream bytes sent again after a loss.
    pub bytes_retransmitted: u64,
}

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
        if let Some(p) = conn.path_stats().next() {
            out.rtt = p.rtt;
            out.min_rtt = p.min_rtt.unwrap_or(p.rtt);
            out.rtt_variance = p.rttvar;
            out.cwnd = p.cwnd as u64;
            out.delivery_rate = p.delivery_rate;
        }
        out
    }
}

/// One receiver, as the sender sees it.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    pub id: u64,
    pub peer: SocketAddr,
    /// It passed admission and gets media.
    pub admitted: bool,
    pub connection: ConnectionStats,
    /// Frames whose last byte quiche took for sending.
    pub frames_sent: u64,
    /// Frames it will not get: in a group reset for lateness or backlog, or before its
    /// next IRAP after one.
    pub frames_dropped: u64,
    /// Frames replaced by a SHED marker to meet the latency budget.
    pub frames_shed: u64,
    pub groups_reset: u64,
    pub keyframe_requests: u64,
    /// Keyframe requests and application commands it sent beyond its rate (ratelimit.rs),
    /// dropped.
    pub keyframe_requests_dropped: u64,
    pub commands_dropped: u64,
    /// Bytes queued for it and not yet taken by quiche.
    pub queued_bytes: u64,
    /// Its latency budget in ns, as negotiated (0: none).
    pub latency_budget: u64,
}

/// Everything quicnalusink reports.
#[derive(Debug, Clone, Default)]
pub struct SenderStats {
    /// Access units the streaming thread handed over.
    pub frames_in: u64,
    /// Keyframes asked of upstream (merged receiver requests).
    pub keyframe_requests: u64,
    /// Receivers closed at HELLO (token, limit, application).
    pub receivers_rejected: u64,
    pub receivers: Vec<ReceiverStats>,
}

/// What quicnalusrc counts; kept across reconnections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiverCounters {
    /// Whole frames read off the network (catch-up frames included).
    pub frames_received: u64,
    /// Frames handed downstream.
    pub frames_output: u64,
    /// Frames that arrived past the latency budget and were dropped.
    pub frames_late: u64,
    /// Frames received but not output: late, or referencing pictures lost with a group.
    pub frames_dropped: u64,
    /// SHED markers: frames the sender left out to meet the budget.
    pub frames_shed: u64,
    /// Group streams the sender reset.
    pub groups_reset: u64,
    /// Group streams this receiver gave up on (too late behind a later keyframe).
    pub groups_abandoned: u64,
    pub keyframe_requests: u64,
    pub reconnects: u64,
    /// Listening: knocks answered or to be answered with a call-back.
    pub knocks: u64,
    /// Listening: knocks ignored, unsigned or from a source held off (knock.rs).
    pub knocks_refused: u64,
    /// Listening: call-backs that did not connect (no answer, refused, another
    /// certificate).
    pub callbacks_failed: u64,
}

/// Everything quicnalusrc reports.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    pub peer: Option<SocketAddr>,
    /// The current connection; None between connections.
    pub connection: Option<ConnectionStats>,
    pub counters: ReceiverCounters,
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
