//! quicnalusink publishing to, and quicnalusrc subscribing from, a real moq-dev moq-relay
//! (the version scripts/install-moq-relay.sh pins) on loopback.

use crate::common;

use crate::common::moq::MoqRelay;
use crate::common::*;
use gst::prelude::*;
use gst_plugin_meta::Flags;
use std::sync::{mpsc, Arc, Mutex};

type Store = Arc<Mutex<Vec<Received>>>;

/// `quicnalusrc ! appsink name=out` subscribed to `broadcast` on `relay`, playing; with
/// what it outputs and a channel announcing each buffer.
fn subscriber(relay: &MoqRelay, broadcast: &str) -> (Running, Store, mpsc::Receiver<usize>) {
    let running = Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        relay.src_props(broadcast)
    ));
    let (received, arrived) = collect(&running, "out");
    running.pipeline.set_state(gst::State::Playing).unwrap();
    (running, received, arrived)
}

/// Starts `source ! h265parse name=parse ! quicnalusink name=sink` publishing `broadcast`,
/// recording what h265parse hands the sink.
fn publisher(
    relay: &MoqRelay,
    source: &str,
    broadcast: &str,
) -> (Running, Arc<Mutex<Vec<Vec<u8>>>>) {
    let (sender, _, sent) = start_tapped_sender(&format!(
        "{source} ! h265parse name=parse ! quicnalusink name=sink {} {}",
        sink_props(),
        relay.sink_props(broadcast)
    ));
    (sender, sent)
}

/// `au` as it was sent, or, starting a group, the sent IRAP behind the parameter sets it
/// came without (the sink puts them there so that every group decodes alone).
fn same_au(received: &[u8], sent: &[u8]) -> bool {
    const VPS: [u8; 6] = [0, 0, 0, 1, 0x40, 0x01];
    received == sent || (received.starts_with(&VPS) && received.ends_with(sent))
}

fn assert_exact(received: &[Received], sent: &[Vec<u8>], what: &str) {
    assert_eq!(received.len(), sent.len(), "{what}: access units");
    for (i, (r, s)) in received.iter().zip(sent).enumerate() {
        assert!(same_au(&r.data, s), "{what}: access unit {i} differs");
    }
}

/// `received` is `sent` from one of its keyframes on, byte for byte: a subscriber that
/// joins a live broadcast starts at the relay's current group. Returns where it starts.
fn assert_exact_from_a_keyframe(received: &[Received], sent: &[Vec<u8>], what: &str) -> usize {
    let first = received
        .first()
        .unwrap_or_else(|| panic!("{what}: nothing received"));
    assert!(
        !first.flags.contains(gst::BufferFlags::DELTA_UNIT),
        "{what}: starts at an IRAP"
    );
    let start = sent
        .iter()
        .position(|au| same_au(&first.data, au))
        .unwrap_or_else(|| panic!("{what}: first access unit was never sent"));
    let end = start + received.len();
    assert!(end <= sent.len(), "{what}: more received than sent");
    assert_exact(received, &sent[start..end], what);
    start
}

#[test]
fn recorded_clips_through_a_relay_are_byte_exact_and_decode() {
    init();
    let relay = MoqRelay::start();
    for clip in ["vpl-cars_320x240.h265", "oh-1920x1080.h265"] {
        let broadcast = format!("{clip}.hang");
        // The subscriber waits for the announcement; the sink waits for its subscription
        // (wait-for-connection), so nothing is published before anyone watches.
        let (receiver, received, _) = subscriber(&relay, &broadcast);
        let (sender, sent) = publisher(
            &relay,
            &format!("filesrc location={}", media(clip).display()),
            &broadcast,
        );
        sender.finish(WATCHDOG).expect("sender reaches EOS");
        receiver.finish(WATCHDOG).expect("subscriber reaches EOS");
        let received = received.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        assert_exact(&received, &sent, clip);
        assert_decodes(&received, clip);
        // What was compared is the whole file, as h265parse split it.
        let original = std::fs::read(media(clip)).unwrap();
        assert_eq!(sent.concat(), original, "{clip}: byte-stream");
        assert!(received[0].flags.contains(gst::BufferFlags::DISCONT));
        for (i, r) in received.iter().enumerate() {
            let meta = r.meta.as_ref().expect("QuicNaluMeta on every buffer");
            assert_eq!(meta.seq, i as u64, "{clip}: seq");
            assert_eq!(
                meta.flags.contains(Flags::KEYFRAME),
                !r.flags.contains(gst::BufferFlags::DELTA_UNIT)
            );
        }
    }
}

#[test]
fn a_live_x265_stream_through_a_relay_keeps_every_access_unit_and_its_time() {
    init();
    let relay = MoqRelay::start();
    let (receiver, received, _) = subscriber(&relay, "live.hang");
    let (sender, sent) = publisher(
        &relay,
        "videotestsrc is-live=true num-buffers=120 pattern=ball ! \
         video/x-raw,width=640,height=360,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 bitrate=1500",
        "live.hang",
    );
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    receiver.finish(WATCHDOG).expect("subscriber reaches EOS");
    let received = received.lock().unwrap().clone();
    assert_exact(&received, &sent.lock().unwrap(), "live");
    assert_decodes(&received, "live");
    // One group per keyframe interval, each starting at its IRAP.
    let keyframes = received
        .iter()
        .filter(|r| !r.flags.contains(gst::BufferFlags::DELTA_UNIT))
        .count();
    assert_eq!(keyframes, 4, "keyframes");
    // PTS from the hang timestamps, 1/30 s apart (to the µs the container keeps).
    let pts: Vec<u64> = received
        .iter()
        .map(|r| r.pts.expect("PTS").nseconds())
        .collect();
    for w in pts.windows(2) {
        let step = w[1] as i64 - w[0] as i64;
        assert!((step - 33_333_333).abs() < 2_000, "PTS step {step} ns");
    }
    let disconts = received
        .iter()
        .filter(|r| r.flags.contains(gst::BufferFlags::DISCONT))
        .count();
    assert_eq!(disconts, 1, "DISCONT only on the first buffer");
}

#[test]
fn a_subscriber_joining_mid_group_starts_at_once_from_the_cached_group() {
    init();
    let relay = MoqRelay::start();
    let (first, first_received, first_arrived) = subscriber(&relay, "join.hang");
    // Groups of 90 frames (3 s): the join lands well inside one.
    let (sender, sent) = publisher(
        &relay,
        "videotestsrc is-live=true pattern=ball ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=90 bitrate=800",
        "join.hang",
    );
    // Wait until the first subscriber is 40 frames into the first group.
    wait_for(&first_received, &first_arrived, 40);
    let sent_before_join = sent.lock().unwrap().len();
    let (late, late_received, late_arrived) = subscriber(&relay, "join.hang");
    wait_for(&late_received, &late_arrived, 5);
    let sent = sent.lock().unwrap().clone();
    // It starts with the keyframe sent before it joined (the relay's cached group), not
    // with the next one, 90 frames later, and has the rest of that group, in order.
    let late_received = late_received.lock().unwrap().clone();
    let late_received = &late_received[..5];
    let index = assert_exact_from_a_keyframe(late_received, &sent[..], "joiner");
    assert!(
        index < sent_before_join,
        "joiner started at access unit {index}, sent after it joined ({sent_before_join})"
    );
    drop((late, first, sender));
}

#[test]
fn two_clustered_relays_carry_a_broadcast_to_eight_subscribers() {
    init();
    let origin = MoqRelay::start();
    let edge = MoqRelay::clustered_with(&origin);
    let subscribers: Vec<_> = (0..8).map(|_| subscriber(&edge, "cluster.hang")).collect();
    // Live, 4 s in groups of 1 s: the edge subscribes to the origin for the first of the
    // eight, and the others join as their requests arrive, each at the current group.
    let (sender, sent) = publisher(
        &origin,
        "videotestsrc is-live=true num-buffers=120 pattern=ball ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 bitrate=800",
        "cluster.hang",
    );
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let sent = sent.lock().unwrap().clone();
    let mut complete = 0;
    for (i, (receiver, received, _)) in subscribers.iter().enumerate() {
        receiver.finish(WATCHDOG).expect("subscriber reaches EOS");
        let received = received.lock().unwrap().clone();
        let start = assert_exact_from_a_keyframe(&received, &sent, &format!("subscriber {i}"));
        assert_eq!(
            start + received.len(),
            sent.len(),
            "subscriber {i}: to the end"
        );
        complete += usize::from(start == 0);
        assert!(
            received.len() >= 60,
            "subscriber {i} got {} frames",
            received.len()
        );
    }
    println!("{complete} of 8 subscribers had the broadcast from its first frame");
}

#[test]
fn relay_errors_are_clear() {
    init();
    let relay = MoqRelay::start();
    // A pinned certificate the relay does not have.
    let wrong = Running::launch(&format!(
        "quicnalusrc moq-url={} certificate-fingerprint={} ! fakesink",
        relay.url(),
        "00".repeat(32)
    ));
    wrong.pipeline.set_state(gst::State::Playing).unwrap();
    let e = wrong.expect_error();
    assert!(e.contains("fingerprint mismatch"), "{e}");
    // Nobody there.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    let nobody = Running::launch(&format!(
        "quicnalusrc moq-url=moql://127.0.0.1:{port} timeout=500 ! fakesink"
    ));
    nobody.pipeline.set_state(gst::State::Playing).unwrap();
    let e = nobody.expect_error();
    assert!(e.contains("no answer from the MoQ relay"), "{e}");
    // Not a relay URL.
    let bad = Running::launch("quicnalusrc moq-url=https://relay.example/ ! fakesink");
    assert!(bad.pipeline.set_state(gst::State::Playing).is_err());
    let e = bad.expect_error();
    assert!(e.contains("moql://") && e.contains("[Settings]"), "{e}");
}

#[test]
fn a_publisher_reconnects_when_its_relay_restarts() {
    init();
    let relay = MoqRelay::with_certificate(&certs().cert, &certs().key);
    let (first, first_received, first_arrived) = subscriber(&relay, "restart.hang");
    let sender = Running::launch(&format!(
        "videotestsrc is-live=true pattern=ball ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=15 bitrate=800 ! \
         h265parse ! quicnalusink name=sink {} {}",
        sink_props(),
        relay.sink_props("restart.hang")
    ));
    let messages = element_messages(&sender);
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&first_received, &first_arrived, 10);
    drop(first);
    let relay = relay.restart();
    let s = next_message(&messages, "quicnalusink-moq-disconnected");
    assert!(s.get::<String>("reason").is_ok());
    loop {
        let s = next_message(&messages, "quicnalusink-moq-connected");
        if s.get::<bool>("resumed").unwrap() {
            break;
        }
    }
    let (_again, received, arrived) = subscriber(&relay, "restart.hang");
    wait_for(&received, &arrived, 20);
    let received = received.lock().unwrap()[..20].to_vec();
    assert!(!received[0].flags.contains(gst::BufferFlags::DELTA_UNIT));
    assert_decodes(&received, "after the restart");
    drop(sender);
}

/// moq-dev's moqsink (crate moq-gst, pinned by scripts/install-moq-gst.sh) publishes a live
/// x265 stream; quicnalusrc plays it. Their importer rewrites start codes and repeats the
/// parameter sets, so the check is that every frame arrives and decodes.
#[test]
fn a_broadcast_from_moq_devs_moqsink_plays_in_quicnalusrc() {
    init();
    common::moq::load_moq_gst();
    let relay = MoqRelay::start();
    let (receiver, received, _) = subscriber(&relay, "theirs.hang");
    let sender = Running::launch(&format!(
        "videotestsrc is-live=true num-buffers=90 pattern=ball ! \
         video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 bitrate=800 ! \
         h265parse ! moqsink url={} broadcast=theirs.hang tls-disable-verify=true",
        relay.url()
    ));
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    sender.finish(WATCHDOG).expect("moqsink reaches EOS");
    receiver.finish(WATCHDOG).expect("quicnalusrc reaches EOS");
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 90, "access units");
    assert!(!received[0].flags.contains(gst::BufferFlags::DELTA_UNIT));
    assert_decodes(&received, "moqsink's broadcast");
}

/// quicnalusink publishes; moq-dev's moqsrc plays it, and gets exactly what we sent.
#[test]
fn a_broadcast_from_quicnalusink_plays_in_moq_devs_moqsrc() {
    init();
    common::moq::load_moq_gst();
    let relay = MoqRelay::start();
    let receiver = Running::launch(&format!(
        "moqsrc url={} broadcast=ours.hang tls-disable-verify=true ! \
         appsink name=out sync=false",
        relay.url()
    ));
    let (received, _) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let (sender, sent) = publisher(
        &relay,
        "videotestsrc is-live=true num-buffers=90 pattern=ball ! \
         video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 bitrate=800",
        "ours.hang",
    );
    sender.finish(WATCHDOG).expect("quicnalusink reaches EOS");
    receiver.finish(WATCHDOG).expect("moqsrc reaches EOS");
    let received = received.lock().unwrap().clone();
    assert_exact(&received, &sent.lock().unwrap(), "moqsrc");
    assert_decodes(&received, "in moqsrc");
}

/// The relay side never fails the sink: with nobody at moq-url, the sink warns and its
/// direct receiver gets the whole clip.
#[test]
fn a_relay_that_never_answers_does_not_fail_the_direct_receivers() {
    init();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    let clip = media("vpl-cars_320x240.h265");
    let (warned, warnings) = mpsc::channel();
    let warned = Mutex::new(warned);
    let description = format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink {} \
         moq-url=moql://127.0.0.1:{port} moq-certificate-fingerprint={}",
        clip.display(),
        sink_props(),
        "00".repeat(32)
    );
    let (sender, sink_port) = start_sender_with(&description, |s| {
        s.pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            if let gst::MessageView::Warning(w) = msg.view() {
                let _ = warned.lock().unwrap().send(w.error().to_string());
            }
            gst::BusSyncReply::Pass
        });
    });
    let received = receive_all(&sender, sink_port);
    assert_eq!(received.len(), framemd5_cached(&clip).lines().count());
    let warning = warnings.recv_timeout(WATCHDOG).expect("a warning");
    assert!(
        warning.contains("stopped publishing to the MoQ relay"),
        "{warning}"
    );
}
