//! Connections that end: quicnalusrc reconnects after its sender restarts or the link times
//! out, and resumes at a keyframe; quicnalusink keeps serving when a receiver vanishes.

use crate::common::*;
use gst::prelude::*;
use std::time::Duration;
use udp_impair::Impairment;

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

/// The index of the first frame that reached the receiver's networking thread after `t`
/// (CLOCK_MONOTONIC ns): the old connection's frames may still be on their way to the
/// appsink when a test learns of the disconnection.
fn first_arrival_after(received: &[Received], t: u64) -> usize {
    received
        .iter()
        .position(|r| arrival(r) > t)
        .expect("frames after the reconnection")
}

fn ms_between(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
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
    let count = store.lock().unwrap().len();

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
    wait_for(&store, &arrived, count + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    let resumed = first_arrival_after(&received, restarted);
    eprintln!(
        "first frame from the restarted sender {:.1} ms after it started",
        ms_between(restarted, arrival(&received[resumed]))
    );
    check_resumed(&received, resumed);
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
    let count = store.lock().unwrap().len();
    let connected = next_message(&messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<bool>("resumed"), Ok(true));
    wait_for(&store, &arrived, count + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    let resumed = first_arrival_after(&received, back);
    let resumed_ms = ms_between(back, arrival(&received[resumed]));
    eprintln!("first keyframe {resumed_ms:.1} ms after the link came back");
    check_resumed(&received, resumed);
    // Reconnect attempts wait at most 2 s each (reconnect-delay-max) for an answer.
    assert!(resumed_ms < 3000.0, "resumed {resumed_ms:.1} ms after");
}

/// A receiver with `src_extra` properties, connected to a live sender that then stops;
/// returns it with its element messages.
fn receiver_whose_sender_stops(
    src_extra: &str,
) -> (Running, std::sync::mpsc::Receiver<gst::Structure>) {
    init();
    let (sender, port) = live_sender("width=320,height=240", "", 30);
    let receiver = Running::launch(&format!(
        "quicnalusrc {} {src_extra} ! fakesink",
        src_props(port)
    ));
    let messages = element_messages(&receiver);
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    next_message(&messages, "quicnalusrc-connected");
    drop(sender);
    (receiver, messages)
}

#[test]
fn receiver_gives_up_after_reconnect_timeout() {
    let (receiver, _) = receiver_whose_sender_stops("reconnect-timeout=500");
    let error = receiver.expect_error();
    assert!(
        error.contains("did not answer again within 500 ms"),
        "error: {error}"
    );
}

#[test]
fn receiver_without_reconnect_fails_when_the_sender_stops() {
    let (receiver, messages) = receiver_whose_sender_stops("reconnect=false");
    let lost = next_message(&messages, "quicnalusrc-disconnected");
    assert_eq!(lost.get::<bool>("reconnecting"), Ok(false));
    let error = receiver.expect_error();
    assert!(error.contains("sender stopped"), "error: {error}");
}

#[test]
fn receiver_outputs_everything_held_when_the_sender_stops_waiting_at_eos() {
    init();
    // The sender waits only 300 ms at EOS for a receiver whose output is held up.
    let (sender, port, sent) = start_tapped_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink sync=false latency-budget=0 \
         eos-timeout=300 {}",
        media("vpl-cars_320x240.h265").display(),
        sink_props()
    ));
    let receiver = Running::launch(&format!(
        "quicnalusrc name=src {} ! appsink name=out sync=false",
        src_props(port)
    ));
    let messages = element_messages(&receiver);
    let (store, _) = collect(&receiver, "out");
    let pad = receiver.by_name("src").static_pad("src").unwrap();
    let hold = pad
        .add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        })
        .unwrap();
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    // The sender gives up on the held-up receiver and closes the connection.
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    sender.pipeline.set_state(gst::State::Null).unwrap();
    let ended = next_message(&messages, "quicnalusrc-disconnected");
    assert_eq!(
        ended.get::<String>("reason").as_deref(),
        Ok("end of stream")
    );
    assert_eq!(ended.get::<bool>("reconnecting"), Ok(false));
    pad.remove_probe(hold);
    receiver
        .finish(WATCHDOG)
        .expect("receiver reaches EOS, no error");

    let received = store.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert_eq!(received.len(), sent.len(), "every frame the sender sent");
    assert!(received.iter().zip(&sent).all(|(r, s)| &r.data == s));
}
