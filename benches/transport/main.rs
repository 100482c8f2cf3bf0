//! quicnalu's transport benchmark: quicnalu against srtsink/srtsrc, tcpserversink/
//! tcpclientsrc and RTP over raw udpsink/udpsrc (the floor), on the same content, in one run.
//!
//!     make bench            # = cargo bench --profile testing --bench transport -- --out docs
//!     cargo bench --profile testing --bench transport -- [--quick] [--only quicnalu]
//!         [--rates 400,1000] [--relay] [--scenarios a,e,fanout,throughput,l,k,m]
//!         [--match '5% loss'] [--runs 3]
//!     QUICNALU_BENCH_CC=cubic cargo bench ...   # another congestion-control for quicnalu
//!
//! Every pair runs as two child processes (sender, receiver) on loopback, both timing on
//! CLOCK_MONOTONIC, each measuring its own CPU. Frames are stamped with a suffix SEI as they
//! leave the sender's pacer (see stamp.rs) and read where they leave the transport's source.

mod fanout;
// The tests' relay fixture; the bench uses part of it.
#[allow(dead_code)]
#[path = "../../tests/common/moq.rs"]
mod moq_relay;
mod report;
mod roles;
mod routes;
mod stamp;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use udp_impair::{Direction, GilbertElliott, Impairment, Relay, RelayConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// quicnalu tuned for the bench: quicnalusink `latency-budget=200`.
    Quicnalu,
    /// quicnalu with every property at its default (the budget is negotiated from
    /// quicnalusrc's `latency`).
    QuicnaluDefaults,
    /// quicnalusink to a moq-relay, quicnalusrc from it, every property at its default.
    QuicnaluMoq,
    /// moq-dev's own moqsink and moqsrc through the same moq-relay.
    MoqDev,
    Srt,
    /// SRT at latency 120, its usual live setting: the loss sweep's reference.
    Srt120,
    /// SRT with a 20 ms latency: its TSBPD holds every packet for the latency, so this shows
    /// SRT at its fastest rather than at the shared budget.
    SrtLow,
    Tcp,
    Udp,
    /// quicnalusrc with a second route (`paths`), every property at its default.
    QuicnaluPaths,
    /// The same with `path-mode=bonded`.
    QuicnaluBonded,
    /// RTP (rtph265pay) over ristsink/ristsrc, a copy of every packet on each route.
    Rist,
    /// ristsink `bonding-method=round-robin`: the packets shared among the routes.
    RistRoundRobin,
}

pub const ALL: [Transport; 5] = [
    Transport::Quicnalu,
    Transport::Srt,
    Transport::SrtLow,
    Transport::Tcp,
    Transport::Udp,
];

/// What the loss sweep compares, in every row.
pub const SWEEP: [Transport; 3] = [
    Transport::QuicnaluDefaults,
    Transport::Quicnalu,
    Transport::Srt120,
];

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Quicnalu => "quicnalu",
            Transport::QuicnaluDefaults => "quicnalu-defaults",
            Transport::QuicnaluMoq => "quicnalu-moq",
            Transport::MoqDev => "moq-dev",
            Transport::Srt => "srt",
            Transport::Srt120 => "srt-120",
            Transport::SrtLow => "srt-20ms",
            Transport::Tcp => "tcp",
            Transport::Udp => "rtp-udp",
            Transport::QuicnaluPaths => "quicnalu-paths",
            Transport::QuicnaluBonded => "quicnalu-bonded",
            Transport::Rist => "rist",
            Transport::RistRoundRobin => "rist-round-robin",
        }
    }

    fn from_name(name: &str) -> Transport {
        ALL.into_iter()
            .chain(SWEEP)
            .chain([Transport::QuicnaluMoq, Transport::MoqDev])
            .chain(routes::TRANSPORTS)
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("unknown transport {name}"))
    }

    pub fn is_quicnalu(self) -> bool {
        matches!(
            self,
            Transport::Quicnalu
                | Transport::QuicnaluDefaults
                | Transport::QuicnaluMoq
                | Transport::QuicnaluPaths
                | Transport::QuicnaluBonded
        )
    }

    pub fn is_rist(self) -> bool {
        matches!(self, Transport::Rist | Transport::RistRoundRobin)
    }

    pub fn is_srt(self) -> bool {
        matches!(self, Transport::Srt | Transport::SrtLow | Transport::Srt120)
    }

    /// SRT's TSBPD delivers every packet exactly its latency after sending, so at the full
    /// budget every frame would be a little late: it gets the budget minus 20 ms headroom.
    fn srt_latency(self, budget_ms: u32) -> u32 {
        match self {
            Transport::SrtLow => 20,
            Transport::Srt120 => 120,
            _ => budget_ms - 20,
        }
    }
}

/// Latency budget: a frame later than this is late; SRT gets it as its latency.
pub const BUDGET_MS: u32 = 200;

/// One frame received: (seq, latency ns, the frame it depends on: None for an IRAP).
pub type Arrived = (u64, u64, Option<u64>);

/// What one sender/receiver pair measured.
pub struct PairResult {
    pub transport: Transport,
    pub sent: u64,
    /// In arrival order.
    pub frames: Vec<Arrived>,
    /// Arrival on CLOCK_MONOTONIC (ns) of each entry in `frames`.
    pub arrivals: Vec<u64>,
    /// Bytes out of the source credited to each entry in `frames`: all since the one before.
    pub sizes: Vec<u64>,
    pub bytes: u64,
    pub cpu_send: f64,
    pub cpu_recv: f64,
    pub error: Option<String>,
    /// When the relay's outage ended (CLOCK_MONOTONIC ns), in the outage scenario.
    pub link_back: Option<u64>,
    /// When the link's cap changed (CLOCK_MONOTONIC ns), in the stepping scenario.
    pub cap_changes: Vec<u64>,
    /// When the sender was told GO (CLOCK_MONOTONIC ns), where known.
    pub go: Option<u64>,
    /// The stream's length: frames asked for over the frame rate, ns.
    pub stream_ns: u64,
}

impl PairResult {
    /// Frames that arrived with every picture they need: an IRAP, or a frame whose latest
    /// reference picture before it is itself decodable (non-reference B pictures may be
    /// missing without harm).
    pub fn decodable(&self) -> u64 {
        self.decodable_mask().iter().filter(|&&ok| ok).count() as u64
    }

    pub fn late(&self, budget_ns: u64) -> u64 {
        self.frames.iter().filter(|f| f.1 > budget_ns).count() as u64
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(self.frames.iter().map(|f| f.1).collect(), p)
    }

    /// Whether each frame in `frames` is decodable (see [`PairResult::decodable`]).
    fn decodable_mask(&self) -> Vec<bool> {
        let mut by_seq: Vec<(u64, Option<u64>)> = self.frames.iter().map(|f| (f.0, f.2)).collect();
        by_seq.sort_unstable();
        by_seq.dedup();
        // In sequence order a frame's dependency comes before it.
        let mut ok_seqs = std::collections::HashSet::new();
        for (seq, depends_on) in by_seq {
            if depends_on.is_none_or(|d| ok_seqs.contains(&d)) {
                ok_seqs.insert(seq);
            }
        }
        self.frames.iter().map(|f| ok_seqs.contains(&f.0)).collect()
    }

    /// The longest time without a frame arriving, between the first and the last, in ms.
    pub fn longest_stall_ms(&self) -> f64 {
        let mut a = self.arrivals.clone();
        a.sort_unstable();
        a.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / 1e6
    }

    /// From the end of the outage to live playback again: the first decodable frame that
    /// arrives after it within the budget, in ms.
    pub fn recovery_ms(&self) -> Option<f64> {
        let back = self.link_back?;
        let budget = u64::from(BUDGET_MS) * 1_000_000;
        let mask = self.decodable_mask();
        self.frames
            .iter()
            .zip(&self.arrivals)
            .zip(mask)
            .filter(|((f, a), ok)| *ok && **a > back && f.1 <= budget)
            .map(|((_, a), _)| (*a - back) as f64 / 1e6)
            .reduce(f64::min)
    }

    /// Bytes out of the receiver over the time from its first frame to its last, Mbit/s.
    pub fn delivered_mbps(&self) -> f64 {
        let (first, last) = (self.arrivals.iter().min(), self.arrivals.iter().max());
        match (first, last) {
            (Some(f), Some(l)) if l > f => self.bytes as f64 * 8.0 / ((l - f) as f64 / 1e9) / 1e6,
            _ => f64::NAN,
        }
    }

    /// Of the frames sent after the first `skip`, the share (%) that arrived decodable and
    /// within the budget.
    pub fn on_time_after(&self, skip: u64) -> f64 {
        let budget = u64::from(BUDGET_MS) * 1_000_000;
        let mask = self.decodable_mask();
        let on_time = self
            .frames
            .iter()
            .zip(mask)
            .filter(|(f, ok)| *ok && f.0 >= skip && f.1 <= budget)
            .count();
        100.0 * on_time as f64 / self.sent.saturating_sub(skip).max(1) as f64
    }

    /// Of the frames sent from `after` past the end of the outage, the share (%) that
    /// arrived decodable and within the budget. A frame's send time is its arrival less its
    /// latency; the first frame sent then is the lowest such sequence number.
    pub fn on_time_after_link(&self, after: Duration) -> Option<f64> {
        let from = self.link_back? + after.as_nanos() as u64;
        let first = self
            .frames
            .iter()
            .zip(&self.arrivals)
            .filter(|(f, a)| a.saturating_sub(f.1) >= from)
            .map(|(f, _)| f.0)
            .min()?;
        Some(self.on_time_after(first))
    }

    /// From a change of the link at `t` (CLOCK_MONOTONIC ns) until the first of 30 frames
    /// in a row that arrive decodable and within the budget, in ms.
    pub fn reconverge_ms(&self, t: u64) -> Option<f64> {
        let budget = u64::from(BUDGET_MS) * 1_000_000;
        let mask = self.decodable_mask();
        let good: Vec<(u64, bool)> = self
            .arrivals
            .iter()
            .zip(self.frames.iter().zip(mask))
            .map(|(a, (f, ok))| (*a, ok && f.1 <= budget))
            .filter(|(a, _)| *a >= t)
            .collect();
        good.windows(30)
            .find(|w| w.iter().all(|(_, ok)| *ok))
            .map(|w| (w[0].0 - t) as f64 / 1e6)
    }

    /// The smallest budget (ms) at which 99.9% of the frames sent arrive decodable and
    /// within it; None when fewer than 99.9% arrive decodable at all.
    pub fn budget_for_999_ms(&self) -> Option<f64> {
        let mask = self.decodable_mask();
        let mut l: Vec<u64> = self
            .frames
            .iter()
            .zip(mask)
            .filter(|(_, ok)| *ok)
            .map(|(f, _)| f.1)
            .collect();
        l.sort_unstable();
        let need = ((self.sent as f64) * 0.999).ceil() as usize;
        (need > 0 && l.len() >= need).then(|| l[need - 1] as f64 / 1e6)
    }

    /// Of the frames sent, the share (%) that left the source decodable and within
    /// `budget_ns` (a row's own latency, where [`PairResult::on_time_after`] has BUDGET_MS).
    pub fn on_time_pct(&self, budget_ns: u64) -> f64 {
        let on_time = self
            .frames
            .iter()
            .zip(self.decodable_mask())
            .filter(|(f, ok)| *ok && f.1 <= budget_ns)
            .count();
        100.0 * on_time as f64 / self.sent.max(1) as f64
    }

    /// Of the frames sent, the share (%) that left the source decodable, however late.
    pub fn decodable_pct(&self) -> f64 {
        100.0 * self.decodable() as f64 / self.sent.max(1) as f64
    }

    /// When each decodable frame left the source (CLOCK_MONOTONIC ns), in time order.
    fn decodable_arrivals(&self) -> Vec<u64> {
        let mut a: Vec<u64> = self
            .arrivals
            .iter()
            .zip(self.decodable_mask())
            .filter(|(_, ok)| *ok)
            .map(|(a, _)| *a)
            .collect();
        a.sort_unstable();
        a
    }

    /// From GO to the first decodable frame leaving the source, ms.
    pub fn first_picture_ms(&self) -> Option<f64> {
        let first = *self.decodable_arrivals().first()?;
        Some(first.saturating_sub(self.go?) as f64 / 1e6)
    }

    /// The longest the picture stood still, ms: the longest time between two decodable
    /// frames leaving the source, counted from 2 s after the first frame left it (start-up
    /// is [`PairResult::first_picture_ms`]) to the end of the stream (GO plus its length),
    /// so that a picture that stops for good counts to the end. None when no frame left.
    pub fn picture_stall_ms(&self) -> Option<f64> {
        let from = self.arrivals.iter().min()? + 2_000_000_000;
        let end = self.go.map_or(from, |go| go + self.stream_ns);
        let mut t = vec![from];
        t.extend(self.decodable_arrivals().into_iter().filter(|&a| a > from));
        let last = *t.last().expect("from");
        let gaps = t.windows(2).map(|w| w[1] - w[0]);
        Some(gaps.chain([end.saturating_sub(last)]).max().unwrap_or(0) as f64 / 1e6)
    }

    /// A percentile of the picture's age as it leaves the source: the latency of the
    /// decodable frames, ms.
    pub fn picture_age_ms(&self, p: f64) -> f64 {
        let ages = self.frames.iter().zip(self.decodable_mask());
        percentile_ms(ages.filter(|(_, ok)| *ok).map(|(f, _)| f.1).collect(), p)
    }

    /// The rate the link sustains once settled: bytes out of the source of the frames sent
    /// in the second half of the stream (GO plus half its length to GO plus its length), in
    /// Mbit/s of that half; NaN without GO. Counted by send time (arrival less latency):
    /// moqsrc outputs a whole group at once, so a window on arrivals holds a 2 s burst more
    /// or less.
    pub fn steady_mbps(&self) -> f64 {
        let Some(go) = self.go else {
            return f64::NAN;
        };
        let (from, to) = (go + self.stream_ns / 2, go + self.stream_ns);
        let bytes: u64 = (self.frames.iter().zip(&self.arrivals).zip(&self.sizes))
            .filter(|((f, a), _)| (from..to).contains(&a.saturating_sub(f.1)))
            .map(|(_, b)| b)
            .sum();
        bytes as f64 * 8.0 / ((to - from) as f64 / 1e9) / 1e6
    }

    /// A run that could not be made, and why.
    pub fn failed(transport: Transport, error: String) -> PairResult {
        PairResult {
            transport,
            sent: 0,
            frames: Vec::new(),
            arrivals: Vec::new(),
            sizes: Vec::new(),
            bytes: 0,
            cpu_send: f64::NAN,
            cpu_recv: f64::NAN,
            error: Some(error),
            link_back: None,
            cap_changes: Vec::new(),
            go: None,
            stream_ns: 0,
        }
    }

    /// Sustained with no frame lost or late.
    pub fn clean(&self) -> bool {
        self.error.is_none()
            && self.frames.len() as u64 == self.sent
            && self.late(u64::from(BUDGET_MS) * 1_000_000) == 0
    }
}

/// The `p` percentile of latencies in ns, ms; NaN for none.
fn percentile_ms(mut l: Vec<u64>, p: f64) -> f64 {
    if l.is_empty() {
        return f64::NAN;
    }
    l.sort_unstable();
    l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    gst::init().expect("gst init");
    gstquicnalu::plugin_register_static().expect("register quicnalu");
    match args.first().map(String::as_str) {
        Some("--role=send") => roles::sender(&roles::Job::from_args(&args[1..])),
        Some("--role=recv") => roles::receiver(&roles::Job::from_args(&args[1..])),
        _ => orchestrate(&args),
    }
}

struct Workdir {
    dir: PathBuf,
    cert: String,
    key: String,
}

fn orchestrate(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    // `--relay`: only the relay scenarios.
    let relay_only = args.iter().any(|a| a == "--relay");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|name| Transport::from_name(name));
    let transports: Vec<Transport> = ALL
        .into_iter()
        .filter(|t| only.is_none_or(|o| o == *t))
        .collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let out = value("--out").map(PathBuf::from);
    // `--scenarios a,e,fanout`: only these scenarios, neither latency nor sweep.
    let only_scenarios: Option<Vec<String>> =
        value("--scenarios").map(|l| l.split(',').map(|x| format!("({x})")).collect());
    // `--match 'loss, 10'`: of those, only the scenarios whose name contains this.
    let matching = value("--match");
    let wanted = |name: &str| {
        only_scenarios
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| name.starts_with(x.as_str())))
            && matching.is_none_or(|m| name.contains(m.as_str()))
    };
    let standard = !relay_only && only_scenarios.is_none();
    // `--rates 400,1000`: only these sweep steps (for profiling one rate).
    let only_rates: Option<Vec<f64>> = value("--rates").map(|list| {
        list.split(',')
            .map(|r| r.parse().expect("--rates takes Mbit/s numbers"))
            .collect()
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let (cert, key) = certificate(&dir);
    let work = Workdir { dir, cert, key };

    let clip = work.dir.join("clip-720p30-4mbps.h265");
    if !clip.exists() {
        eprintln!("encoding the 720p30 4 Mbit/s clip ...");
        encode_clip(&clip);
    }
    let seconds = if quick { 4 } else { 10 };
    if standard {
        eprintln!("latency: 720p30 ~4 Mbit/s, {seconds} s per transport");
    }
    // quicnalu with its defaults too, after the tuned one.
    let with_defaults: Vec<Transport> = transports
        .iter()
        .flat_map(|&t| {
            let defaults = (t == Transport::Quicnalu).then_some(Transport::QuicnaluDefaults);
            std::iter::once(t).chain(defaults)
        })
        .collect();
    let latency: Vec<PairResult> = with_defaults
        .iter()
        .filter(|_| standard)
        .map(|&t| run_pair(&work, t, &clip, seconds * 30, 30.0, None))
        .collect();

    let jelly = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/media/vkcts-jellyfish-250-mbps-4k-uhd-GOB-IPB13.h265");
    // `--scenarios throughput`: the throughput sweep alone.
    let throughput =
        standard || (!relay_only && only_scenarios.is_some() && wanted("(throughput)"));
    let aus = if throughput {
        roles::load_access_units(&jelly.to_string_lossy())
    } else {
        Vec::new()
    };
    let mean_bits = aus.iter().map(|a| a.0.len()).sum::<usize>() as f64 * 8.0 / aus.len() as f64;
    let default_rates: &[f64] = if quick {
        &[25.0, 100.0, 400.0, 1000.0]
    } else {
        &[
            10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 700.0, 1000.0, 1400.0, 2000.0, 2800.0, 4000.0,
        ]
    };
    let rates = only_rates.as_deref().unwrap_or(default_rates);
    let step_seconds = if quick { 2.0 } else { 3.0 };
    let mut sweep: Vec<(f64, PairResult)> = Vec::new();
    for &t in transports.iter().filter(|_| throughput) {
        for &mbps in rates {
            let fps = mbps * 1e6 / mean_bits;
            let frames = (fps * step_seconds) as u64;
            eprintln!("throughput: {} at {mbps} Mbit/s ({fps:.0} fps)", t.name());
            let r = run_pair(&work, t, &jelly, frames, fps, None);
            let clean = r.clean();
            sweep.push((mbps, r));
            if !clean {
                break;
            }
        }
    }
    // Bad networks: the relay between a listening sender and its receiver, 10 s of the
    // 720p clip, quicnalu against SRT at the same budget.
    let clip_bps = std::fs::metadata(&clip).map_or(4e6, |m| m.len() as f64 * 8.0 / 10.0);
    let mut impaired: Vec<(&'static str, PairResult)> = Vec::new();
    for sc in scenarios(clip_bps).into_iter().filter(|sc| wanted(sc.name)) {
        // adapt-bitrate is quicnalu's own: SRT runs each link once, without it.
        let adapt = sc.live.is_some_and(|l| l.adapt == Some(true));
        // Every quicnalu scenario with the elements' defaults too (but adapt-bitrate).
        let defaults = (!adapt).then_some(Transport::QuicnaluDefaults);
        for &t in transports
            .iter()
            .filter(|t| **t == Transport::Quicnalu || (**t == Transport::Srt && !adapt))
            .chain(defaults.iter().filter(|d| only.is_none_or(|o| o == **d)))
        {
            eprintln!("relay: {} over {}", t.name(), sc.name);
            impaired.push((sc.name, run_pair(&work, t, &clip, 300, 30.0, Some(&sc))));
        }
    }
    // The loss sweep: every row `runs` times per transport, the worst run reported.
    let runs: usize = value("--runs").map_or(3, |n| n.parse().expect("--runs takes a count"));
    let mut losses: Vec<(&'static str, Vec<PairResult>)> = Vec::new();
    for sc in loss_sweep().into_iter().filter(|sc| wanted(sc.name)) {
        for &t in SWEEP.iter().filter(|t| only.is_none_or(|o| o == **t)) {
            let results = (0..runs)
                .map(|i| {
                    eprintln!("loss sweep: {} over {}, run {}", t.name(), sc.name, i + 1);
                    run_pair(&work, t, &clip, 300, 30.0, Some(&sc))
                })
                .collect();
            losses.push((sc.name, results));
        }
    }
    // (k) the link slower than the stream: each row with quicnalu at its defaults, SRT and
    // moq-dev, every frame judged against the row's own latency.
    let mut slow: Vec<report::SlowRun> = Vec::new();
    let slow_rows = slow_links(clip_bps, src_default_latency_ms());
    for sc in slow_rows.iter().filter(|sc| wanted(sc.name)) {
        for &t in SLOW.iter().filter(|t| only.is_none_or(|o| o == **t)) {
            eprintln!("slow link: {} over {}", t.name(), sc.name);
            slow.push(report::SlowRun {
                name: sc.name,
                cap_bps: sc.impairment.rate_bps.unwrap_or(0),
                latency_ms: sc.latency_ms.unwrap_or(BUDGET_MS),
                result: run_slow(&work, t, &clip, sc),
            });
        }
    }
    let mut fanouts = Vec::new();
    let mut joins = Vec::new();
    if !relay_only && wanted("(fanout)") {
        // The recorded clip, not a live encoder: the encoder's half a core, a few % more or
        // less from run to run, would drown the sender's cost per receiver.
        let (counts, seconds): (&[u32], u64) = if quick {
            (&[1, 4, 16], 4)
        } else {
            (&[1, 2, 4, 8, 16, 32, 64, 128, 256, 384], 8)
        };
        // The joiner: a live encoder with IRAPs 5 s apart (3 s quick), joined half way into
        // the second group, so that waiting for the next IRAP takes seconds.
        let key_s = if quick { 3 } else { 5 };
        for &t in transports
            .iter()
            .filter(|t| matches!(t, Transport::Quicnalu | Transport::Srt))
        {
            for &n in counts {
                eprintln!("fan-out: {} to {n} receivers", t.name());
                let f = fanout::run(&work, t, n, seconds * 30, &clip, None, None);
                let on_time = f.all_on_time();
                fanouts.push(f);
                if !on_time {
                    break;
                }
            }
            eprintln!("late joiner: {}", t.name());
            let sparse = roles::Live {
                key_int: key_s * 30,
                ..live(Some(false))
            };
            let at = Duration::from_secs_f64(f64::from(key_s) * 1.5);
            joins.push(fanout::run(
                &work,
                t,
                1,
                u64::from(key_s) * 72,
                &clip,
                Some(sparse),
                Some(at),
            ));
        }
    }
    // Through a MoQ relay: moq-dev's moq-relay (pinned by scripts/install-moq-peers.sh),
    // against the direct connection in the same run, then N subscribers behind it.
    let mut moq_pairs = Vec::new();
    let mut moq_fanouts = Vec::new();
    if !relay_only && wanted("(moq)") {
        let relay = moq_relay::MoqRelay::start();
        // moq-dev's elements too (the same script), found by the children here.
        std::env::set_var("QUICNALU_MOQ_GST", moq_relay::moq_gst_dir());
        // The child processes find the relay here.
        std::env::set_var(
            roles::MOQ_ENV,
            format!("{} {}", relay.url(), relay.fingerprint()),
        );
        for t in [
            Transport::QuicnaluDefaults,
            Transport::QuicnaluMoq,
            Transport::MoqDev,
        ] {
            eprintln!("moq: {} latency", t.name());
            moq_pairs.push(run_pair(&work, t, &clip, seconds * 30, 30.0, None));
        }
        let (counts, fan_seconds): (&[u32], u64) = if quick {
            (&[1, 8, 32], 4)
        } else {
            (&[1, 8, 32, 64, 128, 256], 8)
        };
        for &n in counts {
            eprintln!("moq: fan-out to {n} subscribers");
            let cpu0 = relay.cpu_seconds();
            let f = fanout::run(
                &work,
                Transport::QuicnaluMoq,
                n,
                fan_seconds * 30,
                &clip,
                None,
                None,
            );
            let relay_cpu = relay.cpu_seconds() - cpu0;
            let on_time = f.all_on_time();
            moq_fanouts.push((f, relay_cpu));
            if !on_time {
                break;
            }
        }
    }
    // (m) routes: two relays in front of one sender, one receiver over both.
    let mut routed = Vec::new();
    for sc in routes::scenarios().iter().filter(|sc| wanted(sc.name)) {
        for &row in sc
            .rows
            .iter()
            .filter(|r| only.is_none_or(|o| o == r.transport()))
        {
            eprintln!("routes: {} over {}", row.label(), sc.name);
            routed.push(routes::run(&work, &clip, sc, row));
        }
    }
    let mut md = String::new();
    if !moq_pairs.is_empty() {
        md.push_str(&report::moq(&moq_pairs, &moq_fanouts));
    }
    if standard || !sweep.is_empty() {
        md.push_str(&report::markdown(&latency, &sweep, seconds));
    }
    if !losses.is_empty() {
        md.push_str(&report::loss_sweep(&losses, clip_bps));
    }
    if !impaired.is_empty() {
        md.push_str(&report::impaired(&impaired, clip_bps));
    }
    if !slow.is_empty() {
        md.push_str(&report::slow_links(&slow, clip_bps));
    }
    if !fanouts.is_empty() || !joins.is_empty() {
        md.push_str(&report::fanout(&fanouts, &joins));
    }
    if !routed.is_empty() {
        md.push_str(&routes::report(&routed, clip_bps));
    }
    println!("{md}");
    if let Some(out) = out {
        std::fs::create_dir_all(&out).expect("output folder");
        report::write(&out, &md, &latency, &sweep);
        eprintln!("wrote {}", out.join("BENCHMARKS.md").display());
    }
}

/// A child process and its report lines, read on a thread so no wait can hang the run.
struct ChildProc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

fn spawn(role: &str, job: &roles::Job) -> ChildProc {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg(format!("--role={role}"))
        .args(job.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    ChildProc {
        child,
        stdin,
        lines,
    }
}

/// The next report line starting with `prefix`, split into words; empty after `timeout`.
fn read_line(p: &ChildProc, prefix: &str, timeout: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.trim().strip_prefix(prefix) {
                    return rest.split_whitespace().map(String::from).collect();
                }
            }
            Err(_) => {
                eprintln!("  no {prefix} line within {timeout:?}");
                return Vec::new();
            }
        }
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A bad network for the relay between sender and receiver.
pub struct Scenario {
    pub name: &'static str,
    pub impairment: Impairment,
    /// (start after GO, length) of a link cut.
    pub outage: Option<(Duration, Duration)>,
    /// The sender is a live x265 encoder instead of the clip.
    pub live: Option<roles::Live>,
    /// (after GO, new cap in bit/s): the link's rate changes mid-run.
    pub cap_steps: Vec<(Duration, u64)>,
    /// The receiver's latency in ms where the row has its own: SRT's latency and the
    /// on-time threshold. None: BUDGET_MS, SRT at [`Transport::srt_latency`] of it.
    pub latency_ms: Option<u32>,
    /// quicnalusrc's `latency` for quicnalu-defaults; None leaves the element's default.
    pub src_latency_ms: Option<u32>,
}

/// A link capped at `bps` with a 64 KiB queue (170 ms at 3 Mbit/s), 10 ms RTT.
fn capped(bps: u64) -> Impairment {
    Impairment {
        delay: Duration::from_millis(5),
        rate_bps: Some(bps),
        queue_bytes: 64 * 1024,
        ..Impairment::default()
    }
}

/// The live x265 sender at 4 Mbit/s with an IRAP every 2 s; `adapt`: quicnalusink's
/// `adapt-bitrate` (None: its default).
fn live(adapt: Option<bool>) -> roles::Live {
    roles::Live {
        key_int: 60,
        kbps: 4000,
        adapt,
        bframes: 0,
    }
}

/// The relay scenarios, for a stream of `stream_bps`.
fn scenarios(stream_bps: f64) -> Vec<Scenario> {
    let ms = Duration::from_millis;
    vec![
        Scenario {
            name: "(a) 40 ms RTT, 1% loss",
            impairment: Impairment {
                delay: ms(20),
                loss: 0.01,
                ..Impairment::default()
            },
            outage: None,
            live: None,
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(b) 5% loss, 10 ms jitter",
            impairment: Impairment {
                delay: ms(5),
                jitter: ms(10),
                reorder: true,
                loss: 0.05,
                ..Impairment::default()
            },
            outage: None,
            live: None,
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(c) 2 s outage at 4 s, 10 ms RTT (live x265, key-int-max=300)",
            impairment: Impairment {
                delay: ms(5),
                ..Impairment::default()
            },
            outage: Some((Duration::from_secs(4), Duration::from_secs(2))),
            live: Some(roles::Live {
                key_int: 300,
                kbps: 4000,
                adapt: Some(false),
                bframes: 0,
            }),
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(e) cap 3 Mbit/s, live x265 asked for 4 Mbit/s",
            impairment: capped(3_000_000),
            outage: None,
            live: Some(live(Some(false))),
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(f) cap 3 Mbit/s, live x265 asked for 4 Mbit/s, adapt-bitrate",
            impairment: capped(3_000_000),
            outage: None,
            live: Some(live(Some(true))),
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(g) cap 6 -> 2 -> 6 Mbit/s at 3 s and 6 s, live x265 at 4 Mbit/s, adapt-bitrate",
            impairment: capped(6_000_000),
            outage: None,
            live: Some(live(Some(true))),
            cap_steps: vec![
                (Duration::from_secs(3), 2_000_000),
                (Duration::from_secs(6), 6_000_000),
            ],
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(h) cap 3 Mbit/s, live x265 with B pictures asked for 4 Mbit/s",
            impairment: capped(3_000_000),
            outage: None,
            live: Some(roles::Live {
                bframes: 3,
                ..live(Some(false))
            }),
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
        Scenario {
            name: "(d) cap at 75% of the stream rate",
            impairment: Impairment {
                delay: ms(5),
                rate_bps: Some((stream_bps * 0.75) as u64),
                queue_bytes: 64 * 1024,
                ..Impairment::default()
            },
            outage: None,
            live: None,
            cap_steps: Vec::new(),
            latency_ms: None,
            src_latency_ms: None,
        },
    ]
}

/// The (k) family's link: 40 ms RTT, capped at `bps` both ways with a 64 KiB queue.
fn slow_link(bps: u64) -> Impairment {
    Impairment {
        delay: Duration::from_millis(20),
        ..capped(bps)
    }
}

/// What the (k) family compares, in every row.
pub const SLOW: [Transport; 3] = [
    Transport::QuicnaluDefaults,
    Transport::Srt,
    Transport::MoqDev,
];

/// quicnalusrc's default `latency`, ms, as the element reports it.
fn src_default_latency_ms() -> u32 {
    use gst::prelude::*;
    gst::ElementFactory::make("quicnalusrc")
        .build()
        .expect("quicnalusrc")
        .property("latency")
}

/// (k) the link slower than the stream: a live x265 encoder that can be steered (4 Mbit/s,
/// quicnalusink at its defaults) and the recorded clip (`clip_bps`) that cannot, each
/// through a link capped at 90, 75 and 50% of its rate, with the receiver at latency 120
/// and at quicnalusrc's default (`default_ms`).
fn slow_links(clip_bps: f64, default_ms: u32) -> Vec<Scenario> {
    let live = roles::Live {
        key_int: 60,
        kbps: 4000,
        adapt: None,
        bframes: 0,
    };
    let mut rows = Vec::new();
    for (source, bps, live) in [("live", 4e6, Some(live)), ("clip", clip_bps, None)] {
        for (latency, src) in [(120, Some(120)), (default_ms, None)] {
            for share in [90, 75, 50] {
                let default = if src.is_none() { " (default)" } else { "" };
                let name = format!("(k) {source}, cap {share}%, latency {latency}{default}");
                rows.push(Scenario {
                    name: name.leak(),
                    impairment: slow_link((bps * f64::from(share) / 100.0) as u64),
                    outage: None,
                    live,
                    cap_steps: Vec::new(),
                    latency_ms: Some(latency),
                    src_latency_ms: src,
                });
            }
        }
    }
    rows
}

/// Runs `t` over `sc` with a moq-relay of its own for moq-dev (a fresh one per run, so no
/// run sees another's broadcast); a relay that does not start fails the run with why.
fn run_slow(work: &Workdir, t: Transport, clip: &Path, sc: &Scenario) -> PairResult {
    if t != Transport::MoqDev {
        return run_pair(work, t, clip, 300, 30.0, Some(sc));
    }
    let relay = std::panic::catch_unwind(|| {
        let relay = moq_relay::MoqRelay::start();
        (moq_relay::moq_gst_dir(), relay)
    });
    match relay {
        Ok((gst_dir, relay)) => {
            std::env::set_var("QUICNALU_MOQ_GST", gst_dir);
            std::env::set_var(
                roles::MOQ_ENV,
                format!("{} {}", relay.url(), relay.fingerprint()),
            );
            run_pair(work, t, clip, 300, 30.0, Some(sc))
        }
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            PairResult::failed(t, format!("moq-relay did not start: {why}"))
        }
    }
}

/// The loss sweep: 40 ms RTT with random loss from 0.5 to 10%, 5% with 10 ms of jitter
/// (reordering), and Gilbert-Elliott bursts (mean burst 3 packets, 2% of packets overall).
fn loss_sweep() -> Vec<Scenario> {
    let rtt40 = |loss: f64| Impairment {
        delay: Duration::from_millis(20),
        loss,
        ..Impairment::default()
    };
    let row = |name, impairment| Scenario {
        name,
        impairment,
        outage: None,
        live: None,
        cap_steps: Vec::new(),
        latency_ms: None,
        src_latency_ms: None,
    };
    // Bad bursts last 1/r packets on average; p / (p + r) of packets are in one.
    let r = 1.0 / 3.0;
    let burst = GilbertElliott {
        p: 0.02 * r / 0.98,
        r,
        loss_good: 0.0,
        loss_bad: 1.0,
    };
    vec![
        row("(l) 0.5% loss", rtt40(0.005)),
        row("(l) 1% loss", rtt40(0.01)),
        row("(l) 2% loss", rtt40(0.02)),
        row("(l) 5% loss", rtt40(0.05)),
        row("(l) 10% loss", rtt40(0.10)),
        row(
            "(l) 5% loss, 10 ms jitter",
            Impairment {
                jitter: Duration::from_millis(10),
                reorder: true,
                ..rtt40(0.05)
            },
        ),
        row(
            "(l) 2% loss in bursts of 3",
            Impairment {
                burst: Some(burst),
                ..rtt40(0.0)
            },
        ),
    ]
}

fn run_pair(
    work: &Workdir,
    t: Transport,
    content: &Path,
    frames: u64,
    fps: f64,
    scenario: Option<&Scenario>,
) -> PairResult {
    let records = work.dir.join(format!("{}-{:.0}fps.records", t.name(), fps));
    let mut job = roles::Job {
        transport: t,
        port: 0,
        content: content.to_string_lossy().into_owned(),
        frames,
        fps,
        // SRT delivers each packet its latency after sending, plus the one-way delay:
        // against a row's own latency it gets that less the 20 ms each way of the (k) link
        // and 20 ms of headroom, or it could never be on time.
        srt_latency_ms: scenario
            .and_then(|s| s.latency_ms)
            .map_or_else(|| t.srt_latency(BUDGET_MS), |l| l.saturating_sub(40)),
        src_latency_ms: scenario.and_then(|s| s.src_latency_ms),
        cert: work.cert.clone(),
        key: work.key.clone(),
        records: records.to_string_lossy().into_owned(),
        live: scenario.and_then(|s| s.live),
        receivers: 1,
        routes: String::new(),
    };
    let listener_is_receiver = t == Transport::Udp;
    assert!(
        scenario.is_none() || !listener_is_receiver,
        "the relay stands in front of a listening sender"
    );
    let mut relay: Option<Relay> = None;
    if t == Transport::Udp || t.is_srt() {
        job.port = free_udp_port();
    }
    let start = Duration::from_secs(30);
    let (recv, mut send);
    if listener_is_receiver {
        recv = spawn("recv", &job);
        read_line(&recv, "READY", start);
        send = spawn("send", &job);
        read_line(&send, "PORT", start);
    } else {
        send = spawn("send", &job);
        let port = read_line(&send, "PORT", start);
        job.port = port.first().and_then(|p| p.parse().ok()).unwrap_or(0);
        if let Some(sc) = scenario {
            let server = if t == Transport::MoqDev {
                // moq-dev's elements meet at the moq-relay: the link is the subscriber's,
                // between it and moqsrc.
                let (url, _) = roles::moq_relay();
                url.trim_start_matches("moql://").parse()
            } else {
                format!("127.0.0.1:{}", job.port).parse()
            };
            let server = server.expect("address");
            let mut config = RelayConfig::symmetric(server, sc.impairment.clone());
            config.seed = 7;
            let r = Relay::start(config).expect("relay");
            job.port = r.local_addr().port();
            relay = Some(r);
        }
        recv = spawn("recv", &job);
        read_line(&recv, "READY", start);
    }
    // Let TCP/SRT callers finish connecting; quicnalusink itself waits for its receiver.
    std::thread::sleep(Duration::from_millis(300));
    let _ = writeln!(send.stdin, "GO");
    // Timed events in the run itself, not synchronisation: a link cut, cap changes.
    let t0 = gstquicnalu::media::monotonic_ns();
    let go = std::time::Instant::now();
    let mut link_back = None;
    let mut cap_changes = Vec::new();
    if let (Some(sc), Some(r)) = (scenario, &relay) {
        let mut events: Vec<(Duration, Option<u64>)> = sc
            .cap_steps
            .iter()
            .map(|&(at, bps)| (at, Some(bps)))
            .collect();
        events.extend(sc.outage.map(|(at, _)| (at, None)));
        events.sort_by_key(|e| e.0);
        for (at, cap) in events {
            std::thread::sleep((go + at).saturating_duration_since(std::time::Instant::now()));
            match cap {
                Some(bps) => {
                    for d in [Direction::ToServer, Direction::ToClient] {
                        r.set(d, capped(bps));
                    }
                    cap_changes.push(gstquicnalu::media::monotonic_ns());
                }
                None => {
                    let (_, length) = sc.outage.expect("an outage");
                    r.outage(length);
                    link_back = Some(t0 + (at + length).as_nanos() as u64);
                }
            }
        }
    }
    let run = Duration::from_secs_f64(frames as f64 / fps) + Duration::from_secs(90);
    let stream_ns = (frames as f64 / fps * 1e9) as u64;
    let ran = Ran {
        link_back,
        cap_changes,
        go: t0,
        stream_ns,
    };
    finish_pair(t, [send, recv], run, &records, ran)
}

/// What a pair's run did to its link, and when it ran.
struct Ran {
    pub link_back: Option<u64>,
    pub cap_changes: Vec<u64>,
    /// CLOCK_MONOTONIC ns at GO.
    pub go: u64,
    pub stream_ns: u64,
}

/// Ends a pair's run: waits up to `run` for the sender's SENT line, gives the frames in
/// flight the budget to arrive, stops the receiver, and reads what each reported and the
/// receiver's `records`.
fn finish_pair(
    t: Transport,
    [mut send, mut recv]: [ChildProc; 2],
    run: Duration,
    records: &Path,
    ran: Ran,
) -> PairResult {
    let sent = read_line(&send, "SENT", run);
    // Frames still in flight get the budget to arrive.
    std::thread::sleep(Duration::from_millis(u64::from(BUDGET_MS) + 300));
    let _ = writeln!(recv.stdin, "STOP");
    let got = read_line(&recv, "RECV", Duration::from_secs(30));
    for p in [&mut send, &mut recv] {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    let (frames, arrivals, sizes) = read_records(records).into_iter().next().unwrap_or_default();
    PairResult {
        transport: t,
        sent: num(&sent, 0).unwrap_or(0.0) as u64,
        frames,
        arrivals,
        sizes,
        bytes: num(&got, 1).unwrap_or(0.0) as u64,
        cpu_send: num(&sent, 1).unwrap_or(f64::NAN),
        cpu_recv: num(&got, 2).unwrap_or(f64::NAN),
        error: child_error(&[("sender", &sent, 2), ("receiver", &got, 3)]),
        link_back: ran.link_back,
        cap_changes: ran.cap_changes,
        go: Some(ran.go),
        stream_ns: ran.stream_ns,
    }
}

/// Word `i` of a report line as a number.
fn num(v: &[String], i: usize) -> Option<f64> {
    v.get(i).and_then(|s| s.parse().ok())
}

/// The last error among (who, report line, index of its status word).
fn child_error(reports: &[(&str, &[String], usize)]) -> Option<String> {
    let mut error = None;
    for (who, v, i) in reports {
        match v.get(*i).map(String::as_str) {
            Some("ok") => {}
            Some(e) => error = Some(format!("{who}: {}", e.replace('_', " "))),
            None => error = Some(format!("{who} did not report")),
        }
    }
    error
}

/// A source pipeline's frames, their arrivals and the bytes credited to each.
type Records = (Vec<Arrived>, Vec<u64>, Vec<u64>);

/// A receiver process's records, per source pipeline.
fn read_records(path: &Path) -> Vec<Records> {
    let mut per: Vec<Records> = Vec::new();
    for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let mut f = l.split_whitespace();
        let mut field = || f.next().and_then(|x| x.parse::<u64>().ok());
        let (Some(seq), Some(latency)) = (field(), field()) else {
            continue;
        };
        let depends_on = field();
        let Some(arrival) = field() else {
            continue;
        };
        let i = field().unwrap_or(0) as usize;
        if per.len() <= i {
            per.resize_with(i + 1, Default::default);
        }
        per[i].0.push((seq, latency, depends_on));
        per[i].1.push(arrival);
        per[i].2.push(field().unwrap_or(0));
    }
    per
}

fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() {
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
            .args([
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "openssl could not make a certificate");
    }
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

fn encode_clip(path: &Path) {
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=300 pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
         video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency bitrate=4000 key-int-max=60 ! \
         h265parse ! video/x-h265,stream-format=byte-stream ! filesink location={}",
        path.display()
    ))
    .expect("encoder pipeline");
    use gst::prelude::*;
    pipeline.set_state(gst::State::Playing).expect("encode");
    let bus = pipeline.bus().expect("bus");
    bus.timed_pop_filtered(
        gst::ClockTime::NONE,
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
}
