//! The sender's networking thread: a QUIC server that accepts receivers and carries out
//! what the fan-out core (fanout/) decides: the socket, quiche, Retry and the limits on
//! connections, and the loop that feeds the core packets' news, the streaming thread's
//! work and the clock.

use crate::error::Error;
use crate::media::monotonic_ns;
use crate::net::capture::Capture;
use crate::net::config::{self, CongestionControl, Identity};
use crate::net::conn::Conn;
use crate::net::entry::{refuse_token, Entered, Entry, Limits};
use crate::net::link::{gated, Enter, Interrupted, Link, NetThread};
use crate::net::retry::AddressValidator;
use crate::net::socket::{Endpoint, Outbox, RecvBatch};
use crate::net::stats::Reporter;
use crate::net::tls::Fingerprint;
use crate::policy::ending;
use crate::policy::gate;
use crate::policy::knock::Knocker;
use crate::policy::ratelimit::{self, Bucket};
use crate::protocol::control::{command_fits, Waiting};
use crate::protocol::CommandDecoder;
use crate::sender::budget;
use crate::sender::join::JoinMode;
use crate::sender::{self, Fanout, MAX_BACKLOG};
use crate::stats::SenderStats;
use mio::Events;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::frame::Frame;
use crate::sender::{Admission, Estimate, ReceiverEvent};

mod serving;
mod sockets;
use serving::{App, ServerLoop};
use sockets::{Knocking, Sockets};

pub struct ServerSettings {
    /// Where to listen; with `call`, the local address to send from.
    pub addr: SocketAddr,
    /// A listening receiver to knock at while no receiver is connected (`mode=caller`,
    /// knock.rs): it connects back to us.
    pub call: Option<SocketAddr>,
    /// With `call`: more local addresses to knock from (a second modem's), each its own
    /// socket; the listener connects back over each, as routes of one receiver.
    pub paths: Vec<SocketAddr>,
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
    /// Run first on the networking thread.
    pub enter: Enter,
}

enum Work {
    Caps(String),
    /// With when it was queued, as an Instant and as CLOCK_MONOTONIC ns: its deadline and
    /// its send time count from then.
    Frame(Frame, Instant, u64),
    /// An application command for receiver `to` (None: all); `in_stream`: pinned before the
    /// frame this many after the next one; None: at once.
    Command {
        to: Option<u64>,
        structure: String,
        in_stream: Option<u64>,
    },
    Eos,
    /// Whether upstream took the last keyframe request.
    KeyframesAnswered(bool),
}

/// What the streaming thread hands the networking thread, and what it reads back.
#[derive(Default)]
struct Handover {
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
    net: NetThread<Handover>,
    local: SocketAddr,
    fingerprint: Fingerprint,
}

impl Server {
    /// Binds the socket, loads the certificate and starts the networking thread.
    pub fn start(settings: ServerSettings) -> Result<Server, Error> {
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
        let link = Arc::new(Link::new(Handover::default()));
        // Application code runs through the link's gate, so stopping never waits on it.
        let (admit, gate) = (settings.admit, link.clone());
        let (request, keyframe_gate) = (settings.request_keyframe, link.clone());
        let mut reporter = settings.stats;
        reporter.wrap_poster(|post| gated(&link, post));
        let app = App {
            // While stopping nobody is asked: admitted, the receiver is closed with
            // NO_ERROR at once and connects again to a restarted sender.
            admit: Box::new(move |a| gate.callback(|| admit(a)).unwrap_or(true)),
            on_receiver: gated(&link, settings.on_receiver),
            request_keyframe: Box::new(move || {
                keyframe_gate.callback(&request);
            }),
            on_estimate: gated(&link, settings.on_estimate),
            reporter,
        };
        let policy = sender::Policy {
            max_receivers: settings.max_receivers,
            token: settings.token,
            join_mode: settings.join_mode,
            budget: settings.budget,
            keyframe_interval: settings.keyframe_interval,
        };
        let endpoint = Endpoint::bind(settings.addr)?;
        let local = endpoint.local;
        let o = endpoint.offload;
        log::info!("listening on {local} (UDP GSO {}, GRO {})", o.gso, o.gro);
        if let Some(warning) = o.buffer_warning() {
            log::warn!("{warning}");
        }
        let waker = endpoint.waker.clone();
        let sockets = Sockets::bind(endpoint, &settings.paths)?;
        for i in 1..sockets.count() {
            log::info!("and on {}", sockets.get(i).1);
        }
        let thread_link = link.clone();
        let enter = settings.enter;
        let net = NetThread::spawn("quicnalu-sink-net", enter, link, waker, move || {
            let entry = Entry {
                validator,
                limits,
                capture: settings.capture,
                refusals: Bucket::new(ratelimit::TOKEN_REFUSALS, Instant::now()),
                out: vec![0; config::MAX_DATAGRAM_SIZE],
            };
            // One sender ID for the knocks of every socket: the listener takes them for one
            // sender's routes. A sender with one socket names none, so that its knocks, and
            // the listener's connection, are as they were before routes.
            let sender = if sockets.count() > 1 {
                crate::policy::random_id()
            } else {
                0
            };
            let knocking = settings.call.map(|to| Knocking {
                to,
                knockers: (0..sockets.count())
                    .map(|_| Knocker::new(policy.token.clone(), sender))
                    .collect(),
            });
            ServerLoop::new(sockets, config, thread_link, policy, entry, app, knocking).run()
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
    /// Whether upstream took the last keyframe request (an encoder handled the event, or
    /// nothing did): a group may run late rather than wait for a keyframe (sender/rescue).
    pub fn keyframes_answered(&self, answered: bool) {
        self.push(Work::KeyframesAnswered(answered), 0);
    }

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
    pub fn send(&self, frame: Frame) {
        let len = frame.data.as_ref().as_ref().len();
        self.push(Work::Frame(frame, Instant::now(), monotonic_ns()), len);
    }

    /// Sends an application command (a serialized GstStructure) at once to receiver `to`,
    /// or to every receiver (None). Returns false when no such receiver is served, the
    /// command is longer than a receiver takes, or MAX_COMMANDS_WAITING bytes of commands
    /// wait for the networking thread already.
    pub fn send_command(&self, to: Option<u64>, structure: String) -> bool {
        if !command_fits(&structure) {
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
        if !command_fits(&structure) {
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

impl Handover {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::control::MAX_COMMANDS_WAITING;

    fn command(len: usize) -> Work {
        Work::Command {
            to: None,
            structure: "x".repeat(len),
            in_stream: None,
        }
    }

    #[test]
    fn commands_handed_over_are_bounded_in_bytes() {
        let mut status = Handover::default();
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
