//! One connection to a relay, on the element's networking thread: the QUIC handshake on
//! our quiche config (moq-lite's ALPNs), the certificate check, then a moq-net session
//! over [`quic::Session`], and the loop that steps quiche, moq-net's drivers and the
//! element's own task (publishing or subscribing) until one of them ends.
//!
//! moq-net never blocks and never reads the clock: its drivers are polled with `now` and
//! wake the loop through a waker that fires our mio waker. The element's task is an async
//! block, polled here the same way; it needs no runtime.

use super::quic::{self, Wire};
use super::RelayUrl;
use crate::error::Error;
use crate::net::config::{self, CongestionControl};
use crate::net::events::{ConnectionEvent, OnConnection};
use crate::net::known_hosts::KnownHosts;
use crate::net::socket::{random_cid, Endpoint, Outbox, RecvBatch};
use crate::net::trust::Trust;
use moq_net::kio;
use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// moq-lite over raw QUIC, newest first: what moq-relay 0.17 speaks (README.md pins it).
pub const ALPNS: [&[u8]; 2] = [b"moq-lite-06", b"moq-lite-05"];

/// Where the relay is and how to reach it.
#[derive(Clone, Debug)]
pub struct Dial {
    pub url: RelayUrl,
    pub peer: SocketAddr,
    pub trust: Trust,
    /// For the handshake, and how long the relay may stay silent.
    pub timeout: Duration,
    pub congestion_control: CongestionControl,
}

impl Dial {
    pub fn bind(&self) -> Result<Endpoint, Error> {
        let any: IpAddr = if self.peer.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        Endpoint::bind(SocketAddr::new(any, 0)).map_err(Error::from)
    }

    fn config(&self) -> Result<quiche::Config, Error> {
        let (verify, ca_file) = self.trust.chain();
        let mut config = config::client(
            verify,
            ca_file,
            self.congestion_control,
            self.timeout.max(Duration::from_secs(1)),
        )?;
        config
            .set_application_protos(&ALPNS)
            .map_err(|e| Error::Setup(format!("cannot set ALPN: {e}")))?;
        // The relay opens a stream for each request and each group it forwards.
        config.set_initial_max_streams_bidi(100);
        config.set_initial_max_streams_uni(1000);
        Ok(config)
    }
}

/// Wakes the networking thread's poll.
struct MioWake(Arc<mio::Waker>);

impl Wake for MioWake {
    fn wake(self: Arc<Self>) {
        let _ = self.0.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.0.wake();
    }
}

/// What the loop asks of the element between turns.
pub trait Watch {
    /// The element is stopping: close and return.
    fn stopping(&mut self) -> bool;
    /// Called once per turn with the connection.
    fn turn(&mut self, wire: &mut Wire) -> Step;
}

/// What the element says after a turn.
pub enum Step {
    /// Go on; look again by this time at the latest.
    Wait(Option<Instant>),
    /// End the session cleanly (the publisher's end of stream is delivered).
    Done,
}

/// A connection being made, or made.
pub struct Connection<'a> {
    endpoint: &'a mut Endpoint,
    outbox: Outbox,
    buf: Vec<u8>,
    wire: Rc<RefCell<Wire>>,
    waker: Waker,
    timer: Option<Instant>,
}

impl<'a> Connection<'a> {
    /// Connects to the relay and checks its certificate; a relay trusted now for the first
    /// time is told to `on_event`.
    pub fn open(
        dial: &Dial,
        endpoint: &'a mut Endpoint,
        watch: &mut dyn Watch,
        on_event: &OnConnection,
    ) -> Result<Option<Connection<'a>>, Error> {
        let mut config = dial.config()?;
        let scid = random_cid();
        let name = Some(dial.url.host.as_str()).filter(|h| h.parse::<IpAddr>().is_err());
        let conn = quiche::connect(
            name,
            &quiche::ConnectionId::from_ref(&scid),
            endpoint.local,
            dial.peer,
            &mut config,
        )
        .map_err(|e| Error::Setup(format!("cannot create a QUIC connection: {e}")))?;
        let waker = Waker::from(Arc::new(MioWake(endpoint.waker.clone())));
        let mut c = Connection {
            outbox: Outbox::new(endpoint.offload),
            endpoint,
            buf: vec![0; 65536],
            wire: Wire::new(conn),
            waker,
            timer: None,
        };
        let give_up = Instant::now() + dial.timeout;
        let mut events = mio::Events::with_capacity(64);
        loop {
            if watch.stopping() {
                return Ok(None);
            }
            let now = Instant::now();
            c.receive(now);
            let mut wire = c.wire.borrow_mut();
            if wire.conn.is_established() {
                let mut first_use = |known: &KnownHosts, fingerprint| {
                    on_event(ConnectionEvent::FirstUse {
                        peer: dial.url.to_string(),
                        fingerprint,
                        known_hosts: known.clone(),
                    })
                };
                let der = wire.conn.peer_cert();
                if let Some(why) = dial.trust.refusal(dial.peer, der, &mut first_use) {
                    // TLS alert 42, bad_certificate (RFC 9001, 4.8).
                    let _ = wire.conn.close(false, 0x100 + 42, b"certificate refused");
                    c.outbox.send_all_now(&mut wire.conn, &c.endpoint.socket);
                    return Err(why.into());
                }
                drop(wire);
                return Ok(Some(c));
            }
            if wire.conn.is_closed() {
                return Err(handshake_failure(&wire.conn, dial));
            }
            if now >= give_up {
                return Err(Error::Timeout(format!(
                    "no answer from the MoQ relay {} ({}) within {} ms",
                    dial.url,
                    dial.peer,
                    dial.timeout.as_millis()
                )));
            }
            c.outbox.send_all(&mut wire.conn, &c.endpoint.socket);
            drop(wire);
            c.wait(now, &mut events, [Some(give_up)])?;
        }
    }

    /// The turn's receiving: hands quiche what arrived and fires its timer if due at
    /// `now`, then wakes every parked task if anything happened. Returns whether the
    /// socket still holds datagrams (the batch limit stopped it).
    fn receive(&mut self, now: Instant) -> bool {
        let mut wire = self.wire.borrow_mut();
        let mut heard = false;
        let mut batch = RecvBatch::default();
        while let Some(d) = batch.next(self.endpoint, &mut self.buf) {
            let info = quiche::RecvInfo {
                from: d.from,
                to: self.endpoint.local,
            };
            for range in d.ranges() {
                heard |= wire.conn.recv(&mut self.buf[range], info).is_ok();
            }
        }
        if self.timer.is_some_and(|at| now >= at) {
            wire.conn.on_timeout();
            heard = true;
        }
        if heard {
            wire.wake_all();
        }
        !batch.drained()
    }

    fn wait(
        &mut self,
        now: Instant,
        events: &mut mio::Events,
        deadlines: impl IntoIterator<Item = Option<Instant>>,
    ) -> Result<(), Error> {
        self.timer = self.wire.borrow().conn.timeout().map(|t| now + t);
        let release = self.outbox.release_at();
        self.endpoint.watch_writable(self.outbox.blocked());
        self.endpoint
            .wait(
                events,
                deadlines.into_iter().chain([self.timer, release]),
                false,
            )
            .map_err(|e| Error::System(format!("poll failed: {e}")))
    }

    /// Runs a moq-net session with `client` until `task` ends, the connection does, or
    /// the element stops. `drivers`: the origins' drivers, polled with the session's.
    pub fn run<T>(
        mut self,
        client: moq_net::Client,
        drivers: &mut [&mut dyn moq_net::time::Driver],
        task: T,
        watch: &mut dyn Watch,
    ) -> Result<(), Error>
    where
        T: Future<Output = Result<(), Error>>,
    {
        let session = quic::Session::new(self.wire.clone());
        let waker = self.waker.clone();
        let waiter = kio::Waiter::new(waker.clone());
        let mut cx = Context::from_waker(&waker);
        let connect = std::pin::pin!(client.connect_lite(Instant::now(), session));
        let (moq, mut driver) = match connect.poll(&mut cx) {
            Poll::Ready(Ok(started)) => started,
            Poll::Ready(Err(e)) => {
                return Err(Error::Protocol(format!("MoQ session refused: {e}")));
            }
            Poll::Pending => {
                return Err(Error::Protocol("MoQ session did not start".into()));
            }
        };
        let mut task: Pin<&mut T> = std::pin::pin!(task);
        let mut events = mio::Events::with_capacity(64);
        let ended = loop {
            if watch.stopping() {
                break Ok(());
            }
            // The one reading of the clock for this turn.
            let now = Instant::now();
            let unread = self.receive(now);
            let mut deadline: Option<Instant> = None;
            let mut session_end = None;
            match driver.poll(now, &waiter) {
                Ok(at) => deadline = at,
                Err(e) => session_end = Some(e),
            }
            for d in drivers.iter_mut() {
                if let Ok(at) = d.poll(now, &waiter) {
                    deadline = earliest(deadline, at);
                }
            }
            if let Poll::Ready(done) = task.as_mut().poll(&mut cx) {
                break done;
            }
            let mut wire = self.wire.borrow_mut();
            match watch.turn(&mut wire) {
                Step::Done => break Ok(()),
                Step::Wait(at) => deadline = earliest(deadline, at),
            }
            self.outbox.send_all(&mut wire.conn, &self.endpoint.socket);
            if wire.conn.is_closed() {
                break Err(lost(&wire.conn));
            }
            if let Some(e) = session_end {
                break Err(Error::Lost(format!("the MoQ session ended: {e}")));
            }
            drop(wire);
            if unread {
                continue;
            }
            self.wait(now, &mut events, [deadline])?;
        };
        drop(moq);
        let mut wire = self.wire.borrow_mut();
        let _ = wire.conn.close(true, 0, b"");
        self.outbox
            .send_all_now(&mut wire.conn, &self.endpoint.socket);
        ended
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn handshake_failure(conn: &quiche::Connection, dial: &Dial) -> Error {
    match conn.peer_error().or(conn.local_error()) {
        Some(e) if !e.is_app && e.error_code == 0x178 => Error::Refused {
            code: e.error_code,
            message: format!(
                "the MoQ relay {} speaks none of {}",
                dial.url,
                ALPNS
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .join(", ")
            ),
        },
        Some(e) if e.error_code >= 0x100 && e.error_code < 0x200 => Error::Tls {
            alert: (e.error_code - 0x100) as u8,
            message: format!(
                "TLS handshake with the MoQ relay {} failed (alert {}): {}",
                dial.url,
                e.error_code - 0x100,
                String::from_utf8_lossy(&e.reason)
            ),
        },
        Some(e) => Error::Refused {
            code: e.error_code,
            message: format!(
                "the MoQ relay {} closed the connection: {}",
                dial.url,
                String::from_utf8_lossy(&e.reason)
            ),
        },
        None => Error::Timeout(format!("no answer from the MoQ relay {}", dial.url)),
    }
}

fn lost(conn: &quiche::Connection) -> Error {
    match conn.peer_error().or(conn.local_error()) {
        Some(e) => Error::Lost(format!(
            "the MoQ relay closed the connection ({}: {})",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        )),
        None => Error::Lost("the MoQ relay went silent".into()),
    }
}
