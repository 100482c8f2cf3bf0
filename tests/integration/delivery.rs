//! Every stream in ../shared/media goes sink -> QUIC -> src byte-exact and decodes the same.

use crate::common::*;
use gst::prelude::*;

/// Sends `name` with sync=false, as a file transfer (no latency budget: a file sent as fast
/// as the network takes it is not live); checks access units and decoded frames.
fn deliver(name: &str) {
    init();
    let path = media(name);
    let mut sent = None;
    let (sender, port) = start_sender_with(
        &format!(
            "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink sync=false latency-budget=0 {}",
            path.display(),
            sink_props()
        ),
        |s| sent = Some(tap(&s.by_name("parse").static_pad("src").unwrap())),
    );
    let sent = sent.unwrap();
    let received = receive_all(&sender, port);

    let sent = sent.lock().unwrap();
    assert!(!sent.is_empty(), "{name}: h265parse produced nothing");
    assert_eq!(received.len(), sent.len(), "{name}: access unit count");
    for (i, (r, s)) in received.iter().zip(sent.iter()).enumerate() {
        assert!(r.data == *s, "{name}: access unit {i} differs");
        let meta = r.meta.expect("QuicNaluMeta on every buffer");
        assert_eq!(meta.seq, i as u64, "{name}: sequence numbers");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received.h265");
    let bytes: Vec<u8> = received
        .iter()
        .flat_map(|r| r.data.iter().copied())
        .collect();
    std::fs::write(&out, bytes).unwrap();
    assert_eq!(
        framemd5(&out),
        framemd5_cached(&path),
        "{name}: decoded frames differ"
    );
}

macro_rules! media_tests {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $test() { deliver($file); })*

        /// The list above must cover the whole media folder.
        #[test]
        fn every_media_file_is_covered() {
            let mut listed = vec![$($file.to_string()),*];
            listed.sort();
            assert_eq!(listed, good_media());
        }
    };
}

media_tests! {
    de265js_paris => "de265js-paris-ra-wpp.bin",
    de265js_spreedmovie => "de265js-spreedmovie.hevc",
    gpac_counter => "gpac-counter.hvc",
    oh_1104x622 => "oh-1104x622.h265",
    oh_1920x1080 => "oh-1920x1080.h265",
    oh_3840x2160 => "oh-3840x2160.h265",
    oh_pq_vivid => "oh-pq_vivid.h265",
    vkcts_clip_d => "vkcts-clip-d.h265",
    vkcts_slist_a => "vkcts-hevc-itu-slist-a.h265",
    vkcts_slist_b => "vkcts-hevc-itu-slist-b.h265",
    vkcts_jellyfish => "vkcts-jellyfish-250-mbps-4k-uhd-GOB-IPB13.h265",
    vpl_cars_128x96 => "vpl-cars_128x96.h265",
    vpl_cars_128x96_10 => "vpl-cars_128x96_10.h265",
    vpl_cars_320x240 => "vpl-cars_320x240.h265",
}

#[test]
fn nal_aligned_input_arrives_as_access_units() {
    init();
    let path = media("vpl-cars_320x240.h265");
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! video/x-h265,alignment=nal ! \
         quicnalusink name=sink sync=false latency-budget=0 {}",
        path.display(),
        sink_props()
    ));
    let received = receive_all(&sender, port);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received.h265");
    let bytes: Vec<u8> = received
        .iter()
        .flat_map(|r| r.data.iter().copied())
        .collect();
    std::fs::write(&out, bytes).unwrap();
    let frames = framemd5_cached(&path);
    assert_eq!(
        received.len(),
        frames.lines().count(),
        "one buffer per picture"
    );
    assert_eq!(framemd5(&out), frames);
}

#[test]
fn length_prefixed_input_fails_and_sends_nothing() {
    init();
    let path = media("bad-lengthprefixed-1104x622.h265");
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink {}",
        path.display(),
        sink_props()
    ));
    let receiver = Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        src_props(port)
    ));
    let (received, _) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();

    let error = sender.expect_error();
    assert!(error.contains("not an H.265 byte-stream"), "{error}");
    sender.pipeline.set_state(gst::State::Null).unwrap();
    let _ = receiver.finish(WATCHDOG);
    assert!(received.lock().unwrap().is_empty(), "nothing may be sent");
}

#[test]
fn pausing_the_sender_mid_stream_loses_nothing() {
    init();
    let path = media("oh-1920x1080.h265");
    let (sender, port, sent) = start_tapped_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! queue ! quicnalusink name=sink {}",
        path.display(),
        sink_props()
    ));
    let receiver = Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        src_props(port)
    ));
    let (received, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();

    // Pause while the stream plays in real time, then resume: the pause must not turn into
    // a dropped buffer or a stalled upstream.
    for _ in 0..20 {
        arrived.recv_timeout(WATCHDOG).expect("frames arrive");
    }
    sender.pipeline.set_state(gst::State::Paused).unwrap();
    let (result, _, _) = sender.pipeline.state(gst::ClockTime::from_seconds(60));
    result.expect("sender reaches PAUSED");
    sender.pipeline.set_state(gst::State::Playing).unwrap();

    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let sent = sent.lock().unwrap();
    let received = received.lock().unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received.iter().zip(sent.iter()).all(|(r, s)| r.data == *s));
}

/// Datagrams that are not QUIC (empty, one byte, random and packet-sized) sprayed at the
/// sender's port while it streams are dropped without disturbing the real receiver.
#[test]
fn stray_datagrams_do_not_disturb_the_stream() {
    use std::sync::atomic::{AtomicBool, Ordering};
    init();
    let path = media("oh-1104x622.h265");
    let (sender, port, sent) = start_tapped_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink sync=false latency-budget=0 {}",
        path.display(),
        sink_props()
    ));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let spray = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut junk = [0u8; 1350];
            let mut x: u32 = 0x9e37_79b9;
            let mut sprayed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for b in junk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }
                for len in [0, 1, 40, junk.len()] {
                    let _ = socket.send_to(&junk[..len], ("127.0.0.1", port));
                    sprayed += 1;
                }
                std::thread::yield_now();
            }
            sprayed
        })
    };
    let received = receive_all(&sender, port);
    stop.store(true, Ordering::Relaxed);
    let sprayed = spray.join().unwrap();
    assert!(sprayed > 0);
    let sent = sent.lock().unwrap();
    assert!(sent.len() >= 300, "h265parse sent {}", sent.len());
    assert_eq!(received.len(), sent.len(), "access unit count");
    assert!(received.iter().zip(sent.iter()).all(|(r, s)| r.data == *s));
}

/// Every congestion controller carries a stream byte-exact; BBRv2 paces, so this also runs
/// the held-packet path of the send loop.
#[test]
fn every_congestion_controller_delivers_byte_exact() {
    init();
    let path = media("oh-1104x622.h265");
    for cc in ["reno", "cubic", "bbr2", "live"] {
        let (sender, port, sent) = start_tapped_sender(&format!(
            "filesrc location={} ! h265parse name=parse ! \
             quicnalusink name=sink sync=false latency-budget=0 congestion-control={cc} {}",
            path.display(),
            sink_props()
        ));
        let received = receive_all_with(&sender, port, &format!("congestion-control={cc}"));
        let sent = sent.lock().unwrap();
        assert!(sent.len() >= 300, "{cc}: h265parse sent {}", sent.len());
        assert_eq!(received.len(), sent.len(), "{cc}: access unit count");
        assert!(
            received.iter().zip(sent.iter()).all(|(r, s)| r.data == *s),
            "{cc}: bytes differ"
        );
    }
}
