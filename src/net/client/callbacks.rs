//! A listener called by a sender with several addresses (quicnalusink `paths`, knocks that
//! name one sender ID; docs/PROTOCOL.md, "Reversed dialling"). The first knock is called
//! back as ever, on the listening socket (route 0). Once that call-back went to a knock
//! naming a sender, every route says in HELLO that it is a route of this receiver, and a
//! knock with the same sender ID from another address, while route 0 is connected or
//! connecting, is called back too: another route, on a socket and thread of its own,
//! delivering into its own inbox of the merge (routes.rs), as with `paths` when dialling.
//! A route after the first ends with its connection; the sender knocks again from that
//! address, and the listener calls it back again.

use super::connection::{Connection, RouteOf, Stage};
use super::listen::{heard, HearBack, Waited, Waiting};
use super::routes::Routes;
use super::*;

/// Routes a listener calls back at once, the first included.
pub const MAX_CALLED_ROUTES: usize = 4;

/// A listener's routes: whom they call, and their threads.
pub(super) struct Called {
    /// This receiver's ID in HELLO, the same on each route.
    receiver: u64,
    bonded: bool,
    /// The sender the routes call back (None: one that names none, one route).
    sender: Option<u64>,
    /// Per route after the first (index 0 unused), the address it calls while it runs.
    peers: Vec<Option<SocketAddr>>,
    /// Per route after the first, its thread (index 0: the element's own).
    threads: Vec<Option<NetThread<Queue>>>,
    /// Addresses whose call-back failed, for route 0's doorman to hold off.
    failed: Vec<SocketAddr>,
    /// Told of every route's connects and disconnects.
    on_connection: Arc<dyn Fn(ConnectionEvent) + Send + Sync>,
}

impl Called {
    pub fn new(bonded: bool, on_connection: Arc<dyn Fn(ConnectionEvent) + Send + Sync>) -> Self {
        Called {
            receiver: crate::policy::random_id(),
            bonded,
            sender: None,
            peers: vec![None],
            threads: vec![None],
            failed: Vec::new(),
            on_connection,
        }
    }

    /// Whether a route after the first still runs.
    fn others_up(&self) -> bool {
        self.peers.iter().any(Option::is_some)
    }

    /// Every route's thread, for the client to stop.
    pub fn take_threads(&mut self) -> Vec<NetThread<Queue>> {
        self.threads.iter_mut().filter_map(Option::take).collect()
    }
}

/// `on_connection` made shareable between routes' threads.
pub(super) fn shared(
    on_connection: OnConnection,
) -> (Arc<dyn Fn(ConnectionEvent) + Send + Sync>, OnConnection) {
    let inner = std::sync::Mutex::new(on_connection);
    let arc: Arc<dyn Fn(ConnectionEvent) + Send + Sync> =
        Arc::new(move |e| (inner.lock().unwrap_or_else(|p| p.into_inner()))(e));
    let first = arc.clone();
    (arc, Box::new(move |e| first(e)))
}

/// Listening, route 0 lost: waits for the next knock to call back. While routes after the
/// first are up, only their sender's knocks are answered, as a listener with one route
/// answers no knock while connected.
pub(super) fn await_call(conn: &mut Connection, until: Option<Instant>) -> Waited {
    loop {
        let Some(door) = conn.door.as_mut() else {
            return Waited::Stopping;
        };
        let waiting = Waiting {
            endpoint: &mut conn.endpoint,
            link: &conn.link,
            buf: &mut conn.buf,
            token: &conn.settings.token,
            counters: &mut conn.core.counters,
            stats: &mut conn.settings.stats,
        };
        let call = match waiting.wait(door, until) {
            Waited::Knock(call) => call,
            other => return other,
        };
        let busy = conn
            .link
            .lock()
            .inner
            .called
            .as_ref()
            .is_some_and(|c| c.others_up() && c.sender != call.sender);
        if !busy {
            return Waited::Knock(call);
        }
        log::debug!(
            "{} called, but this receiver's routes serve another sender",
            call.to
        );
    }
}

impl Connection {
    /// Listening: this connection (route 0, made to `call.to`) calls back `call`. With a
    /// sender ID it is a route of this receiver (a new sender's routes start afresh);
    /// without one, the only connection.
    pub(super) fn call_back(&mut self, call: Call) {
        let (queue_len, latency) = (self.settings.queue_len, self.settings.latency);
        let (waker, resumed) = (self.endpoint.waker.clone(), self.resumed);
        let mut ended = Vec::new();
        let route = self.link.update(|s| {
            let q = &mut s.inner;
            let called = q.called.as_mut()?;
            let Some(sender) = call.sender else {
                called.sender = None;
                q.routes = None;
                return None;
            };
            // Alone, route 0 starts the merge afresh, as one connection would: at the
            // sender's cached group or next keyframe, after a gap. The other routes' slots
            // go, their threads ended.
            if called.sender != Some(sender) || q.routes.is_none() || !called.others_up() {
                called.sender = Some(sender);
                called.peers.truncate(1);
                ended.extend(called.threads.drain(1..).flatten());
                let mut routes = Routes::new(1, queue_len, latency);
                routes.wakers = vec![waker];
                if let Some(old) = q.routes.as_ref().filter(|_| resumed) {
                    routes.merge.resumed(old.merge.counters);
                }
                q.routes = Some(routes);
            }
            Some(RouteOf {
                index: 0,
                hello: Route {
                    receiver: called.receiver,
                    index: 0,
                },
                bonded: called.bonded,
            })
        });
        for thread in ended {
            thread.join();
        }
        self.route = route;
        self.core
            .set_routed(route.is_some(), route.is_some_and(|r| r.bonded));
    }

    /// Listening, a knock from `from` (`len` bytes) while this connection (route 0) calls
    /// back or is connected: more allowance for the call-back if from its address, another
    /// route if from another of the same sender's, else the doorman's for later.
    pub(super) fn knocked(&mut self, knock: Knock, from: SocketAddr, len: usize, now: Instant) {
        let valid = matches!(knock, Knock::Valid { .. });
        if let Some(h) = &mut self.hear_back {
            // The caller knocks again while we try to reach it: each knock lets the
            // call-back send as much again.
            if from == self.settings.peer && valid {
                h.allowance += AMPLIFICATION * len;
                return;
            }
        }
        let another = match knock {
            Knock::Valid {
                sender: Some(sender),
            } if from != self.settings.peer && self.route.is_some() => {
                Some(sender).filter(|&sender| self.answers(sender, from))
            }
            _ => None,
        };
        let failed = self.link.update(|s| {
            let called = s.inner.called.as_mut();
            called
                .map(|c| std::mem::take(&mut c.failed))
                .unwrap_or_default()
        });
        let Some(door) = self.door.as_mut() else {
            return;
        };
        for to in failed {
            door.failed(now, to);
        }
        let Some(sender) = another else {
            heard(door, knock, from, now, &mut self.core.counters);
            return;
        };
        if !door.knocked(now, from, Some(sender)) {
            log::debug!("ignoring a knock from {from} (held off)");
            self.core.counters.knocks_refused += 1;
            return;
        }
        // Called back now, not when route 0 next waits.
        door.connected(from);
        self.core.counters.knocks += 1;
        if let Err(e) = self.call_route(from) {
            log::warn!("cannot call {from} back as another route: {e}");
        }
    }

    /// Whether a knock from `from` naming `sender` is another route to call back: route 0's
    /// sender, an address no route calls, and room for one more.
    fn answers(&self, sender: u64, from: SocketAddr) -> bool {
        let shared = self.link.lock();
        let Some(called) = shared.inner.called.as_ref() else {
            return false;
        };
        called.sender == Some(sender)
            && !called.peers.contains(&Some(from))
            && called.peers.iter().filter(|p| p.is_some()).count() + 1 < MAX_CALLED_ROUTES
    }

    /// Calls `to` back as another route, on a socket and thread of its own.
    fn call_route(&mut self, to: SocketAddr) -> Result<(), Error> {
        let endpoint = Endpoint::bind(SocketAddr::new(self.endpoint.local.ip(), 0))?;
        let waker = endpoint.waker.clone();
        let (queue_len, enter) = (self.settings.queue_len, self.settings.enter.clone());
        // The slot: a free one, else a new one; its old thread ended (join it unlocked).
        let placed = self.link.update(|s| {
            let q = &mut s.inner;
            let (called, routes) = (q.called.as_mut()?, q.routes.as_mut()?);
            let free = (1..called.peers.len()).find(|&i| called.peers[i].is_none());
            let index = match free {
                Some(i) => {
                    routes.wakers[i] = waker.clone();
                    i
                }
                None => {
                    called.peers.push(None);
                    called.threads.push(None);
                    routes.add(queue_len, waker.clone())
                }
            };
            called.peers[index] = Some(to);
            let hello = Route {
                receiver: called.receiver,
                index: index as u64,
            };
            let route = RouteOf {
                index,
                hello,
                bonded: called.bonded,
            };
            let ended = called.threads[index].take();
            Some((route, called.on_connection.clone(), ended))
        });
        let Some((route, on_connection, ended)) = placed else {
            return Ok(());
        };
        if let Some(thread) = ended {
            thread.join();
        }
        let mut settings = self
            .settings
            .route_copy(to, None, Box::new(move |e| on_connection(e)));
        settings.listen = true;
        let config = client_config(&settings)?;
        let counters = ReceiverCounters::default();
        let mut conn = Connection::new(
            endpoint,
            config,
            self.link.clone(),
            settings,
            None,
            counters,
        )
        .inspect_err(|_| self.free(route.index, None))?;
        conn.route = Some(route);
        conn.core.set_routed(true, route.bonded);
        conn.hear_back = Some(HearBack::new(conn.started));
        log::info!(
            "{to} called too: route {} from {}",
            route.index,
            conn.endpoint.local
        );
        let name = format!("quicnalu-src-route{}", route.index);
        let link = self.link.clone();
        let thread = NetThread::spawn(&name, enter, link, waker, move || drive_route(conn))
            .inspect_err(|_| self.free(route.index, None))?;
        // Stopping meanwhile: the thread is stopped here, not kept.
        let unkept = self.link.update(|s| match s.inner.called.as_mut() {
            Some(called) if !s.shutdown => called.threads[route.index].replace(thread),
            _ => Some(thread),
        });
        drop(unkept);
        Ok(())
    }

    /// Route `index` ended: its slot is free; `failed`: the address of a call-back that
    /// never connected, for the doorman to hold off.
    fn free(&self, index: usize, failed: Option<SocketAddr>) {
        self.link.update(|s| {
            if let Some(called) = s.inner.called.as_mut() {
                called.peers[index] = None;
                called.failed.extend(failed);
            }
            if let Some(routes) = s.inner.routes.as_mut() {
                routes.stats[index] = None;
            }
        });
    }
}

/// Runs a route after the first until its connection ends; then its slot is free, and
/// the sender's next knock from that address calls it back again.
fn drive_route(mut conn: Connection) {
    let outcome = conn.run();
    let index = conn.route.map_or(0, |r| r.index);
    let peer = conn.settings.peer;
    let why = match outcome {
        Outcome::Shutdown => return,
        Outcome::Ended => {
            conn.notify_disconnected("end of stream".into(), false);
            conn.free(index, None);
            return;
        }
        Outcome::Lost(why) | Outcome::Unanswered(why) | Outcome::Fatal(why) => why,
    };
    let failed = if conn.stage == Stage::Connecting {
        conn.core.counters.callbacks_failed += 1;
        log::warn!("call-back to {peer} (route {index}) failed: {why}");
        (conn.settings.on_connection)(ConnectionEvent::CallbackFailed {
            peer: peer.to_string(),
            reason: why.to_string(),
        });
        Some(peer)
    } else {
        log::info!("route {index} to {peer} lost: {why}; its sender knocks again");
        conn.notify_disconnected(why.to_string(), true);
        None
    };
    conn.free(index, failed);
}
