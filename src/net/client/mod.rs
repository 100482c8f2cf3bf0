//! The receiver's networking thread: a QUIC client that says HELLO, reads the stream
//! description and the group streams, and hands whole access units to the streaming thread
//! in group order.

use crate::net::capture::Capture;
use crate::net::config::{self, CongestionControl};
use crate::net::link::next_event;
use crate::policy::ending::{self, cannot_create, no_answer, poll_failed, violation, Outcome};
use crate::policy::reconnect::{Backoff, Next, Reconnect};
use crate::protocol::control::{self, command_fits, Stopped, CONTROL_STREAM};
use crate::receiver::inbox::{Event, Inbox, Outgoing};
mod callbacks;
mod connection;
mod listen;
mod migrate;
mod routes;

use callbacks::Called;
use routes::Routes;
pub use routes::{PathMode, RouteTarget};

use connection::Connection;
use listen::{HearBack, Waited, Waiting};

use crate::error::Error;
use crate::media::monotonic_ns;
use crate::net::events::{ConnectionEvent, OnConnection};
use crate::net::known_hosts::KnownHosts;
use crate::net::link::{gated, Enter, Interrupted, Link, NetThread};
use crate::net::socket::{random_cid, Endpoint, Outbox, RecvBatch, SOCKET};
use crate::net::stats::Reporter;
use crate::net::trust::Trust;
use crate::policy::knock::{self, Call, Doorman, Knock, AMPLIFICATION, HEAR_BACK};
use crate::protocol::Route;
use crate::protocol::{
    error_code, put_preamble, Command, CommandDecoder, StreamKind, HELLO_BONDED, HELLO_TAKES_SHED,
    VERSION,
};
use crate::receiver::signals::Signals;
use crate::receiver::{Reassembly, Reply, StreamSource, Violation, MAX_CONTROL_OUT};
use crate::stats::{ClientStats, ConnectionStats, ReceiverCounters};
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
    /// Dialling: the local address to send from (a second modem's); None: any.
    pub bind: Option<IpAddr>,
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
    /// More routes to the same sender (quicnalusrc `paths`); dialling only.
    pub paths: Vec<RouteTarget>,
    pub path_mode: PathMode,
}

struct Queue {
    events: Inbox,
    /// Set by the streaming side; the networking thread sends KEYFRAME_REQUEST.
    keyframe_wanted: bool,
    /// Application commands for the sender, sent once connected.
    commands_out: Outgoing,
    /// The latest `stats` snapshot.
    stats: ClientStats,
    /// With `paths`, or listening to a sender with several addresses: each route's inbox,
    /// merged into one stream (`events` is unused).
    routes: Option<Routes>,
    /// A socket at the new local address the element asked for (migrate.rs), not yet
    /// taken; with `paths`, by the first route.
    rebind: Option<mio::net::UdpSocket>,
    /// Listening: the routes called back, and whom they call.
    called: Option<Called>,
}

impl Queue {
    /// Where route `route`'s core hands its events.
    fn inbox(&mut self, route: usize) -> &mut Inbox {
        match &mut self.routes {
            Some(routes) => &mut routes.inboxes[route],
            None => &mut self.events,
        }
    }
}

/// Handle to a running client; dropping it stops the thread and joins it.
pub struct Client {
    net: NetThread<Queue>,
    /// The local address (the first route's with `paths`); `rebind` moves it.
    local: std::sync::Mutex<SocketAddr>,
    /// With `paths`: the other routes' threads (`net` runs the first).
    routes: Vec<NetThread<Queue>>,
    /// `mode=listener`: routes come as the sender calls (callbacks.rs).
    listening: bool,
}

impl Client {
    /// Binds a socket and starts connecting; failures to connect arrive through
    /// [`Client::next`].
    pub fn start(settings: ClientSettings) -> Result<Client, Error> {
        let config = client_config(&settings)?;
        let bind = if settings.listen {
            settings.peer
        } else {
            SocketAddr::new(settings.bind.unwrap_or(unspecified(settings.peer)), 0)
        };
        let endpoint = Endpoint::bind(bind)?;
        let routes = (!settings.listen && !settings.paths.is_empty()).then(|| {
            let n = settings.paths.len() + 1;
            Routes::new(n, settings.queue_len, settings.latency)
        });
        let link = Arc::new(Link::new(Queue {
            events: Inbox::new(settings.queue_len),
            keyframe_wanted: false,
            commands_out: Outgoing::default(),
            stats: ClientStats::default(),
            routes,
            rebind: None,
            called: None,
        }));
        let waker = endpoint.waker.clone();
        let counters = ReceiverCounters::default();
        // Application code runs through the link's gate, so stopping never waits on it.
        let mut settings = settings;
        settings.on_connection = gated(&link, settings.on_connection);
        settings.stats.wrap_poster(|post| gated(&link, post));
        let enter = settings.enter.clone();
        let local = endpoint.local;
        let settings_listen = settings.listen;
        if !settings.listen && !settings.paths.is_empty() {
            return Self::start_routes(settings, config, endpoint, link);
        }
        let run: Box<dyn FnOnce() + Send> = if settings.listen {
            log::info!("listening on {local} for a calling sender");
            let (every_route, first) = callbacks::shared(std::mem::replace(
                &mut settings.on_connection,
                Box::new(|_| {}),
            ));
            settings.on_connection = first;
            let bonded = settings.path_mode == PathMode::Bonded;
            link.update(|s| s.inner.called = Some(Called::new(bonded, every_route)));
            let link = link.clone();
            Box::new(move || answer_first_caller(endpoint, config, link, settings, counters))
        } else {
            let first = Connection::new(endpoint, config, link.clone(), settings, None, counters)?;
            Box::new(move || drive(first))
        };
        let net = NetThread::spawn("quicnalu-src-net", enter, link, waker, run)?;
        Ok(Client {
            net,
            local: local.into(),
            routes: Vec::new(),
            listening: settings_listen,
        })
    }

    /// With `paths`: a connection per route, each on its own socket and thread, all
    /// handing their events to the link's routes.
    fn start_routes(
        mut settings: ClientSettings,
        config: quiche::Config,
        endpoint: Endpoint,
        link: Arc<Link<Queue>>,
    ) -> Result<Client, Error> {
        let receiver = crate::policy::random_id();
        let bonded = settings.path_mode == PathMode::Bonded;
        let paths = std::mem::take(&mut settings.paths);
        let on_connection: Arc<dyn Fn(ConnectionEvent) + Send + Sync> = {
            let inner = std::sync::Mutex::new(std::mem::replace(
                &mut settings.on_connection,
                Box::new(|_| {}),
            ));
            Arc::new(move |e| (inner.lock().unwrap_or_else(|p| p.into_inner()))(e))
        };
        let shared = |f: &Arc<dyn Fn(ConnectionEvent) + Send + Sync>| -> OnConnection {
            let f = f.clone();
            Box::new(move |e| f(e))
        };
        settings.on_connection = shared(&on_connection);
        let local = endpoint.local;
        let mut firsts = Vec::new();
        let mut wakers = vec![endpoint.waker.clone()];
        let first = Connection::new(
            endpoint,
            config,
            link.clone(),
            settings.route_copy(settings.peer, settings.bind, shared(&on_connection)),
            None,
            ReceiverCounters::default(),
        )?;
        // The first route keeps the element's stats reporter.
        let mut first_settings = settings;
        let mut first = first;
        std::mem::swap(&mut first.settings.stats, &mut first_settings.stats);
        firsts.push(first);
        for target in &paths {
            let any = unspecified(target.peer);
            let endpoint = Endpoint::bind(SocketAddr::new(target.bind.unwrap_or(any), 0))?;
            wakers.push(endpoint.waker.clone());
            let s = first_settings.route_copy(target.peer, target.bind, shared(&on_connection));
            let config = client_config(&s)?;
            let conn = Connection::new(
                endpoint,
                config,
                link.clone(),
                s,
                None,
                ReceiverCounters::default(),
            )?;
            firsts.push(conn);
        }
        link.update(|s| {
            if let Some(r) = &mut s.inner.routes {
                r.wakers = wakers.clone();
            }
        });
        let enter = first_settings.enter.clone();
        let mut threads = Vec::new();
        for (index, mut conn) in firsts.into_iter().enumerate() {
            conn.route = Some(connection::RouteOf {
                index,
                hello: Route {
                    receiver,
                    index: index as u64,
                },
                bonded,
            });
            conn.core.set_routed(true, bonded);
            log::info!(
                "route {index}: {} from {}",
                conn.settings.peer,
                conn.endpoint.local
            );
            let waker = wakers[index].clone();
            let name = format!("quicnalu-src-route{index}");
            threads.push(NetThread::spawn(
                &name,
                enter.clone(),
                link.clone(),
                waker,
                move || drive(conn),
            )?);
        }
        let mut threads = threads.into_iter();
        let net = threads.next().ok_or(Error::System("no route".into()))?;
        Ok(Client {
            net,
            local: local.into(),
            routes: threads.collect(),
            listening: false,
        })
    }
    /// The local address: with `listen`, where callers knock.
    pub fn local_addr(&self) -> SocketAddr {
        *self.local.lock().unwrap_or_else(|e| e.into_inner())
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
        self.wake();
    }

    /// Wakes every route's thread.
    fn wake(&self) {
        self.net.wake();
        for r in &self.routes {
            r.wake();
        }
        routes::wake_routes(&self.net);
    }

    /// Sends an application command (a serialized GstStructure) to the sender, once
    /// connected. False if it is longer than the sender takes, or control::MAX_COMMANDS_WAITING
    /// of commands wait already (not connected, or the sender does not read them).
    pub fn send_command(&self, structure: String) -> bool {
        if !command_fits(&structure) {
            return false;
        }
        let queued = self.net.update(|s| s.inner.commands_out.offer(structure));
        self.wake();
        queued
    }

    /// Waits for the next event. Events queued before a failure are delivered first.
    pub fn next(&self) -> Result<Event, Interrupted> {
        if self.routes.is_empty() && !self.listening {
            next_event(&self.net, |q| &mut q.events)
        } else {
            routes::next_merged(&self.net)
        }
    }
}

impl ClientSettings {
    /// These settings for one route: to `peer` from `bind`, without the element's stats
    /// reporter (the first route keeps it).
    fn route_copy(
        &self,
        peer: SocketAddr,
        bind: Option<IpAddr>,
        on_connection: OnConnection,
    ) -> Self {
        ClientSettings {
            peer,
            listen: false,
            bind,
            server_name: self.server_name.clone(),
            trust: self.trust.clone(),
            connect_timeout: self.connect_timeout,
            congestion_control: self.congestion_control,
            max_frame_size: self.max_frame_size,
            token: self.token.clone(),
            queue_len: self.queue_len,
            latency: self.latency,
            reconnect: self.reconnect,
            on_connection,
            max_command_size: self.max_command_size,
            capture: self.capture.clone(),
            stats: Reporter::new(None, Box::new(|_| {})),
            enter: self.enter.clone(),
            paths: Vec::new(),
            path_mode: self.path_mode,
        }
    }
}

/// quiche's configuration for a client with `settings`.
fn client_config(settings: &ClientSettings) -> Result<quiche::Config, Error> {
    let (verify, ca_file) = settings.trust.chain();
    let mut config = config::client(
        verify,
        ca_file,
        settings.congestion_control,
        settings.connect_timeout.max(MIN_IDLE_TIMEOUT),
    )?;
    if settings.capture.logs_keys() {
        config.log_keys();
    }
    Ok(config)
}

/// The unspecified address of `peer`'s family: bind to any interface.
fn unspecified(peer: SocketAddr) -> IpAddr {
    if peer.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    }
}

impl Drop for Client {
    /// Listening, the routes after the first run on threads the first started: they stop
    /// with it.
    fn drop(&mut self) {
        let threads = self.net.update(|s| {
            s.shutdown = true;
            s.inner
                .called
                .as_mut()
                .map(Called::take_threads)
                .unwrap_or_default()
        });
        drop(threads);
    }
}

/// Runs connections until the element stops: the first, then, after a lost one, new
/// attempts as the reconnect policy (backoff.rs) says (listening: each when the sender
/// calls again), each resuming at the next keyframe.
fn drive(mut conn: Connection) {
    let peer = conn.settings.peer;
    let mut backoff = if conn.door.is_some() {
        Backoff::listening(peer, conn.settings.reconnect)
    } else {
        Backoff::new(peer, conn.settings.reconnect)
    };
    let mut served = false;
    // Listening: the knock the next connection calls back.
    let mut called = None;
    loop {
        let outcome = conn.run();
        conn.report(&outcome);
        let established = match conn.stage {
            connection::Stage::Serving { since } => Some(since),
            connection::Stage::Connecting => None,
        };
        served |= established.is_some();
        let window = match backoff.next(outcome, Instant::now(), conn.started, established) {
            Next::Stop => break,
            Next::Fail(why) => {
                conn.fail(why);
                break;
            }
            Next::AwaitCaller { until } => {
                if conn.door.is_none() {
                    break;
                }
                let call = match callbacks::await_call(&mut conn, until) {
                    Waited::Knock(call) => call,
                    Waited::Stopping => return,
                    Waited::Expired => {
                        conn.fail(backoff.expired());
                        break;
                    }
                };
                log::info!("{} called: connecting to it", call.to);
                conn.settings.peer = call.to;
                called = Some(call);
                backoff.set_peer(call.to);
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
            Ok(mut next) => {
                if let Some(call) = called.take() {
                    next.call_back(call);
                }
                next
            }
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
    let call = match waiting.wait(&mut door, None) {
        Waited::Knock(call) => call,
        Waited::Stopping | Waited::Expired => return,
    };
    log::info!("{} called: connecting to it", call.to);
    settings.peer = call.to;
    match Connection::new(endpoint, config, link.clone(), settings, None, counters) {
        Ok(mut first) => {
            first.call_back(call);
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
