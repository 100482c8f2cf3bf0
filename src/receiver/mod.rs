//! The receiver's core, without I/O: the group streams of one connection, read through a
//! [`StreamSource`] into whole frames, each judged for lateness as it arrives, and handed to
//! the streaming thread's [`Inbox`] in group order; a group that holds a later keyframe back
//! too long is skipped, and decoding resumes at that keyframe. The networking thread
//! (client.rs) feeds it the control stream's commands and the time; the commands it wants
//! sent it appends to the bytes the driver writes on the control stream.
//!
//! Beside it, what the source's streaming thread decides of each frame it outputs:
//! [`marks`] (keyframe, discontinuity, gap, lateness, decode-only).

pub mod inbox;
mod lateness;
pub mod marks;
pub mod merge;
mod read;
pub mod signals;
#[cfg(test)]
mod tests;

pub use read::StreamSource;

use crate::protocol::control::{group_stream, next_group_stream, ReadError};
use crate::protocol::{self, error_code, Command, FrameFlags, GroupDecoder};
use crate::receiver::inbox::{Event, Inbox, ReceivedFrame};
use crate::receiver::lateness::{Held, Lateness};
use crate::stats::ReceiverCounters;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Bytes of frames held back (later groups, or a full queue; whole or being received)
/// before the thread stops reading group streams; QUIC flow control then slows the sender.
const MAX_BUFFERED: usize = 16 << 20;
/// Application commands from the sender pinned to a frame that has not come yet.
const MAX_PINNED: usize = 256;
/// LATE_GROUP announcements kept: a sender rescues one group at a time, and a group it
/// rescued before may still be arriving.
const MAX_LATE_GROUPS: usize = 4;
/// Bytes waiting on the control stream beyond which the sender's PINGs go unanswered: one
/// that floods PINGs and never reads would otherwise grow them without bound.
pub const MAX_CONTROL_OUT: usize = protocol::DEFAULT_MAX_COMMAND_SIZE as usize;

/// Why the sender's streams fail the receiver. The texts are the element's error messages.
#[derive(Debug)]
pub enum Violation {
    /// The control stream's bytes are not commands, or the stream failed.
    Control(ReadError),
    /// A stream that is neither the control stream nor a group stream.
    UnexpectedStream(u64),
    /// A group stream's bytes are not frames.
    Group(u64, protocol::Error),
    /// A group stream failed in quiche.
    Stream(u64, quiche::Error),
    /// GOODBYE with an error code, and the sender's reason.
    Goodbye(u64, String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Control(e) => write!(f, "{e}"),
            Violation::UnexpectedStream(stream) => write!(f, "unexpected stream {stream}"),
            Violation::Group(stream, e) => write!(f, "group stream {stream}: {e}"),
            Violation::Stream(stream, e) => write!(f, "group stream {stream}: {e}"),
            Violation::Goodbye(code, reason) => {
                write!(f, "sender said goodbye ({code:#x}): {reason}")
            }
        }
    }
}

impl std::error::Error for Violation {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Violation::Control(e) => Some(e),
            Violation::Group(_, e) => Some(e),
            Violation::Stream(_, e) => Some(e),
            Violation::UnexpectedStream(_) | Violation::Goodbye(..) => None,
        }
    }
}

/// What the driver does after a command.
#[derive(Debug)]
pub enum Reply {
    Continue,
    /// GOODBYE: close the connection without error; with a violation, the receiver then
    /// fails with it.
    Close(Option<Violation>),
}

/// Frames of one group stream not yet handed over.
struct Group {
    decoder: GroupDecoder,
    frames: VecDeque<ReceivedFrame>,
    /// Late reference frames (lateness.rs), held until a later frame of the group arrives
    /// on time and needs them; output before it, or dropped if none does. Frames that are
    /// late for queueing, not for a repair, are so never output.
    held: Held<ReceivedFrame>,
    /// Bytes in `frames` and `held`.
    bytes: usize,
    finished: bool,
    /// Reset by the sender, or abandoned by us: no more frames will come.
    abandoned: bool,
    /// When the first bytes of the frame in progress arrived (CLOCK_MONOTONIC ns).
    started_at: Option<u64>,
}

impl Group {
    fn new(max_frame: u64) -> Self {
        Group {
            decoder: GroupDecoder::new(max_frame),
            frames: VecDeque::new(),
            held: Held::default(),
            bytes: 0,
            finished: false,
            abandoned: false,
            started_at: None,
        }
    }

    /// Drops the held late frames: no frame after them came on time. Returns their bytes.
    fn discard_held(&mut self, counters: &mut ReceiverCounters) -> usize {
        let (frames, bytes) = self.held.discard();
        counters.frames_dropped += frames as u64;
        self.bytes -= bytes;
        bytes
    }
}

/// One connection's groups, from DESCRIBE to EOS.
pub struct Reassembly {
    /// An instant and CLOCK_MONOTONIC (ns) then: arrival times in the clock of frame
    /// headers and ReceivedFrame (on Linux, Instant is CLOCK_MONOTONIC itself).
    epoch: (Instant, u64),
    max_frame: u64,
    /// How long the next group may hold back a later group's keyframe.
    latency: Duration,
    /// This connection replaces a lost one.
    resumed: bool,
    /// For `stats`; carried over to the next connection.
    pub counters: ReceiverCounters,
    groups: BTreeMap<u64, Group>,
    /// Bytes of the frames in `groups`, and of the frames they are receiving.
    buffered: usize,
    /// DESCRIBE arrived: frames may follow it to the element.
    described: bool,
    next_group: u64,
    eos_groups: Option<u64>,
    eos_end_seq: Option<u64>,
    eos_delivered: bool,
    /// A group was skipped: the next frame out is marked as following a gap.
    gap: bool,
    /// Decoding (re)starts at the next IRAP: RASL pictures after it reference pictures the
    /// decoder never got, so they are dropped until the first other picture.
    skip_rasl: bool,
    lateness: Lateness,
    /// Temporal sub-layers, from the last IRAP's SPS (H.265 allows 7).
    sub_layers: u8,
    /// JOIN from the sender: frames below `.0` are its cached group, queued at sender
    /// time `.1`.
    join: Option<(u64, u64)>,
    /// Commands pinned before a frame number, oldest first, until that point is handed on.
    pinned: VecDeque<(u64, String)>,
    /// Groups the sender sends late by design (LATE_GROUP): their stream and how far past
    /// the budget their frames may arrive (ns), newest last.
    late_groups: VecDeque<(u64, u64)>,
    /// Frame headers, and the bytes of abandoned groups, are read into this.
    buf: Vec<u8>,
    /// One of several routes (merge.rs): the merge, which sees them all, asks for
    /// keyframes, not this route's core.
    routed: bool,
    /// A bonded route: its frames are parts.
    bonded: bool,
}

impl Reassembly {
    /// `resumed`: this connection replaces a lost one. `epoch`: an instant and
    /// CLOCK_MONOTONIC in ns at it.
    pub fn new(
        max_frame: u64,
        latency: Duration,
        resumed: bool,
        counters: ReceiverCounters,
        epoch: (Instant, u64),
    ) -> Self {
        Reassembly {
            epoch,
            max_frame,
            latency,
            resumed,
            counters,
            groups: BTreeMap::new(),
            buffered: 0,
            described: false,
            next_group: group_stream(0),
            eos_groups: None,
            eos_end_seq: None,
            eos_delivered: false,
            // A resumed stream follows the frames the lost connection never delivered.
            gap: resumed,
            skip_rasl: true,
            lateness: Lateness::default(),
            sub_layers: 7,
            join: None,
            pinned: VecDeque::new(),
            late_groups: VecDeque::new(),
            buf: vec![0; 65536],
            routed: false,
            bonded: false,
        }
    }

    /// This connection is one of several routes (see `routed`), `bonded` or not.
    pub fn set_routed(&mut self, routed: bool, bonded: bool) {
        self.routed = routed;
        self.bonded = routed && bonded;
    }

    /// EOS was handed over: the driver closes the connection.
    pub fn ended(&self) -> bool {
        self.eos_delivered
    }

    /// `now` on CLOCK_MONOTONIC, in ns.
    fn ns(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch.0);
        self.epoch.1 + since.as_nanos() as u64
    }

    /// Takes a command from the sender's control stream; answers go to `control`.
    pub fn on_command(&mut self, cmd: Command, events: &mut Inbox, control: &mut Vec<u8>) -> Reply {
        log::debug!("command {cmd:?}");
        match cmd {
            Command::Describe { caps } => {
                if self.resumed && !self.described && self.join.is_none() && !self.routed {
                    // The sender starts us at its next IRAP, which may be seconds away.
                    Command::KeyframeRequest.encode(control);
                    self.counters.keyframe_requests += 1;
                }
                self.described = true;
                events.push(Event::Caps(caps));
            }
            Command::EndOfStream { groups, end_seq } => {
                self.eos_groups = Some(groups);
                self.eos_end_seq = Some(end_seq);
            }
            Command::Ping(n) if control.len() < MAX_CONTROL_OUT => Command::Pong(n).encode(control),
            // A bonded route's parts are judged whole, by the merge: dropping a late part
            // would lose the frame the other routes' parts make up.
            Command::LatencyBudget(_) if self.bonded => {}
            Command::LatencyBudget(ns) => self.lateness.set_budget(ns),
            Command::LateGroup { stream, allowance } if stream >= self.next_group => {
                note_late_group(&mut self.late_groups, stream, allowance);
            }
            Command::Join {
                live_seq,
                sender_time,
            } => self.join = Some((live_seq, sender_time)),
            Command::Application {
                before_seq: Some(seq),
                structure,
            } => {
                if self.pinned.len() >= MAX_PINNED {
                    log::warn!("too many commands wait for their frame: dropped one");
                    self.pinned.pop_front();
                }
                self.pinned.push_back((seq, structure));
            }
            Command::Application {
                before_seq: None,
                structure,
            } => events.push(Event::Command(structure)),
            Command::Repair { header, data } if self.routed => {
                // A part of a frame asked for again: for the merge, whatever its group.
                if let Some(p) = header.part.filter(|p| p.size > self.max_frame) {
                    let e = protocol::Error::TooLarge("repaired frame", p.size, self.max_frame);
                    return Reply::Close(Some(Violation::Control(ReadError::Bytes(e))));
                }
                self.counters.frames_received += 1;
                events.push(Event::Frame(ReceivedFrame {
                    header,
                    data,
                    arrival: self.ns(Instant::now()),
                    gap: false,
                    late: false,
                    catch_up_age: None,
                }));
            }
            Command::Goodbye { code, reason } => {
                let failed = code != error_code::NO_ERROR;
                return Reply::Close(failed.then_some(Violation::Goodbye(code, reason)));
            }
            _ => {}
        }
        Reply::Continue
    }

    /// Hands frames over in group order while `events` has room; returns whether anything
    /// moved (frames handed or a group completed). Once it hands EOS ([`Reassembly::ended`])
    /// the driver closes the connection.
    pub fn deliver(&mut self, now: Instant, events: &mut Inbox, control: &mut Vec<u8>) -> bool {
        let mut progress = false;
        if !self.described {
            return false;
        }
        self.skip_late_group(now);
        loop {
            self.finish_by_seq();
            let Some(group) = self.groups.get_mut(&self.next_group) else {
                break;
            };
            let mut handed = 0;
            while events.has_room() {
                let Some(mut frame) = group.frames.pop_front() else {
                    break;
                };
                handed += frame.data.len();
                // A part is judged whole, by the merge.
                if self.skip_rasl && frame.header.part.is_none() {
                    if crate::media::h265::is_rasl(&frame.data) {
                        log::debug!("dropping RASL frame {}", frame.header.seq);
                        self.counters.frames_dropped += 1;
                        continue;
                    }
                    self.skip_rasl = frame.header.flags.contains(FrameFlags::KEYFRAME);
                }
                frame.gap = std::mem::take(&mut self.gap);
                hand_pinned(&mut self.pinned, Some(frame.header.seq), events);
                events.push(Event::Frame(frame));
                self.counters.frames_output += 1;
            }
            group.bytes -= handed;
            self.buffered -= handed;
            progress |= handed > 0;
            if !group.frames.is_empty() || !group.finished {
                return progress;
            }
            let abandoned = group.abandoned;
            self.buffered -= group.discard_held(&mut self.counters);
            if let Some(removed) = self.groups.remove(&self.next_group) {
                // An abandoned group may end inside a frame.
                self.buffered -= removed.decoder.partial_bytes();
            }
            self.next_group = next_group_stream(self.next_group);
            progress = true;
            if abandoned {
                self.gap = true;
                self.skip_rasl = true;
                // Unless a later group (which starts at an IRAP) is already on its way,
                // the next one might be many seconds off: ask for it now.
                if !self.groups.contains_key(&self.next_group) && !self.routed {
                    log::debug!("skipped a group: asking for a keyframe");
                    Command::KeyframeRequest.encode(control);
                    self.counters.keyframe_requests += 1;
                }
            }
        }
        if let Some(groups) = self.eos_groups {
            if !self.eos_delivered && self.next_group >= group_stream(groups) {
                self.eos_delivered = true;
                self.end_events(events);
            }
        }
        progress
    }

    /// Marks the next group finished when the frame numbers say it is: it stands between
    /// frames at the number the following group (or END_OF_STREAM) starts from. quiche
    /// 0.30 may never resend a FIN sent on its own once the data before it was acked, so
    /// the FIN alone cannot be relied on.
    fn finish_by_seq(&mut self) {
        let following = self
            .groups
            .get(&next_group_stream(self.next_group))
            .and_then(|g| g.decoder.first_seq());
        let last = self
            .eos_groups
            .is_some_and(|n| self.next_group == group_stream(n.saturating_sub(1)));
        let end = following.or(self.eos_end_seq.filter(|_| last));
        if let Some(group) = self.groups.get_mut(&self.next_group) {
            if !group.finished
                && group.decoder.between_frames()
                && group.decoder.next_seq().is_some()
                && group.decoder.next_seq() == end
            {
                log::debug!("group stream {} complete by sequence", self.next_group);
                group.finished = true;
            }
        }
    }

    /// The connection closed. If the sender had ended the stream (and stopped waiting for
    /// us: its eos-timeout), hands over what is left; returns whether EOS was handed over.
    pub fn on_closed(&mut self, now: Instant, events: &mut Inbox, control: &mut Vec<u8>) -> bool {
        if self.eos_groups.is_some() && !self.eos_delivered {
            self.deliver_remaining(now, events, control);
        }
        self.eos_delivered
    }

    /// After the connection closed following END_OF_STREAM: hands over the whole frames
    /// still held, skipping what never arrived, then EOS. Nothing more can come, so the
    /// queue's capacity no longer applies.
    fn deliver_remaining(&mut self, now: Instant, events: &mut Inbox, control: &mut Vec<u8>) {
        let last = self.groups.keys().next_back().copied().unwrap_or(0);
        // Bounded by the streams this connection opened: quiche's stream limit.
        for stream in (self.next_group..=last).step_by(4) {
            let group = self
                .groups
                .entry(stream)
                .or_insert_with(|| Group::new(self.max_frame));
            group.abandoned |= !group.finished;
            group.finished = true;
        }
        events.unbound();
        self.deliver(now, events, control);
        if !self.eos_delivered {
            self.eos_delivered = true;
            self.end_events(events);
        }
    }

    /// When the next group will have held back a later group's keyframe for `latency`.
    pub fn skip_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.described {
            return None;
        }
        // Only a group starved by the network: frames it holds mean a slow consumer.
        let next = self.groups.get(&self.next_group);
        if next.is_some_and(|g| g.finished || !g.frames.is_empty()) {
            return None;
        }
        // A later group reset before its keyframe arrived holds nothing: look past it.
        let first = self
            .groups
            .range(next_group_stream(self.next_group)..)
            .find_map(|(_, g)| g.frames.front())?;
        let waiting = self.ns(now).saturating_sub(first.arrival);
        let left = self.latency.saturating_sub(Duration::from_nanos(waiting));
        Some(now + left)
    }

    /// Abandons the next group when a later group's keyframe has waited behind it for
    /// `latency`: what is missing would arrive too late, and the keyframe starts afresh.
    fn skip_late_group(&mut self, now: Instant) {
        if self.skip_deadline(now).is_none_or(|t| t > now) {
            return;
        }
        let stream = self.next_group;
        log::debug!("group stream {stream} is late: skipping to the next keyframe");
        // No STOP_SENDING: quiche 0.30 never collects a stream shut for reading, so each
        // would cost a stream credit for good (cloudflare/quiche#1968). Its bytes are read
        // and dropped instead (Reassembly::read), until its FIN or reset.
        let group = self
            .groups
            .entry(stream)
            .or_insert_with(|| Group::new(self.max_frame));
        group.finished = true;
        group.abandoned = true;
        self.counters.groups_abandoned += 1;
    }

    /// The commands pinned anywhere before the end, then EOS.
    fn end_events(&mut self, events: &mut Inbox) {
        hand_pinned(&mut self.pinned, None, events);
        events.push(Event::Eos);
    }
}

/// Moves the commands pinned before frame `seq` (None: all) to `events`.
/// Group `stream` runs late, up to `allowance` ns past the budget (the latest word on it).
fn note_late_group(late_groups: &mut VecDeque<(u64, u64)>, stream: u64, allowance: u64) {
    late_groups.retain(|&(s, _)| s != stream);
    if late_groups.len() >= MAX_LATE_GROUPS {
        late_groups.pop_front();
    }
    late_groups.push_back((stream, allowance));
}

fn hand_pinned(pinned: &mut VecDeque<(u64, String)>, seq: Option<u64>, events: &mut Inbox) {
    while let Some((before, _)) = pinned.front() {
        if seq.is_some_and(|seq| *before > seq) {
            break;
        }
        if let Some((_, structure)) = pinned.pop_front() {
            events.push(Event::Command(structure));
        }
    }
}
