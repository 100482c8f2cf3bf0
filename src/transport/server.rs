//! The sender's networking thread: a QUIC server that accepts receivers and writes each of
//! them the stream, one unidirectional stream per group of pictures.

use super::budget::{self, Deadlines};
use super::capture::Capture;
use super::config::{self, CongestionControl, Identity};
use super::control::{self, Stopped, Waiting, CONTROL_STREAM};
use super::gate;
use super::join::{CachedFrame, JoinCache, JoinMode};
use super::link::{gated, Interrupted, Link, NetThread};
use super::logger::{self, Route};
use super::monotonic_ns;
use super::pacer::{self, Pacer};
use super::rate::{self, Estimator, Sample};
use super::ratelimit::{self, Bucket};
use super::repair::TailProbe;
use super::retry::{AddressValidator, INVALID_TOKEN};
use super::socket::{random_cid, Endpoint, Outbox, MAX_RECV_BATCH, SOCKET};
use super::stats::{ConnectionStats, ReceiverStats, Reporter, SenderStats};
use super::tls::Fingerprint;
use crate::h265::DropCost;
use crate::protocol::{
    error_code, put_preamble, Command, CommandDecoder, FrameFlags, FrameHeader, StreamKind,
    DEFAULT_MAX_COMMAND_SIZE, HELLO_TAKES_SHED, VERSION,
};
use mio::Events;
use once_cell::sync::Lazy;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quicnalu-server",
        gst::DebugColorFlags::empty(),
        Some("quicnalusink networking thread"),
    )
});

/// Bytes of commands (caps, application commands) that quiche would not take for a
/// receiver's control stream (they are beyond its flow-control window) beyond which it is
/// closed with TOO_SLOW: 16 of the longest commands, where a receiver that reads keeps
/// nothing there.
const MAX_CONTROL_BYTES: usize = 1 << 20;
/// Messages waiting on a receiver's control stream beyond which its PINGs go unanswered:
/// one that floods PINGs and never reads would otherwise pile up a PONG here for each.
const MAX_CONTROL_QUEUED: usize = 64;
/// A receiver silent for this long (its keepalive probes run faster) was cut off.
const PEER_SILENCE: Duration = Duration::from_millis(150);
/// Bytes the streaming thread may queue ahead of the fastest receiver before it waits. A
/// receiver twice this far behind for BEHIND_FOR has its backlog dropped and resumes at the
/// next IRAP: one slow receiver never holds back the others, and the memory it holds stays
/// bounded.
const MAX_BACKLOG: usize = 8 << 20;
/// How long a receiver may stay 2 x MAX_BACKLOG behind (never beyond 4 x). Not at once: a receiver whose
/// application stopped reading looks fastest while QUIC's flow-control windows (tens of
/// MB) absorb the stream, and for that while a healthy one can look far behind it.
/// Measured in fanout's stalled-receiver test: 2 runs in 8 reset the healthy receiver
/// without it.
const BEHIND_FOR: Duration = Duration::from_secs(1);
/// A receiver silent this long (it probes every 100 ms when it hears nothing) is behind an
/// outage or gone: it no longer holds the stream back, and once its backlog reaches
/// MAX_BACKLOG that is dropped; if it comes back it resumes at the next IRAP.
const GONE_QUIET: Duration = Duration::from_secs(1);

/// One access unit to send, as the sink's streaming thread hands it over.
pub struct MediaFrame {
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub duration: Option<u64>,
    pub keyframe: bool,
    pub parameter_sets: bool,
    pub discont: bool,
    pub temporal_id: u8,
    /// What losing it costs: with a deadline, cheaper frames are shed sooner.
    pub drop_cost: DropCost,
    pub data: Box<dyn AsRef<[u8]> + Send + Sync>,
}

pub struct ServerSettings {
    pub addr: SocketAddr,
    pub identity: Identity,
    /// Answer a new client with a QUIC Retry first, so that only a client that receives at
    /// its source address gets a connection (see retry.rs).
    pub address_validation: bool,
    /// Connections held at once, in any state (0: no limit), and of those, connections
    /// still in their handshake (0: no limit). A client's Initial beyond either is dropped;
    /// it retransmits, so it gets in once there is room.
    pub max_connections: usize,
    pub max_handshakes: usize,
    /// Longest command a receiver may send; a longer one is a protocol violation.
    pub max_command_size: u64,
    /// qlog files and the TLS key log.
    pub capture: Capture,
    pub congestion_control: CongestionControl,
    /// Shortest time between two keyframes asked of upstream; requests in between are
    /// merged, and an IRAP that goes out satisfies every request made before it.
    pub keyframe_interval: Duration,
    /// Asks upstream for a keyframe. Called on the networking thread: it must not block.
    pub request_keyframe: Box<dyn Fn() + Send>,
    /// How long after it is queued a frame may still arrive at each receiver: one not sent
    /// by then less a round trip has its group reset.
    pub budget: budget::Policy,
    /// Told what the receivers' paths carry, every update while any is connected. Called on
    /// the networking thread: it must not block.
    pub on_estimate: Box<dyn Fn(Estimate) + Send>,
    /// Receivers served at once (0: no limit); one more is closed with SERVER_FULL.
    pub max_receivers: usize,
    /// The token every receiver's HELLO must carry (None: any); a wrong or missing one is
    /// closed with REJECTED, before the application is asked.
    pub token: Option<Vec<u8>>,
    pub join_mode: JoinMode,
    /// Decides whether a receiver that said HELLO is served; a refused one is closed with
    /// REJECTED before any media flows. Called on the networking thread: it must not block.
    pub admit: Box<dyn Fn(&Admission) -> bool + Send>,
    /// Takes the snapshots [`Server::stats`] returns, and hands them out at an interval.
    pub stats: Reporter<SenderStats>,
    /// Told of receivers coming and going, and of their application commands. Called on
    /// the networking thread: it must not block.
    pub on_receiver: Box<dyn Fn(ReceiverEvent) + Send>,
    /// Where quiche's log records from the networking thread go.
    pub log: Route,
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
    /// The lowest receiver's estimate, bit/s: at this rate every receiver keeps up.
    pub bitrate: u64,
    /// Receivers with an estimate.
    pub receivers: u32,
}

enum Work {
    Caps(String),
    /// With when it was queued, as an Instant and as CLOCK_MONOTONIC ns: its deadline and
    /// its send time count from then.
    Frame(MediaFrame, Instant, u64),
    /// An application command for receiver `to` (None: all); `in_stream`: pinned before the
    /// frame this many after the next one; None: at once.
    Command {
        to: Option<u64>,
        structure: String,
        in_stream: Option<u64>,
    },
    Eos,
}

#[derive(Default)]
struct Status {
    work: VecDeque<Work>,
    /// Bytes in `work` plus the backlog of the fastest receiver.
    queued_bytes: usize,
    /// Bytes of application commands in `work`.
    commands: Waiting,
    ready_receivers: usize,
    /// Ids of the receivers being served.
    served: Vec<u64>,
    stats: SenderStats,
    drained: bool,
    /// The receivers served when the thread stopped, for Server::stop to report.
    farewells: Vec<ReceiverEvent>,
}

/// Handle to a running server; dropping it stops the thread and joins it.
pub struct Server {
    net: NetThread<Status>,
    local: SocketAddr,
    fingerprint: Fingerprint,
}

impl Server {
    /// Binds the socket, loads the certificate and starts the networking thread.
    pub fn start(settings: ServerSettings) -> Result<Server, String> {
        let (mut config, fingerprint) =
            config::server(&settings.identity, settings.congestion_control)?;
        if settings.capture.logs_keys() {
            config.log_keys();
        }
        let validator = if settings.address_validation {
            Some(AddressValidator::new()?)
        } else {
            None
        };
        let limits = Limits {
            gate: gate::Limits {
                connections: settings.max_connections,
                handshakes: settings.max_handshakes,
            },
            command_size: settings.max_command_size,
        };
        let budget = settings.budget;
        let link = Arc::new(Link::new(Status::default()));
        // Application code runs through the link's gate, so stopping never waits on it.
        let on_estimate = gated(&link, settings.on_estimate);
        let (admit, gate) = (settings.admit, link.clone());
        let admission = Admitter {
            max: settings.max_receivers,
            token: settings.token,
            join_mode: settings.join_mode,
            // While stopping nobody is asked: admitted, the receiver is closed with
            // NO_ERROR at once and connects again to a restarted sender.
            admit: Box::new(move |a| gate.callback(|| admit(a)).unwrap_or(true)),
            on_receiver: gated(&link, settings.on_receiver),
        };
        let (request, gate) = (settings.request_keyframe, link.clone());
        let keyframes = Keyframes {
            requested: 0,
            interval: settings.keyframe_interval,
            request: Box::new(move || {
                gate.callback(&request);
            }),
            wanted: false,
            last: None,
        };
        let mut reporter = settings.stats;
        reporter.wrap_poster(|post| gated(&link, post));
        let endpoint = Endpoint::bind(settings.addr)?;
        let local = endpoint.local;
        let o = endpoint.offload;
        gst::info!(
            CAT,
            "listening on {local} (UDP GSO {}, GRO {})",
            o.gso,
            o.gro
        );
        if let Some(warning) = o.buffer_warning() {
            gst::warning!(CAT, "{warning}");
        }
        let waker = endpoint.waker.clone();
        let thread_link = link.clone();
        let route = settings.log;
        let net = NetThread::spawn("quicnalu-sink-net", link, waker, move || {
            logger::route(route);
            Loop::new(
                endpoint,
                config,
                thread_link,
                budget,
                admission,
                Entry {
                    validator,
                    limits,
                    capture: settings.capture,
                    refusals: Bucket::new(ratelimit::TOKEN_REFUSALS, Instant::now()),
                },
                Upstream {
                    keyframes,
                    on_estimate,
                    reporter,
                },
            )
            .run()
        })?;
        Ok(Server {
            net,
            local,
            fingerprint,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the networking thread, closing every connection, and returns a Disconnected
    /// event for each receiver it served, for the caller to report on its own thread.
    /// (Dropping the Server stops it too, and reports nothing.) If the thread is in a
    /// callback that waits on the caller, it is not waited for and reports nothing.
    pub fn stop(self) -> Vec<ReceiverEvent> {
        let link = self.net.link();
        drop(self);
        let farewells = std::mem::take(&mut link.lock().inner.farewells);
        farewells
    }

    /// The latest snapshot of the counters (at most stats::REFRESH old).
    pub fn stats(&self) -> SenderStats {
        self.net.lock().inner.stats.clone()
    }

    /// SHA-256 of the certificate receivers are shown.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn set_flushing(&self, flushing: bool) {
        self.net.set_flushing(flushing);
    }

    /// The stream description sent to every receiver.
    pub fn set_caps(&self, caps: String) {
        self.push(Work::Caps(caps), 0);
    }

    /// Waits until at least one receiver has said HELLO.
    pub fn wait_for_receiver(&self) -> Result<(), Interrupted> {
        self.net
            .wait(None, |s| (s.ready_receivers > 0).then_some(()))
            .map(|_| ())
    }

    /// Waits while even the fastest receiver is too far behind to queue another frame.
    pub fn wait_for_room(&self) -> Result<(), Interrupted> {
        self.net
            .wait(None, |s| (s.queued_bytes < MAX_BACKLOG).then_some(()))
            .map(|_| ())
    }

    /// Queues a frame for every receiver; call [`Server::wait_for_room`] first.
    pub fn send(&self, frame: MediaFrame) {
        let len = frame.data.as_ref().as_ref().len();
        self.push(Work::Frame(frame, Instant::now(), monotonic_ns()), len);
    }

    /// Sends an application command (a serialized GstStructure) at once to receiver `to`,
    /// or to every receiver (None). Returns false when no such receiver is served, the
    /// command is longer than a receiver takes, or MAX_COMMANDS_WAITING bytes of commands
    /// wait for the networking thread already.
    pub fn send_command(&self, to: Option<u64>, structure: String) -> bool {
        if !fits(&structure) {
            return false;
        }
        let sent = self.net.update(|s| {
            let known = to.is_none_or(|id| s.inner.served.contains(&id));
            let work = Work::Command {
                to,
                structure,
                in_stream: None,
            };
            known && s.inner.offer_command(work)
        });
        if sent {
            self.net.wake();
        }
        sent
    }

    /// Sends an application command to every receiver at this point of the stream: each
    /// hands it on after the frames sent before it and before those sent after, or, with
    /// `after_next`, after the next frame too (the access unit still being gathered).
    /// Returns false if it is longer than a receiver takes, or MAX_COMMANDS_WAITING bytes
    /// of commands wait already.
    pub fn send_command_in_stream(&self, structure: String, after_next: bool) -> bool {
        if !fits(&structure) {
            return false;
        }
        let work = Work::Command {
            to: None,
            structure,
            in_stream: Some(u64::from(after_next)),
        };
        let sent = self.net.update(|s| s.inner.offer_command(work));
        if sent {
            self.net.wake();
        }
        sent
    }

    /// Tells receivers the stream ended and waits until each has everything, or `timeout`.
    /// Returns whether every receiver was drained.
    pub fn finish(&self, timeout: Duration) -> Result<bool, Interrupted> {
        self.push(Work::Eos, 0);
        let deadline = Instant::now() + timeout;
        self.net
            .wait(Some(deadline), |s| s.drained.then_some(()))
            .map(|r| r.is_some())
    }

    fn push(&self, work: Work, len: usize) {
        self.net.update(|s| {
            s.inner.work.push_back(work);
            s.inner.queued_bytes += len;
        });
        self.net.wake();
    }
}

impl Status {
    /// Queues a command unless MAX_COMMANDS_WAITING bytes of them wait already.
    fn offer_command(&mut self, work: Work) -> bool {
        let Work::Command { structure, .. } = &work else {
            return false;
        };
        let len = structure.len();
        let fits = self.commands.admit(len);
        if fits {
            self.work.push_back(work);
        }
        fits
    }

    /// Everything queued, for the networking thread.
    fn take_work(&mut self) -> Vec<Work> {
        self.commands.clear();
        self.work.drain(..).collect()
    }
}

/// Keyframe requests from receivers, merged and rate-limited across all of them.
struct Keyframes {
    interval: Duration,
    request: Box<dyn Fn() + Send>,
    wanted: bool,
    last: Option<Instant>,
    /// Requests that went upstream.
    requested: u64,
}

impl Keyframes {
    /// When a merged request may go upstream.
    fn due(&self) -> Option<Instant> {
        self.wanted
            .then(|| self.last.map_or_else(Instant::now, |t| t + self.interval))
    }

    fn poll(&mut self) {
        if self.due().is_some_and(|t| t <= Instant::now()) {
            self.wanted = false;
            self.last = Some(Instant::now());
            self.requested += 1;
            (self.request)();
        }
    }
}

/// Whether a command fits in one APPLICATION message (its position varint, up to 8 bytes,
/// and the text) that a receiver accepts.
fn fits(structure: &str) -> bool {
    structure.len() + 8 <= DEFAULT_MAX_COMMAND_SIZE as usize
}

/// Who is served and how they start: the receiver limit, the application's say, what it
/// is told, and the join mode.
struct Admitter {
    max: usize,
    token: Option<Vec<u8>>,
    join_mode: JoinMode,
    admit: Box<dyn Fn(&Admission) -> bool + Send>,
    on_receiver: Box<dyn Fn(ReceiverEvent) + Send>,
}

/// Bytes waiting to be written to one stream.
struct Chunk {
    data: ChunkData,
    offset: usize,
    fin: bool,
    /// For frame bytes with a deadline: when the frame is too late to be worth sending.
    expires: Option<Instant>,
    /// On a frame's header chunk (its body is the next chunk), when it has a deadline.
    shed: Option<Sheddable>,
    /// On a cached frame's header chunk, sent to a joiner to catch up: while one is unsent
    /// its group does not expire (the live frames behind it wait by design).
    catch_up: bool,
}

/// What shedding a queued frame needs to know.
struct Sheddable {
    seq: u64,
    temporal_id: u8,
    cost: DropCost,
    /// When it is shed if still unsent (never for DropCost::Group: its group expires).
    by: Instant,
}

/// What replaces a shed frame: its header with SHED and no access unit, so the sequence
/// numbers the receiver checks stay whole.
fn shed_marker(seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    FrameHeader {
        seq,
        flags: FrameFlags::SHED,
        ..FrameHeader::default()
    }
    .encode(&mut out);
    out
}

enum ChunkData {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    Frame(Arc<MediaFrame>),
}

impl ChunkData {
    fn bytes(&self) -> &[u8] {
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Shared(v) => v,
            ChunkData::Frame(f) => f.data.as_ref().as_ref(),
        }
    }
}

/// What waits for one stream, oldest first. quiche takes at most about a congestion
/// window of it, so under a slow network the backlog, and its age, is visible here.
struct StreamOut {
    stream: u64,
    chunks: VecDeque<Chunk>,
    /// Bytes of `chunks` not yet written.
    queued: usize,
}

impl StreamOut {
    fn new(stream: u64) -> Self {
        StreamOut {
            stream,
            chunks: VecDeque::new(),
            queued: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.queued
    }

    fn push(&mut self, chunk: Chunk) {
        self.queued += chunk.data.bytes().len();
        self.chunks.push_back(chunk);
    }

    /// Drops everything queued; returns how many frames that was.
    fn clear(&mut self) -> u64 {
        let frames = self
            .chunks
            .iter()
            .filter(|c| matches!(c.data, ChunkData::Frame(_)))
            .count();
        self.chunks.clear();
        self.queued = 0;
        frames as u64
    }

    /// Writes chunks until quiche takes no more, or `allowance` bytes (less what it takes);
    /// Ok(true) once all are written.
    fn write(
        &mut self,
        conn: &mut quiche::Connection,
        out_bytes: &mut usize,
        allowance: &mut usize,
        frames_sent: &mut u64,
    ) -> Result<bool, quiche::Error> {
        while let Some(chunk) = self.chunks.front_mut() {
            let rest = &chunk.data.bytes()[chunk.offset..];
            if *allowance == 0 && !rest.is_empty() {
                return Ok(false);
            }
            let bytes = &rest[..rest.len().min(*allowance)];
            let whole = bytes.len() == rest.len();
            match conn.stream_send(self.stream, bytes, chunk.fin && whole) {
                Ok(n) => {
                    *out_bytes -= n;
                    self.queued -= n;
                    *allowance -= n;
                    if n < bytes.len() || !whole {
                        chunk.offset += n;
                        return Ok(false);
                    }
                    if let Some(Chunk {
                        data: ChunkData::Frame(_),
                        ..
                    }) = self.chunks.pop_front()
                    {
                        *frames_sent += 1;
                    }
                }
                Err(quiche::Error::Done) | Err(quiche::Error::StreamLimit) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Replaces by shed markers the unsent frames that are due to be shed, and every later
    /// frame of a sub-layer cut off with one (`cut`: the lowest TemporalId cut off from
    /// here to the end of the group). Returns how many frames it shed.
    ///
    /// A frame is due once it could no longer arrive (a round trip, `ahead`, after being
    /// written) by its share of the budget; the stream's next frame, which is written now
    /// if the path lets it, once that share has passed. (Measured in the shedding test:
    /// counting the round trip for queued frames output 181 of 300 frames against 34 to
    /// 56; for the next frame it would shed every cheap frame on a path whose round trip
    /// is half the budget.)
    fn shed(
        &mut self,
        now: Instant,
        ahead: Duration,
        cut: &mut Option<u8>,
        out_bytes: &mut usize,
    ) -> u64 {
        let mut shed = 0;
        let mut i = 0;
        while i < self.chunks.len() {
            let chunk = &self.chunks[i];
            let Some(s) = chunk.shed.as_ref().filter(|_| chunk.offset == 0) else {
                i += 1;
                continue;
            };
            let cut_off = cut.is_some_and(|layer| s.temporal_id >= layer);
            let at = if i == 0 { now } else { now + ahead };
            if !cut_off && (s.cost == DropCost::Group || s.by > at) {
                i += 1;
                continue;
            }
            if let DropCost::Layers { from } = s.cost {
                *cut = Some(cut.map_or(from, |layer| layer.min(from)));
            }
            let marker = shed_marker(s.seq);
            let mut removed = chunk.data.bytes().len();
            if let Some(body) = self.chunks.remove(i + 1) {
                removed += body.data.bytes().len();
            }
            *out_bytes = *out_bytes + marker.len() - removed;
            self.queued = self.queued + marker.len() - removed;
            self.chunks[i] = Chunk {
                data: ChunkData::Owned(marker),
                offset: 0,
                fin: false,
                expires: None,
                shed: None,
                catch_up: false,
            };
            shed += 1;
            i += 1;
        }
        shed
    }
}

/// One connected receiver.
struct Receiver {
    id: u64,
    conn: quiche::Connection,
    peer: SocketAddr,
    control_in: CommandDecoder,
    /// When its first packet came: it has until gate::HELLO_WITHIN after to say HELLO.
    opened: Instant,
    hello: bool,
    /// The token from its HELLO.
    token: Vec<u8>,
    /// Admitted by the Admitter: it is told the stream and gets media.
    admitted: bool,
    described: bool,
    eos_sent: bool,
    control_out: StreamOut,
    /// Group streams with bytes to write, oldest first.
    groups_out: VecDeque<StreamOut>,
    out_bytes: usize,
    /// The open group stream; None until the next IRAP when the receiver just arrived or
    /// its group expired.
    group: Option<u64>,
    groups_opened: u64,
    groups_expired: u64,
    /// The lowest TemporalId shed for the rest of the open group (see StreamOut::shed).
    group_cut: Option<u8>,
    frames_shed: u64,
    /// Frames quiche took whole, and frames it will never get (see ReceiverStats).
    frames_sent: u64,
    frames_dropped: u64,
    keyframe_requests: u64,
    /// Where its budget comes from.
    policy: budget::Policy,
    /// Its latency budget, from its HELLO and the policy, announced to the receiver, which
    /// drops frames arriving later (None: no budget, or no HELLO yet).
    budget: Option<Duration>,
    /// Its HELLO said it takes shed frames (HELLO_TAKES_SHED).
    takes_shed: bool,
    keyframe_requested: bool,
    /// The parameter sets went out in a group that was not reset: IRAPs need none added.
    has_parameter_sets: bool,
    /// Since when its backlog has been 2 x MAX_BACKLOG or more.
    behind_since: Option<Instant>,
    /// Its queue was dropped for being too far behind and no group has gone out whole
    /// since: dropped again, it is closed (TOO_SLOW).
    dropped_behind: bool,
    /// Application commands it sent, not yet reported.
    commands_in: Vec<String>,
    /// What it may ask per second (ratelimit.rs).
    command_limit: Bucket,
    keyframe_limit: Bucket,
    /// The last turn stopped reading its control stream at the cap (control.rs).
    control_unread: bool,
    last_rx: Instant,
    outbox: Outbox,
    estimator: Estimator,
    /// With a latency budget, once the network has shown a standing queue (pacer.rs).
    pacer: Option<Pacer>,
    /// The pacer held media back at the last flush.
    held_back: bool,
    /// While it holds media back: when the next packet's worth may go.
    pace_at: Option<Instant>,
    /// Probe packets after each burst of media, so a lost tail is found in a round trip.
    tail: TailProbe,
}

impl Receiver {
    fn queue(&mut self, stream: u64, data: ChunkData, fin: bool, expires: Option<Instant>) {
        self.queue_chunk(
            stream,
            Chunk {
                data,
                offset: 0,
                fin,
                expires,
                shed: None,
                catch_up: false,
            },
        );
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
    fn queue_command(&mut self, cmd: &Command) {
        if self.closing() {
            return;
        }
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes);
        self.queue(CONTROL_STREAM, ChunkData::Owned(bytes), false, None);
    }

    /// Closed, or closing: nothing more goes to it.
    fn closing(&self) -> bool {
        self.conn.local_error().is_some() || self.conn.is_draining() || self.conn.is_closed()
    }

    fn close(&mut self, code: u64, reason: &str) {
        let (id, peer) = (self.id, self.peer);
        if [error_code::PROTOCOL_VIOLATION, error_code::TOO_SLOW].contains(&code) {
            // A misbehaving peer not yet admitted gets no receiver-disconnected message.
            gst::warning!(CAT, "receiver {id} ({peer}): closing: {reason}");
        } else {
            gst::info!(CAT, "receiver {id} ({peer}): closing: {reason}");
        }
        let _ = self.conn.close(true, code, reason.as_bytes());
    }

    /// Writes what is queued until quiche takes no more: commands first, then groups,
    /// newest first when frames have deadlines. Groups whose oldest frame is past its
    /// deadline are reset instead. Returns whether any media went to quiche.
    fn flush(&mut self, newest_first: bool) -> bool {
        let (mut unlimited, mut no_frames) = (usize::MAX, 0);
        if let Err(e) = self.control_out.write(
            &mut self.conn,
            &mut self.out_bytes,
            &mut unlimited,
            &mut no_frames,
        ) {
            gst::warning!(CAT, "receiver {}: control stream: {e}", self.id);
            self.out_bytes -= self.control_out.bytes();
            self.control_out.clear();
        }
        // What quiche would not take is beyond the receiver's flow-control window: it does
        // not read its control stream.
        let waiting = self.control_out.bytes();
        if waiting > MAX_CONTROL_BYTES {
            self.out_bytes -= waiting;
            self.control_out.clear();
            let why = format!(
                "{waiting} bytes of commands wait on its control stream: it does not read it"
            );
            self.close(error_code::TOO_SLOW, &why);
        }
        // A frame written now arrives about a round trip later: the congestion window
        // ahead of it drains, then it crosses (more when the network queues). One that
        // would arrive past its deadline is not worth sending. Measured in bench scenario
        // (e): late frames 116 -> 14 against half a round trip's 78.
        let now = Instant::now();
        let path = self.conn.path_stats().next();
        let ahead = path.as_ref().map_or(Duration::ZERO, |p| p.rtt);
        self.expire(now, ahead);
        if let Some(p) = path.filter(|_| self.budget.is_some()) {
            let min_rtt = p.min_rtt.unwrap_or(p.rtt);
            match self.pacer.as_mut() {
                Some(pacer) => pacer.on_path(now, p.delivery_rate, self.held_back, p.rtt, min_rtt),
                None if p.rtt.saturating_sub(min_rtt) > pacer::STANDING_QUEUE => {
                    gst::debug!(CAT, "receiver {}: the path queues: pacing", self.id);
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
            let ends = g.chunks.back().is_some_and(|c| c.fin);
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
                    gst::info!(CAT, "receiver {}: stream {}: {e}", self.id, g.stream);
                    self.out_bytes -= g.bytes();
                    self.frames_dropped += g.clear();
                }
            }
        }
        self.groups_out.retain(|g| !g.chunks.is_empty());
        self.held_back = false;
        self.pace_at = None;
        if let Some(p) = self.pacer.as_mut() {
            p.spend(now, granted - allowance);
            if allowance == 0 && !self.groups_out.is_empty() {
                self.held_back = true;
                self.pace_at = Some(p.ready_at(config::MAX_DATAGRAM_SIZE));
            }
        }
        granted > allowance
    }

    /// Whether this receiver has gone quiet (see GONE_QUIET).
    fn quiet(&self) -> bool {
        self.last_rx.elapsed() > GONE_QUIET
    }

    /// Sheds the cheap frames due to be shed (StreamOut::shed), if the receiver takes shed
    /// frames. Then resets every group whose oldest queued frame could no longer arrive
    /// by its deadline (written now, it arrives `ahead` later), or every group of a
    /// receiver too far behind (see MAX_BACKLOG and GONE_QUIET); the receiver skips them,
    /// and gets no more frames until the next IRAP.
    fn expire(&mut self, now: Instant, ahead: Duration) {
        if self.out_bytes < 2 * MAX_BACKLOG {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(now);
        }
        let give_up = self.behind_since.is_some_and(|t| now >= t + BEHIND_FOR)
            || self.out_bytes >= 4 * MAX_BACKLOG
            || (self.out_bytes >= MAX_BACKLOG && self.quiet());
        if give_up && !self.groups_out.is_empty() {
            // A second time with no group taken whole since, and still heard from (one
            // behind an outage resumes at the next IRAP): it gives no flow-control credit,
            // or as good as none, and would keep its place and up to 4 x MAX_BACKLOG here
            // for good.
            if self.dropped_behind && !self.quiet() && self.conn.local_error().is_none() {
                self.close(
                    error_code::TOO_SLOW,
                    "queue dropped twice with no group taken whole in between: the receiver \
                     does not read, or far slower than the stream",
                );
            }
            self.dropped_behind = true;
        }
        for g in self.groups_out.iter_mut() {
            let mut older_group_cut = None;
            let cut = if self.group == Some(g.stream) {
                &mut self.group_cut
            } else {
                &mut older_group_cut
            };
            let shed = if self.takes_shed {
                g.shed(now, ahead, cut, &mut self.out_bytes)
            } else {
                0
            };
            if shed > 0 {
                self.frames_shed += shed;
                gst::debug!(
                    CAT,
                    "receiver {}: shed {shed} frames of group stream {} ({} so far)",
                    self.id,
                    g.stream,
                    self.frames_shed
                );
            }
            let oldest = g.chunks.iter().find_map(|c| c.expires);
            // Catch-up frames come first, before any frame with a deadline.
            let catching_up = g
                .chunks
                .iter()
                .take_while(|c| c.expires.is_none())
                .any(|c| c.catch_up);
            if !give_up && (catching_up || oldest.is_none_or(|t| t > now + ahead)) {
                continue;
            }
            let _ = self.conn.stream_shutdown(
                g.stream,
                quiche::Shutdown::Write,
                error_code::GROUP_EXPIRED,
            );
            self.out_bytes -= g.bytes();
            self.frames_dropped += g.clear();
            self.groups_expired += 1;
            // The sets may have been in what was dropped.
            self.has_parameter_sets = false;
            if self.group == Some(g.stream) {
                self.group = None;
            }
            gst::debug!(
                CAT,
                "receiver {}: group stream {} expired ({} so far)",
                self.id,
                g.stream,
                self.groups_expired
            );
        }
    }
}

struct Loop {
    endpoint: Endpoint,
    config: quiche::Config,
    link: Arc<Link<Status>>,
    receivers: HashMap<u64, Receiver>,
    /// Connection IDs (ours and the client's original one) to receiver ids.
    ids: HashMap<Vec<u8>, u64>,
    next_id: u64,
    caps: Option<String>,
    next_seq: u64,
    eos: bool,
    /// The last receive() stopped at its batch limit.
    unread: bool,
    keyframes: Keyframes,
    budget: budget::Policy,
    on_estimate: Box<dyn Fn(Estimate) + Send>,
    admission: Admitter,
    entry: Entry,
    reporter: Reporter<SenderStats>,
    /// Receivers closed at HELLO.
    rejected: u64,
    /// The group in progress, for receivers joining mid-group (join-mode=cached).
    join_cache: JoinCache,
    /// The latest VPS, SPS and PPS, for a receiver whose first IRAP comes without them.
    parameter_sets: Option<Arc<[u8]>>,
    next_estimate: Instant,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Loop {
    fn new(
        endpoint: Endpoint,
        config: quiche::Config,
        link: Arc<Link<Status>>,
        budget: budget::Policy,
        admission: Admitter,
        entry: Entry,
        upstream: Upstream,
    ) -> Self {
        let Upstream {
            keyframes,
            on_estimate,
            reporter,
        } = upstream;
        Loop {
            entry,
            reporter,
            rejected: 0,
            endpoint,
            config,
            link,
            receivers: HashMap::new(),
            ids: HashMap::new(),
            next_id: 1,
            caps: None,
            next_seq: 0,
            eos: false,
            unread: false,
            keyframes,
            budget,
            on_estimate,
            admission,
            join_cache: JoinCache::default(),
            parameter_sets: None,
            next_estimate: Instant::now() + rate::UPDATE,
            buf: vec![0; 65536],
            out: vec![0; config::MAX_DATAGRAM_SIZE],
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let deadlines: Vec<Option<Instant>> = self
                .receivers
                .values()
                .flat_map(|r| {
                    // When a backlogged receiver would count as quiet.
                    let quiet_at =
                        (r.out_bytes > 0 && !r.quiet()).then_some(r.last_rx + GONE_QUIET);
                    [
                        r.conn.timeout_instant(),
                        r.outbox.release_at(),
                        quiet_at,
                        r.pace_at,
                        r.behind_since.map(|t| t + BEHIND_FOR),
                        gate::hello_due(r.opened, r.hello),
                    ]
                })
                .chain([
                    self.keyframes.due(),
                    Some(self.next_estimate),
                    Some(self.reporter.due()),
                ])
                .collect();
            // Commands left unread in quiche raise no socket event: come straight back.
            let unread = self.unread || self.receivers.values().any(|r| r.control_unread);
            if let Err(e) = self.endpoint.wait(&mut events, deadlines, unread) {
                self.link
                    .update(|s| s.failure = Some(format!("poll failed: {e}")));
                return;
            }
            if self.link.lock().shutdown {
                self.shutdown();
                return;
            }
            if self.unread
                || events
                    .iter()
                    .any(|e| e.token() == SOCKET && e.is_readable())
            {
                self.unread = !self.receive();
            }
            for r in self.receivers.values_mut() {
                r.conn.on_timeout();
            }
            self.take_work();
            let ids: Vec<u64> = self.receivers.keys().copied().collect();
            for id in ids {
                self.serve(id);
            }
            self.keyframes.poll();
            self.estimate();
            self.reap();
            self.publish();
            let blocked = self.receivers.values().any(|r| r.outbox.blocked());
            self.endpoint.watch_writable(blocked);
        }
    }

    /// Reads up to a batch of datagrams; returns whether the socket was drained.
    fn receive(&mut self) -> bool {
        // Bounded, so a flood cannot keep the loop from serving, or from seeing shutdown.
        let mut budget = MAX_RECV_BATCH;
        while budget > 0 {
            let Some(d) = self.endpoint.recv(&mut self.buf) else {
                return true;
            };
            budget = budget.saturating_sub(d.count());
            for range in d.ranges() {
                self.receive_one(range, d.from);
            }
        }
        false
    }

    /// Hands one datagram, `buf[range]`, to its connection, or accepts a new one.
    fn receive_one(&mut self, range: std::ops::Range<usize>, from: SocketAddr) {
        let len = range.len();
        let packet = &mut self.buf[range];
        let Ok(hdr) = quiche::Header::from_slice(packet, quiche::MAX_CONN_ID_LEN) else {
            return;
        };
        let id = match self.ids.get(hdr.dcid.as_ref()) {
            Some(id) => *id,
            None => {
                if !gate::may_answer(len) {
                    gst::debug!(CAT, "dropping a {len}-byte datagram from {from}");
                    return;
                }
                let entered = self.entry.accept(
                    &hdr,
                    from,
                    &self.endpoint,
                    &mut self.config,
                    &mut self.out,
                    &self.receivers,
                );
                let conn = match entered {
                    Some(Entered::Opened(conn)) => conn,
                    Some(Entered::Refused(conn)) => {
                        let info = quiche::RecvInfo {
                            from,
                            to: self.endpoint.local,
                        };
                        let socket = &self.endpoint.socket;
                        refuse_token(conn, packet, info, socket, &mut self.out);
                        return;
                    }
                    None => return,
                };
                let id = self.next_id;
                self.next_id += 1;
                gst::info!(CAT, "receiver {id}: connecting from {from}");
                self.ids.insert(conn.source_id().to_vec(), id);
                self.ids.insert(hdr.dcid.to_vec(), id);
                let outbox = Outbox::new(self.endpoint.offload);
                let command_size = self.entry.limits.command_size;
                let r = Receiver::new(id, conn, from, outbox, self.budget, command_size);
                self.receivers.insert(id, r);
                id
            }
        };
        let info = quiche::RecvInfo {
            from,
            to: self.endpoint.local,
        };
        if let Some(r) = self.receivers.get_mut(&id) {
            let taken = r.conn.stats().recv;
            if let Err(e) = r.conn.recv(packet, info) {
                gst::debug!(CAT, "receiver {id}: recv: {e}");
            }
            // Only a packet quiche took is news from the receiver: anyone who saw its
            // connection ID can send one that does not decrypt (quiche drops it quietly),
            // and must not keep a receiver that went quiet counted as there.
            if r.conn.stats().recv == taken {
                return;
            }
            // A receiver heard from after a silence (an outage): answer with a PING so its
            // ACK restarts loss recovery now, not at our next, backed-off, probe timeout.
            if r.last_rx.elapsed() > PEER_SILENCE {
                let _ = r.conn.send_ack_eliciting();
                // If its group expired meanwhile it waits for an IRAP: ask for one now,
                // a round trip before its own request could arrive.
                if r.described && r.group.is_none() {
                    self.keyframes.wanted = true;
                }
            }
            r.last_rx = Instant::now();
        }
    }

    fn take_work(&mut self) {
        let work = self.link.update(|s| s.inner.take_work());
        for item in work {
            match item {
                Work::Caps(caps) => {
                    // Receivers already described learn of a change at once.
                    if self.caps.as_ref() != Some(&caps) {
                        for r in self.receivers.values_mut().filter(|r| r.described) {
                            r.queue_command(&Command::Describe { caps: caps.clone() });
                        }
                    }
                    self.caps = Some(caps);
                }
                Work::Frame(frame, queued, queued_ns) => self.distribute(frame, queued, queued_ns),
                Work::Command {
                    to,
                    structure,
                    in_stream,
                } => {
                    let before_seq = in_stream.map(|later| self.next_seq + later);
                    if let Some(seq) =
                        before_seq.filter(|_| self.admission.join_mode == JoinMode::Cached)
                    {
                        self.join_cache.push_command(seq, structure.clone());
                    }
                    let cmd = Command::Application {
                        before_seq,
                        structure,
                    };
                    let addressed =
                        |r: &&mut Receiver| r.described && to.is_none_or(|id| id == r.id);
                    for r in self.receivers.values_mut().filter(addressed) {
                        r.queue_command(&cmd);
                    }
                }
                Work::Eos => {
                    self.eos = true;
                    for r in self.receivers.values_mut().filter(|r| r.described) {
                        r.end_of_stream(self.next_seq);
                    }
                }
            }
        }
    }

    /// Queues one frame to every receiver that can decode it.
    fn distribute(&mut self, frame: MediaFrame, queued: Instant, queued_ns: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
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
            len: frame.data.as_ref().as_ref().len() as u64,
        };
        let mut encoded = Vec::with_capacity(32);
        header.encode(&mut encoded);
        if frame.parameter_sets {
            let old = self.parameter_sets.as_deref().unwrap_or_default();
            let sets = crate::h265::merge_parameter_sets(old, frame.data.as_ref().as_ref());
            if !sets.is_empty() {
                self.parameter_sets = Some(sets.into());
            }
        }
        if frame.keyframe {
            // This IRAP reaches everyone who asked before it.
            self.keyframes.wanted = false;
        }
        let (tid, cost) = (frame.temporal_id, frame.drop_cost);
        let f = CachedFrame {
            header,
            encoded_header: encoded.into(),
            frame: Arc::new(frame),
        };
        for r in self.receivers.values_mut().filter(|r| r.described) {
            if f.frame.keyframe {
                r.open_group(seq, r.budget.is_some());
            }
            let Some(group) = r.group else {
                // Waiting for the next IRAP after a reset group.
                if r.groups_opened > 0 {
                    r.frames_dropped += 1;
                }
                continue;
            };
            if r.takes_shed && r.group_cut.is_some_and(|layer| tid >= layer) {
                r.frames_shed += 1;
                r.queue(group, ChunkData::Owned(shed_marker(seq)), false, None);
                continue;
            }
            let deadlines = r.budget.map(|b| Deadlines::new(queued, b, cost));
            let shed = deadlines.map(|d| Sheddable {
                seq,
                temporal_id: tid,
                cost,
                by: d.shed_by,
            });
            let expires = deadlines.map(|d| d.expires);
            r.queue_frame(&f, self.parameter_sets.as_ref(), expires, shed, false);
        }
        if self.admission.join_mode == JoinMode::Cached {
            self.join_cache.push(f);
        }
    }

    /// Reads the receiver's control stream, writes what is queued and sends packets.
    fn serve(&mut self, id: u64) {
        let eos = self.eos.then_some(self.next_seq);
        // Counted only for a receiver waiting to be admitted: this runs for every receiver on
        // every turn of the loop. Receivers gone quiet or closing do not take a place.
        let waiting = self.receivers.get(&id).is_some_and(|r| !r.admitted);
        let served = if waiting {
            self.receivers
                .values()
                .filter(|r| r.admitted && !r.quiet() && r.conn.local_error().is_none())
                .count()
        } else {
            0
        };
        let Some(r) = self.receivers.get_mut(&id) else {
            return;
        };
        let mut wrote_media = false;
        if gate::hello_overdue(Instant::now(), r.opened, r.hello) && r.conn.local_error().is_none()
        {
            let reason = format!("no HELLO within {} s", gate::HELLO_WITHIN.as_secs());
            r.close(error_code::PROTOCOL_VIOLATION, &reason);
        }
        if r.conn.is_established() {
            let readable: Vec<u64> = r.conn.readable().collect();
            r.control_unread = false;
            for stream in readable {
                if stream != CONTROL_STREAM {
                    r.close(
                        error_code::PROTOCOL_VIOLATION,
                        "unexpected stream from receiver",
                    );
                    break;
                }
                let mut commands = Vec::new();
                let conn = &mut r.conn;
                let read = |buf: &mut [u8]| conn.stream_recv(CONTROL_STREAM, buf);
                let result =
                    control::read_commands(&mut r.control_in, read, &mut self.buf, &mut commands);
                r.control_unread = result == Ok(Stopped::Capped);
                let now = Instant::now();
                for cmd in commands {
                    r.handle(cmd, now);
                }
                if let Err(e) = result {
                    r.close(error_code::PROTOCOL_VIOLATION, &e);
                }
            }
            let admission = &self.admission;
            if r.hello && !r.admitted && r.conn.local_error().is_none() {
                let asking = Admission {
                    id,
                    peer: r.peer,
                    token: &r.token,
                };
                let wrong_token = admission
                    .token
                    .as_ref()
                    .is_some_and(|t| t.len() != r.token.len() || !boring::memcmp::eq(t, &r.token));
                let refusal = if wrong_token {
                    let shown = if r.token.is_empty() { "no" } else { "a wrong" };
                    Some((error_code::REJECTED, format!("{shown} token")))
                } else if admission.max > 0 && served >= admission.max {
                    let why = format!("serving the maximum of {} receivers", admission.max);
                    Some((error_code::SERVER_FULL, why))
                } else if !(admission.admit)(&asking) {
                    Some((error_code::REJECTED, "refused by the sender".to_string()))
                } else {
                    None
                };
                if let Some((code, reason)) = refusal {
                    gst::info!(CAT, "receiver {id} ({}): rejected: {reason}", r.peer);
                    r.close(code, &reason);
                    self.rejected += 1;
                    self.reporter.force();
                    (admission.on_receiver)(ReceiverEvent::Rejected {
                        id,
                        peer: r.peer,
                        code,
                        reason,
                    });
                } else {
                    r.admitted = true;
                    r.token = Vec::new();
                    // So that send-command from a receiver-connected handler finds it.
                    self.link.update(|s| s.inner.served.push(id));
                    self.reporter.force();
                    (admission.on_receiver)(ReceiverEvent::Connected { id, peer: r.peer });
                }
            }
            // What came with HELLO counts once the receiver is admitted, never before.
            if !r.admitted {
                r.commands_in.clear();
                r.keyframe_requested = false;
            }
            for structure in r.commands_in.drain(..) {
                (admission.on_receiver)(ReceiverEvent::Command {
                    id,
                    peer: r.peer,
                    structure,
                });
            }
            if std::mem::take(&mut r.keyframe_requested) {
                self.keyframes.wanted = true;
            }
            if r.admitted && !r.described {
                if let Some(caps) = &self.caps {
                    let cache =
                        (self.admission.join_mode == JoinMode::Cached).then_some(&self.join_cache);
                    let joined = r.describe(caps, eos, cache, self.parameter_sets.as_ref());
                    // Before the first frame, the first IRAP is on its way anyway; after the
                    // last, none is.
                    let started = self.next_seq > 0 && eos.is_none();
                    if !joined && started && self.admission.join_mode != JoinMode::Keyframe {
                        self.keyframes.wanted = true;
                    }
                }
            }
            wrote_media = r.flush(r.budget.is_some());
        }
        if let Some(p) = r.conn.path_stats().next() {
            let min_rtt = p.min_rtt.unwrap_or(p.rtt);
            let validated = r.conn.is_established();
            r.outbox.repeat.on_path(p.rtt, min_rtt, validated);
        }
        r.outbox.send_all(&mut r.conn, &self.endpoint.socket);
        let queued = !r.groups_out.is_empty();
        r.tail
            .after_turn(wrote_media, r.conn.stats().retrans, queued);
        let now = Instant::now();
        while r.tail.poll(now, r.outbox.release_at().is_none()) {
            let _ = r.conn.send_ack_eliciting();
            r.outbox.send_all(&mut r.conn, &self.endpoint.socket);
        }
    }

    /// Every rate::UPDATE: each receiver's estimate, and the lowest to the element.
    fn estimate(&mut self) {
        let now = Instant::now();
        if now < self.next_estimate {
            return;
        }
        self.next_estimate = now + rate::UPDATE;
        let mut lowest: Option<f64> = None;
        let mut receivers = 0;
        for r in self.receivers.values_mut() {
            let Some(path) = r.conn.path_stats().next() else {
                continue;
            };
            let sample = Sample {
                sent_bytes: path.sent_bytes,
                lost_bytes: path.lost_bytes,
                rtt: path.rtt,
                min_rtt: path.min_rtt.unwrap_or(path.rtt),
                queued_bytes: r.out_bytes,
                expired: r.groups_expired,
            };
            // A quiet receiver (an outage, or gone) says nothing about its path's rate.
            if !r.described || r.quiet() {
                continue;
            }
            if let Some(e) = r.estimator.update(now, sample) {
                gst::trace!(
                    CAT,
                    "receiver {}: estimate {:.0} kbit/s, rtt {:?} (min {:?}), queued {} B, \
                     pacing at {:?} bit/s",
                    r.id,
                    e / 1e3,
                    sample.rtt,
                    sample.min_rtt,
                    sample.queued_bytes,
                    r.pacer.as_ref().map(Pacer::rate_bps)
                );
                lowest = Some(lowest.map_or(e, |l: f64| l.min(e)));
                receivers += 1;
            }
        }
        if let Some(bitrate) = lowest {
            (self.on_estimate)(Estimate {
                bitrate: bitrate as u64,
                receivers,
            });
        }
    }

    fn reap(&mut self) {
        let closed: Vec<u64> = self
            .receivers
            .iter()
            .filter(|(_, r)| r.conn.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in closed {
            if let Some(r) = self.receivers.remove(&id) {
                let why = match (r.conn.peer_error(), r.conn.local_error()) {
                    (Some(e), _) => format!(
                        "closed by receiver (code {:#x}: {})",
                        e.error_code,
                        String::from_utf8_lossy(&e.reason)
                    ),
                    (None, Some(e)) => format!(
                        "closed (code {:#x}: {})",
                        e.error_code,
                        String::from_utf8_lossy(&e.reason)
                    ),
                    _ if r.conn.is_timed_out() => "timed out".to_string(),
                    _ => "closed".to_string(),
                };
                gst::info!(CAT, "receiver {id} ({}): {why}", r.peer);
                self.ids.retain(|_, v| *v != id);
                self.reporter.force();
                if r.admitted {
                    self.link.update(|s| s.inner.served.retain(|&x| x != id));
                    (self.admission.on_receiver)(ReceiverEvent::Disconnected {
                        id,
                        peer: r.peer,
                        reason: why,
                    });
                }
            }
        }
    }

    fn publish(&mut self) {
        let snapshot = self.reporter.poll(|| SenderStats {
            frames_in: self.next_seq,
            keyframe_requests: self.keyframes.requested,
            receivers_rejected: self.rejected,
            receivers: self.receivers.values().map(Receiver::stats).collect(),
        });
        if let Some(stats) = snapshot {
            self.link.update(|s| s.inner.stats = stats);
        }
        let ready = self.receivers.values().filter(|r| r.described).count();
        // The fastest receiver sets the pace (see MAX_BACKLOG); one waiting for an IRAP
        // has nothing queued and says nothing about its pace.
        let backlog = self
            .receivers
            .values()
            .filter(|r| r.described && r.group.is_some() && !r.quiet())
            .map(|r| r.out_bytes)
            .min()
            .unwrap_or(0);

        // A receiver gone quiet does not hold up EOS either.
        let drained = self.eos && self.receivers.values().all(|r| !r.described || r.quiet());
        self.link.update(|s| {
            let queued: usize = s
                .inner
                .work
                .iter()
                .map(|w| match w {
                    Work::Frame(f, ..) => f.data.as_ref().as_ref().len(),
                    _ => 0,
                })
                .sum();
            s.inner.queued_bytes = queued + backlog;
            s.inner.ready_receivers = ready;
            s.inner.drained = drained;
        });
    }

    /// Closes every connection. The receivers served are told to the stopping thread
    /// (Server::stop), which reports them: no callback runs here any more.
    fn shutdown(&mut self) {
        let mut farewells = Vec::new();
        for r in self.receivers.values_mut() {
            r.close(error_code::NO_ERROR, "sender stopped");
            r.outbox.send_all_now(&mut r.conn, &self.endpoint.socket);
            if r.admitted {
                farewells.push(ReceiverEvent::Disconnected {
                    id: r.id,
                    peer: r.peer,
                    reason: "sender stopped".into(),
                });
            }
        }
        self.link.update(|s| s.inner.farewells = farewells);
    }
}

impl Receiver {
    fn new(
        id: u64,
        conn: quiche::Connection,
        peer: SocketAddr,
        outbox: Outbox,
        policy: budget::Policy,
        max_command_size: u64,
    ) -> Self {
        Receiver {
            id,
            conn,
            peer,
            control_in: CommandDecoder::new(max_command_size),
            opened: Instant::now(),
            hello: false,
            token: Vec::new(),
            admitted: false,
            described: false,
            eos_sent: false,
            control_out: StreamOut::new(CONTROL_STREAM),
            groups_out: VecDeque::new(),
            out_bytes: 0,
            group: None,
            groups_opened: 0,
            groups_expired: 0,
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
            command_limit: Bucket::new(ratelimit::COMMANDS, Instant::now()),
            keyframe_limit: Bucket::new(ratelimit::KEYFRAME_REQUESTS, Instant::now()),
            control_unread: false,
            last_rx: Instant::now(),
            outbox,
            estimator: Estimator::default(),
            pacer: None,
            held_back: false,
            pace_at: None,
            tail: TailProbe::default(),
        }
    }

    fn stats(&self) -> ReceiverStats {
        ReceiverStats {
            id: self.id,
            peer: self.peer,
            admitted: self.admitted,
            connection: ConnectionStats::of(&self.conn),
            frames_sent: self.frames_sent,
            frames_dropped: self.frames_dropped,
            frames_shed: self.frames_shed,
            groups_reset: self.groups_expired,
            keyframe_requests: self.keyframe_requests,
            keyframe_requests_dropped: self.keyframe_limit.dropped,
            commands_dropped: self.command_limit.dropped,
            queued_bytes: self.out_bytes as u64,
            latency_budget: self.budget.map_or(0, |b| b.as_nanos() as u64),
        }
    }

    fn handle(&mut self, cmd: Command, now: Instant) {
        gst::trace!(CAT, "receiver {}: {cmd:?}", self.id);
        match cmd {
            Command::Hello {
                version,
                options,
                token,
                latency,
            } if !self.hello => {
                if version != VERSION {
                    self.close(
                        error_code::UNSUPPORTED_VERSION,
                        &format!("protocol version {version} not supported"),
                    );
                    return;
                }
                self.hello = true;
                self.token = token;
                self.takes_shed = options & HELLO_TAKES_SHED != 0;
                self.budget = self.policy.for_receiver(latency.map(Duration::from_nanos));
                gst::debug!(
                    CAT,
                    "receiver {}: latency budget {:?}",
                    self.id,
                    self.budget
                );
                // Control first: caps and commands must never wait behind media.
                let _ = self.conn.stream_priority(CONTROL_STREAM, 0, true);
                let mut preamble = Vec::new();
                put_preamble(&mut preamble, StreamKind::Control);
                self.queue(CONTROL_STREAM, ChunkData::Owned(preamble), false, None);
                if let Some(budget) = self.budget {
                    self.queue_command(&Command::LatencyBudget(budget.as_nanos() as u64));
                }
            }
            _ if !self.hello => {
                self.close(error_code::PROTOCOL_VIOLATION, "first command is not HELLO");
            }
            Command::Ping(n) if self.control_out.chunks.len() < MAX_CONTROL_QUEUED => {
                self.queue_command(&Command::Pong(n))
            }
            Command::KeyframeRequest if self.keyframe_limit.take(now) => {
                gst::debug!(CAT, "receiver {}: keyframe request", self.id);
                self.keyframe_requested = true;
                self.keyframe_requests += 1;
            }
            Command::KeyframeRequest => {
                gst::debug!(CAT, "receiver {}: keyframe request over its rate", self.id);
            }
            Command::Goodbye { code, reason } => {
                gst::info!(CAT, "receiver {}: goodbye {code:#x}: {reason}", self.id);
                let _ = self.conn.close(true, error_code::NO_ERROR, b"goodbye");
            }
            Command::Application { structure, .. } if self.command_limit.take(now) => {
                self.commands_in.push(structure);
            }
            Command::Application { .. } => {
                gst::debug!(CAT, "receiver {}: command over its rate: dropped", self.id);
            }
            other => gst::debug!(CAT, "receiver {}: ignoring {other:?}", self.id),
        }
    }

    /// Tells the receiver the stream and starts its media: with a `cache` that holds a
    /// group, that group at once (JOIN, then its frames, which carry no deadline: they
    /// are old by design); else at the next IRAP. `eos`: the stream already ended, before
    /// frame number `eos`. Returns whether it joined from the cache.
    fn describe(
        &mut self,
        caps: &str,
        eos: Option<u64>,
        cache: Option<&JoinCache>,
        parameter_sets: Option<&Arc<[u8]>>,
    ) -> bool {
        let group = cache
            .map(JoinCache::frames)
            .filter(|f| !f.is_empty() && eos.is_none());
        if let Some(frames) = group {
            let live_seq = frames[frames.len() - 1].header.seq + 1;
            self.queue_command(&Command::Join {
                live_seq,
                sender_time: super::monotonic_ns(),
            });
        }
        self.queue_command(&Command::Describe {
            caps: caps.to_string(),
        });
        self.described = true;
        gst::info!(CAT, "receiver {} ({}): ready", self.id, self.peer);
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
        gst::debug!(
            CAT,
            "receiver {}: joined with {} cached frames",
            self.id,
            frames.len()
        );
        true
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
                let _ = self.conn.stream_priority(old, 4, false);
            }
        }
        self.close_group(first_seq);
        self.group_cut = None;
        // Server-initiated unidirectional streams: 3, 7, 11, ...
        let stream = 3 + 4 * self.groups_opened;
        self.groups_opened += 1;
        // Not incremental: within an urgency quiche sends the lower stream ID first. Setting
        // the priority also creates the stream, so a reset always reaches the receiver.
        let _ = self.conn.stream_priority(stream, 3, false);
        let mut opening = Vec::with_capacity(16);
        crate::protocol::put_group_opening(&mut opening, first_seq);
        self.queue(stream, ChunkData::Owned(opening), false, None);
        self.group = Some(stream);
    }

    /// Writes the group's end and its FIN (see put_group_end); `next_seq`: the number of
    /// the frame after the group's last.
    fn close_group(&mut self, next_seq: u64) {
        if let Some(group) = self.group.take() {
            let mut end = Vec::with_capacity(8);
            crate::protocol::put_group_end(&mut end, next_seq);
            self.queue(group, ChunkData::Owned(end), true, None);
        }
    }

    /// `end_seq`: the sequence number the next frame would have had.
    fn end_of_stream(&mut self, end_seq: u64) {
        if self.eos_sent {
            return;
        }
        self.eos_sent = true;
        self.close_group(end_seq);
        self.queue_command(&Command::EndOfStream {
            groups: self.groups_opened,
            end_seq,
        });
    }
}

/// What the loop reports to the element: keyframe requests, estimates and stats.
struct Upstream {
    keyframes: Keyframes,
    on_estimate: Box<dyn Fn(Estimate) + Send>,
    reporter: Reporter<SenderStats>,
}

/// Who may open a connection: address validation and the limits on connections.
struct Entry {
    validator: Option<AddressValidator>,
    limits: Limits,
    capture: Capture,
    /// INVALID_TOKEN answers: each costs a TLS handshake's CPU, which Retry exists to spare.
    refusals: Bucket,
}

struct Limits {
    gate: gate::Limits,
    command_size: u64,
}

/// What a client's Initial for no known connection gets.
enum Entered {
    /// A new connection.
    Opened(quiche::Connection),
    /// Its token did not validate: this connection only reads the Initial and closes with
    /// INVALID_TOKEN (see retry.rs), and is never kept.
    Refused(quiche::Connection),
}

impl Entry {
    /// Creates a connection for a client's Initial packet, or answers it with a Retry or
    /// version negotiation, or drops it when the limits are reached.
    fn accept(
        &mut self,
        hdr: &quiche::Header,
        from: SocketAddr,
        endpoint: &Endpoint,
        config: &mut quiche::Config,
        out: &mut [u8],
        receivers: &HashMap<u64, Receiver>,
    ) -> Option<Entered> {
        if hdr.ty != quiche::Type::Initial {
            return None;
        }
        let socket = &endpoint.socket;
        if !quiche::version_is_supported(hdr.version) {
            let len = quiche::negotiate_version(&hdr.scid, &hdr.dcid, out).ok()?;
            let _ = socket.send_to(&out[..len], from);
            return None;
        }
        let seen = receivers.values().map(|r| gate::Seen {
            ip: r.peer.ip(),
            established: r.conn.is_established(),
            hello: r.hello,
            closing: r.conn.local_error().is_some() || r.conn.is_draining(),
        });
        if let Err(why) = gate::may_open(from.ip(), seen, self.limits.gate) {
            gst::debug!(CAT, "dropping an Initial from {from}: {why}");
            return None;
        }
        let now = Instant::now();
        let (scid, odcid) = match &self.validator {
            None => (random_cid().to_vec(), None),
            Some(validator) => match hdr.token.as_deref().filter(|t| !t.is_empty()) {
                None => {
                    let scid = random_cid();
                    let token = validator.mint(now, from, &hdr.dcid, &scid);
                    let new_scid = quiche::ConnectionId::from_ref(&scid);
                    let len =
                        quiche::retry(&hdr.scid, &hdr.dcid, &new_scid, &token, hdr.version, out)
                            .ok()?;
                    let _ = socket.send_to(&out[..len], from);
                    return None;
                }
                Some(token) => match validator.validate(now, from, &hdr.dcid, token) {
                    // The token names this ID: the connection keeps it.
                    Some(odcid) => (hdr.dcid.to_vec(), Some(odcid)),
                    None if !self.refusals.take(now) => {
                        gst::debug!(CAT, "dropping an Initial from {from}: invalid token");
                        return None;
                    }
                    None => {
                        gst::info!(CAT, "refusing an Initial from {from}: invalid token");
                        let scid = random_cid();
                        let scid = quiche::ConnectionId::from_ref(&scid);
                        return quiche::accept(&scid, None, endpoint.local, from, config)
                            .ok()
                            .map(Entered::Refused);
                    }
                },
            },
        };
        let scid = quiche::ConnectionId::from_ref(&scid);
        let odcid = odcid.as_deref().map(quiche::ConnectionId::from_ref);
        match quiche::accept(&scid, odcid.as_ref(), endpoint.local, from, config) {
            Ok(mut conn) => {
                self.capture.attach(&mut conn, "quicnalusink");
                Some(Entered::Opened(conn))
            }
            Err(e) => {
                gst::debug!(CAT, "cannot accept {from}: {e}");
                None
            }
        }
    }
}

/// Closes a connection made only to refuse a client's `initial` with INVALID_TOKEN: it
/// reads the Initial (which gives it the keys to answer in) and sends its CONNECTION_CLOSE,
/// a packet far smaller than the Initial, at once.
fn refuse_token(
    mut conn: quiche::Connection,
    initial: &mut [u8],
    info: quiche::RecvInfo,
    socket: &mio::net::UdpSocket,
    out: &mut [u8],
) {
    let _ = conn.recv(initial, info);
    let _ = conn.close(false, INVALID_TOKEN, b"invalid address validation token");
    while let Ok((n, send)) = conn.send(out) {
        let _ = socket.send_to(&out[..n], send.to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::control::MAX_COMMANDS_WAITING;

    fn command(len: usize) -> Work {
        Work::Command {
            to: None,
            structure: "x".repeat(len),
            in_stream: None,
        }
    }

    #[test]
    fn commands_handed_over_are_bounded_in_bytes() {
        let mut status = Status::default();
        let mut taken = 0;
        while status.offer_command(command(60_000)) {
            taken += 1;
        }
        assert_eq!(taken, MAX_COMMANDS_WAITING / 60_000);
        // Small ones still fit in what is left; once the thread took the work, all do.
        assert!(status.offer_command(command(10)));
        assert_eq!(status.take_work().len(), taken + 1);
        assert!(status.offer_command(command(60_000)));
    }
}
