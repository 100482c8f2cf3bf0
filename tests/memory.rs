//! Memory and service when a receiver or the network is slower than the stream. These
//! tests read the process's RSS, so they are the only ones in this binary and take turns.

mod common;

use common::*;
use gst::prelude::*;
use gstquicnalu::relay::Impairment;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One RSS measurement at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// One malloc arena for the whole process: with one per thread (glibc's default), which
/// thread first frees a frame decides whether RSS grows by a fresh arena, and this binary
/// measured 3 MiB or 20-31 MiB of growth for the same run. What is measured here is what
/// the elements keep, not where glibc puts it.
fn one_arena() {
    // SAFETY: mallopt only sets a malloc tunable; it is called before the pipelines start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Samples the process's RSS every 200 ms until `running` ends (EOS or error); returns
/// how far it rose above its value at the start.
fn rss_growth_until_end(running: &Running) -> u64 {
    let bus = running.pipeline.bus().expect("bus");
    let start = rss_bytes();
    let mut peak = start;
    let give_up = Instant::now() + WATCHDOG;
    while bus
        .timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .is_none()
    {
        peak = peak.max(rss_bytes());
        assert!(Instant::now() < give_up, "the receiver never ends");
    }
    peak - start
}

#[test]
fn sink_keeps_serving_when_a_receiver_vanishes() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    one_arena();
    init();
    let clip = noise_clip();
    let (sender, port, sent) = start_fingerprinted_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink \
         eos-timeout=1000 {}",
        clip.display(),
        sink_props()
    ));
    let (steady, received) = fingerprinted_receiver(port);
    steady.pipeline.set_state(gst::State::Playing).unwrap();
    // The one that vanishes: its long timeout keeps the sink's side of it open throughout.
    let relay = relay_to(port, Impairment::default());
    let vanishing = receiver_via(&relay, "timeout=60000");
    let (vanishing_store, vanishing_arrived) = collect(&vanishing, "out");
    vanishing.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&vanishing_store, &vanishing_arrived, 5);

    // No goodbye, no more packets either way.
    relay.outage(Duration::from_secs(600));
    let vanished_at = gst::get_timestamp().nseconds();
    let growth = rss_growth_until_end(&steady);
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    assert_every_frame(&received, &sent);
    let received = received.lock().unwrap().clone();
    let after: Vec<u64> = received
        .iter()
        .map(|r| r.1)
        .filter(|&t| t > vanished_at)
        .collect();
    let longest_gap_ms = after
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .fold(0.0, f64::max);
    let growth_mib = growth as f64 / (1 << 20) as f64;
    eprintln!(
        "{} frames after the vanish; longest gap {longest_gap_ms:.1} ms; RSS grew {growth_mib:.1} MiB",
        after.len()
    );
    assert!(after.len() >= 100, "the stream went on after the vanish");
    assert!(
        longest_gap_ms < 1000.0,
        "the steady receiver stalled {longest_gap_ms:.1} ms"
    );
    // The vanished receiver's backlog is capped at 8 MiB, then dropped.
    assert!(growth_mib < 16.0, "memory grew {growth_mib:.1} MiB");
}

#[test]
fn memory_stays_flat_when_the_network_is_slower_than_the_stream() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    one_arena();
    init();
    // About 25 Mbit/s through a 16 Mbit/s link: the sink must drop, by the budget.
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink latency-budget=200 \
         eos-timeout=1000 {}",
        noise_clip().display(),
        sink_props()
    ));
    let relay = relay_to(port, capped_link(16_000_000, 256 * 1024));
    let receiver = receiver_via(&relay, "");
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 1);
    let growth = rss_growth_until_end(&receiver);
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    let received = store.lock().unwrap().clone();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    // What this test keeps of the received frames is not the elements' memory.
    let kept: u64 = received.iter().map(|r| r.data.len() as u64).sum();
    let growth_mib = mib(growth) - mib(kept);
    let gaps = received
        .iter()
        .filter(|r| {
            r.meta
                .is_some_and(|m| m.flags.contains(gst_plugin_meta::Flags::GAP))
        })
        .count();
    eprintln!(
        "{} of 300 frames out, {gaps} after a skip; RSS grew {growth_mib:.1} MiB besides the \
         {:.1} MiB of frames kept",
        received.len(),
        mib(kept)
    );
    assert!(gaps > 0, "the sink never had to drop");
    assert!(received.len() >= 30, "only {} frames", received.len());
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    // Unbounded, the sink's queue would grow by 9 Mbit/s x 10 s, about 11 MiB.
    assert!(growth_mib < 8.0, "memory grew {growth_mib:.1} MiB");
}
