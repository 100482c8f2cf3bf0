//! The receiver's networking thread: a QUIC client that says HELLO, reads the stream
//! description and the group streams, and hands whole access units to the streaming thread
//! in group order.

use super::backoff::{Backoff, Next, Reconnect};
use super::capture::Capture;
use super::config::{self, CongestionControl};
use super::control::{self, Stopped, CONTROL_STREAM};
use super::ending::{self, cannot_create, no_answer, poll_failed, violation, Outcome};
use super::inbox::{Event, Inbox, Outgoing, ReceivedFrame};
use super::lateness::{Held, Lateness, Verdict};
use super::link::{gated, Interrupted, Link, NetThread};
use super::logger::{self, Route};
use super::monotonic_ns;
use super::socket::{random_cid, Endpoint, Outbox, MAX_RECV_BATCH, SOCKET};
use super::stats::{ClientStats, ConnectionStats, ReceiverCounters, Reporter};
use super::tls::{self, Check, Fingerprint};
use crate::h265::DropCost;
use crate::protocol::{
    error_code, put_preamble, Command, CommandDecoder, FrameFlags, GroupDecoder, GroupFrame,
    StreamKind, DEFAULT_MAX_COMMAND_SIZE, HELLO_TAKES_SHED, VERSION,
};
use mio::Events;
use once_cell::sync::Lazy;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quicnalu-client",
        gst::DebugColorFlags::empty(),
        Some("quicnalusrc networking thread"),
    )
});

/// First server-initiated unidirectional stream: the first group.
const FIRST_GROUP: u64 = 3;
/// Bytes of frames held back (later groups, or a full queue; whole or being received)
/// before the thread stops reading group streams; QUIC flow control then slows the sender.
const MAX_BUFFERED: usize = 16 << 20;
/// Read size between frames: a frame header and a little of the body, which then passes
/// through one more copy; the rest of the body is read in place.
const HEADER_READ: usize = 64;
/// Application commands from the sender pinned to a frame that has not come yet.
const MAX_PINNED: usize = 256;
/// Bytes waiting on the control stream beyond which the sender's PINGs go unanswered: one
/// that floods PINGs and never reads would otherwise grow them without bound.
const MAX_CONTROL_OUT: usize = DEFAULT_MAX_COMMAND_SIZE as usize;
/// After this long without a packet from the sender (an outage, or a paused stream) the
/// receiver sends a PING each time, so the sender learns at once when the link is back.
const PROBE: Duration = Duration::from_millis(100);
/// The idle timeout is the element's `timeout`, but never so short that a brief pause in
/// the network drops a healthy connection.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle receiver tells the sender it is still there.
const KEEPALIVE: Duration = Duration::from_secs(5);

pub struct ClientSettings {
    pub peer: SocketAddr,
    pub server_name: Option<String>,
    pub ca_file: Option<String>,
    pub verify: bool,
    /// The sender's leaf certificate must have this SHA-256 fingerprint; replaces `verify`
    /// and `ca_file`.
    pub pin: Option<Fingerprint>,
    /// How long the handshake may take, and, once connected, how long the sender may stay
    /// silent (the idle timeout, at least 1 s) before the connection counts as lost.
    pub connect_timeout: Duration,
    pub congestion_control: CongestionControl,
    pub max_frame_size: u64,
    /// Presented in HELLO; the sender's application may admit or refuse by it.
    pub token: Vec<u8>,
    /// Events the streaming thread may leave unread before the network thread stops
    /// reading (and QUIC flow control slows the sender).
    pub queue_len: usize,
    /// The latency this receiver has for frames: asked of the sender in HELLO as its
    /// budget, and how long the next group may hold back a later, complete keyframe before
    /// it is abandoned and playback resumes at that keyframe.
    pub latency: Duration,
    pub reconnect: Reconnect,
    /// Told of every connect and disconnect. Called on the networking thread: it must not
    /// block.
    pub on_connection: Box<dyn Fn(ConnectionEvent) + Send>,
    /// Longest command the sender may send; a longer one is a protocol violation.
    pub max_command_size: u64,
    /// qlog files and the TLS key log.
    pub capture: Capture,
    /// Takes the snapshots [`Client::stats`] returns, and hands them out at an interval.
    pub stats: Reporter<ClientStats>,
    /// Where quiche's log records from the networking thread go.
    pub log: Route,
}

/// A change of connection, for the element to report.
#[derive(Debug, Clone)]
pub enum ConnectionEvent {
    Connected {
        peer: SocketAddr,
        /// A new connection after a lost one.
        resumed: bool,
    },
    Disconnected {
        peer: SocketAddr,
        reason: String,
        reconnecting: bool,
    },
}

struct Queue {
    events: Inbox,
    /// Set by the streaming side; the networking thread sends KEYFRAME_REQUEST.
    keyframe_wanted: bool,
    /// Application commands for the sender, sent once connected.
    commands_out: Outgoing,
    /// The latest `stats` snapshot.
    stats: ClientStats,
}

/// Handle to a running client; dropping it stops the thread and joins it.
pub struct Client {
    net: NetThread<Queue>,
}

impl Client {
    /// Binds a socket and starts connecting; failures to connect arrive through
    /// [`Client::next`].
    pub fn start(settings: ClientSettings) -> Result<Client, String> {
        let mut config = config::client(
            settings.verify && settings.pin.is_none(),
            settings.ca_file.as_deref(),
            settings.congestion_control,
            settings.connect_timeout.max(MIN_IDLE_TIMEOUT),
        )?;
        if settings.capture.logs_keys() {
            config.log_keys();
        }
        let any: IpAddr = if settings.peer.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(any, 0);
        let endpoint = Endpoint::bind(bind)?;
        let link = Arc::new(Link::new(Queue {
            events: Inbox::new(settings.queue_len),
            keyframe_wanted: false,
            commands_out: Outgoing::default(),
            stats: ClientStats::default(),
        }));
        let waker = endpoint.waker.clone();
        let counters = ReceiverCounters::default();
        // Application code runs through the link's gate, so stopping never waits on it.
        let mut settings = settings;
        settings.on_connection = gated(&link, settings.on_connection);
        settings.stats.wrap_poster(|post| gated(&link, post));
        let first = Loop::new(endpoint, config, link.clone(), settings, None, counters)?;
        let route = first.settings.log.clone();
        let net = NetThread::spawn("quicnalu-src-net", link, waker, move || {
            logger::route(route);
            drive(first)
        })?;
        Ok(Client { net })
    }

    /// The latest snapshot of the counters (at most stats::REFRESH old).
    pub fn stats(&self) -> ClientStats {
        self.net.lock().inner.stats.clone()
    }

    pub fn set_flushing(&self, flushing: bool) {
        self.net.set_flushing(flushing);
    }

    /// Asks the sender for a keyframe as soon as the connection allows.
    pub fn request_keyframe(&self) {
        self.net.update(|s| s.inner.keyframe_wanted = true);
        self.net.wake();
    }

    /// Sends an application command (a serialized GstStructure) to the sender, once
    /// connected. False if it is longer than the sender takes, or control::MAX_COMMANDS_WAITING
    /// of commands wait already (not connected, or the sender does not read them).
    pub fn send_command(&self, structure: String) -> bool {
        // Its position varint and the text must fit in one message.
        if structure.len() + 8 > DEFAULT_MAX_COMMAND_SIZE as usize {
            return false;
        }
        let queued = self.net.update(|s| s.inner.commands_out.offer(structure));
        self.net.wake();
        queued
    }

    /// Waits for the next event. Events queued before a failure are delivered first.
    pub fn next(&self) -> Result<Event, Interrupted> {
        let mut was_full = false;
        let event = self.net.wait(None, |q| {
            let (event, full) = q.events.pop();
            was_full = full;
            event
        })?;
        if was_full {
            self.net.wake();
        }
        event.ok_or(Interrupted::Flushing)
    }
}

/// Runs connections until the element stops: the first, then, after a lost one, new
/// attempts as the reconnect policy (backoff.rs) says, each resuming at the next keyframe.
fn drive(mut conn: Loop) {
    let peer = conn.settings.peer;
    let mut backoff = Backoff::new(peer, conn.settings.reconnect);
    loop {
        let outcome = conn.run();
        conn.report(&outcome);
        let established = match conn.phase {
            Phase::Serving { since } => Some(since),
            Phase::Connecting => None,
        };
        match backoff.next(outcome, Instant::now(), conn.started, established) {
            Next::Stop => break,
            Next::Fail(why) => {
                conn.fail(why);
                break;
            }
            Next::Retry { after, window } => {
                if after.is_some_and(|t| !conn.pause_until(t)) {
                    return;
                }
                gst::info!(CAT, "connecting to {peer} again (answer within {window:?})");
                conn = match conn.reconnect(window) {
                    Ok(next) => next,
                    Err((link, why)) => {
                        link.update(|s| s.failure = Some(why));
                        link.wait_shutdown();
                        return;
                    }
                };
            }
        }
    }
    // Nothing more will happen: wait for stop().
    conn.link.wait_shutdown();
}

/// Where one connection stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The handshake has yet to complete, or the certificate to pass.
    Connecting,
    /// HELLO went at `since`, once the handshake completed.
    Serving { since: Instant },
}

/// Moves the commands pinned before frame `seq` (None: all) to `events`.
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

/// The stream ID of group number `n` (counted from 0), saturating: `n` comes from the
/// network (END_OF_STREAM) and must not overflow.
fn group_stream(n: u64) -> u64 {
    n.saturating_mul(4).saturating_add(FIRST_GROUP)
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
    /// Drops the held late frames: no frame after them came on time. Returns their bytes.
    fn discard_held(&mut self, counters: &mut ReceiverCounters) -> usize {
        let (frames, bytes) = self.held.discard();
        counters.frames_dropped += frames as u64;
        self.bytes -= bytes;
        bytes
    }

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
}

struct Loop {
    endpoint: Endpoint,
    config: quiche::Config,
    conn: quiche::Connection,
    link: Arc<Link<Queue>>,
    settings: ClientSettings,
    started: Instant,
    /// How long this attempt may take to connect.
    answer_within: Duration,
    /// This connection replaces a lost one: ask for a keyframe at once.
    resumed: bool,
    phase: Phase,
    /// Set when retrying cannot help.
    fatal: Option<String>,
    /// For `stats`; carried over to the next connection.
    counters: ReceiverCounters,
    control_in: CommandDecoder,
    control_out: Vec<u8>,
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
    last_keepalive: Instant,
    last_rx: Instant,
    last_probe: Instant,
    /// The last receive() stopped at its batch limit.
    unread: bool,
    /// The last turn stopped reading the control stream at the cap (control.rs).
    control_unread: bool,
    outbox: Outbox,
    buf: Vec<u8>,
}

impl Loop {
    /// `retry`: this replaces a lost connection and must answer within that long.
    fn new(
        endpoint: Endpoint,
        mut config: quiche::Config,
        link: Arc<Link<Queue>>,
        settings: ClientSettings,
        retry: Option<Duration>,
        counters: ReceiverCounters,
    ) -> Result<Loop, String> {
        let scid = random_cid();
        let scid = quiche::ConnectionId::from_ref(&scid);
        let server_name = settings.server_name.as_deref().filter(|s| !s.is_empty());
        let mut conn = quiche::connect(
            server_name,
            &scid,
            endpoint.local,
            settings.peer,
            &mut config,
        )
        .map_err(cannot_create)?;
        settings.capture.attach(&mut conn, "quicnalusrc");
        let o = endpoint.offload;
        gst::info!(
            CAT,
            "bound {} (UDP GSO {}, GRO {})",
            endpoint.local,
            o.gso,
            o.gro
        );
        if let Some(warning) = o.buffer_warning() {
            gst::warning!(CAT, "{warning}");
        }
        let outbox = Outbox::new(endpoint.offload);
        let control_in = CommandDecoder::new(settings.max_command_size);
        Ok(Loop {
            endpoint,
            config,
            conn,
            link,
            answer_within: retry.unwrap_or(settings.connect_timeout),
            resumed: retry.is_some(),
            phase: Phase::Connecting,
            fatal: None,
            settings,
            started: Instant::now(),
            counters,
            control_in,
            control_out: Vec::new(),
            groups: BTreeMap::new(),
            buffered: 0,
            described: false,
            next_group: FIRST_GROUP,
            eos_groups: None,
            eos_end_seq: None,
            eos_delivered: false,
            // A resumed stream follows the frames the lost connection never delivered.
            gap: retry.is_some(),
            skip_rasl: true,
            lateness: Lateness::default(),
            sub_layers: 7,
            join: None,
            pinned: VecDeque::new(),
            last_keepalive: Instant::now(),
            last_rx: Instant::now(),
            last_probe: Instant::now(),
            unread: false,
            control_unread: false,
            outbox,
            buf: vec![0; 65536],
        })
    }

    /// Runs this connection until it ends.
    fn run(&mut self) -> Outcome {
        let mut events = Events::with_capacity(16);
        self.flush();
        loop {
            let deadlines = [
                self.conn.timeout_instant(),
                Some(self.next_deadline()),
                self.outbox.release_at(),
                self.conn
                    .is_established()
                    .then(|| self.last_rx.max(self.last_probe) + PROBE),
                self.skip_deadline(),
                Some(self.settings.stats.due()),
            ];
            // Commands left unread in quiche raise no socket event: come straight back.
            let unread = self.unread || self.control_unread;
            if let Err(e) = self.endpoint.wait(&mut events, deadlines, unread) {
                return Outcome::Fatal(poll_failed(e));
            }
            if self.link.lock().shutdown {
                if !self.conn.is_closed() {
                    let _ = self
                        .conn
                        .close(true, error_code::NO_ERROR, b"receiver stopped");
                    self.outbox
                        .send_all_now(&mut self.conn, &self.endpoint.socket);
                }
                return Outcome::Shutdown;
            }
            if self.unread
                || events
                    .iter()
                    .any(|e| e.token() == SOCKET && e.is_readable())
            {
                self.unread = !self.receive();
            }
            self.conn.on_timeout();
            if let Some(why) = self.fatal.take() {
                self.flush();
                return Outcome::Fatal(why);
            }
            if self.conn.is_closed() {
                return self.closed();
            }
            if !self.conn.is_established() && self.started.elapsed() > self.answer_within {
                let _ = self.conn.close(false, 0x0, b"connect timeout");
                self.flush();
                let why = no_answer(self.settings.peer, self.answer_within);
                return Outcome::Unanswered(why);
            }
            if self.conn.is_established() {
                self.established();
            }
            self.flush();
            self.publish_stats(true);
        }
    }

    /// A new `stats` snapshot when one is due; `connected`: this connection is current.
    fn publish_stats(&mut self, connected: bool) {
        let (conn, counters) = (&self.conn, self.counters);
        let snapshot = self.settings.stats.poll(|| ClientStats {
            peer: Some(self.settings.peer),
            connection: (connected && conn.is_established()).then(|| ConnectionStats::of(conn)),
            counters,
        });
        if let Some(stats) = snapshot {
            self.link.update(|s| s.inner.stats = stats);
        }
    }

    /// Why the closed connection ended, and whether connecting again could help.
    fn closed(&mut self) -> Outcome {
        if self.eos_groups.is_some() && !self.eos_delivered {
            // The sender ended the stream and stopped waiting for us (its eos-timeout).
            self.deliver_remaining();
        }
        if self.eos_delivered {
            return Outcome::Ended;
        }
        let (peer, conn) = (self.settings.peer, &self.conn);
        let (peer_error, local_error) = (conn.peer_error(), conn.local_error());
        let served = self.phase != Phase::Connecting;
        ending::closed(peer, peer_error, local_error, conn.is_timed_out(), served)
    }

    /// A fresh connection on the same socket, for after this one was lost. Gives back the
    /// link and the reason if it cannot even be created.
    fn reconnect(self, window: Duration) -> Result<Loop, (Arc<Link<Queue>>, String)> {
        let link = self.link.clone();
        Loop::new(
            self.endpoint,
            self.config,
            self.link,
            self.settings,
            Some(window),
            self.counters,
        )
        .map_err(|e| (link, e))
    }

    /// Waits until `t`, dropping stray datagrams; false if the element is stopping.
    fn pause_until(&mut self, t: Instant) -> bool {
        let mut events = Events::with_capacity(4);
        while Instant::now() < t {
            if self.link.lock().shutdown
                || self.endpoint.wait(&mut events, [Some(t)], false).is_err()
            {
                return false;
            }
            while self.endpoint.recv(&mut self.buf).is_some() {}
        }
        !self.link.lock().shutdown
    }

    /// Tells the application how the connection ended; a failure to connect is told by the
    /// failure itself.
    fn report(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ended => self.notify_disconnected("end of stream".into(), false),
            Outcome::Fatal(why) if self.phase != Phase::Connecting => {
                self.notify_disconnected(why.clone(), false)
            }
            Outcome::Lost(why) => {
                let reconnecting = self.settings.reconnect.enabled;
                self.notify_disconnected(why.clone(), reconnecting)
            }
            Outcome::Unanswered(why) if self.resumed => {
                gst::debug!(CAT, "reconnect attempt failed: {why}")
            }
            _ => {}
        }
    }

    fn notify_disconnected(&mut self, reason: String, reconnecting: bool) {
        self.settings.stats.force();
        self.publish_stats(false);
        (self.settings.on_connection)(ConnectionEvent::Disconnected {
            peer: self.settings.peer,
            reason,
            reconnecting,
        });
    }

    fn flush(&mut self) {
        self.outbox.send_all(&mut self.conn, &self.endpoint.socket);
        self.endpoint.watch_writable(self.outbox.blocked());
    }

    fn next_deadline(&self) -> Instant {
        if self.conn.is_established() {
            self.last_keepalive + KEEPALIVE
        } else {
            self.started + self.answer_within
        }
    }

    /// Why the sender's certificate, which TLS accepted, is still not the sender's.
    fn certificate_refusal(&self) -> Option<String> {
        let s = &self.settings;
        let named = s.server_name.as_deref().is_some_and(|n| !n.is_empty());
        let check = match s.pin {
            Some(pin) => Check::Pin(pin),
            None if s.verify && !named => Check::Address,
            None => Check::Done,
        };
        tls::refusal(check, s.peer, self.conn.peer_cert())
    }

    /// Reads up to a batch of datagrams; returns whether the socket was drained.
    fn receive(&mut self) -> bool {
        let mut budget = MAX_RECV_BATCH;
        while budget > 0 {
            let Some(d) = self.endpoint.recv(&mut self.buf) else {
                return true;
            };
            budget = budget.saturating_sub(d.count());
            let info = quiche::RecvInfo {
                from: d.from,
                to: self.endpoint.local,
            };
            for range in d.ranges() {
                // Only our connection's packets count as hearing from the sender: not
                // those of an abandoned attempt.
                match self.conn.recv(&mut self.buf[range], info) {
                    Ok(_) => self.last_rx = Instant::now(),
                    Err(e) => gst::debug!(CAT, "recv: {e}"),
                }
            }
        }
        false
    }

    fn established(&mut self) {
        if self.phase == Phase::Connecting {
            if let Some(why) = self.certificate_refusal() {
                // TLS alert 42, bad_certificate (RFC 9001, 4.8): nothing was sent yet.
                let _ = self.conn.close(false, 0x100 + 42, b"certificate refused");
                self.fatal = Some(why);
                return;
            }
            put_preamble(&mut self.control_out, StreamKind::Control);
            Command::Hello {
                version: VERSION,
                options: HELLO_TAKES_SHED,
                token: self.settings.token.clone(),
                latency: Some(self.settings.latency.as_nanos() as u64),
            }
            .encode(&mut self.control_out);
            gst::info!(CAT, "connected to {}", self.settings.peer);
            self.counters.reconnects += u64::from(self.resumed);
            self.phase = Phase::Serving {
                since: Instant::now(),
            };
            self.push(Event::Connected);
            (self.settings.on_connection)(ConnectionEvent::Connected {
                peer: self.settings.peer,
                resumed: self.resumed,
            });
        }
        // Delivering frees room to read more; repeat until neither moves, since a sender
        // held back by flow control sends nothing that would wake us.
        loop {
            if let Err(e) = self.read_streams() {
                gst::warning!(CAT, "protocol violation: {e}");
                let _ = self
                    .conn
                    .close(true, error_code::PROTOCOL_VIOLATION, e.as_bytes());
                self.fatal = Some(violation(&e));
                return;
            }
            if !self.deliver() {
                break;
            }
        }
        // While the control stream is full (the sender does not read it) a request stays
        // wanted; one already waiting there serves as well.
        let room = self.control_out.len() < MAX_CONTROL_OUT;
        if room
            && self
                .link
                .update(|s| std::mem::take(&mut s.inner.keyframe_wanted))
        {
            gst::debug!(CAT, "asking the sender for a keyframe");
            Command::KeyframeRequest.encode(&mut self.control_out);
            self.counters.keyframe_requests += 1;
        }
        // Commands move to the control stream as far as it has room; the rest wait, bounded
        // (Outgoing), so send-command refuses them once the sender stops reading.
        let control_out = &mut self.control_out;
        self.link.update(|s| {
            while control_out.len() < MAX_CONTROL_OUT {
                let Some(structure) = s.inner.commands_out.take() else {
                    break;
                };
                let before_seq = None;
                Command::Application {
                    before_seq,
                    structure,
                }
                .encode(control_out);
            }
        });
        if self.last_rx.max(self.last_probe).elapsed() >= PROBE {
            self.last_probe = Instant::now();
            let _ = self.conn.send_ack_eliciting();
        }
        if self.last_keepalive.elapsed() >= KEEPALIVE {
            self.last_keepalive = Instant::now();
            let _ = self.conn.send_ack_eliciting();
        }
        if !self.control_out.is_empty() {
            match self
                .conn
                .stream_send(CONTROL_STREAM, &self.control_out, false)
            {
                Ok(n) => {
                    self.control_out.drain(..n);
                }
                Err(quiche::Error::Done) => {}
                Err(e) => gst::debug!(CAT, "control stream: {e}"),
            }
        }
    }

    fn read_streams(&mut self) -> Result<(), String> {
        let mut readable: Vec<u64> = self.conn.readable().collect();
        // Control first: JOIN, which says which frames are catch-up, comes before DESCRIBE,
        // and group streams wait in quiche until DESCRIBE.
        readable.sort_unstable();
        self.control_unread = false;
        for stream in readable {
            if stream == CONTROL_STREAM {
                // Commands for the application wait in quiche once its queue is well past
                // full (inbox.rs).
                if self.link.lock().inner.events.has_room_for_commands() {
                    self.read_control()?;
                }
            } else if stream % 4 != 3 {
                return Err(format!("unexpected stream {stream}"));
            } else if self.described {
                self.read_group(stream)?;
            }
        }
        Ok(())
    }

    fn read_control(&mut self) -> Result<(), String> {
        let mut commands = Vec::new();
        let conn = &mut self.conn;
        let read = |buf: &mut [u8]| conn.stream_recv(CONTROL_STREAM, buf);
        let stopped =
            control::read_commands(&mut self.control_in, read, &mut self.buf, &mut commands)?;
        self.control_unread = stopped == Stopped::Capped;
        for cmd in commands {
            gst::debug!(CAT, "command {cmd:?}");
            match cmd {
                Command::Describe { caps } => {
                    if self.resumed && !self.described && self.join.is_none() {
                        // The sender starts us at its next IRAP, which may be seconds away.
                        Command::KeyframeRequest.encode(&mut self.control_out);
                        self.counters.keyframe_requests += 1;
                    }
                    self.described = true;
                    self.push(Event::Caps(caps));
                }
                Command::EndOfStream { groups, end_seq } => {
                    self.eos_groups = Some(groups);
                    self.eos_end_seq = Some(end_seq);
                }
                Command::Ping(n) if self.control_out.len() < MAX_CONTROL_OUT => {
                    Command::Pong(n).encode(&mut self.control_out)
                }
                Command::LatencyBudget(ns) => self.lateness.set_budget(ns),
                Command::Join {
                    live_seq,
                    sender_time,
                } => self.join = Some((live_seq, sender_time)),
                Command::Application {
                    before_seq: Some(seq),
                    structure,
                } => {
                    if self.pinned.len() >= MAX_PINNED {
                        gst::warning!(CAT, "too many commands wait for their frame: dropped one");
                        self.pinned.pop_front();
                    }
                    self.pinned.push_back((seq, structure));
                }
                Command::Application {
                    before_seq: None,
                    structure,
                } => self.push(Event::Command(structure)),
                Command::Goodbye { code, reason } => {
                    let _ = self.conn.close(true, error_code::NO_ERROR, b"goodbye");
                    if code != error_code::NO_ERROR {
                        return Err(format!("sender said goodbye ({code:#x}): {reason}"));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_group(&mut self, stream: u64) -> Result<(), String> {
        if stream < self.next_group {
            // A group we abandoned (quiche finished ones never turn readable again): its
            // RESET_STREAM, or bytes that were already on the way. Drop them.
            while self.conn.stream_recv(stream, &mut self.buf).is_ok() {}
            return Ok(());
        }
        let max_frame = self.settings.max_frame_size;
        let group = self
            .groups
            .entry(stream)
            .or_insert_with(|| Group::new(max_frame));
        let mut frames: Vec<GroupFrame> = Vec::new();
        let one_way = self
            .conn
            .path_stats()
            .next()
            .map_or(0, |p| p.min_rtt.unwrap_or(p.rtt).as_nanos() as u64 / 2);
        // Leave media in quiche while we hold enough, so flow control slows the sender
        // instead of our memory growing. The group being delivered has its own allowance:
        // later groups filling the buffer must not starve it.
        let full = |group: &Group, buffered: usize| {
            if stream == self.next_group {
                group.bytes >= MAX_BUFFERED
            } else {
                buffered >= MAX_BUFFERED
            }
        };
        while !group.finished && !full(group, self.buffered) {
            let bad = |e| format!("group stream {stream}: {e}");
            let held = group.decoder.partial_bytes();
            // Bodies go from quiche straight into the frame; only headers pass through buf.
            let read = match group.decoder.body_space() {
                Some(space) => {
                    let read = self.conn.stream_recv(stream, space);
                    group.decoder.filled(read.map_or(0, |r| r.0), &mut frames);
                    read
                }
                None => {
                    let read = self.conn.stream_recv(stream, &mut self.buf[..HEADER_READ]);
                    if let Ok((n, _)) = read {
                        group
                            .decoder
                            .push(&self.buf[..n], &mut frames)
                            .map_err(bad)?;
                    }
                    read
                }
            };
            // A frame being received counts too: a sender starting a frame on each of many
            // groups must not make us hold more than MAX_BUFFERED for them.
            self.buffered = self.buffered + group.decoder.partial_bytes() - held;
            let fin = match read {
                Ok((_, fin)) => fin,
                Err(quiche::Error::Done) => break,
                Err(quiche::Error::StreamReset(code)) => {
                    gst::debug!(CAT, "group stream {stream} reset by the sender ({code:#x})");
                    self.counters.groups_reset += 1;
                    group.finished = true;
                    group.abandoned = true;
                    break;
                }
                Err(e) => return Err(format!("group stream {stream}: {e}")),
            };
            if fin {
                group.decoder.finish().map_err(bad)?;
                group.finished = true;
            }
            let arrival = monotonic_ns();
            // The frame in progress before this read started then; any others, now.
            let mut started = group.started_at.take();
            if !group.decoder.between_frames() {
                group.started_at = Some(if frames.is_empty() {
                    started.unwrap_or(arrival)
                } else {
                    arrival
                });
            }
            for f in frames.drain(..) {
                let first_byte = started.take().unwrap_or(arrival);
                if f.header.flags.contains(FrameFlags::SHED) {
                    // Nothing later references it: decoding goes on without a gap.
                    gst::debug!(CAT, "frame {} was shed by the sender", f.header.seq);
                    self.counters.frames_shed += 1;
                    continue;
                }
                self.counters.frames_received += 1;
                // The NAL scan costs a pass over the frame: only keyframes (for the SPS)
                // and late frames (for their cost) need it.
                let inspect = || crate::h265::inspect(&f.data);
                if f.header.flags.contains(FrameFlags::KEYFRAME) {
                    if let Some(n) = inspect().ok().and_then(|i| i.sub_layers) {
                        self.sub_layers = n;
                    }
                }
                // Catch-up frames are old by design: only live frames can be late.
                let catch_up_age = self
                    .join
                    .filter(|&(live_seq, _)| f.header.seq < live_seq)
                    .map(|(_, sent)| sent.saturating_sub(f.header.send_time));
                let verdict = if catch_up_age.is_some() {
                    Verdict::OnTime
                } else {
                    let sub_layers = self.sub_layers;
                    let alone =
                        || inspect().is_ok_and(|i| i.drop_cost(sub_layers) == DropCost::Alone);
                    self.lateness
                        .judge(f.header.send_time, first_byte, arrival, one_way, alone)
                };
                let seq = f.header.seq;
                self.counters.frames_late += u64::from(verdict != Verdict::OnTime);
                match verdict {
                    Verdict::OnTime => {
                        // The late frames it references are worth outputting now.
                        if group.held.len() > 0 {
                            gst::debug!(
                                CAT,
                                "frame {seq} is on time: outputting {} late frames before it",
                                group.held.len()
                            );
                        }
                        group.frames.extend(group.held.release());
                    }
                    Verdict::Late => gst::debug!(CAT, "frame {seq} is late: held"),
                    Verdict::Drop => {
                        gst::debug!(CAT, "frame {seq} is late: dropped");
                        self.counters.frames_dropped += 1;
                        continue;
                    }
                    Verdict::Abandon => {
                        // Later frames of the group may reference it: they go too.
                        gst::debug!(
                            CAT,
                            "frame {seq} is too late: skipping the rest of group stream {stream}"
                        );
                        self.counters.frames_dropped += 1;
                        self.buffered -= group.discard_held(&mut self.counters);
                        group.finished = true;
                        group.abandoned = true;
                        self.counters.groups_abandoned += 1;
                        break;
                    }
                }
                let frame_bytes = f.data.len();
                group.bytes += frame_bytes;
                self.buffered += frame_bytes;
                let frame = ReceivedFrame {
                    header: f.header,
                    data: f.data,
                    arrival,
                    gap: false,
                    late: verdict == Verdict::Late,
                    catch_up_age,
                };
                if verdict == Verdict::Late {
                    group.held.hold(frame, frame_bytes);
                } else {
                    group.frames.push_back(frame);
                }
            }
        }
        Ok(())
    }

    /// Hands frames over in group order while the queue has room; returns whether anything
    /// moved (frames handed or a group completed).
    fn deliver(&mut self) -> bool {
        let mut progress = false;
        if !self.described {
            return false;
        }
        self.skip_late_group();
        loop {
            self.finish_by_seq();
            let Some(group) = self.groups.get_mut(&self.next_group) else {
                break;
            };
            let mut handed = 0;
            let (gap, skip_rasl, pinned) = (&mut self.gap, &mut self.skip_rasl, &mut self.pinned);
            let counters = &mut self.counters;
            let stalled = self.link.update(|s| {
                while s.inner.events.has_room() {
                    let Some(mut frame) = group.frames.pop_front() else {
                        break;
                    };
                    handed += frame.data.len();
                    if *skip_rasl {
                        if crate::h265::is_rasl(&frame.data) {
                            gst::debug!(CAT, "dropping RASL frame {}", frame.header.seq);
                            counters.frames_dropped += 1;
                            continue;
                        }
                        *skip_rasl = frame.header.flags.contains(FrameFlags::KEYFRAME);
                    }
                    frame.gap = std::mem::take(gap);
                    hand_pinned(pinned, Some(frame.header.seq), &mut s.inner.events);
                    s.inner.events.push(Event::Frame(frame));
                    counters.frames_output += 1;
                }
                !group.frames.is_empty()
            });
            group.bytes -= handed;
            self.buffered -= handed;
            progress |= handed > 0;
            if stalled || !group.finished {
                return progress;
            }
            let abandoned = group.abandoned;
            self.buffered -= group.discard_held(counters);
            if let Some(removed) = self.groups.remove(&self.next_group) {
                // An abandoned group may end inside a frame.
                self.buffered -= removed.decoder.partial_bytes();
            }
            self.next_group += 4;
            progress = true;
            if abandoned {
                self.gap = true;
                self.skip_rasl = true;
                // Unless a later group (which starts at an IRAP) is already on its way,
                // the next one might be many seconds off: ask for it now.
                if !self.groups.contains_key(&self.next_group) {
                    gst::debug!(CAT, "skipped a group: asking for a keyframe");
                    Command::KeyframeRequest.encode(&mut self.control_out);
                    self.counters.keyframe_requests += 1;
                }
            }
        }
        if let Some(groups) = self.eos_groups {
            if !self.eos_delivered && self.next_group >= group_stream(groups) {
                self.eos_delivered = true;
                self.end_events();
                let _ = self
                    .conn
                    .close(true, error_code::NO_ERROR, b"end of stream");
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
            .get(&(self.next_group + 4))
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
                gst::debug!(CAT, "group stream {} complete by sequence", self.next_group);
                group.finished = true;
            }
        }
    }

    /// After the connection closed following END_OF_STREAM: hands over the whole frames
    /// still held, skipping what never arrived, then EOS. Nothing more can come, so the
    /// queue's capacity no longer applies.
    fn deliver_remaining(&mut self) {
        let last = self.groups.keys().next_back().copied().unwrap_or(0);
        let max_frame = self.settings.max_frame_size;
        // Bounded by the streams this connection opened: quiche's stream limit.
        for stream in (self.next_group..=last).step_by(4) {
            let group = self
                .groups
                .entry(stream)
                .or_insert_with(|| Group::new(max_frame));
            group.abandoned |= !group.finished;
            group.finished = true;
        }
        self.link.update(|s| s.inner.events.unbound());
        self.deliver();
        if !self.eos_delivered {
            self.eos_delivered = true;
            self.end_events();
        }
    }

    /// When the next group will have held back a later group's keyframe for `latency`.
    fn skip_deadline(&self) -> Option<Instant> {
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
            .range(self.next_group + 4..)
            .find_map(|(_, g)| g.frames.front())?;
        let waiting = monotonic_ns().saturating_sub(first.arrival);
        let left = self
            .settings
            .latency
            .saturating_sub(Duration::from_nanos(waiting));
        Some(Instant::now() + left)
    }

    /// Abandons the next group when a later group's keyframe has waited behind it for
    /// `latency`: what is missing would arrive too late, and the keyframe starts afresh.
    fn skip_late_group(&mut self) {
        if self.skip_deadline().is_none_or(|t| t > Instant::now()) {
            return;
        }
        let stream = self.next_group;
        gst::debug!(
            CAT,
            "group stream {stream} is late: skipping to the next keyframe"
        );
        // No STOP_SENDING: quiche 0.30 never collects a stream shut for reading, so each
        // would cost a stream credit for good (cloudflare/quiche#1968). Its bytes are read
        // and dropped instead (read_group), until its FIN or reset.
        let max_frame = self.settings.max_frame_size;
        let group = self
            .groups
            .entry(stream)
            .or_insert_with(|| Group::new(max_frame));
        group.finished = true;
        group.abandoned = true;
        self.counters.groups_abandoned += 1;
    }

    fn push(&self, event: Event) {
        self.link.update(|s| s.inner.events.push(event));
    }

    /// The commands pinned anywhere before the end, then EOS.
    fn end_events(&mut self) {
        let pinned = &mut self.pinned;
        self.link.update(|s| {
            hand_pinned(pinned, None, &mut s.inner.events);
            s.inner.events.push(Event::Eos);
        });
    }

    fn fail(&self, message: String) {
        gst::warning!(CAT, "{message}");
        self.link.update(|s| {
            if s.failure.is_none() {
                s.failure = Some(message);
            }
        });
    }
}
