//! quicnalusink and quicnalusrc inside one Rust application, with pipelines built in code.
//!
//! A live x265enc stream goes over QUIC on 127.0.0.1 with a throw-away self-signed
//! certificate that the receiver pins by its fingerprint. Once the receiver has its first
//! frame it sends the sender a command, the sender answers it with one of its own, and the
//! receiver reads `QuicNaluMeta` from every buffer with the `gst-plugin-meta` crate. After
//! FRAMES buffers and both commands the application ends the stream. It prints what it saw
//! and exits non-zero when anything it expects does not happen. examples/app.py does the
//! same from Python.
//!
//!     cargo run --release --example app -- [FRAMES]

use gst::prelude::*;
use gst_plugin_meta::{Flags, QuicNaluMeta};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A bound on a run that normally takes a few seconds, never a synchronisation point.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the elements' threads tell the application's main thread.
enum Event {
    Received(Option<QuicNaluMeta>),
    Decoded,
    Asked(bool),
    SenderGot(gst::Structure, bool),
    ReceiverGot(gst::Structure),
    ReceiverEos,
    Failed(String),
}

#[derive(Default)]
struct Seen {
    metas: Vec<QuicNaluMeta>,
    without_meta: u64,
    decoded: u64,
    asked: bool,
    sender_got: Option<gst::Structure>,
    answered: bool,
    receiver_got: Option<gst::Structure>,
    failure: Option<String>,
}

fn main() {
    let frames: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 60,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: app [FRAMES]");
            std::process::exit(2);
        }
    };
    gst::init().expect("GStreamer initialises");
    // The application links the plugin crate, so it registers the plugin itself; one that
    // uses the installed plugin (make install) leaves this out.
    gstquicnalu::plugin_register_static().expect("quicnalu registers");

    let seen = run(frames);
    report(&seen);
    let problems = verdict(&seen, frames);
    for p in &problems {
        println!("FAILED: {p}");
    }
    if problems.is_empty() {
        println!("result: OK");
    } else {
        println!("result: FAILED");
        std::process::exit(1);
    }
}

fn element(factory: &str) -> gst::Element {
    gst::ElementFactory::make(factory)
        .build()
        .unwrap_or_else(|e| panic!("{factory}: {e} (is its plugin installed?)"))
}

/// Forwards errors, EOS and quicnalusrc's commands from `pipeline`'s bus to `events`.
fn watch(pipeline: &gst::Pipeline, who: &'static str, events: &mpsc::Sender<Event>) {
    let events = events.clone();
    pipeline
        .bus()
        .expect("a pipeline has a bus")
        .set_sync_handler(move |_, message| {
            let event = match message.view() {
                gst::MessageView::Error(e) => Some(Event::Failed(format!(
                    "{who} error: {} ({})",
                    e.error(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                ))),
                gst::MessageView::Eos(_) if who == "receiver" => Some(Event::ReceiverEos),
                gst::MessageView::Element(e) => e
                    .structure()
                    .filter(|s| s.name() == "quicnalusrc-command")
                    .and_then(|s| s.get::<gst::Structure>("command").ok())
                    .map(Event::ReceiverGot),
                _ => None,
            };
            if let Some(event) = event {
                let _ = events.send(event);
            }
            gst::BusSyncReply::Drop
        });
}

fn run(frames: usize) -> Seen {
    let mut seen = Seen::default();
    let (tx, events) = mpsc::channel();

    // The sender: a live encoder, so the application decides when the stream ends.
    let sender = gst::Pipeline::with_name("sender");
    let source = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property_from_str("pattern", "ball")
        .build()
        .expect("videotestsrc");
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("width", 320)
                .field("height", 240)
                .field("framerate", gst::Fraction::new(30, 1))
                .build(),
        )
        .build()
        .expect("capsfilter");
    let encoder = gst::ElementFactory::make("x265enc")
        .property_from_str("speed-preset", "ultrafast")
        .property_from_str("tune", "zerolatency")
        .property("key-int-max", 30)
        .build()
        .expect("x265enc (gstreamer1.0-plugins-bad)");
    let sink = gst::ElementFactory::make("quicnalusink")
        .property("address", "127.0.0.1")
        .property("port", 0u32)
        .property("self-signed", true)
        .build()
        .expect("quicnalusink");
    let chain = [&source, &caps, &encoder, &element("h265parse"), &sink];
    sender.add_many(chain).expect("add");
    gst::Element::link_many(chain).expect("link the sender");
    watch(&sender, "sender", &tx);

    sink.connect("receiver-connected", false, |args| {
        let id = args[1].get::<u64>().expect("id");
        let address = args[2].get::<String>().expect("address");
        println!("sender: receiver {id} connected from {address}");
        None
    });
    // Runs on the sink's networking thread: answer at once and return.
    let got = tx.clone();
    sink.connect("command-received", false, move |args| {
        let sink = args[0].get::<gst::Element>().expect("sink");
        let id = args[1].get::<u64>().expect("id");
        let command = args[2].get::<gst::Structure>().expect("command");
        println!("sender: command from receiver {id}: {command}");
        let answer = gst::Structure::builder("pong")
            .field("n", command.get::<i32>("n").unwrap_or(-1))
            .field("text", "hello")
            .build();
        let sent = sink.emit_by_name::<bool>("send-command", &[&id, &answer]);
        println!("sender: answered receiver {id}: {answer} (queued: {sent})");
        let _ = got.send(Event::SenderGot(command, sent));
        None
    });

    // READY -> PAUSED starts the sink: its port and certificate are known from then on.
    if sender.set_state(gst::State::Playing).is_err() {
        seen.failure = Some("the sender did not start".into());
        return seen;
    }
    let port = sink.property::<u32>("bound-port");
    let fingerprint = sink.property::<Option<String>>("certificate-fingerprint");
    let fingerprint = fingerprint.unwrap_or_default();
    println!("sender: listening on 127.0.0.1:{port}, certificate SHA-256 {fingerprint}");

    let receiver = gst::Pipeline::with_name("receiver");
    let src = gst::ElementFactory::make("quicnalusrc")
        .property("address", "127.0.0.1")
        .property("port", port)
        .property("certificate-fingerprint", &fingerprint)
        .build()
        .expect("quicnalusrc");
    let decoder = element("avdec_h265");
    let chain = [&src, &element("h265parse"), &decoder, &element("fakesink")];
    receiver.add_many(chain).expect("add");
    gst::Element::link_many(chain).expect("link the receiver");
    watch(&receiver, "receiver", &tx);

    let received = tx.clone();
    let first = std::sync::atomic::AtomicBool::new(true);
    src.static_pad("src").expect("src pad").add_probe(
        gst::PadProbeType::BUFFER,
        move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let meta = QuicNaluMeta::from_buffer(buffer);
            let _ = received.send(Event::Received(meta));
            if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                if let Some(m) = meta {
                    println!(
                        "receiver: first buffer: seq={} sender-time={} arrival-time={} flags={}",
                        m.seq,
                        m.sender_time,
                        m.arrival_time,
                        flag_text(m.flags)
                    );
                }
                // A command to the sender: the action signal takes a GstStructure.
                let src = pad.parent_element().expect("the pad's element");
                let ask = gst::Structure::builder("ping").field("n", 1).build();
                println!("receiver: sending command {ask}");
                let sent = src.emit_by_name::<bool>("send-command", &[&ask]);
                let _ = received.send(Event::Asked(sent));
            }
            gst::PadProbeReturn::Ok
        },
    );
    let decoded = tx.clone();
    decoder
        .static_pad("src")
        .expect("decoder src pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = decoded.send(Event::Decoded);
            gst::PadProbeReturn::Ok
        });
    drop(tx);

    if receiver.set_state(gst::State::Playing).is_err() {
        seen.failure = Some("the receiver did not start".into());
    }
    let deadline = Instant::now() + TIMEOUT;
    let mut ending = false;
    while seen.failure.is_none() {
        let Ok(event) = events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            seen.failure = Some(format!("not finished within {TIMEOUT:?}"));
            break;
        };
        match event {
            Event::Received(Some(meta)) => seen.metas.push(meta),
            Event::Received(None) => seen.without_meta += 1,
            Event::Decoded => seen.decoded += 1,
            Event::Asked(sent) => seen.asked = sent,
            Event::SenderGot(command, answered) => {
                seen.sender_got = Some(command);
                seen.answered = answered;
            }
            Event::ReceiverGot(command) => {
                println!("receiver: command from sender: {command}");
                seen.receiver_got = Some(command);
            }
            Event::ReceiverEos => {
                println!("receiver: end of stream");
                break;
            }
            Event::Failed(why) => seen.failure = Some(why),
        }
        let done =
            seen.metas.len() >= frames && seen.sender_got.is_some() && seen.receiver_got.is_some();
        if done && !ending {
            ending = true;
            println!("sender: {frames} frames read and both commands through: ending the stream");
            sender.send_event(gst::event::Eos::new());
        }
    }
    let _ = receiver.set_state(gst::State::Null);
    let _ = sender.set_state(gst::State::Null);
    seen
}

fn flag_text(flags: Flags) -> String {
    let names = [
        (Flags::KEYFRAME, "keyframe"),
        (Flags::DISCONT, "discont"),
        (Flags::GAP, "gap"),
        (Flags::LATE, "late"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "none".into()
    } else {
        set.join("|")
    }
}

fn report(seen: &Seen) {
    if let (Some(first), Some(last)) = (seen.metas.first(), seen.metas.last()) {
        let mut latencies: Vec<f64> = seen
            .metas
            .iter()
            .map(|m| m.arrival_time.saturating_sub(m.sender_time) as f64 / 1e6)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let count = |f: Flags| seen.metas.iter().filter(|m| m.flags.contains(f)).count();
        println!(
            "receiver: {} buffers with QuicNaluMeta, seq {}..{}, {} keyframes, {} after a gap; \
             latency p50 {:.2} ms, max {:.2} ms",
            seen.metas.len(),
            first.seq,
            last.seq,
            count(Flags::KEYFRAME),
            count(Flags::GAP),
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
    }
    println!("receiver: {} pictures decoded", seen.decoded);
}

/// What went wrong, if anything.
fn verdict(seen: &Seen, frames: usize) -> Vec<String> {
    let mut problems: Vec<String> = seen.failure.iter().cloned().collect();
    if !seen.asked {
        problems.push("the receiver could not send its command".into());
    }
    if seen.sender_got.as_ref().map(|c| c.name().as_str()) != Some("ping") {
        problems.push(format!(
            "the sender got {:?}, not the ping",
            seen.sender_got
        ));
    }
    if !seen.answered {
        problems.push("the sender could not send its answer".into());
    }
    if seen.receiver_got.as_ref().map(|c| c.name().as_str()) != Some("pong") {
        problems.push(format!(
            "the receiver got {:?}, not the pong",
            seen.receiver_got
        ));
    }
    if seen.without_meta > 0 {
        problems.push(format!(
            "{} buffers without QuicNaluMeta",
            seen.without_meta
        ));
    }
    if seen.decoded == 0 {
        problems.push("nothing decoded".into());
    }
    if seen.metas.len() < frames {
        problems.push(format!(
            "{} buffers with QuicNaluMeta, expected {frames}",
            seen.metas.len()
        ));
    }
    if seen
        .metas
        .first()
        .is_some_and(|m| !m.flags.contains(Flags::KEYFRAME))
    {
        problems.push("the first buffer is not a keyframe".into());
    }
    if seen.metas.windows(2).any(|w| w[1].seq <= w[0].seq) {
        problems.push("sequence numbers do not increase".into());
    }
    if seen.metas.iter().any(|m| m.arrival_time < m.sender_time) {
        problems.push("a frame arrived before it was sent (clocks differ?)".into());
    }
    problems
}
