//! One endpoint's loss recovery and congestion state, as RFC 9002 and (roughly) BBR have
//! it: the packets in flight, RTT estimates, loss by packet or time threshold, the probe
//! timeout, delivery-rate samples and the window they set.

use crate::protocol::MAX_DATAGRAM_SIZE;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

const PACKET_THRESHOLD: u64 = 3;
const GRANULARITY: Duration = Duration::from_millis(1);
pub const INITIAL_RTT: Duration = Duration::from_millis(333);
/// quiche's `live` initial window (config.rs, LIVE_INITIAL_WINDOW).
pub const INITIAL_WINDOW: usize = 32 * MAX_DATAGRAM_SIZE;
const MIN_WINDOW: usize = 4 * MAX_DATAGRAM_SIZE;
const CWND_GAIN: f64 = 2.0;
/// How long a delivery-rate sample counts towards the bandwidth estimate.
const BW_WINDOW: Duration = Duration::from_secs(2);
/// Rounds without 25% more bandwidth after which the path counts as full (BBR).
const FULL_BW_ROUNDS: u32 = 3;

/// What a packet carried that must be sent again if it is lost.
#[derive(Debug, Clone)]
pub enum Repair {
    Stream {
        id: u64,
        off: u64,
        len: u64,
        fin: bool,
    },
    Reset {
        id: u64,
    },
}

/// An ack-eliciting packet in flight, with the delivery-rate state at its sending.
pub struct Sent {
    time: Instant,
    pub len: usize,
    pub repairs: Vec<Repair>,
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
}

pub struct Recovery {
    sent: BTreeMap<u64, Sent>,
    srtt: Option<Duration>,
    pub rttvar: Duration,
    min_rtt: Option<Duration>,
    latest_rtt: Duration,
    largest_acked: Option<u64>,
    pub loss_time: Option<Instant>,
    pto_count: u32,
    last_eliciting: Option<Instant>,
    pub in_flight: usize,
    /// The peer's max_ack_delay, part of the probe timeout once the handshake is done.
    peer_ack_delay: Duration,
    pub cwnd: usize,
    samples: VecDeque<(Instant, u64)>,
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    startup: bool,
    full_bw: u64,
    full_bw_rounds: u32,
    round_start: Instant,
}

impl Recovery {
    pub fn new(now: Instant, peer_ack_delay: Duration) -> Self {
        Recovery {
            sent: BTreeMap::new(),
            srtt: None,
            rttvar: INITIAL_RTT / 2,
            min_rtt: None,
            latest_rtt: INITIAL_RTT,
            largest_acked: None,
            loss_time: None,
            pto_count: 0,
            last_eliciting: None,
            in_flight: 0,
            peer_ack_delay,
            cwnd: INITIAL_WINDOW,
            samples: VecDeque::new(),
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            startup: true,
            full_bw: 0,
            full_bw_rounds: 0,
            round_start: now,
        }
    }

    pub fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTT)
    }

    pub fn min_rtt(&self) -> Duration {
        self.min_rtt.unwrap_or(self.srtt())
    }

    /// The probe timeout, before backing off; `established`: the peer's ack delay counts.
    pub fn pto(&self, established: bool) -> Duration {
        let ack_delay = if established {
            self.peer_ack_delay
        } else {
            Duration::ZERO
        };
        self.srtt() + (self.rttvar * 4).max(GRANULARITY) + ack_delay
    }

    pub fn pto_deadline(&self, established: bool) -> Option<Instant> {
        if self.sent.is_empty() {
            return None;
        }
        let backoff = 1u32 << self.pto_count.min(16);
        Some(self.last_eliciting? + self.pto(established) * backoff)
    }

    /// A probe timeout fired: it backs off, and the oldest two packets' repairs go again in
    /// the probes (as quiche does).
    pub fn on_pto(&mut self) -> Vec<Repair> {
        self.pto_count += 1;
        let oldest = self.sent.values().take(2);
        oldest.flat_map(|p| p.repairs.iter().cloned()).collect()
    }

    /// An ack-eliciting packet went.
    pub fn on_sent(
        &mut self,
        now: Instant,
        pn: u64,
        len: usize,
        repairs: Vec<Repair>,
        app_limited: bool,
    ) {
        if self.in_flight == 0 {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        let sent = Sent {
            time: now,
            len,
            repairs,
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            app_limited,
        };
        self.sent.insert(pn, sent);
        self.in_flight += len;
        self.last_eliciting = Some(now);
    }

    fn on_rtt_sample(&mut self, latest: Duration, ack_delay: Duration) {
        self.latest_rtt = latest;
        let Some(srtt) = self.srtt else {
            self.min_rtt = Some(latest);
            self.srtt = Some(latest);
            self.rttvar = latest / 2;
            return;
        };
        let min = self.min_rtt.map_or(latest, |m| m.min(latest));
        self.min_rtt = Some(min);
        let ack_delay = ack_delay.min(self.peer_ack_delay);
        let adjusted = if latest >= min + ack_delay {
            latest - ack_delay
        } else {
            latest
        };
        let diff = srtt.abs_diff(adjusted);
        self.rttvar = self.rttvar * 3 / 4 + diff / 4;
        self.srtt = Some(srtt * 7 / 8 + adjusted / 8);
    }

    /// An ACK frame: returns the packets it acknowledged for the first time, then those it
    /// showed lost.
    pub fn on_ack(
        &mut self,
        now: Instant,
        ranges: &[(u64, u64)],
        delay: Duration,
    ) -> (Vec<Sent>, Vec<Sent>) {
        let Some(&(_, largest)) = ranges.first() else {
            return (Vec::new(), Vec::new());
        };
        // Ranges below every packet in flight acknowledge nothing new.
        let oldest = self.sent.keys().next().copied().unwrap_or(u64::MAX);
        let newly: Vec<u64> = ranges
            .iter()
            .take_while(|&&(_, e)| e >= oldest)
            .flat_map(|&(s, e)| self.sent.range(s..=e).map(|(pn, _)| *pn))
            .collect();
        if newly.is_empty() {
            return (Vec::new(), Vec::new());
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        if let Some(p) = self.sent.get(&largest) {
            let latest = now.saturating_duration_since(p.time);
            self.on_rtt_sample(latest, delay);
        }
        let mut acked = Vec::with_capacity(newly.len());
        for pn in newly {
            if let Some(p) = self.sent.remove(&pn) {
                self.in_flight -= p.len;
                self.delivered += p.len as u64;
                acked.push(p);
            }
        }
        self.delivered_time = now;
        if let Some(p) = acked.last() {
            let (time, delivered, delivered_time, first_sent_time, app_limited) = (
                p.time,
                p.delivered,
                p.delivered_time,
                p.first_sent_time,
                p.app_limited,
            );
            self.first_sent_time = time;
            let send_elapsed = time.saturating_duration_since(first_sent_time);
            let ack_elapsed = now.saturating_duration_since(delivered_time);
            self.rate_sample(now, send_elapsed.max(ack_elapsed), delivered, app_limited);
        }
        self.pto_count = 0;
        (acked, self.detect_lost(now))
    }

    /// A delivery-rate sample (the delivery-rate draft: bytes delivered since the packet
    /// was sent, over the longer of its send and ack intervals), and the window it sets.
    fn rate_sample(&mut self, now: Instant, interval: Duration, since: u64, app_limited: bool) {
        let min_rtt = self.min_rtt();
        if interval < min_rtt || interval.is_zero() {
            return;
        }
        let rate = ((self.delivered - since) as f64 / interval.as_secs_f64()) as u64;
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > BW_WINDOW)
        {
            self.samples.pop_front();
        }
        // Application-limited samples only count when they show more than we knew.
        if !app_limited || rate > self.bandwidth() {
            self.samples.push_back((now, rate));
        }
        if !app_limited && now.saturating_duration_since(self.round_start) >= min_rtt {
            self.round_start = now;
            let bw = self.bandwidth();
            if bw as f64 >= self.full_bw as f64 * 1.25 {
                self.full_bw = bw;
                self.full_bw_rounds = 0;
            } else {
                self.full_bw_rounds += 1;
                self.startup &= self.full_bw_rounds < FULL_BW_ROUNDS;
            }
        }
        let bdp = self.bandwidth() as f64 * min_rtt.as_secs_f64() * CWND_GAIN;
        let floor = if self.startup {
            INITIAL_WINDOW
        } else {
            MIN_WINDOW
        };
        self.cwnd = (bdp as usize).max(floor);
    }

    /// The bandwidth estimate, bytes/s: the highest sample of the last BW_WINDOW.
    pub fn bandwidth(&self) -> u64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// Packets lost by the packet or time threshold; the earliest time one may be lost.
    pub fn detect_lost(&mut self, now: Instant) -> Vec<Sent> {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return Vec::new();
        };
        let rtt = self.latest_rtt.max(self.srtt());
        let delay = (rtt * 9 / 8).max(GRANULARITY);
        let mut lost = Vec::new();
        for (&pn, p) in self.sent.range(..largest) {
            if now >= p.time + delay || largest >= pn + PACKET_THRESHOLD {
                lost.push(pn);
            } else {
                let at = p.time + delay;
                self.loss_time = Some(self.loss_time.map_or(at, |t| t.min(at)));
            }
        }
        let lost: Vec<Sent> = lost.iter().filter_map(|pn| self.sent.remove(pn)).collect();
        self.in_flight -= lost.iter().map(|p| p.len).sum::<usize>();
        lost
    }
}
