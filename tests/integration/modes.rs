//! Reversed dialling: quicnalusink with mode=caller pushes to a quicnalusrc with
//! mode=listener, as a camera behind NAT pushes to a studio. The sender stays the QUIC
//! server: it knocks, the listener connects back (docs/PROTOCOL.md, "Reversed dialling").

use crate::common::*;
use gst::prelude::*;
use gstquicnalu::net::tls::Fingerprint;
use std::time::Duration;
use udp_impair::{Impairment, Relay, RelayConfig};

const SIZE: &str = "width=320,height=240";

/// A listening receiver on a free loopback port that pins the tests' certificate and
/// presents `token` (None: none, so any knock is answered) (not started: see [`listen`]).
fn listener(token: Option<&str>, extra: &str) -> Running {
    let pin = Fingerprint::of_pem_file(&certs().cert).expect("the tests' certificate");
    let token = token.map(|t| format!("token={t}")).unwrap_or_default();
    Running::launch(&format!(
        "quicnalusrc name=src mode=listener address=127.0.0.1 port=0 \
         certificate-fingerprint={pin} {token} {extra} ! appsink name=out sync=false"
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
    let receiver = listener(Some("s3cret"), "timeout=1000");
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
    let receiver = listener(Some("s3cret"), "");
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

    // A listener with another token does not call the caller back, and keeps listening.
    let stranger = listener(Some("wrong"), "stats-interval=100");
    let stranger_messages = element_messages(&stranger);
    let port = listen(&stranger);
    let _other = caller(port, 30);
    loop {
        let stats = next_message_unless_error(&stranger, &stranger_messages, "quicnalusrc-stats");
        assert_eq!(stats.get::<u64>("knocks"), Ok(0), "{stats}");
        if stats.get::<u64>("knocks-refused").unwrap() > 0 {
            break;
        }
    }
    assert!(store.lock().unwrap().len() >= 10);
}

/// A sender on loopback that calls `port` with `props` (token, certificate), IRAPs 1 s
/// apart.
fn caller_with(port: u16, props: &str) -> Running {
    let sender = Running::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,{SIZE},framerate=30/1 ! \
         x265enc key-int-max=30 speed-preset=ultrafast tune=zerolatency ! h265parse ! \
         quicnalusink name=sink mode=caller address=127.0.0.1 port={port} {props}"
    ));
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    sender
}

/// The next element message called `name`; an ERROR on the bus meanwhile fails the test
/// with its text.
fn next_message_unless_error(
    receiver: &Running,
    messages: &std::sync::mpsc::Receiver<gst::Structure>,
    name: &str,
) -> gst::Structure {
    let bus = receiver.pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + WATCHDOG;
    while std::time::Instant::now() < deadline {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                panic!("the listener failed: {}", error_text(e));
            }
        }
        match messages.recv_timeout(Duration::from_millis(100)) {
            Ok(s) if s.name() == name => return s,
            _ => {}
        }
    }
    panic!("no '{name}' message");
}

/// Sends an unsigned knock (docs/PROTOCOL.md, "Reversed dialling") from `socket` to
/// `port` on loopback; its bytes.
fn knock_from(socket: &std::net::UdpSocket, port: u16) -> usize {
    let mut knock = vec![0; 1200];
    knock[..16].copy_from_slice(b"\x00quicnalu-knock1");
    socket.send_to(&knock, ("127.0.0.1", port)).unwrap()
}

#[test]
fn a_stray_with_another_certificate_neither_stops_a_pinned_listener_nor_keeps_the_caller_out() {
    init();
    let other = certs_for("DNS:localhost,IP:127.0.0.1");
    let receiver = listener(Some("s3cret"), "stats-interval=100");
    let messages = element_messages(&receiver);
    let (store, arrived) = collect(&receiver, "out");
    let port = listen(&receiver);
    // It knows the token, but its certificate is not the pinned one.
    let stray = caller_with(
        port,
        &format!(
            "token=s3cret cert-file={} key-file={}",
            other.cert, other.key
        ),
    );
    let failed = next_message_unless_error(&receiver, &messages, "quicnalusrc-callback-failed");
    let reason = failed.get::<String>("reason").unwrap();
    assert!(
        reason.contains("certificate fingerprint mismatch"),
        "{reason}"
    );

    // The stray keeps knocking; the real caller still gets in, and only its stream plays.
    let sender = caller(port, 30);
    let connected = next_message_unless_error(&receiver, &messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<String>("peer"), Ok(address_of(&sender)));
    wait_for(&store, &arrived, 10);
    let stats = next_message_unless_error(&receiver, &messages, "quicnalusrc-stats");
    assert!(
        stats.get::<u64>("callbacks-failed").unwrap() >= 1,
        "{stats}"
    );
    drop(stray);
}

/// Where a calling sender's knocks come from on loopback.
fn address_of(sender: &Running) -> String {
    let port = sender.by_name("sink").property::<u32>("bound-port");
    format!("127.0.0.1:{port}")
}

#[test]
fn strays_knocking_five_times_a_second_do_not_keep_the_caller_out() {
    init();
    // No token: every knock is a valid one, so only the rate limits stand in the way.
    let receiver = listener(None, "");
    let messages = element_messages(&receiver);
    let port = listen(&receiver);
    // A host that knocks and never answers, from another loopback address: once the
    // listener calls it back, it knocks 5 times a second (a load pattern, not a wait).
    let stray = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    stray.set_read_timeout(Some(WATCHDOG)).unwrap();
    knock_from(&stray, port);
    let mut buf = [0; 2048];
    stray
        .recv_from(&mut buf)
        .expect("the listener calls the stray back");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let knocking = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                knock_from(&stray, port);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = std::time::Instant::now();
    let _sender = caller_with(port, &sink_props().replace("port=0", ""));
    next_message_unless_error(&receiver, &messages, "quicnalusrc-connected");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    knocking.join().unwrap();
    eprintln!("the caller got in {took:?} after it started");
    // Its first knock is answered after the call-back under way (HEAR_BACK, 2 s) at worst.
    assert!(
        took < Duration::from_secs(6),
        "the caller got in after {took:?}"
    );
}

#[test]
fn a_knock_makes_the_listener_send_at_most_three_times_its_bytes_to_an_unverified_address() {
    init();
    let receiver = listener(None, "stats-interval=100");
    let messages = element_messages(&receiver);
    let port = listen(&receiver);
    // A spoofed knock: the call-back goes to an address that never answers.
    let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let knocked = knock_from(&victim, port);
    // Everything the listener sends it, until the listener gives up on it (or, if it
    // never does, for as long as its `timeout` and more).
    let (mut received, mut datagrams) = (0, 0);
    let mut buf = [0; 65536];
    victim
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(12);
    let mut gave_up = None;
    while gave_up.is_none() && std::time::Instant::now() < until {
        if let Ok((n, _)) = victim.recv_from(&mut buf) {
            received += n;
            datagrams += 1;
        }
        gave_up = messages
            .try_iter()
            .find(|s| s.name() == "quicnalusrc-callback-failed");
    }
    while let Ok((n, _)) = victim.recv_from(&mut buf) {
        received += n;
        datagrams += 1;
    }
    eprintln!("one knock of {knocked} bytes: {received} bytes in {datagrams} datagrams back");
    assert!(
        received <= 3 * knocked,
        "{received} bytes sent for a {knocked}-byte knock"
    );
    assert!(
        gave_up.is_some(),
        "the listener gave up on the silent address"
    );
    let stats = next_message(&messages, "quicnalusrc-stats");
    assert_eq!(stats.get::<u64>("knocks"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("callbacks-failed"), Ok(1), "{stats}");
}

#[test]
fn a_listener_with_a_token_calls_back_only_callers_that_sign_with_it() {
    init();
    let data = tempfile::tempdir().unwrap();
    let known = data.path().join("known_hosts");
    // Trust on first use: whoever is called back first is remembered.
    let receiver = Running::launch(&format!(
        "quicnalusrc name=src mode=listener address=127.0.0.1 port=0 token=s3cret \
         known-hosts={} stats-interval=100 ! appsink name=out sync=false",
        known.display()
    ));
    let messages = element_messages(&receiver);
    let (store, arrived) = collect(&receiver, "out");
    let port = listen(&receiver);
    let warned = receiver
        .pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning at start");
    let gst::MessageView::Warning(w) = warned.view() else {
        unreachable!()
    };
    assert!(
        w.error().to_string().contains("trust on first use"),
        "{w:?}"
    );

    // A stray without the token knocks first: it is not called back.
    let other = certs_for("DNS:localhost,IP:127.0.0.1");
    let stray = caller_with(
        port,
        &format!("cert-file={} key-file={}", other.cert, other.key),
    );
    let stats = loop {
        let stats = next_message_unless_error(&receiver, &messages, "quicnalusrc-stats");
        if stats.get::<u64>("knocks-refused").unwrap() > 0 {
            break stats;
        }
    };
    assert_eq!(stats.get::<u64>("knocks"), Ok(0), "{stats}");
    let sender = caller(port, 30);
    let connected = next_message_unless_error(&receiver, &messages, "quicnalusrc-connected");
    assert_eq!(connected.get::<String>("peer"), Ok(address_of(&sender)));
    wait_for(&store, &arrived, 10);
    drop(stray);
    let remembered = std::fs::read_to_string(&known).unwrap();
    let ours = Fingerprint::of_pem_file(&certs().cert).unwrap();
    assert!(remembered.contains(&ours.to_string()), "{remembered}");
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
