//! A model of what QUIC gives the cores, on the simulated clock: streams written in
//! priority order into packets of up to MAX_DATAGRAM_SIZE, acknowledgements, loss
//! detection as RFC 9002 has it (three later packets acknowledged, or 9/8 of a round trip,
//! else a probe timeout that backs off), retransmission of lost stream data and resets,
//! FIN, connection close, a congestion window, and the path figures quiche reports (RTT,
//! minimum RTT, delivery rate, bytes sent and lost) so that the sender's pacer, rate
//! estimate and repairs see believable numbers.
//!
//! What it leaves out, on purpose: encryption, flow control (the elements' windows are
//! 16 MiB and more), stream limits, version negotiation and Retry, quiche's own pacing
//! (the link's rate cap is the only bottleneck), and most of BBR: the window is twice the
//! measured bandwidth-delay product, never below quiche's `live` initial window of 32
//! packets while the path looks unlimited (BBR's STARTUP, where an application-limited
//! live stream stays), and never below 4 packets once the bandwidth stopped growing for
//! three rounds (a bottleneck). Random loss never shrinks it: `live` raises bbr2's loss
//! threshold to 20%.

mod recovery;
mod streams;
#[cfg(test)]
mod tests;

use super::ranges::Ranges;
use crate::protocol::MAX_DATAGRAM_SIZE;
use crate::sender::Path;
use crate::stats::ConnectionStats;
use recovery::{Recovery, Repair, INITIAL_WINDOW};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use streams::{RecvStream, SendStream};

/// The handshake's bytes travel on a stream of their own, reliable like any other.
pub const CRYPTO: u64 = u64::MAX;
/// The client's first flight, the server's (certificates), and the client's Finished.
const CLIENT_HELLO: u64 = 1200;
const SERVER_FLIGHT: u64 = 3000;
const CLIENT_FINISHED: u64 = 80;

/// A short header, the connection ID, the packet number and the AEAD tag.
const OVERHEAD: usize = 30;
/// A STREAM frame's type, stream ID, offset and length.
const STREAM_OVERHEAD: usize = 12;
const RESET_SIZE: usize = 20;
/// quiche's default max_ack_delay (the sender's), and the receiver's (config.rs).
pub const SERVER_ACK_DELAY: Duration = Duration::from_millis(25);
pub const CLIENT_ACK_DELAY: Duration = Duration::from_millis(5);
/// ACK ranges kept and sent.
const MAX_ACK_RANGES: usize = 32;

#[derive(Debug, Clone)]
pub enum Frame {
    Stream {
        id: u64,
        off: u64,
        data: Vec<u8>,
        fin: bool,
    },
    Reset {
        id: u64,
        code: u64,
    },
    /// Inclusive ranges of packet numbers, highest first.
    Ack {
        ranges: Vec<(u64, u64)>,
        delay: Duration,
    },
    Ping,
    Close {
        code: u64,
    },
}

#[derive(Debug)]
pub struct Packet {
    pub pn: u64,
    pub frames: Vec<Frame>,
    pub len: usize,
}

impl Packet {
    fn ack_eliciting(&self) -> bool {
        self.frames
            .iter()
            .any(|f| !matches!(f, Frame::Ack { .. } | Frame::Close { .. }))
    }
}

/// quiche's counters, as `stats()` reports them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub sent: u64,
    pub recv: u64,
    pub lost: u64,
    /// Packets that carried retransmitted stream data.
    pub retrans: u64,
    pub sent_bytes: u64,
    pub recv_bytes: u64,
    pub lost_bytes: u64,
    pub stream_retrans_bytes: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
}

struct Closing {
    code: u64,
    local: bool,
    /// Our CONNECTION_CLOSE is due (again).
    due: bool,
    /// The end of closing or draining (3 probe timeouts), once it started.
    until: Option<Instant>,
}

pub struct Conn {
    server: bool,
    pub established: bool,
    next_pn: u64,
    recovery: Recovery,
    /// Frames of lost packets, put back into their streams when the next packet is built
    /// (as quiche does: `stream_retrans_bytes` grows then).
    lost: Vec<Repair>,
    received: Ranges,
    largest_rx_time: Option<Instant>,
    ack_due: bool,
    ping_due: bool,
    /// Probe packets owed after a probe timeout: they may pass the window.
    probes: u8,
    send: BTreeMap<u64, SendStream>,
    recv: BTreeMap<u64, RecvStream>,
    /// Bytes the application may still write (quiche's tx_cap, set at each packet in).
    tx_cap: usize,
    close: Option<Closing>,
    closed: bool,
    pub counts: Counts,
}

impl Conn {
    fn new(server: bool, now: Instant) -> Self {
        let peer_ack_delay = if server {
            CLIENT_ACK_DELAY
        } else {
            SERVER_ACK_DELAY
        };
        Conn {
            server,
            established: false,
            next_pn: 0,
            recovery: Recovery::new(now, peer_ack_delay),
            lost: Vec::new(),
            received: Ranges::default(),
            largest_rx_time: None,
            ack_due: false,
            ping_due: false,
            probes: 0,
            send: BTreeMap::new(),
            recv: BTreeMap::new(),
            tx_cap: 0,
            close: None,
            closed: false,
            counts: Counts::default(),
        }
    }

    /// A client: its first flight waits to be sent.
    pub fn client(now: Instant) -> Self {
        let mut c = Conn::new(false, now);
        c.write_crypto(CLIENT_HELLO);
        c
    }

    /// A server, made when a client's first packet arrives.
    pub fn server(now: Instant) -> Self {
        Conn::new(true, now)
    }

    fn write_crypto(&mut self, len: u64) {
        let s = self.send.entry(CRYPTO).or_default();
        s.write(&vec![0x16; len as usize], false);
    }

    /// Moves the handshake on from the crypto bytes received so far.
    fn handshake(&mut self) {
        let got = self.recv.get_mut(&CRYPTO).map_or(0, RecvStream::skip_all);
        let crypto = self.send.get(&CRYPTO).map_or(0, SendStream::written);
        if self.server {
            if got >= CLIENT_HELLO && crypto == 0 {
                self.write_crypto(SERVER_FLIGHT);
            }
            if got >= CLIENT_HELLO + CLIENT_FINISHED && !self.established {
                self.established = true;
            }
        } else if got >= SERVER_FLIGHT && !self.established {
            self.established = true;
            self.write_crypto(CLIENT_FINISHED);
        }
    }

    /// Takes a packet from the peer; false if it was not news (a duplicate, or closed).
    pub fn recv(&mut self, now: Instant, packet: &Packet) -> bool {
        if self.closed || self.received.contains(packet.pn) {
            return false;
        }
        self.received.insert(packet.pn, packet.pn + 1);
        self.received.keep_last(MAX_ACK_RANGES);
        if self.received.max() == Some(packet.pn) {
            self.largest_rx_time = Some(now);
        }
        self.counts.recv += 1;
        self.counts.recv_bytes += packet.len as u64;
        self.ack_due |= packet.ack_eliciting();
        for frame in &packet.frames {
            match frame {
                Frame::Stream { id, off, data, fin } => {
                    self.recv.entry(*id).or_default().take(*off, data, *fin)
                }
                Frame::Reset { id, code } => self.recv.entry(*id).or_default().reset(*code),
                Frame::Ack { ranges, delay } => {
                    let (acked, lost) = self.recovery.on_ack(now, ranges, *delay);
                    self.on_acked(acked);
                    self.on_lost(lost);
                }
                Frame::Ping => {}
                Frame::Close { code } => {
                    if self.close.is_none() {
                        self.close = Some(Closing {
                            code: *code,
                            local: false,
                            due: false,
                            until: Some(now + self.pto() * 3),
                        });
                    }
                }
            }
        }
        if let Some(c) = self.close.as_mut().filter(|c| c.local) {
            // A peer still sending has not seen our close.
            c.due = true;
        }
        self.handshake();
        let r = &self.recovery;
        self.tx_cap = r.cwnd.saturating_sub(r.in_flight);
        true
    }

    fn on_acked(&mut self, acked: Vec<recovery::Sent>) {
        for r in acked.iter().flat_map(|p| &p.repairs) {
            if let Repair::Stream { id, off, len, fin } = *r {
                if let Some(s) = self.send.get_mut(&id) {
                    s.acked(off, len, fin);
                }
            }
        }
    }

    fn on_lost(&mut self, lost: Vec<recovery::Sent>) {
        for p in lost {
            self.counts.lost += 1;
            self.counts.lost_bytes += p.len as u64;
            self.lost.extend(p.repairs);
        }
    }

    fn pto(&self) -> Duration {
        self.recovery.pto(self.established)
    }

    /// The earliest timer: loss detection, probe timeout, or the end of closing.
    pub fn timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if let Some(c) = &self.close {
            return c.until;
        }
        let r = &self.recovery;
        r.loss_time.or_else(|| r.pto_deadline(self.established))
    }

    pub fn on_timeout(&mut self, now: Instant) {
        if let Some(c) = &self.close {
            self.closed |= c.until.is_some_and(|t| now >= t);
            return;
        }
        if self.recovery.loss_time.is_some_and(|t| t <= now) {
            let lost = self.recovery.detect_lost(now);
            self.on_lost(lost);
            return;
        }
        if self
            .recovery
            .pto_deadline(self.established)
            .is_some_and(|t| t <= now)
        {
            self.counts.ptos += 1;
            self.probes = 2;
            let again = self.recovery.on_pto();
            self.lost.extend(again);
        }
    }

    /// Schedules an ack-eliciting packet (a PING when nothing else goes).
    pub fn send_ack_eliciting(&mut self) {
        if !self.closed {
            self.ping_due = true;
        }
    }

    /// The next packet to send, and the stream bytes marked for retransmission while it
    /// was built; None when nothing is due.
    pub fn poll_packet(&mut self, now: Instant) -> Option<(Packet, u64)> {
        if self.closed {
            return None;
        }
        let marked = self.requeue_lost();
        let pto = self.pto();
        if let Some(c) = self.close.as_mut() {
            if !(c.local && c.due) {
                return None;
            }
            c.due = false;
            c.until.get_or_insert(now + pto * 3);
            let frames = vec![Frame::Close { code: c.code }];
            return Some((self.number(now, frames, OVERHEAD + 8, Vec::new(), false), 0));
        }
        let mut frames = Vec::new();
        let mut repairs = Vec::new();
        let mut len = OVERHEAD;
        if self.ack_due {
            let ranges: Vec<(u64, u64)> = self.received.descending().collect();
            let delay = self
                .largest_rx_time
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            len += 8 + 4 * ranges.len();
            frames.push(Frame::Ack { ranges, delay });
            self.ack_due = false;
        }
        for (&id, s) in self.send.iter_mut() {
            if let Some(code) = s.reset.filter(|_| s.reset_due) {
                if len + RESET_SIZE <= MAX_DATAGRAM_SIZE {
                    s.reset_due = false;
                    frames.push(Frame::Reset { id, code });
                    repairs.push(Repair::Reset { id });
                    len += RESET_SIZE;
                }
            }
        }
        let mut retransmitted = false;
        let r = &self.recovery;
        if self.probes > 0 || r.in_flight + len < r.cwnd {
            while len + STREAM_OVERHEAD < MAX_DATAGRAM_SIZE {
                let Some(id) = self.next_stream() else {
                    break;
                };
                let room = MAX_DATAGRAM_SIZE - len - STREAM_OVERHEAD;
                let Some(s) = self.send.get_mut(&id) else {
                    break;
                };
                let Some(chunk) = s.emit(room) else {
                    break;
                };
                retransmitted |= chunk.again;
                len += STREAM_OVERHEAD + chunk.data.len();
                repairs.push(Repair::Stream {
                    id,
                    off: chunk.off,
                    len: chunk.data.len() as u64,
                    fin: chunk.fin,
                });
                frames.push(Frame::Stream {
                    id,
                    off: chunk.off,
                    data: chunk.data,
                    fin: chunk.fin,
                });
            }
        }
        let eliciting = !repairs.is_empty();
        if !eliciting && (self.ping_due || self.probes > 0) {
            frames.push(Frame::Ping);
            len += 1;
        }
        if frames.is_empty() {
            return None;
        }
        let packet = self.number(now, frames, len, repairs, retransmitted);
        if packet.ack_eliciting() {
            self.ping_due = false;
            self.probes = self.probes.saturating_sub(1);
        }
        Some((packet, marked))
    }

    /// Puts the frames of lost packets back into their streams; returns the stream bytes.
    fn requeue_lost(&mut self) -> u64 {
        let mut marked = 0;
        for r in std::mem::take(&mut self.lost) {
            match r {
                Repair::Stream { id, off, len, fin } => {
                    if let Some(s) = self.send.get_mut(&id) {
                        marked += s.lost(off, len, fin);
                    }
                }
                Repair::Reset { id } => {
                    if let Some(s) = self.send.get_mut(&id) {
                        s.reset_due = true;
                    }
                }
            }
        }
        self.counts.stream_retrans_bytes += marked;
        marked
    }

    /// The stream whose bytes go next: the handshake, then the lowest urgency, then the
    /// lowest ID (quiche's order for non-incremental streams).
    fn next_stream(&self) -> Option<u64> {
        if self.send.get(&CRYPTO).is_some_and(SendStream::pending) {
            return Some(CRYPTO);
        }
        self.send
            .iter()
            .filter(|(_, s)| s.pending())
            .min_by_key(|(id, s)| (s.urgency, **id))
            .map(|(id, _)| *id)
    }

    fn number(
        &mut self,
        now: Instant,
        frames: Vec<Frame>,
        len: usize,
        repairs: Vec<Repair>,
        retransmitted: bool,
    ) -> Packet {
        let pn = self.next_pn;
        self.next_pn += 1;
        let packet = Packet { pn, frames, len };
        self.counts.sent += 1;
        self.counts.sent_bytes += len as u64;
        self.counts.retrans += u64::from(retransmitted);
        if packet.ack_eliciting() {
            let r = &self.recovery;
            let app_limited = self.next_stream().is_none() && r.in_flight + len < r.cwnd;
            self.recovery.on_sent(now, pn, len, repairs, app_limited);
        }
        packet
    }

    /// quiche's `stream_send`: takes what the window allows (tx_cap) and queues it.
    pub fn stream_send(&mut self, id: u64, data: &[u8], fin: bool) -> Result<usize, quiche::Error> {
        if self.close.is_some() || self.closed {
            return Err(quiche::Error::Done);
        }
        let s = self.send.entry(id).or_default();
        if s.reset.is_some() {
            return Err(quiche::Error::InvalidStreamState(id));
        }
        let n = data.len().min(self.tx_cap);
        if n == 0 && !data.is_empty() {
            return Err(quiche::Error::Done);
        }
        self.tx_cap -= n;
        s.write(&data[..n], fin && n == data.len());
        Ok(n)
    }

    pub fn stream_priority(&mut self, id: u64, urgency: u8) {
        self.send.entry(id).or_default().urgency = urgency;
    }

    /// quiche's `stream_shutdown(Write)`: what is unsent or unacknowledged is dropped and
    /// RESET_STREAM goes to the peer.
    pub fn stream_reset(&mut self, id: u64, code: u64) {
        self.send.entry(id).or_default().reset(code);
    }

    /// quiche's `stream_recv`.
    pub fn stream_recv(&mut self, id: u64, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error> {
        match self.recv.get_mut(&id) {
            Some(s) => s.read(buf),
            None => Err(quiche::Error::InvalidStreamState(id)),
        }
    }

    /// Streams with something to read (bytes in order, their end, or a reset).
    pub fn readable(&self) -> Vec<u64> {
        self.recv
            .iter()
            .filter(|(id, s)| **id != CRYPTO && s.readable())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Closes with an application error; closing ends 3 probe timeouts after the
    /// CONNECTION_CLOSE first goes.
    pub fn close(&mut self, code: u64) {
        if self.close.is_none() && !self.closed {
            self.close = Some(Closing {
                code,
                local: true,
                due: true,
                until: None,
            });
        }
    }

    pub fn closed_by_us(&self) -> bool {
        self.close.as_ref().is_some_and(|c| c.local)
    }

    pub fn closing(&self) -> bool {
        self.close.is_some() || self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The code the peer closed with.
    pub fn peer_error(&self) -> Option<u64> {
        self.close.as_ref().filter(|c| !c.local).map(|c| c.code)
    }

    pub fn path(&self) -> Path {
        let r = &self.recovery;
        Path {
            rtt: r.srtt(),
            min_rtt: r.min_rtt(),
            delivery_rate: r.bandwidth(),
            sent_bytes: self.counts.sent_bytes,
            lost_bytes: self.counts.lost_bytes,
            validated: self.established,
        }
    }

    pub fn stats(&self) -> ConnectionStats {
        let p = self.path();
        let c = &self.counts;
        ConnectionStats {
            rtt: p.rtt,
            min_rtt: p.min_rtt,
            rtt_variance: self.recovery.rttvar,
            cwnd: self.recovery.cwnd as u64,
            delivery_rate: p.delivery_rate,
            packets_sent: c.sent,
            packets_received: c.recv,
            packets_lost: c.lost,
            packets_retransmitted: c.retrans,
            bytes_sent: c.sent_bytes,
            bytes_received: c.recv_bytes,
            bytes_lost: c.lost_bytes,
            bytes_retransmitted: c.stream_retrans_bytes,
        }
    }
}
