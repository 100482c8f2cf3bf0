//! The core driven by hand: a recording double for the connection, and a clock stepped in
//! milliseconds from `t0`.

use super::*;
use crate::media::h265::DropCost;
use crate::protocol::control::CONTROL_STREAM;
use crate::protocol::{
    CommandDecoder, GroupDecoder, GroupFrame, DEFAULT_MAX_COMMAND_SIZE, HELLO_TAKES_SHED, VERSION,
};
use std::collections::BTreeMap;

const MS: Duration = Duration::from_millis(1);
const BUDGET: Duration = Duration::from_millis(200);

/// A connection that records what the core writes, and takes only `window` bytes.
#[derive(Default)]
struct Recorder {
    streams: BTreeMap<u64, Vec<u8>>,
    resets: Vec<(u64, u64)>,
    closed: Option<(u64, String)>,
    /// Bytes it still takes (None: any amount).
    window: Option<usize>,
    path: Option<Path>,
}

impl Streams for Recorder {
    fn send(&mut self, stream: u64, data: &[u8], _fin: bool) -> Result<usize, quiche::Error> {
        let n = self.window.map_or(data.len(), |w| w.min(data.len()));
        if n == 0 && !data.is_empty() {
            return Err(quiche::Error::Done);
        }
        if let Some(w) = self.window.as_mut() {
            *w -= n;
        }
        self.streams
            .entry(stream)
            .or_default()
            .extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn prioritize(&mut self, _: u64, _: u8, _: bool) {}
    fn reset(&mut self, stream: u64, code: u64) {
        self.resets.push((stream, code));
    }
    fn close(&mut self, code: u64, reason: &str) {
        self.closed.get_or_insert((code, reason.to_string()));
    }
    fn closed_by_us(&self) -> bool {
        self.closed.is_some()
    }
    fn closing(&self) -> bool {
        self.closed.is_some()
    }
    fn path(&self) -> Option<Path> {
        self.path
    }
    fn stats(&self) -> ConnectionStats {
        ConnectionStats::default()
    }
}

impl Recorder {
    /// A path with round trip `rtt` and no queue.
    fn with_rtt(rtt: Duration) -> Self {
        Recorder {
            path: Some(Path {
                rtt,
                min_rtt: rtt,
                delivery_rate: 1_000_000,
                sent_bytes: 0,
                lost_bytes: 0,
                validated: true,
            }),
            ..Recorder::default()
        }
    }

    /// A connection that takes nothing until opened.
    fn stuck(rtt: Duration) -> Self {
        Recorder {
            window: Some(0),
            ..Recorder::with_rtt(rtt)
        }
    }

    fn commands(&self) -> Vec<Command> {
        let mut out = Vec::new();
        let bytes = self
            .streams
            .get(&CONTROL_STREAM)
            .cloned()
            .unwrap_or_default();
        CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE)
            .push(&bytes, &mut out)
            .unwrap();
        out
    }

    /// The frames written whole to `stream`.
    fn frames(&self, stream: u64) -> Vec<GroupFrame> {
        let mut out = Vec::new();
        let bytes = self.streams.get(&stream).cloned().unwrap_or_default();
        GroupDecoder::new(1 << 30).push(&bytes, &mut out).unwrap();
        out
    }
}

fn policy(join_mode: JoinMode) -> Policy {
    Policy {
        max_receivers: 0,
        token: None,
        join_mode,
        budget: budget::Policy::Receiver,
        keyframe_interval: 1000 * MS,
    }
}

fn peer(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000 + n))
}

/// A core that has the caps, at `t0`.
fn fanout(t0: Instant, join_mode: JoinMode) -> Fanout<Recorder> {
    let mut f = Fanout::new(policy(join_mode), (t0, 1_000_000_000));
    f.set_caps("video/x-h265".into());
    f
}

/// One turn for receiver `id`, at `now`: admitting it if it asks, then writing.
fn turn(f: &mut Fanout<Recorder>, id: u64, now: Instant) {
    f.answer(id, now, &mut |_| true);
    f.serve(id, now);
}

/// A core whose receivers have no latency budget: only backlog drops frames.
fn unbudgeted(t0: Instant) -> Fanout<Recorder> {
    let never = Policy {
        budget: budget::Policy::Never,
        ..policy(JoinMode::Keyframe)
    };
    let mut f = Fanout::new(never, (t0, 0));
    f.set_caps("video/x-h265".into());
    f
}

/// Receiver `id` connects, says HELLO asking for BUDGET and taking shed frames, and is
/// admitted and described.
fn join(f: &mut Fanout<Recorder>, id: u64, conn: Recorder, now: Instant) {
    f.add(id, conn, peer(id as u16), now);
    let hello = Command::Hello {
        version: VERSION,
        options: HELLO_TAKES_SHED,
        token: Vec::new(),
        latency: Some(BUDGET.as_nanos() as u64),
        route: None,
    };
    f.receive_commands(id, vec![hello], now);
    turn(f, id, now);
    assert!(f.get(id).unwrap().described());
}

fn frame(keyframe: bool, cost: DropCost, temporal_id: u8, data: Vec<u8>) -> Frame {
    Frame {
        pts: None,
        dts: None,
        duration: None,
        keyframe,
        parameter_sets: false,
        discont: false,
        temporal_id,
        drop_cost: cost,
        data: Box::new(data),
    }
}

fn irap() -> Frame {
    frame(true, DropCost::Group, 0, nal(19, 1000))
}

/// A VPS, an SPS and a PPS, as x265enc puts them before its first IDR.
fn parameter_sets() -> Vec<u8> {
    [nal(32, 10), nal(33, 20), nal(34, 5)].concat()
}

/// An IDR of 100 bytes with `sets` in front.
fn irap_with(sets: &[u8]) -> Frame {
    let mut f = frame(true, DropCost::Group, 0, [sets, &nal(19, 100)].concat());
    f.parameter_sets = true;
    f
}

/// One NAL unit of `nal_type` with a start code and `len` bytes of payload.
fn nal(nal_type: u8, len: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, nal_type << 1, 1];
    v.resize(6 + len, 0xab);
    v
}

fn push(f: &mut Fanout<Recorder>, frame: Frame, at: Instant) {
    f.push_frame(frame, at, 0);
}

fn conn(f: &Fanout<Recorder>, id: u64) -> &Recorder {
    f.get(id).unwrap().conn()
}

fn open(f: &mut Fanout<Recorder>, id: u64) {
    f.get_mut(id).unwrap().conn_mut().window = None;
}

#[test]
fn a_group_expires_once_a_round_trip_would_take_it_past_the_budget() {
    let t0 = Instant::now();
    let mut f = fanout(t0, JoinMode::Keyframe);
    join(&mut f, 1, Recorder::stuck(50 * MS), t0);
    push(&mut f, irap(), t0);
    // Written now, it would arrive at 149 + 50 ms: within the 200 ms budget.
    turn(&mut f, 1, t0 + 149 * MS);
    assert!(conn(&f, 1).resets.is_empty());
    // Its keyframe cannot be on time: rather than nothing, the group goes late (rescue.rs),
    // and the receiver is told how late it may be.
    turn(&mut f, 1, t0 + 150 * MS);
    assert!(conn(&f, 1).resets.is_empty());
    assert_eq!(f.stats(Instant::now()).receivers[0].groups_late, 1);
    // Past even that (400 ms more: upstream is taken to answer keyframe requests), it
    // expires.
    turn(&mut f, 1, t0 + 549 * MS);
    assert!(conn(&f, 1).resets.is_empty());
    turn(&mut f, 1, t0 + 550 * MS);
    assert_eq!(conn(&f, 1).resets, [(3, error_code::GROUP_EXPIRED)]);
    let stats = f.stats(Instant::now()).receivers[0].clone();
    assert_eq!((stats.groups_reset, stats.frames_dropped), (1, 1));
    // The receiver waits for the next IRAP: frames until then are not queued.
    push(
        &mut f,
        frame(false, DropCost::Group, 0, nal(1, 100)),
        t0 + 560 * MS,
    );
    assert!(!f.get(1).unwrap().has_media_queued());
    assert_eq!(f.stats(Instant::now()).receivers[0].frames_dropped, 2);
    // The path opens: the LATE_GROUP queued at the rescue goes out.
    open(&mut f, 1);
    turn(&mut f, 1, t0 + 570 * MS);
    let late = Command::LateGroup {
        stream: 3,
        allowance: 400_000_000,
    };
    assert!(conn(&f, 1).commands().contains(&late));
}

#[test]
fn cheap_frames_are_shed_first_and_irap_never() {
    let t0 = Instant::now();
    let mut f = fanout(t0, JoinMode::Keyframe);
    join(&mut f, 1, Recorder::stuck(Duration::ZERO), t0);
    push(&mut f, irap(), t0);
    let layered = DropCost::Layers { from: 1 };
    push(&mut f, frame(false, layered, 1, nal(1, 500)), t0);
    push(&mut f, frame(false, DropCost::Alone, 2, nal(0, 500)), t0);
    // A non-reference picture goes at half the budget, a sub-layer at three quarters.
    let shed = |f: &mut Fanout<Recorder>, ms: u32| {
        turn(f, 1, t0 + ms * MS);
        f.stats(Instant::now()).receivers[0].frames_shed
    };
    assert_eq!(shed(&mut f, 99), 0);
    assert_eq!(shed(&mut f, 101), 1);
    assert_eq!(shed(&mut f, 149), 1);
    assert_eq!(shed(&mut f, 151), 2);
    // A later frame of the cut sub-layer is shed as it comes: it may reference the one shed.
    push(
        &mut f,
        frame(false, DropCost::Alone, 1, nal(1, 500)),
        t0 + 152 * MS,
    );
    assert_eq!(f.stats(Instant::now()).receivers[0].frames_shed, 3);
    open(&mut f, 1);
    turn(&mut f, 1, t0 + 160 * MS);
    let frames = conn(&f, 1).frames(3);
    let shed: Vec<bool> = frames
        .iter()
        .map(|fr| fr.header.flags.contains(FrameFlags::SHED))
        .collect();
    assert_eq!(shed, [false, true, true, true]);
    assert_eq!(frames[0].data, nal(19, 1000));
    assert!(conn(&f, 1).resets.is_empty());
}

/// Queues an IRAP and four times MAX_BACKLOG for receiver 1, which is heard from, at `at`.
fn fall_behind(f: &mut Fanout<Recorder>, at: Instant) {
    push(f, irap(), at);
    for _ in 0..4 * MAX_BACKLOG / (1 << 20) {
        push(f, frame(false, DropCost::Group, 0, nal(1, 1 << 20)), at);
    }
    f.heard_from(1, at);
    turn(f, 1, at);
}

#[test]
fn a_receiver_dropped_twice_without_taking_a_group_is_closed_too_slow() {
    let t0 = Instant::now();
    let mut f = unbudgeted(t0);
    join(&mut f, 1, Recorder::stuck(Duration::ZERO), t0);
    // Four times MAX_BACKLOG behind, heard from: its queue is dropped at once.
    fall_behind(&mut f, t0 + 10 * MS);
    assert_eq!(f.stats(Instant::now()).receivers[0].groups_reset, 1);
    assert!(conn(&f, 1).closed.is_none());
    fall_behind(&mut f, t0 + 20 * MS);
    let (code, _) = conn(&f, 1).closed.clone().unwrap();
    assert_eq!(code, error_code::TOO_SLOW);
}

#[test]
fn a_receiver_that_takes_a_whole_group_between_drops_stays() {
    let t0 = Instant::now();
    let mut f = unbudgeted(t0);
    join(&mut f, 1, Recorder::stuck(Duration::ZERO), t0);
    fall_behind(&mut f, t0 + 10 * MS);
    // It reads a small group whole (the IRAP after it ends it), then falls behind again.
    open(&mut f, 1);
    push(&mut f, irap(), t0 + 20 * MS);
    push(&mut f, irap(), t0 + 20 * MS);
    turn(&mut f, 1, t0 + 20 * MS);
    f.get_mut(1).unwrap().conn_mut().window = Some(0);
    fall_behind(&mut f, t0 + 30 * MS);
    // Dropped again (the rest of the group it took, and the new one), and kept.
    assert!(f.stats(Instant::now()).receivers[0].groups_reset > 1);
    assert!(conn(&f, 1).closed.is_none());
}

#[test]
fn a_quiet_receiver_holds_back_neither_the_stream_nor_its_end() {
    let t0 = Instant::now();
    let mut f = unbudgeted(t0);
    join(&mut f, 1, Recorder::stuck(Duration::ZERO), t0);
    join(&mut f, 2, Recorder::stuck(Duration::ZERO), t0);
    push(&mut f, irap(), t0);
    for _ in 0..9 {
        push(
            &mut f,
            frame(false, DropCost::Group, 0, nal(1, 1 << 20)),
            t0,
        );
    }
    let at = |ms: u32| t0 + ms * MS;
    let p = f.pressure(at(500));
    assert!(p.backlog > MAX_BACKLOG && !p.drained, "{p:?}");
    // Receiver 1 is still heard from; 2 went silent over a second ago.
    f.heard_from(1, at(1000));
    let p = f.pressure(at(1100));
    assert!(p.backlog > MAX_BACKLOG && !p.drained, "{p:?}");
    // Receiver 1 takes everything, and closes once it has the end: the quiet one neither
    // paces the stream nor holds up its end.
    open(&mut f, 1);
    turn(&mut f, 1, at(1100));
    assert_eq!(f.pressure(at(1100)).backlog, 0);
    f.end_of_stream();
    assert!(!f.pressure(at(1100)).drained);
    f.remove(1, "end of stream".into());
    let p = f.pressure(at(1100));
    assert_eq!((p.ready, p.backlog, p.drained), (1, 0, true));
    // Quiet with more than MAX_BACKLOG queued, its queue is dropped.
    turn(&mut f, 2, at(1100));
    assert_eq!(f.stats(Instant::now()).receivers[0].groups_reset, 1);
    assert!(!f.get(2).unwrap().has_media_queued());
}

#[test]
fn a_joiner_catches_up_from_the_cache_with_parameter_sets_and_pinned_commands() {
    let t0 = Instant::now();
    let mut f = fanout(t0, JoinMode::Cached);
    let sets = parameter_sets();
    let first = irap_with(&sets);
    push(&mut f, first, t0);
    push(&mut f, frame(false, DropCost::Group, 0, nal(1, 50)), t0);
    // The next IRAP comes without its sets (x265enc sends them once).
    push(&mut f, irap(), t0 + 100 * MS);
    push(
        &mut f,
        frame(false, DropCost::Group, 0, nal(1, 60)),
        t0 + 133 * MS,
    );
    f.push_command(None, "pinned".into(), Some(0));
    push(
        &mut f,
        frame(false, DropCost::Group, 0, nal(1, 70)),
        t0 + 166 * MS,
    );
    // A receiver arriving now starts from the last IRAP, at once.
    join(&mut f, 1, Recorder::with_rtt(10 * MS), t0 + 170 * MS);
    let c = conn(&f, 1);
    let commands = c.commands();
    assert!(
        matches!(commands[..], [
            Command::LatencyBudget(_),
            Command::Join { live_seq: 5, sender_time },
            Command::Describe { .. },
            Command::Application { before_seq: Some(4), ref structure },
        ] if structure == "pinned" && sender_time == 1_000_000_000 + 170_000_000),
        "{commands:?}"
    );
    let frames = c.frames(3);
    let seqs: Vec<u64> = frames.iter().map(|fr| fr.header.seq).collect();
    assert_eq!(seqs, [2, 3, 4]);
    // The IRAP carries the sets it came without.
    assert!(frames[0].header.flags.contains(FrameFlags::HEADER));
    assert_eq!(frames[0].data, [sets, nal(19, 1000)].concat());
    assert_eq!(frames[1].data, nal(1, 60));
}

#[test]
fn a_keyframe_request_brings_the_parameter_sets_with_the_next_irap() {
    let t0 = Instant::now();
    let mut f = fanout(t0, JoinMode::Keyframe);
    join(&mut f, 1, Recorder::with_rtt(10 * MS), t0);
    let sets = parameter_sets();
    let first = irap_with(&sets);
    let at = |ms: u32| t0 + ms * MS;
    push(&mut f, first, at(0));
    turn(&mut f, 1, at(0));
    // The next IRAP comes without its sets: the receiver has them.
    push(&mut f, irap(), at(100));
    turn(&mut f, 1, at(100));
    // It gave up on a group on its own (the sender never learns which) and asks for a
    // keyframe: the next IRAP brings the sets again.
    f.receive_commands(1, vec![Command::KeyframeRequest], at(150));
    turn(&mut f, 1, at(150));
    push(&mut f, irap(), at(200));
    turn(&mut f, 1, at(200));
    let c = conn(&f, 1);
    let header = |stream| {
        c.frames(stream)[0]
            .header
            .flags
            .contains(FrameFlags::HEADER)
    };
    assert_eq!([header(3), header(7), header(11)], [true, false, true]);
    assert_eq!(c.frames(11)[0].data, [sets, nal(19, 1000)].concat());
}

#[test]
fn keyframe_requests_are_merged_and_an_irap_answers_them_all() {
    let t0 = Instant::now();
    let mut f = fanout(t0, JoinMode::Keyframe);
    join(&mut f, 1, Recorder::with_rtt(10 * MS), t0);
    join(&mut f, 2, Recorder::with_rtt(10 * MS), t0);
    push(&mut f, irap(), t0);
    let ask = |f: &mut Fanout<Recorder>, id: u64, now: Instant| {
        f.receive_commands(id, vec![Command::KeyframeRequest], now);
        turn(f, id, now);
    };
    let at = |ms: u32| t0 + ms * MS;
    // Two receivers ask: one request upstream.
    ask(&mut f, 1, at(10));
    ask(&mut f, 2, at(10));
    assert!(f.poll_keyframe(at(10)));
    assert!(!f.poll_keyframe(at(11)));
    // Asked again within the interval: it waits for the interval's end.
    ask(&mut f, 1, at(20));
    assert_eq!(f.keyframes.due(at(20)), Some(at(1010)));
    assert!(!f.poll_keyframe(at(500)));
    assert!(f.poll_keyframe(at(1010)));
    // Asked again, then an IRAP goes out before the interval ends: nothing more to ask.
    ask(&mut f, 2, at(1100));
    push(&mut f, irap(), at(1200));
    assert!(!f.poll_keyframe(at(2100)));
    assert_eq!(f.stats(Instant::now()).keyframe_requests, 2);
}

#[test]
fn admission_checks_the_token_and_the_limit_before_the_application() {
    let t0 = Instant::now();
    let mut f = Fanout::new(
        Policy {
            max_receivers: 1,
            token: Some(b"secret".to_vec()),
            ..policy(JoinMode::Keyframe)
        },
        (t0, 0),
    );
    let hello = |token: &[u8]| Command::Hello {
        version: VERSION,
        options: 0,
        token: token.to_vec(),
        latency: None,
        route: None,
    };
    let mut asked = 0;
    for (id, token) in [(1, &b"secret"[..]), (2, b"wrong"), (3, b"secret")] {
        f.add(id, Recorder::default(), peer(id as u16), t0);
        f.receive_commands(id, vec![hello(token)], t0);
        f.answer(id, t0, &mut |_| {
            asked += 1;
            true
        });
    }
    assert_eq!(asked, 1);
    let codes: Vec<Option<u64>> = (1..=3)
        .map(|id| conn(&f, id).closed.as_ref().map(|c| c.0))
        .collect();
    let (rejected, full) = (error_code::REJECTED, error_code::SERVER_FULL);
    assert_eq!(codes, [None, Some(rejected), Some(full)]);
    let events = f.take_events();
    assert!(matches!(
        events[..],
        [
            ReceiverEvent::Connected { id: 1, .. },
            ReceiverEvent::Rejected { id: 2, .. },
            ReceiverEvent::Rejected { id: 3, .. }
        ]
    ));
    // A receiver silent past HELLO_WITHIN is closed.
    f.add(4, Recorder::default(), peer(4), t0);
    f.check_hello(4, t0 + gate::HELLO_WITHIN);
    assert_eq!(
        conn(&f, 4).closed.as_ref().map(|c| c.0),
        Some(error_code::PROTOCOL_VIOLATION)
    );
}
