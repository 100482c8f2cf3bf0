//! Never a blank screen when the link is slower than the stream (issue 31): a ~4 Mbit/s
//! H.265 stream with an IRAP every 2 s, through a 3 Mbit/s link with 20 ms each way, to a
//! quicnalusrc with latency=120 and a quicnalusink at its defaults. Every IRAP takes longer
//! than that budget to cross, so when every group that misses it expires, nothing but the
//! first few frames is ever output. A steerable encoder must be steered under the link by default; a stream that
//! cannot be steered must still show a picture at least every IRAP interval or so.

use crate::common::*;
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use udp_impair::Impairment;

/// The link: 3 Mbit/s with a 64 KiB queue (170 ms at that rate, as in the
/// benchmarks' capped links), 20 ms each way.
fn link() -> Impairment {
    Impairment {
        delay: Duration::from_millis(20),
        ..capped_link(3_000_000, 64 * 1024)
    }
}

/// The receiver budget.
const RECEIVER: &str = "latency=120";

/// The first picture must be out within this of the receiver starting. The first IRAP
/// alone takes a few hundred ms to cross the link, late or not; the rest is room for a
/// loaded machine, well inside the 10 s session.
const FIRST_PICTURE: Duration = Duration::from_secs(4);

/// 10 s at 30 fps.
const FRAMES: usize = 300;

/// The time (ns of `gst::get_timestamp()`, as [`Received::output_time`]) each buffer passed
/// `pad`.
fn push_times(pad: &gst::Pad) -> Arc<Mutex<Vec<u64>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let store = out.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        store.lock().unwrap().push(gst::get_timestamp().nseconds());
        gst::PadProbeReturn::Ok
    });
    out
}

/// What a session gave: the sender's push times (at its h265parse) and what the receiver
/// output, and when the receiver started.
struct Session {
    started: u64,
    sent: Vec<u64>,
    received: Vec<Received>,
    /// The sender's WARNING messages, as text.
    warnings: Vec<String>,
}

/// Runs `sender` (which names its h265parse `parse` and its quicnalusink `sink`, and ends)
/// through [`link`] to a quicnalusrc with [`RECEIVER`], until both reach EOS.
fn session(sender: &str) -> Session {
    let mut sent = None;
    let (sender, port) = start_sender_with(sender, |s| {
        sent = Some(push_times(&s.by_name("parse").static_pad("src").unwrap()))
    });
    let sent = sent.expect("tap installed");
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let seen = warnings.clone();
    let bus = sender.pipeline.bus().expect("bus");
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Warning(w) = msg.view() {
            seen.lock().unwrap().push(w.error().to_string());
        }
        gst::BusSyncReply::Pass
    });
    let relay = relay_to(port, link());
    let receiver = receiver_via(&relay, RECEIVER);
    let (store, _) = collect(&receiver, "out");
    let started = gst::get_timestamp().nseconds();
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    // The sender has said EOS on every connection by now; a receiver that never hears it
    // is a failure of its own (and today's code must not hang the test for minutes).
    let eos = receiver.finish(Duration::from_secs(15));
    let stats = relay.stats();
    let session = Session {
        started,
        sent: sent.lock().unwrap().clone(),
        received: store.lock().unwrap().clone(),
        warnings: warnings.lock().unwrap().clone(),
    };
    let late = session
        .received
        .iter()
        .filter(|r| {
            r.meta
                .is_some_and(|m| m.flags.contains(gst_plugin_meta::Flags::LATE))
        })
        .count();
    let ms = |t: u64| (t as f64 - started as f64) / 1e6;
    // A sender starved of CPU leaves gaps of its own: a stall at the receiver no longer
    // than this one is the machine's, not the transport's.
    let sender_gap = session.sent.windows(2).map(|w| w[1] - w[0]).max();
    eprintln!(
        "{} of {} frames out ({late} flagged late, {} keyframes); sent from {:.0} to {:.0} ms, \
         longest gap between two frames sent {:.0} ms; output at (ms after the receiver \
         started): {:?}; relay to the receiver: {} packets, {} dropped by the cap's queue",
        session.received.len(),
        session.sent.len(),
        session
            .received
            .iter()
            .filter(|r| !r.flags.contains(gst::BufferFlags::DELTA_UNIT))
            .count(),
        session.sent.first().map_or(f64::NAN, |&t| ms(t)),
        session.sent.last().map_or(f64::NAN, |&t| ms(t)),
        sender_gap.map_or(f64::NAN, |g| g as f64 / 1e6),
        session
            .received
            .iter()
            .map(|r| ms(r.output_time).round() as i64)
            .collect::<Vec<_>>(),
        stats.to_client.forwarded,
        stats.to_client.queue_dropped,
    );
    eos.expect("receiver reaches EOS");
    session
}

impl Session {
    /// When the first picture came out, after the receiver started.
    fn first_picture(&self) -> Duration {
        let first = self
            .shown()
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no picture output at all in {FRAMES} frames sent"));
        Duration::from_nanos(first - self.started)
    }

    /// The output times of the pictures shown: DECODE_ONLY buffers are decoded, not shown.
    fn shown(&self) -> Vec<u64> {
        self.received
            .iter()
            .filter(|r| !r.flags.contains(gst::BufferFlags::DECODE_ONLY))
            .map(|r| r.output_time)
            .collect()
    }

    /// The longest time without a new picture from `from` (ns after the receiver started,
    /// or the first picture if later) until the sender pushed its last frame.
    fn longest_stall_after(&self, from: Duration) -> Duration {
        let shown = self.shown();
        let first = *shown.first().expect("a picture output");
        let from = (self.started + from.as_nanos() as u64).max(first);
        let to = *self.sent.last().expect("frames sent");
        let mut points = vec![from];
        points.extend(shown.iter().copied().filter(|&t| t > from && t < to));
        points.push(to);
        let longest = points
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .max()
            .unwrap_or(0);
        Duration::from_nanos(longest)
    }

    /// Every output frame decodes with ffmpeg, without an error.
    fn assert_decodes(&self) {
        let (decoded, errors) = decode_check(&stream_bytes(&self.received));
        assert_eq!(errors, "", "ffmpeg reported errors");
        assert_eq!(decoded, self.received.len(), "every output frame decodes");
        assert_monotonic(&self.received);
    }
}

/// A live x265enc asked for 4 Mbit/s, quicnalusink at its defaults (no adapt-bitrate set):
/// the sink steers the encoder under the link, and playback is smooth after it settles.
#[test]
fn a_steerable_encoder_over_a_slower_link_plays_smoothly_at_defaults() {
    init();
    let run = session(&format!(
        "videotestsrc is-live=true num-buffers={FRAMES} pattern=zone-plate kx2=20 ky2=20 \
         kt=1 kt2=2 ! video/x-raw,width=480,height=272,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency bitrate=4000 key-int-max=60 ! \
         h265parse name=parse ! quicnalusink name=sink {}",
        sink_props()
    ));

    let first = run.first_picture();
    assert!(first <= FIRST_PICTURE, "first picture after {first:?}");
    // The issue asks for no stall over 1 s in the benchmark, on an idle machine. Here the
    // tests run two at a time on two cores beside x265enc, and a descheduled sender,
    // relay or receiver thread adds its wait to a gap: 1.5 s still fails a receiver that
    // waits out a 2 s IRAP interval, which a link this slow forces without steering.
    let stall = run.longest_stall_after(Duration::from_secs(2));
    assert!(
        stall <= Duration::from_millis(1500),
        "longest stall after 2 s: {stall:?}"
    );
    // Steered under the link, nearly every frame crosses it (97.9% in docs/BENCHMARKS.md,
    // scenario (f), at a 200 ms budget); unsteered, under half do (47.9%, scenario (e)).
    assert!(
        run.received.len() * 2 >= run.sent.len(),
        "only {} of {} frames sent arrived",
        run.received.len(),
        run.sent.len()
    );
    run.assert_decodes();
}

/// 10 s of 480x272 zone-plate at about 4 Mbit/s with an IRAP every 2 s: what the live
/// encoder of the test above makes unsteered, recorded.
fn four_megabit_clip() -> std::path::PathBuf {
    cached_clip(
        "zone-plate-480x272-4M.h265",
        &format!(
            "videotestsrc num-buffers={FRAMES} pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
             video/x-raw,width=480,height=272,framerate=30/1 ! \
             x265enc speed-preset=ultrafast tune=zerolatency bitrate=4000 key-int-max=60"
        ),
    )
}

/// A recorded stream played at real time (quicnalusink's sync=true, its default): nothing
/// to steer and no keyframe on request. The sender must still get a picture through at
/// least once per IRAP interval, late if it must.
#[test]
fn an_unsteerable_stream_over_a_slower_link_still_shows_a_picture_every_irap_interval() {
    init();
    let clip = four_megabit_clip();
    let seconds = FRAMES as f64 / 30.0;
    let mbps = std::fs::metadata(&clip).unwrap().len() as f64 * 8.0 / seconds / 1e6;
    eprintln!("clip: {mbps:.2} Mbit/s");
    assert!(
        mbps > 3.5,
        "the clip is {mbps:.2} Mbit/s: the link is not slower"
    );
    let run = session(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink {}",
        clip.display(),
        sink_props()
    ));

    let first = run.first_picture();
    assert!(first <= FIRST_PICTURE, "first picture after {first:?}");
    // IRAPs are 2 s apart and no other picture can start decoding, so a picture every
    // IRAP interval is the most one can ask of a stream this link cannot carry whole; the
    // extra 0.5 s is for the IRAP crossing a link it overfills, late, on a loaded machine.
    let stall = run.longest_stall_after(Duration::ZERO);
    assert!(
        stall <= Duration::from_millis(2500),
        "longest stall after the first picture: {stall:?}"
    );
    run.assert_decodes();
    // The sink says why the pictures are late, once, with both rates.
    let overruns: Vec<&String> = (run.warnings.iter())
        .filter(|w| w.contains("faster than the path"))
        .collect();
    assert_eq!(overruns.len(), 1, "warnings: {:?}", run.warnings);
    assert!(overruns[0].contains("Mbit/s"), "{}", overruns[0]);
}
