//! Keyframe requests: a GstForceKeyUnit event sent upstream into quicnalusrc reaches the
//! sender, whose quicnalusink asks its encoder for a keyframe; requests are merged.

use crate::common::*;
use gst::prelude::*;
use std::sync::mpsc;

/// A live x265 encoder that only makes a keyframe by itself every 300 frames (10 s).
fn live_sender() -> (Running, u16) {
    start_sender(&format!(
        "videotestsrc is-live=true pattern=ball ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc key-int-max=300 speed-preset=ultrafast tune=zerolatency ! h265parse ! \
         quicnalusink name=sink {}",
        sink_props()
    ))
}

fn force_key_unit() -> gst::Event {
    gst::event::CustomUpstream::new(
        gst::Structure::builder("GstForceKeyUnit")
            .field("all-headers", true)
            .build(),
    )
}

/// Receives until `frames` buffers arrived; returns whether each was a keyframe.
fn take(
    arrived: &mpsc::Receiver<usize>,
    store: &std::sync::Mutex<Vec<Received>>,
    frames: usize,
) -> Vec<bool> {
    let start = store.lock().unwrap().len();
    while store.lock().unwrap().len() < start + frames {
        arrived
            .recv_timeout(WATCHDOG)
            .expect("frames keep arriving");
    }
    store.lock().unwrap()[start..start + frames]
        .iter()
        .map(|r| !r.flags.contains(gst::BufferFlags::DELTA_UNIT))
        .collect()
}

#[test]
fn downstream_request_brings_a_keyframe_and_requests_merge() {
    init();
    let (_sender, port) = live_sender();
    let receiver = Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        src_props(port)
    ));
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();

    let first = take(&arrived, &store, 10);
    assert!(first[0], "the stream starts at a keyframe");
    assert!(
        !first[1..].iter().any(|k| *k),
        "no keyframe without a request"
    );

    // One request: a keyframe follows within 45 frames (1.5 s), not 290.
    let out = receiver.by_name("out");
    assert!(
        out.send_event(force_key_unit()),
        "quicnalusrc takes the event"
    );
    let next = take(&arrived, &store, 45);
    let at = next.iter().position(|k| *k);
    assert!(at.is_some(), "no keyframe within 45 frames of the request");
    eprintln!("keyframe {} frames after the request", at.unwrap());

    // A burst of requests is merged into one keyframe, or two if the encoder is slower
    // than the merge interval (250 ms) on a loaded machine.
    let settle = take(&arrived, &store, 15);
    drop(settle);
    for _ in 0..5 {
        assert!(out.send_event(force_key_unit()));
    }
    let burst = take(&arrived, &store, 60);
    let keyframes = burst.iter().filter(|k| **k).count();
    assert!(
        (1..=2).contains(&keyframes),
        "{keyframes} keyframes for 5 requests"
    );
}
