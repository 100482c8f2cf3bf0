//! quicnalu through the impairment relay: a lossy, delayed link and an outage. Whatever
//! quicnalusrc outputs must decode, and after an outage playback must resume quickly.

mod common;

use common::*;
use gst::prelude::*;
use gstquicnalu::relay::Impairment;
use std::time::Duration;

#[test]
fn lossy_40ms_rtt_link_outputs_only_decodable_frames() {
    init();
    let (sender, port) = live_sender("width=640,height=360", "num-buffers=150", 30);
    let relay = relay_to(
        port,
        Impairment {
            delay: Duration::from_millis(20),
            loss: 0.01,
            ..Impairment::default()
        },
    );
    let received = receive_all_via(&sender, &relay);
    let stats = relay.stats();
    eprintln!(
        "{} of 150 frames out; relay lost {} + {} packets",
        received.len(),
        stats.to_server.lost,
        stats.to_client.lost
    );
    assert!(stats.to_client.lost > 0, "the relay dropped nothing");
    assert!(
        received.len() >= 135,
        "only {} of 150 frames",
        received.len()
    );
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    assert_monotonic(&received);
}

/// Random loss well past what a loss-based controller carries 2 Mbit/s through, with
/// reordering jitter, and every property at its default: live, whole and decodable.
#[test]
fn five_percent_loss_with_jitter_at_defaults_loses_almost_nothing() {
    init();
    let frames = 300;
    let (sender, port) =
        live_sender_with_defaults("width=480,height=272", &format!("num-buffers={frames}"), 60);
    let relay = relay_to(
        port,
        Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            reorder: true,
            loss: 0.05,
            ..Impairment::default()
        },
    );
    let received = receive_all_via(&sender, &relay);
    let stats = relay.stats();
    let late = received
        .iter()
        .filter(|r| {
            r.meta
                .is_some_and(|m| m.flags.contains(gst_plugin_meta::Flags::LATE))
        })
        .count();
    eprintln!(
        "{} of {frames} frames out ({late} flagged late); relay lost {} + {} packets",
        received.len(),
        stats.to_server.lost,
        stats.to_client.lost
    );
    assert!(stats.to_client.lost > 100, "the relay dropped too little");
    assert!(
        received.len() * 100 >= frames * 99,
        "only {} of {frames} frames",
        received.len()
    );
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    assert_monotonic(&received);
}

#[test]
fn playback_resumes_within_300ms_of_a_2s_outage() {
    init();
    // Without a request the next keyframe would be 10 s away.
    let (_sender, port) = live_sender("width=320,height=240", "", 300);
    let relay = relay_to(
        port,
        Impairment {
            delay: Duration::from_millis(5),
            ..Impairment::default()
        },
    );
    let receiver = receiver_via(&relay, "");
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 45);

    relay.outage(Duration::from_secs(2));
    let back = gst::get_timestamp().nseconds() + 2_000_000_000;
    // The first keyframe out after the link is back.
    let first_key_after = || {
        store
            .lock()
            .unwrap()
            .iter()
            .find(|r| {
                let arrival = r.meta.map_or(0, |m| m.arrival_time);
                arrival > back && !r.flags.contains(gst::BufferFlags::DELTA_UNIT)
            })
            .cloned()
    };
    let key = loop {
        if let Some(k) = first_key_after() {
            break k;
        }
        arrived.recv_timeout(WATCHDOG).expect("playback resumes");
    };
    let recovered_ms = (key.meta.unwrap().arrival_time - back) as f64 / 1e6;
    eprintln!("first keyframe {recovered_ms:.1} ms after the link came back");
    assert!(
        key.flags.contains(gst::BufferFlags::DISCONT),
        "the frame after the gap is marked DISCONT"
    );
    let n = store.lock().unwrap().len();
    wait_for(&store, &arrived, n + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    assert_monotonic(&received);
    assert!(recovered_ms < 300.0, "recovery took {recovered_ms:.1} ms");
}
