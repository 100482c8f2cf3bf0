//! quicnalu through the impairment relay: a lossy, delayed link and an outage. Whatever
//! quicnalusrc outputs must decode, and after an outage playback must resume quickly.

mod common;

use common::*;
use gst::prelude::*;
use gstquicnalu::relay::{Impairment, Relay, RelayConfig};
use std::time::Duration;

/// A live 30 fps x265 sender with a 200 ms latency budget.
fn live_sender(size: &str, extra: &str, key_int: u32) -> (Running, u16) {
    start_sender(&format!(
        "videotestsrc is-live=true pattern=ball {extra} ! \
         video/x-raw,{size},framerate=30/1 ! \
         x265enc key-int-max={key_int} speed-preset=ultrafast tune=zerolatency bitrate=2000 ! \
         h265parse ! quicnalusink name=sink latency-budget=200 {}",
        sink_props()
    ))
}

fn relay_to(port: u16, impairment: Impairment) -> Relay {
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    Relay::start(RelayConfig {
        seed: 42,
        ..RelayConfig::symmetric(server, impairment)
    })
    .expect("relay starts")
}

fn receiver_via(relay: &Relay) -> Running {
    Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        src_props(relay.local_addr().port())
    ))
}

fn stream_bytes(received: &[Received]) -> Vec<u8> {
    received
        .iter()
        .flat_map(|r| r.data.iter().copied())
        .collect()
}

/// Decode timestamps never go back, across skips too.
fn assert_monotonic(received: &[Received]) {
    let times: Vec<_> = received.iter().filter_map(|r| r.dts.or(r.pts)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "timestamps go back");
}

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
    let receiver = receiver_via(&relay);
    let (store, _) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    let received = store.lock().unwrap().clone();
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
    let receiver = receiver_via(&relay);
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let wait_for = |n: usize| {
        while store.lock().unwrap().len() < n {
            arrived
                .recv_timeout(WATCHDOG)
                .expect("frames keep arriving");
        }
    };
    wait_for(45);

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
    wait_for(n + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    assert_monotonic(&received);
    assert!(recovered_ms < 300.0, "recovery took {recovered_ms:.1} ms");
}
