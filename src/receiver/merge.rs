//! One receiver's routes (quicnalusrc `paths`) made into one stream: each route's core
//! (mod.rs) hands its frames over in its own order; this outputs every frame once, in
//! sequence, from whichever route brought it first, and assembles the parts of bonded
//! routes (PART frames). A frame no route brings in time is given up, and playback then
//! resumes at the next keyframe, as with one route: never a frame whose references are
//! missing.

use crate::media::h265::is_rasl;
use crate::protocol::{FrameFlags, Part};
use crate::receiver::inbox::{Event, ReceivedFrame};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A route heard from within this long may still bring a frame the others missed; one
/// silent longer is behind an outage.
pub const LIVE_WITHIN: Duration = crate::protocol::ROUTE_SILENCE;
/// Routes that heard from the sender within this of the latest are as fresh as it.
const FRESH: Duration = Duration::from_millis(30);
/// A route silent this long is in trouble: the parts it owes are asked for again over
/// another (REPAIR_REQUEST). One that is heard from is waited for until it hands over a
/// later frame, or until half the hold has passed: on a route that queues, a part may
/// well come tens of ms after the others, and asking again would only add to the queue.
pub const REPAIR_AFTER: Duration = Duration::from_millis(50);
/// Bytes of frames held ahead of a missing one: past it, the missing one is given up.
const MAX_PENDING_BYTES: usize = 32 << 20;

/// What one route has shown of the sequence.
#[derive(Debug, Clone, Copy, Default)]
struct RouteView {
    /// The last frame number it handed over.
    last: Option<u64>,
    /// Since this frame number it has handed frames over without a gap: every frame from
    /// here to `last` it either brought or knew was not needed (shed).
    clean_from: Option<u64>,
    /// When it last heard from the sender (ns), and whether it is connected.
    heard: u64,
    connected: bool,
    /// It handed over the end of the stream.
    ended: bool,
}

impl RouteView {
    /// Whether this route has shown that frame `seq` needs no waiting for: it brought it,
    /// shed it, or gave it up.
    fn passed(&self, seq: u64) -> bool {
        self.last.is_some_and(|l| l >= seq)
    }

    /// Whether it passed `seq` without a gap: then `seq` was shed, if it is not here.
    fn vouches(&self, seq: u64) -> bool {
        self.passed(seq) && self.clean_from.is_some_and(|c| c <= seq)
    }

    fn live(&self, now: u64) -> bool {
        self.connected && now.saturating_sub(self.heard) <= LIVE_WITHIN.as_nanos() as u64
    }
}

/// A frame ahead of the output, whole or in parts.
struct Pending {
    frame: ReceivedFrame,
    /// PART ranges received, when it comes in parts; the frame's data is `size` long then.
    parts: Vec<(u64, u64)>,
    got: u64,
    /// When it first arrived (ns).
    first_arrival: u64,
    /// It was asked for again (REPAIR_REQUEST).
    repair_asked: bool,
}

impl Pending {
    fn complete(&self) -> bool {
        self.got == self.frame.data.len() as u64
    }
}

/// Counts for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeCounters {
    /// Frames output.
    pub frames_output: u64,
    /// Copies of frames already output, from a slower route.
    pub duplicates: u64,
    /// Frames no route brought in time.
    pub frames_lost: u64,
    /// Frames dropped until the next keyframe after one was lost.
    pub frames_dropped: u64,
}

pub struct Merge {
    /// How long a missing frame may hold later ones back while a live route may still
    /// bring it: the receiver's latency, as a route's own core waits for a group.
    hold: u64,
    routes: Vec<RouteView>,
    /// The next frame number to output; None before the first frame.
    next: Option<u64>,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    /// Events other than frames, to output before the next frame.
    events: VecDeque<Event>,
    caps: Option<String>,
    connected: bool,
    /// A frame was given up: the next output is marked as following a gap, and frames are
    /// dropped until a keyframe.
    gap: bool,
    await_keyframe: bool,
    /// RASL pictures after a restart at an IRAP reference what the decoder never got.
    skip_rasl: bool,
    /// The first route to hand over the end of the stream, and when (ns).
    ended_at: Option<u64>,
    eos_out: bool,
    /// A keyframe should be asked for: set when a frame is given up, taken by the driver.
    pub keyframe_wanted: bool,
    /// What to ask for again over a live route (REPAIR_REQUEST): frame, and the bytes of
    /// it missing (offset, length); taken by the driver.
    pub repairs_wanted: Vec<(u64, u64, u64)>,
    pub counters: MergeCounters,
}

impl Merge {
    pub fn new(routes: usize, hold: Duration) -> Self {
        Merge {
            hold: hold.as_nanos() as u64,
            routes: vec![RouteView::default(); routes],
            next: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            events: VecDeque::new(),
            caps: None,
            connected: false,
            gap: false,
            await_keyframe: false,
            skip_rasl: true,
            ended_at: None,
            eos_out: false,
            keyframe_wanted: false,
            repairs_wanted: Vec::new(),
            counters: MergeCounters::default(),
        }
    }

    /// One more route, numbered after the others (a listener's call-back to another of its
    /// sender's addresses).
    pub fn add_route(&mut self) {
        self.routes.push(RouteView::default());
    }

    /// A fresh merge for a stream that resumes after a lost connection: its first output
    /// follows a gap.
    pub fn resumed(&mut self, counters: MergeCounters) {
        self.counters = counters;
        self.gap = true;
    }

    /// Route `route` heard from the sender at `now` (ns).
    pub fn heard(&mut self, route: usize, now: u64) {
        if let Some(r) = self.routes.get_mut(route) {
            r.heard = now;
        }
    }

    /// Whether route `route` heard from the sender about as lately as any: requests go
    /// over such a route, not one that may have just failed.
    pub fn freshest(&self, route: usize) -> bool {
        let latest = self
            .routes
            .iter()
            .filter(|r| r.connected)
            .map(|r| r.heard)
            .max();
        let Some(mine) = self.routes.get(route).filter(|r| r.connected) else {
            return false;
        };
        latest.is_some_and(|l| l.saturating_sub(mine.heard) <= FRESH.as_nanos() as u64)
    }

    /// Route `route` lost its connection; a new one starts afresh (its core does).
    pub fn disconnected(&mut self, route: usize) {
        if let Some(r) = self.routes.get_mut(route) {
            *r = RouteView::default();
        }
    }

    /// Takes the next event route `route` handed over, at `now` (ns).
    pub fn take(&mut self, route: usize, event: Event, now: u64) {
        let Some(view) = self.routes.get_mut(route) else {
            return;
        };
        match event {
            Event::Connected => {
                view.connected = true;
                view.heard = now;
                // The first route to connect starts the stream; later ones join it.
                if !std::mem::replace(&mut self.connected, true) {
                    self.events.push_back(Event::Connected);
                }
            }
            Event::Caps(caps) => {
                if self.caps.as_ref() != Some(&caps) {
                    self.caps = Some(caps.clone());
                    self.events.push_back(Event::Caps(caps));
                }
            }
            // Commands come over one route only (the sender picks one that is up).
            Event::Command(c) => self.events.push_back(Event::Command(c)),
            Event::Eos => {
                view.ended = true;
                self.ended_at.get_or_insert(now);
            }
            Event::Frame(frame) => self.take_frame(route, frame),
        }
    }

    fn take_frame(&mut self, route: usize, frame: ReceivedFrame) {
        let seq = frame.header.seq;
        let view = &mut self.routes[route];
        if frame.gap || view.clean_from.is_none() {
            view.clean_from = Some(seq);
        }
        view.last = Some(view.last.map_or(seq, |l| l.max(seq)));
        if self.next.is_none() {
            self.next = Some(seq);
        }
        if self.next.is_some_and(|n| seq < n) {
            self.counters.duplicates += 1;
            return;
        }
        let Some(part) = frame.header.part else {
            if self.pending.get(&seq).is_none_or(|p| !p.complete()) {
                let got = frame.data.len() as u64;
                self.insert(seq, frame, got);
            } else {
                self.counters.duplicates += 1;
            }
            return;
        };
        self.take_part(seq, part, frame);
    }

    /// A part of frame `seq` (from a route, or a repair): its bytes not yet there are
    /// copied into place.
    fn take_part(&mut self, seq: u64, part: Part, frame: ReceivedFrame) {
        if !self.pending.contains_key(&seq) {
            let mut whole = ReceivedFrame {
                data: vec![0; part.size as usize],
                ..frame_shell(&frame)
            };
            whole.header.part = None;
            whole.header.len = part.size;
            self.insert(seq, whole, 0);
        }
        let Some(p) = self.pending.get_mut(&seq) else {
            return;
        };
        let (start, end) = (part.offset, part.offset + frame.data.len() as u64);
        if part.size != p.frame.data.len() as u64 || end > part.size {
            return;
        }
        for (from, to) in uncovered(&p.parts, start, end) {
            let (a, b) = ((from - start) as usize, (to - start) as usize);
            p.frame.data[from as usize..to as usize].copy_from_slice(&frame.data[a..b]);
            p.parts.push((from, to - from));
            p.got += to - from;
        }
        p.frame.late |= frame.late;
        p.frame.arrival = p.frame.arrival.max(frame.arrival);
    }

    /// Puts `frame` at `seq`, replacing what was there; `got`: its bytes already in.
    fn insert(&mut self, seq: u64, frame: ReceivedFrame, got: u64) {
        let (arrival, bytes) = (frame.arrival, frame.data.len());
        let pending = Pending {
            frame,
            parts: Vec::new(),
            got,
            first_arrival: arrival,
            repair_asked: false,
        };
        if let Some(old) = self.pending.insert(seq, pending) {
            self.pending_bytes -= old.frame.data.len();
        }
        self.pending_bytes += bytes;
    }

    /// When a missing frame will have held the others back for long enough (ns): call
    /// [`Merge::pop`] then even if nothing arrives.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        let next = self.next?;
        if self.head_ready() {
            return Some(now);
        }
        let Some(oldest) = self.pending.values().map(|p| p.first_arrival).min() else {
            // Nothing pending: the end of the stream, once the others had their time.
            return self
                .ended_at
                .filter(|_| !self.eos_out)
                .map(|t| t + self.hold);
        };
        // A live route that has not passed it may still bring it; so may a repair asked.
        let live = self.routes.iter().any(|r| r.live(now) && !r.passed(next));
        let repairing = self.pending.get(&next).is_some_and(|p| p.repair_asked);
        let deadline = if live || repairing {
            oldest + self.hold
        } else {
            now
        };
        let repair = self
            .pending
            .iter()
            .filter_map(|(&seq, p)| self.repair_due(seq, p))
            .min()
            .unwrap_or(u64::MAX);
        let deadline = deadline.min(repair);
        // A route that ended waits that long for the others, too.
        Some(deadline.min(self.ended_at.map_or(u64::MAX, |t| t + self.hold)))
    }

    fn head_ready(&self) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        self.pending.get(&next).is_some_and(Pending::complete)
    }

    /// The next event to output at `now` (ns), if one is due.
    pub fn pop(&mut self, now: u64) -> Option<Event> {
        self.ask_repairs(now);
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let next = self.next?;
            if let Some(frame) = self.take_head(next) {
                if let Some(frame) = self.output(frame) {
                    return Some(Event::Frame(frame));
                }
                continue;
            }
            let partial = self.pending.contains_key(&next);
            if !partial && self.routes.iter().any(|r| r.vouches(next)) {
                // Shed by the sender: nothing was lost.
                self.next = Some(next + 1);
                self.drop_stale();
                continue;
            }
            if self.pending.is_empty() {
                return self.end(now);
            }
            let gives_up = self.deadline(now).is_some_and(|t| t <= now)
                || self.pending_bytes > MAX_PENDING_BYTES;
            if !gives_up {
                return None;
            }
            self.give_up(next);
        }
    }

    /// When incomplete frame `seq` is to be asked for again (see REPAIR_AFTER): once
    /// every route either handed over a later frame or went silent, or at half the hold;
    /// None once asked, or when a repair could no longer come within the hold.
    fn repair_due(&self, seq: u64, p: &Pending) -> Option<u64> {
        if p.repair_asked || p.complete() {
            return None;
        }
        let silent = REPAIR_AFTER.as_nanos() as u64;
        let owing = self.routes.iter().filter(|r| !r.passed(seq));
        let waited = owing.map(|r| r.heard + silent).max().unwrap_or(0);
        Some(waited.min(p.first_arrival + self.hold / 2))
    }

    /// Asks again for what incomplete frames lack, once each, when due.
    fn ask_repairs(&mut self, now: u64) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|&(&seq, p)| {
                let useful = now < p.first_arrival + self.hold;
                useful && self.repair_due(seq, p).is_some_and(|t| t <= now)
            })
            .map(|(&seq, _)| seq)
            .collect();
        for seq in due {
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            p.repair_asked = true;
            let size = p.frame.data.len() as u64;
            for (from, to) in uncovered(&p.parts, 0, size) {
                self.repairs_wanted.push((seq, from, to - from));
            }
        }
    }

    /// The head frame, whole, taken out.
    fn take_head(&mut self, next: u64) -> Option<ReceivedFrame> {
        if !self.pending.get(&next)?.complete() {
            return None;
        }
        let p = self.pending.remove(&next)?;
        self.pending_bytes -= p.frame.data.len();
        self.next = Some(next + 1);
        Some(p.frame)
    }

    /// Frame `next` came from no route in time: it is lost, and so is what references
    /// it, up to the next keyframe.
    fn give_up(&mut self, next: u64) {
        log::debug!("frame {next} came over no route in time");
        if let Some(p) = self.pending.remove(&next) {
            self.pending_bytes -= p.frame.data.len();
        }
        self.counters.frames_lost += 1;
        self.next = Some(next + 1);
        if !self.await_keyframe {
            self.keyframe_wanted = true;
        }
        self.gap = true;
        self.await_keyframe = true;
        self.skip_rasl = true;
    }

    /// Frames below the head left by routes that were slower: copies.
    fn drop_stale(&mut self) {
        let Some(next) = self.next else {
            return;
        };
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if seq >= next {
                break;
            }
            if let Some(p) = self.pending.remove(&seq) {
                self.pending_bytes -= p.frame.data.len();
            }
        }
    }

    /// Decides on a whole frame at the head: output (marked after a gap) or dropped while
    /// playback waits for a keyframe.
    fn output(&mut self, mut frame: ReceivedFrame) -> Option<ReceivedFrame> {
        let keyframe = frame.header.flags.contains(FrameFlags::KEYFRAME);
        if self.await_keyframe && !keyframe {
            self.counters.frames_dropped += 1;
            return None;
        }
        self.await_keyframe = false;
        if self.skip_rasl {
            if is_rasl(&frame.data) {
                self.counters.frames_dropped += 1;
                return None;
            }
            self.skip_rasl = keyframe;
        }
        frame.gap = std::mem::take(&mut self.gap);
        self.counters.frames_output += 1;
        Some(frame)
    }

    /// Nothing pending: the end of the stream once the routes that are up have all ended,
    /// or the first has waited `hold` for the others.
    fn end(&mut self, now: u64) -> Option<Event> {
        let first = self.ended_at?;
        let all = self.routes.iter().all(|r| r.ended || !r.live(now));
        if self.eos_out || !(all || now >= first + self.hold) {
            return None;
        }
        self.eos_out = true;
        Some(Event::Eos)
    }
}

/// The stretches of `start .. end` that none of `parts` (offset, length) covers.
fn uncovered(parts: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut covered: Vec<(u64, u64)> = parts.iter().map(|&(o, l)| (o, o + l)).collect();
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut at = start;
    for (a, b) in covered {
        if b <= at || a >= end {
            continue;
        }
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// `frame` without its bytes.
fn frame_shell(frame: &ReceivedFrame) -> ReceivedFrame {
    ReceivedFrame {
        header: frame.header,
        data: Vec::new(),
        arrival: frame.arrival,
        gap: false,
        late: frame.late,
        catch_up_age: frame.catch_up_age,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameHeader;

    const MS: u64 = 1_000_000;

    fn frame(seq: u64, key: bool, data: &[u8], gap: bool) -> Event {
        let mut flags = FrameFlags::default();
        flags.set(FrameFlags::KEYFRAME, key);
        Event::Frame(ReceivedFrame {
            header: FrameHeader {
                seq,
                flags,
                len: data.len() as u64,
                ..FrameHeader::default()
            },
            data: data.to_vec(),
            arrival: 0,
            gap,
            late: false,
            catch_up_age: None,
        })
    }

    fn part(seq: u64, offset: u64, data: &[u8], size: u64) -> Event {
        let Event::Frame(mut f) = frame(seq, seq == 0, data, false) else {
            unreachable!()
        };
        f.header.part = Some(Part { offset, size });
        Event::Frame(f)
    }

    /// Two connected routes, heard from at `now`.
    fn merge(now: u64) -> Merge {
        let mut m = Merge::new(2, Duration::from_millis(200));
        for route in 0..2 {
            m.take(route, Event::Connected, now);
        }
        assert!(matches!(m.pop(now), Some(Event::Connected)));
        m
    }

    fn seqs(m: &mut Merge, now: u64) -> Vec<(u64, bool)> {
        std::iter::from_fn(|| match m.pop(now) {
            Some(Event::Frame(f)) => Some((f.header.seq, f.gap)),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn each_frame_once_from_whichever_route_brings_it_first() {
        let mut m = merge(0);
        m.take(0, frame(0, true, b"k", false), 0);
        m.take(1, frame(0, true, b"k", false), 0);
        m.take(1, frame(1, false, b"p", false), 0);
        m.take(0, frame(1, false, b"p", false), 0);
        m.take(0, frame(2, false, b"p", false), 0);
        assert_eq!(seqs(&mut m, 0), [(0, false), (1, false), (2, false)]);
        m.take(1, frame(2, false, b"p", false), 0);
        assert_eq!(seqs(&mut m, 0), []);
        assert_eq!(m.counters.duplicates, 3);
    }

    #[test]
    fn a_route_in_an_outage_holds_nothing_back() {
        let mut m = merge(0);
        m.take(0, frame(0, true, b"k", false), 0);
        assert_eq!(seqs(&mut m, 0), [(0, false)]);
        // Route 0 goes silent; route 1, which skipped frame 1 itself, brings 2 after a gap.
        let now = 300 * MS;
        m.heard(1, now);
        m.take(1, frame(2, false, b"p", true), now);
        m.take(1, frame(3, true, b"k", false), now);
        assert_eq!(seqs(&mut m, now), [(3, true)]);
        assert!(m.keyframe_wanted);
        assert_eq!((m.counters.frames_lost, m.counters.frames_dropped), (1, 1));
    }

    #[test]
    fn a_live_route_is_waited_for_until_the_hold_passes() {
        let mut m = merge(0);
        m.take(0, frame(0, true, b"k", false), 0);
        m.take(0, frame(1, false, b"p", false), 0);
        assert_eq!(seqs(&mut m, 0), [(0, false), (1, false)]);
        // Route 0 gave up frame 2 (its group): route 1, live, may still bring it.
        m.take(0, frame(3, true, b"k", true), 10 * MS);
        assert_eq!(seqs(&mut m, 10 * MS), []);
        assert_eq!(m.deadline(10 * MS), Some(200 * MS));
        m.heard(1, 50 * MS);
        m.take(1, frame(2, false, b"p", false), 50 * MS);
        assert_eq!(seqs(&mut m, 50 * MS), [(2, false), (3, false)]);
    }

    #[test]
    fn a_frame_shed_on_a_route_that_went_on_without_a_gap_is_no_loss() {
        let mut m = merge(0);
        m.take(0, frame(0, true, b"k", false), 0);
        m.take(0, frame(2, false, b"p", false), 0);
        assert_eq!(seqs(&mut m, 0), [(0, false), (2, false)]);
        assert!(!m.keyframe_wanted);
    }

    #[test]
    fn parts_from_each_route_make_the_access_unit() {
        let mut m = merge(0);
        m.take(1, part(0, 3, b"defg", 7), 0);
        assert_eq!(seqs(&mut m, 0), []);
        m.take(0, part(0, 0, b"abc", 7), 0);
        m.take(0, part(1, 0, b"", 2), 0);
        m.take(1, part(1, 0, b"xy", 2), 0);
        let mut out = Vec::new();
        while let Some(Event::Frame(f)) = m.pop(0) {
            assert_eq!(f.header.part, None);
            out.push(f.data);
        }
        assert_eq!(out, [b"abcdefg".to_vec(), b"xy".to_vec()]);
    }

    #[test]
    fn an_incomplete_frame_is_asked_for_again_and_repaired_whole() {
        let mut m = merge(0);
        m.take(1, part(0, 3, b"defg", 7), 0);
        // Route 0, heard from at 0, owes its part: asked for once it is silent 50 ms.
        assert_eq!(m.deadline(0), Some(REPAIR_AFTER.as_nanos() as u64));
        let asked = 60 * MS;
        assert!(m.pop(asked).is_none());
        assert_eq!(m.repairs_wanted, [(0, 0, 3)]);
        // Route 1 passed the frame and route 0 is silent, yet the repair is waited for,
        // up to the hold.
        m.heard(1, 150 * MS);
        assert!(m.pop(150 * MS).is_none());
        assert_eq!(m.deadline(150 * MS), Some(200 * MS));
        // The repair is the whole frame; only its missing bytes are taken.
        m.take(1, part(0, 0, b"abcdefg", 7), 150 * MS);
        match m.pop(150 * MS) {
            Some(Event::Frame(f)) => assert_eq!(f.data, b"abcdefg"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uncovered_stretches() {
        assert_eq!(uncovered(&[(0, 3), (5, 2)], 0, 8), [(3, 5), (7, 8)]);
        assert_eq!(uncovered(&[(0, 8)], 2, 6), []);
        assert_eq!(uncovered(&[], 2, 6), [(2, 6)]);
    }

    #[test]
    fn the_end_waits_for_the_other_route_at_most_the_hold() {
        let mut m = merge(0);
        m.take(0, frame(0, true, b"k", false), 0);
        m.take(0, Event::Eos, 0);
        assert_eq!(seqs(&mut m, 0), [(0, false)]);
        assert!(m.pop(MS).is_none());
        m.heard(1, 150 * MS);
        assert_eq!(m.deadline(150 * MS), Some(200 * MS));
        assert!(matches!(m.pop(200 * MS), Some(Event::Eos)));
    }
}
