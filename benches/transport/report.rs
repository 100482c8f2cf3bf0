//! The benchmark's Markdown tables and SVG plots.

use crate::fanout::{self, Fanout};
use crate::{PairResult, Transport, ALL, BUDGET_MS};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

const COLORS: [&str; 5] = ["#d62728", "#1f77b4", "#17becf", "#2ca02c", "#7f7f7f"];

fn color(t: Transport) -> &'static str {
    COLORS[ALL.iter().position(|x| *x == t).unwrap_or(0)]
}

fn cpu_per_gb(cpu: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        f64::NAN
    } else {
        cpu / (bytes as f64 / 1e9)
    }
}

/// The highest clean step of each transport's sweep.
fn ceiling(sweep: &[(f64, PairResult)], t: Transport) -> Option<&(f64, PairResult)> {
    sweep.iter().rfind(|(_, r)| r.transport == t && r.clean())
}

pub fn markdown(latency: &[PairResult], sweep: &[(f64, PairResult)], seconds: u64) -> String {
    let mut md = String::new();
    let budget_ns = u64::from(BUDGET_MS) * 1_000_000;
    let udp_p50 = latency
        .iter()
        .find(|r| r.transport == Transport::Udp)
        .map(|r| r.percentile_ms(0.5));
    let _ = writeln!(
        md,
        "### Latency: 720p30 at ~4 Mbit/s, {seconds} s, loopback, budget {BUDGET_MS} ms\n\n\
         Latency is from the access unit leaving the sender's pacer to it leaving the \
         transport's source element (RTP: the depayloader).\n\n\
         | transport | sent | delivered | decodable | late | p50 ms | p99 ms | p99.9 ms | \
         p50 - udp p50 ms | error |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in latency {
        let p50 = r.percentile_ms(0.5);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:+.2} | {} |",
            r.transport.name(),
            r.sent,
            r.frames.len(),
            r.decodable(),
            r.late(budget_ns),
            p50,
            r.percentile_ms(0.99),
            r.percentile_ms(0.999),
            udp_p50.map_or(f64::NAN, |u| p50 - u),
            r.error.as_deref().unwrap_or("")
        );
    }

    let _ = writeln!(
        md,
        "\n### Throughput ceiling: 4K jellyfish (vkcts, ~57 KB per access unit) at rising rates\n\n\
         A step is clean when every frame arrives within {BUDGET_MS} ms. The sweep of a \
         transport stops at its first failing step.\n\n\
         | transport | ceiling Mbit/s | ratio to srt | CPU s/GB send | CPU s/GB receive | \
         CPU/GB ratio to srt (send+recv) | first failing step |\n|---|---|---|---|---|---|---|"
    );
    let srt = ceiling(sweep, Transport::Srt);
    for t in ALL {
        let top = ceiling(sweep, t);
        let fail = sweep
            .iter()
            .find(|(_, r)| r.transport == t && !r.clean())
            .map(|(m, r)| {
                format!(
                    "{m} Mbit/s: {}/{} delivered, {} late{}",
                    r.frames.len(),
                    r.sent,
                    r.late(budget_ns),
                    r.error
                        .as_ref()
                        .map(|e| format!(", {e}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "none (top of the sweep)".into());
        let (mbps, send, recv) = top.map_or((0.0, f64::NAN, f64::NAN), |(m, r)| {
            (
                *m,
                cpu_per_gb(r.cpu_send, r.bytes),
                cpu_per_gb(r.cpu_recv, r.bytes),
            )
        });
        // CPU compares at a common rate: the highest step both ran cleanly.
        let common = srt.map(|(sm, _)| sm.min(mbps));
        let at = |tt: Transport| {
            sweep
                .iter()
                .find(|(m, r)| r.transport == tt && Some(*m) == common && r.clean())
                .map(|(_, r)| cpu_per_gb(r.cpu_send + r.cpu_recv, r.bytes))
        };
        let cpu_ratio = match (at(t), at(Transport::Srt)) {
            (Some(a), Some(b)) => format!("{:.2} (at {} Mbit/s)", a / b, common.unwrap_or(0.0)),
            _ => "n/a".into(),
        };
        let ratio = srt.map_or(f64::NAN, |(sm, _)| mbps / sm);
        let _ = writeln!(
            md,
            "| {} | {mbps} | {ratio:.2} | {send:.2} | {recv:.2} | {cpu_ratio} | {fail} |",
            t.name()
        );
    }
    steps_table(&mut md, sweep);
    md
}

/// CPU s/GB (send + receive) at every step each transport ran: the ceiling columns above
/// sit at different rates, and batching makes the cost fall as the rate rises.
fn steps_table(md: &mut String, sweep: &[(f64, PairResult)]) {
    let mut rates: Vec<f64> = sweep.iter().map(|(m, _)| *m).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let head: Vec<String> = rates.iter().map(|m| format!("{m}")).collect();
    let _ = write!(
        md,
        "\nCPU s/GB, send + receive, at each step (Mbit/s); `fail` marks the step that ended \
         a sweep.\n\n| transport | {} |\n|---|{}\n",
        head.join(" | "),
        "---|".repeat(rates.len())
    );
    for t in ALL {
        let cells: Vec<String> = rates
            .iter()
            .map(
                |m| match sweep.iter().find(|(sm, r)| r.transport == t && sm == m) {
                    Some((_, r)) if r.clean() => {
                        format!("{:.2}", cpu_per_gb(r.cpu_send + r.cpu_recv, r.bytes))
                    }
                    Some(_) => "fail".into(),
                    None => String::new(),
                },
            )
            .collect();
        let _ = writeln!(md, "| {} | {} |", t.name(), cells.join(" | "));
    }
}

/// The loss sweep: per row and transport the worst of its runs (fewest frames on time), with
/// the range over all of them.
pub fn loss_sweep(rows: &[(&str, Vec<PairResult>)], stream_bps: f64) -> String {
    let runs = rows.first().map_or(0, |(_, r)| r.len());
    let mut md = format!(
        "\n### Loss sweep: 40 ms RTT, 720p30 at {:.1} Mbit/s, 10 s, on time = decodable within \
         {BUDGET_MS} ms\n\n\
         Through the project's relay (seed 7, 20 ms each way), the recorded clip (an IRAP \
         every 2 s). quicnalu-defaults: both elements with every property at its default; \
         quicnalu: quicnalusink latency-budget={BUDGET_MS}, quicnalusrc latency={BUDGET_MS}; \
         srt-120: srtsink/srtsrc at latency 120. Each row is the worst of {runs} runs (fewest \
         frames on time); the last column gives the range over all {runs}.\n\n\
         | link | transport | on time | p50 ms | p99 ms | longest stall ms | Mbit/s delivered \
         | on time, all runs | error |\n|---|---|---|---|---|---|---|---|---|\n",
        stream_bps / 1e6
    );
    for (name, results) in rows {
        let on_time = |r: &PairResult| r.on_time_after(0);
        let Some(worst) = results
            .iter()
            .min_by(|a, b| on_time(a).total_cmp(&on_time(b)))
        else {
            continue;
        };
        let all: Vec<String> = results
            .iter()
            .map(|r| format!("{:.1}", on_time(r)))
            .collect();
        let error = results
            .iter()
            .find_map(|r| r.error.as_deref())
            .unwrap_or("");
        let _ = writeln!(
            md,
            "| {name} | {} | {:.1}% | {:.1} | {:.1} | {:.0} | {:.2} | {} | {error} |",
            worst.transport.name(),
            on_time(worst),
            worst.percentile_ms(0.5),
            worst.percentile_ms(0.99),
            worst.longest_stall_ms(),
            worst.delivered_mbps(),
            all.join(", "),
        );
    }
    md
}

/// The relay scenarios: one row per scenario and transport.
pub fn impaired(rows: &[(&str, PairResult)], stream_bps: f64) -> String {
    let mut md = format!(
        "\n### Bad networks: the impairment relay, 720p30 at {:.1} Mbit/s, 10 s, budget \
         {BUDGET_MS} ms\n\n\
         Through the project's relay (seed 7). Recovery: from the end of the outage to the \
         first decodable frame that arrives within the budget. Budget for 99.9%: the \
         smallest latency budget at which 99.9% of the frames sent arrive decodable and in \
         time. quicnalusink runs with latency-budget={BUDGET_MS}; SRT with latency {} ms. \
         (c), (e), (f), (g) and (h) send from a live x265enc (480x272 zone-plate at 4 \
         Mbit/s, so that it encodes in real time here); in (c) with key-int-max=300: \
         quicnalusrc's keyframe request reaches it as GstForceKeyUnit; SRT has no such path \
         and waits for the next IRAP, 10 s on. (h)'s encoder puts three non-reference B \
         pictures after each P, which quicnalusink sheds first. (a), (b) and (d) play the \
         recorded clip, which cannot make a keyframe on request. quicnalu-defaults runs \
         both elements with every property at its default (the budget then comes from \
         quicnalusrc's latency, 200 ms). The relay is seeded, but its draws follow packet \
         arrival, so runs differ.\n\n\
         | scenario | transport | sent | delivered | Mbit/s delivered | decodable | late | p50 ms | p99 ms | \
         longest stall ms | recovery ms | on time after 2 s | on time from 0.3 s after the link returns | re-converge ms | \
         budget for 99.9% ms | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        stream_bps / 1e6,
        BUDGET_MS - 20
    );
    let budget_ns = u64::from(BUDGET_MS) * 1_000_000;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for (name, r) in rows {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {:.2} | {} | {} | {:.1} | {:.1} | {:.0} | {} | {:.1}% | {} | {} | {} | {} |",
            r.transport.name(),
            r.sent,
            r.frames.len(),
            r.delivered_mbps(),
            r.decodable(),
            r.late(budget_ns),
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.longest_stall_ms(),
            opt(r.recovery_ms()).replace('-', if r.link_back.is_some() { "never" } else { "-" }),
            r.on_time_after(60),
            r.on_time_after_link(Duration::from_millis(300))
                .map_or("-".to_string(), |p| format!("{p:.1}%")),
            reconverge(r),
            opt(r.budget_for_999_ms()).replace('-', "unreached"),
            r.error.as_deref().unwrap_or("")
        );
    }
    md
}

/// One run of the (k) family: its row, the row's cap and latency, and what it measured.
pub struct SlowRun {
    pub name: &'static str,
    pub cap_bps: u64,
    /// The on-time threshold: the row's latency.
    pub latency_ms: u32,
    pub result: PairResult,
}

/// (k) the link slower than the stream: one row per link, latency and transport.
pub fn slow_links(runs: &[SlowRun], clip_bps: f64) -> String {
    let mut md = format!(
        "\n### (k) The link slower than the stream: 40 ms RTT, capped below the stream's rate, \
         10 s\n\n\
         Through the project's relay (seed 7, 20 ms each way, the cap both ways with a 64 KiB \
         queue). live: a live x265enc (480x272 zone-plate asked for 4 Mbit/s, key-int-max=60, \
         zerolatency), the cap a share of 4 Mbit/s; clip: the recorded 720p30 clip at {:.1} \
         Mbit/s (an IRAP every 2 s), which cannot be steered, the cap a share of that. \
         quicnalu-defaults: both elements with every property at its default (adapt-bitrate \
         unset) but quicnalusrc latency=120 in the latency-120 rows; srt: srtsink/srtsrc at \
         the row's latency less 40 ms (it delivers each packet its latency after sending, \
         plus the path's 20 ms); moq-dev: moqsink to a moq-relay of its own, moqsrc from it \
         through the link (no latency setting). On time: decodable and out of the source \
         within the row's latency, % of frames sent; decodable: however late. Stall: the \
         longest time between two decodable frames leaving the source, from 2 s after the \
         first frame left it to the end of the stream; first picture: from GO to the first \
         decodable frame. Age: the latency of the decodable frames. Steady: Mbit/s out of the \
         source of the frames sent in the second half of the stream, per second of it, and \
         its share of the cap.\n\n\
         | link | cap Mbit/s | latency ms | transport | on time | decodable | stall ms | \
         first picture ms | age p50 ms | age p95 ms | steady Mbit/s | % of cap | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        clip_bps / 1e6
    );
    let ms = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0}"));
    for run in runs {
        let r = &run.result;
        let steady = r.steady_mbps();
        let cap = run.cap_bps as f64 / 1e6;
        let _ = writeln!(
            md,
            "| {} | {cap:.2} | {} | {} | {:.1}% | {:.1}% | {} | {} | {:.1} | {:.1} | {steady:.2} \
             | {:.0}% | {} |",
            run.name,
            run.latency_ms,
            r.transport.name(),
            r.on_time_pct(u64::from(run.latency_ms) * 1_000_000),
            r.decodable_pct(),
            ms(r.picture_stall_ms()),
            ms(r.first_picture_ms()),
            r.picture_age_ms(0.5),
            r.picture_age_ms(0.95),
            100.0 * steady / cap,
            // First line only: moqsrc's errors carry a backtrace.
            r.error
                .as_deref()
                .and_then(|e| e.split("\\n").next())
                .unwrap_or("")
        );
    }
    md
}

/// The fan-out: one row per transport and receiver count, the largest count with every
/// frame on time, and the late joiners.
pub fn fanout(steps: &[Fanout], joins: &[Fanout]) -> String {
    let mut md = format!(
        "\n### Fan-out: one sender, N receivers at 4 Mbit/s each, loopback, budget \
         {BUDGET_MS} ms\n\n\
         One sender plays the 720p30 4 Mbit/s clip in real time (IRAP every 2 s) to N \
         receivers, all source pipelines in one receiver process, on the same 2 cores; \
         quicnalusink with latency-budget={BUDGET_MS}, srtsink in listener mode with N \
         srtsrc callers at latency {} ms. A count passes when every receiver gets every frame \
         within the budget; each transport stops at its first failing count. CPU is in % of \
         one core over the run (the stream plus about 0.5 s of linger) per second of \
         stream; the sender's cost per receiver is the slope of a least-squares line through \
         its runs. Ratios are quicnalu over srt.\n\n\
         | transport | receivers | every frame on time | worst receiver on time | lost / late \
         (all receivers) | p99 ms (all) | max ms | sender CPU % | receiver CPU % per \
         receiver | CPU ratio to srt (send / receive) | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        BUDGET_MS - 20
    );
    let pct = |cpu: f64, f: &Fanout| 100.0 * cpu / f.seconds;
    let srt_at = |n: usize| {
        steps
            .iter()
            .find(|f| f.transport == Transport::Srt && f.receivers.len() == n)
    };
    for f in steps {
        let n = f.receivers.len();
        let (lost, late) = f.lost_late();
        let ratio = match srt_at(n) {
            Some(srt) if f.transport != Transport::Srt => format!(
                "{:.2} / {:.2}",
                f.cpu_send / srt.cpu_send,
                f.cpu_recv / srt.cpu_recv
            ),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {n} | {} | {:.1}% | {lost} / {late} | {:.1} | {:.1} | {:.1} | {:.2} | {ratio} \
             | {} |",
            f.transport.name(),
            if f.all_on_time() { "yes" } else { "no" },
            f.worst_on_time(),
            f.percentile_ms(0.99),
            f.percentile_ms(1.0),
            pct(f.cpu_send, f),
            pct(f.cpu_recv, f) / n as f64,
            f.error().unwrap_or("")
        );
    }
    md.push_str(
        "\n| transport | largest N with every frame on time | first failing N | sender CPU % \
         per receiver (slope) | receiver CPU % per receiver | ratio to srt (N / send / \
         receive) |\n|---|---|---|---|---|---|\n",
    );
    let runs = |t: Transport| steps.iter().filter(move |f| f.transport == t);
    let summary = |t: Transport| {
        let largest = runs(t)
            .filter(|f| f.all_on_time())
            .map(|f| f.receivers.len())
            .max();
        let points: Vec<(f64, f64)> = runs(t)
            .map(|f| (f.receivers.len() as f64, pct(f.cpu_send, f)))
            .filter(|p| p.1.is_finite())
            .collect();
        let (recv, receiver_seconds) = runs(t)
            .filter(|f| f.cpu_recv.is_finite())
            .fold((0.0, 0.0), |(c, s), f| {
                (c + f.cpu_recv, s + f.receivers.len() as f64 * f.seconds)
            });
        (largest, slope(&points), 100.0 * recv / receiver_seconds)
    };
    let srt = summary(Transport::Srt);
    for t in [Transport::Quicnalu, Transport::Srt] {
        if runs(t).next().is_none() {
            continue;
        }
        let (largest, send, recv) = summary(t);
        let failing = runs(t)
            .find(|f| !f.all_on_time())
            .map_or("none (top of the list)".into(), |f| {
                f.receivers.len().to_string()
            });
        let ratio = if t == Transport::Srt || runs(Transport::Srt).next().is_none() {
            "-".into()
        } else {
            let n = match (largest, srt.0) {
                (Some(a), Some(b)) => format!("{:.2}", a as f64 / b as f64),
                _ => "n/a".into(),
            };
            format!("{n} / {:.2} / {:.2}", send / srt.1, recv / srt.2)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {failing} | {send:.2} | {recv:.2} | {ratio} |",
            t.name(),
            largest.map_or("none".into(), |n| n.to_string())
        );
    }
    if joins.is_empty() {
        return md;
    }
    let _ = write!(
        md,
        "\nLate joiner: the live x265 sender of the relay scenarios (480x272 zone-plate at 4 \
         Mbit/s) with IRAPs further apart and one receiver from the start; a second \
         receiver process starts about half way into a group. Times are \
         from its pipeline going to PLAYING. The first decodable frame is the first whose \
         references all arrived (an IRAP, then what follows it); `sent` is when it left the \
         sender's pacer, from the joiner's start (negative: it was sent before the joiner \
         existed, so it came from the sender's cache). Live: the first decodable frame also \
         within the budget.\n\n\
         | transport | IRAP every | joined at frame | first decodable ms | that frame | \
         first live decodable ms | frames before the first decodable | error |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    let ms = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.0}"));
    for f in joins {
        let Some(j) = fanout::join(f) else {
            continue;
        };
        let at = match (j.at_seq, j.into_group) {
            (Some(s), Some(g)) => format!("{s} ({g} into its group)"),
            (Some(s), None) => s.to_string(),
            _ => "unknown".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {at} | {} | {} | {} | {} | {} |",
            f.transport.name(),
            f.key_int.map_or("-".into(), |k| format!("{k} frames")),
            ms(j.first.map(|x| x.0)),
            j.first.map_or("-".into(), |(_, seq, sent)| format!(
                "#{seq}, sent {sent:+.0} ms"
            )),
            ms(j.first_live_ms),
            j.wasted,
            f.error().unwrap_or("")
        );
    }
    md
}

/// The least-squares slope of y over x; NaN with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(xy, xx), p| {
        (xy + (p.0 - mx) * (p.1 - my), xx + (p.0 - mx).powi(2))
    });
    if sxx > 0.0 {
        sxy / sxx
    } else {
        f64::NAN
    }
}

/// "after each cap change: ms until 30 frames in a row are on time", or "-".
fn reconverge(r: &PairResult) -> String {
    if r.cap_changes.is_empty() {
        return "-".into();
    }
    r.cap_changes
        .iter()
        .map(|&t| {
            r.reconverge_ms(t)
                .map_or("never".into(), |ms| format!("{ms:.0}"))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

pub fn write(out: &Path, md: &str, latency: &[PairResult], sweep: &[(f64, PairResult)]) {
    let doc = format!(
        "# Benchmarks\n\nMade by `make bench` (`cargo bench --profile testing --bench \
         transport -- --out docs`) on the project's 2-core machine; every transport in the same \
         run, sender and receiver as separate processes on loopback. Plots: [latency CDF](bench-latency-cdf.svg), \
         [throughput vs CPU](bench-throughput-cpu.svg). Where quicnalu's CPU goes: \
         [PROFILE.md](PROFILE.md).\n\n{md}\n"
    );
    std::fs::write(out.join("BENCHMARKS.md"), doc).expect("write BENCHMARKS.md");
    std::fs::write(out.join("bench-latency-cdf.svg"), latency_cdf(latency)).expect("svg");
    std::fs::write(out.join("bench-throughput-cpu.svg"), throughput_cpu(sweep)).expect("svg");
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const M: f64 = 50.0;

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\
         <line x1=\"{M}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\
         <line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{}\" stroke=\"black\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{y_label}</text>",
        W / 2.0,
        H - M,
        W - M,
        H - M,
        H - M,
        W / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    )
}

fn legend(svg: &mut String, ts: &[Transport]) {
    for (i, t) in ts.iter().enumerate() {
        let y = M + 16.0 * i as f64;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            W - M - 90.0,
            y,
            color(*t),
            W - M - 75.0,
            y + 9.0,
            t.name()
        );
    }
}

/// Latency CDF per transport, log10 x axis from 0.01 ms to 1000 ms.
fn latency_cdf(results: &[PairResult]) -> String {
    let mut svg = frame(
        "Per-frame latency CDF, 720p30 ~4 Mbit/s, loopback",
        "latency (ms, log scale)",
        "fraction of frames",
    );
    let x = |ms: f64| M + (ms.max(0.01).log10() + 2.0) / 5.0 * (W - 2.0 * M);
    let y = |f: f64| H - M - f * (H - 2.0 * M);
    for decade in [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0] {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{decade}</text>",
            x(decade),
            H - M + 15.0
        );
    }
    for r in results {
        let mut l: Vec<f64> = r.frames.iter().map(|f| f.1 as f64 / 1e6).collect();
        l.sort_by(f64::total_cmp);
        let n = l.len().max(1) as f64;
        let points: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, ms)| format!("{:.1},{:.1}", x(*ms), y((i + 1) as f64 / n)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            color(r.transport),
            points.join(" ")
        );
    }
    legend(&mut svg, &ALL);
    svg.push_str("</svg>\n");
    svg
}

/// CPU seconds per GB (send + receive) against offered rate, one line per transport; failed
/// steps drawn hollow.
fn throughput_cpu(sweep: &[(f64, PairResult)]) -> String {
    let mut svg = frame(
        "Throughput sweep: CPU per GB delivered (send + receive)",
        "offered rate (Mbit/s)",
        "CPU s per GB",
    );
    let max_rate = sweep.iter().map(|(m, _)| *m).fold(1.0, f64::max);
    let cpu = |r: &PairResult| cpu_per_gb(r.cpu_send + r.cpu_recv, r.bytes);
    let max_cpu = sweep
        .iter()
        .map(|(_, r)| cpu(r))
        .filter(|c| c.is_finite())
        .fold(1.0, f64::max);
    let x = |m: f64| M + m / max_rate * (W - 2.0 * M);
    let y = |c: f64| H - M - c / max_cpu * (H - 2.0 * M);
    for i in 0..=4 {
        let m = max_rate * f64::from(i) / 4.0;
        let c = max_cpu * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{m:.0}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{c:.1}</text>",
            x(m),
            H - M + 15.0,
            M - 4.0,
            y(c) + 4.0
        );
    }
    for t in ALL {
        let steps: Vec<_> = sweep
            .iter()
            .filter(|(_, r)| r.transport == t && cpu(r).is_finite())
            .collect();
        let points: Vec<String> = steps
            .iter()
            .map(|(m, r)| format!("{:.1},{:.1}", x(*m), y(cpu(r))))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            color(t),
            points.join(" ")
        );
        for (m, r) in steps {
            let fill = if r.clean() { color(t) } else { "white" };
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{}\"/>",
                x(*m),
                y(cpu(r)),
                color(t)
            );
        }
    }
    legend(&mut svg, &ALL);
    svg.push_str("</svg>\n");
    svg
}

/// Through a MoQ relay: latency against the direct connection, and fan-out behind it.
pub fn moq(pairs: &[PairResult], fanouts: &[(Fanout, f64)]) -> String {
    let mut md = format!(
        "\n### Through a MoQ relay (moq-relay 0.17.10, moq-lite-06), loopback\n\n\
         The 720p30 4 Mbit/s clip in real time, every property at its default: quicnalusink \
         to quicnalusrc directly, and quicnalusink publishing to one moq-relay with \
         quicnalusrc subscribed there (`moq-url`), in the same run. Latency is from the \
         sender's h265parse to the receiver's source pad, budget {BUDGET_MS} ms; the relay \
         adds a second QUIC hop and its own scheduling.\n\n\
         | path | frames | on time | p50 ms | p99 ms | max ms | sender CPU % | receiver CPU % \
         | error |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    let direct = pairs
        .iter()
        .find(|p| p.transport == Transport::QuicnaluDefaults);
    for p in pairs {
        let seconds = p.sent as f64 / 30.0;
        let _ = writeln!(
            md,
            "| {} | {} / {} | {:.1}% | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            match p.transport {
                Transport::QuicnaluMoq => "quicnalu through moq-relay",
                Transport::MoqDev => "moq-dev moqsink/moqsrc through moq-relay",
                _ => "quicnalu direct",
            },
            p.frames.len(),
            p.sent,
            p.on_time_after(0),
            p.percentile_ms(0.5),
            p.percentile_ms(0.99),
            p.percentile_ms(1.0),
            100.0 * p.cpu_send / seconds,
            100.0 * p.cpu_recv / seconds,
            // First line only: moqsrc's errors carry a backtrace.
            p.error
                .as_deref()
                .and_then(|e| e.split("\\n").next())
                .unwrap_or("")
        );
    }
    let ours = pairs.iter().find(|p| p.transport == Transport::QuicnaluMoq);
    let theirs = pairs.iter().find(|p| p.transport == Transport::MoqDev);
    if let (Some(d), Some(m)) = (direct, ours) {
        let _ = writeln!(
            md,
            "\nThrough the relay over direct: p50 {:.2}x, p99 {:.2}x.",
            m.percentile_ms(0.5) / d.percentile_ms(0.5),
            m.percentile_ms(0.99) / d.percentile_ms(0.99)
        );
    }
    if let (Some(m), Some(t)) = (ours, theirs) {
        let _ = writeln!(
            md,
            "quicnalu over moq-dev's elements, both through the relay: p50 {:.2}x, p99 \
             {:.2}x, sender CPU {:.2}x, receiver CPU {:.2}x.",
            m.percentile_ms(0.5) / t.percentile_ms(0.5),
            m.percentile_ms(0.99) / t.percentile_ms(0.99),
            m.cpu_send / t.cpu_send,
            m.cpu_recv / t.cpu_recv
        );
    }
    md.push_str(
        "\nFan-out behind the relay: one quicnalusink publishes once; N quicnalusrc \
         subscribers, in one receiver process, subscribe at the relay. The relay's CPU is \
         its whole process over the run.\n\n\
         | subscribers | every frame on time | worst subscriber on time | lost / late | p50 ms \
         | p99 ms | max ms | sender CPU % | relay CPU % | receiver CPU % per subscriber | error |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (f, relay_cpu) in fanouts {
        let n = f.receivers.len();
        let (lost, late) = f.lost_late();
        let pct = |cpu: f64| 100.0 * cpu / f.seconds;
        let _ = writeln!(
            md,
            "| {n} | {} | {:.1}% | {lost} / {late} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | \
             {:.2} | {} |",
            if f.all_on_time() { "yes" } else { "no" },
            f.worst_on_time(),
            f.percentile_ms(0.5),
            f.percentile_ms(0.99),
            f.percentile_ms(1.0),
            pct(f.cpu_send),
            pct(*relay_cpu),
            pct(f.cpu_recv) / n as f64,
            f.error().unwrap_or("")
        );
    }
    md
}
