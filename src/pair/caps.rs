//! Issue 31 in the pair: a link slower than the stream. 20 ms each way, a cap at a share of
//! the stream's 4 Mbit/s with a 64 KiB queue, a receiver at latency 120 ms or the default:
//! the case where every keyframe takes longer than the budget to cross.

use super::*;

const SECOND: Duration = Duration::from_secs(1);
const CAPS: [f64; 3] = [0.9, 0.75, 0.5];
const LATENCIES: [Duration; 2] = [Duration::from_millis(120), budget::FALLBACK];

/// `share` of the stream's rate, at `latency`; `steered`: the encoder follows the sink's
/// estimate (adapt-bitrate), else it is a recorded clip.
fn capped(seed: u64, share: f64, latency: Duration, steered: bool) -> Settings {
    let mut s = Settings::new(20 * MS, 0.0, seed);
    let cap = (s.stream.bitrate as f64 * share) as u64;
    let plan = &mut s.receivers[0];
    for imp in [&mut plan.down, &mut plan.up] {
        imp.rate_bps = Some(cap);
        imp.queue_bytes = 64 * 1024;
    }
    plan.latency = latency;
    s.steered = steered;
    s.stream.recorded = !steered;
    s
}

fn run(s: Settings) -> Pair {
    let mut pair = Pair::new(s);
    pair.run_past_the_last_frame(Duration::from_secs(1));
    pair
}

#[test]
fn a_clip_faster_than_the_link_still_shows_a_picture_every_second() {
    for latency in LATENCIES {
        for share in CAPS {
            let pair = run(capped(1, share, latency, false));
            let r = pair.report(0, 0);
            let what = format!("{latency:?} at {share}: {r}");
            // Before the rescue: nothing at all at 120 ms, a picture every few seconds at
            // 200. (A recording answers no keyframe request: each group runs late, as far as
            // its allowance, then the next one starts at the live edge.)
            assert!(r.longest_stall < SECOND, "{what}");
            assert!(r.decodable == r.delivered && r.decodable >= 80, "{what}");
            // What could not be on time is flagged late, and the sender said why.
            assert!(r.flagged_late + r.on_time >= r.delivered, "{what}");
            let st = &pair
                .sender
                .fanout
                .stats(std::time::Instant::now())
                .receivers[0];
            assert!(st.groups_late >= 4, "{what}: {st:?}");
        }
    }
}

#[test]
fn a_steered_encoder_settles_under_the_link_and_keeps_most_frames_on_time() {
    for latency in LATENCIES {
        for share in CAPS {
            let pair = run(capped(1, share, latency, true));
            let r = pair.report(0, 0);
            let cap = 4e6 * share;
            let encoder = pair.sender.encoder.stream.bitrate as f64;
            let what = format!("{latency:?} at {share}: {r}; encoder at {encoder}");
            assert!(r.longest_stall < 500 * MS, "{what}");
            assert_eq!(r.decodable, r.delivered, "{what}");
            // The encoder uses most of the link (the estimate stops at the path's rate, and
            // the encoder gets up to 92% of it, less after late keyframes; its last
            // setting) ...
            assert!(encoder >= 0.65 * cap && encoder <= cap, "{what}");
            // ... and what is late is mostly the keyframe and the frames queued behind it
            // (at 4 P pictures, 100 ms at 80% of the link, most of a 120 ms budget), and
            // the first group, at 4 Mbit/s.
            let on_time = if latency == budget::FALLBACK {
                0.85
            } else {
                0.8
            };
            assert!(r.on_time_share() >= on_time, "{what}");
        }
    }
}
