//! quicnalu through the impairment relay: a lossy, delayed link and an outage. Whatever
//! quicnalusrc outputs must decode, and after an outage playback must resume quickly.

use crate::common;

use crate::common::*;
use gst::prelude::*;
use std::time::Duration;
use udp_impair::Impairment;

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

/// Every group ends with data for its FIN to ride on (PROTOCOL.md, "When a group is
/// complete"): a receiver that grants only 4 group streams at a time, behind 5% loss, takes
/// a stream of one-frame groups a hundred times that limit without a stall. quiche never
/// resends a FIN sent on its own once the data before it is acknowledged, and each such FIN
/// lost held a stream credit for good (6 of 400 groups' streams, measured before the fix).
#[test]
fn a_receiver_with_four_stream_credits_takes_hundreds_of_groups_through_loss() {
    use common::raw::{hello_bytes, RawPeer, Windows};
    use gstquicnalu::protocol::{
        CommandDecoder, GroupDecoder, DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE,
    };
    use std::collections::HashMap;
    use std::time::Instant;

    const CREDITS: u64 = 4;
    const GROUPS: usize = 100 * CREDITS as usize;
    /// Longer than any repair through this link takes: no group finishing for this long
    /// is a stall.
    const STALL: Duration = Duration::from_secs(10);
    init();
    // Every frame an IRAP, so every frame is a group; no budget, so no group expires.
    let (_sender, port) = start_sender(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=60/1 ! \
         x265enc key-int-max=1 speed-preset=ultrafast tune=zerolatency bitrate=500 ! \
         h265parse ! quicnalusink name=sink latency-budget=0 {}",
        sink_props()
    ));
    let relay = relay_to(
        port,
        Impairment {
            delay: Duration::from_millis(10),
            loss: 0.05,
            ..Impairment::default()
        },
    );
    let mut peer = RawPeer::connected(
        relay.local_addr(),
        Windows {
            max_streams_uni: CREDITS,
            ..Windows::default()
        },
    );
    peer.send_all(0, &hello_bytes(), false);

    let mut control = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
    let mut commands = Vec::new();
    let mut groups: HashMap<u64, GroupDecoder> = HashMap::new();
    let (mut finished, mut frames) = (0, Vec::new());
    let mut buf = vec![0; 65536];
    let mut progress = Instant::now();
    while finished < GROUPS {
        assert!(
            progress.elapsed() < STALL,
            "stalled after {finished} groups: {} streams still open, closed: {:?}",
            groups.len(),
            peer.peer_close()
        );
        assert!(!peer.conn.is_closed(), "closed: {:?}", peer.peer_close());
        peer.pump(Duration::from_millis(20));
        let readable: Vec<u64> = peer.conn.readable().collect();
        for stream in readable {
            while let Ok((n, fin)) = peer.conn.stream_recv(stream, &mut buf) {
                if stream == 0 {
                    control.push(&buf[..n], &mut commands).expect("commands");
                    continue;
                }
                let group = groups
                    .entry(stream)
                    .or_insert_with(|| GroupDecoder::new(DEFAULT_MAX_FRAME_SIZE));
                group
                    .push(&buf[..n], &mut frames)
                    .expect("a well-formed group");
                if fin {
                    group.finish().expect("the group ends between frames");
                    groups.remove(&stream);
                    finished += 1;
                    progress = Instant::now();
                }
            }
        }
    }
    let stats = relay.stats();
    eprintln!(
        "{finished} groups, {} frames, {} streams open; relay lost {} + {} packets",
        frames.len(),
        groups.len(),
        stats.to_client.lost,
        stats.to_server.lost
    );
    assert!(stats.to_client.lost > 50, "the relay dropped too little");
    // Only the groups still arriving may be open: none was left without its FIN.
    assert!(
        groups.len() <= 2,
        "{} group streams never ended",
        groups.len()
    );
    assert!(frames.len() >= GROUPS, "{} frames", frames.len());
}
