//! The QUIC model between two endpoints over a plain delay, with packets dropped by hand.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Decides whether a packet is lost: (towards the server, the packet).
type Dropper = Box<dyn FnMut(bool, &Packet) -> bool>;

struct Wire {
    now: Instant,
    client: Conn,
    server: Conn,
    /// (arrival, towards the server, packet).
    flight: Vec<(Instant, bool, Packet)>,
    one_way: Duration,
    drop: Dropper,
}

impl Wire {
    fn new(one_way: Duration) -> Self {
        let t0 = Instant::now();
        let mut w = Wire {
            now: t0,
            client: Conn::client(t0),
            server: Conn::server(t0),
            flight: Vec::new(),
            one_way,
            drop: Box::new(|_, _| false),
        };
        w.flush();
        w
    }

    /// Established both ways.
    fn established(one_way: Duration) -> Self {
        let mut w = Wire::new(one_way);
        w.run_for(one_way * 5);
        assert!(w.client.established && w.server.established);
        w
    }

    fn flush(&mut self) {
        for to_server in [true, false] {
            loop {
                let conn = if to_server {
                    &mut self.client
                } else {
                    &mut self.server
                };
                let Some((p, _)) = conn.poll_packet(self.now) else {
                    break;
                };
                if !(self.drop)(to_server, &p) {
                    self.flight.push((self.now + self.one_way, to_server, p));
                }
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let arrivals = self.flight.iter().map(|f| f.0);
        let timers = [self.client.timeout(), self.server.timeout()];
        arrivals.chain(timers.into_iter().flatten()).min()
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(next) = self.next_event().filter(|t| *t <= until) {
            self.now = next.max(self.now);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flight)
                .into_iter()
                .partition(|f| f.0 <= now);
            self.flight = later;
            for (_, to_server, p) in due {
                if to_server {
                    self.server.recv(now, &p);
                } else {
                    self.client.recv(now, &p);
                }
            }
            for c in [&mut self.client, &mut self.server] {
                if c.timeout().is_some_and(|t| t <= now) {
                    c.on_timeout(now);
                }
            }
            self.flush();
        }
        self.now = until;
    }

    /// Everything readable on `stream` at the client, and whether it ended.
    fn read(&mut self, stream: u64) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = [0; 1000];
        loop {
            match self.client.stream_recv(stream, &mut buf) {
                Ok((n, fin)) => {
                    out.extend_from_slice(&buf[..n]);
                    if fin {
                        return (out, true);
                    }
                }
                Err(_) => return (out, false),
            }
        }
    }
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn stream_data(p: &Packet) -> bool {
    p.frames
        .iter()
        .any(|f| matches!(f, Frame::Stream { id, .. } if *id != CRYPTO))
}

#[test]
fn the_handshake_takes_a_round_trip_and_measures_it() {
    let mut w = Wire::new(20 * MS);
    w.run_for(39 * MS);
    assert!(!w.client.established);
    w.run_for(2 * MS);
    assert!(w.client.established && !w.server.established);
    w.run_for(40 * MS);
    assert!(w.server.established);
    assert_eq!(w.client.path().rtt, 40 * MS);
    assert_eq!(w.server.path().min_rtt, 40 * MS);
    assert_eq!(w.server.tx_cap, INITIAL_WINDOW);
    // A PING on demand, acknowledged and counted like any packet.
    let received = w.server.stats().packets_received;
    w.client.send_ack_eliciting();
    w.flush();
    w.run_for(41 * MS);
    assert_eq!(w.server.stats().packets_received, received + 1);
    assert_eq!(w.client.stats().rtt, 40 * MS);
}

#[test]
fn a_lost_packet_is_found_by_later_acks_and_sent_again() {
    let mut w = Wire::established(20 * MS);
    let mut seen = 0;
    w.drop = Box::new(move |to_server, p| {
        seen += u32::from(!to_server && stream_data(p));
        !to_server && seen == 2 && stream_data(p)
    });
    let data = bytes(10_000);
    assert_eq!(w.server.stream_send(3, &data, true), Ok(10_000));
    w.flush();
    // The acks of the packets after it arrive a round trip later and find it lost.
    w.run_for(41 * MS);
    assert_eq!(w.server.counts.lost, 1);
    assert_eq!(w.server.counts.retrans, 1);
    // The bytes before the loss can be read; the rest waits for the repair.
    let (mut got, fin) = w.read(3);
    assert!(!fin && got.len() < 1350, "{} bytes", got.len());
    assert!(w.client.readable().is_empty());
    w.run_for(20 * MS);
    assert_eq!(w.client.readable(), [3]);
    let (rest, fin) = w.read(3);
    got.extend(rest);
    assert!(fin && got == data);
    assert_eq!(w.server.counts.ptos, 0);
}

#[test]
fn a_lost_tail_is_found_by_the_probe_timeout() {
    let mut w = Wire::established(20 * MS);
    let mut seen = 0;
    // The last of eight data packets is lost: nothing after it reveals it.
    w.drop = Box::new(move |to_server, p| {
        seen += u32::from(!to_server && stream_data(p));
        !to_server && seen == 8 && stream_data(p)
    });
    let data = bytes(8 * 1300);
    assert_eq!(w.server.stream_send(3, &data, true), Ok(data.len()));
    w.flush();
    w.run_for(100 * MS);
    let (mut got, fin) = w.read(3);
    assert!(!fin && got.len() > 6 * 1300 && got.len() < data.len());
    // The probe timeout: srtt, 4 rttvar and the peer's ack delay after the last packet.
    w.run_for(200 * MS);
    assert_eq!(w.server.counts.ptos, 1);
    let (rest, fin) = w.read(3);
    got.extend(rest);
    assert!(fin && got == data);
}

#[test]
fn a_reset_reaches_the_reader_and_ends_the_repairs() {
    let mut w = Wire::established(20 * MS);
    // Every data packet of stream 3 after the first is lost.
    let mut seen = 0;
    w.drop = Box::new(move |to_server, p| {
        seen += u32::from(!to_server && stream_data(p));
        !to_server && seen > 1 && stream_data(p)
    });
    assert!(w.server.stream_send(3, &bytes(5000), false).is_ok());
    w.flush();
    w.server.stream_reset(3, 7);
    w.run_for(300 * MS);
    assert_eq!(w.client.readable(), [3]);
    let mut buf = [0; 100];
    assert_eq!(
        w.client.stream_recv(3, &mut buf),
        Err(quiche::Error::StreamReset(7))
    );
    assert!(w.client.readable().is_empty());
    assert_eq!(w.server.counts.stream_retrans_bytes, 0);
    assert_eq!(
        w.server.stream_send(3, b"more", false),
        Err(quiche::Error::InvalidStreamState(3))
    );
}

#[test]
fn the_lowest_urgency_goes_first_then_the_lowest_stream() {
    let mut w = Wire::established(20 * MS);
    for (stream, urgency) in [(7, 3), (3, 4), (0, 0), (11, 3)] {
        w.server.stream_priority(stream, urgency);
        assert!(w.server.stream_send(stream, &bytes(2000), false).is_ok());
    }
    let mut order = Vec::new();
    while let Some((p, _)) = w.server.poll_packet(w.now) {
        for f in p.frames {
            if let Frame::Stream { id, .. } = f {
                if order.last() != Some(&id) {
                    order.push(id);
                }
            }
        }
    }
    assert_eq!(order, [0, 7, 11, 3]);
}

#[test]
fn the_window_holds_writes_until_acks_open_it() {
    let mut w = Wire::established(20 * MS);
    let window = w.server.tx_cap;
    let data = bytes(window + 5000);
    assert_eq!(w.server.stream_send(3, &data, false), Ok(window));
    assert_eq!(
        w.server.stream_send(3, &data[window..], false),
        Err(quiche::Error::Done)
    );
    w.flush();
    w.run_for(41 * MS);
    assert!(w.server.stream_send(3, &data[window..], false).is_ok());
    // Close: the client sees it and both end after draining.
    w.server.close(0);
    assert!(w.server.closed_by_us() && w.server.closing());
    w.flush();
    w.run_for(1000 * MS);
    assert_eq!(w.client.peer_error(), Some(0));
    assert!(w.client.is_closed() && w.server.is_closed());
}
