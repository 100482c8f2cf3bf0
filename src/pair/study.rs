//! Figures from the pair for what the benchmark cannot take apart: at 40 ms RTT and 4 Mbit/s,
//! which impairment costs frames, and through what. By default the test checks a few rows,
//! 3 seeds each; `PAIR_STUDY=1 cargo test --profile testing --lib pair::study --
//! --nocapture` prints every row over 10 seeds (about 10 s), the table in docs/PAIR.md.

use super::link::{GilbertElliott, Impairment};
use super::*;

/// A row: how its runs are set up, and for the rows checked by default, the bounds of the
/// share of frames on time (lowest over the seeds, mean).
struct Row {
    name: &'static str,
    make: fn(u64) -> Settings,
    check: Option<Bounds>,
}

struct Bounds {
    min_at_least: f64,
    mean_at_most: f64,
    /// Packets the sender declared lost, as a share of those it sent, at least.
    declared_lost_at_least: f64,
}

/// 40 ms RTT, `loss` each way, then `f` on both directions.
fn path(seed: u64, loss: f64, f: impl Fn(&mut Impairment)) -> Settings {
    let mut s = Settings::new(20 * MS, loss, seed);
    let p = &mut s.receivers[0];
    f(&mut p.up);
    f(&mut p.down);
    s
}

fn reorder(jitter: u32) -> impl Fn(&mut Impairment) {
    move |imp: &mut Impairment| {
        imp.jitter = jitter * MS;
        imp.reorder = true;
    }
}

fn rows() -> Vec<Row> {
    let row = |name, make| Row {
        name,
        make,
        check: None,
    };
    vec![
        row("5% random loss each way", |seed| path(seed, 0.05, |_| {})),
        row("10% random loss each way", |seed| path(seed, 0.10, |_| {})),
        row("20% random loss each way", |seed| path(seed, 0.20, |_| {})),
        row("10% on data only", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.receivers[0].up.loss = 0.0;
            s
        }),
        Row {
            check: Some(Bounds {
                min_at_least: 1.0,
                mean_at_most: 1.0,
                declared_lost_at_least: 0.0,
            }),
            ..row("10% on acknowledgements only", |seed| {
                let mut s = path(seed, 0.10, |_| {});
                s.receivers[0].down.loss = 0.0;
                s
            })
        },
        row("10%, 5 ms jitter, order kept", |seed| {
            path(seed, 0.10, |imp| imp.jitter = 5 * MS)
        }),
        row("0%, 10 ms jitter that reorders", |seed| {
            path(seed, 0.0, reorder(10))
        }),
        row("5%, 10 ms jitter that reorders", |seed| {
            path(seed, 0.05, reorder(10))
        }),
        row("10%, 10 ms jitter that reorders", |seed| {
            path(seed, 0.10, reorder(10))
        }),
        row("10%, 2 ms jitter that reorders", |seed| {
            path(seed, 0.10, reorder(2))
        }),
        row("10% in bursts of 3", |seed| {
            path(seed, 0.0, |imp| {
                imp.burst = Some(GilbertElliott::bursts(0.10, 3.0))
            })
        }),
        row("5% in bursts of 10", |seed| {
            path(seed, 0.0, |imp| {
                imp.burst = Some(GilbertElliott::bursts(0.05, 10.0))
            })
        }),
        row("10%, an IRAP every 10 s", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.stream.gop = 300;
            s
        }),
        row("10%, IRAPs of 8 P pictures", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.stream.irap_ratio = 8.0;
            s
        }),
        row("10% at 8 Mbit/s", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.stream.bitrate = 8_000_000;
            s
        }),
        row("10% at 16 Mbit/s", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.stream.bitrate = 16_000_000;
            s
        }),
        row("10% at 60 ms RTT", |seed| {
            Settings::new(30 * MS, 0.10, seed)
        }),
        Row {
            check: Some(Bounds {
                min_at_least: 0.8,
                mean_at_most: 0.99,
                declared_lost_at_least: 0.05,
            }),
            ..row("10% at 100 ms RTT", |seed| {
                Settings::new(50 * MS, 0.10, seed)
            })
        },
        row("10%, one ACK per burst", |seed| {
            path(seed, 0.10, |imp| imp.rate_bps = None)
        }),
        row("5%, one ACK per burst", |seed| {
            path(seed, 0.05, |imp| imp.rate_bps = None)
        }),
        row("10% without tail probes", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.tail_probes = false;
            s
        }),
        row("10% without repeated repairs", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.repeat_repairs = false;
            s
        }),
        row("10% with neither", |seed| {
            let mut s = path(seed, 0.10, |_| {});
            s.tail_probes = false;
            s.repeat_repairs = false;
            s
        }),
    ]
}

/// One row over `seeds`: (lowest share on time, mean share, worst p99, share of packets
/// declared lost, frames output that could not be decoded).
fn measure(row: &Row, seeds: u64) -> (f64, f64, Duration, f64, usize) {
    let (mut min, mut sum, mut p99) = (1.0f64, 0.0, Duration::ZERO);
    let (mut lost, mut sent, mut undecodable) = (0, 0, 0);
    for seed in 1..=seeds {
        let mut pair = Pair::new((row.make)(seed));
        pair.run_past_the_last_frame(Duration::from_secs(1));
        let r = pair.report(0, 0);
        let c = pair.sender.fanout.get(1).map(|r| r.conn().quic.counts);
        let c = c.unwrap_or_default();
        lost += c.lost;
        sent += c.sent;
        undecodable += r.delivered - r.decodable;
        min = min.min(r.on_time_share());
        sum += r.on_time_share();
        p99 = p99.max(r.percentile(99.0));
    }
    let declared = lost as f64 / sent.max(1) as f64;
    (min, sum / seeds as f64, p99, declared, undecodable)
}

#[test]
fn which_impairments_cost_frames_at_40_ms() {
    let full = std::env::var_os("PAIR_STUDY").is_some();
    for row in rows() {
        let seeds = match (&row.check, full) {
            (_, true) => 10,
            (Some(_), false) => 3,
            (None, false) => continue,
        };
        let (min, mean, p99, declared, undecodable) = measure(&row, seeds);
        if full {
            println!(
                "| {} | {:.1}% | {:.2}% | {:.0} | {:.1}% |",
                row.name,
                100.0 * min,
                100.0 * mean,
                p99.as_secs_f64() * 1e3,
                100.0 * declared
            );
        }
        assert_eq!(undecodable, 0, "{}", row.name);
        if let Some(b) = &row.check {
            let what = format!("{}: min {min}, mean {mean}, lost {declared}", row.name);
            assert!(min >= b.min_at_least && mean <= b.mean_at_most, "{what}");
            assert!(declared >= b.declared_lost_at_least, "{what}");
        }
    }
}
