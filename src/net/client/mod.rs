//! The receiver's networking thread: a QUIC client that says HELLO, reads the stream
//! description and the group streams, and hands whole access units to the streaming thread
//! in group order.

use crate::net::capture::Capture;
use crate::net::config::{self, CongestionControl};
use crate::policy::ending::{self, cannot_create, no_answer, poll_failed, violation, Outcome};
use crate::policy::reconnect::{Backoff, Next, Reconnect};
use crate::protocol::control::{self, command_fits, Stopped, CONTROL_STREAM};
use crate::receiver::inbox::{next_event, Event, Inbox, Outgoing};
mod listen;

use crate::error::Error;
use crate::media::monotonic_ns;
use crate::net::events::{ConnectionEvent, OnConnection};
use crate::net::known_hosts::KnownHosts;
use crate::net::link::{gated, Enter, Interrupted, Link, NetThread};
use crate::net::socket::{random_cid, Endpoint, Outbox, RecvBatch, SOCKET};
use crate::net::stats::{ClientStats, ConnectionStats, ReceiverCounters, Reporter};
use crate::net::trust::Trust;
use crate::policy::knock::{self, Doorman, Knock, AMPLIFICATION, HEAR_BACK};
use crate::protocol::{
    error_code, put_preamble, Command, CommandDecoder, StreamKind, HELLO_TAKES_SHED, VERSION,
};
use crate::receiver::signals::Signals;
use crate::receiver::{Reassembly, Reply, StreamSource, MAX_CONTROL_OUT};
use mio::Events;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The idle timeout is the element's `timeout`, but never so short that a brief pause in
/// the network drops a healthy connection.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct ClientSettings {
    /// The sender; when `listen`, the local address to listen on until one calls.
    pub peer: SocketAddr,
    /// `mode=listener`: wait for a calling sender's knock (knock.rs), then connect to
    /// where it came from; after a lost connection, wait for the next.
    pub listen: bool,
    /// The name TLS asks for (SNI) and checks the certificate against, if any.
    pub server_name: Option<String>,
    /// How the sender's certificate is trusted.
    pub trust: Trust,
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
    pub on_connection: OnConnection,
    /// Longest command the sender may send; a longer one is a protocol violation.
    pub max_command_size: u64,
    /// qlog files and the TLS key log.
    pub capture: Capture,
    /// Takes the snapshots [`Client::stats`] returns, and hands them out at an interval.
    pub stats: Reporter<ClientStats>,
    /// Run first on the networking thread.
    pub enter: Enter,
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
    local: SocketAddr,
}

impl Client {
    /// Binds a socket and starts connecting; failures to connect arrive through
    /// [`Client::next`].
    pub fn start(settings: ClientSettings) -> Result<Client, Error> {
        let (verify, ca_file) = settings.trust.chain();
        let mut config = config::client(
            verify,
            ca_file,
            settings.congestion_control,
            settings.connect_timeout.max(MIN_IDLE_TIMEOUT),
        )
        .map_err(Error::Setup)?;
        if settings.capture.logs_keys() {
            config.log_keys();
        }
        let any: IpAddr = if settings.peer.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = if settings.listen {
            settings.peer
        } else {
            SocketAddr::new(any, 0)
        };
        let endpoint = Endpoint::bind(bind).map_err(Error::Bind)?;
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
        let enter = settings.enter.clone();
        let local = endpoint.local;
        let run: Box<dyn FnOnce() + Send> = if settings.listen {
            log::info!("listening on {local} for a calling sender");
            let link = link.clone();
            Box::new(move || answer_first_caller(endpoint, config, link, settings, counters))
        } else {
            let first = Loop::new(endpoint, config, link.clone(), settings, None, counters)?;
            Box::new(move || drive(first))
        };
        let net = NetThread::spawn("quicnalu-src-net", enter, link, waker, move || run())?;
        Ok(Client { net, local })
    }

    /// The local address: with `listen`, where callers knock.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
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
        if !command_fits(&structure) {
            return false;
        }
        let queued = self.net.update(|s| s.inner.commands_out.offer(structure));
        self.net.wake();
        queued
    }

    /// Waits for the next event. Events queued before a failure are delivered first.
    pub fn next(&self) -> Result<Event, Interrupted> {
        next_event(&self.net, |q| &mut q.events)
    }
}

/// Runs connections until the element stops: the first, then, after a lost one, new
/// attempts as the reconnect policy (backoff.rs) says (listening: each when the sender
/// calls again), each resuming at the next keyframe.
fn drive(mut conn: Loop) {
    let peer = conn.settings.peer;
    let mut backoff = if conn.door.is_some() {
        Backoff::listening(peer, conn.settings.reconnect)
    } else {
        Backoff::new(peer, conn.settings.reconnect)
    };
    let mut served = false;
    loop {
        let outcome = conn.run();
        conn.report(&outcome);
        let established = match conn.phase {
            Phase::Serving { since } => Some(since),
            Phase::Connecting => None,
        };
        served |= established.is_some();
        let window = match backoff.next(outcome, Instant::now(), conn.started, established) {
            Next::Stop => break,
            Next::Fail(why) => {
                conn.fail(why);
                break;
            }
            Next::AwaitCaller { until } => {
                let Some(door) = conn.door.as_mut() else {
                    break;
                };
                let waiting = Waiting {
                    endpoint: &mut conn.endpoint,
                    link: &conn.link,
                    buf: &mut conn.buf,
                    token: &conn.settings.token,
                    counters: &mut conn.core.counters,
                    stats: &mut conn.settings.stats,
                };
                let caller = match waiting.wait(door, until) {
                    Waited::Knock(from) => from,
                    Waited::Stopping => return,
                    Waited::Expired => {
                        conn.fail(backoff.expired());
                        break;
                    }
                };
                log::info!("{caller} called: connecting to it");
                conn.settings.peer = caller;
                backoff.set_peer(caller);
                // A caller after a knock that led nowhere is still the first connection.
                served.then_some(conn.settings.connect_timeout)
            }
            Next::Retry { after, window } => {
                if after.is_some_and(|t| !conn.pause_until(t)) {
                    return;
                }
                log::info!("connecting to {peer} again (answer within {window:?})");
                Some(window)
            }
        };
        conn = match conn.reconnect(window) {
            Ok(next) => next,
            Err((link, why)) => {
                link.update(|s| s.failure = Some(why));
                link.wait_shutdown();
                return;
            }
        };
    }
    // Nothing more will happen: wait for stop().
    conn.link.wait_shutdown();
}

/// Listening: waits for the first caller's knock, then connects to it and carries on as
/// [`drive`].
fn answer_first_caller(
    mut endpoint: Endpoint,
    config: quiche::Config,
    link: Arc<Link<Queue>>,
    mut settings: ClientSettings,
    mut counters: ReceiverCounters,
) {
    let mut buf = vec![0; 65536];
    let mut door = Doorman::default();
    let waiting = Waiting {
        endpoint: &mut endpoint,
        link: &link,
        buf: &mut buf,
        token: &settings.token,
        counters: &mut counters,
        stats: &mut settings.stats,
    };
    match waiting.wait(&mut door, None) {
        Waited::Knock(caller) => {
            log::info!("{caller} called: connecting to it");
            settings.peer = caller;
        }
        Waited::Stopping | Waited::Expired => return,
    }
    match Loop::new(endpoint, config, link.clone(), settings, None, counters) {
        Ok(mut first) => {
            first.door = Some(door);
            first.hear_back = Some(HearBack::new(first.started));
            drive(first)
        }
        Err(why) => {
            link.update(|s| s.failure = Some(why));
            link.wait_shutdown();
        }
    }
}

use listen::{heard, Allowed, HearBack, Waited, Waiting};

/// Where one connection stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The handshake has yet to complete, or the certificate to pass.
    Connecting,
    /// HELLO went at `since`, once the handshake completed.
    Serving { since: Instant },
}

impl StreamSource for quiche::Connection {
    fn recv(&mut self, stream: u64, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error> {
        self.stream_recv(stream, buf)
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
    /// This connection replaces a lost one.
    resumed: bool,
    phase: Phase,
    /// Set when retrying cannot help.
    fatal: Option<Error>,
    /// The groups, and what becomes of their frames.
    core: Reassembly,
    control_in: CommandDecoder,
    control_out: Vec<u8>,
    /// Keyframe requests, probes and keepalives: when to send them.
    signals: Signals,
    /// The last receive() stopped at its batch limit.
    unread: bool,
    /// The last turn stopped reading the control stream at the cap (control.rs).
    control_unread: bool,
    outbox: Outbox,
    buf: Vec<u8>,
    /// Listening: which knocks to answer next (None when dialling).
    door: Option<Doorman>,
    /// Listening: this call-back has not heard from the knock's source yet.
    hear_back: Option<HearBack>,
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
    ) -> Result<Loop, Error> {
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
        log::info!(
            "bound {} (UDP GSO {}, GRO {})",
            endpoint.local,
            o.gso,
            o.gro
        );
        if let Some(warning) = o.buffer_warning() {
            log::warn!("{warning}");
        }
        let outbox = Outbox::new(endpoint.offload);
        let control_in = CommandDecoder::new(settings.max_command_size);
        let resumed = retry.is_some();
        let started = Instant::now();
        let epoch = (started, monotonic_ns());
        let core = Reassembly::new(
            settings.max_frame_size,
            settings.latency,
            resumed,
            counters,
            epoch,
        );
        Ok(Loop {
            endpoint,
            config,
            conn,
            link,
            answer_within: retry.unwrap_or(settings.connect_timeout),
            resumed,
            phase: Phase::Connecting,
            fatal: None,
            settings,
            started,
            core,
            control_in,
            control_out: Vec::new(),
            signals: Signals::new(started),
            unread: false,
            control_unread: false,
            outbox,
            buf: vec![0; 65536],
            door: None,
            hear_back: None,
        })
    }

    /// Runs this connection until it ends.
    fn run(&mut self) -> Outcome {
        let mut events = Events::with_capacity(16);
        self.send();
        let mut now = Instant::now();
        loop {
            let deadlines = [
                self.conn.timeout_instant(),
                Some(self.next_deadline()),
                self.outbox.release_at(),
                self.conn.is_established().then(|| self.signals.probe_at()),
                self.core.skip_deadline(now),
                Some(self.settings.stats.due()),
                self.hear_back.map(|h| h.until),
            ];
            // Commands left unread in quiche raise no socket event: come straight back.
            let unread = self.unread || self.control_unread;
            if let Err(e) = self.endpoint.wait(&mut events, deadlines, unread) {
                return Outcome::Fatal(poll_failed(e));
            }
            // The one reading of the clock for this turn.
            now = Instant::now();
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
                self.unread = !self.receive(now);
            }
            self.conn.on_timeout();
            if let Some(why) = self.fatal.take() {
                self.send();
                return Outcome::Fatal(why);
            }
            if self.conn.is_closed() {
                return self.closed(now);
            }
            if let Some(hear_back) = self.hear_back {
                if hear_back.allowance == 0 || now >= hear_back.until {
                    let _ = self.conn.close(false, 0x0, b"no answer");
                    return Outcome::Unanswered(no_answer(self.settings.peer, HEAR_BACK));
                }
            }
            if !self.conn.is_established() && now > self.started + self.answer_within {
                let _ = self.conn.close(false, 0x0, b"connect timeout");
                self.send();
                let why = no_answer(self.settings.peer, self.answer_within);
                return Outcome::Unanswered(why);
            }
            if self.conn.is_established() {
                self.established(now);
            }
            self.send();
            self.publish_stats(now, true);
        }
    }

    /// A new `stats` snapshot when one is due; `connected`: this connection is current.
    fn publish_stats(&mut self, now: Instant, connected: bool) {
        let (conn, counters) = (&self.conn, self.core.counters);
        let snapshot = self.settings.stats.poll(now, || ClientStats {
            peer: Some(self.settings.peer),
            connection: (connected && conn.is_established()).then(|| ConnectionStats::of(conn)),
            counters,
        });
        if let Some(stats) = snapshot {
            self.link.update(|s| s.inner.stats = stats);
        }
    }

    /// Why the closed connection ended, and whether connecting again could help.
    fn closed(&mut self, now: Instant) -> Outcome {
        let (core, control_out) = (&mut self.core, &mut self.control_out);
        if self
            .link
            .update(|s| core.on_closed(now, &mut s.inner.events, control_out))
        {
            return Outcome::Ended;
        }
        let (peer, conn) = (self.settings.peer, &self.conn);
        let (peer_error, local_error) = (conn.peer_error(), conn.local_error());
        let served = self.phase != Phase::Connecting;
        ending::closed(peer, peer_error, local_error, conn.is_timed_out(), served)
    }

    /// A fresh connection on the same socket: with `window`, replacing a lost one, which
    /// must answer within that long; None: still the first. Gives back the link and the
    /// reason if it cannot even be created.
    fn reconnect(self, window: Option<Duration>) -> Result<Loop, (Arc<Link<Queue>>, Error)> {
        let link = self.link.clone();
        let door = self.door;
        let mut next = Loop::new(
            self.endpoint,
            self.config,
            self.link,
            self.settings,
            window,
            self.core.counters,
        )
        .map_err(|e| (link, e))?;
        // Listening, every connection is a call-back to a knock.
        next.hear_back = door.is_some().then(|| HearBack::new(next.started));
        next.door = door;
        Ok(next)
    }

    /// Waits until `t`, dropping stray datagrams; false if the element is stopping.
    fn pause_until(&mut self, t: Instant) -> bool {
        let mut events = Events::with_capacity(4);
        let mut unread = false;
        while Instant::now() < t {
            if self.link.lock().shutdown
                || self.endpoint.wait(&mut events, [Some(t)], unread).is_err()
            {
                return false;
            }
            let mut batch = RecvBatch::default();
            while batch.next(&self.endpoint, &mut self.buf).is_some() {}
            unread = !batch.drained();
        }
        !self.link.lock().shutdown
    }

    /// Tells the application how the connection ended; a failure to connect is told by the
    /// failure itself.
    fn report(&mut self, outcome: &Outcome) {
        if self.phase == Phase::Connecting {
            if let (Some(door), Outcome::Unanswered(why) | Outcome::Fatal(why)) =
                (&mut self.door, outcome)
            {
                // Not the listener's failure but its caller's (or a stray's): the next knock
                // from elsewhere is answered, this source's only after a pause.
                let peer = self.settings.peer;
                door.failed(Instant::now(), peer);
                self.core.counters.callbacks_failed += 1;
                log::warn!("call-back to {peer} failed: {why}; still listening");
                let reason = why.to_string();
                (self.settings.on_connection)(ConnectionEvent::CallbackFailed {
                    peer: peer.to_string(),
                    reason,
                });
                return;
            }
        }
        let listening = self.door.is_some();
        match outcome {
            Outcome::Ended => self.notify_disconnected("end of stream".into(), false),
            Outcome::Fatal(why) if self.phase != Phase::Connecting => {
                self.notify_disconnected(why.to_string(), listening)
            }
            Outcome::Lost(why) => {
                let reconnecting = self.settings.reconnect.enabled;
                self.notify_disconnected(why.to_string(), reconnecting)
            }
            Outcome::Unanswered(why) if self.resumed => {
                log::debug!("reconnect attempt failed: {why}")
            }
            _ => {}
        }
    }

    fn notify_disconnected(&mut self, reason: String, reconnecting: bool) {
        self.settings.stats.force();
        self.publish_stats(Instant::now(), false);
        (self.settings.on_connection)(ConnectionEvent::Disconnected {
            peer: self.settings.peer.to_string(),
            reason,
            reconnecting,
        });
    }

    /// The turn's sending: quiche's packets onto the socket, within a call-back's
    /// allowance while its peer has not answered.
    fn send(&mut self) {
        match &mut self.hear_back {
            None => self.outbox.send_all(&mut self.conn, &self.endpoint.socket),
            Some(hear_back) => {
                let allowance = std::cell::Cell::new(hear_back.allowance);
                let wire = Allowed {
                    socket: &self.endpoint.socket,
                    allowance: &allowance,
                };
                self.outbox.send_all(&mut self.conn, &wire);
                hear_back.allowance = allowance.get();
            }
        }
        self.endpoint.watch_writable(self.outbox.blocked());
    }

    fn next_deadline(&self) -> Instant {
        if self.conn.is_established() {
            self.signals.keepalive_at()
        } else {
            self.started + self.answer_within
        }
    }

    /// Why the sender's certificate, which TLS accepted, is still not the sender's.
    fn certificate_refusal(&self) -> Option<Error> {
        let s = &self.settings;
        let mut first_use = |known: &KnownHosts, fingerprint| {
            (s.on_connection)(ConnectionEvent::FirstUse {
                peer: s.peer.to_string(),
                fingerprint,
                known_hosts: known.clone(),
            })
        };
        let der = self.conn.peer_cert();
        s.trust
            .refusal(s.peer, der, &mut first_use)
            .map(Error::Certificate)
    }

    /// Reads up to a batch of datagrams; returns whether the socket was drained.
    fn receive(&mut self, now: Instant) -> bool {
        let mut batch = RecvBatch::default();
        while let Some(d) = batch.next(&self.endpoint, &mut self.buf) {
            let info = quiche::RecvInfo {
                from: d.from,
                to: self.endpoint.local,
            };
            for range in d.ranges() {
                if let Some(door) = &mut self.door {
                    let knock =
                        knock::read(&self.buf[range.clone()], Some(&self.settings.token[..]));
                    if knock != Knock::NotAKnock {
                        match &mut self.hear_back {
                            // The caller knocks again while we try to reach it: each knock
                            // lets the call-back send as much again.
                            Some(h) if d.from == self.settings.peer && knock == Knock::Valid => {
                                h.allowance += AMPLIFICATION * range.len();
                            }
                            _ => heard(door, knock, d.from, now, &mut self.core.counters),
                        }
                        continue;
                    }
                }
                // Only our connection's packets count as hearing from the sender: not
                // those of an abandoned attempt.
                match self.conn.recv(&mut self.buf[range], info) {
                    Ok(_) => {
                        self.signals.heard(now);
                        if d.from == self.settings.peer {
                            self.hear_back = None;
                        }
                    }
                    Err(e) => log::debug!("recv: {e}"),
                }
            }
        }
        batch.drained()
    }

    fn established(&mut self, now: Instant) {
        if self.phase == Phase::Connecting {
            if let Some(why) = self.certificate_refusal() {
                // TLS alert 42, bad_certificate (RFC 9001, 4.8): nothing was sent yet.
                let _ = self.conn.close(false, 0x100 + 42, b"certificate refused");
                self.fatal = Some(why);
                return;
            }
            self.hello(now);
        }
        // Delivering frees room to read more; repeat until neither moves, since a sender
        // held back by flow control sends nothing that would wake us.
        loop {
            if let Err(e) = self.read_streams(now) {
                log::warn!("protocol violation: {e}");
                let _ = self
                    .conn
                    .close(true, error_code::PROTOCOL_VIOLATION, e.as_bytes());
                self.fatal = Some(violation(&e));
                return;
            }
            let (core, control_out) = (&mut self.core, &mut self.control_out);
            let progress = self
                .link
                .update(|s| core.deliver(now, &mut s.inner.events, control_out));
            if self.core.ended() {
                // EOS is out. Closing again while closing does nothing.
                let _ = self
                    .conn
                    .close(true, error_code::NO_ERROR, b"end of stream");
            }
            if !progress {
                break;
            }
        }
        self.write_control(now);
    }

    fn hello(&mut self, now: Instant) {
        put_preamble(&mut self.control_out, StreamKind::Control);
        Command::Hello {
            version: VERSION,
            options: HELLO_TAKES_SHED,
            token: self.settings.token.clone(),
            latency: Some(self.settings.latency.as_nanos() as u64),
        }
        .encode(&mut self.control_out);
        log::info!("connected to {}", self.settings.peer);
        if let Some(door) = &mut self.door {
            door.connected(self.settings.peer);
        }
        self.core.counters.reconnects += u64::from(self.resumed);
        self.phase = Phase::Serving { since: now };
        self.link.update(|s| s.inner.events.push(Event::Connected));
        (self.settings.on_connection)(ConnectionEvent::Connected {
            peer: self.settings.peer.to_string(),
            resumed: self.resumed,
        });
    }

    /// Keyframe requests and commands from the element, probes and keepalives, and the
    /// control stream's bytes as far as quiche takes them.
    fn write_control(&mut self, now: Instant) {
        let room = self.control_out.len() < MAX_CONTROL_OUT;
        let signals = &mut self.signals;
        let due = self.link.update(|s| {
            let due = signals.turn(now, s.inner.keyframe_wanted, room);
            s.inner.keyframe_wanted &= !due.keyframe_request;
            due
        });
        if due.keyframe_request {
            log::debug!("asking the sender for a keyframe");
            Command::KeyframeRequest.encode(&mut self.control_out);
            self.core.counters.keyframe_requests += 1;
        }
        if due.ping {
            let _ = self.conn.send_ack_eliciting();
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
        if !self.control_out.is_empty() {
            match self
                .conn
                .stream_send(CONTROL_STREAM, &self.control_out, false)
            {
                Ok(n) => {
                    self.control_out.drain(..n);
                }
                Err(quiche::Error::Done) => {}
                Err(e) => log::debug!("control stream: {e}"),
            }
        }
    }

    fn read_streams(&mut self, now: Instant) -> Result<(), String> {
        let mut readable: Vec<u64> = self.conn.readable().collect();
        // Control first: JOIN, which says which frames are catch-up, comes before DESCRIBE,
        // and group streams wait in quiche until DESCRIBE.
        readable.sort_unstable();
        self.control_unread = false;
        let one_way = self
            .conn
            .path_stats()
            .next()
            .map_or(0, |p| p.min_rtt.unwrap_or(p.rtt).as_nanos() as u64 / 2);
        for stream in readable {
            if stream == CONTROL_STREAM {
                // Commands for the application wait in quiche once its queue is well past
                // full (inbox.rs).
                if self.link.lock().inner.events.has_room_for_commands() {
                    self.read_control()?;
                }
            } else {
                self.core
                    .read(stream, &mut self.conn, now, one_way)
                    .map_err(|e| e.to_string())?;
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
        let (core, control_out, conn) = (&mut self.core, &mut self.control_out, &mut self.conn);
        self.link.update(|s| {
            for cmd in commands {
                if let Reply::Close(violation) =
                    core.on_command(cmd, &mut s.inner.events, control_out)
                {
                    let _ = conn.close(true, error_code::NO_ERROR, b"goodbye");
                    if let Some(v) = violation {
                        return Err(v.to_string());
                    }
                }
            }
            Ok(())
        })
    }

    fn fail(&self, message: Error) {
        log::warn!("{message}");
        self.link.update(|s| {
            if s.failure.is_none() {
                s.failure = Some(message);
            }
        });
    }
}
