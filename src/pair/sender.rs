//! The sender's side of the pair: the fan-out core, and what `net/server/serving.rs` does around it
//! each turn, standing in for the networking thread. Per turn, as `server::Loop::run`:
//! packets in (a receiver's first packet makes its connection and `Fanout::add`s it; a
//! packet that is news is `heard_from`, answered with a PING after silence), QUIC timers,
//! the streaming thread's work (frames at the stream's rate once a receiver is described,
//! as `wait-for-connection`; then END_OF_STREAM), and for each receiver: its control
//! stream read into `receive_commands`, `answer` (every receiver admitted), `serve`,
//! then the packets out, each repair twice while the path does not queue (the Outbox's
//! `RepeatRepairs`), and probe packets after a burst (`TailProbe`). After the receivers:
//! a merged keyframe request goes to the encoder (its next picture is an IRAP, as
//! x265enc answers GstForceKeyUnit within a frame), the estimate is taken, and closed
//! connections are reaped. Not modelled: Retry, admission by the application, the
//! streaming thread's backpressure (8 MiB), stats snapshots.

use super::link::Link;
use super::media::{Encoder, Kind};
use super::quic::{Conn, Packet};
use super::Lanes;
use crate::protocol::control::{self, CONTROL_STREAM};
use crate::protocol::{CommandDecoder, DEFAULT_MAX_COMMAND_SIZE};
use crate::sender::repair::RepeatRepairs;
use crate::sender::steering::Steering;
use crate::sender::{Estimate, Fanout, Path, Policy, ReceiverEvent, Streams};
use crate::stats::ConnectionStats;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The sender's CLOCK_MONOTONIC at the simulation's start: unrelated to the receivers'.
const SENDER_NS: u64 = 1_000_000_000_000;

/// One receiver's connection at the sender: the QUIC model, and the driver's state that
/// `net/conn.rs` keeps beside quiche.
pub struct Wire {
    pub quic: Conn,
    control_in: CommandDecoder,
    repeat: RepeatRepairs,
}

impl Streams for Wire {
    fn send(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<usize, quiche::Error> {
        self.quic.stream_send(stream, data, fin)
    }

    fn prioritize(&mut self, stream: u64, urgency: u8, _incremental: bool) {
        self.quic.stream_priority(stream, urgency);
    }

    fn reset(&mut self, stream: u64, code: u64) {
        self.quic.stream_reset(stream, code);
    }

    fn close(&mut self, code: u64, _reason: &str) {
        self.quic.close(code);
    }

    fn closed_by_us(&self) -> bool {
        self.quic.closed_by_us()
    }

    fn closing(&self) -> bool {
        self.quic.closing()
    }

    fn path(&self) -> Option<Path> {
        Some(self.quic.path())
    }

    fn stats(&self) -> ConnectionStats {
        self.quic.stats()
    }
}

/// A frame as the core took it.
pub struct Taken {
    pub at: Instant,
    pub kind: Kind,
    pub refs: Vec<u64>,
}

pub struct Sender {
    pub fanout: Fanout<Wire>,
    pub encoder: Encoder,
    /// Frames to make, then END_OF_STREAM if `end_of_stream`.
    frames: u64,
    end_of_stream: bool,
    eos_sent: bool,
    /// When the first receiver was described: frame n is taken n frame intervals later.
    media_start: Option<Instant>,
    epoch: Instant,
    /// Every frame the core took, by sequence number.
    pub taken: Vec<Taken>,
    /// When the core asked the encoder for a keyframe.
    pub keyframe_requests: Vec<Instant>,
    pub events: Vec<(Instant, ReceiverEvent)>,
    pub estimates: Vec<(Instant, Estimate)>,
    /// quicnalusink's adapt-bitrate, when the encoder is steered.
    pub steering: Option<Steering>,
    /// Receivers whose connection closed and was reaped.
    gone: HashSet<u64>,
    /// The driver's probes after a burst, and its repairs sent twice (repair.rs).
    pub tail_probes: bool,
    pub repeat_repairs: bool,
    buf: Vec<u8>,
}

/// Receiver `i`'s id at the core, and its address.
pub fn id(i: usize) -> u64 {
    i as u64 + 1
}

fn peer(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 5000))
}

impl Sender {
    pub fn new(
        policy: Policy,
        encoder: Encoder,
        frames: u64,
        end_of_stream: bool,
        t0: Instant,
    ) -> Self {
        let mut fanout = Fanout::new(policy, (t0, SENDER_NS));
        fanout.set_caps("video/x-h265, stream-format=byte-stream, alignment=au".into());
        Sender {
            fanout,
            encoder,
            frames,
            end_of_stream,
            eos_sent: false,
            media_start: None,
            epoch: t0,
            taken: Vec::new(),
            keyframe_requests: Vec::new(),
            events: Vec::new(),
            estimates: Vec::new(),
            steering: None,
            gone: HashSet::new(),
            tail_probes: true,
            repeat_repairs: true,
            buf: vec![0; 65536],
        }
    }

    /// Every frame was made and taken.
    pub fn made_all(&self) -> bool {
        self.taken.len() as u64 >= self.frames
    }

    fn frame_at(&self, n: u64) -> Option<Instant> {
        let interval = 1_000_000_000 / u64::from(self.encoder.stream.fps);
        let start = self.media_start?;
        (n < self.frames).then(|| start + Duration::from_nanos(n * interval))
    }

    /// The sender's clock, as frame headers carry it.
    fn ns(&self, now: Instant) -> u64 {
        SENDER_NS + now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub fn next_event(&self, now: Instant) -> Option<Instant> {
        let conns = self.fanout.receivers().map(|r| r.conn().quic.timeout());
        let frame = self.frame_at(self.taken.len() as u64);
        let all_made = self.taken.len() as u64 >= self.frames;
        let eos = (self.media_start.is_some() && self.end_of_stream && !self.eos_sent && all_made)
            .then_some(now);
        conns
            .chain([self.fanout.timeout(now), frame, eos])
            .flatten()
            .min()
    }

    /// One turn of the networking thread at `now`; `lanes[i]` is receiver i's path.
    pub fn turn(&mut self, now: Instant, lanes: &mut [Lanes]) {
        for (i, lane) in lanes.iter_mut().enumerate() {
            while let Some(packet) = lane.up.receive(now) {
                self.receive(i, &packet, now);
            }
        }
        for r in self.fanout.receivers_mut() {
            let quic = &mut r.conn_mut().quic;
            if quic.timeout().is_some_and(|t| t <= now) {
                quic.on_timeout(now);
            }
        }
        self.take_work(now);
        for (i, lane) in lanes.iter_mut().enumerate() {
            self.serve(id(i), now, &mut lane.down);
        }
        if self.fanout.poll_keyframe(now) {
            self.keyframe_requests.push(now);
            self.encoder.force_keyframe();
            // What the sink learns from pushing GstForceKeyUnit.
            let answered = !self.encoder.stream.recorded;
            self.fanout.keyframes_answered(answered);
        }
        if let Some(e) = self.fanout.estimate(now) {
            self.estimates.push((now, e));
            // What quicnalusink's adapt-bitrate does with it (quicnalusink/adapt.rs).
            let bitrate = self.encoder.stream.bitrate;
            if let Some(step) =
                (self.steering.as_mut()).and_then(|s| s.next(&e, || (bitrate / 1000) as u32))
            {
                self.encoder.set_bitrate(u64::from(step.kbps) * 1000);
                if step.keyframe {
                    self.keyframe_requests.push(now);
                    self.encoder.force_keyframe();
                }
            }
        }
        self.reap(now);
        if self.media_start.is_none() && self.fanout.pressure(now).ready > 0 {
            self.media_start = Some(now);
        }
    }

    fn receive(&mut self, i: usize, packet: &Packet, now: Instant) {
        let id = id(i);
        if self.gone.contains(&id) {
            return;
        }
        if self.fanout.get(id).is_none() {
            let wire = Wire {
                quic: Conn::server(now),
                control_in: CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE),
                repeat: RepeatRepairs::default(),
            };
            self.fanout.add(id, wire, peer(i), now);
        }
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        let news = r.conn_mut().quic.recv(now, packet);
        if news && self.fanout.heard_from(id, now) {
            if let Some(r) = self.fanout.get_mut(id) {
                r.conn_mut().quic.send_ack_eliciting();
            }
        }
    }

    fn take_work(&mut self, now: Instant) {
        while let Some(at) = self.frame_at(self.taken.len() as u64).filter(|t| *t <= now) {
            let made = self.encoder.next();
            self.taken.push(Taken {
                at,
                kind: made.kind,
                refs: made.refs,
            });
            let ns = self.ns(at);
            self.fanout.push_frame(made.frame, at, ns);
        }
        let all_made = self.taken.len() as u64 >= self.frames;
        if self.end_of_stream && all_made && !self.eos_sent && self.media_start.is_some() {
            self.eos_sent = true;
            self.fanout.end_of_stream();
        }
    }

    fn serve(&mut self, id: u64, now: Instant, down: &mut Link<Rc<Packet>>) {
        self.fanout.check_hello(id, now);
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        let mut wrote_media = false;
        if r.conn().quic.established {
            let wire = r.conn_mut();
            let mut commands = Vec::new();
            let mut violation = None;
            for stream in wire.quic.readable() {
                if stream != CONTROL_STREAM {
                    violation = Some("unexpected stream from receiver".to_string());
                    break;
                }
                let quic = &mut wire.quic;
                let read = |buf: &mut [u8]| quic.stream_recv(CONTROL_STREAM, buf);
                let result = control::read_commands(
                    &mut wire.control_in,
                    read,
                    &mut self.buf,
                    &mut commands,
                );
                if let Err(e) = result {
                    violation = Some(e.to_string());
                }
            }
            self.fanout.receive_commands(id, commands, now);
            if let Some(why) = violation {
                self.fanout.violation(id, &why);
            }
            self.fanout.answer(id, now, &mut |_| true);
            for e in self.fanout.take_events() {
                self.events.push((now, e));
            }
            wrote_media = self.fanout.serve(id, now);
        }
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        // What ServerLoop::serve does after the core's turn.
        let repeats = self.repeat_repairs && r.repeats_repairs();
        let wire = r.conn_mut();
        wire.repeat.set(repeats);
        send_all(wire, now, down);
        r.after_send(wrote_media);
        // No pacing in the model: quiche never holds a packet back.
        while self.tail_probes && r.probe(now, true) {
            let wire = r.conn_mut();
            wire.quic.send_ack_eliciting();
            send_all(wire, now, down);
        }
    }

    fn reap(&mut self, now: Instant) {
        let closed: Vec<u64> = self
            .fanout
            .receivers()
            .filter(|r| r.conn().quic.is_closed())
            .map(|r| r.id())
            .collect();
        for id in closed {
            let why = match self.fanout.get(id).and_then(|r| r.conn().quic.peer_error()) {
                Some(code) => format!("closed by the receiver ({code:#x})"),
                None => "closed".to_string(),
            };
            self.fanout.remove(id, why);
            self.gone.insert(id);
        }
        for e in self.fanout.take_events() {
            self.events.push((now, e));
        }
    }
}

/// quiche's packets onto the link; a packet that carries a repair goes twice while
/// RepeatRepairs says so (the copy is the same datagram: the receiver drops the second).
fn send_all(wire: &mut Wire, now: Instant, down: &mut Link<Rc<Packet>>) {
    while let Some((packet, marked)) = wire.quic.poll_packet(now) {
        let twice = wire.repeat.after_packet(marked, packet.len);
        let len = packet.len;
        let packet = Rc::new(packet);
        if twice {
            down.send(now, len, packet.clone());
        }
        down.send(now, len, packet);
    }
}
