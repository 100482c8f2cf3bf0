//! The relay: the impairments, each direction's fate for a packet, and the thread.

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bursty loss: a two-state Markov chain, Good and Bad, each with its own loss probability.
/// The chain steps once per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Chance per packet of going from Good to Bad.
    pub p: f64,
    /// Chance per packet of going from Bad back to Good; 1/r is the mean burst length.
    pub r: f64,
    pub loss_good: f64,
    pub loss_bad: f64,
}

/// What happens to packets going one way. The default passes everything untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// A uniformly random extra delay in `[0, jitter)`.
    pub jitter: Duration,
    /// Whether jitter may reorder packets; without it a packet never overtakes an earlier one.
    pub reorder: bool,
    /// Independent random loss probability, 0..=1.
    pub loss: f64,
    /// Bursty loss, applied after `loss`.
    pub burst: Option<GilbertElliott>,
    /// Bandwidth cap in bits per second (UDP payload bytes); None for no cap.
    pub rate_bps: Option<u64>,
    /// Bytes the cap may queue before it drops arrivals (a router's buffer).
    pub queue_bytes: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            burst: None,
            rate_bps: None,
            queue_bytes: 64 * 1024,
        }
    }
}

impl Impairment {
    /// Parses the CLI form, comma-separated `key=value` items, for example
    /// `delay=20ms,jitter=5ms,reorder,loss=1%,burst=0.002:0.2:0:1,rate=3M,queue=64k`.
    /// `burst` is Gilbert-Elliott `p:r:loss_good:loss_bad`; `rate` is bits per second with
    /// an optional k/M/G; `queue` is bytes with an optional k/M.
    pub fn parse(spec: &str) -> Result<Impairment, String> {
        let mut imp = Impairment::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let bad = |what: &str| format!("'{item}': {what}");
            match key {
                "delay" => imp.delay = parse_duration(value).map_err(|e| bad(&e))?,
                "jitter" => imp.jitter = parse_duration(value).map_err(|e| bad(&e))?,
                "reorder" => imp.reorder = true,
                "loss" => imp.loss = parse_fraction(value).map_err(|e| bad(&e))?,
                "burst" => {
                    let f: Vec<f64> = value
                        .split(':')
                        .map(parse_fraction)
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(&e))?;
                    let [p, r, loss_good, loss_bad] = f[..] else {
                        return Err(bad("burst is p:r:loss_good:loss_bad"));
                    };
                    imp.burst = Some(GilbertElliott {
                        p,
                        r,
                        loss_good,
                        loss_bad,
                    });
                }
                "rate" => imp.rate_bps = Some(parse_scaled(value, 1000).map_err(|e| bad(&e))?),
                "queue" => {
                    imp.queue_bytes = parse_scaled(value, 1024).map_err(|e| bad(&e))? as usize
                }
                _ => return Err(bad("unknown setting")),
            }
        }
        Ok(imp)
    }
}

/// `20ms`, `1.5s`, `300us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_unit(text);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration"))?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        _ => return Err(format!("'{text}': use s, ms or us")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
}

/// `1%` or `0.01`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let v = number
        .parse::<f64>()
        .map(|v| v / scale)
        .map_err(|_| format!("'{text}' is not a probability"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("'{text}' is not between 0 and 1"))
    }
}

/// `3M`, `64k`, `1500`, with `base` 1000 or 1024.
fn parse_scaled(text: &str, base: u64) -> Result<u64, String> {
    let (number, unit) = split_unit(text);
    let scale = match unit {
        "" => 1,
        "k" | "K" => base,
        "M" => base * base,
        "G" => base * base * base,
        _ => return Err(format!("'{text}': unknown unit")),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    Ok((v * scale as f64) as u64)
}

fn split_unit(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(at)
}

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a receiver (the relay's clients) to the sender.
    ToServer,
    /// From the sender back to a receiver.
    ToClient,
}

/// Where the relay listens, where it forwards, and how it treats packets.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address receivers connect to; port 0 picks a free one (see [`Relay::local_addr`]).
    pub listen: SocketAddr,
    /// The sender's address.
    pub server: SocketAddr,
    pub seed: u64,
    pub to_server: Impairment,
    pub to_client: Impairment,
    /// Link cuts as (start after the relay starts, length); both directions drop everything.
    pub outages: Vec<(Duration, Duration)>,
}

impl RelayConfig {
    /// The same impairment both ways, listening on a free loopback port, seed 1.
    pub fn symmetric(server: SocketAddr, impairment: Impairment) -> Self {
        let loopback: std::net::IpAddr = if server.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        RelayConfig {
            listen: SocketAddr::new(loopback, 0),
            server,
            seed: 1,
            to_server: impairment.clone(),
            to_client: impairment,
            outages: Vec::new(),
        }
    }
}

/// Packet counts for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub received: u64,
    pub forwarded: u64,
    pub lost: u64,
    pub outage_dropped: u64,
    pub queue_dropped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_server: DirectionStats,
    pub to_client: DirectionStats,
}

struct Control {
    to_server: Impairment,
    to_client: Impairment,
    /// Absolute (start, end) of every outage.
    outages: Vec<(Instant, Instant)>,
    stats: RelayStats,
    stop: bool,
}

/// A running relay; dropping it stops the thread.
pub struct Relay {
    local: SocketAddr,
    control: Arc<Mutex<Control>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

const LISTEN: Token = Token(0);
const WAKE: Token = Token(1);
/// Tokens from here on are the per-client upstream sockets.
const FIRST_UPSTREAM: usize = 2;

impl Relay {
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        let poll = Poll::new()?;
        let mut listen = UdpSocket::bind(config.listen)?;
        poll.registry()
            .register(&mut listen, LISTEN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let local = listen.local_addr()?;
        let now = Instant::now();
        let control = Arc::new(Mutex::new(Control {
            to_server: config.to_server,
            to_client: config.to_client,
            outages: config
                .outages
                .iter()
                .map(|&(start, len)| (now + start, now + start + len))
                .collect(),
            stats: RelayStats::default(),
            stop: false,
        }));
        let mut worker = Worker {
            poll,
            listen,
            server: config.server,
            control: control.clone(),
            clients: HashMap::new(),
            upstreams: Vec::new(),
            lanes: [Lane::new(config.seed, 0), Lane::new(config.seed, 1)],
            queue: BinaryHeap::new(),
            next_seq: 0,
            buf: vec![0; 65536],
        };
        let thread = std::thread::Builder::new()
            .name("udp-impair".into())
            .spawn(move || worker.run())?;
        Ok(Relay {
            local,
            control,
            waker,
            thread: Some(thread),
        })
    }

    /// Where receivers should connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Changes one direction's impairment from now on (packets already scheduled keep theirs).
    pub fn set(&self, direction: Direction, impairment: Impairment) {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        match direction {
            Direction::ToServer => c.to_server = impairment,
            Direction::ToClient => c.to_client = impairment,
        }
    }

    /// Cuts the link both ways for `length`, starting now.
    pub fn outage(&self, length: Duration) {
        let now = Instant::now();
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        c.outages.push((now, now + length));
    }

    pub fn stats(&self) -> RelayStats {
        self.control.lock().unwrap_or_else(|e| e.into_inner()).stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.control.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Small, fast and seedable (SplitMix64): the relay needs repeatability, not cryptography.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// One direction's state: its generator, loss chain, cap queue and release order.
struct Lane {
    rng: Rng,
    bad: bool,
    /// When the capped link finishes sending what it has accepted.
    busy_until: Option<Instant>,
    /// (leaves the cap, bytes) for packets still in the cap's queue.
    in_queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    last_release: Option<Instant>,
}

impl Lane {
    fn new(seed: u64, lane: u64) -> Lane {
        Lane {
            rng: Rng(seed ^ lane.wrapping_mul(0xa076_1d64_78bd_642f)),
            bad: false,
            busy_until: None,
            in_queue: VecDeque::new(),
            queued_bytes: 0,
            last_release: None,
        }
    }

    /// Decides a packet's fate: Ok(release time) or Err(why it was dropped).
    fn admit(&mut self, imp: &Impairment, len: usize, now: Instant) -> Result<Instant, Dropped> {
        // Draw for loss every time, so one setting's choices do not shift another's.
        let random_loss = self.rng.chance(imp.loss);
        let burst_loss = match imp.burst {
            Some(ge) => {
                let flip = self.rng.unit();
                self.bad = if self.bad { flip >= ge.r } else { flip < ge.p };
                self.rng
                    .chance(if self.bad { ge.loss_bad } else { ge.loss_good })
            }
            None => false,
        };
        let jitter = imp.jitter.mul_f64(self.rng.unit());
        if random_loss || burst_loss {
            return Err(Dropped::Loss);
        }
        let mut leaves = now;
        if let Some(rate) = imp.rate_bps.filter(|r| *r > 0) {
            while self.in_queue.front().is_some_and(|(t, _)| *t <= now) {
                let (_, n) = self.in_queue.pop_front().unwrap_or((now, 0));
                self.queued_bytes -= n;
            }
            if self.queued_bytes + len > imp.queue_bytes.max(len) {
                return Err(Dropped::Queue);
            }
            let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
            leaves = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = Some(leaves);
            self.in_queue.push_back((leaves, len));
            self.queued_bytes += len;
        }
        let mut release = leaves + imp.delay + jitter;
        if !imp.reorder {
            if let Some(last) = self.last_release {
                release = release.max(last);
            }
        }
        self.last_release = Some(release);
        Ok(release)
    }
}

enum Dropped {
    Loss,
    Queue,
}

/// A packet waiting for its release time.
struct Scheduled {
    at: Instant,
    seq: u64,
    to_server: bool,
    client: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Worker {
    poll: Poll,
    listen: UdpSocket,
    server: SocketAddr,
    control: Arc<Mutex<Control>>,
    /// Each client gets its own upstream socket, so replies map back to it (like a NAT).
    clients: HashMap<SocketAddr, usize>,
    upstreams: Vec<(UdpSocket, SocketAddr)>,
    lanes: [Lane; 2],
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Worker {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = self
                .queue
                .peek()
                .map(|Reverse(s)| s.at.saturating_duration_since(Instant::now()));
            if self.poll.poll(&mut events, timeout).is_err() {
                return;
            }
            if self.control.lock().unwrap_or_else(|e| e.into_inner()).stop {
                return;
            }
            // The sockets are edge-triggered: read every one until it would block.
            self.read_clients();
            for i in 0..self.upstreams.len() {
                self.read_upstream(i);
            }
            self.release_due();
        }
    }

    fn read_clients(&mut self) {
        while let Ok((n, from)) = self.listen.recv_from(&mut self.buf) {
            if self.clients.contains_key(&from) || self.add_client(from).is_some() {
                self.admit(true, from, n);
            }
        }
    }

    fn add_client(&mut self, client: SocketAddr) -> Option<usize> {
        let any: SocketAddr = if self.server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .ok()?;
        let mut socket = UdpSocket::bind(any).ok()?;
        let index = self.upstreams.len();
        self.poll
            .registry()
            .register(
                &mut socket,
                Token(FIRST_UPSTREAM + index),
                Interest::READABLE,
            )
            .ok()?;
        self.upstreams.push((socket, client));
        self.clients.insert(client, index);
        Some(index)
    }

    fn read_upstream(&mut self, index: usize) {
        loop {
            let (socket, client) = &self.upstreams[index];
            let client = *client;
            match socket.recv_from(&mut self.buf) {
                Ok((n, _)) => self.admit(false, client, n),
                Err(_) => return,
            }
        }
    }

    /// Applies the direction's impairment to the `n` bytes in `buf`.
    fn admit(&mut self, to_server: bool, client: SocketAddr, n: usize) {
        let now = Instant::now();
        let mut guard = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut *guard;
        let (imp, stats) = if to_server {
            (&c.to_server, &mut c.stats.to_server)
        } else {
            (&c.to_client, &mut c.stats.to_client)
        };
        stats.received += 1;
        // Outages are checked first and draw nothing, so they do not shift the loss pattern.
        if c.outages.iter().any(|(s, e)| *s <= now && now < *e) {
            stats.outage_dropped += 1;
            return;
        }
        match self.lanes[usize::from(!to_server)].admit(imp, n, now) {
            Ok(at) => {
                stats.forwarded += 1;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.queue.push(Reverse(Scheduled {
                    at,
                    seq,
                    to_server,
                    client,
                    data: self.buf[..n].to_vec(),
                }));
            }
            Err(Dropped::Loss) => stats.lost += 1,
            Err(Dropped::Queue) => stats.queue_dropped += 1,
        }
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= now) {
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            if s.to_server {
                if let Some(&i) = self.clients.get(&s.client) {
                    let _ = self.upstreams[i].0.send_to(&s.data, self.server);
                }
            } else {
                let _ = self.listen.send_to(&s.data, s.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane_run(imp: &Impairment, seed: u64, packets: usize) -> Vec<Result<Duration, bool>> {
        let mut lane = Lane::new(seed, 0);
        let t0 = Instant::now();
        (0..packets)
            .map(|i| {
                let now = t0 + Duration::from_micros(100 * i as u64);
                lane.admit(imp, 1000, now)
                    .map(|at| at - t0)
                    .map_err(|d| matches!(d, Dropped::Loss))
            })
            .collect()
    }

    #[test]
    fn parses_the_cli_form() {
        let imp =
            Impairment::parse("delay=20ms,jitter=1.5ms,reorder,loss=1%,rate=3M,queue=64k").unwrap();
        assert_eq!(imp.delay, Duration::from_millis(20));
        assert_eq!(imp.jitter, Duration::from_micros(1500));
        assert!(imp.reorder);
        assert!((imp.loss - 0.01).abs() < 1e-12);
        assert_eq!((imp.rate_bps, imp.queue_bytes), (Some(3_000_000), 65536));
        let ge = Impairment::parse("burst=0.01:0.25:0:0.5")
            .unwrap()
            .burst
            .unwrap();
        assert_eq!(
            (ge.p, ge.r, ge.loss_good, ge.loss_bad),
            (0.01, 0.25, 0.0, 0.5)
        );
        for bad in ["delay=20", "loss=150%", "burst=1:2", "speed=3", "rate=3X"] {
            assert!(Impairment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn same_seed_same_fate() {
        let imp = Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            reorder: true,
            loss: 0.05,
            ..Impairment::default()
        };
        assert_eq!(lane_run(&imp, 7, 2000), lane_run(&imp, 7, 2000));
        assert_ne!(lane_run(&imp, 7, 2000), lane_run(&imp, 8, 2000));
    }

    #[test]
    fn loss_rate_and_bursts() {
        let random = Impairment {
            loss: 0.01,
            ..Impairment::default()
        };
        let lost = lane_run(&random, 3, 100_000)
            .iter()
            .filter(|r| r.is_err())
            .count();
        assert!((800..1200).contains(&lost), "1% of 100000: {lost}");

        // Mean burst 1/r = 5 packets, about 1% of the time in Bad.
        let bursty = Impairment {
            burst: Some(GilbertElliott {
                p: 0.002,
                r: 0.2,
                loss_good: 0.0,
                loss_bad: 1.0,
            }),
            ..Impairment::default()
        };
        let fates = lane_run(&bursty, 3, 100_000);
        let lost: Vec<usize> = (0..fates.len()).filter(|&i| fates[i].is_err()).collect();
        let runs = 1 + lost.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let mean_run = lost.len() as f64 / runs as f64;
        assert!((3.5..7.0).contains(&mean_run), "mean burst {mean_run}");
    }

    #[test]
    fn jitter_without_reorder_keeps_order() {
        let imp = Impairment {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            ..Impairment::default()
        };
        let times: Vec<Duration> = lane_run(&imp, 1, 1000).into_iter().flatten().collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let reordering = Impairment {
            reorder: true,
            ..imp
        };
        let times: Vec<Duration> = lane_run(&reordering, 1, 1000)
            .into_iter()
            .flatten()
            .collect();
        assert!(times.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn cap_paces_and_its_queue_drops() {
        // 1000-byte packets every 100 us is 80 Mbit/s into an 8 Mbit/s cap: one packet per
        // ms leaves, and the 10 kB queue overflows.
        let imp = Impairment {
            rate_bps: Some(8_000_000),
            queue_bytes: 10_000,
            ..Impairment::default()
        };
        let fates = lane_run(&imp, 1, 1000);
        let sent: Vec<Duration> = fates
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let queue_drops = fates.iter().filter(|r| matches!(r, Err(false))).count();
        assert!(queue_drops > 800, "{queue_drops}");
        assert!(sent
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_micros(999)));
    }

    #[test]
    fn relays_both_ways_and_cuts_outages() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let relay = Relay::start(RelayConfig::symmetric(
            server.local_addr().unwrap(),
            Impairment {
                delay: Duration::from_millis(5),
                ..Impairment::default()
            },
        ))
        .unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let sent = Instant::now();
        client.send_to(b"ping", relay.local_addr()).unwrap();
        let (n, via) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", via).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.local_addr()));
        assert!(
            sent.elapsed() >= Duration::from_millis(10),
            "two one-way delays"
        );

        relay.outage(Duration::from_secs(3600));
        client.send_to(b"lost", relay.local_addr()).unwrap();
        // The relay reads the datagram before it counts it; wait for the count, not a time.
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.stats().to_server.outage_dropped == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let s = relay.stats();
        assert_eq!(s.to_server.outage_dropped, 1);
        assert_eq!((s.to_server.forwarded, s.to_client.forwarded), (1, 1));
    }
}
