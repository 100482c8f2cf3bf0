//! The sender's networking loop: each turn it receives, lets quiche fire its timers, takes
//! the streaming thread's work, lets the core (crate::sender) serve each receiver and sends,
//! then reaps closed connections and reports. The clock is read once per turn.

use super::*;
use crate::net::paths;
use quiche::PathEvent;

/// The application's side: callbacks on the networking thread, each through the link's
/// gate, and the stats it is handed.
pub(super) struct App {
    pub(super) admit: Box<dyn Fn(&Admission) -> bool + Send>,
    pub(super) on_receiver: Box<dyn Fn(ReceiverEvent) + Send>,
    pub(super) request_keyframe: Box<dyn Fn() + Send>,
    pub(super) on_estimate: Box<dyn Fn(Estimate) + Send>,
    pub(super) reporter: Reporter<SenderStats>,
}

pub(super) struct ServerLoop {
    sockets: Sockets,
    config: quiche::Config,
    link: Arc<Link<Handover>>,
    fanout: Fanout<Conn>,
    /// Connection IDs (ours and the client's original one) to receiver ids.
    ids: HashMap<Vec<u8>, u64>,
    next_id: u64,
    /// The last receive() stopped at its batch limit on a socket.
    unread: bool,
    app: App,
    entry: Entry,
    /// With `mode=caller`: whom to knock at, and when.
    knocking: Option<Knocking>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl ServerLoop {
    pub(super) fn new(
        sockets: Sockets,
        config: quiche::Config,
        link: Arc<Link<Handover>>,
        policy: sender::Policy,
        entry: Entry,
        app: App,
        knocking: Option<Knocking>,
    ) -> Self {
        ServerLoop {
            sockets,
            config,
            link,
            fanout: Fanout::new(policy, (Instant::now(), monotonic_ns())),
            ids: HashMap::new(),
            next_id: 1,
            unread: false,
            app,
            entry,
            knocking,
            buf: vec![0; 65536],
            out: vec![0; config::MAX_DATAGRAM_SIZE],
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut now = Instant::now();
        loop {
            let deadlines: Vec<Option<Instant>> = self
                .fanout
                .receivers()
                .flat_map(|r| {
                    [
                        r.conn().quiche.timeout_instant(),
                        r.conn().outbox.release_at(),
                    ]
                })
                .chain([
                    self.fanout.timeout(now),
                    Some(self.app.reporter.due()),
                    self.knocking.as_ref().and_then(Knocking::due),
                ])
                .collect();
            // Commands left unread in quiche raise no socket event: come straight back.
            let unread = self.unread || self.fanout.receivers().any(|r| r.conn().control_unread);
            if let Err(e) = self.sockets.endpoint.wait(&mut events, deadlines, unread) {
                self.link
                    .update(|s| s.failure = Some(Error::System(format!("poll failed: {e}"))));
                return;
            }
            // The one reading of the clock for this turn.
            now = Instant::now();
            if self.link.lock().shutdown {
                self.shutdown();
                return;
            }
            let readable = if self.unread {
                (0..self.sockets.count()).collect()
            } else {
                self.sockets.readable(&events)
            };
            if !readable.is_empty() {
                self.unread = false;
                for i in readable {
                    self.unread |= !self.receive(i, now);
                }
            }
            for r in self.fanout.receivers_mut() {
                r.conn_mut().quiche.on_timeout();
            }
            self.take_work();
            for id in self.fanout.ids() {
                self.serve(id, now);
            }
            if self.fanout.poll_keyframe(now) {
                (self.app.request_keyframe)();
            }
            if let Some(estimate) = self.fanout.estimate(now) {
                (self.app.on_estimate)(estimate);
            }
            self.reap();
            self.knock(now);
            self.report(now);
            self.publish(now);
            let blocked = self.fanout.receivers().any(|r| r.conn().outbox.blocked());
            self.sockets.watch_writable(blocked);
        }
    }

    /// With `mode=caller`, knocks at the listening receiver from each socket no receiver
    /// is connected or connecting on.
    fn knock(&mut self, now: Instant) {
        let Some(knocking) = &mut self.knocking else {
            return;
        };
        let fanout = &self.fanout;
        knocking.knock(&self.sockets, now, |local| {
            fanout
                .receivers()
                .any(|r| r.conn().quiche.path_stats().any(|p| p.local_addr == local))
        });
    }

    /// Reads up to a batch of datagrams from socket `i`; returns whether it was drained.
    fn receive(&mut self, i: usize, now: Instant) -> bool {
        let mut batch = RecvBatch::default();
        loop {
            let (socket, local) = self.sockets.get(i);
            let Some(d) = batch.next_on(socket, &mut self.buf) else {
                break;
            };
            for range in d.ranges() {
                let info = quiche::RecvInfo {
                    from: d.from,
                    to: local,
                };
                self.receive_one(range, i, info, now);
            }
        }
        batch.drained()
    }

    /// Hands one datagram, `buf[range]`, that came in on socket `i`, to its connection, or
    /// accepts a new one.
    fn receive_one(
        &mut self,
        range: std::ops::Range<usize>,
        i: usize,
        info: quiche::RecvInfo,
        now: Instant,
    ) {
        let (len, from) = (range.len(), info.from);
        let packet = &mut self.buf[range];
        let Ok(hdr) = quiche::Header::from_slice(packet, quiche::MAX_CONN_ID_LEN) else {
            return;
        };
        let id = match self.ids.get(hdr.dcid.as_ref()) {
            Some(id) => *id,
            None => {
                if !gate::may_answer(len) {
                    log::debug!("dropping a {len}-byte datagram from {from}");
                    return;
                }
                let socket = self.sockets.get(i).0;
                let entered =
                    self.entry
                        .accept(&hdr, info, socket, &mut self.config, &self.fanout, now);
                let conn = match entered {
                    Some(Entered::Opened(conn)) => conn,
                    Some(Entered::Refused(conn)) => {
                        refuse_token(conn, packet, info, socket, &mut self.out);
                        return;
                    }
                    None => return,
                };
                let id = self.next_id;
                self.next_id += 1;
                log::info!("receiver {id}: connecting from {from} to {}", info.to);
                self.ids.insert(conn.source_id().to_vec(), id);
                self.ids.insert(hdr.dcid.to_vec(), id);
                let conn = Conn {
                    quiche: conn,
                    control_in: CommandDecoder::new(self.entry.limits.command_size),
                    control_unread: false,
                    outbox: Outbox::new(self.sockets.endpoint.offload),
                };
                self.fanout.add(id, conn, from, now);
                id
            }
        };
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        let conn = &mut r.conn_mut().quiche;
        let taken = conn.stats().recv;
        if let Err(e) = conn.recv(packet, info) {
            log::debug!("receiver {id}: recv: {e}");
        }
        // Only a packet quiche took is news from the receiver: anyone who saw its
        // connection ID can send one that does not decrypt (quiche drops it quietly), and
        // must not keep a receiver that went quiet counted as there.
        if conn.stats().recv != taken && self.fanout.heard_from(id, now) {
            if let Some(r) = self.fanout.get_mut(id) {
                let _ = r.conn_mut().quiche.send_ack_eliciting();
            }
        }
    }

    fn take_work(&mut self) {
        let work = self.link.update(|s| s.inner.take_work());
        for item in work {
            match item {
                Work::Caps(caps) => self.fanout.set_caps(caps),
                Work::Frame(frame, queued, queued_ns) => {
                    self.fanout.push_frame(frame, queued, queued_ns)
                }
                Work::Command {
                    to,
                    structure,
                    in_stream,
                } => self.fanout.push_command(to, structure, in_stream),
                Work::Eos => self.fanout.end_of_stream(),
                Work::KeyframesAnswered(answered) => self.fanout.keyframes_answered(answered),
            }
        }
    }

    /// Reads the receiver's control stream, lets the core decide and write, and sends
    /// packets.
    fn serve(&mut self, id: u64, now: Instant) {
        self.fanout.check_hello(id, now);
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        let mut wrote_media = false;
        if r.conn().quiche.is_established() {
            self.follow_paths(id);
            let Some(r) = self.fanout.get_mut(id) else {
                return;
            };
            let (commands, violation) = r.conn_mut().read_control(&mut self.buf);
            self.fanout.receive_commands(id, commands, now);
            if let Some(why) = violation {
                self.fanout.violation(id, &why.to_string());
            }
            self.fanout.answer(id, now, &mut |a| (self.app.admit)(a));
            // The handlers run before the receiver is described or written to.
            self.dispatch();
            wrote_media = self.fanout.serve(id, now);
        }
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        let repeats = r.repeats_repairs();
        r.conn_mut().outbox.repeat.set(repeats);
        let c = r.conn_mut();
        c.outbox.send_all(&mut c.quiche, &self.sockets);
        r.after_send(wrote_media);
        loop {
            let idle = r.conn().outbox.release_at().is_none();
            if !r.probe(now, idle) {
                break;
            }
            let c = r.conn_mut();
            let _ = c.quiche.send_ack_eliciting();
            c.outbox.send_all(&mut c.quiche, &self.sockets);
        }
    }

    /// Keeps up with a receiver that changes address: offers it spare connection IDs to
    /// move with (and routes them to it), forgets those it retired, and takes a path quiche
    /// validated and moved to as the receiver's address. quiche itself follows the
    /// packets: it sends where they now come from, validating the path as RFC 9000 (9.3)
    /// says.
    fn follow_paths(&mut self, id: u64) {
        let Some(r) = self.fanout.get_mut(id) else {
            return;
        };
        let conn = &mut r.conn_mut().quiche;
        for cid in paths::offer_spares(conn) {
            self.ids.insert(cid, id);
        }
        while let Some(cid) = conn.retired_scid_next() {
            self.ids.remove(cid.as_ref());
        }
        let mut moved = None;
        while let Some(event) = conn.path_event_next() {
            match event {
                PathEvent::New(_, from) => log::debug!("receiver {id}: packets from {from}"),
                PathEvent::FailedValidation(_, from) => {
                    log::debug!("receiver {id}: {from} did not answer path validation")
                }
                PathEvent::PeerMigrated(_, to) => moved = Some(to),
                _ => {}
            }
        }
        if let Some(to) = moved {
            log::info!("receiver {id}: moved from {} to {to}", r.peer());
            let conn = &mut r.conn_mut().quiche;
            paths::release_stranded(conn, to, &self.sockets, &mut self.buf);
            r.moved(to);
            self.app.reporter.force();
        }
    }

    /// Hands the core's receiver events to the application, keeping the list of served
    /// receivers true first, so that send-command from a handler finds the receiver.
    fn dispatch(&mut self) {
        for event in self.fanout.take_events() {
            match &event {
                ReceiverEvent::Connected { id, .. } => {
                    self.link.update(|s| s.inner.served.push(*id));
                    self.app.reporter.force();
                }
                ReceiverEvent::Disconnected { id, .. } => {
                    self.link.update(|s| s.inner.served.retain(|x| x != id));
                    self.app.reporter.force();
                }
                ReceiverEvent::Rejected { .. } => self.app.reporter.force(),
                ReceiverEvent::Command { .. } => {}
            }
            (self.app.on_receiver)(event);
        }
    }

    fn reap(&mut self) {
        let closed: Vec<u64> = self
            .fanout
            .receivers()
            .filter(|r| r.conn().quiche.is_closed())
            .map(|r| r.id())
            .collect();
        for id in closed {
            let Some(why) = self
                .fanout
                .get(id)
                .map(|r| ending::receiver_gone(&r.conn().quiche))
            else {
                continue;
            };
            if let Some(r) = self.fanout.remove(id, why.clone()) {
                log::info!("receiver {id} ({}): {why}", r.peer());
                self.ids.retain(|_, v| *v != id);
                self.app.reporter.force();
            }
        }
        self.dispatch();
    }

    fn report(&mut self, now: Instant) {
        let fanout = &self.fanout;
        if let Some(stats) = self.app.reporter.poll(now, || fanout.stats(now)) {
            self.link.update(|s| s.inner.stats = stats);
        }
    }

    fn publish(&mut self, now: Instant) {
        let pressure = self.fanout.pressure(now);
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
            s.inner.queued_bytes = queued + pressure.backlog;
            s.inner.ready_receivers = pressure.ready;
            s.inner.drained = pressure.drained;
        });
    }

    /// Closes every connection. The receivers served are told to the stopping thread
    /// (Server::stop), which reports them: no callback runs here any more.
    fn shutdown(&mut self) {
        let farewells = self.fanout.shutdown();
        for r in self.fanout.receivers_mut() {
            let c = r.conn_mut();
            c.outbox.send_all_now(&mut c.quiche, &self.sockets);
        }
        self.link.update(|s| s.inner.farewells = farewells);
    }
}
