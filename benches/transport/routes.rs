//! (m) routes: one receiver reaching the same sender over two routes at once (issue 32).
//!
//! Each route is its own udp-impair relay in front of the sender. quicnalusrc dials route A
//! as its `address:port` and route B through `paths`; `path-mode` picks redundant (every
//! access unit over every route, the default) or bonded (spread by capacity). RIST, the
//! usual way to bond links for live video, carries RTP (rtph265pay) over ristsink/ristsrc
//! with both routes in `bonding-addresses`: broadcast (a copy over each) or round-robin.
//! A RIST route is two relays, RTP on an even port and RTCP on the next one, as RIST wants.

use crate::roles::Job;
use crate::{
    finish_pair, read_line, slow_link, spawn, ChildProc, PairResult, Ran, Transport, Workdir,
    BUDGET_MS,
};
use gst::prelude::*;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};
use udp_impair::{Direction, Impairment, Relay, RelayConfig};

/// The transports only this family runs, for `Transport::from_name`.
pub const TRANSPORTS: [Transport; 4] = [
    Transport::QuicnaluPaths,
    Transport::QuicnaluBonded,
    Transport::Rist,
    Transport::RistRoundRobin,
];

/// Frames per run: 10 s of the 720p30 clip.
const FRAMES: u64 = 300;
const FPS: f64 = 30.0;
/// Each route's relay seed: independent draws on the two routes.
const SEEDS: [u64; 2] = [7, 8];

/// One row of a scenario: what the receiver is and which routes it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// quicnalu over route A alone, every property at its default.
    Single,
    /// quicnalusrc `paths` (route B) at every default: redundant.
    Redundant,
    /// The same with `path-mode=bonded`.
    Bonded,
    /// ristsink/ristsrc over both routes, broadcast.
    Rist,
    /// ristsink `bonding-method=round-robin` over both routes.
    RistRoundRobin,
}

impl Row {
    pub fn transport(self) -> Transport {
        match self {
            Row::Single => Transport::QuicnaluDefaults,
            Row::Redundant => Transport::QuicnaluPaths,
            Row::Bonded => Transport::QuicnaluBonded,
            Row::Rist => Transport::Rist,
            Row::RistRoundRobin => Transport::RistRoundRobin,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Row::Single => "quicnalu, route A only",
            Row::Redundant => "quicnalu paths (redundant)",
            Row::Bonded => "quicnalu paths, path-mode=bonded",
            Row::Rist => "rist (broadcast)",
            Row::RistRoundRobin => "rist (round-robin)",
        }
    }
}

/// Two routes to the sender and what happens to them during the run.
pub struct RouteScenario {
    pub name: &'static str,
    /// Route A (quicnalusrc's `address:port`) and route B (its `paths`).
    pub routes: [Impairment; 2],
    /// (route, start after GO, length): the route cut both ways.
    pub outages: Vec<(usize, Duration, Duration)>,
    /// (route, after GO, new cap in bit/s); the route keeps its delay and queue.
    pub cap_steps: Vec<(usize, Duration, u64)>,
    pub rows: Vec<Row>,
    /// Print the stream's bytes per route per second.
    pub split: bool,
}

/// `ms` one-way delay, nothing else.
fn delay(ms: u64) -> Impairment {
    Impairment {
        delay: Duration::from_millis(ms),
        ..Impairment::default()
    }
}

/// Issue 32's table.
pub fn scenarios() -> Vec<RouteScenario> {
    let s = Duration::from_secs;
    let lossy = Impairment {
        jitter: Duration::from_millis(10),
        reorder: true,
        loss: 0.05,
        ..delay(20)
    };
    vec![
        RouteScenario {
            name: "(m) route A (20 ms) down 3 s at 4 s, route B 30 ms with 2% loss",
            routes: [
                delay(20),
                Impairment {
                    loss: 0.02,
                    ..delay(30)
                },
            ],
            outages: vec![(0, s(4), s(3))],
            cap_steps: Vec::new(),
            rows: vec![Row::Single, Row::Redundant, Row::Rist],
            split: false,
        },
        RouteScenario {
            name: "(m) both routes 20 ms, 5% loss, 10 ms jitter",
            routes: [lossy.clone(), lossy],
            outages: Vec::new(),
            cap_steps: Vec::new(),
            rows: vec![Row::Single, Row::Redundant, Row::Rist],
            split: false,
        },
        RouteScenario {
            name: "(m) both routes 20 ms, capped at 3 Mbit/s",
            routes: [slow_link(3_000_000), slow_link(3_000_000)],
            outages: Vec::new(),
            cap_steps: Vec::new(),
            rows: vec![
                Row::Single,
                Row::Bonded,
                Row::Redundant,
                Row::RistRoundRobin,
            ],
            split: true,
        },
        RouteScenario {
            name: "(m) routes 20 ms and 80 ms, the 20 ms one down 3 s at 4 s",
            routes: [delay(20), delay(80)],
            outages: vec![(0, s(4), s(3))],
            cap_steps: Vec::new(),
            rows: vec![Row::Redundant, Row::Rist],
            split: false,
        },
        RouteScenario {
            name: "(m) both routes 20 ms at 3 Mbit/s, B's cap 3 -> 1.5 -> 3 Mbit/s at 3 s and 6 s",
            routes: [slow_link(3_000_000), slow_link(3_000_000)],
            outages: Vec::new(),
            cap_steps: vec![(1, s(3), 1_500_000), (1, s(6), 3_000_000)],
            rows: vec![Row::Bonded, Row::RistRoundRobin],
            split: true,
        },
    ]
}

/// One run of the family and what it measured.
pub struct RouteRun {
    pub scenario: &'static str,
    pub row: Row,
    pub result: PairResult,
    /// The stream's bytes each route carried (A, B), in each second from GO.
    pub per_second: Vec<[u64; 2]>,
    /// ristsrc's `receiver-buffer`, ms.
    pub rist_buffer_ms: Option<u32>,
    /// The scenario asks for the split table.
    pub split: bool,
}

/// Why this quicnalusrc cannot run `row`, when it lacks the properties (they land with
/// issue 32).
fn missing_property(row: Row) -> Option<String> {
    let needs: &[&str] = match row {
        Row::Redundant => &["paths"],
        Row::Bonded => &["paths", "path-mode"],
        _ => &[],
    };
    let src = gst::ElementFactory::make("quicnalusrc").build().ok()?;
    needs
        .iter()
        .find(|p| src.find_property(p).is_none())
        .map(|p| format!("failed: no {p} property"))
}

/// ristsrc's `receiver-buffer` for the scenario: like SRT's latency in the (k) family, the
/// budget less 20 ms of headroom and the slowest route's one-way delay (and jitter), so that
/// a packet over either route can still be on time.
fn rist_buffer_ms(sc: &RouteScenario) -> u32 {
    let slowest = sc
        .routes
        .iter()
        .map(|r| r.delay + r.jitter)
        .max()
        .unwrap_or_default();
    BUDGET_MS - 20 - slowest.as_millis() as u32
}

/// A relay on a free loopback port, or on `port`, to `server`.
fn relay(server: SocketAddr, imp: &Impairment, seed: u64, port: u16) -> std::io::Result<Relay> {
    let mut config = RelayConfig::symmetric(server, imp.clone());
    config.seed = seed;
    config.listen.set_port(port);
    Relay::start(config)
}

/// A free even loopback port whose next one is free too (RIST's RTP and RTCP), found by
/// binding port 0 and reading it back.
fn even_port_pair() -> u16 {
    for _ in 0..1000 {
        let Ok(a) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let port = a.local_addr().map_or(1, |a| a.port());
        if port % 2 == 0 && port < u16::MAX && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free even port pair on loopback");
}

/// A RIST route to the receiver's `rtp_port` (RTCP on the next one): two relays, RTP on a
/// free even port and RTCP on the one after it, with the route's impairment each.
fn rist_route(rtp_port: u16, imp: &Impairment, seed: u64) -> Vec<Relay> {
    let to = |port| SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..1000 {
        let Ok(rtp) = relay(to(rtp_port), imp, seed, 0) else {
            continue;
        };
        let port = rtp.local_addr().port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = relay(to(rtp_port + 1), imp, seed + 100, port + 1) {
            return vec![rtp, rtcp];
        }
    }
    panic!("no free even port pair for a RIST relay");
}

/// Bytes of the stream each route has carried so far: what its relays forwarded from the
/// sender (for quicnalu the relay's client is the receiver, for RIST the sender).
fn route_bytes(routes: &[Vec<Relay>], rist: bool) -> [u64; 2] {
    let mut out = [0; 2];
    for (i, relays) in routes.iter().enumerate().take(2) {
        out[i] = relays
            .iter()
            .map(|r| {
                let s = r.stats();
                if rist {
                    s.to_server.forwarded_bytes
                } else {
                    s.to_client.forwarded_bytes
                }
            })
            .sum();
    }
    out
}

/// Runs `row` over `sc`: the routes' relays, the sender and the receiver, the scenario's
/// outages and cap steps on their routes, and a look at the relays' counts every second.
pub fn run(work: &Workdir, clip: &Path, sc: &RouteScenario, row: Row) -> RouteRun {
    let t = row.transport();
    let rist = t.is_rist();
    let rist_buffer = rist.then(|| rist_buffer_ms(sc));
    let done = |result| RouteRun {
        scenario: sc.name,
        row,
        result,
        per_second: Vec::new(),
        rist_buffer_ms: rist_buffer,
        split: sc.split,
    };
    if let Some(why) = missing_property(row) {
        return done(PairResult::failed(t, why));
    }
    let records = work.dir.join(format!("routes-{}.records", t.name()));
    let mut job = Job {
        transport: t,
        port: 0,
        content: clip.to_string_lossy().into_owned(),
        frames: FRAMES,
        fps: FPS,
        srt_latency_ms: rist_buffer.unwrap_or(0),
        src_latency_ms: None,
        cert: work.cert.clone(),
        key: work.key.clone(),
        records: records.to_string_lossy().into_owned(),
        live: None,
        receivers: 1,
        routes: String::new(),
    };
    let start = Duration::from_secs(30);
    let addresses = |ports: &[u16]| {
        let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        list.join(",")
    };
    let (mut send, recv): (ChildProc, ChildProc);
    let routes: Vec<Vec<Relay>>;
    if rist {
        // ristsrc listens: the receiver first, then the relays to its ports, then the
        // sender to the relays.
        let a = even_port_pair();
        let b = std::iter::repeat_with(even_port_pair)
            .find(|&p| p.abs_diff(a) > 1)
            .expect("a second port pair");
        job.routes = addresses(&[a, b]);
        recv = spawn("recv", &job);
        read_line(&recv, "READY", start);
        routes = [a, b]
            .iter()
            .zip(&sc.routes)
            .zip(SEEDS)
            .map(|((&port, imp), seed)| rist_route(port, imp, seed))
            .collect();
        let relay_ports: Vec<u16> = routes.iter().map(|r| r[0].local_addr().port()).collect();
        job.routes = addresses(&relay_ports);
        send = spawn("send", &job);
        read_line(&send, "PORT", start);
    } else {
        send = spawn("send", &job);
        let port = read_line(&send, "PORT", start);
        let port = port.first().and_then(|p| p.parse().ok()).unwrap_or(0);
        let server = SocketAddr::from(([127, 0, 0, 1], port));
        routes = sc
            .routes
            .iter()
            .zip(SEEDS)
            .map(|(imp, seed)| vec![relay(server, imp, seed, 0).expect("relay")])
            .collect();
        job.port = routes[0][0].local_addr().port();
        if row != Row::Single {
            job.routes = addresses(&[routes[1][0].local_addr().port()]);
        }
        recv = spawn("recv", &job);
        read_line(&recv, "READY", start);
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = writeln!(send.stdin, "GO");
    let t0 = gstquicnalu::media::monotonic_ns();
    let go = Instant::now();

    // The run's timeline: outages and cap steps on their routes, and a look at the relays'
    // counts each second until a second after the stream.
    enum Event {
        Outage(usize, Duration),
        Cap(usize, u64),
        Sample,
    }
    let stream = Duration::from_secs_f64(FRAMES as f64 / FPS);
    let mut events: Vec<(Duration, Event)> = (1..=stream.as_secs() + 1)
        .map(|s| (Duration::from_secs(s), Event::Sample))
        .collect();
    events.extend(
        sc.outages
            .iter()
            .map(|&(route, at, length)| (at, Event::Outage(route, length))),
    );
    events.extend(
        sc.cap_steps
            .iter()
            .map(|&(route, at, bps)| (at, Event::Cap(route, bps))),
    );
    events.sort_by_key(|e| e.0);
    let mut link_back = None;
    let mut cap_changes = Vec::new();
    let mut totals = Vec::new();
    for (at, event) in events {
        std::thread::sleep((go + at).saturating_duration_since(Instant::now()));
        match event {
            Event::Outage(route, length) => {
                for r in &routes[route] {
                    r.outage(length);
                }
                link_back = Some(t0 + (at + length).as_nanos() as u64);
            }
            Event::Cap(route, bps) => {
                let imp = Impairment {
                    rate_bps: Some(bps),
                    ..sc.routes[route].clone()
                };
                for r in &routes[route] {
                    for d in [Direction::ToServer, Direction::ToClient] {
                        r.set(d, imp.clone());
                    }
                }
                cap_changes.push(gstquicnalu::media::monotonic_ns());
            }
            Event::Sample => totals.push(route_bytes(&routes, rist)),
        }
    }
    let per_second = std::iter::once([0, 0])
        .chain(totals.iter().copied())
        .zip(&totals)
        .map(|(a, b)| [b[0] - a[0], b[1] - a[1]])
        .collect();

    let run = stream + Duration::from_secs(90);
    let ran = Ran {
        link_back,
        cap_changes,
        go: t0,
        stream_ns: stream.as_nanos() as u64,
    };
    let result = finish_pair(t, [send, recv], run, &records, ran);
    drop(routes);
    RouteRun {
        per_second,
        ..done(result)
    }
}

/// Frames output with a lower number than one output before them, and frames output more
/// than once.
fn out_of_order_and_duplicates(r: &PairResult) -> (usize, usize) {
    let mut seen = HashSet::new();
    let (mut highest, mut backwards, mut duplicates) = (None, 0, 0);
    for f in &r.frames {
        if highest.is_some_and(|h| f.0 < h) {
            backwards += 1;
        }
        highest = highest.max(Some(f.0));
        if !seen.insert(f.0) {
            duplicates += 1;
        }
    }
    (backwards, duplicates)
}

/// The family's tables: one row per scenario and row, then how bonded runs split the
/// stream over the routes, second by second.
pub fn report(runs: &[RouteRun], stream_bps: f64) -> String {
    let mut md = format!(
        "\n### (m) Routes: one receiver over two routes to the same sender, 10 s, budget \
         {BUDGET_MS} ms\n\n\
         The recorded 720p30 clip at {:.1} Mbit/s (an IRAP every 2 s), sender and receiver \
         with every property at its default. Each route is its own relay (route A seed 7, \
         route B seed 8, the impairment both ways) in front of the same quicnalusink; \
         quicnalusrc dials route A as `address:port` and route B through `paths` (route A \
         only: no `paths`). Capped routes are the (k) link: 20 ms each way, the cap both \
         ways with a 64 KiB queue. rist: rtph265pay into ristsink with both routes in \
         `bonding-addresses` (broadcast: a copy over each; round-robin: shared), ristsrc \
         with `receiver-buffer` the budget less 20 ms and the slower route's one-way delay \
         and jitter (the buffer column), rtph265depay; a RIST route is two relays (RTP, \
         and RTCP on the next port). On time: decodable and out of the source within \
         {BUDGET_MS} ms, % of frames sent. Stall: the longest time between two decodable \
         frames leaving the source, from 2 s after the first to the end of the stream. Out \
         of order: frames output after one with a higher number; repeated: frames output \
         twice. Route A / B: Mbit/s of the sender's packets each route's relay forwarded, \
         over the stream. CPU: % of one core over the stream, sender / receiver process.\n\n\
         | scenario | row | frames | on time | p50 ms | p99 ms | stall ms | out of order | \
         repeated | route A / B Mbit/s | CPU % send / recv | rist buffer ms | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        stream_bps / 1e6
    );
    let mbps = |bytes: u64, seconds: f64| bytes as f64 * 8.0 / seconds / 1e6;
    for run in runs {
        let r = &run.result;
        let seconds = r.stream_ns as f64 / 1e9;
        if r.sent == 0 {
            let _ = writeln!(
                md,
                "| {} | {} | - | - | - | - | - | - | - | - | - | - | {} |",
                run.scenario,
                run.row.label(),
                r.error.as_deref().unwrap_or("")
            );
            continue;
        }
        let (backwards, repeated) = out_of_order_and_duplicates(r);
        let stream_seconds = run.per_second.iter().take(seconds as usize);
        let (a, b) = stream_seconds.fold((0, 0), |(a, b), s| (a + s[0], b + s[1]));
        let _ = writeln!(
            md,
            "| {} | {} | {} / {} | {:.1}% | {:.1} | {:.1} | {} | {backwards} | {repeated} | \
             {:.2} / {:.2} | {:.1} / {:.1} | {} | {} |",
            run.scenario,
            run.row.label(),
            r.frames.len(),
            r.sent,
            r.on_time_after(0),
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.picture_stall_ms()
                .map_or("never".to_string(), |s| format!("{s:.0}")),
            mbps(a, seconds),
            mbps(b, seconds),
            100.0 * r.cpu_send / seconds,
            100.0 * r.cpu_recv / seconds,
            run.rist_buffer_ms
                .map_or("-".to_string(), |b| b.to_string()),
            r.error.as_deref().unwrap_or("")
        );
    }
    let split: Vec<&RouteRun> = runs
        .iter()
        .filter(|r| r.split && r.result.sent > 0)
        .collect();
    if split.is_empty() {
        return md;
    }
    let seconds = split.iter().map(|r| r.per_second.len()).max().unwrap_or(0);
    let _ = write!(
        md,
        "\nHow the capped scenarios split the stream: Mbit/s of the sender's packets each route's \
         relay forwarded, in each second from GO (second 11 is the tail after the stream).\n\n\
         | scenario | row | route |"
    );
    for s in 1..=seconds {
        let _ = write!(md, " {s} |");
    }
    let _ = write!(md, "\n|---|---|---|");
    md.push_str(&"---|".repeat(seconds));
    md.push('\n');
    for run in split {
        for (route, name) in ["A", "B"].iter().enumerate() {
            let _ = write!(md, "| {} | {} | {name} |", run.scenario, run.row.label());
            for s in &run.per_second {
                let _ = write!(md, " {:.2} |", mbps(s[route], 1.0));
            }
            md.push('\n');
        }
    }
    md
}
