//! The sender's core, without I/O: one stream to many receivers. It owns the groups and
//! their frames, each receiver's queues, shedding and expiry under its latency budget,
//! newest-first writing, backpressure across receivers, admission, joining from the cache,
//! and keyframe-request merging. Every input carries `now`; what goes on the wire goes
//! through [`Streams`], which `server.rs` implements on a quiche connection and the tests
//! on a recording double. The networking thread (server.rs) feeds it packets' news, the
//! streaming thread's work and the clock, and carries out what it decides.
//!
//! Beside it, what the sink's streaming thread decides before it hands an access unit over:
//! [`intake`] (nothing before the first IRAP; numbering and drop cost) and [`untimed`]
//! (the times of input without timestamps).

pub mod bonding;
pub mod budget;
pub mod intake;
pub mod join;
mod keyframes;
mod overrun;
mod pacer;
mod queue;
mod rate;
mod receiver;
pub mod repair;
mod rescue;
mod routes;
pub mod steering;
#[cfg(test)]
mod tests;
pub mod untimed;

pub use keyframes::Keyframes;
pub use receiver::{Phase, Receiver, MAX_BACKLOG};

use crate::media::frame::Frame;
use crate::policy::gate;
use crate::protocol::{error_code, Command, FrameFlags, FrameHeader};
use crate::stats::{ConnectionStats, SenderStats};
use join::{CachedFrame, JoinCache, JoinMode};
use overrun::Overrun;
use rate::Sample;
use receiver::{BEHIND_FOR, GONE_QUIET};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A receiver silent for this long (its keepalive probes run faster) was cut off.
const PEER_SILENCE: Duration = Duration::from_millis(150);

/// What the core writes through: one receiver's connection.
pub trait Streams {
    /// Writes up to `data.len()` bytes to `stream`; how many it took. `Done` (or
    /// `StreamLimit`) when it takes none now; any other error: the stream is gone.
    fn send(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<usize, quiche::Error>;
    /// The stream's urgency (lower first); also opens it.
    fn prioritize(&mut self, stream: u64, urgency: u8, incremental: bool);
    /// Abandons what was written to `stream`, telling the receiver `code`.
    fn reset(&mut self, stream: u64, code: u64);
    /// Closes the connection with an application error.
    fn close(&mut self, code: u64, reason: &str);
    /// We closed it (or are closing it) with an error of ours.
    fn closed_by_us(&self) -> bool;
    /// Closed, or closing either way: nothing more goes to it.
    fn closing(&self) -> bool;
    /// What the path carries now, once the connection has a path.
    fn path(&self) -> Option<Path>;
    fn stats(&self) -> ConnectionStats;
}

/// One path sample.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    pub rtt: Duration,
    pub min_rtt: Duration,
    /// Bytes per second.
    pub delivery_rate: u64,
    pub sent_bytes: u64,
    pub lost_bytes: u64,
    /// The peer's address is validated (the handshake is done): until then it may be sent
    /// at most 3x what it sent (RFC 9000, 8.1).
    pub validated: bool,
}

/// A receiver asking to be served.
pub struct Admission<'a> {
    pub id: u64,
    pub peer: SocketAddr,
    /// The token from its HELLO (empty when it sent none).
    pub token: &'a [u8],
}

/// What happens to a receiver, for the element to report.
#[derive(Debug)]
pub enum ReceiverEvent {
    /// Admitted: media follows.
    Connected { id: u64, peer: SocketAddr },
    /// Refused at HELLO (wrong token, server full, or the application said no) and closed
    /// with `code`.
    Rejected {
        id: u64,
        peer: SocketAddr,
        code: u64,
        reason: String,
    },
    /// An admitted receiver is gone.
    Disconnected {
        id: u64,
        peer: SocketAddr,
        reason: String,
    },
    /// It sent an application command (a serialized GstStructure).
    Command {
        id: u64,
        peer: SocketAddr,
        structure: String,
    },
}

/// What the paths to the receivers carry, for steering the encoder.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    /// The lowest receiver's estimate of its path's rate, bit/s: at this rate every
    /// receiver keeps up.
    pub bitrate: u64,
    /// Receivers with an estimate.
    pub receivers: u32,
    /// The stream's rate as the sink takes it, bit/s (over the last 2 s; None before).
    pub stream_bitrate: Option<u64>,
    /// The stream has run faster than `bitrate` for a few seconds: warn, once.
    pub overrun: bool,
    /// That receiver's path has shown its limit; until then `bitrate` is what the stream
    /// gave, not a limit (rate.rs).
    pub limited: bool,
    /// Groups sent late so far, to every receiver (rescue.rs): keyframes too large for a
    /// budget.
    pub late_groups: u64,
}

/// Who is served and how they start.
pub struct Policy {
    /// Receivers served at once (0: no limit); one more is closed with SERVER_FULL.
    pub max_receivers: usize,
    /// The token every receiver's HELLO must carry (None: any); a wrong or missing one is
    /// closed with REJECTED, before the application is asked.
    pub token: Option<Vec<u8>>,
    pub join_mode: JoinMode,
    /// Where each receiver's latency budget comes from.
    pub budget: budget::Policy,
    /// Shortest time between two keyframes asked of upstream.
    pub keyframe_interval: Duration,
}

/// How far the streaming thread may run ahead, and whether the stream has drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// Receivers told the stream.
    pub ready: usize,
    /// The fastest receiver's backlog: it sets the pace (see MAX_BACKLOG).
    pub backlog: usize,
    /// The stream ended and every receiver that is there has all of it.
    pub drained: bool,
}

pub struct Fanout<C> {
    policy: Policy,
    receivers: HashMap<u64, Receiver<C>>,
    caps: Option<String>,
    next_seq: u64,
    eos: bool,
    keyframes: Keyframes,
    /// Receivers closed at HELLO.
    rejected: u64,
    /// The group in progress, for receivers joining mid-group (join-mode=cached).
    join_cache: JoinCache,
    /// The latest VPS, SPS and PPS, for a receiver whose first IRAP comes without them.
    parameter_sets: Option<Arc<[u8]>>,
    next_estimate: Instant,
    overrun: Overrun,
    /// An Instant and CLOCK_MONOTONIC ns at the same moment: JOIN carries the latter.
    epoch: (Instant, u64),
    /// For the element, in order.
    events: Vec<ReceiverEvent>,
    /// Bonded receivers (by the ID they go by): their latest access units as they were
    /// cut into parts, for REPAIR_REQUEST.
    recent: HashMap<u64, bonding::Recent>,
}

impl<C: Streams> Fanout<C> {
    /// `epoch`: an Instant and the CLOCK_MONOTONIC ns it was taken at.
    pub fn new(policy: Policy, epoch: (Instant, u64)) -> Self {
        let now = epoch.0;
        Fanout {
            keyframes: Keyframes::new(policy.keyframe_interval),
            policy,
            receivers: HashMap::new(),
            caps: None,
            next_seq: 0,
            eos: false,
            rejected: 0,
            join_cache: JoinCache::default(),
            parameter_sets: None,
            next_estimate: now + rate::UPDATE,
            overrun: Overrun::default(),
            epoch,
            events: Vec::new(),
            recent: HashMap::new(),
        }
    }

    fn monotonic_ns(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_nanos() as u64
    }

    /// A new connection `id`, from `peer`.
    pub fn add(&mut self, id: u64, conn: C, peer: SocketAddr, now: Instant) {
        let budget = self.policy.budget;
        self.receivers
            .insert(id, Receiver::new(id, conn, peer, budget, now));
    }

    pub fn get(&self, id: u64) -> Option<&Receiver<C>> {
        self.receivers.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Receiver<C>> {
        self.receivers.get_mut(&id)
    }

    pub fn receivers(&self) -> impl Iterator<Item = &Receiver<C>> {
        self.receivers.values()
    }

    pub fn receivers_mut(&mut self) -> impl Iterator<Item = &mut Receiver<C>> {
        self.receivers.values_mut()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.receivers.keys().copied().collect()
    }

    /// What happened to receivers since the last call, in order.
    pub fn take_events(&mut self) -> Vec<ReceiverEvent> {
        std::mem::take(&mut self.events)
    }

    /// Receiver `id` sent a packet that decrypted. Returns true when it had been silent
    /// (an outage): it should be answered with a PING at once, so that its ACK restarts
    /// loss recovery now, not at the next, backed-off, probe timeout.
    pub fn heard_from(&mut self, id: u64, now: Instant) -> bool {
        let Some(r) = self.receivers.get_mut(&id) else {
            return false;
        };
        let silent = now.saturating_duration_since(r.last_rx) > PEER_SILENCE;
        r.last_rx = now;
        // If its group expired meanwhile it waits for an IRAP: ask for one now, a round
        // trip before its own request could arrive; unless another of its receiver's
        // routes carries the stream (it rejoins at the next IRAP, and loses nothing).
        let waits = r.described() && r.group.is_none();
        if silent && waits && !self.carried_elsewhere(id, now) {
            self.keyframes.want();
        }
        silent
    }

    /// The stream description; receivers already told one learn of a change at once.
    pub fn set_caps(&mut self, caps: String) {
        if self.caps.as_ref() != Some(&caps) {
            for r in self.receivers.values_mut().filter(|r| r.described()) {
                r.queue_command(&Command::Describe { caps: caps.clone() });
            }
        }
        self.caps = Some(caps);
    }

    /// An application command for receiver `to` (None: all); `in_stream`: pinned before
    /// the frame this many after the next one; None: at once.
    pub fn push_command(&mut self, to: Option<u64>, structure: String, in_stream: Option<u64>) {
        let before_seq = in_stream.map(|later| self.next_seq + later);
        if let Some(seq) = before_seq.filter(|_| self.policy.join_mode == JoinMode::Cached) {
            self.join_cache.push_command(seq, structure.clone());
        }
        let cmd = Command::Application {
            before_seq,
            structure,
        };
        for id in self.command_routes(to) {
            if let Some(r) = self.receivers.get_mut(&id) {
                r.queue_command(&cmd);
            }
        }
    }

    /// The stream ended after the frames pushed so far.
    pub fn end_of_stream(&mut self) {
        self.eos = true;
        for r in self.receivers.values_mut().filter(|r| r.described()) {
            r.end_of_stream(self.next_seq);
        }
    }

    /// Queues one frame, taken from the streaming thread at `queued` (`queued_ns` on
    /// CLOCK_MONOTONIC), to every receiver that can decode it.
    pub fn push_frame(&mut self, frame: Frame, queued: Instant, queued_ns: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.overrun.took(frame.data.as_ref().as_ref().len());
        let mut flags = FrameFlags::default();
        flags.set(FrameFlags::KEYFRAME, frame.keyframe);
        flags.set(FrameFlags::HEADER, frame.parameter_sets);
        flags.set(FrameFlags::DISCONT, frame.discont);
        let header = FrameHeader {
            seq,
            flags,
            pts: frame.pts,
            dts: frame.dts,
            duration: frame.duration,
            send_time: queued_ns,
            part: None,
            len: frame.data.as_ref().as_ref().len() as u64,
        };
        let mut encoded = Vec::with_capacity(32);
        header.encode(&mut encoded);
        if frame.parameter_sets {
            let old = self.parameter_sets.as_deref().unwrap_or_default();
            let sets = crate::media::h265::merge_parameter_sets(old, frame.data.as_ref().as_ref());
            if !sets.is_empty() {
                self.parameter_sets = Some(sets.into());
            }
        }
        if frame.keyframe {
            // This IRAP reaches everyone who asked before it.
            self.keyframes.satisfied();
        }
        let f = CachedFrame {
            header,
            encoded_header: encoded.into(),
            frame: Arc::new(frame),
        };
        let mut bonded: HashMap<u64, Vec<u64>> = HashMap::new();
        for r in self.receivers.values_mut().filter(|r| r.described()) {
            if r.bonded {
                bonded.entry(r.leader).or_default().push(r.id);
            } else {
                r.take_frame(&f, queued, self.parameter_sets.as_ref());
            }
        }
        for routes in bonded.into_values() {
            self.spread(&f, routes, queued);
        }
        if self.policy.join_mode == JoinMode::Cached {
            self.join_cache.push(f);
        }
    }

    /// Commands receiver `id` sent.
    pub fn receive_commands(&mut self, id: u64, commands: Vec<Command>, now: Instant) {
        if let Some(r) = self.receivers.get_mut(&id) {
            for cmd in commands {
                r.handle(cmd, now);
            }
        }
    }

    /// Receiver `id` broke the protocol: it is closed.
    pub fn violation(&mut self, id: u64, reason: &str) {
        if let Some(r) = self.receivers.get_mut(&id) {
            r.close(error_code::PROTOCOL_VIOLATION, reason);
        }
    }

    /// Closes receiver `id` if it has not said HELLO in time.
    pub fn check_hello(&mut self, id: u64, now: Instant) {
        let Some(r) = self.receivers.get_mut(&id) else {
            return;
        };
        if let Phase::Greeting { opened } = r.phase {
            if gate::hello_overdue(now, opened, false) && !r.conn.closed_by_us() {
                let reason = format!("no HELLO within {} s", gate::HELLO_WITHIN.as_secs());
                r.close(error_code::PROTOCOL_VIOLATION, &reason);
            }
        }
    }

    /// Answers what receiver `id` asked this turn, after its commands: admission if it
    /// said HELLO (asking `admit` unless the token or the limit decides), then its
    /// application commands (as events) and keyframe requests, which count only once it
    /// is admitted.
    pub fn answer(&mut self, id: u64, now: Instant, admit: &mut dyn FnMut(&Admission) -> bool) {
        let asking = self
            .receivers
            .get(&id)
            .is_some_and(|r| matches!(r.phase, Phase::Asking { .. }));
        // Counted only for a receiver waiting to be admitted: this runs for every receiver
        // on every turn. Receivers gone quiet or closing do not take a place.
        let served = if asking {
            let serving = self
                .receivers
                .values()
                .filter(|r| r.admitted() && !r.quiet(now) && !r.conn.closed_by_us());
            serving
                .map(|r| r.leader)
                .collect::<std::collections::HashSet<_>>()
                .len()
        } else {
            0
        };
        let Some(r) = self.receivers.get_mut(&id) else {
            return;
        };
        if asking && !r.conn.closed_by_us() {
            self.admit(id, served, admit);
        }
        let Some(r) = self.receivers.get_mut(&id) else {
            return;
        };
        // What came with HELLO counts once the receiver is admitted, never before.
        if !r.admitted() {
            r.commands_in.clear();
            r.keyframe_requested = false;
        }
        for structure in r.commands_in.drain(..) {
            self.events.push(ReceiverEvent::Command {
                id,
                peer: r.peer,
                structure,
            });
        }
        if std::mem::take(&mut r.keyframe_requested) {
            self.keyframes.want();
        }
        self.answer_repairs(id);
    }

    /// One turn's writing for an established receiver, after [`Fanout::answer`] (and the
    /// application's handlers, which may take a while: `now` is read after them): the
    /// stream description for one just admitted, then what waits. Returns whether media
    /// was written.
    pub fn serve(&mut self, id: u64, now: Instant) -> bool {
        let eos = self.eos.then_some(self.next_seq);
        let now_ns = self.monotonic_ns(now);
        let Some(r) = self.receivers.get_mut(&id) else {
            return false;
        };
        let mut wants_keyframe = false;
        if r.phase == Phase::Admitted {
            if let Some(caps) = &self.caps {
                let cached = self.policy.join_mode == JoinMode::Cached;
                let cache = cached.then_some(&self.join_cache);
                let sets = self.parameter_sets.as_ref();
                let joined = r.describe(caps, eos, cache, sets, now_ns);
                // Before the first frame, the first IRAP is on its way anyway; after the
                // last, none is.
                let started = self.next_seq > 0 && eos.is_none();
                wants_keyframe = !joined && started && self.policy.join_mode != JoinMode::Keyframe;
            }
        }
        if wants_keyframe && !self.carried_elsewhere(id, now) {
            self.keyframes.want();
        }
        let answered = self.keyframes.answered();
        self.receivers
            .get_mut(&id)
            .is_some_and(|r| r.flush(now, answered))
    }

    /// Decides on receiver `id`, which said HELLO: the token, the limit of `served`
    /// receivers, then the application.
    fn admit(&mut self, id: u64, served: usize, admit: &mut dyn FnMut(&Admission) -> bool) {
        let route = self.receivers.get(&id).and_then(|r| r.route);
        let joins = self.route_leader(id, route);
        let Some(r) = self.receivers.get_mut(&id) else {
            return;
        };
        let Phase::Asking { token } = &r.phase else {
            return;
        };
        let policy = &self.policy;
        let wrong_token = policy
            .token
            .as_ref()
            .is_some_and(|t| t.len() != token.len() || !boring::memcmp::eq(t, token));
        let asking = Admission {
            id,
            peer: r.peer,
            token,
        };
        let refusal = if wrong_token {
            let shown = if token.is_empty() { "no" } else { "a wrong" };
            Some((error_code::REJECTED, format!("{shown} token")))
        } else if let Some(leader) = joins {
            // Another route of a receiver admitted already: one admission for them all.
            r.leader = leader;
            r.phase = Phase::Admitted;
            log::info!("receiver {leader}: route {id} ({}) joins it", r.peer);
            return;
        } else if policy.max_receivers > 0 && served >= policy.max_receivers {
            let why = format!("serving the maximum of {} receivers", policy.max_receivers);
            Some((error_code::SERVER_FULL, why))
        } else if !admit(&asking) {
            Some((error_code::REJECTED, "refused by the sender".to_string()))
        } else {
            None
        };
        let peer = r.peer;
        if let Some((code, reason)) = refusal {
            log::info!("receiver {id} ({peer}): rejected: {reason}");
            r.close(code, &reason);
            r.phase = Phase::Refused;
            self.rejected += 1;
            self.events.push(ReceiverEvent::Rejected {
                id,
                peer,
                code,
                reason,
            });
        } else {
            r.phase = Phase::Admitted;
            self.events.push(ReceiverEvent::Connected { id, peer });
        }
    }

    /// Every rate::UPDATE: each receiver's estimate, and the lowest for the element.
    pub fn estimate(&mut self, now: Instant) -> Option<Estimate> {
        if now < self.next_estimate {
            return None;
        }
        self.next_estimate = now + rate::UPDATE;
        // Each receiver's estimate, and whether its path has shown its limit: of its
        // routes, the lowest when each carries the whole stream, their sum when bonded.
        let mut per_receiver: HashMap<u64, (f64, bool)> = HashMap::new();
        for r in self.receivers.values_mut() {
            let Some(path) = r.conn.path() else {
                continue;
            };
            let sample = Sample {
                sent_bytes: path.sent_bytes,
                lost_bytes: path.lost_bytes,
                rtt: path.rtt,
                min_rtt: path.min_rtt,
                queued_bytes: r.out_bytes,
                expired: r.groups_expired,
            };
            // A quiet receiver (an outage, or gone) says nothing about its path's rate.
            if !r.described() || r.quiet(now) {
                continue;
            }
            if let Some(e) = r.estimator.update(now, sample) {
                log::trace!(
                    "receiver {}: estimate {:.0} kbit/s, rtt {:?} (min {:?}), queued {} B, \
                     pacing at {:?} bit/s",
                    r.id,
                    e / 1e3,
                    sample.rtt,
                    sample.min_rtt,
                    sample.queued_bytes,
                    r.pacer.as_ref().map(|p| p.rate_bps())
                );
                let limited = r.estimator.limited();
                let bonded = r.bonded;
                per_receiver
                    .entry(r.leader)
                    .and_modify(|(total, lim)| {
                        *total = if bonded { *total + e } else { total.min(e) };
                        *lim |= limited;
                    })
                    .or_insert((e, limited));
            }
        }
        let receivers = per_receiver.len() as u32;
        let lowest = per_receiver
            .into_values()
            .min_by(|a, b| a.0.total_cmp(&b.0));
        // Only a path that showed its limit can be outrun.
        let limit = lowest.filter(|l| l.1).map(|l| l.0);
        let (stream, overrun) = self.overrun.update(now, limit);
        let late_groups = self.receivers.values().map(|r| r.groups_late).sum();
        lowest.map(|(bitrate, limited)| Estimate {
            bitrate: bitrate as u64,
            receivers,
            stream_bitrate: stream.map(|s| s as u64),
            overrun,
            limited,
            late_groups,
        })
    }

    /// Whether upstream took the last keyframe request (keyframes.rs).
    pub fn keyframes_answered(&mut self, answered: bool) {
        self.keyframes.set_answered(answered);
    }

    /// Whether a merged keyframe request goes upstream now.
    pub fn poll_keyframe(&mut self, now: Instant) -> bool {
        self.keyframes.poll(now)
    }

    /// The earliest moment something here is due, for the loop's poll.
    pub fn timeout(&self, now: Instant) -> Option<Instant> {
        let per_receiver = self.receivers.values().flat_map(|r| {
            // When a backlogged receiver would count as quiet.
            let quiet_at = (r.out_bytes > 0 && !r.quiet(now)).then_some(r.last_rx + GONE_QUIET);
            // Once closed for it, a receiver draining is no longer due anything.
            let hello = match r.phase {
                Phase::Greeting { opened } if !r.conn.closed_by_us() => {
                    gate::hello_due(opened, false)
                }
                _ => None,
            };
            [
                quiet_at,
                r.pace_at,
                r.behind_since.map(|t| t + BEHIND_FOR),
                hello,
            ]
        });
        per_receiver
            .chain([self.keyframes.due(now), Some(self.next_estimate)])
            .flatten()
            .min()
    }

    /// Removes receiver `id`, whose connection closed for `why`; an admitted one is
    /// reported gone.
    pub fn remove(&mut self, id: u64, why: String) -> Option<Receiver<C>> {
        let r = self.receivers.remove(&id)?;
        let others = self
            .receivers
            .values()
            .any(|o| o.leader == r.leader && o.admitted());
        if !others {
            self.recent.remove(&r.leader);
        }
        if r.admitted() && !others {
            self.events.push(ReceiverEvent::Disconnected {
                id: r.leader,
                peer: r.peer,
                reason: why,
            });
        } else if r.admitted() {
            log::info!("receiver {}: route {id} ({}) gone: {why}", r.leader, r.peer);
        }
        Some(r)
    }

    /// How far the streaming thread may run ahead.
    pub fn pressure(&self, now: Instant) -> Pressure {
        let ready = self.receivers.values().filter(|r| r.described()).count();
        // The fastest receiver sets the pace (see MAX_BACKLOG); one waiting for an IRAP
        // has nothing queued and says nothing about its pace, nor does one gone quiet.
        let backlog = self
            .receivers
            .values()
            .filter(|r| r.described() && r.group.is_some() && !r.quiet(now))
            .map(|r| r.out_bytes)
            .min()
            .unwrap_or(0);
        // A receiver gone quiet does not hold up EOS either.
        let drained = self.eos
            && self
                .receivers
                .values()
                .all(|r| !r.described() || r.quiet(now));
        Pressure {
            ready,
            backlog,
            drained,
        }
    }

    pub fn stats(&self, now: Instant) -> SenderStats {
        SenderStats {
            frames_in: self.next_seq,
            keyframe_requests: self.keyframes.requested,
            receivers_rejected: self.rejected,
            stream_rate: self.overrun.stream_rate().map_or(0, |r| r as u64),
            receivers: receiver::grouped_stats(self.receivers.values(), now),
        }
    }

    /// Closes every receiver: the sender stops. Returns the admitted ones, reported gone.
    pub fn shutdown(&mut self) -> Vec<ReceiverEvent> {
        let mut farewells = Vec::new();
        for r in self.receivers.values_mut() {
            r.close(error_code::NO_ERROR, "sender stopped");
            if r.admitted() {
                farewells.push(ReceiverEvent::Disconnected {
                    id: r.id,
                    peer: r.peer,
                    reason: "sender stopped".into(),
                });
            }
        }
        farewells
    }
}
