//! Application commands both ways, receiver lifecycle messages, and admission.

use crate::common::*;
use gst::prelude::*;
use std::sync::{Arc, Mutex};

/// What left quicnalusrc, in order.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Buffer,
    Command(gst::Structure),
}

/// Records buffers and custom downstream events leaving `pad`, in order.
fn record(pad: &gst::Pad) -> Arc<Mutex<Vec<Item>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let store = out.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let item = match &info.data {
                Some(gst::PadProbeData::Buffer(_)) => Some(Item::Buffer),
                Some(gst::PadProbeData::Event(e))
                    if e.type_() == gst::EventType::CustomDownstream =>
                {
                    e.structure().map(|s| Item::Command(s.to_owned()))
                }
                _ => None,
            };
            store.lock().unwrap().extend(item);
            gst::PadProbeReturn::Ok
        },
    );
    out
}

#[test]
fn commands_round_trip_and_keep_stream_order() {
    init();
    let clip = media("oh-1104x622.h265");
    // Custom events go into the sender's stream in front of these access units.
    const MARKS: [usize; 3] = [0, 40, 150];
    let (sender, port) = start_sender_with(
        &format!(
            "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink {}",
            clip.display(),
            sink_props()
        ),
        |s| {
            let n = std::sync::atomic::AtomicUsize::new(0);
            s.by_name("parse").static_pad("src").unwrap().add_probe(
                gst::PadProbeType::BUFFER,
                move |pad, _| {
                    let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if MARKS.contains(&n) {
                        let mark = gst::Structure::builder("mark").field("n", n as u64).build();
                        pad.push_event(gst::event::CustomDownstream::new(mark));
                    }
                    gst::PadProbeReturn::Ok
                },
            );
        },
    );
    let sink = sender.by_name("sink");
    let sink_messages = element_messages(&sender);
    // The sender's application answers every command with one of its own, at once.
    sink.connect("command-received", false, |args| {
        let sink = args[0].get::<gst::Element>().unwrap();
        let id = args[1].get::<u64>().unwrap();
        let asked = args[2].get::<gst::Structure>().unwrap();
        let reply = gst::Structure::builder("reply")
            .field("to", asked.get::<i32>("q").unwrap())
            .build();
        assert!(sink.emit_by_name::<bool>("send-command", &[&id, &reply]));
        None
    });

    let receiver = Running::launch(&format!(
        "quicnalusrc name=src {} ! fakesink sync=false",
        src_props(port)
    ));
    let src = receiver.by_name("src");
    let items = record(&src.static_pad("src").unwrap());
    let src_messages = element_messages(&receiver);
    receiver.pipeline.set_state(gst::State::Playing).unwrap();

    let connected = next_message(&sink_messages, "quicnalusink-receiver-connected");
    let id = connected.get::<u64>("receiver-id").unwrap();
    assert!(connected
        .get::<String>("address")
        .unwrap()
        .starts_with("127.0.0.1:"));

    let question = gst::Structure::builder("question").field("q", 7i32).build();
    assert!(src.emit_by_name::<bool>("send-command", &[&question]));
    let got = next_message(&sink_messages, "quicnalusink-command");
    assert_eq!(got.get::<u64>("receiver-id").unwrap(), id);
    assert_eq!(got.get::<gst::Structure>("command").unwrap(), question);
    // The marks are posted too: skip to the reply.
    let reply = std::iter::repeat_with(|| next_message(&src_messages, "quicnalusrc-command"))
        .map(|m| m.get::<gst::Structure>("command").unwrap())
        .find(|c| c.name() == "reply")
        .unwrap();
    assert_eq!(reply.get::<i32>("to").unwrap(), 7);

    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let gone = next_message(&sink_messages, "quicnalusink-receiver-disconnected");
    assert_eq!(gone.get::<u64>("receiver-id").unwrap(), id);

    // Each mark comes out just before the access unit it went in before.
    let items = items.lock().unwrap().clone();
    let mut buffers = 0;
    let mut marks = Vec::new();
    for item in &items {
        match item {
            Item::Buffer => buffers += 1,
            Item::Command(s) if s.name() == "mark" => {
                marks.push((s.get::<u64>("n").unwrap() as usize, buffers))
            }
            Item::Command(_) => {}
        }
    }
    assert_eq!(buffers, 300);
    let expected: Vec<(usize, usize)> = MARKS.iter().map(|&n| (n, n)).collect();
    assert_eq!(marks, expected, "marks as (n, buffers before it)");
    assert!(
        items.contains(&Item::Command(reply)),
        "reply pushed downstream"
    );
}

#[test]
fn the_application_admits_or_refuses_receivers() {
    init();
    let description = live_sender_description("width=320,height=240", "", 30, 0)
        .replace("name=sink", "name=sink max-receivers=2");
    let (sender, port) = start_sender(&description);
    let sink = sender.by_name("sink");
    sink.connect("receiver-connecting", false, |args| {
        let token = args[3].get::<String>().unwrap();
        Some((token != "intruder").to_value())
    });
    let messages = element_messages(&sender);
    let receive = |extra: &str| {
        let r = Running::launch(&format!(
            "quicnalusrc {} reconnect=false {extra} ! fakesink",
            src_props(port)
        ));
        r.pipeline.set_state(gst::State::Playing).unwrap();
        r
    };

    let intruder = receive("token=intruder");
    let error = intruder.expect_error();
    assert!(
        error.contains("0x4") && error.contains("refused") && error.contains("[NotAuthorized]"),
        "{error}"
    );

    let first = receive("token=friend");
    next_message(&messages, "quicnalusink-receiver-connected");
    let second = receive("");
    next_message(&messages, "quicnalusink-receiver-connected");
    let third = receive("token=friend");
    let error = third.expect_error();
    assert!(
        error.contains("0x5") && error.contains("maximum of 2") && error.contains("[Busy]"),
        "{error}"
    );
    drop((first, second));
}

/// A receiver-connected handler changes the sink's state just as the application stops the
/// sender. stop() used to join the networking thread, the handler's thread, while the
/// handler waited for the state lock stop()'s caller held: both hung. Now stop() does not
/// wait for a thread inside a handler, and the handler's state change goes ahead after it.
#[test]
fn a_handler_changing_state_while_the_sender_stops_does_not_hang() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    init();
    let (sender, port) = start_sender(&live_sender_description("width=320,height=240", "", 30, 0));
    let sink = sender.by_name("sink");
    let (entered, in_handler) = mpsc::channel();
    let entered = Mutex::new(entered);
    sink.connect("receiver-connected", false, move |args| {
        let sink = args[0].get::<gst::Element>().unwrap();
        let _ = entered.lock().unwrap().send(());
        // Until the application's change to NULL holds the sink's state lock...
        let give_up = Instant::now() + WATCHDOG;
        // (BaseSink stops in READY -> NULL.)
        while sink.pending_state() != gst::State::Null && Instant::now() < give_up {
            std::thread::yield_now();
        }
        // ...then a state change of its own, as a handler reacting to a receiver might.
        let _ = sink.set_state(gst::State::Null);
        None
    });
    let receiver = Running::launch(&format!("quicnalusrc {} ! fakesink", src_props(port)));
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    in_handler
        .recv_timeout(WATCHDOG)
        .expect("receiver-connected emitted");

    let (done, stopped) = mpsc::channel();
    let pipeline = sender.pipeline.clone();
    std::thread::spawn(move || {
        let _ = done.send(pipeline.set_state(gst::State::Null));
    });
    let Ok(result) = stopped.recv_timeout(Duration::from_secs(20)) else {
        // Unwinding would drop the sender, whose change to NULL hangs as well.
        eprintln!("the sender's change to NULL hung");
        std::process::exit(101);
    };
    assert!(result.is_ok(), "{result:?}");
    receiver.pipeline.set_state(gst::State::Null).unwrap();
}
