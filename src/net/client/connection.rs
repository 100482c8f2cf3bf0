//! One connection's loop on the receiver's networking thread: the handshake and the
//! certificate check, HELLO, then each turn receive, let the core read and deliver, send;
//! until the connection ends and says why (an [`Outcome`] for the reconnect policy).

use super::listen::{Allowed, HearBack};
use super::*;
use crate::receiver::merge::LIVE_WITHIN;
use crate::stats::RouteStats;

/// Where one connection stands.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
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

/// With `paths`: which route this connection is, and what its HELLO says of it.
#[derive(Clone, Copy)]
pub(super) struct RouteOf {
    pub index: usize,
    pub hello: Route,
    pub bonded: bool,
}

pub(super) struct Connection {
    pub(super) endpoint: Endpoint,
    pub(super) config: quiche::Config,
    pub(super) conn: quiche::Connection,
    pub(super) link: Arc<Link<Queue>>,
    pub(super) settings: ClientSettings,
    pub(super) started: Instant,
    /// How long this attempt may take to connect.
    pub(super) answer_within: Duration,
    /// This connection replaces a lost one.
    pub(super) resumed: bool,
    pub(super) stage: Stage,
    /// Set when retrying cannot help.
    pub(super) fatal: Option<Error>,
    /// The groups, and what becomes of their frames.
    pub(super) core: Reassembly,
    pub(super) control_in: CommandDecoder,
    pub(super) control_out: Vec<u8>,
    /// Keyframe requests, probes and keepalives: when to send them.
    pub(super) signals: Signals,
    /// The last receive() stopped at its batch limit.
    pub(super) unread: bool,
    /// The last turn stopped reading the control stream at the cap (control.rs).
    pub(super) control_unread: bool,
    pub(super) outbox: Outbox,
    pub(super) buf: Vec<u8>,
    /// Listening: which knocks to answer next (None when dialling).
    pub(super) door: Option<Doorman>,
    /// Listening: this call-back has not heard from the knock's source yet.
    pub(super) hear_back: Option<HearBack>,
    /// With `paths`: which route this is (None: the only one).
    pub(super) route: Option<RouteOf>,
    /// When a packet last came from the sender (CLOCK_MONOTONIC ns).
    heard_ns: u64,
}

impl Connection {
    /// `retry`: this replaces a lost connection and must answer within that long.
    pub(super) fn new(
        endpoint: Endpoint,
        mut config: quiche::Config,
        link: Arc<Link<Queue>>,
        settings: ClientSettings,
        retry: Option<Duration>,
        counters: ReceiverCounters,
    ) -> Result<Connection, Error> {
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
        Ok(Connection {
            endpoint,
            config,
            conn,
            link,
            answer_within: retry.unwrap_or(settings.connect_timeout),
            resumed,
            stage: Stage::Connecting,
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
            route: None,
            heard_ns: 0,
        })
    }

    /// Where this connection's core hands its events.
    pub(super) fn index(&self) -> usize {
        self.route.map_or(0, |r| r.index)
    }

    /// Whether this connection should carry what the receiver sends (keyframe requests,
    /// commands): its only route, or a route that heard from the sender lately.
    fn carries_requests(&self) -> bool {
        let Some(route) = self.route else {
            return true;
        };
        let freshest = self
            .link
            .lock()
            .inner
            .routes
            .as_ref()
            .is_some_and(|r| r.merge.freshest(route.index));
        self.stage != Stage::Connecting && self.heard_lately() && freshest
    }

    /// Whether the sender was heard from within LIVE_WITHIN.
    fn heard_lately(&self) -> bool {
        monotonic_ns().saturating_sub(self.heard_ns) <= LIVE_WITHIN.as_nanos() as u64
    }

    /// Runs this connection until it ends.
    pub(super) fn run(&mut self) -> Outcome {
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
                self.follow_address();
            }
            self.send();
            self.publish_stats(now, true);
        }
    }

    /// A new `stats` snapshot when one is due; `connected`: this connection is current.
    pub(super) fn publish_stats(&mut self, now: Instant, connected: bool) {
        let (conn, mut counters) = (&self.conn, self.core.counters);
        let connection = (connected && conn.is_established()).then(|| ConnectionStats::of(conn));
        let mut routes = Vec::new();
        if let Some(route) = self.route {
            let up = connection.is_some() && self.heard_lately();
            let mine = RouteStats {
                index: route.index as u64,
                peer: self.settings.peer,
                up,
                connection: connection.clone().unwrap_or_default(),
            };
            let mut shared = self.link.lock();
            if let Some(r) = &mut shared.inner.routes {
                r.stats[route.index] = Some(mine);
                routes = r.stats.iter().flatten().cloned().collect();
                // What the element outputs is the merge's.
                let m = r.merge.counters;
                counters.frames_output = m.frames_output;
                counters.frames_dropped += m.frames_dropped;
            }
        }
        let snapshot = self.settings.stats.poll(now, || ClientStats {
            peer: Some(self.settings.peer),
            connection,
            counters,
            routes,
        });
        if let Some(stats) = snapshot {
            self.link.update(|s| s.inner.stats = stats);
        }
    }

    /// Why the closed connection ended, and whether connecting again could help.
    pub(super) fn closed(&mut self, now: Instant) -> Outcome {
        let route = self.index();
        let (core, control_out) = (&mut self.core, &mut self.control_out);
        let ended = self.link.update(|s| {
            if let Some(r) = &mut s.inner.routes {
                r.merge.disconnected(route);
            }
            core.on_closed(now, s.inner.inbox(route), control_out)
        });
        if ended {
            return Outcome::Ended;
        }
        let (peer, conn) = (self.settings.peer, &self.conn);
        let (peer_error, local_error) = (conn.peer_error(), conn.local_error());
        let served = self.stage != Stage::Connecting;
        ending::closed(peer, peer_error, local_error, conn.is_timed_out(), served)
    }

    /// A fresh connection on the same socket: with `window`, replacing a lost one, which
    /// must answer within that long; None: still the first. Gives back the link and the
    /// reason if it cannot even be created.
    pub(super) fn reconnect(
        mut self,
        window: Option<Duration>,
    ) -> Result<Connection, (Arc<Link<Queue>>, Error)> {
        self.rebind_idle();
        let link = self.link.clone();
        let door = self.door;
        let route = self.route;
        let mut next = Connection::new(
            self.endpoint,
            self.config,
            self.link,
            self.settings,
            window,
            self.core.counters,
        )
        .map_err(|e| (link, e))?;
        next.route = route;
        next.core
            .set_routed(route.is_some(), route.is_some_and(|r| r.bonded));
        // Listening, every connection is a call-back to a knock.
        next.hear_back = door.is_some().then(|| HearBack::new(next.started));
        next.door = door;
        Ok(next)
    }

    /// Waits until `t`, dropping stray datagrams; false if the element is stopping.
    pub(super) fn pause_until(&mut self, t: Instant) -> bool {
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
    pub(super) fn report(&mut self, outcome: &Outcome) {
        if self.stage == Stage::Connecting {
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
            Outcome::Fatal(why) if self.stage != Stage::Connecting => {
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

    pub(super) fn notify_disconnected(&mut self, reason: String, reconnecting: bool) {
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
    pub(super) fn send(&mut self) {
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

    pub(super) fn next_deadline(&self) -> Instant {
        if self.conn.is_established() {
            self.signals.keepalive_at()
        } else {
            self.started + self.answer_within
        }
    }

    /// Why the sender's certificate, which TLS accepted, is still not the sender's.
    pub(super) fn certificate_refusal(&self) -> Option<Error> {
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
            .map(Error::from)
    }

    /// Reads up to a batch of datagrams; returns whether the socket was drained.
    pub(super) fn receive(&mut self, now: Instant) -> bool {
        let mut batch = RecvBatch::default();
        let mut got_packet = false;
        while let Some(d) = batch.next(&self.endpoint, &mut self.buf) {
            let info = quiche::RecvInfo {
                from: d.from,
                to: self.endpoint.local,
            };
            for range in d.ranges() {
                if self.door.is_some() {
                    let knock =
                        knock::read(&self.buf[range.clone()], Some(&self.settings.token[..]));
                    if knock != Knock::NotAKnock {
                        self.knocked(knock, d.from, range.len(), now);
                        continue;
                    }
                }
                // Only our connection's packets count as hearing from the sender: not
                // those of an abandoned attempt.
                match self.conn.recv(&mut self.buf[range], info) {
                    Ok(_) => {
                        self.signals.heard(now);
                        got_packet = true;
                        if d.from == self.settings.peer {
                            self.hear_back = None;
                        }
                    }
                    Err(e) => log::debug!("recv: {e}"),
                }
            }
        }
        if got_packet {
            self.heard_ns = monotonic_ns();
        }
        batch.drained()
    }

    pub(super) fn established(&mut self, now: Instant) {
        if self.stage == Stage::Connecting {
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
                let reason = e.to_string();
                let _ = self
                    .conn
                    .close(true, error_code::PROTOCOL_VIOLATION, reason.as_bytes());
                self.fatal = Some(violation(&e));
                return;
            }
            let (route, heard) = (self.index(), self.heard_ns);
            let (core, control_out) = (&mut self.core, &mut self.control_out);
            let progress = self.link.update(|s| {
                if let Some(r) = &mut s.inner.routes {
                    r.merge.heard(route, heard);
                }
                core.deliver(now, s.inner.inbox(route), control_out)
            });
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

    pub(super) fn hello(&mut self, now: Instant) {
        put_preamble(&mut self.control_out, StreamKind::Control);
        let bonded = self.route.is_some_and(|r| r.bonded);
        Command::Hello {
            version: VERSION,
            options: HELLO_TAKES_SHED | if bonded { HELLO_BONDED } else { 0 },
            token: self.settings.token.clone(),
            latency: Some(self.settings.latency.as_nanos() as u64),
            route: self.route.map(|r| r.hello),
        }
        .encode(&mut self.control_out);
        log::info!("connected to {}", self.settings.peer);
        if let Some(door) = &mut self.door {
            door.connected(self.settings.peer);
        }
        self.core.counters.reconnects += u64::from(self.resumed);
        self.stage = Stage::Serving { since: now };
        self.heard_ns = monotonic_ns();
        let route = self.index();
        self.link
            .update(|s| s.inner.inbox(route).push(Event::Connected));
        (self.settings.on_connection)(ConnectionEvent::Connected {
            peer: self.settings.peer.to_string(),
            resumed: self.resumed,
        });
    }

    /// Keyframe requests and commands from the element, probes and keepalives, and the
    /// control stream's bytes as far as quiche takes them.
    pub(super) fn write_control(&mut self, now: Instant) {
        let room = self.control_out.len() < MAX_CONTROL_OUT;
        let carries = self.carries_requests();
        let signals = &mut self.signals;
        let due = self.link.update(|s| {
            let due = signals.turn(now, s.inner.keyframe_wanted && carries, room);
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
            if let Some(r) = s.inner.routes.as_mut().filter(|_| carries) {
                for (seq, offset, len) in r.repairs_out.drain(..) {
                    log::debug!("asking for frame {seq} again, {len} bytes at {offset}");
                    Command::RepairRequest { seq, offset, len }.encode(control_out);
                }
            }
            while carries && control_out.len() < MAX_CONTROL_OUT {
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

    pub(super) fn read_streams(&mut self, now: Instant) -> Result<(), Violation> {
        let mut readable: Vec<u64> = self.conn.readable().collect();
        // Control first: JOIN, which says which frames are catch-up, comes before DESCRIBE,
        // and group streams wait in quiche until DESCRIBE.
        readable.sort_unstable();
        self.control_unread = false;
        let one_way = crate::net::paths::measured(&self.conn)
            .map_or(0, |p| p.min_rtt.unwrap_or(p.rtt).as_nanos() as u64 / 2);
        for stream in readable {
            if stream == CONTROL_STREAM {
                // Commands for the application wait in quiche once its queue is well past
                // full (inbox.rs).
                let route = self.index();
                if self.link.lock().inner.inbox(route).has_room_for_commands() {
                    self.read_control()?;
                }
            } else {
                self.core.read(stream, &mut self.conn, now, one_way)?;
            }
        }
        Ok(())
    }

    pub(super) fn read_control(&mut self) -> Result<(), Violation> {
        let mut commands = Vec::new();
        let conn = &mut self.conn;
        let read = |buf: &mut [u8]| conn.stream_recv(CONTROL_STREAM, buf);
        let stopped =
            control::read_commands(&mut self.control_in, read, &mut self.buf, &mut commands)
                .map_err(Violation::Control)?;
        self.control_unread = stopped == Stopped::Capped;
        let route = self.index();
        let (core, control_out, conn) = (&mut self.core, &mut self.control_out, &mut self.conn);
        self.link.update(|s| {
            for cmd in commands {
                if let Reply::Close(violation) =
                    core.on_command(cmd, s.inner.inbox(route), control_out)
                {
                    let _ = conn.close(true, error_code::NO_ERROR, b"goodbye");
                    if let Some(v) = violation {
                        return Err(v);
                    }
                }
            }
            Ok(())
        })
    }

    /// Fails the element with `message`; with `paths`, only once every route failed
    /// (listening, route 0's failure is the element's).
    pub(super) fn fail(&self, message: Error) {
        log::warn!("{message}");
        let listening = self.door.is_some();
        self.link.update(|s| {
            if let Some(r) = s.inner.routes.as_mut().filter(|_| !listening) {
                r.failed += 1;
                if r.failed < r.inboxes.len() {
                    return;
                }
            }
            if s.failure.is_none() {
                s.failure = Some(message);
            }
        });
    }
}
