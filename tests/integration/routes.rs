//! Redundant and bonded routes (quicnalusrc `paths`, issue 32): one receiver reaching the
//! same quicnalusink over two relays at once, each its own impairment. What it outputs is
//! every access unit once, in order, and it decodes; a route that fails loses nothing.

use crate::common::*;
use gst::prelude::*;
use gst_plugin_meta::Flags;
use std::time::Duration;
use udp_impair::{Impairment, Relay};

/// 8 s of live 320x240 x265 at 30 fps, an IRAP every 2 s, every sink property at its
/// default.
fn sender() -> (Running, u16) {
    live_sender_with_defaults("width=320,height=240", "num-buffers=240", 60)
}

/// A receiver dialling `a` as address:port and `b` in `paths`, with `extra` properties.
fn receiver_over(a: &Relay, b: &Relay, extra: &str) -> Running {
    receiver_via(
        a,
        &format!("paths=127.0.0.1:{} {extra}", b.local_addr().port()),
    )
}

/// Two relays of 10 ms each way in front of the sink on `port`, and a receiver (not
/// started) with bonded routes over them.
fn bonded_over_two_clean_routes(port: u16) -> (Relay, Relay, Running) {
    let link = || Impairment {
        delay: Duration::from_millis(10),
        ..Impairment::default()
    };
    let (a, b) = (relay_to(port, link()), relay_to(port, link()));
    let receiver = receiver_over(&a, &b, "path-mode=bonded");
    (a, b, receiver)
}

/// Asserts the output is the sender's frames in order with none missing (by QuicNaluMeta's
/// seq), no gap after the first, and that it decodes.
fn assert_whole(received: &[Received], sent: u64) {
    let seqs: Vec<u64> = received.iter().map(|r| r.meta.expect("meta").seq).collect();
    let first = *seqs.first().expect("frames output");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "every frame once, in order: {seqs:?}"
    );
    assert_eq!(
        seqs.last().copied(),
        Some(sent - 1),
        "through the last frame"
    );
    assert!(
        first <= 1,
        "from the first frame (or the one after): {first}"
    );
    let gaps = received[1..]
        .iter()
        .filter(|r| {
            r.flags.contains(gst::BufferFlags::DISCONT)
                || r.meta.is_some_and(|m| m.flags.contains(Flags::GAP))
        })
        .count();
    assert_eq!(gaps, 0, "no gap after the first frame");
    let (decoded, errors) = decode_check(&stream_bytes(received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    assert_monotonic(received);
}

/// The sink's frames-in, once it ended.
fn frames_in(sender: &Running) -> u64 {
    let stats: gst::Structure = sender.pipeline.by_name("sink").unwrap().property("stats");
    stats.get("frames-in").unwrap()
}

#[test]
fn a_route_that_fails_for_3_s_loses_nothing_when_another_carries_the_stream() {
    init();
    let (sender, port) = sender();
    let a = relay_to(
        port,
        Impairment {
            delay: Duration::from_millis(5),
            ..Impairment::default()
        },
    );
    let b = relay_to(
        port,
        Impairment {
            delay: Duration::from_millis(30),
            loss: 0.02,
            ..Impairment::default()
        },
    );
    let receiver = receiver_over(&a, &b, "");
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 45);
    // One receiver with two routes, in both elements' stats.
    let sink_stats: gst::Structure = sender.pipeline.by_name("sink").unwrap().property("stats");
    let receivers = sink_stats.get::<gst::Array>("receivers").unwrap();
    assert_eq!(receivers.len(), 1, "{sink_stats}");
    let first = receivers.first().unwrap().get::<gst::Structure>().unwrap();
    assert_eq!(first.get::<gst::Array>("routes").unwrap().len(), 2);
    let src = receiver.pipeline.iterate_sources().next().unwrap().unwrap();
    let src_stats: gst::Structure = src.property("stats");
    assert_eq!(src_stats.get::<gst::Array>("routes").unwrap().len(), 2);

    a.outage(Duration::from_secs(3));
    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let received = store.lock().unwrap().clone();
    assert_whole(&received, frames_in(&sender));
    // Route A came back without anyone asking the encoder for a keyframe.
    let sink_stats: gst::Structure = sender.pipeline.by_name("sink").unwrap().property("stats");
    assert_eq!(
        sink_stats.get::<u64>("keyframe-requests").unwrap(),
        0,
        "{sink_stats}"
    );
}

#[test]
fn bonded_routes_split_each_access_unit_and_it_arrives_whole() {
    init();
    let (sender, port) = sender();
    let (a, b, receiver) = bonded_over_two_clean_routes(port);
    let (store, _) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let received = store.lock().unwrap().clone();
    assert_whole(&received, frames_in(&sender));
    // Each route carried a share of the stream, not all of it twice.
    let bytes = |r: &Relay| r.stats().to_client.forwarded_bytes;
    let (to_a, to_b) = (bytes(&a), bytes(&b));
    let media = received.iter().map(|r| r.data.len() as u64).sum::<u64>();
    eprintln!("route a {to_a} B, route b {to_b} B, media {media} B");
    assert!(
        to_a + to_b < media * 3 / 2,
        "bonded routes carry the stream about once: {to_a} + {to_b} B for {media} B"
    );
    assert!(
        to_a.min(to_b) > media / 5,
        "both routes carry a share: {to_a} and {to_b} B"
    );
}

#[test]
fn a_bonded_route_that_fails_is_repaired_over_the_other() {
    init();
    let (sender, port) = sender();
    let (a, _b, receiver) = bonded_over_two_clean_routes(port);
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 45);
    // The parts under way on route A when it fails are asked for again over route B, and
    // the next access units go over B alone until A is back.
    a.outage(Duration::from_secs(2));
    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let received = store.lock().unwrap().clone();
    assert_whole(&received, frames_in(&sender));
}

#[test]
fn max_receivers_counts_a_receiver_with_two_routes_once() {
    init();
    let (sender, port) = start_sender(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,\
         framerate=30/1 ! x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 ! \
         h265parse ! quicnalusink name=sink max-receivers=1 {}",
        sink_props()
    ));
    let first = receiver(port, &format!("paths=127.0.0.1:{port}"));
    let (store, arrived) = collect(&first, "out");
    first.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 30);
    // A second receiver is one too many, and is refused.
    let second = receiver(port, "reconnect=false");
    second.pipeline.set_state(gst::State::Playing).unwrap();
    let refused = second.finish(WATCHDOG);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("maximum")),
        "the second receiver is refused: {refused:?}"
    );
    // The refused one may still be closing: it is listed, not admitted.
    let stats: gst::Structure = sender.pipeline.by_name("sink").unwrap().property("stats");
    let receivers = stats.get::<gst::Array>("receivers").unwrap();
    let admitted = receivers
        .iter()
        .filter(|r| {
            let r = r.get::<gst::Structure>().unwrap();
            r.get::<bool>("admitted").unwrap()
        })
        .count();
    assert_eq!(admitted, 1, "{stats}");
    first.pipeline.set_state(gst::State::Null).unwrap();
    sender.pipeline.set_state(gst::State::Null).unwrap();
}

/// Counts of routes in the listener's and the sink's stats, and the sink's receivers.
fn route_counts(receiver: &Running, sender: &Running) -> (usize, usize, usize) {
    let src: gst::Structure = receiver.by_name("src").property("stats");
    let src_routes = src.get::<gst::Array>("routes").map_or(0, |r| r.len());
    let sink: gst::Structure = sender.by_name("sink").property("stats");
    let receivers = sink.get::<gst::Array>("receivers").unwrap();
    let sink_routes = receivers.first().map_or(0, |r| {
        let r = r.get::<gst::Structure>().unwrap();
        r.get::<gst::Array>("routes").map_or(0, |a| a.len())
    });
    (src_routes, receivers.len(), sink_routes)
}

#[test]
fn a_caller_with_two_addresses_is_called_back_over_both_and_a_cut_one_loses_nothing() {
    init();
    let pin = gstquicnalu::net::tls::Fingerprint::of_pem_file(&certs().cert).unwrap();
    let receiver = Running::launch(&format!(
        "quicnalusrc name=src mode=listener address=127.0.0.1 port=0 \
         certificate-fingerprint={pin} token=s3cret stats-interval=100 \
         ! appsink name=out sync=false"
    ));
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let port: u32 = receiver.by_name("src").property("bound-port");
    // Between them a relay that maps each of the sink's addresses to a port of its own,
    // as the camera's two modems would, so that one route can be cut alone.
    let relay = relay_to(
        port as u16,
        Impairment {
            delay: Duration::from_millis(5),
            ..Impairment::default()
        },
    );
    let description = live_sender_description(
        "width=320,height=240",
        "num-buffers=240",
        60,
        relay.local_addr().port(),
    );
    let sender = Running::launch(&format!(
        "{description} mode=caller address=127.0.0.1 paths=127.0.0.2 token=s3cret"
    ));
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 30);
    // Both knocks are called back: one receiver with two routes in both elements' stats.
    let deadline = std::time::Instant::now() + WATCHDOG;
    loop {
        let counts = route_counts(&receiver, &sender);
        if counts == (2, 1, 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "routes {counts:?}");
        // Each frame that arrives is a moment to look again.
        let _ = arrived.recv_timeout(Duration::from_secs(1));
    }
    relay.outage_of("127.0.0.2".parse().unwrap(), Duration::from_secs(3));
    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let received = store.lock().unwrap().clone();
    assert_whole(&received, frames_in(&sender));
}
