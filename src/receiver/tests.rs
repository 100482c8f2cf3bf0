//! The core driven by hand: group streams fed as bytes, the clock stepped in milliseconds.

use super::*;
use crate::protocol::{
    put_group_end, put_group_opening, put_preamble, CommandDecoder, FrameHeader, StreamKind,
    DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE,
};
use std::collections::HashMap;

/// Access units of one NAL unit: a start code, the NAL header (type << 1, TemporalId + 1),
/// and the first byte of a slice header.
const CRA: &[u8] = &[0, 0, 1, 21 << 1, 0x01, 0x80];
const RASL: &[u8] = &[0, 0, 1, 8 << 1, 0x01, 0x80];
/// TRAIL_R on the base layer: later pictures reference it.
const TRAIL: &[u8] = &[0, 0, 1, 1 << 1, 0x01, 0x80];
/// TRAIL_N on the top sub-layer (TemporalId 6 of 7): nothing references it.
const TOP: &[u8] = &[0, 0, 1, 0, 0x07, 0x80];

const MS: u64 = 1_000_000;
/// Our CLOCK_MONOTONIC at t0, and the sender's at its time 0: unrelated clocks.
const OURS: u64 = 7_000_000 * MS;
const THEIRS: u64 = 2_000 * MS;
/// The path's one-way delay.
const ONE_WAY: u64 = 10 * MS;
const LATENCY: Duration = Duration::from_millis(200);

/// Group streams as quiche hands them out: the bytes fed so far, then a FIN or a reset.
#[derive(Default)]
struct Streams(HashMap<u64, Stream>);

#[derive(Default)]
struct Stream {
    bytes: VecDeque<u8>,
    fin: bool,
    reset: Option<u64>,
}

impl Streams {
    fn feed(&mut self, stream: u64, bytes: &[u8]) {
        self.0.entry(stream).or_default().bytes.extend(bytes);
    }

    fn finish(&mut self, stream: u64) {
        self.0.entry(stream).or_default().fin = true;
    }

    fn reset(&mut self, stream: u64, code: u64) {
        self.0.entry(stream).or_default().reset = Some(code);
    }
}

impl StreamSource for Streams {
    fn recv(&mut self, stream: u64, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error> {
        let s = self.0.entry(stream).or_default();
        if let Some(code) = s.reset.take() {
            s.bytes.clear();
            return Err(quiche::Error::StreamReset(code));
        }
        if s.bytes.is_empty() && !s.fin {
            return Err(quiche::Error::Done);
        }
        let n = buf.len().min(s.bytes.len());
        for (to, from) in buf.iter_mut().zip(s.bytes.drain(..n)) {
            *to = from;
        }
        let fin = s.fin && s.bytes.is_empty();
        s.fin &= !fin;
        Ok((n, fin))
    }
}

/// The core with what the driver gives it: streams, the streaming thread's inbox, the
/// control stream's bytes, and a clock from t0.
struct Receiver {
    core: Reassembly,
    streams: Streams,
    events: Inbox,
    control: Vec<u8>,
    t0: Instant,
}

impl Receiver {
    /// `resumed`: the connection replaces a lost one.
    fn new(resumed: bool) -> Self {
        let t0 = Instant::now();
        let counters = ReceiverCounters::default();
        let core = Reassembly::new(
            DEFAULT_MAX_FRAME_SIZE,
            LATENCY,
            resumed,
            counters,
            (t0, OURS),
        );
        Receiver {
            core,
            streams: Streams::default(),
            events: Inbox::new(64),
            control: Vec::new(),
            t0,
        }
    }

    /// A first connection that has its DESCRIBE.
    fn described() -> Self {
        let mut r = Receiver::new(false);
        r.describe();
        assert_eq!(r.take(), ["caps"]);
        r
    }

    fn describe(&mut self) {
        self.command(Command::Describe {
            caps: "video/x-h265".into(),
        });
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn command(&mut self, cmd: Command) -> Reply {
        self.core
            .on_command(cmd, &mut self.events, &mut self.control)
    }

    /// A turn of the driver at `ms`: reads every stream, delivers, until nothing moves.
    fn turn(&mut self, ms: u64) {
        let now = self.at(ms);
        loop {
            let mut streams: Vec<u64> = self.streams.0.keys().copied().collect();
            streams.sort_unstable();
            for stream in streams {
                self.core
                    .read(stream, &mut self.streams, now, ONE_WAY)
                    .unwrap();
            }
            if !self.core.deliver(now, &mut self.events, &mut self.control) {
                break;
            }
        }
    }

    /// The events the streaming thread would take now, in words.
    fn take(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let (Some(event), _) = self.events.pop() {
            out.push(match event {
                Event::Connected => "connected".into(),
                Event::Caps(_) => "caps".into(),
                Event::Frame(f) => {
                    let mut s = format!("frame {}", f.header.seq);
                    if f.gap {
                        s += " gap";
                    }
                    if f.late {
                        s += " late";
                    }
                    if let Some(age) = f.catch_up_age {
                        s += &format!(" catch-up {} ms", age / MS);
                    }
                    s
                }
                Event::Command(c) => format!("command {c}"),
                Event::Eos => "eos".into(),
            });
        }
        out
    }

    /// The commands the core asked to send since the last call.
    fn sent(&mut self) -> Vec<Command> {
        let mut bytes = Vec::new();
        put_preamble(&mut bytes, StreamKind::Control);
        bytes.append(&mut self.control);
        let mut out = Vec::new();
        let mut decoder = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
        decoder.push(&bytes, &mut out).unwrap();
        out
    }
}

/// A group stream from frame `first_seq` on.
fn opening(first_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_group_opening(&mut out, first_seq);
    out
}

/// Frame `seq` carrying `au`, sent at `sent` ms by the sender's clock; a keyframe if `au` is
/// an IRAP.
fn frame(seq: u64, au: &[u8], sent: u64) -> Vec<u8> {
    let mut flags = FrameFlags::default();
    flags.set(
        FrameFlags::KEYFRAME,
        crate::media::h265::inspect(au).unwrap().irap,
    );
    let mut out = Vec::new();
    FrameHeader {
        seq,
        flags,
        send_time: THEIRS + sent * MS,
        len: au.len() as u64,
        ..FrameHeader::default()
    }
    .encode(&mut out);
    out.extend_from_slice(au);
    out
}

/// `frames` of (seq, access unit, sent ms) one after the other.
fn frames(frames: &[(u64, &[u8], u64)]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|&(seq, au, sent)| frame(seq, au, sent))
        .collect()
}

#[test]
fn a_group_starved_behind_a_later_keyframe_is_skipped() {
    let mut r = Receiver::described();
    // Group 0 (stream 3): frame 0, then frame 1 cut short; the rest is stuck in the network.
    let cut = frame(1, TRAIL, 33);
    let mut group = opening(0);
    group.extend(frame(0, CRA, 0));
    group.extend(&cut[..cut.len() - 2]);
    r.streams.feed(3, &group);
    r.turn(0);
    assert_eq!(r.take(), ["frame 0"]);
    // Group 1 (stream 7) arrives whole: its keyframe, a RASL picture, a trailing one.
    let mut next = opening(5);
    next.extend(frames(&[(5, CRA, 165), (6, RASL, 198), (7, TRAIL, 231)]));
    r.streams.feed(7, &next);
    r.turn(10);
    assert!(r.take().is_empty());
    assert_eq!(r.core.skip_deadline(r.at(10)), Some(r.at(210)));
    r.turn(209);
    assert!(r.take().is_empty());
    // Its keyframe has waited `latency`: group 0 goes, and the RASL picture with it.
    r.turn(210);
    assert_eq!(r.take(), ["frame 5 gap", "frame 7"]);
    let c = r.core.counters;
    assert_eq!((c.groups_abandoned, c.frames_dropped), (1, 1));
    // The next group is here already: no keyframe is asked for.
    assert!(r.sent().is_empty());
    // Group 0's missing bytes come after all: read and dropped.
    r.streams.feed(3, &cut[cut.len() - 2..]);
    r.streams.finish(3);
    r.turn(300);
    assert!(r.take().is_empty());
    assert_eq!(r.core.buffered, 0);
}

#[test]
fn a_reset_group_is_skipped_and_a_keyframe_asked_for() {
    let mut r = Receiver::described();
    let mut group = opening(0);
    group.extend(frames(&[(0, CRA, 0), (1, TRAIL, 33)]));
    r.streams.feed(3, &group);
    r.turn(33);
    assert_eq!(r.take(), ["frame 0", "frame 1"]);
    r.streams.reset(3, error_code::GROUP_EXPIRED);
    r.turn(40);
    // Nothing of the next group is here: it may be seconds off.
    assert_eq!(r.sent(), [Command::KeyframeRequest]);
    let c = r.core.counters;
    assert_eq!((c.groups_reset, c.keyframe_requests), (1, 1));
    let mut next = opening(4);
    next.extend(frames(&[(4, CRA, 132), (5, RASL, 165), (6, TRAIL, 198)]));
    r.streams.feed(7, &next);
    r.turn(200);
    assert_eq!(r.take(), ["frame 4 gap", "frame 6"]);
}

#[test]
fn groups_end_by_sequence_without_their_fin() {
    let mut r = Receiver::described();
    // Group 0's FIN never comes; group 1 starting at frame 2 says group 0 is complete.
    let mut group = opening(0);
    group.extend(frames(&[(0, CRA, 0), (1, TRAIL, 33)]));
    r.streams.feed(3, &group);
    let mut next = opening(2);
    next.extend(frame(2, CRA, 66));
    r.streams.feed(7, &next);
    r.turn(70);
    assert_eq!(r.take(), ["frame 0", "frame 1", "frame 2"]);
    // The last group (of 2) is complete at frame 4; no FIN comes for it either.
    let eos = Command::EndOfStream {
        groups: 2,
        end_seq: 4,
    };
    r.command(eos);
    r.turn(71);
    assert!(r.take().is_empty() && !r.core.ended());
    r.streams.feed(7, &frame(3, TRAIL, 99));
    r.turn(100);
    assert_eq!(r.take(), ["frame 3", "eos"]);
    assert!(r.core.ended());
}

#[test]
fn after_the_sender_ended_and_closed_what_is_whole_goes_out() {
    let mut r = Receiver::described();
    r.command(Command::EndOfStream {
        groups: 2,
        end_seq: 6,
    });
    // Group 0 stops inside frame 2; group 1 has frames 3 and 4 of 3..6.
    let cut = frame(2, TRAIL, 66);
    let mut group = opening(0);
    group.extend(frames(&[(0, CRA, 0), (1, TRAIL, 33)]));
    group.extend(&cut[..cut.len() - 1]);
    r.streams.feed(3, &group);
    let mut next = opening(3);
    next.extend(frames(&[(3, CRA, 99), (4, TRAIL, 132)]));
    r.streams.feed(7, &next);
    r.turn(140);
    assert_eq!(r.take(), ["frame 0", "frame 1"]);
    assert!(r.core.on_closed(r.at(150), &mut r.events, &mut r.control));
    assert_eq!(r.take(), ["frame 3 gap", "frame 4", "eos"]);
    assert_eq!(r.core.buffered, 0);
}

#[test]
fn late_frames_are_dropped_or_held_for_the_frame_that_needs_them() {
    let mut r = Receiver::new(false);
    r.command(Command::LatencyBudget(200 * MS));
    r.describe();
    r.take();
    // Frames every 33 ms; the first, 20 ms in transit, is the quickest. A frame is late
    // once it takes 185 ms longer (the budget less the one-way delay and the hand-off).
    let mut group = opening(0);
    group.extend(frame(0, CRA, 0));
    r.streams.feed(3, &group);
    r.turn(20);
    assert_eq!(r.take(), ["frame 0"]);
    // A repair holds frame 1 (a reference picture) back 250 ms, and frame 2 behind it.
    r.streams.feed(3, &frames(&[(1, TRAIL, 33), (2, TOP, 66)]));
    r.turn(283);
    // Frame 1 is held; frame 2, which nothing references, is dropped.
    assert!(r.take().is_empty());
    let c = r.core.counters;
    assert_eq!((c.frames_late, c.frames_dropped), (2, 1));
    // Frame 3 is on time again and may reference frame 1: both go, frame 1 first.
    r.streams.feed(3, &frame(3, TRAIL, 99));
    r.turn(300);
    assert_eq!(r.take(), ["frame 1 late", "frame 3"]);
    // Late by more than the budget: the rest of the group goes, and with nothing after it
    // here, a keyframe is asked for.
    r.streams
        .feed(3, &frames(&[(4, TRAIL, 132), (5, TRAIL, 165)]));
    r.turn(552);
    assert!(r.take().is_empty());
    assert_eq!(r.sent(), [Command::KeyframeRequest]);
    assert_eq!(r.core.counters.groups_abandoned, 1);
}

#[test]
fn pinned_commands_go_out_just_before_their_frame() {
    let mut r = Receiver::described();
    let app = |before_seq, structure: &str| Command::Application {
        before_seq,
        structure: structure.into(),
    };
    r.command(app(Some(1), "before-1"));
    r.command(app(None, "now"));
    r.command(app(Some(9), "before-9"));
    assert_eq!(r.take(), ["command now"]);
    let mut group = opening(0);
    group.extend(frames(&[(0, CRA, 0), (1, TRAIL, 33), (2, TRAIL, 66)]));
    group.extend({
        let mut end = Vec::new();
        put_group_end(&mut end, 3);
        end
    });
    r.streams.feed(3, &group);
    r.streams.finish(3);
    r.turn(70);
    let out = ["frame 0", "command before-1", "frame 1", "frame 2"];
    assert_eq!(r.take(), out);
    // Pinned past the end: handed on before EOS.
    r.command(Command::EndOfStream {
        groups: 1,
        end_seq: 3,
    });
    r.turn(71);
    assert_eq!(r.take(), ["command before-9", "eos"]);
    // At most MAX_PINNED wait for their frame: the oldest goes.
    for n in 0..=MAX_PINNED {
        r.command(app(Some(100), &n.to_string()));
    }
    assert_eq!(r.core.pinned.len(), MAX_PINNED);
    assert_eq!(r.core.pinned.front().map(|p| p.1.as_str()), Some("1"));
}

#[test]
fn a_resumed_connection_asks_for_a_keyframe_unless_it_joins() {
    let mut r = Receiver::new(true);
    r.describe();
    assert_eq!(r.sent(), [Command::KeyframeRequest]);
    let mut group = opening(50);
    group.extend(frame(50, CRA, 0));
    r.streams.feed(3, &group);
    r.turn(10);
    // It follows frames the lost connection never delivered.
    assert_eq!(r.take(), ["caps", "frame 50 gap"]);

    // Joining mid-group: the cached frames come at once, as catch-up, and no request.
    let mut r = Receiver::new(true);
    r.command(Command::LatencyBudget(100 * MS));
    r.command(Command::Join {
        live_seq: 52,
        sender_time: THEIRS + 1000 * MS,
    });
    r.describe();
    assert!(r.sent().is_empty());
    let mut group = opening(50);
    group.extend(frames(&[(50, CRA, 0), (51, TRAIL, 33), (52, TRAIL, 1000)]));
    r.streams.feed(3, &group);
    r.turn(1020);
    let out = [
        "caps",
        "frame 50 gap catch-up 1000 ms",
        "frame 51 catch-up 967 ms",
        "frame 52",
    ];
    assert_eq!(r.take(), out);
}

#[test]
fn what_the_sender_must_not_send_is_told() {
    let mut r = Receiver::new(false);
    // Group streams wait in quiche for DESCRIBE.
    let mut group = opening(0);
    group.extend(frame(0, CRA, 0));
    r.streams.feed(3, &group);
    r.turn(0);
    assert_eq!(r.streams.0[&3].bytes.len(), group.len());
    r.describe();
    r.turn(1);
    assert_eq!(r.take(), ["caps", "frame 0"]);
    let now = r.at(2);
    let e = r.core.read(2, &mut r.streams, now, ONE_WAY).unwrap_err();
    assert_eq!(e.to_string(), "unexpected stream 2");
    r.streams.feed(7, b"not a group stream");
    let e = r.core.read(7, &mut r.streams, now, ONE_WAY).unwrap_err();
    let e = e.to_string();
    assert!(
        e.starts_with("group stream 7: ") && e.contains("magic"),
        "{e}"
    );
    let goodbye = Command::Goodbye {
        code: error_code::REJECTED,
        reason: "refused".into(),
    };
    let Reply::Close(Some(e)) = r.command(goodbye) else {
        panic!("a GOODBYE with an error must fail the receiver");
    };
    assert_eq!(e.to_string(), "sender said goodbye (0x4): refused");
    let bye = Command::Goodbye {
        code: error_code::NO_ERROR,
        reason: String::new(),
    };
    assert!(matches!(r.command(bye), Reply::Close(None)));
    // PINGs are answered while the control stream has room.
    r.command(Command::Ping(7));
    assert_eq!(r.sent(), [Command::Pong(7)]);
    r.control = vec![0; MAX_CONTROL_OUT];
    r.command(Command::Ping(8));
    assert_eq!(r.control.len(), MAX_CONTROL_OUT);
}
