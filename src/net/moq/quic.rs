//! moq-net's transport, on our own quiche connection: the poll half of
//! web-transport-trait (raw QUIC, no HTTP/3), so the MoQ session runs inside the element's
//! networking thread with no async runtime and no second QUIC stack.
//!
//! Every handle shares one [`Wire`] (the connection, and the tasks parked on it) through an
//! `Rc`: all of them live on the networking thread. A task that must wait parks its waker
//! there; the thread wakes every parked task after each turn that read the network or
//! fired a timer ([`Wire::wake_all`]). Spurious wakes are allowed by the poll contract, and
//! a handful of streams makes waking them all cheaper than tracking which one changed.

use moq_net::bytes::Bytes;
use moq_net::web_transport_trait::{self as wtt, poll};
use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Why an operation failed: the connection, or this stream, ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicError {
    /// The connection is closed; the peer's or our application code and reason, if any.
    Closed { code: u32, reason: String },
    /// The peer reset the stream we read, or stopped the one we write.
    Stream(u32),
    /// quiche refused the operation.
    Refused(String),
}

impl std::fmt::Display for QuicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuicError::Closed { code, reason } => write!(f, "connection closed ({code}: {reason})"),
            QuicError::Stream(code) => write!(f, "stream ended by the peer (code {code})"),
            QuicError::Refused(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for QuicError {}

impl wtt::Error for QuicError {
    fn session_error(&self) -> Option<(u32, String)> {
        match self {
            QuicError::Closed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        }
    }

    fn stream_error(&self) -> Option<u32> {
        match self {
            QuicError::Stream(code) => Some(*code),
            _ => None,
        }
    }
}

/// The connection and what waits on it.
pub struct Wire {
    pub conn: quiche::Connection,
    /// Next stream ids we open (client-initiated: bidi 0, 4, …; uni 2, 6, …).
    next_bi: u64,
    next_uni: u64,
    /// Peer streams already handed out, and those waiting to be.
    accepted: HashSet<u64>,
    incoming_bi: VecDeque<u64>,
    incoming_uni: VecDeque<u64>,
    /// Streams we opened and have not seen collected: the end of the stream waits for them.
    sending: HashSet<u64>,
    /// The last stream we tried to open waits for the peer's credit.
    open_blocked: bool,
    parked: Vec<Waker>,
}

impl Wire {
    /// `conn` must be a client connection with its handshake complete.
    pub fn new(conn: quiche::Connection) -> Rc<RefCell<Wire>> {
        Rc::new(RefCell::new(Wire {
            conn,
            next_bi: 0,
            next_uni: 2,
            accepted: HashSet::new(),
            incoming_bi: VecDeque::new(),
            incoming_uni: VecDeque::new(),
            sending: HashSet::new(),
            open_blocked: false,
            parked: Vec::new(),
        }))
    }

    /// After reading the network: queues the peer's new streams, and wakes every parked
    /// task to look again.
    pub fn wake_all(&mut self) {
        // A stream read to its end is never readable again: forgetting it keeps the set
        // to the streams still open, however many a peer opens over time.
        let conn = &self.conn;
        self.accepted.retain(|&id| !conn.stream_finished(id));
        let fresh: Vec<u64> = self
            .conn
            .readable()
            .filter(|id| id & 1 == 1 && !self.accepted.contains(id))
            .collect();
        for id in fresh {
            self.accepted.insert(id);
            match id & 2 {
                0 => self.incoming_bi.push_back(id),
                _ => self.incoming_uni.push_back(id),
            }
        }
        for waker in self.parked.drain(..) {
            waker.wake();
        }
    }

    /// Every stream we opened was finished or reset, and the peer has acknowledged it
    /// (quiche collected it), and none waits to be opened: nothing we wrote is still on
    /// its way.
    pub fn all_sent(&mut self) -> bool {
        let conn = &mut self.conn;
        self.sending.retain(|&id| conn.stream_capacity(id).is_ok());
        self.sending.is_empty() && !self.open_blocked
    }

    fn park(&mut self, cx: &Context<'_>) {
        if !self.parked.iter().any(|w| w.will_wake(cx.waker())) {
            self.parked.push(cx.waker().clone());
        }
    }

    fn closed(&self) -> Option<QuicError> {
        if !self.conn.is_closed() && !self.conn.is_draining() {
            return None;
        }
        let (code, reason) = match (self.conn.peer_error(), self.conn.local_error()) {
            (Some(e), _) | (None, Some(e)) => (
                u32::try_from(e.error_code).unwrap_or(u32::MAX),
                String::from_utf8_lossy(&e.reason).into_owned(),
            ),
            (None, None) => (0, "timed out".into()),
        };
        Some(QuicError::Closed { code, reason })
    }

    fn open(&mut self, cx: &Context<'_>, bidi: bool) -> Poll<Result<u64, QuicError>> {
        if let Some(e) = self.closed() {
            return Poll::Ready(Err(e));
        }
        let left = match bidi {
            true => self.conn.peer_streams_left_bidi(),
            false => self.conn.peer_streams_left_uni(),
        };
        self.open_blocked = left == 0;
        if left == 0 {
            self.park(cx);
            return Poll::Pending;
        }
        let next = if bidi {
            &mut self.next_bi
        } else {
            &mut self.next_uni
        };
        let id = *next;
        *next += 4;
        // Setting a priority creates the stream in quiche, using up the peer's credit now.
        self.conn
            .stream_priority(id, DEFAULT_URGENCY, false)
            .map_err(|e| QuicError::Refused(format!("cannot open stream {id}: {e}")))?;
        if !bidi {
            self.sending.insert(id);
        }
        log::trace!("opened stream {id}");
        Poll::Ready(Ok(id))
    }
}

/// quiche's urgency (0 first, 7 last) for moq-net's default priority.
const DEFAULT_URGENCY: u8 = 3;

/// moq-net's priority order (higher first, as WebTransport's sendOrder) as quiche urgency.
fn urgency(order: u8) -> u8 {
    7 - order / 32
}

/// The session: cloned freely, each clone a handle on the same connection.
#[derive(Clone)]
pub struct Session {
    wire: Rc<RefCell<Wire>>,
    /// The negotiated ALPN, which selects the moq-lite version.
    alpn: Rc<str>,
}

impl Session {
    pub fn new(wire: Rc<RefCell<Wire>>) -> Session {
        let alpn = String::from_utf8_lossy(wire.borrow().conn.application_proto()).into();
        Session { wire, alpn }
    }

    fn stream(&self, id: u64, half: Half) -> Stream {
        Stream {
            wire: self.wire.clone(),
            id,
            half,
            done: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Send,
    Recv,
}

/// One direction of a QUIC stream.
pub struct Stream {
    wire: Rc<RefCell<Wire>>,
    id: u64,
    half: Half,
    /// Finished or reset (writing), or read to its end or stopped (reading).
    done: bool,
}

pub struct Stats(quiche::Stats, Option<std::time::Duration>);

impl wtt::Stats for Stats {
    fn bytes_sent(&self) -> Option<u64> {
        Some(self.0.sent_bytes)
    }
    fn bytes_received(&self) -> Option<u64> {
        Some(self.0.recv_bytes)
    }
    fn bytes_lost(&self) -> Option<u64> {
        Some(self.0.lost_bytes)
    }
    fn packets_sent(&self) -> Option<u64> {
        Some(self.0.sent as u64)
    }
    fn packets_received(&self) -> Option<u64> {
        Some(self.0.recv as u64)
    }
    fn packets_lost(&self) -> Option<u64> {
        Some(self.0.lost as u64)
    }
    fn rtt(&self) -> Option<std::time::Duration> {
        self.1
    }
}

impl poll::Session for Session {
    type SendStream = Stream;
    type RecvStream = Stream;
    type Error = QuicError;

    fn poll_accept_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stream, QuicError>> {
        let mut wire = self.wire.borrow_mut();
        if let Some(id) = wire.incoming_uni.pop_front() {
            return Poll::Ready(Ok(self.stream(id, Half::Recv)));
        }
        if let Some(e) = wire.closed() {
            return Poll::Ready(Err(e));
        }
        wire.park(cx);
        Poll::Pending
    }

    fn poll_accept_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Stream, Stream), QuicError>> {
        let mut wire = self.wire.borrow_mut();
        if let Some(id) = wire.incoming_bi.pop_front() {
            return Poll::Ready(Ok((
                self.stream(id, Half::Send),
                self.stream(id, Half::Recv),
            )));
        }
        if let Some(e) = wire.closed() {
            return Poll::Ready(Err(e));
        }
        wire.park(cx);
        Poll::Pending
    }

    fn poll_open_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stream, QuicError>> {
        let id = std::task::ready!(self.wire.borrow_mut().open(cx, false))?;
        Poll::Ready(Ok(self.stream(id, Half::Send)))
    }

    fn poll_open_bi(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Stream, Stream), QuicError>> {
        let id = std::task::ready!(self.wire.borrow_mut().open(cx, true))?;
        Poll::Ready(Ok((
            self.stream(id, Half::Send),
            self.stream(id, Half::Recv),
        )))
    }

    /// No datagrams: the connection does not negotiate them, so one offered is dropped,
    /// which the contract allows (moq-net then uses streams).
    fn poll_send_datagram(
        &mut self,
        _cx: &mut Context<'_>,
        _payload: &[u8],
    ) -> Poll<Result<(), QuicError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_recv_datagram(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, QuicError>> {
        let mut wire = self.wire.borrow_mut();
        if let Some(e) = wire.closed() {
            return Poll::Ready(Err(e));
        }
        wire.park(cx);
        Poll::Pending
    }

    fn max_datagram_size(&self) -> usize {
        0
    }

    fn protocol(&self) -> Option<&str> {
        Some(&self.alpn)
    }

    fn close(&mut self, code: u32, reason: &str) {
        let _ = self
            .wire
            .borrow_mut()
            .conn
            .close(true, code.into(), reason.as_bytes());
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<QuicError> {
        let mut wire = self.wire.borrow_mut();
        match wire.closed() {
            Some(e) => Poll::Ready(e),
            None => {
                wire.park(cx);
                Poll::Pending
            }
        }
    }

    fn stats(&self) -> impl wtt::Stats {
        let wire = self.wire.borrow();
        let rtt = crate::net::paths::active(&wire.conn).map(|p| p.rtt);
        Stats(wire.conn.stats(), rtt)
    }
}

impl poll::SendStream for Stream {
    type Error = QuicError;

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, QuicError>> {
        let mut wire = self.wire.borrow_mut();
        if let Some(e) = wire.closed() {
            return Poll::Ready(Err(e));
        }
        if self.done {
            return Poll::Ready(Err(QuicError::Refused(format!(
                "stream {} is finished",
                self.id
            ))));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match wire.conn.stream_send(self.id, buf, false) {
            Ok(0) | Err(quiche::Error::Done) => {
                wire.park(cx);
                Poll::Pending
            }
            Ok(n) => {
                log::trace!("stream {}: wrote {n} of {}", self.id, buf.len());
                Poll::Ready(Ok(n))
            }
            Err(quiche::Error::StreamStopped(code)) => {
                self.done = true;
                Poll::Ready(Err(QuicError::Stream(code as u32)))
            }
            Err(e) => Poll::Ready(Err(QuicError::Refused(format!(
                "cannot write stream {}: {e}",
                self.id
            )))),
        }
    }

    fn set_priority(&mut self, order: u8) {
        let _ = self
            .wire
            .borrow_mut()
            .conn
            .stream_priority(self.id, urgency(order), false);
    }

    fn finish(&mut self) -> Result<(), QuicError> {
        if self.done {
            return Ok(());
        }
        log::trace!("stream {}: finished", self.id);
        self.done = true;
        match self.wire.borrow_mut().conn.stream_send(self.id, &[], true) {
            Ok(_) | Err(quiche::Error::Done) => Ok(()),
            Err(quiche::Error::StreamStopped(code)) => Err(QuicError::Stream(code as u32)),
            Err(e) => Err(QuicError::Refused(format!(
                "cannot finish stream {}: {e}",
                self.id
            ))),
        }
    }

    fn reset(&mut self, code: u32) {
        self.done = true;
        let _ = self.wire.borrow_mut().conn.stream_shutdown(
            self.id,
            quiche::Shutdown::Write,
            code.into(),
        );
    }

    /// Ready once the peer stopped the stream or acknowledged all of it (quiche then
    /// collects it), or the connection is gone.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let mut wire = self.wire.borrow_mut();
        if let Some(e) = wire.closed() {
            return Poll::Ready(Err(e));
        }
        match wire.conn.stream_capacity(self.id) {
            Ok(_) => {
                wire.park(cx);
                Poll::Pending
            }
            Err(quiche::Error::StreamStopped(code)) => {
                Poll::Ready(Err(QuicError::Stream(code as u32)))
            }
            Err(_) => Poll::Ready(Ok(())),
        }
    }
}

impl poll::RecvStream for Stream {
    type Error = QuicError;

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<Result<Option<usize>, QuicError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        if dst.is_empty() {
            return Poll::Ready(Ok(Some(0)));
        }
        let mut wire = self.wire.borrow_mut();
        match wire.conn.stream_recv(self.id, dst) {
            Ok((0, true)) => {
                self.done = true;
                Poll::Ready(Ok(None))
            }
            // The end, if it came with these bytes, is reported by the next read.
            Ok((n, fin)) => {
                log::trace!("stream {}: read {n} (fin {fin})", self.id);
                if fin {
                    self.done = true;
                }
                Poll::Ready(Ok(Some(n)))
            }
            Err(quiche::Error::Done) => {
                if let Some(e) = wire.closed() {
                    return Poll::Ready(Err(e));
                }
                wire.park(cx);
                Poll::Pending
            }
            Err(quiche::Error::StreamReset(code)) => {
                self.done = true;
                Poll::Ready(Err(QuicError::Stream(code as u32)))
            }
            Err(e) => Poll::Ready(Err(QuicError::Refused(format!(
                "cannot read stream {}: {e}",
                self.id
            )))),
        }
    }

    fn stop(&mut self, code: u32) {
        self.done = true;
        let _ = self.wire.borrow_mut().conn.stream_shutdown(
            self.id,
            quiche::Shutdown::Read,
            code.into(),
        );
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let mut wire = self.wire.borrow_mut();
        if self.done || wire.conn.stream_finished(self.id) {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = wire.closed() {
            return Poll::Ready(Err(e));
        }
        wire.park(cx);
        Poll::Pending
    }
}

/// A stream given up unfinished: reset what we wrote, stop what we read, so neither side
/// holds flow-control credit for it.
impl Drop for Stream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut wire) = self.wire.try_borrow_mut() {
            let direction = match self.half {
                Half::Send => quiche::Shutdown::Write,
                Half::Recv => quiche::Shutdown::Read,
            };
            let _ = wire.conn.stream_shutdown(self.id, direction, 0);
        }
    }
}
