//! A simulated-time pair: the sender's core (crate::sender) drives receivers' cores
//! (crate::receiver) through a model of QUIC (`quic/`) over seeded links (`link.rs`), on a
//! simulated clock: a base `Instant` and the time since. Everything runs in one thread and
//! steps from one event to the next (a packet arriving, a QUIC timer, the cores' timers,
//! the next frame), so seconds of live video take milliseconds, and a seed always gives
//! the same run. `sender.rs` and `receiver.rs` stand in for the two networking threads
//! (net/server/serving.rs, net/client/connection.rs); `media.rs` is the encoder and a decoder's judgement.
//!
//! Figures are taken as the benchmark takes them: a frame is on time when it is output
//! decodable within the receiver's budget (its latency, 200 ms by default) of the moment
//! the sender's core took it.

#[cfg(test)]
mod caps;
mod link;
mod media;
mod quic;
mod ranges;
mod receiver;
mod sender;
mod study;
#[cfg(test)]
mod tests;

use crate::sender::budget;
use crate::sender::join::JoinMode;
use crate::sender::steering::Steering;
use crate::sender::Policy;
use link::{Impairment, Link};
use quic::Packet;
use receiver::{Output, Rx};
use sender::Sender;
use std::rc::Rc;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
/// The links' own rate, without a cap: bit/s.
const LINE_RATE: u64 = 1_000_000_000;

/// One receiver: when it connects, its path each way, and its latency.
#[derive(Debug, Clone)]
pub struct Plan {
    pub at: Duration,
    /// Sender to receiver, and back.
    pub down: Impairment,
    pub up: Impairment,
    /// Cuts of its path, both ways: (start, length) from the simulation's start.
    pub outages: Vec<(Duration, Duration)>,
    pub latency: Duration,
}

impl Plan {
    /// From the start, over `one_way` of delay and `loss` each way, latency 200 ms. The
    /// link runs at 1 Gbit/s (a loopback relay's order), so a burst arrives as a train of
    /// packets, each acknowledged as the receiver's loop would, not as one.
    pub fn symmetric(one_way: Duration, loss: f64) -> Self {
        let imp = Impairment {
            delay: one_way,
            loss,
            rate_bps: Some(LINE_RATE),
            queue_bytes: 16 << 20,
            ..Impairment::default()
        };
        Plan {
            at: Duration::ZERO,
            down: imp.clone(),
            up: imp,
            outages: Vec::new(),
            latency: budget::FALLBACK,
        }
    }
}

/// A pair's run: the stream, the sender's policy (the sink's defaults unless changed),
/// and its receivers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub stream: media::Stream,
    /// Frames the encoder makes, from the moment the first receiver is described.
    pub frames: u64,
    /// END_OF_STREAM after the last frame.
    pub end_of_stream: bool,
    pub seed: u64,
    pub join_mode: JoinMode,
    pub budget: budget::Policy,
    /// quicnalusink's keyframe-request-interval.
    pub keyframe_interval: Duration,
    /// What the sender's driver adds to QUIC (repair.rs): probe packets after each burst,
    /// and each repair sent twice while the path does not queue. Both on in the elements.
    pub tail_probes: bool,
    pub repeat_repairs: bool,
    /// quicnalusink's adapt-bitrate steers the encoder (min-bitrate 200 kbit/s, at most
    /// the stream's bitrate), as it does a live x265enc by default; off: a recorded clip.
    pub steered: bool,
    pub receivers: Vec<Plan>,
}

impl Settings {
    /// One receiver over `one_way` and `loss` each way; 10 s of 4 Mbit/s 720p30.
    pub fn new(one_way: Duration, loss: f64, seed: u64) -> Self {
        Settings {
            stream: media::Stream::default(),
            frames: 300,
            end_of_stream: false,
            seed,
            join_mode: JoinMode::Cached,
            budget: budget::Policy::Receiver,
            keyframe_interval: 250 * MS,
            tail_probes: true,
            repeat_repairs: true,
            steered: false,
            receivers: vec![Plan::symmetric(one_way, loss)],
        }
    }
}

/// One receiver's path: up to the sender, down from it.
pub struct Lanes {
    pub up: Link<Rc<Packet>>,
    pub down: Link<Rc<Packet>>,
}

pub struct Pair {
    pub t0: Instant,
    pub now: Instant,
    pub sender: Sender,
    pub receivers: Vec<Rx>,
    pub lanes: Vec<Lanes>,
    /// Turns taken, for the record.
    pub steps: u64,
}

impl Pair {
    pub fn new(settings: Settings) -> Self {
        let t0 = Instant::now();
        let policy = Policy {
            max_receivers: 0,
            token: None,
            join_mode: settings.join_mode,
            budget: settings.budget,
            keyframe_interval: settings.keyframe_interval,
        };
        let encoder = media::Encoder::new(settings.stream, settings.seed);
        let mut sender = Sender::new(policy, encoder, settings.frames, settings.end_of_stream, t0);
        sender.tail_probes = settings.tail_probes;
        sender.repeat_repairs = settings.repeat_repairs;
        sender.steering = settings.steered.then(|| Steering::new(200, 0));
        let mut lanes = Vec::new();
        let mut receivers = Vec::new();
        for (i, plan) in settings.receivers.into_iter().enumerate() {
            let seed = settings.seed.wrapping_mul(1000).wrapping_add(2 * i as u64);
            let mut up = Link::new(plan.up.clone(), seed);
            let mut down = Link::new(plan.down.clone(), seed + 1);
            for &(start, len) in &plan.outages {
                up.outages.push((t0 + start, t0 + start + len));
                down.outages.push((t0 + start, t0 + start + len));
            }
            lanes.push(Lanes { up, down });
            receivers.push(Rx::new(plan, t0));
        }
        Pair {
            t0,
            now: t0,
            sender,
            receivers,
            lanes,
            steps: 0,
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn next_event(&self) -> Option<Instant> {
        let lanes = self
            .lanes
            .iter()
            .flat_map(|l| [l.up.next_arrival(), l.down.next_arrival()]);
        let receivers = self
            .receivers
            .iter()
            .map(|r| r.next_event(self.now, self.t0));
        lanes
            .chain(receivers)
            .chain([self.sender.next_event(self.now)])
            .flatten()
            .min()
    }

    /// Runs until `until` after the start, one event at a time.
    pub fn run_until(&mut self, until: Duration) {
        let until = self.t0 + until;
        while self.now < until {
            // Whatever fell due during the last turn is taken a microsecond later: time
            // always moves on, as it does for a real loop.
            let soonest = self.now + Duration::from_micros(1);
            let next = self.next_event().map_or(until, |t| t.max(soonest));
            self.now = next.min(until);
            self.step();
        }
    }

    /// Runs until the encoder has made every frame, then `after` more (the frames in
    /// flight land); at most a minute of simulated time.
    pub fn run_past_the_last_frame(&mut self, after: Duration) {
        while !self.sender.made_all() && self.elapsed() < Duration::from_secs(60) {
            let next = self.elapsed() + 100 * MS;
            self.run_until(next);
        }
        let end = self.elapsed() + after;
        self.run_until(end);
    }

    /// A turn for each side that has something due: like the real loops, each wakes for
    /// its packets and its own timers only.
    fn step(&mut self) {
        self.steps += 1;
        let now = self.now;
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let packets = self.lanes.iter().any(|l| due(l.up.next_arrival()));
        if packets || due(self.sender.next_event(now)) {
            self.sender.turn(now, &mut self.lanes);
        }
        for (rx, lane) in self.receivers.iter_mut().zip(self.lanes.iter_mut()) {
            if due(lane.down.next_arrival()) || due(rx.next_event(now, self.t0)) {
                rx.turn(now, self.t0, lane, &self.sender.taken);
            }
        }
    }

    /// What receiver `i` got of the frames from `from` on.
    pub fn report(&self, i: usize, from: u64) -> Report {
        let rx = &self.receivers[i];
        let budget = rx.plan.latency;
        let out: Vec<&Output> = rx.out.iter().filter(|o| o.seq >= from).collect();
        let mut latencies: Vec<Duration> = out
            .iter()
            .filter(|o| o.decodable && !o.catch_up)
            .map(|o| o.latency())
            .collect();
        latencies.sort();
        Report {
            sent: (self.sender.taken.len() as u64).saturating_sub(from),
            delivered: out.len(),
            decodable: out.iter().filter(|o| o.decodable).count(),
            on_time: latencies.iter().filter(|l| **l <= budget).count(),
            gaps: out.iter().filter(|o| o.gap).count(),
            flagged_late: out.iter().filter(|o| o.late).count(),
            latencies,
            longest_stall: self.longest_stall(i),
        }
    }

    /// The longest time receiver `i` showed no new decodable picture, from 2 s after its
    /// first one (or from its connecting, if none came) to the end of the run; the
    /// whole run when nothing decodable came.
    fn longest_stall(&self, i: usize) -> Duration {
        let rx = &self.receivers[i];
        let shown: Vec<Instant> = rx
            .out
            .iter()
            .filter(|o| o.decodable && !o.catch_up)
            .map(|o| o.at)
            .collect();
        let Some(&first) = shown.first() else {
            return self.now - (self.t0 + rx.plan.at);
        };
        // The stream's end: the last frame made, plus the latency it had to arrive in.
        let end =
            (self.sender.taken.last()).map_or(self.now, |t| (t.at + rx.plan.latency).min(self.now));
        let from = first + STALL_GRACE;
        let mut last = from;
        let mut longest = Duration::ZERO;
        for &at in shown.iter().chain([&end]).filter(|&&at| at > from) {
            longest = longest.max(at - last);
            last = at;
        }
        longest
    }
}

/// What the stall figure leaves out after the first picture: the start-up, where an
/// estimate and an encoder settle (issue 31 counts from 2 s).
const STALL_GRACE: Duration = Duration::from_secs(2);

/// One receiver's outcome, as the benchmark counts it.
#[derive(Debug, Clone)]
pub struct Report {
    /// Frames the sender took.
    pub sent: u64,
    pub delivered: usize,
    pub decodable: usize,
    /// Decodable, live (not catch-up) and within the budget.
    pub on_time: usize,
    /// Frames output after a skip (DISCONT, GAP).
    pub gaps: usize,
    /// Frames output with the LATE flag.
    pub flagged_late: usize,
    /// Of decodable live frames, sorted.
    pub latencies: Vec<Duration>,
    /// The longest time without a new decodable picture (see `Pair::longest_stall`).
    pub longest_stall: Duration,
}

impl Report {
    pub fn on_time_share(&self) -> f64 {
        self.on_time as f64 / self.sent.max(1) as f64
    }

    /// The `p`-th percentile latency (0..=100) of decodable live frames.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let i = ((p / 100.0) * (n - 1) as f64).round() as usize;
        self.latencies[i.min(n - 1)]
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} on time ({:.1}%), {} delivered, {} decodable, {} after a gap, {} flagged \
             late, p50 {:?}, p99 {:?}, max {:?}, longest stall {:?}",
            self.on_time,
            self.sent,
            100.0 * self.on_time_share(),
            self.delivered,
            self.decodable,
            self.gaps,
            self.flagged_late,
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0),
            self.longest_stall,
        )
    }
}
