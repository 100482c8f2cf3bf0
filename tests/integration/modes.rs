//! Reversed dialling: quicnalusink with mode=caller pushes to a quicnalusrc with
//! mode=listener, as a camera behind NAT pushes to a studio. The sender stays the QUIC
//! server: it knocks, the listener connects back (docs/PROTOCOL.md, "Reversed dialling").

use crate::common::*;
use gst::prelude::*;
use gstquicnalu::relay::{Impairment, Relay, RelayConfig};
use gstquicnalu::transport::Fingerprint;
use std::time::Duration;

const SIZE: &str = "width=320,height=240";

/// A listening receiver on a free loopback port that pins the tests' certificate and
/// presents `token` (not started: see [`listen`]).
fn listener(token: &str, extra: &str) -> Running {
    let pin = Fingerprint::of_pem_file(&certs().cert).expect("the tests' certificate");
    Running::launch(&format!(
        "quicnalusrc name=src mode=listener address=127.0.0.1 port=0 \
         certificate-fingerprint={pin} token={token} {extra} ! appsink name=out sync=false"
    ))
}

/// Starts `receiver` and reads back the port it listens on.
fn listen(receiver: &Running) -> u16 {
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let port: u32 = receiver.by_name("src").property("bound-port");
    assert_ne!(port, 0, "the listener bound a port");
    port as u16
}

/// A live sender (IRAPs `key_int` frames apart) that calls `port` on loopback with the
/// token the receivers need.
fn caller(port: u16, key_int: u32) -> Running {
    let description = live_sender_description(SIZE, "", key_int, port);
    let sender = Running::launch(&format!(
        "{description} mode=caller address=127.0.0.1 token=s3cret"
    ));
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    sender
}

fn arrival(r: &Received) -> u64 {
    r.meta.expect("QuicNaluMeta").arrival_time
}

#[test]
fn a_caller_reconnects_after_an_outage_and_the_listener_resumes_at_a_keyframe() {
    init();
    let receiver = listener("s3cret", "timeout=1000");
    let messages = element_messages(&receiver);
    let (store, arrived) = collect(&receiver, "out");
    let port = listen(&receiver);
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    let relay = Relay::start(RelayConfig::symmetric(server, Impairment::default())).unwrap();
    // IRAPs 10 s apart: resuming at once needs the listener's keyframe request to reach
    // the caller's encoder.
    let _sender = caller(relay.local_addr().port(), 300);

    let connected = next_message(&messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<bool>("resumed"), Ok(false));
    wait_for(&store, &arrived, 30);

    // Longer than the listener's 1 s timeout: both ends lose the connection, and the
    // caller calls again once the link is back.
    let outage = Duration::from_secs(2);
    relay.outage(outage);
    let back = gst::get_timestamp().nseconds() + outage.as_nanos() as u64;
    let lost = next_message(&messages, "quicnalusrc-disconnected");
    assert_eq!(lost.get::<bool>("reconnecting"), Ok(true));
    let count = store.lock().unwrap().len();
    let connected = next_message(&messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<bool>("resumed"), Ok(true));
    wait_for(&store, &arrived, count + 30);
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    let resumed = received
        .iter()
        .position(|r| arrival(r) > back)
        .expect("frames after the reconnection");
    let first = &received[resumed];
    let resumed_ms = (arrival(first) - back) as f64 / 1e6;
    eprintln!("first frame {resumed_ms:.1} ms after the link came back");
    assert!(
        !first.flags.contains(gst::BufferFlags::DELTA_UNIT),
        "resumes at a keyframe"
    );
    assert!(
        first.flags.contains(gst::BufferFlags::DISCONT),
        "marked DISCONT"
    );
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    // The caller calls at most 2 s apart.
    assert!(resumed_ms < 3000.0, "resumed {resumed_ms:.1} ms after");
}

#[test]
fn commands_stats_and_the_token_work_with_the_roles_reversed() {
    init();
    let receiver = listener("s3cret", "");
    let messages = element_messages(&receiver);
    let (store, arrived) = collect(&receiver, "out");
    let port = listen(&receiver);
    let sender = caller(port, 30);
    let sink = sender.by_name("sink");
    let (heard_tx, heard) = std::sync::mpsc::channel();
    let heard_tx = std::sync::Mutex::new(heard_tx);
    sink.connect("command-received", false, move |args| {
        let command = args[2].get::<gst::Structure>().unwrap();
        let _ = heard_tx.lock().unwrap().send(command.to_string());
        None
    });
    next_message(&messages, "quicnalusrc-connected");
    wait_for(&store, &arrived, 10);

    let src = receiver.by_name("src");
    let question = gst::Structure::builder("tally")
        .field("camera", 2i32)
        .build();
    assert!(src.emit_by_name::<bool>("send-command", &[&question]));
    let got = heard
        .recv_timeout(WATCHDOG)
        .expect("the caller hears the listener");
    assert!(got.starts_with("tally"), "{got}");

    let answer = gst::Structure::builder("on-air")
        .field("camera", 2i32)
        .build();
    assert!(sink.emit_by_name::<bool>("send-command", &[&0u64, &answer]));
    let command = next_message(&messages, "quicnalusrc-command");
    let command = command.get::<gst::Structure>("command").unwrap();
    assert_eq!(command.name(), "on-air");

    let stats = src.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<bool>("connected"), Ok(true), "{stats}");
    let sink_stats = sink.property::<gst::Structure>("stats");
    assert_eq!(
        sink_stats.get::<u32>("receiver-count"),
        Ok(1),
        "{sink_stats}"
    );

    // A listener without the caller's token is refused before any media, and fails.
    let stranger = listener("wrong", "");
    let port = listen(&stranger);
    let _other = caller(port, 30);
    let error = stranger.expect_error();
    assert!(error.contains("[NotAuthorized]"), "{error}");
    assert!(store.lock().unwrap().len() >= 10);
}

#[test]
fn a_listener_pins_the_caller_and_refuses_another() {
    init();
    let other = certs_for("DNS:localhost,IP:127.0.0.1");
    let receiver = listener("s3cret", "");
    let port = listen(&receiver);
    let sender = Running::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,{SIZE},framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency ! h265parse ! \
         quicnalusink name=sink mode=caller address=127.0.0.1 port={port} token=s3cret \
         cert-file={} key-file={}",
        other.cert, other.key
    ));
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    let error = receiver.expect_error();
    assert!(
        error.contains("certificate fingerprint mismatch"),
        "{error}"
    );
}

#[test]
fn a_caller_needs_an_address_to_call() {
    init();
    let sender = Running::launch(&format!(
        "videotestsrc ! x265enc ! h265parse ! quicnalusink mode=caller {}",
        sink_props()
    ));
    let _ = sender.pipeline.set_state(gst::State::Playing);
    let error = sender.expect_error();
    assert!(
        error.contains("mode=caller calls the quicnalusrc listening at address:port")
            && error.contains("[Settings]"),
        "{error}"
    );
}
