//! One receiver as the sender's core sees it: where it is in its life (Phase), what waits
//! for it on each stream, and what it is owed (budget, pacing, shedding, expiry).

mod expire;
mod routes;

pub(super) use routes::grouped_stats;

use super::queue::{shed_marker, Chunk, ChunkData, Sheddable, StreamOut};
use super::repair::{self, TailProbe};
use super::rescue;
use super::Streams;
use crate::policy::ratelimit::{self, Bucket};
use crate::protocol::control::{group_stream, CONTROL_STREAM};
use crate::protocol::MAX_DATAGRAM_SIZE;
use crate::protocol::{
    error_code, put_group_end, put_group_opening, put_preamble, Command, FrameFlags, Route,
    StreamKind, HELLO_BONDED, HELLO_TAKES_SHED, VERSION,
};
use crate::sender::budget::{self, Deadlines};
use crate::sender::join::{CachedFrame, JoinCache};
use crate::sender::pacer::{self, Pacer};
use crate::sender::rate::Estimator;
use crate::stats::ReceiverStats;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of a frame in one REPAIR: under the smallest command limit a receiver would set.
const REPAIR_PART: usize = 16 * 1024;
/// A route not heard from for this long shows as down in stats.
const LIVE_WITHIN: Duration = crate::protocol::ROUTE_SILENCE;
/// Bytes of commands (caps, application commands) that the connection would not take for
/// a receiver's control stream (they are beyond its flow-control window) beyond which it
/// is closed with TOO_SLOW: 16 of the longest commands, where a receiver that reads keeps
/// nothing there.
pub(super) const MAX_CONTROL_BYTES: usize = 1 << 20;
/// Messages waiting on a receiver's control stream beyond which its PINGs go unanswered:
/// one that floods PINGs and never reads would otherwise pile up a PONG here for each.
const MAX_CONTROL_QUEUED: usize = 64;
/// Bytes the streaming thread may queue ahead of the fastest receiver before it waits. A
/// receiver twice this far behind for BEHIND_FOR has its backlog dropped and resumes at the
/// next IRAP: one slow receiver never holds back the others, and the memory it holds stays
/// bounded.
pub const MAX_BACKLOG: usize = 8 << 20;
/// How long a receiver may stay 2 x MAX_BACKLOG behind (never beyond 4 x). Not at once: a
/// receiver whose application stopped reading looks fastest while QUIC's flow-control
/// windows (tens of MB) absorb the stream, and for that while a healthy one can look far
/// behind it. Measured in fanout's stalled-receiver test: 2 runs in 8 reset the healthy
/// receiver without it.
pub(super) const BEHIND_FOR: Duration = Duration::from_secs(1);
/// A receiver silent this long (it probes every 100 ms when it hears nothing) is behind an
/// outage or gone: it no longer holds the stream back, and once its backlog reaches
/// MAX_BACKLOG that is dropped; if it comes back it resumes at the next IRAP.
pub(super) const GONE_QUIET: Duration = Duration::from_secs(1);

/// Where a receiver is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Connected at `opened`: it has until gate::HELLO_WITHIN after to say HELLO.
    Greeting { opened: Instant },
    /// Said HELLO with `token`: waits for admission.
    Asking { token: Vec<u8> },
    /// Refused at HELLO and closed.
    Refused,
    /// Admitted: it is told the stream once the caps are known.
    Admitted,
    /// Told the stream: it gets media, and once `ended`, the end of the stream.
    Described { ended: bool },
}

pub struct Receiver<C> {
    pub(super) id: u64,
    pub(super) conn: C,
    pub(super) peer: SocketAddr,
    pub(super) phase: Phase,
    control_out: StreamOut,
    /// Group streams with bytes to write, oldest first.
    groups_out: VecDeque<StreamOut>,
    /// Bytes queued on every stream and not yet taken by the connection.
    pub(super) out_bytes: usize,
    /// The open group stream; None until the next IRAP when the receiver just arrived or
    /// its group expired.
    pub(super) group: Option<u64>,
    groups_opened: u64,
    pub(super) groups_expired: u64,
    /// Groups rescued (rescue.rs): sent late because their keyframe could not be on time.
    pub(super) groups_late: u64,
    /// The lowest TemporalId shed for the rest of the open group (see StreamOut::shed).
    group_cut: Option<u8>,
    frames_shed: u64,
    /// Frames the connection took whole, and frames it will never get (ReceiverStats).
    frames_sent: u64,
    frames_dropped: u64,
    keyframe_requests: u64,
    /// Where its budget comes from.
    policy: budget::Policy,
    /// Its latency budget, from its HELLO and the policy, announced to the receiver, which
    /// drops frames arriving later (None: no budget, or no HELLO yet).
    pub(super) budget: Option<Duration>,
    /// Probe packets after each burst of media, so a lost tail is found in a round trip.
    tail: TailProbe,
    /// Its HELLO said it takes shed frames (HELLO_TAKES_SHED).
    takes_shed: bool,
    /// It asked for a keyframe this turn, within its rate.
    pub(super) keyframe_requested: bool,
    /// The parameter sets went out in a group that was not reset, and the receiver has not
    /// asked for a keyframe since: IRAPs need none added.
    has_parameter_sets: bool,
    /// Since when its backlog has been 2 x MAX_BACKLOG or more.
    pub(super) behind_since: Option<Instant>,
    /// Its queue was dropped for being too far behind and no group has gone out whole
    /// since: dropped again, it is closed (TOO_SLOW).
    dropped_behind: bool,
    /// Application commands it sent, not yet reported.
    pub(super) commands_in: Vec<String>,
    /// Bonded: what it asked for again (REPAIR_REQUEST: frame, offset, length), not yet
    /// answered.
    pub(super) repairs_asked: Vec<(u64, u64, u64)>,
    /// What it may ask per second (ratelimit.rs).
    command_limit: Bucket,
    keyframe_limit: Bucket,
    pub(super) last_rx: Instant,
    pub(super) estimator: Estimator,
    /// With a latency budget, once the network has shown a standing queue (pacer.rs).
    pub(super) pacer: Option<Pacer>,
    /// The pacer held media back at the last flush.
    held_back: bool,
    /// While it holds media back: when the next packet's worth may go.
    pub(super) pace_at: Option<Instant>,
    /// One of several routes of a receiver (its HELLO said which): None for most.
    pub(super) route: Option<Route>,
    /// Its routes are bonded: it gets each access unit's part (bonding.rs), not the whole.
    pub(super) bonded: bool,
    /// The ID its receiver goes by: its own, or its receiver's first route's.
    pub(super) leader: u64,
}

impl<C: Streams> Receiver<C> {
    pub(super) fn new(
        id: u64,
        conn: C,
        peer: SocketAddr,
        policy: budget::Policy,
        now: Instant,
    ) -> Self {
        Receiver {
            id,
            conn,
            peer,
            phase: Phase::Greeting { opened: now },
            tail: TailProbe::default(),
            control_out: StreamOut::new(CONTROL_STREAM),
            groups_out: VecDeque::new(),
            out_bytes: 0,
            group: None,
            groups_opened: 0,
            groups_expired: 0,
            groups_late: 0,
            group_cut: None,
            frames_shed: 0,
            frames_sent: 0,
            frames_dropped: 0,
            keyframe_requests: 0,
            policy,
            budget: None,
            takes_shed: false,
            keyframe_requested: false,
            has_parameter_sets: false,
            behind_since: None,
            dropped_behind: false,
            commands_in: Vec::new(),
            repairs_asked: Vec::new(),
            command_limit: Bucket::new(ratelimit::COMMANDS, now),
            keyframe_limit: Bucket::new(ratelimit::KEYFRAME_REQUESTS, now),
            last_rx: now,
            estimator: Estimator::default(),
            pacer: None,
            held_back: false,
            pace_at: None,
            route: None,
            bonded: false,
            leader: id,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Its packets come from `peer` now (a NAT rebinding, or it moved), and QUIC validated
    /// that path: the same receiver, at a new address.
    pub fn moved(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    pub fn conn(&self) -> &C {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    /// It said HELLO (whatever became of it).
    pub fn said_hello(&self) -> bool {
        !matches!(self.phase, Phase::Greeting { .. })
    }

    /// Admitted: it counts as served, and its going is reported.
    pub fn admitted(&self) -> bool {
        matches!(self.phase, Phase::Admitted | Phase::Described { .. })
    }

    /// Told the stream: it gets media.
    pub fn described(&self) -> bool {
        matches!(self.phase, Phase::Described { .. })
    }

    /// Media waits for it.
    pub fn has_media_queued(&self) -> bool {
        !self.groups_out.is_empty()
    }

    /// Whether the packets that carry repairs go out twice this turn (repair.rs).
    pub fn repeats_repairs(&self) -> bool {
        self.conn.path().is_some_and(|p| repair::repeats(&p))
    }

    /// After a turn of sending: `wrote_media`, media bytes went to the connection. A burst
    /// that left nothing queued is followed by probes (repair.rs, TailProbe).
    pub fn after_send(&mut self, wrote_media: bool) {
        let retransmitted = self.conn.stats().packets_retransmitted as usize;
        let queued = self.has_media_queued();
        self.tail.after_turn(wrote_media, retransmitted, queued);
    }

    /// Whether to send a probe packet now; `idle`: the connection holds no paced packet
    /// back. Ask until false.
    pub fn probe(&mut self, now: Instant, idle: bool) -> bool {
        self.tail.poll(now, idle)
    }

    /// Whether this receiver has gone quiet (see GONE_QUIET).
    pub(super) fn quiet(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_rx) > GONE_QUIET
    }

    pub(super) fn stats(&self) -> ReceiverStats {
        ReceiverStats {
            id: self.id,
            peer: self.peer,
            admitted: self.admitted(),
            connection: self.conn.stats(),
            frames_sent: self.frames_sent,
            frames_dropped: self.frames_dropped,
            frames_shed: self.frames_shed,
            groups_reset: self.groups_expired,
            groups_late: self.groups_late,
            path_rate: self.estimator.current().map_or(0, |e| e as u64),
            keyframe_requests: self.keyframe_requests,
            keyframe_requests_dropped: self.keyframe_limit.dropped,
            commands_dropped: self.command_limit.dropped,
            queued_bytes: self.out_bytes as u64,
            latency_budget: self.budget.map_or(0, |b| b.as_nanos() as u64),
            routes: Vec::new(),
        }
    }

    fn queue(&mut self, stream: u64, data: ChunkData, fin: bool, expires: Option<Instant>) {
        self.queue_chunk(stream, Chunk::plain(data, fin, expires));
    }

    fn queue_chunk(&mut self, stream: u64, chunk: Chunk) {
        self.out_bytes += chunk.data.bytes().len();
        if stream == CONTROL_STREAM {
            self.control_out.push(chunk);
            return;
        }
        if self.groups_out.back().is_none_or(|g| g.stream != stream) {
            self.groups_out.push_back(StreamOut::new(stream));
        }
        if let Some(g) = self.groups_out.back_mut() {
            g.push(chunk);
        }
    }

    /// Queues a command on the control stream (see flush for a receiver that does not
    /// read it).
    pub(super) fn queue_command(&mut self, cmd: &Command) {
        if self.conn.closing() {
            return;
        }
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes);
        self.queue(CONTROL_STREAM, ChunkData::Owned(bytes), false, None);
    }

    pub(super) fn close(&mut self, code: u64, reason: &str) {
        let (id, peer) = (self.id, self.peer);
        if [error_code::PROTOCOL_VIOLATION, error_code::TOO_SLOW].contains(&code) {
            // A misbehaving peer not yet admitted gets no receiver-disconnected message.
            log::warn!("receiver {id} ({peer}): closing: {reason}");
        } else {
            log::info!("receiver {id} ({peer}): closing: {reason}");
        }
        self.conn.close(code, reason);
    }

    /// Takes one command from the receiver.
    pub(super) fn handle(&mut self, cmd: Command, now: Instant) {
        log::trace!("receiver {}: {cmd:?}", self.id);
        let greeting = matches!(self.phase, Phase::Greeting { .. });
        match cmd {
            Command::Hello {
                version,
                options,
                token,
                latency,
                route,
            } if greeting => {
                if version != VERSION {
                    self.close(
                        error_code::UNSUPPORTED_VERSION,
                        &format!("protocol version {version} not supported"),
                    );
                    return;
                }
                self.phase = Phase::Asking { token };
                self.route = route;
                self.bonded = route.is_some() && options & HELLO_BONDED != 0;
                // A part is never shed: the other parts would be sent for nothing.
                self.takes_shed = options & HELLO_TAKES_SHED != 0 && !self.bonded;
                self.budget = self.policy.for_receiver(latency.map(Duration::from_nanos));
                log::debug!("receiver {}: latency budget {:?}", self.id, self.budget);
                // Control first: caps and commands must never wait behind media.
                self.conn.prioritize(CONTROL_STREAM, 0, true);
                let mut preamble = Vec::new();
                put_preamble(&mut preamble, StreamKind::Control);
                self.queue(CONTROL_STREAM, ChunkData::Owned(preamble), false, None);
                if let Some(budget) = self.budget {
                    self.queue_command(&Command::LatencyBudget(budget.as_nanos() as u64));
                }
            }
            _ if greeting => {
                self.close(error_code::PROTOCOL_VIOLATION, "first command is not HELLO");
            }
            Command::Ping(n) if self.control_out.chunks.len() < MAX_CONTROL_QUEUED => {
                self.queue_command(&Command::Pong(n))
            }
            Command::KeyframeRequest if self.keyframe_limit.take(now) => {
                log::debug!("receiver {}: keyframe request", self.id);
                // It skipped a group, perhaps the one whose IRAP carried the sets (it gives
                // up on a group on its own too, which we never learn): the next IRAP
                // brings them again.
                self.has_parameter_sets = false;
                self.keyframe_requested = true;
                self.keyframe_requests += 1;
            }
            Command::KeyframeRequest => {
                log::debug!("receiver {}: keyframe request over its rate", self.id);
            }
            Command::Goodbye { code, reason } => {
                log::info!("receiver {}: goodbye {code:#x}: {reason}", self.id);
                self.conn.close(error_code::NO_ERROR, "goodbye");
            }
            Command::Application { structure, .. } if self.command_limit.take(now) => {
                self.commands_in.push(structure);
            }
            Command::Application { .. } => {
                log::debug!("receiver {}: command over its rate: dropped", self.id);
            }
            Command::RepairRequest { seq, offset, len }
                if self.bonded && self.command_limit.take(now) =>
            {
                self.repairs_asked.push((seq, offset, len));
            }
            other => log::debug!("receiver {}: ignoring {other:?}", self.id),
        }
    }

    /// Tells the receiver the stream and starts its media: with a `cache` that holds a
    /// group, that group at once (JOIN, then its frames, which carry no deadline: they
    /// are old by design); else at the next IRAP. `eos`: the stream already ended, before
    /// frame number `eos`. `now_ns`: CLOCK_MONOTONIC now, for JOIN. Returns whether it
    /// joined from the cache.
    pub(super) fn describe(
        &mut self,
        caps: &str,
        eos: Option<u64>,
        cache: Option<&JoinCache>,
        parameter_sets: Option<&Arc<[u8]>>,
        now_ns: u64,
    ) -> bool {
        let group = cache
            .map(JoinCache::frames)
            .filter(|f| !f.is_empty() && eos.is_none());
        if let Some(frames) = group {
            let live_seq = frames[frames.len() - 1].header.seq + 1;
            self.queue_command(&Command::Join {
                live_seq,
                sender_time: now_ns,
            });
        }
        self.queue_command(&Command::Describe {
            caps: caps.to_string(),
        });
        self.phase = Phase::Described { ended: false };
        log::info!("receiver {} ({}): ready", self.id, self.peer);
        if let Some(end_seq) = eos {
            self.end_of_stream(end_seq);
        }
        let Some(frames) = group else {
            return false;
        };
        for (before, structure) in cache.map(JoinCache::commands).unwrap_or_default() {
            self.queue_command(&Command::Application {
                before_seq: Some(*before),
                structure: structure.clone(),
            });
        }
        self.open_group(frames[0].header.seq, self.budget.is_some());
        for f in frames {
            self.queue_frame(f, parameter_sets, None, None, true);
        }
        log::debug!(
            "receiver {}: joined with {} cached frames",
            self.id,
            frames.len()
        );
        true
    }

    /// Queues a live frame numbered `seq`, queued at `queued`: on a new group if it is an
    /// IRAP, as a shed marker if its sub-layer is cut off for the rest of the group, with
    /// its deadlines if the receiver has a budget.
    pub(super) fn take_frame(
        &mut self,
        f: &CachedFrame,
        queued: Instant,
        parameter_sets: Option<&Arc<[u8]>>,
    ) {
        let seq = f.header.seq;
        if f.frame.keyframe {
            self.open_group(seq, self.budget.is_some());
        }
        let Some(group) = self.group else {
            // Waiting for the next IRAP after a reset group.
            if self.groups_opened > 0 {
                self.frames_dropped += 1;
            }
            return;
        };
        let (tid, cost) = (f.frame.temporal_id, f.frame.drop_cost);
        if self.takes_shed && self.group_cut.is_some_and(|layer| tid >= layer) {
            self.frames_shed += 1;
            self.queue(group, ChunkData::Owned(shed_marker(seq)), false, None);
            return;
        }
        let deadlines = self.budget.map(|b| Deadlines::new(queued, b, cost));
        let shed = deadlines.map(|d| Sheddable {
            seq,
            temporal_id: tid,
            cost,
            by: d.shed_by,
        });
        let expires = deadlines.map(|d| d.expires);
        self.queue_frame(f, parameter_sets, expires, shed, false);
    }

    /// Queues a frame on the open group. An IRAP without parameter sets gets
    /// `parameter_sets` in front while the receiver may lack them (its first IRAP, or after
    /// a reset group: x265enc sends them once), so that it can start there; every other
    /// frame goes out exactly as the sink took it. `catch_up`: a cached frame for a joiner.
    fn queue_frame(
        &mut self,
        f: &CachedFrame,
        parameter_sets: Option<&Arc<[u8]>>,
        expires: Option<Instant>,
        shed: Option<Sheddable>,
        catch_up: bool,
    ) {
        let Some(stream) = self.group else {
            return;
        };
        let needs_sets = f.frame.keyframe && !f.frame.parameter_sets && !self.has_parameter_sets;
        let (header, prefix) = match parameter_sets.filter(|_| needs_sets) {
            Some(sets) => {
                let mut header = f.header;
                header.len += sets.len() as u64;
                header.flags.set(FrameFlags::HEADER, true);
                let mut encoded = Vec::with_capacity(32);
                header.encode(&mut encoded);
                (ChunkData::Owned(encoded), Some(sets))
            }
            None => (ChunkData::Shared(f.encoded_header.clone()), None),
        };
        // The shed marker replaces the header and one body chunk: a prefixed IRAP is never
        // shed (IRAPs cost a whole group anyway).
        let shed = shed.filter(|_| prefix.is_none());
        self.has_parameter_sets |= f.frame.parameter_sets || prefix.is_some();
        self.queue_chunk(
            stream,
            Chunk {
                data: header,
                offset: 0,
                fin: false,
                expires,
                shed,
                catch_up,
            },
        );
        if let Some(sets) = prefix {
            self.queue(stream, ChunkData::Shared(sets.clone()), false, expires);
        }
        self.queue(stream, ChunkData::Frame(f.frame.clone()), false, expires);
    }

    /// Ends the current group and opens the next one on a new stream. With deadlines the
    /// new group goes first (older ones drop to a lower urgency); without, oldest first.
    fn open_group(&mut self, first_seq: u64, newest_first: bool) {
        if newest_first {
            if let Some(old) = self.group {
                self.conn.prioritize(old, 4, false);
            }
        }
        self.close_group(first_seq);
        self.group_cut = None;
        let stream = group_stream(self.groups_opened);
        self.groups_opened += 1;
        // Not incremental: within an urgency quiche sends the lower stream ID first. Setting
        // the priority also creates the stream, so a reset always reaches the receiver.
        self.conn.prioritize(stream, 3, false);
        let mut opening = Vec::with_capacity(16);
        put_group_opening(&mut opening, first_seq);
        self.queue(stream, ChunkData::Owned(opening), false, None);
        self.group = Some(stream);
    }

    /// Writes the group's end and its FIN (see put_group_end); `next_seq`: the number of
    /// the frame after the group's last.
    fn close_group(&mut self, next_seq: u64) {
        if let Some(group) = self.group.take() {
            let mut end = Vec::with_capacity(8);
            put_group_end(&mut end, next_seq);
            self.queue(group, ChunkData::Owned(end), true, None);
        }
    }

    /// `end_seq`: the sequence number the next frame would have had.
    pub(super) fn end_of_stream(&mut self, end_seq: u64) {
        if self.phase != (Phase::Described { ended: false }) {
            return;
        }
        self.phase = Phase::Described { ended: true };
        self.close_group(end_seq);
        self.queue_command(&Command::EndOfStream {
            groups: self.groups_opened,
            end_seq,
        });
    }

    /// Writes what is queued until the connection takes no more: commands first, then
    /// groups, newest first when frames have deadlines. Groups whose oldest frame is past
    /// its deadline are reset instead. Returns whether any media was written.
    /// `keyframes_answered`: upstream makes a keyframe when asked (keyframes.rs).
    pub(super) fn flush(&mut self, now: Instant, keyframes_answered: bool) -> bool {
        let newest_first = self.budget.is_some();
        // A frame written now arrives about a round trip later: the congestion window
        // ahead of it drains, then it crosses (more when the network queues). One that
        // would arrive past its deadline is not worth sending. Measured in bench scenario
        // (e): late frames 116 -> 14 against half a round trip's 78. (Before the commands,
        // so that a LATE_GROUP goes out ahead of the group's frames.)
        let path = self.conn.path();
        let ahead = path.as_ref().map_or(Duration::ZERO, |p| p.rtt);
        let delivery_rate = path.as_ref().map(|p| p.delivery_rate);
        self.expire(now, ahead, keyframes_answered);
        let (mut unlimited, mut no_frames) = (usize::MAX, 0);
        if let Err(e) = self.control_out.write(
            &mut self.conn,
            &mut self.out_bytes,
            &mut unlimited,
            &mut no_frames,
        ) {
            log::warn!("receiver {}: control stream: {e}", self.id);
            self.out_bytes -= self.control_out.bytes();
            self.control_out.clear();
        }
        // What the connection would not take is beyond the receiver's flow-control window:
        // it does not read its control stream.
        let waiting = self.control_out.bytes();
        if waiting > MAX_CONTROL_BYTES {
            self.out_bytes -= waiting;
            self.control_out.clear();
            let why = format!(
                "{waiting} bytes of commands wait on its control stream: it does not read it"
            );
            self.close(error_code::TOO_SLOW, &why);
        }
        if let Some(p) = path.filter(|_| self.budget.is_some()) {
            match self.pacer.as_mut() {
                Some(pacer) => {
                    pacer.on_path(now, p.delivery_rate, self.held_back, p.rtt, p.min_rtt)
                }
                None if p.rtt.saturating_sub(p.min_rtt) > pacer::STANDING_QUEUE => {
                    log::debug!("receiver {}: the path queues: pacing", self.id);
                    self.pacer = Some(Pacer::new(now, p.delivery_rate));
                }
                None => {}
            }
        }
        let granted = self.pacer.as_mut().map_or(usize::MAX, |p| p.allowance(now));
        let mut allowance = granted;
        let n = self.groups_out.len();
        for k in 0..n {
            let i = if newest_first { n - 1 - k } else { k };
            let g = &mut self.groups_out[i];
            // Its FIN written too, a group went out whole: the receiver takes the stream.
            let ends = g.ends();
            match g.write(
                &mut self.conn,
                &mut self.out_bytes,
                &mut allowance,
                &mut self.frames_sent,
            ) {
                Ok(true) => self.dropped_behind &= !ends,
                Ok(false) => break,
                Err(e) => {
                    // The receiver stopped this stream: drop what is left of it.
                    log::info!("receiver {}: stream {}: {e}", self.id, g.stream);
                    self.out_bytes -= g.bytes();
                    self.frames_dropped += g.clear();
                }
            }
        }
        self.groups_out.retain(|g| !g.chunks.is_empty());
        if let Some(rate) = delivery_rate.filter(|_| !self.groups_out.is_empty()) {
            self.estimator.busy(now, rate);
        }
        self.held_back = false;
        self.pace_at = None;
        if let Some(p) = self.pacer.as_mut() {
            p.spend(now, granted - allowance);
            if allowance == 0 && !self.groups_out.is_empty() {
                self.held_back = true;
                self.pace_at = Some(p.ready_at(MAX_DATAGRAM_SIZE));
            }
        }
        granted > allowance
    }
}
