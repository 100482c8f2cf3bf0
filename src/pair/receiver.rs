//! One receiver of the pair: the reassembly core, and what `net/client/connection.rs` does around it
//! each turn, standing in for its networking thread. Per turn, as `client::Loop::run`:
//! packets in, QUIC timers, then once the handshake is done: HELLO (with TAKES_SHED and
//! its latency) the first time, the control stream's commands into `on_command`, the
//! group streams into `read` (one-way delay: half the minimum RTT), `deliver` until
//! nothing moves, a close with NO_ERROR once EOS is handed over, a PING after 100 ms
//! without a packet, and the control stream's bytes out. The streaming thread is always
//! ready: each turn takes every event from the inbox, at that turn's time. Not modelled:
//! certificates, reconnection, keepalives, stats snapshots.

use super::link::Link;
use super::media::Decoder;
use super::quic::{Conn, Packet};
use super::sender::Taken;
use super::{Lanes, Plan};
use crate::protocol::control::{self, CONTROL_STREAM};
use crate::protocol::{
    error_code, put_preamble, Command, CommandDecoder, FrameFlags, StreamKind,
    DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE, HELLO_TAKES_SHED, VERSION,
};
use crate::receiver::inbox::{Event, Inbox};
use crate::receiver::{Reassembly, Reply, StreamSource, Violation};
use crate::stats::ReceiverCounters;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// After this long without a packet the receiver PINGs (receiver/signals.rs, PROBE).
const PROBE: Duration = Duration::from_millis(100);
/// The receiver's CLOCK_MONOTONIC at the simulation's start.
const RECEIVER_NS: u64 = 7_000_000_000_000;
/// quicnalusrc's default queue: events the streaming thread may leave unread.
const QUEUE_LEN: usize = 64;

impl StreamSource for Conn {
    fn recv(&mut self, stream: u64, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error> {
        self.stream_recv(stream, buf)
    }
}

/// One frame as the streaming thread got it.
#[derive(Debug, Clone)]
pub struct Output {
    pub seq: u64,
    /// When it left the receiver, and when the sender's core took it.
    pub at: Instant,
    pub taken: Instant,
    pub keyframe: bool,
    /// It carries parameter sets (HEADER).
    pub header: bool,
    pub gap: bool,
    pub late: bool,
    /// From the sender's cache, to a joiner.
    pub catch_up: bool,
    pub decodable: bool,
}

impl Output {
    pub fn latency(&self) -> Duration {
        self.at.saturating_duration_since(self.taken)
    }
}

pub struct Rx {
    pub plan: Plan,
    pub conn: Option<Conn>,
    pub core: Reassembly,
    inbox: Inbox,
    control_in: CommandDecoder,
    control_out: Vec<u8>,
    hello_sent: bool,
    last_rx: Instant,
    last_probe: Instant,
    decoder: Decoder,
    /// Everything the streaming thread got, in order.
    pub out: Vec<Output>,
    pub caps: u32,
    /// When HELLO went, END_OF_STREAM was handed over, and the connection was closed.
    pub connected_at: Option<Instant>,
    pub eos_at: Option<Instant>,
    pub closed_at: Option<Instant>,
    /// A protocol violation, which ends the receiver.
    pub violation: Option<String>,
    buf: Vec<u8>,
}

impl Rx {
    pub fn new(plan: Plan, t0: Instant) -> Self {
        let core = Reassembly::new(
            DEFAULT_MAX_FRAME_SIZE,
            plan.latency,
            false,
            ReceiverCounters::default(),
            (t0, RECEIVER_NS),
        );
        Rx {
            plan,
            conn: None,
            core,
            inbox: Inbox::new(QUEUE_LEN),
            control_in: CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE),
            control_out: Vec::new(),
            hello_sent: false,
            last_rx: t0,
            last_probe: t0,
            decoder: Decoder::default(),
            out: Vec::new(),
            caps: 0,
            connected_at: None,
            eos_at: None,
            closed_at: None,
            violation: None,
            buf: vec![0; 65536],
        }
    }

    fn done(&self) -> bool {
        self.closed_at.is_some() || self.violation.is_some()
    }

    pub fn next_event(&self, now: Instant, t0: Instant) -> Option<Instant> {
        let Some(conn) = &self.conn else {
            return Some(t0 + self.plan.at);
        };
        if self.done() {
            return None;
        }
        let probe = conn
            .established
            .then(|| self.last_rx.max(self.last_probe) + PROBE);
        [conn.timeout(), probe, self.core.skip_deadline(now)]
            .into_iter()
            .flatten()
            .min()
    }

    /// One turn of the networking thread at `now`, then the streaming thread's.
    pub fn turn(&mut self, now: Instant, t0: Instant, lane: &mut Lanes, taken: &[Taken]) {
        if self.conn.is_none() {
            if now < t0 + self.plan.at {
                return;
            }
            self.conn = Some(Conn::client(now));
            self.last_rx = now;
            self.last_probe = now;
        }
        if self.done() {
            while lane.down.receive(now).is_some() {}
            return;
        }
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        while let Some(packet) = lane.down.receive(now) {
            if conn.recv(now, &packet) {
                self.last_rx = now;
            }
        }
        if conn.timeout().is_some_and(|t| t <= now) {
            conn.on_timeout(now);
        }
        if conn.is_closed() {
            self.core
                .on_closed(now, &mut self.inbox, &mut self.control_out);
            self.closed_at = Some(now);
        } else if conn.established {
            self.established(&mut conn, now);
        }
        flush(&mut conn, now, &mut lane.up);
        self.conn = Some(conn);
        self.take_events(now, taken);
    }

    fn established(&mut self, conn: &mut Conn, now: Instant) {
        if !self.hello_sent {
            self.hello_sent = true;
            self.connected_at = Some(now);
            put_preamble(&mut self.control_out, StreamKind::Control);
            Command::Hello {
                version: VERSION,
                options: HELLO_TAKES_SHED,
                token: Vec::new(),
                latency: Some(self.plan.latency.as_nanos() as u64),
                route: None,
            }
            .encode(&mut self.control_out);
            self.inbox.push(Event::Connected);
        }
        loop {
            if let Err(e) = self.read_streams(conn, now) {
                conn.close(error_code::PROTOCOL_VIOLATION);
                self.violation = Some(e.to_string());
                return;
            }
            let progress = self
                .core
                .deliver(now, &mut self.inbox, &mut self.control_out);
            if self.core.ended() {
                conn.close(error_code::NO_ERROR);
            }
            if !progress {
                break;
            }
        }
        if self.last_rx.max(self.last_probe) + PROBE <= now {
            self.last_probe = now;
            conn.send_ack_eliciting();
        }
        if !self.control_out.is_empty() {
            if let Ok(n) = conn.stream_send(CONTROL_STREAM, &self.control_out, false) {
                self.control_out.drain(..n);
            }
        }
    }

    fn read_streams(&mut self, conn: &mut Conn, now: Instant) -> Result<(), Violation> {
        let one_way = conn.path().min_rtt.as_nanos() as u64 / 2;
        // Control first, as the driver: JOIN and DESCRIBE come before group streams.
        for stream in conn.readable() {
            if stream == CONTROL_STREAM {
                let mut commands = Vec::new();
                let read = |buf: &mut [u8]| conn.stream_recv(CONTROL_STREAM, buf);
                control::read_commands(&mut self.control_in, read, &mut self.buf, &mut commands)
                    .map_err(Violation::Control)?;
                for cmd in commands {
                    let reply = self
                        .core
                        .on_command(cmd, &mut self.inbox, &mut self.control_out);
                    if let Reply::Close(v) = reply {
                        conn.close(error_code::NO_ERROR);
                        if let Some(v) = v {
                            return Err(v);
                        }
                    }
                }
            } else {
                self.core.read(stream, conn, now, one_way)?;
            }
        }
        Ok(())
    }

    /// The streaming thread: takes every event now.
    fn take_events(&mut self, now: Instant, taken: &[Taken]) {
        while let (Some(event), _) = self.inbox.pop() {
            match event {
                Event::Caps(_) => self.caps += 1,
                Event::Eos => self.eos_at = Some(now),
                Event::Frame(f) => {
                    let seq = f.header.seq;
                    let Some(t) = taken.get(seq as usize) else {
                        self.violation = Some(format!("frame {seq} was never sent"));
                        continue;
                    };
                    let decodable = self.decoder.take(seq, &f.data, &t.refs);
                    self.out.push(Output {
                        seq,
                        at: now,
                        taken: t.at,
                        keyframe: f.header.flags.contains(FrameFlags::KEYFRAME),
                        header: f.header.flags.contains(FrameFlags::HEADER),
                        gap: f.gap,
                        late: f.late,
                        catch_up: f.catch_up_age.is_some(),
                        decodable,
                    });
                }
                Event::Connected | Event::Command(_) => {}
            }
        }
    }
}

fn flush(conn: &mut Conn, now: Instant, up: &mut Link<Rc<Packet>>) {
    while let Some((packet, _)) = conn.poll_packet(now) {
        let len = packet.len;
        up.send(now, len, Rc::new(packet));
    }
}
