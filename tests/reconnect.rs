//! Connections that end: quicnalusrc reconnects after its sender restarts or the link times
//! out, and resumes at a keyframe; quicnalusink keeps serving when a receiver vanishes.

mod common;

use common::*;
use gst::prelude::*;
use gstquicnalu::relay::Impairment;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The frames after the first `skip`: the first must be a keyframe that says it follows a
/// gap; all of them, with what came before, must decode and keep time.
fn check_resumed(received: &[Received], skip: usize) {
    let first = &received[skip];
    assert!(
        !first.flags.contains(gst::BufferFlags::DELTA_UNIT),
        "output resumes at a keyframe"
    );
    assert!(
        first.flags.contains(gst::BufferFlags::DISCONT),
        "the frame after the reconnection is marked DISCONT"
    );
    let (decoded, errors) = decode_check(&stream_bytes(received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    assert_monotonic(received);
}

fn arrival(r: &Received) -> u64 {
    r.meta.expect("QuicNaluMeta").arrival_time
}

#[test]
fn receiver_reconnects_when_the_sender_restarts() {
    init();
    let (first_sender, port) = live_sender("width=320,height=240", "", 30);
    let receiver = Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        src_props(port)
    ));
    let messages = element_messages(&receiver);
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let connected = next_message(&messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<bool>("resumed"), Ok(false));
    wait_for(&store, &arrived, 30);

    first_sender.pipeline.set_state(gst::State::Null).unwrap();
    drop(first_sender);
    let lost = next_message(&messages, "quicnalusrc-disconnected");
    assert_eq!(lost.get::<bool>("reconnecting"), Ok(true));
    eprintln!("disconnected: {}", lost.get::<String>("reason").unwrap());
    let before = store.lock().unwrap().len();

    // The same port, as a restarted sender would have.
    let second_sender = Running::launch(&live_sender_description(
        "width=320,height=240",
        "",
        30,
        port,
    ));
    let restarted = gst::get_timestamp().nseconds();
    second_sender
        .pipeline
        .set_state(gst::State::Playing)
        .unwrap();
    let connected = next_message(&messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<bool>("resumed"), Ok(true));
    wait_for(&store, &arrived, before + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    eprintln!(
        "first frame from the restarted sender {:.1} ms after it started",
        (arrival(&received[before]) - restarted) as f64 / 1e6
    );
    check_resumed(&received, before);
}

#[test]
fn receiver_reconnects_after_an_idle_timeout_and_asks_for_a_keyframe() {
    init();
    // Without the keyframe request the next one would be 10 s away.
    let (_sender, port) = live_sender("width=320,height=240", "", 300);
    let relay = relay_to(port, Impairment::default());
    let receiver = receiver_via(&relay, "timeout=1000");
    let messages = element_messages(&receiver);
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 30);

    // Longer than the receiver's 1 s timeout: the connection is lost on both sides.
    let outage = Duration::from_secs(3);
    relay.outage(outage);
    let back = gst::get_timestamp().nseconds() + outage.as_nanos() as u64;
    let lost = next_message(&messages, "quicnalusrc-disconnected");
    let reason = lost.get::<String>("reason").unwrap();
    assert!(reason.contains("timed out"), "reason: {reason}");
    assert_eq!(lost.get::<bool>("reconnecting"), Ok(true));
    let before = store.lock().unwrap().len();
    let connected = next_message(&messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<bool>("resumed"), Ok(true));
    wait_for(&store, &arrived, before + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    let resumed_ms = (arrival(&received[before]) as f64 - back as f64) / 1e6;
    eprintln!("first keyframe {resumed_ms:.1} ms after the link came back");
    check_resumed(&received, before);
    // Reconnect attempts wait at most 2 s each (reconnect-delay-max) for an answer.
    assert!(resumed_ms < 3000.0, "resumed {resumed_ms:.1} ms after");
}

#[test]
fn receiver_gives_up_after_reconnect_timeout() {
    init();
    let (sender, port) = live_sender("width=320,height=240", "", 30);
    let receiver = Running::launch(&format!(
        "quicnalusrc {} reconnect-timeout=500 ! fakesink",
        src_props(port)
    ));
    let messages = element_messages(&receiver);
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    next_message(&messages, "quicnalusrc-connected");
    drop(sender);
    let error = receiver.expect_error();
    assert!(
        error.contains("did not answer again within 500 ms"),
        "error: {error}"
    );
}

#[test]
fn receiver_without_reconnect_fails_when_the_sender_stops() {
    init();
    let (sender, port) = live_sender("width=320,height=240", "", 30);
    let receiver = Running::launch(&format!(
        "quicnalusrc {} reconnect=false ! fakesink",
        src_props(port)
    ));
    let messages = element_messages(&receiver);
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    next_message(&messages, "quicnalusrc-connected");
    drop(sender);
    let lost = next_message(&messages, "quicnalusrc-disconnected");
    assert_eq!(lost.get::<bool>("reconnecting"), Ok(false));
    let error = receiver.expect_error();
    assert!(error.contains("sender stopped"), "error: {error}");
}

/// Hashes of the buffers passing `pad`, with their arrival QuicNaluMeta time when they
/// have one: enough to compare streams without holding megabytes that would hide the
/// element's own memory use.
fn fingerprints(pad: &gst::Pad) -> Arc<Mutex<Vec<(u64, u64)>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let store = out.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            let map = buffer.map_readable().unwrap();
            let mut hasher = DefaultHasher::new();
            map.as_slice().hash(&mut hasher);
            let arrival =
                gst_plugin_meta::QuicNaluMeta::from_buffer(buffer).map_or(0, |m| m.arrival_time);
            store.lock().unwrap().push((hasher.finish(), arrival));
        }
        gst::PadProbeReturn::Ok
    });
    out
}

#[test]
fn sink_keeps_serving_when_a_receiver_vanishes() {
    init();
    let clip = noise_clip();
    let mut sent = None;
    let (sender, port) = start_sender_with(
        &format!(
            "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink \
             eos-timeout=1000 {}",
            clip.display(),
            sink_props()
        ),
        |s| sent = Some(fingerprints(&s.by_name("parse").static_pad("src").unwrap())),
    );
    let steady = Running::launch(&format!(
        "quicnalusrc name=src {} ! fakesink",
        src_props(port)
    ));
    let received = fingerprints(&steady.by_name("src").static_pad("src").unwrap());
    steady.pipeline.set_state(gst::State::Playing).unwrap();
    // The one that vanishes: its long timeout keeps the sink's side of it open throughout.
    let relay = relay_to(port, Impairment::default());
    let vanishing = receiver_via(&relay, "timeout=60000");
    let (vanishing_store, vanishing_arrived) = collect(&vanishing, "out");
    vanishing.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&vanishing_store, &vanishing_arrived, 5);

    // No goodbye, no more packets either way.
    relay.outage(Duration::from_secs(600));
    let vanished = Instant::now();
    let vanished_at = gst::get_timestamp().nseconds();
    let rss_start = rss_bytes();
    let mut rss_peak = rss_start;
    while steady
        .pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .is_none()
    {
        rss_peak = rss_peak.max(rss_bytes());
        assert!(
            vanished.elapsed() < WATCHDOG,
            "the steady receiver never ends"
        );
    }
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    let received = received.lock().unwrap().clone();
    let sent = sent.unwrap().lock().unwrap().clone();
    assert_eq!(
        received.len(),
        sent.len(),
        "the steady receiver got every frame"
    );
    assert!(
        received.iter().zip(&sent).all(|(r, s)| r.0 == s.0),
        "byte-exact"
    );
    let after: Vec<u64> = received
        .iter()
        .map(|r| r.1)
        .filter(|&t| t > vanished_at)
        .collect();
    let longest_gap_ms = after
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .fold(0.0, f64::max);
    let growth_mib = (rss_peak - rss_start) as f64 / (1 << 20) as f64;
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
    assert!(growth_mib < 24.0, "memory grew {growth_mib:.1} MiB");
}
