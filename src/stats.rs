//! The `stats` both elements give, as plain values: what quiche measures of each
//! connection, and what the cores count of frames and groups. The networking layer takes
//! the snapshots (net/stats.rs); the element layer turns them into structures. Field names
//! and units are documented in README.md.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// Groups sent late because their keyframe could not arrive within the budget.
    pub groups_late: u64,
    /// The estimate of what its path carries, bit/s (0 before the first).
    pub path_rate: u64,
    pub keyframe_requests: u64,
    /// Keyframe requests and application commands it sent beyond its rate (ratelimit.rs),
    /// dropped.
    pub keyframe_requests_dropped: u64,
    pub commands_dropped: u64,
    /// Bytes queued for it and not yet taken by quiche.
    pub queued_bytes: u64,
    /// Its latency budget in ns, as negotiated (0: none).
    pub latency_budget: u64,
    /// With several routes (quicnalusrc `paths`): each one; the fields above are their
    /// sums, or the first route's for the connection. Empty for a receiver with one.
    pub routes: Vec<RouteStats>,
}

/// One route of a receiver with several (quicnalusrc `paths`).
#[derive(Debug, Clone)]
pub struct RouteStats {
    /// 0 for `address:port`, then 1, 2, ... for each of `paths`.
    pub index: u64,
    pub peer: SocketAddr,
    /// Connected and heard from lately.
    pub up: bool,
    pub connection: ConnectionStats,
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
    /// The stream's rate as the sink takes it, bit/s, over the last 2 s (0 before).
    pub stream_rate: u64,
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
    /// Times the connection moved to a new local address (`bind-address` changed).
    pub migrations: u64,
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
    /// With `paths`: every route, the first being `peer`'s (empty without).
    pub routes: Vec<RouteStats>,
}
